//! Engine scenarios on both real stores, SQLite and PostgreSQL, from one
//! source: races, expiry, credits across sets and across databases, the day
//! rolling over at midnight, and restarts with work in flight. Each reads as
//! a table of what happens and what must hold after; each ends with the full
//! audit. `scenarios!` at the end makes each scenario two tests,
//! `<scenario>::on_sqlite` and `<scenario>::on_postgres`; the second passes,
//! saying it was skipped, unless `HONGBAO_TEST_PG` names a PostgreSQL server
//! (`hongbao_store_pg::testing`).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::future::{Future, poll_fn};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use hongbao_domain::audit::{AuditReport, SetSnapshot, audit};
use hongbao_domain::packet::{PacketInfo, SpecInput};
use hongbao_domain::{
    Amount, Claim, DepositOutcome, Limits, Millis, OpenOutcome, Packet, PacketId, PacketSpec, SendOutcome, SetId,
    UserId,
};
use hongbao_engine::{
    Clock, ColdDays, Engine, EngineConfig, EngineError, Journal, JournalError, ManualClock, Position, SeededEntropy,
    SetStores, Store,
};
use hongbao_store_pg::SetMap;
use hongbao_store_pg::testing::TestDatabase;
use tempfile::TempDir;

/// A set's journal with a switch that makes every append fail, as a full or
/// failing disk would, and a stall: a disk that stops answering.
struct Switchable {
    inner: Box<dyn Journal>,
    failing: Arc<AtomicBool>,
    stall: Stall,
}

/// Armed, the next append reports that it has begun, then waits for release.
type Stall = Arc<Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>>;

impl Journal for Switchable {
    fn append(&mut self, position: Position, payload: &[u8]) -> Result<(), JournalError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(JournalError::Io("injected: the disk refuses writes".into()));
        }
        let stall = self.stall.lock().unwrap().take();
        if let Some((begun, release)) = stall {
            begun.send(()).unwrap();
            release.recv().unwrap();
        }
        self.inner.append(position, payload)
    }

    fn recover(
        &mut self,
        after: Position,
        each: &mut hongbao_engine::journal::EachRecord<'_>,
    ) -> Result<Position, JournalError> {
        self.inner.recover(after, each)
    }

    fn trim(&mut self, upto: Position) -> Result<(), JournalError> {
        self.inner.trim(upto)
    }
}

/// Where a scenario's data set lives: a temporary directory with one SQLite
/// database per set, or fresh PostgreSQL databases (dropped with it) that
/// hold the sets between them.
enum Backend {
    Sqlite(TempDir),
    /// Set `n` lives on database `n mod databases.len()`.
    Postgres(Vec<TestDatabase>),
}

/// What opening a data set needs of its backend, owned, so that the
/// blocking work can run off the async runtime.
enum Place {
    Dir(PathBuf),
    Databases(SetMap),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    /// `databases` fresh databases, or `None` (the test passes, saying it
    /// was skipped) when no test server is named. Making one blocks, so it
    /// runs on the blocking pool.
    async fn postgres(test: &'static str, databases: usize) -> Option<Backend> {
        let databases = tokio::task::spawn_blocking(move || -> Option<Vec<_>> {
            (0..databases).map(|_| TestDatabase::create(test)).collect()
        });
        databases.await.unwrap().map(Backend::Postgres)
    }

    fn place(&self, sets: u16) -> Place {
        match self {
            Backend::Sqlite(dir) => Place::Dir(dir.path().to_owned()),
            Backend::Postgres(databases) => {
                let urls: Vec<String> = databases.iter().map(TestDatabase::url).collect();
                let map = (0..sets).fold(SetMap::single(urls[0].clone()), |map, set| {
                    map.place(set, set, urls[usize::from(set) % urls.len()].clone())
                });
                Place::Databases(map)
            }
        }
    }

    /// A node whose manual clock's jumps stand for expiries coming due, not
    /// for commands waiting in their queue: nothing is shed for waiting.
    async fn start(&self, sets: u16, clock: &ManualClock) -> Node {
        let config = EngineConfig { queue_wait_max: Duration::from_secs(24 * 3600), ..EngineConfig::default() };
        self.start_with(sets, clock, config).await
    }

    /// Opening the stores and recovering the sets block (the PostgreSQL
    /// store waits for its queries), so they run on the blocking pool.
    async fn start_with(&self, sets: u16, clock: &ManualClock, config: EngineConfig) -> Node {
        let place = self.place(sets);
        let clock = clock.clone();
        tokio::task::spawn_blocking(move || match place {
            Place::Dir(dir) => {
                let stores = (0..sets).map(|set| hongbao_store_sqlite::open_set(&dir, SetId(set)).unwrap());
                Node::start(stores.collect(), clock, config)
            }
            Place::Databases(map) => Node::start(hongbao_store_pg::open_sets(&map, sets).unwrap(), clock, config),
        })
        .await
        .unwrap()
    }

    /// The full audit of the data set at rest.
    async fn audit(&self, sets: u16, now: Millis) -> AuditReport {
        let place = self.place(sets);
        let snapshots: Vec<SetSnapshot> = tokio::task::spawn_blocking(move || match place {
            Place::Dir(dir) => {
                (0..sets).map(|set| hongbao_store_sqlite::snapshot(&dir, SetId(set), ColdDays::Rows).unwrap()).collect()
            }
            Place::Databases(map) => hongbao_store_pg::snapshot(&map, sets, ColdDays::Rows).unwrap(),
        })
        .await
        .unwrap();
        audit(&snapshots, Limits::default().share_min, now.0)
    }

    async fn assert_audit_ok(&self, sets: u16, now: Millis) -> AuditReport {
        let report = self.audit(sets, now).await;
        assert!(report.ok(), "{report}");
        report
    }

    /// The credits in `set`'s outbox tables (what its materializer wrote).
    async fn outbox_len(&self, set: u16) -> i64 {
        match self {
            Backend::Sqlite(dir) => {
                let path = hongbao_store_sqlite::set_path(dir.path(), SetId(set));
                let connection = rusqlite::Connection::open(path).unwrap();
                connection.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0)).unwrap()
            }
            Backend::Postgres(databases) => {
                let mut count = 0;
                for database in databases {
                    count += pg_outbox_len(&database.url(), set).await;
                }
                count
            }
        }
    }
}

/// Counts on a connection of the test's own runtime, so nothing blocks it.
async fn pg_outbox_len(url: &str, set: u16) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let set = i16::try_from(set).unwrap();
    client.query_one("SELECT count(*) FROM outbox WHERE set_id = $1", &[&set]).await.unwrap().get(0)
}

/// A running engine and the switches on its sets' journals.
struct Node {
    engine: Engine,
    failing: Vec<Arc<AtomicBool>>,
    stalls: Vec<Stall>,
}

impl Node {
    fn start<S: Store>(stores: Vec<SetStores<S>>, clock: ManualClock, config: EngineConfig) -> Node {
        let failing: Vec<_> = stores.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
        let stalls: Vec<Stall> = stores.iter().map(|_| Stall::default()).collect();
        let stores = (stores.into_iter().enumerate())
            .map(|(set, stores)| {
                let journal =
                    Switchable { inner: stores.journal, failing: failing[set].clone(), stall: stalls[set].clone() };
                SetStores { journal: Box::new(journal), ..stores }
            })
            .collect();
        let engine =
            Engine::start(config, stores, Arc::new(clock), |set| Box::new(SeededEntropy::new(u64::from(set.0) + 1)))
                .unwrap();
        Node { engine, failing, stalls }
    }

    /// Stalls the next append of `set`: returns a receiver told when the
    /// append has begun, and the sender that lets it finish.
    fn stall(&self, set: u16) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (begun_tx, begun) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        *self.stalls[usize::from(set)].lock().unwrap() = Some((begun_tx, release_rx));
        (begun, release)
    }
}

/// Shuts the node down; that blocks, so it runs on the blocking pool.
async fn stop(node: Node) {
    tokio::task::spawn_blocking(move || node.engine.shutdown()).await.unwrap();
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

/// The first user named `<prefix><n>` whose wallet lives in `set`.
fn user_in(set: u16, sets: u16, prefix: &str) -> UserId {
    (0..).map(|n| user(&format!("{prefix}{n}"))).find(|u| SetId::of_user(u, sets).0 == set).unwrap()
}

fn spec(kind: &str, total: i64, count: i64, expires_in_s: Option<i64>) -> PacketSpec {
    let input = SpecInput { kind: kind.into(), total_amount: total, count, expires_in_s, ..SpecInput::default() };
    PacketSpec::parse(&input, &user("sender"), &Limits::default()).unwrap()
}

async fn fund(engine: &Engine, who: &UserId, amount: u64) {
    let outcome = engine.deposit(who.clone(), Amount::from_fen(amount).unwrap(), None).await.unwrap();
    assert!(matches!(outcome, DepositOutcome::Deposited { .. }), "{outcome:?}");
}

async fn send(engine: &Engine, sender: &UserId, spec: PacketSpec) -> PacketId {
    match engine.send(sender.clone(), spec, None).await.unwrap() {
        SendOutcome::Sent { packet, .. } => packet.id,
        other => panic!("send failed: {other:?}"),
    }
}

/// Polls `check` every 10 ms until it holds, for at most 10 s.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fen(amount: Amount) -> u64 {
    amount.fen()
}

const START: Millis = Millis(1_800_000_000_000);
const DAY_MS: i64 = 86_400_000;
/// The first midnight (UTC) after `START`.
const MIDNIGHT: Millis = Millis(START.0 - START.0 % DAY_MS + DAY_MS);

async fn open_share(engine: &Engine, id: PacketId, who: &UserId) -> Claim {
    match engine.open(id, who.clone(), None).await.unwrap() {
        OpenOutcome::Opened(claim) => claim,
        other => panic!("{who} could not open {id}: {other:?}"),
    }
}

/// What a packet's detail says, to compare one reading with another.
fn detail(packet: &Packet) -> (PacketInfo, Amount, u32, Amount, Vec<Claim>) {
    let claims = packet.claims().to_vec();
    (packet.info.clone(), packet.remaining_amount, packet.remaining_count, packet.refunded_amount, claims)
}

async fn a_thousand_users_race_for_a_hundred_shares(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(8, &clock).await;
    let sender = user("sender");
    fund(&node.engine, &sender, 20_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 20_000, 100, None)).await;

    let racers: Vec<_> = (0..1000)
        .map(|n| {
            let engine = node.engine.clone();
            tokio::spawn(async move { engine.open(id, user(&format!("racer{n}")), None).await.unwrap() })
        })
        .collect();
    let mut won = Vec::new();
    let mut empty = 0;
    for racer in racers {
        match racer.await.unwrap() {
            OpenOutcome::Opened(Claim { amount, .. }) => won.push(fen(amount)),
            OpenOutcome::Empty => empty += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(won.len(), 100, "exactly one winner per share");
    assert_eq!(empty, 900, "everyone else finds the packet empty");
    assert_eq!(won.iter().sum::<u64>(), 20_000, "the shares add up to the total");
    let packet = node.engine.packet(id).await.unwrap().unwrap();
    assert_eq!(packet.claims().len(), 100);
    assert_eq!(packet.remaining_amount, Amount::ZERO);
    stop(node).await;
    backend.assert_audit_ok(8, clock.now()).await;
}

async fn one_user_opening_fifty_times_at_once_gets_one_share(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(8, &clock).await;
    let sender = user("sender");
    fund(&node.engine, &sender, 1_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 1_000, 10, None)).await;

    let attempts: Vec<_> = (0..50)
        .map(|_| {
            let engine = node.engine.clone();
            tokio::spawn(async move { engine.open(id, user("greedy"), None).await.unwrap() })
        })
        .collect();
    let mut opened = 0;
    let mut amounts = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            OpenOutcome::Opened(Claim { amount, .. }) => {
                opened += 1;
                amounts.push(amount);
            }
            OpenOutcome::AlreadyOpened { amount } => amounts.push(amount),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(opened, 1, "one open is binding");
    assert!(amounts.iter().all(|amount| *amount == amounts[0]), "every answer names the same share");
    let packet = node.engine.packet(id).await.unwrap().unwrap();
    assert_eq!(packet.claims().len(), 1);
    assert_eq!(packet.remaining_count, 9);
    stop(node).await;
    backend.assert_audit_ok(8, clock.now()).await;
}

async fn opens_racing_the_expiry_never_share_money_with_the_refund(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(8, &clock).await;
    let sender = user("sender");
    fund(&node.engine, &sender, 10_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 10_000, 100, Some(1))).await;

    // Ten opens surely before the expiry, then sixty racing it (fewer than
    // the shares left, so something is always left to refund).
    let mut opened = Vec::new();
    for n in 0..10 {
        let who = user(&format!("early{n}"));
        match node.engine.open(id, who.clone(), None).await.unwrap() {
            OpenOutcome::Opened(Claim { amount, .. }) => opened.push((who, amount)),
            other => panic!("an open before the expiry: {other:?}"),
        }
    }
    let openers: Vec<_> = (0..60)
        .map(|n| {
            let engine = node.engine.clone();
            let clock = clock.clone();
            tokio::spawn(async move {
                if n == 30 {
                    clock.advance_ms(1_000);
                }
                (user(&format!("opener{n}")), engine.open(id, user(&format!("opener{n}")), None).await.unwrap())
            })
        })
        .collect();
    for opener in openers {
        match opener.await.unwrap() {
            (who, OpenOutcome::Opened(Claim { amount, .. })) => opened.push((who, amount)),
            (_, OpenOutcome::Expired | OpenOutcome::Empty) => {}
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    clock.advance_ms(1_000);
    let engine = node.engine.clone();
    eventually("the packet is refunded or empty", async || {
        let packet = engine.packet(id).await.unwrap().unwrap();
        !packet.refunded_amount.is_zero() || packet.remaining_count == 0
    })
    .await;
    let packet = node.engine.packet(id).await.unwrap().unwrap();
    assert_eq!(packet.claims().len(), opened.len(), "every acknowledged open is a claim, and only those");
    for (who, amount) in &opened {
        assert_eq!(packet.claim_of(who).map(|claim| claim.amount), Some(*amount));
    }
    let claimed: u64 = opened.iter().map(|(_, amount)| fen(*amount)).sum();
    assert!(opened.len() >= 10 && !packet.refunded_amount.is_zero(), "both sides of the race happened");
    assert_eq!(claimed + fen(packet.refunded_amount), 10_000, "claims + refund == total");
    assert!(packet.claims().iter().all(|claim| claim.at < packet.info.expires_at));
    let expected_balance = fen(packet.refunded_amount);
    let sender_balance = node.engine.balance(sender.clone()).await.unwrap();
    assert_eq!(fen(sender_balance), expected_balance, "the refund reached the sender once");
    stop(node).await;
    let report = backend.assert_audit_ok(8, clock.now()).await;
    assert_eq!(report.refunds_pending, 0);
}

async fn a_share_is_credited_to_a_wallet_in_another_set(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(4, &clock).await;
    let sender = user_in(0, 4, "sender");
    let openers: Vec<_> = (1..4).map(|set| user_in(set, 4, "opener")).collect();
    fund(&node.engine, &sender, 900).await;
    let id = send(&node.engine, &sender, spec("fixed", 900, 3, None)).await;
    for (index, opener) in openers.iter().enumerate() {
        let outcome = node.engine.open(id, opener.clone(), None).await.unwrap();
        let OpenOutcome::Opened(claim) = outcome else { panic!("{outcome:?}") };
        assert_eq!(
            (claim.amount, claim.index, claim.user),
            (Amount::from_fen(300).unwrap(), index as u32, opener.clone())
        );
    }
    for opener in &openers {
        let engine = node.engine.clone();
        let opener = opener.clone();
        eventually("the credit lands", async || fen(engine.balance(opener.clone()).await.unwrap()) == 300).await;
    }
    eventually("the outbox drains", async || backend.outbox_len(0).await == 0).await;
    let received = node.engine.received(openers[0].clone(), None, 10).await.unwrap();
    assert_eq!(received.items.len(), 1);
    assert_eq!(received.items[0].packet_id, id);
    stop(node).await;
    let report = backend.assert_audit_ok(4, clock.now()).await;
    assert_eq!(report.credits_pending, 0);
}

async fn a_restart_with_credits_in_the_outbox_delivers_them_once(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(2, &clock).await;
    let sender = user_in(0, 2, "sender");
    let openers: Vec<_> = (0..5).map(|n| user_in(1, 2, &format!("opener{n}x"))).collect();
    fund(&node.engine, &sender, 5_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 5_000, 5, None)).await;

    // Set 1's disk refuses writes: the credits cannot land there.
    node.failing[1].store(true, Ordering::SeqCst);
    let mut shares = Vec::new();
    for opener in &openers {
        match node.engine.open(id, opener.clone(), None).await.unwrap() {
            OpenOutcome::Opened(Claim { amount, .. }) => shares.push(amount),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    // A set whose append failed refuses writes until it has recovered.
    let refused = node.engine.deposit(openers[0].clone(), Amount::from_fen(1).unwrap(), None).await;
    assert_eq!(refused, Err(EngineError::Unavailable));
    stop(node).await;
    assert_eq!(backend.outbox_len(0).await, 5, "every credit waits in the outbox");
    backend.assert_audit_ok(2, clock.now()).await;

    // Restart with a healthy disk: the outbox is replayed before serving.
    let node = backend.start(2, &clock).await;
    for (opener, share) in openers.iter().zip(&shares) {
        let engine = node.engine.clone();
        let opener = opener.clone();
        let want = fen(*share);
        eventually("the replayed credit lands", async || fen(engine.balance(opener.clone()).await.unwrap()) == want)
            .await;
    }
    eventually("the outbox drains", async || backend.outbox_len(0).await == 0).await;
    // An open repeated after the restart answers the same share.
    let again = node.engine.open(id, openers[0].clone(), None).await.unwrap();
    assert_eq!(again, OpenOutcome::AlreadyOpened { amount: shares[0] });
    stop(node).await;
    let report = backend.assert_audit_ok(2, clock.now()).await;
    assert_eq!(report.credits_pending, 0);
}

async fn a_credit_crossing_databases_lands_once(backend: Backend) {
    // Two sets, each on a database of its own (two PostgreSQL databases; on
    // SQLite every set is a database file of its own).
    // | what happens                                   | what must hold                                  |
    // | bob (set 1) opens alice's packet (set 0)        | his share lands in set 1; set 0's outbox drains |
    // | carol (set 1) opens it; set 1's append of her   | her credit lands in set 1, and set 0 cannot     |
    // |   credit stalls, set 0's disk fails, the append |   record that it did: it stays in set 0's       |
    // |   completes                                     |   outbox, landed, not pending                   |
    // | a restart with healthy disks                    | set 0 resends it, set 1 finds it landed: each   |
    // |                                                 |   balance is its share, once                    |
    let clock = ManualClock::new(START);
    let node = backend.start(2, &clock).await;
    let alice = user_in(0, 2, "alice");
    let (bob, carol) = (user_in(1, 2, "bob"), user_in(1, 2, "carol"));
    fund(&node.engine, &alice, 600).await;
    let id = send(&node.engine, &alice, spec("fixed", 600, 3, None)).await;
    assert_eq!(id.set, SetId(0));
    assert_eq!(fen(open_share(&node.engine, id, &bob).await.amount), 200);
    let engine = node.engine.clone();
    eventually("bob's credit lands", async || fen(engine.balance(bob.clone()).await.unwrap()) == 200).await;
    eventually("set 0's outbox drains", async || backend.outbox_len(0).await == 0).await;

    let (begun, release) = node.stall(1);
    assert_eq!(fen(open_share(&node.engine, id, &carol).await.amount), 200);
    let wait = Duration::from_secs(10);
    tokio::task::spawn_blocking(move || begun.recv_timeout(wait).unwrap()).await.unwrap();
    node.failing[0].store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    eventually("carol's credit lands", async || fen(engine.balance(carol.clone()).await.unwrap()) == 200).await;
    stop(node).await;
    assert_eq!(backend.outbox_len(0).await, 1, "carol's credit is still in set 0's outbox");
    let report = backend.assert_audit_ok(2, clock.now()).await;
    assert_eq!(report.credits_pending, 0, "a credit in the target's ledger is not pending");

    let node = backend.start(2, &clock).await;
    eventually("set 0's outbox drains", async || backend.outbox_len(0).await == 0).await;
    for who in [&bob, &carol] {
        assert_eq!(fen(node.engine.balance(who.clone()).await.unwrap()), 200, "{who}'s share landed once");
        let received = node.engine.received(who.clone(), None, 10).await.unwrap();
        assert_eq!(received.items.iter().map(|item| item.packet_id).collect::<Vec<_>>(), [id]);
    }
    stop(node).await;
    let report = backend.assert_audit_ok(2, clock.now()).await;
    assert_eq!(report.credits_pending, 0);
}

async fn settled_packets_answer_from_the_store_after_a_restart(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(3, &clock).await;
    let sender = user("sender");
    fund(&node.engine, &sender, 1_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 1_000, 4, Some(60))).await;
    let first = node.engine.open(id, user("early"), None).await.unwrap();
    let OpenOutcome::Opened(Claim { amount, .. }) = first else { panic!("{first:?}") };
    clock.advance_ms(60_000);
    let engine = node.engine.clone();
    eventually("the refund", async || !engine.packet(id).await.unwrap().unwrap().refunded_amount.is_zero()).await;
    stop(node).await;

    let node = backend.start(3, &clock).await;
    assert_eq!(node.engine.open(id, user("early"), None).await.unwrap(), OpenOutcome::AlreadyOpened { amount });
    assert_eq!(node.engine.open(id, user("late"), None).await.unwrap(), OpenOutcome::Expired);
    assert_eq!(fen(node.engine.balance(sender.clone()).await.unwrap()), 1_000 - fen(amount));
    let unknown = PacketId { seq: 999, ..id };
    assert_eq!(node.engine.open(unknown, user("late"), None).await.unwrap(), OpenOutcome::NotFound);
    stop(node).await;
    backend.assert_audit_ok(3, clock.now()).await;
}

async fn packets_sent_before_midnight_keep_their_day_through_opens_refunds_and_a_restart(backend: Backend) {
    // Two sets: alice, carol and one early opener in set 0; bob and the other in set 1.
    // | when (UTC)      | what happens                                  | what must hold                 |
    // | D 23:59:30      | alice funds 1,500, sends A: 4 × 250 for 60 s  | A's id carries day D           |
    // | D 23:59:45      | two early openers open A, one in each set     |                                |
    // | D+1 00:00:05    | bob opens A; alice sends B: 4 × 125 for a     | B's id carries day D+1         |
    // |                 |   day; bob opens B; alice deposits 100        |                                |
    // | D+1 00:00:31    | A expires                                     | 250 goes back to alice, once   |
    // | D+2 00:00:01    | alice deposits 100 (a day the node was not    | every balance and list right   |
    // |                 |   started on); a restart                      | A and B read as before         |
    // | D+2 00:00:01    | carol opens A and B                           | A expired; B opens             |
    // | D+2 00:00:06    | B expires                                     | 250 goes back to alice, once   |
    let clock = ManualClock::new(Millis(MIDNIGHT.0 - 30_000));
    let node = backend.start(2, &clock).await;
    let (alice, carol) = (user_in(0, 2, "alice"), user_in(0, 2, "carol"));
    let (early_here, early_there, bob) = (user_in(0, 2, "early"), user_in(1, 2, "early"), user_in(1, 2, "bob"));
    fund(&node.engine, &alice, 1_500).await;
    let a = send(&node.engine, &alice, spec("fixed", 1_000, 4, Some(60))).await;
    assert_eq!(a.day, clock.now().civil_day());
    clock.advance_ms(15_000);
    for opener in [&early_here, &early_there] {
        assert_eq!(fen(open_share(&node.engine, a, opener).await.amount), 250);
    }
    clock.advance_ms(20_000);
    assert_eq!(fen(open_share(&node.engine, a, &bob).await.amount), 250);
    let b = send(&node.engine, &alice, spec("fixed", 500, 4, Some(86_400))).await;
    assert_eq!(b.day, MIDNIGHT.civil_day());
    assert_ne!(a.day, b.day, "the day rolled over between the sends");
    assert_eq!(fen(open_share(&node.engine, b, &bob).await.amount), 125);
    fund(&node.engine, &alice, 100).await;
    clock.advance_ms(26_000);
    let engine = node.engine.clone();
    eventually("A's refund", async || !engine.packet(a).await.unwrap().unwrap().refunded_amount.is_zero()).await;
    let packet = node.engine.packet(a).await.unwrap().unwrap();
    assert_eq!((fen(packet.refunded_amount), fen(packet.remaining_amount)), (250, 0));
    let claimed_at: Vec<i64> = packet.claims().iter().map(|claim| claim.at.0 - MIDNIGHT.0).collect();
    assert_eq!(claimed_at, [-15_000, -15_000, 5_000], "opened on both sides of midnight");
    for (who, want) in [(&early_here, 250), (&early_there, 250), (&bob, 375)] {
        eventually("the credits land", async || fen(engine.balance(who.clone()).await.unwrap()) == want).await;
    }
    clock.advance_ms(DAY_MS - 30_000);
    fund(&node.engine, &alice, 100).await;
    // Funded 1,700, sent 1,500, and A's 250 came back.
    assert_eq!(fen(node.engine.balance(alice.clone()).await.unwrap()), 450);
    let before = [detail(&packet), detail(&node.engine.packet(b).await.unwrap().unwrap())];
    stop(node).await;
    let report = backend.assert_audit_ok(2, clock.now()).await;
    assert_eq!((report.refunds_pending, report.credits_pending), (0, 0));

    let node = backend.start(2, &clock).await;
    let after = [
        detail(&node.engine.packet(a).await.unwrap().unwrap()),
        detail(&node.engine.packet(b).await.unwrap().unwrap()),
    ];
    assert_eq!(after, before, "the packets read the same after a restart");
    let sent = node.engine.sent(alice.clone(), None, 10).await.unwrap();
    assert_eq!(sent.items.iter().map(|item| item.info.id).collect::<Vec<_>>(), [b, a]);
    let received = node.engine.received(bob.clone(), None, 10).await.unwrap();
    assert_eq!(received.items.iter().map(|item| item.packet_id).collect::<Vec<_>>(), [b, a]);
    assert_eq!(fen(node.engine.balance(bob.clone()).await.unwrap()), 375);
    assert_eq!(node.engine.open(a, carol.clone(), None).await.unwrap(), OpenOutcome::Expired);
    assert_eq!(fen(open_share(&node.engine, b, &carol).await.amount), 125);
    clock.advance_ms(5_000);
    let engine = node.engine.clone();
    eventually("B's refund", async || !engine.packet(b).await.unwrap().unwrap().refunded_amount.is_zero()).await;
    assert_eq!(fen(node.engine.packet(b).await.unwrap().unwrap().refunded_amount), 250);
    assert_eq!(fen(node.engine.balance(alice.clone()).await.unwrap()), 450 + 250, "and B's 250");
    stop(node).await;
    let report = backend.assert_audit_ok(2, clock.now()).await;
    assert_eq!((report.refunds_pending, report.credits_pending), (0, 0));
}

async fn idempotency_keys_are_scoped_by_user_and_operation(backend: Backend) {
    let clock = ManualClock::new(START);
    let node = backend.start(4, &clock).await;
    let alice = user("alice");
    let key = Some("k1".to_owned());
    let amount = Amount::from_fen(500).unwrap();
    let first = node.engine.deposit(alice.clone(), amount, key.clone()).await.unwrap();
    let again = node.engine.deposit(alice.clone(), amount, key.clone()).await.unwrap();
    assert_eq!(first, DepositOutcome::Deposited { balance: amount, replayed: false });
    assert_eq!(again, DepositOutcome::Deposited { balance: amount, replayed: true });
    let other = node.engine.deposit(alice.clone(), Amount::from_fen(1).unwrap(), key.clone()).await.unwrap();
    assert_eq!(other, DepositOutcome::KeyReused);
    // The same key on alice's own send is another operation, not a reuse.
    let sent = node.engine.send(alice.clone(), spec("fixed", 300, 3, None), key.clone()).await.unwrap();
    assert!(matches!(sent, SendOutcome::Sent { replayed: false, .. }), "{sent:?}");
    let replayed = node.engine.send(alice.clone(), spec("fixed", 300, 3, None), key.clone()).await.unwrap();
    assert!(matches!(replayed, SendOutcome::Sent { replayed: true, .. }), "{replayed:?}");
    let reused = node.engine.send(alice.clone(), spec("fixed", 600, 3, None), key.clone()).await.unwrap();
    assert_eq!(reused, SendOutcome::KeyReused);
    assert_eq!(fen(node.engine.balance(alice).await.unwrap()), 200, "charged once");
    // The same key from another user is that user's own, whatever set holds them.
    for bob in [user_in(0, 4, "bob"), user_in(3, 4, "bob")] {
        let theirs = node.engine.deposit(bob.clone(), Amount::from_fen(7).unwrap(), key.clone()).await.unwrap();
        assert_eq!(theirs, DepositOutcome::Deposited { balance: Amount::from_fen(7).unwrap(), replayed: false });
    }
    stop(node).await;
    backend.assert_audit_ok(4, clock.now()).await;
}

type Answer<T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send>>;

/// Polls `call` once, so its command is in the queue when this returns.
async fn queued<T>(mut call: Answer<T>) -> Answer<T> {
    poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(_) => panic!("answered while its set was stalled"),
        Poll::Pending => Poll::Ready(()),
    })
    .await;
    call
}

async fn a_stalled_disk_sheds_what_waited_too_long_and_serves_at_once_when_it_returns(backend: Backend) {
    // Batches of 8, so 20 queued opens stand in the queue for three batches.
    // | when                                | what must hold                                   |
    // | an append stalls with u0's open      | u0 waits (its batch is not durable)              |
    // | 20 opens queue behind it for 1 s    |                                                  |
    // | the disk returns                    | u0 is answered                                   |
    // | batches of u1-u8, u9-u16            | queue still standing: refused overloaded, unapplied |
    // | batch of u17-u20                    | empties the queue: served, however long it waited |
    // | u21 opens                           | served at once                                   |
    let clock = ManualClock::new(START);
    let config = EngineConfig { batch_max: 8, ..EngineConfig::default() };
    let wait_max = config.queue_wait_max;
    let node = backend.start_with(1, &clock, config).await;
    let sender = user("sender");
    fund(&node.engine, &sender, 10_000).await;
    let id = send(&node.engine, &sender, spec("fixed", 10_000, 100, None)).await;

    let (begun, release) = node.stall(0);
    let first = node.engine.clone();
    let first = tokio::spawn(async move { first.open(id, user("u0"), None).await });
    tokio::task::spawn_blocking(move || begun.recv().unwrap()).await.unwrap();
    let mut waiting = Vec::new();
    for n in 1..=20 {
        let engine = node.engine.clone();
        let call: Answer<OpenOutcome> = Box::pin(async move { engine.open(id, user(&format!("u{n}")), None).await });
        waiting.push(queued(call).await);
    }
    clock.advance_ms(wait_max.as_millis() as i64 * 10);
    release.send(()).unwrap();

    assert!(matches!(first.await.unwrap(), Ok(OpenOutcome::Opened(_))), "the stalled batch is answered");
    for (n, call) in (1..).zip(waiting) {
        match (n, call.await) {
            (1..=16, answer) => assert_eq!(answer, Err(EngineError::Overloaded), "u{n} waited behind a standing queue"),
            (_, answer) => assert!(matches!(answer, Ok(OpenOutcome::Opened(_))), "u{n}: {answer:?}"),
        }
    }
    let after = node.engine.open(id, user("u21"), None).await.unwrap();
    assert!(matches!(after, OpenOutcome::Opened(_)), "served at once: {after:?}");
    let packet = node.engine.packet(id).await.unwrap().unwrap();
    let openers: Vec<_> = packet.claims().iter().map(|claim| claim.user.to_string()).collect();
    assert_eq!(openers, ["u0", "u17", "u18", "u19", "u20", "u21"], "nothing shed was applied");
    stop(node).await;
    backend.assert_audit_ok(1, clock.now()).await;
}

/// Makes each scenario two tests, `<scenario>::on_sqlite` and
/// `<scenario>::on_postgres`. `on N databases` spreads a scenario's sets
/// over N PostgreSQL databases (set n on database n mod N); on SQLite each
/// set is a database file of its own already.
/// On PostgreSQL only: the database ends every connection of the node (as a
/// restart of the database does) while it serves. Writes are refused or
/// answered, never lost: the sets find their connections lost, reopen them
/// (the writers take their sets' locks again), and serve on without a
/// restart of the node; every deposit answered is in the balance, and the
/// audit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_connections_are_reopened_and_the_sets_serve_on_without_a_restart() {
    let test = "lost_database_connections_are_reopened_and_the_sets_serve_on_without_a_restart";
    let Some(backend) = Backend::postgres(test, 1).await else { return };
    let Backend::Postgres(databases) = &backend else { unreachable!("a PostgreSQL backend") };
    let url = databases[0].url();
    let clock = ManualClock::new(Millis(1_800_000_000_000));
    let node = backend.start(2, &clock).await;
    let alice = user_in(0, 2, "alice");
    fund(&node.engine, &alice, 100).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let ended: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'hongbao-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ended >= 4, "every set's writer and materializer connection was ended ({ended})");
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered < 5 {
        assert!(Instant::now() < deadline, "the set never served again ({answered} deposits answered)");
        match node.engine.deposit(alice.clone(), Amount::from_fen(10).unwrap(), None).await {
            Ok(DepositOutcome::Deposited { .. }) => answered += 1,
            Ok(other) => panic!("{other:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    eventually("the balance holds every deposit answered", async || {
        node.engine.balance(alice.clone()).await.is_ok_and(|balance| fen(balance) == 100 + 10 * answered)
    })
    .await;
    stop(node).await;
    backend.assert_audit_ok(2, clock.now()).await;
}

macro_rules! scenarios {
    (@both $scenario:ident []) => {
        scenarios!(@both $scenario [1]);
    };
    (@both $scenario:ident [$databases:literal]) => {
        mod $scenario {
            use super::Backend;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                super::$scenario(Backend::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let test = concat!(stringify!($scenario), "::on_postgres");
                if let Some(backend) = Backend::postgres(test, $databases).await {
                    super::$scenario(backend).await;
                }
            }
        }
    };
    ($($scenario:ident $(on $databases:literal databases)?,)*) => {
        $(scenarios!(@both $scenario [$($databases)?]);)*
    };
}

scenarios! {
    a_thousand_users_race_for_a_hundred_shares,
    one_user_opening_fifty_times_at_once_gets_one_share,
    opens_racing_the_expiry_never_share_money_with_the_refund,
    a_share_is_credited_to_a_wallet_in_another_set,
    a_restart_with_credits_in_the_outbox_delivers_them_once,
    a_credit_crossing_databases_lands_once on 2 databases,
    settled_packets_answer_from_the_store_after_a_restart,
    packets_sent_before_midnight_keep_their_day_through_opens_refunds_and_a_restart,
    idempotency_keys_are_scoped_by_user_and_operation,
    a_stalled_disk_sheds_what_waited_too_long_and_serves_at_once_when_it_returns,
}
