//! A set's tables on PostgreSQL: the writer's handle recovers and
//! prefetches; the materializer's writes journaled batches, many per
//! transaction, each table in one statement over arrays (`unnest`), so the
//! statement-level triggers check a whole transaction's rows at once.
//!
//! Credits added and acknowledged within one transaction's batches never
//! touch the outbox (the net is written), as on SQLite.
//!
//! The materializer's transactions commit without waiting for their WAL
//! flush (`connect_unsynced`); the journal is trimmed only below what
//! PostgreSQL reports flushed (`Store::durable`).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use hongbao_domain::{Millis, SetId, UserId};
use hongbao_engine::stored::assemble;
use hongbao_engine::{
    Credit, Fetched, IdempotencyOp, IdempotencyRecord, IdempotencyResult, Journaled, LedgerEntry, Position, Recovered,
    Store, StoreError, Wants,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::days::Days;
use crate::pg::{Connection, WriterConnection, connect_serving, failed};
use crate::rows::{CLAIM_COLUMNS, PACKET_COLUMNS, amount, claim_from_row, packet_from_row, packet_id, user};
use crate::schema::set_number;
use crate::withdrawals;

pub struct PgStore {
    client: Arc<Connection>,
    /// Where a lost connection is found again: the set writer's shared
    /// connection (reopened holding the set), or the database the
    /// materializer's own reconnects to.
    source: Source,
    /// The generation of the writer's connection `client` is.
    generation: u64,
    /// A call failed for a reason other than a constraint: the connection
    /// is asked whether it still works before the next.
    suspect: bool,
    set: SetId,
    days: Days,
    statements: Statements,
    /// The position PostgreSQL has flushed: the tables hold it across a
    /// crash of the database too.
    durable: Position,
    /// Materializations committed without waiting for their flush, with
    /// the WAL position just past each commit, oldest first.
    unflushed: VecDeque<(Position, u64)>,
    /// When the flushed WAL position was last asked.
    flush_asked: Instant,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("set", &self.set).finish()
    }
}

fn day_key(day: u32) -> i32 {
    i32::try_from(day).expect("a yyyymmdd day fits an integer")
}

fn position_key(position: Position) -> Result<i64, StoreError> {
    i64::try_from(position).map_err(|_| StoreError::refused(format!("position {position} is out of range")))
}

// The statements, in the order of `Statements`.
const ADVANCE_SQL: &str = "UPDATE hongbao_sets SET position = $2, next_seq = GREATEST(next_seq, $3) \
                 WHERE set_id = $1 AND position = $4";

const LEDGER_SQL: &str = "INSERT INTO ledger (day, user_id, reference, amount, kind, packet_id, at, position, entry, \
                 balance_after) \
                 SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], \
                 $7::int8[], $8::int8[], $9::int4[], $10::int8[])";

const PACKETS_SQL: &str = "INSERT INTO packets (day, id, set_id, seq, sender, kind, total_amount, count, remaining_amount, \
                 remaining_count, seed, greeting, password_digest, recipient, created_at, expires_at, position, group_id, \
                 members) \
                 SELECT d, i, s, q, se, k, t, c, t, c, sd, g, pw, r, ca, ea, po, gi, gm FROM unnest($1::int4[], \
                 $2::text[], $3::int2[], $4::int8[], $5::text[], $6::text[], $7::int8[], $8::int4[], $9::int8[], \
                 $10::text[], $11::bytea[], $12::text[], $13::int8[], $14::int8[], $15::int8[], $16::text[], $17::text[]) \
                 AS u(d, i, s, q, se, k, t, c, sd, g, pw, r, ca, ea, po, gi, gm)";

const CLAIMS_SQL: &str = "INSERT INTO claims (day, packet_id, user_id, idx, amount, at, position) \
                 SELECT * FROM unnest($1::int4[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::int8[], \
                 $7::int8[])";

const REFUNDS_SQL: &str = "UPDATE packets p SET refunded_amount = p.remaining_amount, remaining_amount = 0 \
                 FROM unnest($1::int4[], $2::text[], $3::int8[]) AS r(day, id, amount) \
                 WHERE p.day = r.day AND p.id = r.id AND p.remaining_amount = r.amount AND p.refunded_amount = 0";

const OUTBOX_ADD_SQL: &str = "INSERT INTO outbox (day, packet_id, user_id, set_id, reference, amount, at) \
                 SELECT d, p, u, $4, r, a, t FROM unnest($1::int4[], $2::text[], $3::text[], $5::text[], \
                 $6::int8[], $7::int8[]) AS o(d, p, u, r, a, t)";

const OUTBOX_REMOVE_SQL: &str = "DELETE FROM outbox WHERE set_id = $1 AND reference = ANY($2)";

const KEYS_SQL: &str = "INSERT INTO idempotency (user_id, op, key, fingerprint, result) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])";

const ACCOUNTS_READ_SQL: &str = "SELECT user_id, balance FROM accounts WHERE user_id = ANY($1)";

const KEYS_READ_SQL: &str = "SELECT i.user_id, i.op, i.key, i.fingerprint, i.result FROM idempotency i \
                 JOIN unnest($1::text[], $2::text[], $3::text[]) AS w(u, o, k) \
                 ON i.user_id = w.u AND i.op = w.o AND i.key = w.k";

const PACKETS_READ_SQL: &str = "SELECT id, sender, kind, total_amount, count, remaining_amount, remaining_count, refunded_amount, \
                 seed, greeting, password_digest, recipient, created_at, expires_at, group_id, members FROM packets_all p \
                 JOIN unnest($1::int4[], $2::text[]) AS w(d, i) ON p.day = w.d AND p.id = w.i";

const CLAIMS_READ_SQL: &str = "SELECT c.packet_id, c.user_id, c.idx, c.amount, c.at FROM claims_all c \
                 JOIN unnest($1::int4[], $2::text[]) AS w(d, i) ON c.day = w.d AND c.packet_id = w.i";

/// Each wanted sender's packets of a day (`Wants::sent_today`), one row per
/// sender, with none sent too.
const SENT_TODAY_READ_SQL: &str = "SELECT w.u, w.d, count(l.user_id), COALESCE(-sum(l.amount), 0)::bigint \
                 FROM unnest($1::text[], $2::int4[]) AS w(u, d) \
                 LEFT JOIN ledger l ON l.day = w.d AND l.user_id = w.u AND l.kind = 'send' GROUP BY w.u, w.d";

const CREDITS_READ_SQL: &str = "SELECT l.reference FROM ledger l JOIN unnest($1::int4[], $2::text[], $3::text[]) AS w(d, u, r) \
                 ON l.day = w.d AND l.user_id = w.u AND l.reference = w.r";

enum Source {
    Writer(Arc<WriterConnection>),
    Database(String),
}

/// The statements a set's connection runs, prepared once.
pub(crate) struct Statements {
    advance: Statement,
    ledger: Statement,
    packets: Statement,
    claims: Statement,
    refunds: Statement,
    outbox_add: Statement,
    outbox_remove: Statement,
    keys: Statement,
    accounts_read: Statement,
    keys_read: Statement,
    packets_read: Statement,
    claims_read: Statement,
    credits_read: Statement,
    sent_today_read: Statement,
    withdrawals_add: Statement,
    withdrawals_settle: Statement,
    withdrawals_read: Statement,
}

impl Statements {
    pub(crate) async fn prepare(client: &Client) -> Result<Statements, StoreError> {
        let prepare = |sql: &'static str| async move { client.prepare(sql).await.map_err(failed("preparing")) };
        Ok(Statements {
            advance: prepare(ADVANCE_SQL).await?,
            ledger: prepare(LEDGER_SQL).await?,
            packets: prepare(PACKETS_SQL).await?,
            claims: prepare(CLAIMS_SQL).await?,
            refunds: prepare(REFUNDS_SQL).await?,
            outbox_add: prepare(OUTBOX_ADD_SQL).await?,
            outbox_remove: prepare(OUTBOX_REMOVE_SQL).await?,
            keys: prepare(KEYS_SQL).await?,
            accounts_read: prepare(ACCOUNTS_READ_SQL).await?,
            keys_read: prepare(KEYS_READ_SQL).await?,
            packets_read: prepare(PACKETS_READ_SQL).await?,
            claims_read: prepare(CLAIMS_READ_SQL).await?,
            credits_read: prepare(CREDITS_READ_SQL).await?,
            sent_today_read: prepare(SENT_TODAY_READ_SQL).await?,
            withdrawals_add: prepare(withdrawals::ADD_SQL).await?,
            withdrawals_settle: prepare(withdrawals::SETTLE_SQL).await?,
            withdrawals_read: prepare(withdrawals::READ_SQL).await?,
        })
    }
}

impl PgStore {
    /// The writer's handle, on the set's writer connection.
    pub(crate) fn open_writer(connection: Arc<WriterConnection>, set: SetId) -> Result<PgStore, StoreError> {
        let crate::pg::Current { connection: client, generation, .. } = connection.get()?;
        PgStore::on(client, Source::Writer(connection), generation, set)
    }

    /// The materializer's handle on `url`: it opens a new connection when
    /// its own is lost (a database restart, a network cut), since it holds
    /// nothing but its transactions.
    pub(crate) fn open_materializer(url: &str, set: SetId) -> Result<PgStore, StoreError> {
        let client = Arc::new(connect_unsynced(url, set)?);
        PgStore::on(client, Source::Database(url.to_owned()), 0, set)
    }

    /// A handle on `client`, its statements prepared there.
    fn on(client: Arc<Connection>, source: Source, generation: u64, set: SetId) -> Result<PgStore, StoreError> {
        let statements = client.block_on(Statements::prepare(&client))?;
        Ok(PgStore {
            client,
            source,
            generation,
            suspect: false,
            set,
            days: Days::default(),
            statements,
            durable: 0,
            unflushed: VecDeque::new(),
            flush_asked: Instant::now(),
        })
    }

    /// Finds the connection again if it was lost: the writer's shared one
    /// (reopened by whichever of the journal and this handle meets the loss
    /// first), or a new one for the materializer.
    fn reconnect_if_lost(&mut self) -> Result<(), StoreError> {
        let suspect = std::mem::take(&mut self.suspect);
        let reopened = match &self.source {
            Source::Writer(connection) => {
                let current = if suspect { connection.get_checked()? } else { connection.get()? };
                (current.generation != self.generation).then_some((current.connection, current.generation))
            }
            Source::Database(url)
                if self.client.is_closed()
                    || (suspect && self.client.block_on(self.client.batch_execute("SELECT 1")).is_err()) =>
            {
                Some((Arc::new(connect_unsynced(url, self.set)?), 0))
            }
            Source::Database(_) => None,
        };
        if let Some((client, generation)) = reopened {
            self.statements = client.block_on(Statements::prepare(&client))?;
            (self.client, self.generation) = (client, generation);
            tracing::info!(set = %self.set, "reconnected to PostgreSQL");
        }
        Ok(())
    }

    async fn load(&self, now: Millis) -> Result<Recovered, StoreError> {
        let set = set_number(self.set);
        let row = self
            .client
            .query_one("SELECT position, next_seq FROM hongbao_sets WHERE set_id = $1", &[&set])
            .await
            .map_err(failed("reading the set's position"))?;
        let (position, stored_seq): (i64, i64) = (row.get(0), row.get(1));
        let highest: Option<i64> = self
            .client
            .query_one("SELECT max(seq) FROM packets WHERE set_id = $1", &[&set])
            .await
            .map_err(failed("reading the highest packet seq"))?
            .get(0);
        let unsettled = "p.set_id = $1 AND (p.expires_at > $2 OR (p.remaining_amount > 0 AND p.refunded_amount = 0))";
        let rows = self
            .client
            .query(&format!("SELECT {PACKET_COLUMNS} FROM packets p WHERE {unsettled}"), &[&set, &now.0])
            .await
            .map_err(failed("loading live packets"))?;
        let claims = self
            .client
            .query(
                &format!(
                    "SELECT {CLAIM_COLUMNS} FROM claims c JOIN packets p ON p.day = c.day AND p.id = c.packet_id \
                     WHERE {unsettled}"
                ),
                &[&set, &now.0],
            )
            .await
            .map_err(failed("loading live claims"))?;
        let outbox = self
            .client
            .query("SELECT reference, user_id, amount, packet_id, at FROM outbox WHERE set_id = $1", &[&set])
            .await
            .map_err(failed("reading the outbox"))?;
        let packets = rows.iter().map(packet_from_row).collect::<Result<Vec<_>, _>>()?;
        let claims = claims.iter().map(claim_from_row).collect::<Result<Vec<_>, _>>()?;
        let outbox = outbox
            .iter()
            .map(|row| {
                Ok(Credit {
                    reference: row.get(0),
                    user: user(row, 1)?,
                    amount: amount(row, 2)?,
                    packet_id: packet_id(row, 3)?,
                    at: Millis(row.get(4)),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Never reuse a sequence number, even if the set's row were behind.
        let next_seq = stored_seq.max(highest.map_or(1, |seq| seq + 1));
        Ok(Recovered {
            position: position as Position,
            next_seq: next_seq as u64,
            packets: assemble(packets, claims)?,
            outbox,
            withdrawals: withdrawals::pending(&self.client, self.set).await?,
            frozen: withdrawals::frozen(&self.client, self.set).await?,
        })
    }

    async fn fetch(&self, wants: &Wants) -> Result<Fetched, StoreError> {
        let s = &self.statements;
        let users: Vec<&str> = wants.accounts.iter().map(UserId::as_str).collect();
        let key_users: Vec<&str> = wants.idempotency.iter().map(|(user, _, _)| user.as_str()).collect();
        let key_ops: Vec<&str> = wants.idempotency.iter().map(|(_, op, _)| op.as_str()).collect();
        let keys: Vec<&str> = wants.idempotency.iter().map(|(_, _, key)| key.as_str()).collect();
        let credit_days: Vec<i32> = wants.credits.iter().map(|credit| day_key(credit.packet_id.day)).collect();
        let credit_users: Vec<&str> = wants.credits.iter().map(|credit| credit.user.as_str()).collect();
        let references: Vec<&str> = wants.credits.iter().map(|credit| credit.reference.as_str()).collect();
        // Independent reads, pipelined on the one connection.
        let account_params: [&(dyn ToSql + Sync); 1] = [&users];
        let key_params: [&(dyn ToSql + Sync); 3] = [&key_users, &key_ops, &keys];
        let credit_params: [&(dyn ToSql + Sync); 3] = [&credit_days, &credit_users, &references];
        let senders: Vec<&str> = wants.sent_today.iter().map(|(user, _)| user.as_str()).collect();
        let sender_days: Vec<i32> = wants.sent_today.iter().map(|(_, day)| day_key(*day)).collect();
        let sent_params: [&(dyn ToSql + Sync); 2] = [&senders, &sender_days];
        let (accounts, records, present, sent) = tokio::try_join!(
            query_if(&self.client, !users.is_empty(), &s.accounts_read, &account_params),
            query_if(&self.client, !keys.is_empty(), &s.keys_read, &key_params),
            query_if(&self.client, !references.is_empty(), &s.credits_read, &credit_params),
            query_if(&self.client, !senders.is_empty(), &s.sent_today_read, &sent_params),
        )
        .map_err(failed("prefetching"))?;
        let mut fetched = Fetched { sent_today: sent_today(&sent)?, ..Fetched::default() };
        for row in &accounts {
            fetched.accounts.push((user(row, 0)?, amount(row, 1)?));
        }
        // Every wanted account is answered: a user without one has zero.
        let found: HashSet<&UserId> = fetched.accounts.iter().map(|(holder, _)| holder).collect();
        let zero = hongbao_domain::Amount::ZERO;
        let missing: Vec<UserId> = wants.accounts.iter().filter(|wanted| !found.contains(wanted)).cloned().collect();
        fetched.accounts.extend(missing.into_iter().map(|user| (user, zero)));
        let mut packets = wants.packets.clone();
        let mut wanted_withdrawals = wants.withdrawals.clone();
        for row in &records {
            let op: &str = row.get(1);
            let op = IdempotencyOp::parse(op).ok_or_else(|| StoreError::new(format!("unknown idempotency op {op}")))?;
            let result = IdempotencyResult::parse(op, row.get(4))?;
            match result {
                IdempotencyResult::Sent(id) => packets.push(id),
                IdempotencyResult::Withdrew(id) => wanted_withdrawals.push(id),
                IdempotencyResult::Deposited(_) => {}
            }
            fetched.idempotency.push(IdempotencyRecord {
                user: user(row, 0)?,
                key: row.get(2),
                fingerprint: row.get(3),
                result,
            });
        }
        fetched.references_present = present.iter().map(|row| row.get(0)).collect();
        fetched.packets = self.packets(&packets).await?;
        fetched.withdrawals = withdrawals::read(&self.client, &s.withdrawals_read, &wanted_withdrawals).await?;
        for (user, reference) in &wants.deposits {
            if let Some((amount, reversed)) = withdrawals::deposit(&self.client, user, reference).await? {
                fetched.deposits.push((reference.clone(), amount, reversed));
            }
        }
        Ok(fetched)
    }

    async fn packets(&self, ids: &[hongbao_domain::PacketId]) -> Result<Vec<hongbao_domain::Packet>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let days: Vec<i32> = ids.iter().map(|id| day_key(id.day)).collect();
        let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let s = &self.statements;
        let params: [&(dyn ToSql + Sync); 2] = [&days, &texts];
        let (rows, claims) =
            tokio::try_join!(self.client.query(&s.packets_read, &params), self.client.query(&s.claims_read, &params))
                .map_err(failed("reading packets"))?;
        let rows = rows.iter().map(packet_from_row).collect::<Result<Vec<_>, _>>()?;
        let claims = claims.iter().map(claim_from_row).collect::<Result<Vec<_>, _>>()?;
        assemble(rows, claims)
    }
}

/// The materializer's connection: its commits do not wait for their WAL
/// flush (`synchronous_commit = off`, as SQLite's tables commit with
/// `synchronous=NORMAL`): the journal holds every batch they hold, and it
/// is trimmed only below what PostgreSQL reports flushed (`Store::durable`).
/// Each commit then no longer queues for a flush beside the journal's.
fn connect_unsynced(url: &str, set: SetId) -> Result<Connection, StoreError> {
    let connection = connect_serving(url, &format!("hongbao-tables-{set}"))?;
    connection
        .block_on(connection.batch_execute("SET synchronous_commit = off"))
        .map_err(failed("configuring the materializer's connection"))?;
    Ok(connection)
}

/// How often the flushed WAL position is asked while commits wait for it.
const FLUSH_ASKED_EVERY: Duration = Duration::from_millis(20);

/// A WAL position as PostgreSQL spells it (`16/B374D848`).
fn lsn(text: &str) -> Result<u64, StoreError> {
    let parsed = text
        .split_once('/')
        .and_then(|(high, low)| Some((u64::from_str_radix(high, 16).ok()? << 32) | u64::from_str_radix(low, 16).ok()?));
    parsed.ok_or_else(|| StoreError::new(format!("an unreadable WAL position {text:?}")))
}

/// The single text value of a simple query's last row.
fn last_text(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<&str> {
    messages.iter().rev().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

/// A prefetch's query, sent only when it asks for something.
/// The rows of `SENT_TODAY_READ_SQL`: each sender's packets of the day.
fn sent_today(rows: &[tokio_postgres::Row]) -> Result<Vec<(UserId, u32, u32, hongbao_domain::Amount)>, StoreError> {
    rows.iter()
        .map(|row| {
            let (day, count, fen): (i32, i64, i64) = (row.get(1), row.get(2), row.get(3));
            let day = u32::try_from(day).map_err(|_| StoreError::new("a negative day"))?;
            let count = u32::try_from(count).map_err(|_| StoreError::new("a day's sends overflow"))?;
            let amount = hongbao_domain::Amount::from_signed(fen).ok_or_else(|| StoreError::new("negative sends"))?;
            Ok((user(row, 0)?, day, count, amount))
        })
        .collect()
}

async fn query_if(
    client: &Client,
    needed: bool,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    if needed { client.query(statement, params).await } else { Ok(Vec::new()) }
}

/// The days a transaction of these batches writes into.
pub(crate) fn days_written(batches: &[Journaled]) -> HashSet<u32> {
    let mut days = HashSet::new();
    for effects in batches.iter().map(|batch| &batch.effects) {
        days.extend(effects.ledger.iter().map(LedgerEntry::business_day));
        days.extend(effects.packets.iter().map(|packet| packet.info.id.day));
        days.extend(effects.claims.iter().map(|(id, _)| id.day));
    }
    days
}

/// Writes `batches` (consecutive, following the set's position) and moves
/// the set's position to the last of them: inside the caller's transaction,
/// or, with `begin`, opening one first (the caller commits or rolls back).
/// The BEGIN is answered before anything else is sent: were it refused,
/// pipelined statements would each commit on their own.
///
/// The statements go out pipelined: each is sent before the answer to the
/// one before it arrives (`in_order`), in the order the triggers need
/// (entries before the packets that need their debit, claims before the
/// refunds and outbox rows that depend on them). A failing statement makes
/// PostgreSQL refuse the rest of the transaction, and the first failure is
/// the answer. One round trip for the whole transaction instead of one per
/// statement; the commit, the caller's, goes out once every answer is in.
pub(crate) async fn write_batches(
    client: &Client,
    s: &Statements,
    set: SetId,
    batches: &[Journaled],
    begin: bool,
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (batches.first(), batches.last()) else { return Ok(()) };
    let set_key = set_number(set);
    let next_seq = batches
        .iter()
        .filter(|batch| !batch.effects.packets.is_empty())
        .map(|batch| batch.effects.next_seq)
        .max()
        .unwrap_or(1);
    let next_seq = i64::try_from(next_seq).map_err(|_| StoreError::refused("next_seq out of range"))?;
    let (to, from) = (position_key(last.position)?, position_key(first.position - 1)?);
    let advance = async move {
        let advanced = client
            .execute(&s.advance, &[&set_key, &to, &next_seq, &from])
            .await
            .map_err(failed("recording the journal position"))?;
        if advanced != 1 {
            return Err(StoreError::refused(format!(
                "batch {} does not follow set {set}'s position in the tables",
                first.position
            )));
        }
        Ok(())
    };
    if begin {
        client.batch_execute("BEGIN").await.map_err(failed("starting a materialization"))?;
    }
    let mut steps: Vec<Step<'_>> = Vec::with_capacity(8);
    steps.push(Box::pin(advance));
    // Runs that end at each batch with refunds: a refund's update lands
    // before any later batch's claims, which its trigger then judges
    // against the refunded packet, as the journal ordered them.
    for run in batches.split_inclusive(|batch| !batch.effects.refunds.is_empty()) {
        steps.push(Box::pin(write_ledger(client, s, run)));
        steps.push(Box::pin(write_packets(client, s, run)));
        steps.push(Box::pin(write_claims(client, s, run)));
        steps.push(Box::pin(write_refunds(client, s, run)));
        steps.push(Box::pin(withdrawals::write_new(client, &s.withdrawals_add, set, run)));
        steps.push(Box::pin(withdrawals::write_settled(client, &s.withdrawals_settle, run)));
    }
    steps.push(Box::pin(write_outbox(client, s, set_key, batches)));
    steps.push(Box::pin(write_keys(client, s, batches)));
    steps.push(Box::pin(withdrawals::write_frozen(client, set, batches)));
    steps.push(Box::pin(withdrawals::write_reversals(client, batches)));
    in_order(steps).await
}

/// One statement (or two in sequence) of a pipelined transaction.
type Step<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + 'a>>;

/// Runs `steps` together, each first polled in the order given: a
/// tokio-postgres request is sent when its future is first polled, so the
/// requests leave in this order and the connection pipelines them. Answers
/// the first failure in that order (later ones are PostgreSQL refusing the
/// rest of an aborted transaction), once every step is done.
async fn in_order(mut steps: Vec<Step<'_>>) -> Result<(), StoreError> {
    let mut outcomes: Vec<Option<Result<(), StoreError>>> = steps.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (step, outcome) in steps.iter_mut().zip(outcomes.iter_mut()) {
            if outcome.is_none()
                && let Poll::Ready(done) = step.as_mut().poll(cx)
            {
                *outcome = Some(done);
            }
        }
        if outcomes.iter().all(Option::is_some) { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outcomes.into_iter().flatten().collect::<Result<Vec<()>, StoreError>>().map(drop)
}

async fn run(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
    what: &str,
) -> Result<u64, StoreError> {
    client.execute(statement, params).await.map_err(failed(what))
}

async fn write_ledger(client: &Client, s: &Statements, batches: &[Journaled]) -> Result<(), StoreError> {
    let (mut days, mut users, mut references, mut amounts, mut kinds, mut packets, mut ats, mut positions, mut entries) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut balances: Vec<Option<i64>> = Vec::new();
    for batch in batches {
        for (index, entry) in batch.effects.ledger.iter().enumerate() {
            days.push(day_key(entry.business_day()));
            users.push(entry.user.as_str());
            references.push(entry.reference.as_str());
            amounts.push(entry.amount);
            kinds.push(entry.kind.as_str());
            packets.push(entry.packet_id.map(|id| id.to_string()));
            ats.push(entry.at.0);
            positions.push(position_key(batch.position)?);
            entries.push(i32::try_from(index).map_err(|_| StoreError::refused("too many entries in a batch"))?);
            balances.push(entry.balance_after.map(hongbao_domain::Amount::signed));
        }
    }
    if days.is_empty() {
        return Ok(());
    }
    let params: [&(dyn ToSql + Sync); 10] =
        [&days, &users, &references, &amounts, &kinds, &packets, &ats, &positions, &entries, &balances];
    run(client, &s.ledger, &params, "writing ledger entries").await.map(drop)
}

async fn write_packets(client: &Client, s: &Statements, batches: &[Journaled]) -> Result<(), StoreError> {
    let made: Vec<&hongbao_domain::Packet> = batches.iter().flat_map(|batch| &batch.effects.packets).collect();
    if made.is_empty() {
        return Ok(());
    }
    let mut positions = Vec::with_capacity(made.len());
    for batch in batches {
        positions.extend(std::iter::repeat_n(position_key(batch.position)?, batch.effects.packets.len()));
    }
    let info = |packet: &&hongbao_domain::Packet| packet.info.clone();
    let infos: Vec<_> = made.iter().map(info).collect();
    let days: Vec<i32> = infos.iter().map(|info| day_key(info.id.day)).collect();
    let ids: Vec<String> = infos.iter().map(|info| info.id.to_string()).collect();
    let sets: Vec<i16> = infos.iter().map(|info| set_number(info.id.set)).collect();
    let seqs = infos.iter().map(|info| position_key(info.id.seq)).collect::<Result<Vec<i64>, _>>()?;
    let senders: Vec<&str> = infos.iter().map(|info| info.sender.as_str()).collect();
    let kinds: Vec<&str> = infos.iter().map(|info| info.kind.as_str()).collect();
    let totals: Vec<i64> = infos.iter().map(|info| info.total_amount.signed()).collect();
    let counts = infos
        .iter()
        .map(|info| i32::try_from(info.count))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|_| StoreError::refused("a packet's share count is out of range"))?;
    let seeds: Vec<i64> = made.iter().map(|packet| packet.seed as i64).collect();
    let greetings: Vec<Option<&str>> = infos.iter().map(|info| info.greeting.as_deref()).collect();
    let passwords: Vec<Option<&[u8]>> = made.iter().map(|packet| packet.password.as_ref().map(|d| &d.0[..])).collect();
    let recipients: Vec<Option<&str>> = infos.iter().map(|info| info.recipient.as_ref().map(UserId::as_str)).collect();
    let created: Vec<i64> = infos.iter().map(|info| info.created_at.0).collect();
    let expires: Vec<i64> = infos.iter().map(|info| info.expires_at.0).collect();
    let group_ids: Vec<Option<&str>> = infos.iter().map(|info| info.group.as_ref().map(|g| g.id.as_str())).collect();
    let members: Vec<Option<&str>> = infos.iter().map(|info| info.group.as_ref().map(|g| g.members.joined())).collect();
    let params: [&(dyn ToSql + Sync); 17] = [
        &days,
        &ids,
        &sets,
        &seqs,
        &senders,
        &kinds,
        &totals,
        &counts,
        &seeds,
        &greetings,
        &passwords,
        &recipients,
        &created,
        &expires,
        &positions,
        &group_ids,
        &members,
    ];
    run(client, &s.packets, &params, "writing packets").await.map(drop)
}

async fn write_claims(client: &Client, s: &Statements, batches: &[Journaled]) -> Result<(), StoreError> {
    let (mut days, mut ids, mut users, mut indexes, mut amounts, mut ats, mut positions) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for batch in batches {
        for (id, claim) in &batch.effects.claims {
            days.push(day_key(id.day));
            ids.push(id.to_string());
            users.push(claim.user.as_str());
            indexes.push(i32::try_from(claim.index).map_err(|_| StoreError::refused("share index out of range"))?);
            amounts.push(claim.amount.signed());
            ats.push(claim.at.0);
            positions.push(position_key(batch.position)?);
        }
    }
    if days.is_empty() {
        return Ok(());
    }
    let params: [&(dyn ToSql + Sync); 7] = [&days, &ids, &users, &indexes, &amounts, &ats, &positions];
    run(client, &s.claims, &params, "writing claims").await.map(drop)
}

async fn write_refunds(client: &Client, s: &Statements, batches: &[Journaled]) -> Result<(), StoreError> {
    let refunds: Vec<_> = batches.iter().flat_map(|batch| &batch.effects.refunds).collect();
    if refunds.is_empty() {
        return Ok(());
    }
    let days: Vec<i32> = refunds.iter().map(|(id, _)| day_key(id.day)).collect();
    let ids: Vec<String> = refunds.iter().map(|(id, _)| id.to_string()).collect();
    let amounts: Vec<i64> = refunds.iter().map(|(_, amount)| amount.signed()).collect();
    let changed = run(client, &s.refunds, &[&days, &ids, &amounts], "writing refunds").await?;
    if changed != refunds.len() as u64 {
        return Err(StoreError::refused(format!(
            "{} refunds matched {changed} packets with that much left",
            refunds.len()
        )));
    }
    Ok(())
}

/// The net outbox change of a transaction's batches: credits both added and
/// acknowledged in them are never written.
async fn write_outbox(client: &Client, s: &Statements, set: i16, batches: &[Journaled]) -> Result<(), StoreError> {
    let added: HashSet<&str> =
        batches.iter().flat_map(|b| &b.effects.outbox_added).map(|credit| credit.reference.as_str()).collect();
    let removed: HashSet<&str> = batches.iter().flat_map(|b| &b.effects.outbox_removed).map(String::as_str).collect();
    let kept: Vec<&Credit> = batches
        .iter()
        .flat_map(|b| &b.effects.outbox_added)
        .filter(|credit| !removed.contains(credit.reference.as_str()))
        .collect();
    if !kept.is_empty() {
        let days: Vec<i32> = kept.iter().map(|credit| day_key(credit.packet_id.day)).collect();
        let ids: Vec<String> = kept.iter().map(|credit| credit.packet_id.to_string()).collect();
        let users: Vec<&str> = kept.iter().map(|credit| credit.user.as_str()).collect();
        let references: Vec<&str> = kept.iter().map(|credit| credit.reference.as_str()).collect();
        let amounts: Vec<i64> = kept.iter().map(|credit| credit.amount.signed()).collect();
        let ats: Vec<i64> = kept.iter().map(|credit| credit.at.0).collect();
        let params: [&(dyn ToSql + Sync); 7] = [&days, &ids, &users, &set, &references, &amounts, &ats];
        run(client, &s.outbox_add, &params, "writing outbox credits").await?;
    }
    let gone: Vec<&str> = removed.iter().filter(|reference| !added.contains(*reference)).copied().collect();
    if !gone.is_empty() {
        run(client, &s.outbox_remove, &[&set, &gone], "deleting outbox credits").await?;
    }
    Ok(())
}

async fn write_keys(client: &Client, s: &Statements, batches: &[Journaled]) -> Result<(), StoreError> {
    let records: Vec<&IdempotencyRecord> = batches.iter().flat_map(|batch| &batch.effects.idempotency).collect();
    if records.is_empty() {
        return Ok(());
    }
    let users: Vec<&str> = records.iter().map(|record| record.user.as_str()).collect();
    let ops: Vec<&str> = records.iter().map(|record| record.op().as_str()).collect();
    let keys: Vec<&str> = records.iter().map(|record| record.key.as_str()).collect();
    let fingerprints: Vec<&str> = records.iter().map(|record| record.fingerprint.as_str()).collect();
    let results: Vec<String> = records.iter().map(|record| record.result.text()).collect();
    run(client, &s.keys, &[&users, &ops, &keys, &fingerprints, &results], "writing idempotency keys").await.map(drop)
}

impl Store for PgStore {
    fn recover(&mut self, now: Millis) -> Result<Recovered, StoreError> {
        self.reconnect_if_lost()?;
        let today = now.civil_day();
        // Today and tomorrow, never an earlier day: it may be cold.
        let ahead = [today, Millis(now.0 + 86_400_000).civil_day()];
        let client = self.client.clone();
        client.block_on(async {
            self.days.ensure(&self.client, ahead).await?;
            // One snapshot: the position and the rows it covers.
            self.client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(failed("starting a recovery read"))?;
            let recovered = self.load(now).await;
            self.client.batch_execute("COMMIT").await.map_err(failed("ending a recovery read"))?;
            recovered
        })
    }

    fn prefetch(&mut self, wants: &Wants) -> Result<Fetched, StoreError> {
        self.reconnect_if_lost()?;
        let fetched = self.client.block_on(self.fetch(wants));
        self.suspect = fetched.as_ref().is_err_and(|error| !error.refused);
        fetched
    }

    fn materialized(&mut self) -> Result<Position, StoreError> {
        self.reconnect_if_lost()?;
        let row = self
            .client
            .block_on(self.client.query_one(
                "SELECT position, pg_current_wal_insert_lsn()::text FROM hongbao_sets WHERE set_id = $1",
                &[&set_number(self.set)],
            ))
            .map_err(failed("reading the set's position"))?;
        let position = row.get::<_, i64>(0) as Position;
        // What is visible may not be flushed yet (an earlier run's last
        // commits): durable once the WAL read here is.
        if position > self.durable {
            self.unflushed.push_back((position, lsn(row.get(1))?));
        }
        Ok(position)
    }

    fn materialize(&mut self, batches: &[Journaled]) -> Result<(), StoreError> {
        let Some(last) = batches.last() else { return Ok(()) };
        self.reconnect_if_lost()?;
        let (client, statements, set, days) = (&self.client, &self.statements, self.set, &mut self.days);
        self.client
            .block_on(async {
                days.ensure(client, days_written(batches)).await?;
                match write_batches(client, statements, set, batches, true).await {
                    Ok(()) => client
                        .simple_query("COMMIT; SELECT pg_current_wal_insert_lsn()::text")
                        .await
                        .map_err(failed("committing a materialization")),
                    Err(error) => {
                        let _ = client.batch_execute("ROLLBACK").await;
                        Err(written_elsewhere(client, set, batches, error).await)
                    }
                }
            })
            .and_then(|messages| {
                let end = last_text(&messages).ok_or_else(|| StoreError::new("no WAL position after a commit"))?;
                self.unflushed.push_back((last.position, lsn(end)?));
                Ok(())
            })
    }

    /// Asks (at most every `FLUSH_ASKED_EVERY`) how far PostgreSQL has
    /// flushed its WAL, and moves past every commit it covers.
    fn durable(&mut self) -> Position {
        if self.unflushed.is_empty() || self.flush_asked.elapsed() < FLUSH_ASKED_EVERY {
            return self.durable;
        }
        self.flush_asked = Instant::now();
        let asked = self.client.block_on(self.client.query_one("SELECT pg_current_wal_flush_lsn()::text", &[]));
        let Ok(flushed) = asked.map_err(failed("reading the flushed WAL position")).and_then(|row| lsn(row.get(0)))
        else {
            return self.durable;
        };
        while let Some(&(position, end)) = self.unflushed.front()
            && end <= flushed
        {
            self.durable = self.durable.max(position);
            self.unflushed.pop_front();
        }
        self.durable
    }
}

/// A refusal of batches the tables already hold past their start is no
/// refusal: another materializer of the set wrote them first (a node that
/// lost the set finishing what it had journaled, while the new owner
/// catches up on the same records), and the caller retries from the
/// tables' position. Read after the rollback: the refused transaction
/// cannot be asked.
async fn written_elsewhere(client: &Client, set: SetId, batches: &[Journaled], error: StoreError) -> StoreError {
    let Some(first) = batches.first() else { return error };
    if !error.refused {
        return error;
    }
    let held = client.query_one("SELECT position FROM hongbao_sets WHERE set_id = $1", &[&set_number(set)]).await;
    match held.map(|row| row.get::<_, i64>(0)) {
        Ok(held) if held >= position_key(first.position).unwrap_or(i64::MAX) => StoreError::new(format!(
            "set {set}'s tables already hold batch {} (position {held}): written by another node; {}",
            first.position, error.message
        )),
        _ => error,
    }
}
