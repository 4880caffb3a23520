//! Engine scenarios on the real SQLite store: races, expiry, credits across
//! sets, and restarts with work in flight. Each reads as a table of what
//! happens and what must hold after; each ends with the full audit.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::future::{Future, poll_fn};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::Poll;
use std::time::{Duration, Instant};

use hongbao_domain::audit::{AuditReport, audit};
use hongbao_domain::packet::SpecInput;
use hongbao_domain::{
    Amount, Claim, DepositOutcome, Limits, Millis, OpenOutcome, PacketId, PacketSpec, SendOutcome, SetId, UserId,
};
use hongbao_engine::{
    Clock, Engine, EngineConfig, EngineError, Journal, JournalError, ManualClock, Position, SeededEntropy, SetStores,
};
use hongbao_store_sqlite::{open_set, set_path, snapshot};

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

struct EngineOnSqlite {
    engine: Engine,
    failing: Vec<Arc<AtomicBool>>,
    stalls: Vec<Stall>,
}

impl EngineOnSqlite {
    /// Stalls the next append of `set`: returns a receiver told when the
    /// append has begun, and the sender that lets it finish.
    fn stall(&self, set: u16) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
        let (begun_tx, begun) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        *self.stalls[usize::from(set)].lock().unwrap() = Some((begun_tx, release_rx));
        (begun, release)
    }
}

/// A node whose manual clock's jumps stand for expiries coming due, not for
/// commands waiting in their queue: nothing is shed for waiting.
fn start(dir: &Path, sets: u16, clock: &ManualClock) -> EngineOnSqlite {
    let config = EngineConfig { queue_wait_max: Duration::from_secs(24 * 3600), ..EngineConfig::default() };
    start_with(dir, sets, clock, config)
}

fn start_with(dir: &Path, sets: u16, clock: &ManualClock, config: EngineConfig) -> EngineOnSqlite {
    let failing: Vec<_> = (0..sets).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let stalls: Vec<Stall> = (0..sets).map(|_| Stall::default()).collect();
    let stores = (0..sets)
        .map(|set| {
            let stores = open_set(dir, SetId(set)).unwrap();
            let set = usize::from(set);
            let journal =
                Switchable { inner: stores.journal, failing: failing[set].clone(), stall: stalls[set].clone() };
            SetStores { journal: Box::new(journal), ..stores }
        })
        .collect();
    let engine = Engine::start(config, stores, Arc::new(clock.clone()), |set| {
        Box::new(SeededEntropy::new(u64::from(set.0) + 1))
    })
    .unwrap();
    EngineOnSqlite { engine, failing, stalls }
}

fn stop(node: EngineOnSqlite) {
    node.engine.shutdown();
}

fn audit_dir(dir: &Path, sets: u16, now: Millis) -> AuditReport {
    let snapshots: Vec<_> = (0..sets).map(|set| snapshot(dir, SetId(set)).unwrap()).collect();
    audit(&snapshots, Limits::default().share_min, now.0)
}

fn assert_audit_ok(dir: &Path, sets: u16, now: Millis) -> AuditReport {
    let report = audit_dir(dir, sets, now);
    assert!(report.ok(), "{report}");
    report
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_race_for_a_hundred_shares() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 8, &clock);
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
    stop(node);
    assert_audit_ok(dir.path(), 8, clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_opening_fifty_times_at_once_gets_one_share() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 8, &clock);
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
    stop(node);
    assert_audit_ok(dir.path(), 8, clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_racing_the_expiry_never_share_money_with_the_refund() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 8, &clock);
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
    stop(node);
    let report = assert_audit_ok(dir.path(), 8, clock.now());
    assert_eq!(report.refunds_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_is_credited_to_a_wallet_in_another_set() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 4, &clock);
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
    let outbox = set_path(dir.path(), SetId(0));
    eventually("the outbox drains", async || outbox_len(&outbox) == 0).await;
    let received = node.engine.received(openers[0].clone(), None, 10).await.unwrap();
    assert_eq!(received.items.len(), 1);
    assert_eq!(received.items[0].packet_id, id);
    stop(node);
    let report = assert_audit_ok(dir.path(), 4, clock.now());
    assert_eq!(report.credits_pending, 0);
}

fn outbox_len(path: &Path) -> i64 {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_credits_in_the_outbox_delivers_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 2, &clock);
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
    stop(node);
    assert_eq!(outbox_len(&set_path(dir.path(), SetId(0))), 5, "every credit waits in the outbox");
    assert_audit_ok(dir.path(), 2, clock.now());

    // Restart with a healthy disk: the outbox is replayed before serving.
    let node = start(dir.path(), 2, &clock);
    for (opener, share) in openers.iter().zip(&shares) {
        let engine = node.engine.clone();
        let opener = opener.clone();
        let want = fen(*share);
        eventually("the replayed credit lands", async || fen(engine.balance(opener.clone()).await.unwrap()) == want)
            .await;
    }
    let outbox = set_path(dir.path(), SetId(0));
    eventually("the outbox drains", async || outbox_len(&outbox) == 0).await;
    // An open repeated after the restart answers the same share.
    let again = node.engine.open(id, openers[0].clone(), None).await.unwrap();
    assert_eq!(again, OpenOutcome::AlreadyOpened { amount: shares[0] });
    stop(node);
    let report = assert_audit_ok(dir.path(), 2, clock.now());
    assert_eq!(report.credits_pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_packets_answer_from_the_store_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 3, &clock);
    let sender = user("sender");
    fund(&node.engine, &sender, 1_000).await;
    let id = send(&node.engine, &sender, spec("lucky", 1_000, 4, Some(60))).await;
    let first = node.engine.open(id, user("early"), None).await.unwrap();
    let OpenOutcome::Opened(Claim { amount, .. }) = first else { panic!("{first:?}") };
    clock.advance_ms(60_000);
    let engine = node.engine.clone();
    eventually("the refund", async || !engine.packet(id).await.unwrap().unwrap().refunded_amount.is_zero()).await;
    stop(node);

    let node = start(dir.path(), 3, &clock);
    assert_eq!(node.engine.open(id, user("early"), None).await.unwrap(), OpenOutcome::AlreadyOpened { amount });
    assert_eq!(node.engine.open(id, user("late"), None).await.unwrap(), OpenOutcome::Expired);
    assert_eq!(fen(node.engine.balance(sender.clone()).await.unwrap()), 1_000 - fen(amount));
    let unknown = PacketId { seq: 999, ..id };
    assert_eq!(node.engine.open(unknown, user("late"), None).await.unwrap(), OpenOutcome::NotFound);
    stop(node);
    assert_audit_ok(dir.path(), 3, clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_by_user_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let node = start(dir.path(), 4, &clock);
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
    stop(node);
    assert_audit_ok(dir.path(), 4, clock.now());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_disk_sheds_what_waited_too_long_and_serves_at_once_when_it_returns() {
    // Batches of 8, so 20 queued opens stand in the queue for three batches.
    // | when                                | what must hold                                   |
    // | an append stalls with u0's open      | u0 waits (its batch is not durable)              |
    // | 20 opens queue behind it for 1 s    |                                                  |
    // | the disk returns                    | u0 is answered                                   |
    // | batches of u1-u8, u9-u16            | queue still standing: refused overloaded, unapplied |
    // | batch of u17-u20                    | empties the queue: served, however long it waited |
    // | u21 opens                           | served at once                                   |
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START);
    let config = EngineConfig { batch_max: 8, ..EngineConfig::default() };
    let wait_max = config.queue_wait_max;
    let node = start_with(dir.path(), 1, &clock, config);
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
    stop(node);
    assert_audit_ok(dir.path(), 1, clock.now());
}
