//! Several real `hongbao serve` nodes on one PostgreSQL data set, each set
//! held by one node under a lease, while clients keep writing: a node
//! killed (its sets are taken over once its leases run out), a node paused
//! past its lease (it wakes to find its sets taken, and the journal's fence
//! refuses what it still had in hand), a node stopped (it hands its sets
//! over). In each, what a client was told must match what the data set
//! holds: an acknowledged write is there, a refused one is not, and the
//! audit finds the money conserved. Each test makes its own database on the
//! server `HONGBAO_TEST_PG` names, and says it was skipped (passing)
//! without it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hongbao_store_pg::testing::TestDatabase;
use serde_json::{Value, json};

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::*;

const SETS: u16 = 8;
/// The default lease (`--lease-ms`), which the takeover bound is promised for.
const LEASE: Duration = Duration::from_millis(2000);
/// What the cluster module promises for a dead node's sets at the default lease.
const TAKEOVER_MAX: Duration = Duration::from_millis(3000);
/// A short lease for the pause test: it runs out while the node sleeps.
const SHORT_LEASE: Duration = Duration::from_millis(1000);
/// Each sender's deposit: more than every packet it sends.
const FUNDS: u64 = 1_000_000;
const PACKET_TOTAL: u64 = 1_000;
const PACKET_COUNT: u64 = 50;
/// Client threads opening packets while a node is killed or stopped.
const OPENERS: usize = 4;
/// How long a client that retries keeps at one request.
const RETRY_BOUND: Duration = Duration::from_secs(20);
/// A client's pause between two tries of one request.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Runs its closure when dropped, a panic's unwinding included: the client
/// threads of a scope are told to stop (the scope waits for them before a
/// panic goes on) and a paused node is woken (its clients wait on it).
struct Finally<F: FnMut()>(F);

impl<F: FnMut()> Drop for Finally<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Stops the scope's clients, and wakes every paused node, when dropped.
fn stop_clients<'a>(cluster: &'a Cluster, stop: &'a AtomicBool) -> Finally<impl FnMut() + 'a> {
    Finally(move || {
        stop.store(true, Ordering::SeqCst);
        (0..cluster.nodes.len()).for_each(|n| cluster.wake_if_paused(n));
    })
}

/// The tests here time takeovers on a small machine: one runs at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// What the clients did
// ---------------------------------------------------------------------------

/// What one request got.
#[derive(Clone, Debug)]
enum Answer {
    /// 2xx, with its body.
    Acked(Value),
    /// An error answer: its status and body.
    Refused(u16, String),
    /// No answer: the node died, or the deadline passed. (The error is
    /// read through `Debug`, in failure messages.)
    Lost(#[allow(dead_code)] String),
}

impl Answer {
    fn of(result: std::io::Result<(u16, String)>) -> Answer {
        match result {
            Ok((status, body)) if (200..300).contains(&status) => {
                Answer::Acked(serde_json::from_str(&body).unwrap_or(Value::Null))
            }
            Ok((status, body)) => Answer::Refused(status, body),
            Err(error) => Answer::Lost(error.to_string()),
        }
    }

    /// Whether the write may or may not have been applied: no answer, or
    /// 408 (the server's word for an outcome it does not know).
    fn unknown(&self) -> bool {
        matches!(self, Answer::Lost(_) | Answer::Refused(408, _))
    }

    fn is_acked(&self) -> bool {
        matches!(self, Answer::Acked(_))
    }

    /// `status code` of an error answer, for the summaries.
    fn label(&self) -> String {
        match self {
            Answer::Acked(_) => "2xx".into(),
            Answer::Refused(status, body) => format!("{status} {}", error_code(body)),
            Answer::Lost(_) => "no answer".into(),
        }
    }
}

/// A write as a client sends it.
#[derive(Clone, Debug)]
struct Request {
    /// The opener, the depositee or the sender.
    user: String,
    token: String,
    path: String,
    key: Option<String>,
    body: String,
    /// A deposit's or a send's amount.
    amount: u64,
    /// The packet an open opens.
    packet: String,
}

/// One try of a write, and what it got.
#[derive(Clone, Debug)]
struct Tried {
    /// The client thread that sent it.
    client: usize,
    node: usize,
    request: Request,
    sent_at: Instant,
    answered_at: Instant,
    answer: Answer,
}

/// Who sends a request and where: the client thread, the nodes to try in
/// turn, and whether a 503 or an unknown outcome is tried again (the same
/// key, or the same user's open of the same packet, as a client would).
#[derive(Clone, Copy)]
struct Via<'a> {
    client: usize,
    nodes: &'a [usize],
    retry: bool,
}

impl<'a> Via<'a> {
    fn once(client: usize, nodes: &'a [usize]) -> Via<'a> {
        Via { client, nodes, retry: false }
    }
}

/// Every write the clients tried, to be checked against the data set.
#[derive(Default)]
struct Book {
    /// Acknowledged sends' packet ids.
    packets: Mutex<Vec<String>>,
    opens: Mutex<Vec<Tried>>,
    deposits: Mutex<Vec<Tried>>,
    sends: Mutex<Vec<Tried>>,
    /// Names new users and keys.
    next: AtomicUsize,
}

impl Book {
    fn fresh(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `request` as `via` says; every try is recorded in `log`.
    /// Answers the last try's answer.
    fn run(&self, log: &Mutex<Vec<Tried>>, cluster: &Cluster, via: Via, request: Request) -> Answer {
        let deadline = Instant::now() + RETRY_BOUND;
        for turn in 0.. {
            let node = via.nodes[turn % via.nodes.len()];
            let headers: Vec<(&str, &str)> = request.key.iter().map(|key| ("idempotency-key", key.as_str())).collect();
            let sent_at = Instant::now();
            let result = call(cluster.addr(node), "POST", &request.path, &request.token, &headers, &request.body);
            let answer = Answer::of(result);
            let (client, answered_at, request) = (via.client, Instant::now(), request.clone());
            log.lock().unwrap().push(Tried { client, node, request, sent_at, answered_at, answer: answer.clone() });
            let again = via.retry && (answer.unknown() || matches!(answer, Answer::Refused(503, _)));
            if !again || Instant::now() >= deadline {
                return answer;
            }
            std::thread::sleep(RETRY_EVERY);
        }
        unreachable!("the tries end at the deadline")
    }

    /// An open of `packet` by a new user.
    fn open(&self, cluster: &Cluster, via: Via, packet: &str) -> Answer {
        let user = self.fresh("o");
        let path = format!("/v1/packets/{packet}/open");
        let token = cluster.token(&user);
        let request = Request { user, token, path, key: None, body: String::new(), amount: 0, packet: packet.into() };
        self.run(&self.opens, cluster, via, request)
    }

    /// A keyed deposit by the admin.
    fn deposit(&self, cluster: &Cluster, via: Via, user: &str, amount: u64) -> Answer {
        let (body, key) = (json!({ "user": user, "amount": amount }).to_string(), Some(self.fresh("deposit-")));
        let (token, path) = (cluster.admin.clone(), "/v1/admin/deposits".to_owned());
        let request = Request { user: user.into(), token, path, key, body, amount, packet: String::new() };
        self.run(&self.deposits, cluster, via, request)
    }

    /// A keyed send of a lucky packet; an acknowledged one joins `packets`.
    fn send(&self, cluster: &Cluster, via: Via, sender: &str, count: u64) -> Answer {
        let body = json!({ "kind": "lucky", "total_amount": PACKET_TOTAL, "count": count }).to_string();
        let (token, key, path) = (cluster.token(sender), Some(self.fresh("send-")), "/v1/packets".to_owned());
        let request =
            Request { user: sender.into(), token, path, key, body, amount: PACKET_TOTAL, packet: String::new() };
        let answer = self.run(&self.sends, cluster, via, request);
        if let Answer::Acked(body) = &answer {
            self.packets.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
        }
        answer
    }

    fn acked_opens(&self) -> usize {
        self.opens.lock().unwrap().iter().filter(|tried| tried.answer.is_acked()).count()
    }

    /// A packet of the pool, picked in turn by client and try.
    fn packet(&self, pool: &Mutex<Vec<String>>, client: usize, turn: usize) -> String {
        let pool = pool.lock().unwrap();
        pool[(client * 7 + turn) % pool.len()].clone()
    }
}

// ---------------------------------------------------------------------------
// What the data set must hold
// ---------------------------------------------------------------------------

/// Each packet's claims: user → amount.
type Claims = HashMap<String, HashMap<String, u64>>;

impl Book {
    /// Checks the data set against the book, reading through `readers`:
    /// every deposit and every send of unknown outcome is first sent again
    /// by its key (it then counts once, whatever its first try did); then
    /// every acknowledged send is a packet, every acknowledged open a claim
    /// of its amount, no refused open a claim (unless the same user's open
    /// of it was acknowledged too), and every balance adds up, credits
    /// across sets included.
    ///
    /// Answers the balances that are wrong, to be reported with the audit
    /// of the data set (which such a balance fails too).
    fn check(&self, cluster: &Cluster, readers: &[usize]) -> Vec<String> {
        self.settle(cluster, readers);
        let claims = self.claims(cluster, readers);
        self.check_opens(&claims);
        self.check_balances(cluster, readers, &self.balances(&claims))
    }

    fn settle(&self, cluster: &Cluster, readers: &[usize]) {
        let again = |tried: &Tried| {
            let via = Via { client: usize::MAX, nodes: readers, retry: true };
            let log = Mutex::new(Vec::new());
            let answer = self.run(&log, cluster, via, tried.request.clone());
            assert!(answer.is_acked(), "{} {:?} tried again: {answer:?}", tried.request.path, tried.request.key);
            answer
        };
        let mut deposits = self.deposits.lock().unwrap();
        deposits.iter_mut().for_each(|tried| tried.answer = again(tried));
        let mut sends = self.sends.lock().unwrap();
        for tried in sends.iter_mut().filter(|tried| tried.answer.unknown()) {
            tried.answer = again(tried);
            let Answer::Acked(body) = &tried.answer else { unreachable!("asserted acknowledged") };
            let id = body["id"].as_str().unwrap().to_owned();
            let mut packets = self.packets.lock().unwrap();
            if !packets.contains(&id) {
                packets.push(id);
            }
        }
    }

    fn claims(&self, cluster: &Cluster, readers: &[usize]) -> Claims {
        let token = cluster.token("reader");
        let packets = self.packets.lock().unwrap();
        let mut claims = Claims::new();
        for (i, packet) in packets.iter().enumerate() {
            let addr = cluster.addr(readers[i % readers.len()]);
            let (status, body) = call(addr, "GET", &format!("/v1/packets/{packet}"), &token, &[], "").unwrap();
            assert_eq!(status, 200, "acknowledged send {packet} lost: {body}");
            let detail: Value = serde_json::from_str(&body).unwrap();
            let by_user = detail["claims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|claim| (claim["user"].as_str().unwrap().to_owned(), claim["amount"].as_u64().unwrap()));
            claims.insert(packet.clone(), by_user.collect());
        }
        claims
    }

    fn check_opens(&self, claims: &Claims) {
        let opens = self.opens.lock().unwrap();
        let acked = |packet: &str, user: &str| {
            opens
                .iter()
                .any(|tried| tried.answer.is_acked() && tried.request.packet == packet && tried.request.user == user)
        };
        for tried in opens.iter() {
            let (packet, user) = (&tried.request.packet, &tried.request.user);
            let held = claims.get(packet).unwrap_or_else(|| panic!("{packet} is no acknowledged send")).get(user);
            match &tried.answer {
                Answer::Acked(body) => {
                    assert_eq!(body["status"], "opened", "{tried:?}");
                    let lost = format!("an acknowledged open is not a claim of its amount: {tried:?}; claims {held:?}");
                    assert_eq!(held.copied(), body["amount"].as_u64(), "{lost}");
                }
                answer if answer.unknown() => {}
                Answer::Refused(status, body) => {
                    let code = error_code(body);
                    let refusal = (*status, code.as_str());
                    assert!(matches!(refusal, (409, "packet_empty") | (503, _)), "an unexpected answer: {tried:?}");
                    let applied = held.is_some() && !acked(packet, user);
                    assert!(!applied, "an open answered {status} {code} was applied: {tried:?}");
                }
                Answer::Lost(_) => unreachable!("an unknown outcome"),
            }
        }
    }

    /// Every write `user` tried, for failure messages.
    fn tries_of(&self, user: &str) -> Vec<Tried> {
        let logs = [&self.opens, &self.deposits, &self.sends];
        logs.iter().flat_map(|log| log.lock().unwrap().clone()).filter(|tried| tried.request.user == user).collect()
    }

    /// Every user's balance as the book says it must be: deposits less
    /// acknowledged sends, plus the claims each opener holds.
    fn balances(&self, claims: &Claims) -> BTreeMap<String, i64> {
        let mut balances = BTreeMap::new();
        // A key tried twice (again on another node while its set moved) is
        // one deposit or send, however many answers it had.
        let mut counted = HashSet::new();
        for tried in self.deposits.lock().unwrap().iter() {
            if counted.insert(tried.request.key.clone()) {
                *balances.entry(tried.request.user.clone()).or_default() += tried.request.amount as i64;
            }
        }
        for tried in self.sends.lock().unwrap().iter().filter(|tried| tried.answer.is_acked()) {
            if counted.insert(tried.request.key.clone()) {
                *balances.entry(tried.request.user.clone()).or_default() -= tried.request.amount as i64;
            }
        }
        for tried in self.opens.lock().unwrap().iter() {
            let claim = claims.get(&tried.request.packet).and_then(|claims| claims.get(&tried.request.user));
            balances.insert(tried.request.user.clone(), claim.copied().unwrap_or(0) as i64);
        }
        balances
    }

    /// Waits (a bound for all) for each balance: credits to users of other
    /// sets travel as mail, and arrive a little after the open. Answers the
    /// balances that are not the book's, each with the user's tries.
    fn check_balances(&self, cluster: &Cluster, readers: &[usize], balances: &BTreeMap<String, i64>) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut wrong = Vec::new();
        for (i, (user, balance)) in balances.iter().enumerate() {
            let (addr, token) = (cluster.addr(readers[i % readers.len()]), cluster.token(user));
            loop {
                let (status, body) = call(addr, "GET", "/v1/account", &token, &[], "").unwrap();
                let read = serde_json::from_str::<Value>(&body).ok().and_then(|account| account["balance"].as_i64());
                if status == 200 && read == Some(*balance) {
                    break;
                }
                // Credits on their way only raise a balance: one above the
                // book's is final.
                let over = read.is_some_and(|read| read > *balance);
                if over || Instant::now() >= deadline {
                    let why = if over { "more than its acknowledged writes give" } else { "a credit did not arrive" };
                    let tries = self.tries_of(user);
                    wrong.push(format!("{user}'s account is {status} {body}, not {balance}: {why}; {tries:?}"));
                    break;
                }
                std::thread::sleep(POLL_EVERY);
            }
        }
        wrong
    }
}

/// Stops every node (each must exit cleanly), audits the data set, and
/// fails if the audit or any balance did.
fn stop_and_audit(cluster: &mut Cluster, wrong_balances: &[String]) {
    let (audit_ok, report) = cluster.stop_and_audit();
    println!("{}", report.trim());
    assert!(audit_ok && wrong_balances.is_empty(), "audit: {report}\nwrong balances: {wrong_balances:#?}");
}

/// How many answers of each kind, e.g. `{"2xx": 40, "503 set_moving": 3}`.
fn summary<'a>(tries: impl Iterator<Item = &'a Tried>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    tries.for_each(|tried| *counts.entry(tried.answer.label()).or_default() += 1);
    counts
}

// ---------------------------------------------------------------------------
// The cluster's state
// ---------------------------------------------------------------------------

/// The sets node `n` owns in `owners`.
fn held_by(cluster: &Cluster, owners: &[Option<String>], n: usize) -> Vec<u16> {
    let id = &cluster.nodes[n].id;
    (0..SETS).filter(|set| owners[usize::from(*set)].as_ref() == Some(id)).collect()
}

/// Whether every set is owned by one of `nodes`, as node `observer` sees it.
fn owned_by(cluster: &Cluster, observer: usize, nodes: &[usize]) -> bool {
    let ids: Vec<&String> = nodes.iter().map(|n| &cluster.nodes[*n].id).collect();
    cluster.status(observer).is_some_and(|status| {
        owners(&status).iter().all(|owner| owner.as_ref().is_some_and(|owner| ids.contains(&owner)))
    })
}

fn fenced_writes(cluster: &Cluster, n: usize) -> u64 {
    let mut status = None;
    wait_for("a node's cluster status", Duration::from_secs(20), || {
        status = cluster.status(n);
        status.is_some()
    });
    status.unwrap()["fenced_writes"].as_u64().unwrap()
}

/// Per set a sender, funded, and three packets sent, through the nodes
/// `through` in turn; each packet opened once through each of them.
/// Answers the senders, by set.
fn fund_and_send(cluster: &Cluster, book: &Book, through: &[usize]) -> Vec<String> {
    let senders: Vec<String> = (0..SETS).map(|set| user_in_set("s", set, SETS)).collect();
    for (i, sender) in senders.iter().enumerate() {
        let answer =
            book.deposit(cluster, Via::once(0, std::slice::from_ref(&through[i % through.len()])), sender, FUNDS);
        assert!(answer.is_acked(), "{answer:?}");
    }
    for round in 0..3 {
        for (set, sender) in senders.iter().enumerate() {
            let node = std::slice::from_ref(&through[(set + round) % through.len()]);
            let Answer::Acked(body) = book.send(cluster, Via::once(0, node), sender, PACKET_COUNT) else {
                panic!("a send through {node:?} was not acknowledged");
            };
            assert_eq!(
                usize::from(set_of_packet(body["id"].as_str().unwrap())),
                set,
                "a packet lives in its sender's set"
            );
        }
    }
    let packets = book.packets.lock().unwrap().clone();
    for packet in &packets {
        for node in through.chunks(1) {
            let answer = book.open(cluster, Via::once(0, node), packet);
            assert!(answer.is_acked(), "an open of {packet} through {node:?}: {answer:?}");
        }
    }
    senders
}

// ---------------------------------------------------------------------------
// A node killed
// ---------------------------------------------------------------------------

#[test]
fn a_killed_nodes_sets_are_taken_over_within_three_seconds_and_nothing_acknowledged_is_lost() {
    let name = "a_killed_nodes_sets_are_taken_over_within_three_seconds_and_nothing_acknowledged_is_lost";
    let Some(database) = TestDatabase::create(name) else { return };
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(&database.url(), 3, LEASE, SETS);
    cluster.wait_settled(0, &[0, 1, 2], Instant::now());
    let book = Book::default();
    let senders = fund_and_send(&cluster, &book, &[0, 1, 2]);
    let Killed { victim, held, takeover } = kill_the_busiest_under_load(&cluster, &book, &senders);
    let exit = cluster.reap(victim);
    println!(
        "killed {} holding sets {held:?}: every set owned by a survivor after {} ms",
        cluster.nodes[victim].id,
        takeover.as_millis()
    );
    assert!(takeover <= TAKEOVER_MAX, "takeover took {takeover:?}");
    assert!(!exit.success(), "SIGKILL: {exit:?}");
    let survivors: Vec<usize> = (0..3).filter(|n| *n != victim).collect();
    // The killed node's sets take new writes through every survivor.
    for set in held {
        let packet = book.packets.lock().unwrap().iter().find(|id| set_of_packet(id) == set).unwrap().clone();
        for node in survivors.chunks(1) {
            let answer = book.open(&cluster, Via::once(0, node), &packet);
            assert!(answer.is_acked(), "an open of {packet} (set {set}) through {node:?}: {answer:?}");
            let answer = book.send(&cluster, Via::once(0, node), &senders[usize::from(set)], PACKET_COUNT);
            assert!(answer.is_acked(), "a send in set {set} through {node:?}: {answer:?}");
        }
    }
    println!("opens: {:?}", summary(book.opens.lock().unwrap().iter()));
    println!("deposits: {:?}", summary(book.deposits.lock().unwrap().iter()));
    let wrong = book.check(&cluster, &survivors);
    stop_and_audit(&mut cluster, &wrong);
}

struct Killed {
    victim: usize,
    /// The sets it held.
    held: Vec<u16>,
    /// From the kill until a survivor's status shows every set owned by a survivor.
    takeover: Duration,
}

/// Openers and a depositor through every node; the node holding the most
/// sets is killed among them (its clients then use the others), and the
/// load goes on past the takeover.
fn kill_the_busiest_under_load(cluster: &Cluster, book: &Book, senders: &[String]) -> Killed {
    let (down, stop) = (AtomicUsize::new(usize::MAX), AtomicBool::new(false));
    let pool = Mutex::new(book.packets.lock().unwrap().clone());
    // The nodes a client may use: all but the killed one.
    let live = |turn: usize| -> Vec<usize> {
        let live: Vec<usize> = (0..3).filter(|n| *n != down.load(Ordering::SeqCst)).collect();
        vec![live[turn % live.len()]]
    };
    std::thread::scope(|scope| {
        let _stop = stop_clients(cluster, &stop);
        for client in 0..OPENERS {
            let (pool, stop, live) = (&pool, &stop, &live);
            scope.spawn(move || {
                for turn in (0..).take_while(|_| !stop.load(Ordering::SeqCst)) {
                    book.open(cluster, Via::once(client, &live(client + turn)), &book.packet(pool, client, turn));
                }
            });
        }
        scope.spawn(|| {
            for turn in (0..).take_while(|_| !stop.load(Ordering::SeqCst)) {
                book.deposit(cluster, Via::once(OPENERS, &live(turn)), &senders[turn % senders.len()], 1);
            }
        });
        let acked = book.acked_opens();
        wait_for("40 opens under load", Duration::from_secs(30), || book.acked_opens() >= acked + 40);
        let owners = owners(&cluster.status(0).unwrap());
        let victim = (0..3).max_by_key(|n| held_by(cluster, &owners, *n).len()).unwrap();
        let held = held_by(cluster, &owners, victim);
        cluster.signal(victim, "KILL");
        let killed_at = Instant::now();
        down.store(victim, Ordering::SeqCst);
        let survivors: Vec<usize> = (0..3).filter(|n| *n != victim).collect();
        wait_for("the takeover", Duration::from_secs(20), || owned_by(cluster, survivors[0], &survivors));
        let takeover = killed_at.elapsed();
        let acked = book.acked_opens();
        wait_for("40 opens after the takeover", Duration::from_secs(30), || book.acked_opens() >= acked + 40);
        Killed { victim, held, takeover }
    })
}

// ---------------------------------------------------------------------------
// A holder paused past its lease
// ---------------------------------------------------------------------------

/// Client threads sending opens straight to the paused node.
const STREAM_OPENERS: usize = 32;
/// Packets the stream starts with, each with room for `STREAM_PACKET_COUNT` opens.
const STREAM_PACKETS: usize = 20;
const STREAM_PACKET_COUNT: u64 = 100;
/// Pause cycles tried before the test gives up on catching a writer mid-batch.
const PAUSE_CYCLES_MAX: usize = 5;
/// The node that watches (and takes writes) while another sleeps.
const OBSERVER: usize = 0;

#[test]
fn a_paused_holder_is_fenced_when_it_wakes_and_its_clients_get_errors_not_success() {
    let name = "a_paused_holder_is_fenced_when_it_wakes_and_its_clients_get_errors_not_success";
    let Some(database) = TestDatabase::create(name) else { return };
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(&database.url(), 3, SHORT_LEASE, SETS);
    let book = Book::default();
    let mut cycles = Vec::new();
    while cycles.len() < PAUSE_CYCLES_MAX && cycles.iter().all(|cycle: &Cycle| cycle.fenced_writes == 0) {
        let cycle = pause_cycle(&cluster, &book, &cycles);
        println!("{cycle}");
        cycles.push(cycle);
    }
    for cycle in &cycles {
        // A write the fence refused was answered as refused, to the client
        // that sent it to the woken holder.
        let refused = cycle.answers_after_pause.get("503 set_moving").copied().unwrap_or(0) as u64;
        assert!(refused >= cycle.fenced_writes, "{} fenced writes, {refused} answered set_moving", cycle.fenced_writes);
    }
    let fenced: Vec<u64> = cycles.iter().map(|cycle| cycle.fenced_writes).collect();
    println!("fenced_writes per cycle: {fenced:?}");
    assert!(fenced.iter().any(|count| *count > 0), "no pause caught a writer with writes in hand: {fenced:?}");
    cluster.wait_settled(OBSERVER, &[0, 1, 2], Instant::now());
    let wrong = book.check(&cluster, &[OBSERVER]);
    stop_and_audit(&mut cluster, &wrong);
}

/// One pause of a holder, and what was seen.
struct Cycle {
    holder: String,
    set: u16,
    /// The set's epoch before the pause, and the new owner's.
    epochs: (i64, i64),
    new_owner: String,
    /// From the pause until the observer saw the set owned anew.
    moved_after: Duration,
    paused_for: Duration,
    /// Writes the woken holder's fence refused (its own count, this cycle).
    fenced_writes: u64,
    /// The holder's answers to the writes it had in hand at the pause or
    /// was sent after, by kind.
    answers_after_pause: BTreeMap<String, usize>,
    /// The opens through the observer while the holder slept, by kind.
    observer_answers: BTreeMap<String, usize>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "paused {} (set {} at epoch {}) for {} ms; set {} owned by {} at epoch {} after {} ms; \
             fenced_writes {}; the holder's answers after the pause {:?}; opens through the observer {:?}",
            self.holder,
            self.set,
            self.epochs.0,
            self.paused_for.as_millis(),
            self.set,
            self.new_owner,
            self.epochs.1,
            self.moved_after.as_millis(),
            self.fenced_writes,
            self.answers_after_pause,
            self.observer_answers,
        )
    }
}

/// The holder to pause and its set: a node other than the observer, each
/// in turn, and the set of it paused the fewest times before.
fn pick_holder(cluster: &Cluster, before: &[Cycle]) -> (usize, u16) {
    let owners = cluster.wait_settled(OBSERVER, &[0, 1, 2], Instant::now());
    let others: Vec<usize> = (0..3).filter(|n| *n != OBSERVER).collect();
    let turn = before.len();
    let paused = |set: &u16| before.iter().filter(|cycle| cycle.set == *set).count();
    for holder in [others[turn % others.len()], others[(turn + 1) % others.len()]] {
        if let Some(set) = held_by(cluster, &owners, holder).into_iter().min_by_key(paused) {
            return (holder, set);
        }
    }
    panic!("no set to pause held by another node than the observer: {owners:?}");
}

/// A sender of the set, funded through the holder, and its first packets.
fn stream_packets(cluster: &Cluster, book: &Book, holder: usize, set: u16, turn: usize) -> Vec<String> {
    let sender = user_in_set(&format!("c{turn}s"), set, SETS);
    let at_holder = [holder];
    assert!(book.deposit(cluster, Via::once(0, &at_holder), &sender, FUNDS).is_acked());
    (0..STREAM_PACKETS)
        .map(|_| match book.send(cluster, Via::once(0, &at_holder), &sender, STREAM_PACKET_COUNT) {
            Answer::Acked(body) => body["id"].as_str().unwrap().to_owned(),
            answer => panic!("a send through the holder: {answer:?}"),
        })
        .collect()
}

/// Pauses the holder of a set while a stream of opens and sends of that set
/// goes straight to it, keeps it asleep until its set is owned anew at a
/// higher epoch and the new owner has taken writes, wakes it, and waits
/// for every client of the holder to be answered.
fn pause_cycle(cluster: &Cluster, book: &Book, before: &[Cycle]) -> Cycle {
    let (holder, set) = pick_holder(cluster, before);
    let pool = Mutex::new(stream_packets(cluster, book, holder, set, before.len()));
    let epoch_before = epoch(&cluster.status(OBSERVER).unwrap(), set);
    let fenced_before = fenced_writes(cluster, holder);
    let (opens_before, sends_before) = (book.opens.lock().unwrap().len(), book.sends.lock().unwrap().len());
    let sender = user_in_set(&format!("c{}s", before.len()), set, SETS);
    let stop = AtomicBool::new(false);
    let at_holder = [holder];
    let seen = std::thread::scope(|scope| {
        let _stop = stop_clients(cluster, &stop);
        for client in 0..STREAM_OPENERS {
            let (pool, stop, at_holder) = (&pool, &stop, &at_holder);
            scope.spawn(move || {
                for turn in (0..).take_while(|_| !stop.load(Ordering::SeqCst)) {
                    book.open(cluster, Via::once(client, at_holder), &book.packet(pool, client, turn));
                }
            });
        }
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if let Answer::Acked(body) =
                    book.send(cluster, Via::once(STREAM_OPENERS, &at_holder), &sender, STREAM_PACKET_COUNT)
                {
                    pool.lock().unwrap().push(body["id"].as_str().unwrap().to_owned());
                }
            }
        });
        sleep_past_the_lease(cluster, book, &pool, holder, (set, epoch_before))
    });
    let opens = book.opens.lock().unwrap();
    let sends = book.sends.lock().unwrap();
    let after_pause = |tried: &&Tried| tried.node == holder && tried.answered_at > seen.paused_at;
    let answers_after_pause = summary(opens[opens_before..].iter().chain(&sends[sends_before..]).filter(after_pause));
    let observer_answers = summary(opens[opens_before..].iter().filter(|tried| tried.node == OBSERVER));
    Cycle {
        holder: cluster.nodes[holder].id.clone(),
        set,
        epochs: (epoch_before, seen.epoch),
        new_owner: seen.new_owner,
        moved_after: seen.moved_after,
        paused_for: seen.paused_for,
        fenced_writes: fenced_writes(cluster, holder) - fenced_before,
        answers_after_pause,
        observer_answers,
    }
}

/// What the observer saw while the holder slept.
struct Slept {
    paused_at: Instant,
    paused_for: Duration,
    moved_after: Duration,
    new_owner: String,
    epoch: i64,
}

fn sleep_past_the_lease(
    cluster: &Cluster,
    book: &Book,
    pool: &Mutex<Vec<String>>,
    holder: usize,
    (set, epoch_before): (u16, i64),
) -> Slept {
    let acked = book.acked_opens();
    wait_for("50 opens of the stream", Duration::from_secs(30), || book.acked_opens() >= acked + 50);
    cluster.signal(holder, "STOP");
    let paused_at = Instant::now();
    let holder_id = &cluster.nodes[holder].id;
    let (new_owner, epoch) = loop {
        let status = cluster.status(OBSERVER);
        let owner = status.as_ref().and_then(|status| owners(status)[usize::from(set)].clone());
        let epoch = status.as_ref().map_or(epoch_before, |status| epoch(status, set));
        if let Some(owner) = owner.filter(|owner| owner != holder_id && epoch > epoch_before) {
            break (owner, epoch);
        }
        // A lease and a takeover's recovery: far less than this.
        let hang = "no node finished taking the paused holder's set over";
        assert!(paused_at.elapsed() < Duration::from_secs(30), "{hang} in 30 s; the observer's status: {status:?}");
        std::thread::sleep(POLL_EVERY);
    };
    let moved_after = paused_at.elapsed();
    // The new owner takes writes of the set while the holder sleeps, for
    // three leases at least.
    let observer = [OBSERVER];
    let (mut answers, deadline) = (Vec::new(), Instant::now() + Duration::from_secs(30));
    while answers.iter().filter(|answer: &&Answer| answer.is_acked()).count() < 5
        || paused_at.elapsed() < 3 * SHORT_LEASE
    {
        let none = "the set's new owner took no write (through the observer) while the holder slept";
        assert!(Instant::now() < deadline, "{none}: {answers:?}");
        answers.push(book.open(cluster, Via::once(usize::MAX, &observer), &book.packet(pool, answers.len(), 0)));
    }
    cluster.signal(holder, "CONT");
    let (resumed_at, paused_for) = (Instant::now(), paused_at.elapsed());
    // Every client of the holder has been answered after it woke, for a
    // request sent after it woke: what it had in hand is answered.
    wait_for("the woken holder's answers", Duration::from_secs(60), || {
        let opens = book.opens.lock().unwrap();
        (0..STREAM_OPENERS)
            .all(|client| opens.iter().rev().any(|tried| tried.client == client && tried.sent_at > resumed_at))
    });
    Slept { paused_at, paused_for, moved_after, new_owner, epoch }
}

// ---------------------------------------------------------------------------
// A node stopped
// ---------------------------------------------------------------------------

/// How soon a stopped node's sets have new owners: it releases them as it
/// leaves, and the others take them at their next tick (an eighth of the
/// lease), seen in their status a tick later.
const HANDOVER_MAX: Duration = Duration::from_millis(1000);

#[test]
fn a_node_stopped_with_sigterm_hands_its_sets_over_and_no_request_fails() {
    let name = "a_node_stopped_with_sigterm_hands_its_sets_over_and_no_request_fails";
    let Some(database) = TestDatabase::create(name) else { return };
    let _serial = one_at_a_time();
    let mut cluster = Cluster::start(&database.url(), 3, LEASE, SETS);
    let owners = cluster.wait_settled(0, &[0, 1, 2], Instant::now());
    let book = Book::default();
    let senders = fund_and_send(&cluster, &book, &[0, 1, 2]);
    let leaving = (0..3).max_by_key(|n| held_by(&cluster, &owners, *n).len()).unwrap();
    let others: Vec<usize> = (0..3).filter(|n| *n != leaving).collect();
    let (handover, failed) = stop_under_load(&cluster, &book, &senders, leaving);
    let exit = cluster.reap(leaving);
    let (id, held) = (&cluster.nodes[leaving].id, held_by(&cluster, &owners, leaving));
    println!("stopped {id} holding sets {held:?}: every set owned by another node after {} ms", handover.as_millis());
    println!("opens (every try): {:?}", summary(book.opens.lock().unwrap().iter()));
    println!("deposits (every try): {:?}", summary(book.deposits.lock().unwrap().iter()));
    assert!(exit.success(), "SIGTERM: {exit:?}");
    assert!(failed.is_empty(), "requests that failed for good: {failed:?}");
    assert!(handover <= HANDOVER_MAX, "the hand-over took {handover:?}");
    let wrong = book.check(&cluster, &others);
    stop_and_audit(&mut cluster, &wrong);
}

/// Openers and a depositor through the nodes that stay, each request tried
/// again (the same open, the same key) while its set moves; node `leaving`
/// is sent SIGTERM among them. Answers how long until another node's status
/// showed every set owned by the others, and the requests that never
/// succeeded.
fn stop_under_load(cluster: &Cluster, book: &Book, senders: &[String], leaving: usize) -> (Duration, Vec<Answer>) {
    let others: Vec<usize> = (0..3).filter(|n| *n != leaving).collect();
    let (stop, failed) = (AtomicBool::new(false), Mutex::new(Vec::new()));
    let pool = Mutex::new(book.packets.lock().unwrap().clone());
    // The nodes a request is tried at, in turn, from one that differs by turn.
    let rotated =
        |turn: usize| -> Vec<usize> { (0..others.len()).map(|i| others[(turn + i) % others.len()]).collect() };
    let settled = |answer: Answer| {
        let empty = matches!(&answer, Answer::Refused(409, body) if error_code(body) == "packet_empty");
        if !answer.is_acked() && !empty {
            failed.lock().unwrap().push(answer);
        }
    };
    let handover = std::thread::scope(|scope| {
        let _stop = stop_clients(cluster, &stop);
        for client in 0..OPENERS {
            let (pool, stop, rotated, settled) = (&pool, &stop, &rotated, &settled);
            scope.spawn(move || {
                for turn in (0..).take_while(|_| !stop.load(Ordering::SeqCst)) {
                    let via = Via { client, nodes: &rotated(client + turn), retry: true };
                    settled(book.open(cluster, via, &book.packet(pool, client, turn)));
                }
            });
        }
        scope.spawn(|| {
            for turn in (0..).take_while(|_| !stop.load(Ordering::SeqCst)) {
                let via = Via { client: OPENERS, nodes: &rotated(turn), retry: true };
                settled(book.deposit(cluster, via, &senders[turn % senders.len()], 1));
            }
        });
        let acked = book.acked_opens();
        wait_for("40 opens under load", Duration::from_secs(30), || book.acked_opens() >= acked + 40);
        cluster.signal(leaving, "TERM");
        let stopped_at = Instant::now();
        wait_for("the hand-over", Duration::from_secs(20), || owned_by(cluster, others[0], &others));
        let handover = stopped_at.elapsed();
        let acked = book.acked_opens();
        wait_for("40 opens after the hand-over", Duration::from_secs(30), || book.acked_opens() >= acked + 40);
        handover
    });
    (handover, failed.into_inner().unwrap())
}
