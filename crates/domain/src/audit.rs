//! The audit: every invariant of DESIGN.md §4 checked over the raw contents
//! of a data directory. It reads rows as the store holds them (strings and
//! signed integers), so even data that no longer parses is reported rather
//! than trusted.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::id::{PacketId, SetId};
use crate::ledger::{EntryKind, REVERSAL_REF_PREFIX, claim_ref, refund_ref, send_ref};
use crate::money::Amount;
use crate::packet::{PacketKind, ShareDraw};
use crate::user::UserId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    pub user: String,
    pub balance: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRow {
    pub reference: String,
    pub user: String,
    pub amount: i64,
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRow {
    pub id: String,
    pub sender: String,
    pub kind: String,
    pub total_amount: i64,
    pub count: i64,
    pub remaining_amount: i64,
    pub remaining_count: i64,
    pub refunded_amount: i64,
    pub seed: u64,
    pub recipient: Option<String>,
    pub expires_at: i64,
    /// A group packet's members, as stored (sorted names joined by commas).
    pub members: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRow {
    pub packet_id: String,
    pub user: String,
    pub index: i64,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub reference: String,
    pub user: String,
    pub amount: i64,
}

/// A withdrawal as stored: its money left the balance by its
/// `withdrawal:<id>` entry, and, failed, came back by `withdrawal_return:<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WithdrawalRow {
    pub id: String,
    pub user: String,
    pub amount: i64,
    pub status: String,
}

/// What one user's entries of one kind summed to on a cold day: the day's
/// rows left the hot tables, and the audit counts them by these totals,
/// written in the transaction that moved the day (`--cold` reads the rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColdTotalRow {
    pub day: u32,
    pub user: String,
    pub kind: String,
    pub entries: i64,
    pub amount: i64,
}

/// Everything one set's store holds that the invariants speak of.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetSnapshot {
    pub set: u16,
    pub accounts: Vec<AccountRow>,
    pub ledger: Vec<LedgerRow>,
    pub packets: Vec<PacketRow>,
    pub claims: Vec<ClaimRow>,
    pub outbox: Vec<OutboxRow>,
    pub withdrawals: Vec<WithdrawalRow>,
    /// The cold days' ledger totals of this set's users (none when the
    /// cold days' rows are read whole, into the lists above).
    pub cold: Vec<ColdTotalRow>,
    /// What the store itself found wrong while reading (a cold day's totals
    /// that disagree with its rows, say).
    pub problems: Vec<String>,
}

/// What the audit saw, and what it found wrong.
#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    pub sets: usize,
    pub accounts: usize,
    pub ledger_entries: usize,
    pub packets: usize,
    pub claims: usize,
    pub credits_pending: usize,
    pub refunds: usize,
    pub refunds_pending: usize,
    /// Entries counted by their cold days' totals (included in
    /// `ledger_entries`).
    pub cold_entries: usize,
    pub deposits: i128,
    /// Money that left for banks (withdrawals, less those failed and
    /// returned) and deposits taken back: out of the wallets for good, or
    /// pending.
    pub withdrawn: i128,
    pub withdrawals: usize,
    pub withdrawals_pending: usize,
    pub balances: i128,
    pub locked: i128,
    pub in_flight: i128,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} sets, {} accounts, {} ledger entries ({} in cold days' totals), {} packets, {} claims, \
             {} credits pending, {} refunds done, {} pending, {} withdrawals ({} pending); \
             deposits {} fen - withdrawn {} = balances {} + locked {} + in flight {}",
            if self.ok() { "audit ok" } else { "audit FAILED" },
            self.sets,
            self.accounts,
            self.ledger_entries,
            self.cold_entries,
            self.packets,
            self.claims,
            self.credits_pending,
            self.refunds,
            self.refunds_pending,
            self.withdrawals,
            self.withdrawals_pending,
            self.deposits,
            self.withdrawn,
            self.balances,
            self.locked,
            self.in_flight,
        )?;
        for violation in &self.violations {
            write!(f, "\nviolation: {violation}")?;
        }
        Ok(())
    }
}

/// Every claim in a set of stores, by packet and user: what an open a
/// client saw acknowledged is checked against (invariant 7). The simulation,
/// the bench and chaos all ask it.
#[derive(Debug, Default)]
pub struct StoredClaims(HashMap<(String, String), i64>);

impl StoredClaims {
    pub fn of(sets: &[SetSnapshot]) -> StoredClaims {
        let claims = sets.iter().flat_map(|set| &set.claims);
        StoredClaims(claims.map(|claim| ((claim.packet_id.clone(), claim.user.clone()), claim.amount)).collect())
    }

    /// Whether the open of `packet` by `user`, acknowledged with `amount`
    /// fen, is stored with that amount.
    pub fn holds(&self, packet: &str, user: &str, amount: i64) -> bool {
        self.0.get(&(packet.to_owned(), user.to_owned())) == Some(&amount)
    }

    /// Whether any claim of `packet` by `user` is stored.
    pub fn any(&self, packet: &str, user: &str) -> bool {
        self.0.contains_key(&(packet.to_owned(), user.to_owned()))
    }
}

/// Checks every invariant over all sets of one data directory. `now` only
/// counts packets that are past expiry and still wait for their refund.
pub fn audit(sets: &[SetSnapshot], share_min: Amount, now_ms: i64) -> AuditReport {
    let set_count = u16::try_from(sets.len()).expect("set count fits u16");
    let mut report = AuditReport { sets: sets.len(), ..AuditReport::default() };
    let mut ledger: HashMap<&str, &LedgerRow> = HashMap::new();
    for snapshot in sets {
        report.violations.extend(snapshot.problems.iter().map(|problem| format!("set {}: {problem}", snapshot.set)));
        check_accounts(snapshot, set_count, &mut report);
        for row in &snapshot.ledger {
            if ledger.insert(&row.reference, row).is_some() {
                report.violations.push(format!("ledger reference {} appears twice", row.reference));
            }
        }
    }
    let mut claims_by_packet: HashMap<&str, Vec<&ClaimRow>> = HashMap::new();
    let mut outbox: HashMap<&str, &OutboxRow> = HashMap::new();
    for snapshot in sets {
        for claim in &snapshot.claims {
            claims_by_packet.entry(&claim.packet_id).or_default().push(claim);
        }
        for row in &snapshot.outbox {
            outbox.insert(&row.reference, row);
        }
    }
    let mut explained: HashSet<String> = HashSet::new();
    for snapshot in sets {
        for packet in &snapshot.packets {
            let claims = claims_by_packet.remove(packet.id.as_str()).unwrap_or_default();
            check_packet(snapshot.set, set_count, packet, &claims, share_min, &mut report);
            check_packet_money(packet, &claims, &ledger, &outbox, &mut explained, now_ms, &mut report);
        }
    }
    for (packet_id, _) in claims_by_packet {
        report.violations.push(format!("claims on packet {packet_id}, which does not exist"));
    }
    for snapshot in sets {
        check_withdrawals(snapshot, &ledger, &mut explained, &mut report);
    }
    let any_cold = sets.iter().any(|snapshot| !snapshot.cold.is_empty());
    check_ledger_explained(&ledger, &outbox, &explained, any_cold, &mut report);
    let cold = sets.iter().flat_map(|snapshot| &snapshot.cold);
    report.cold_entries = cold.clone().map(|row| usize::try_from(row.entries).unwrap_or(0)).sum();
    report.ledger_entries = ledger.len() + report.cold_entries;
    report.credits_pending = outbox.keys().filter(|reference| !ledger.contains_key(**reference)).count();
    report.in_flight = outbox
        .values()
        .filter(|row| !ledger.contains_key(row.reference.as_str()))
        .map(|row| i128::from(row.amount))
        .sum();
    let sum_of = |kinds: &[&str]| {
        let hot: i128 =
            ledger.values().filter(|row| kinds.contains(&row.kind.as_str())).map(|r| i128::from(r.amount)).sum();
        let cold: i128 =
            cold.clone().filter(|row| kinds.contains(&row.kind.as_str())).map(|r| i128::from(r.amount)).sum();
        hot + cold
    };
    report.deposits = sum_of(&["deposit"]);
    // Out for good or pending at the bank: withdrawals less returns (and
    // reversed deposits), as a positive amount.
    report.withdrawn = -sum_of(&["withdrawal", "withdrawal_return", "reversal"]);
    if report.deposits - report.withdrawn != report.balances + report.locked + report.in_flight {
        report.violations.push(format!(
            "money is not conserved: deposits {} - withdrawn {} != balances {} + locked {} + in flight {}",
            report.deposits, report.withdrawn, report.balances, report.locked, report.in_flight
        ));
    }
    report
}

/// Invariant 4: each balance is the sum of its entries, never negative, and
/// lives in the set of its user.
fn check_accounts(snapshot: &SetSnapshot, set_count: u16, report: &mut AuditReport) {
    let mut sums: HashMap<&str, i128> = HashMap::new();
    for row in &snapshot.cold {
        *sums.entry(&row.user).or_default() += i128::from(row.amount);
        if !right_set(&row.user, snapshot.set, set_count) {
            report.violations.push(format!(
                "cold day {}'s total of {} is in set {}, not its user's",
                row.day, row.user, snapshot.set
            ));
        }
    }
    for row in &snapshot.ledger {
        *sums.entry(&row.user).or_default() += i128::from(row.amount);
        if !right_set(&row.user, snapshot.set, set_count) {
            report
                .violations
                .push(format!("ledger entry {} is in set {}, not its user's", row.reference, snapshot.set));
        }
    }
    for account in &snapshot.accounts {
        report.accounts += 1;
        report.balances += i128::from(account.balance);
        if account.balance < 0 {
            report.violations.push(format!("balance of {} is negative: {}", account.user, account.balance));
        }
        if !right_set(&account.user, snapshot.set, set_count) {
            report.violations.push(format!("account {} is in set {}, not its own", account.user, snapshot.set));
        }
        let sum = sums.remove(account.user.as_str()).unwrap_or(0);
        if sum != i128::from(account.balance) {
            report.violations.push(format!(
                "balance of {} is {} but its ledger entries sum to {sum}",
                account.user, account.balance
            ));
        }
    }
    for (user, sum) in sums {
        if sum != 0 {
            report.violations.push(format!("ledger entries of {user} sum to {sum} but there is no account"));
        }
    }
}

fn right_set(user: &str, set: u16, set_count: u16) -> bool {
    UserId::parse(user).is_ok_and(|user| SetId::of_user(&user, set_count).0 == set)
}

/// Invariants 1, 2 and 3 for one packet.
fn check_packet(
    set: u16,
    set_count: u16,
    packet: &PacketRow,
    claims: &[&ClaimRow],
    share_min: Amount,
    report: &mut AuditReport,
) {
    report.packets += 1;
    report.claims += claims.len();
    let id = &packet.id;
    let mut violations = Vec::new();
    match packet.id.parse::<PacketId>() {
        Ok(parsed) if parsed.set.0 == set && right_set(&packet.sender, set, set_count) => {}
        _ => violations.push(format!("packet {id} is in set {set}, which its id or sender does not name")),
    }
    let claimed: i128 = claims.iter().map(|claim| i128::from(claim.amount)).sum();
    let accounted = claimed + i128::from(packet.remaining_amount) + i128::from(packet.refunded_amount);
    if accounted != i128::from(packet.total_amount) {
        violations.push(format!(
            "packet {id}: claims {claimed} + remaining {} + refunded {} != total {}",
            packet.remaining_amount, packet.refunded_amount, packet.total_amount
        ));
    }
    let opened = claims.len() as i64;
    if opened > packet.count || opened + packet.remaining_count != packet.count {
        violations.push(format!(
            "packet {id}: {opened} claims and {} shares left, but {} shares",
            packet.remaining_count, packet.count
        ));
    }
    let mut users = HashSet::new();
    for claim in claims {
        if !users.insert(claim.user.as_str()) {
            violations.push(format!("packet {id}: {} holds two claims", claim.user));
        }
        if packet.recipient.as_deref().is_some_and(|recipient| recipient != claim.user) {
            violations.push(format!("packet {id}: opened by {}, who is not its recipient", claim.user));
        }
        if packet.members.as_deref().is_some_and(|members| !members.split(',').any(|member| member == claim.user)) {
            violations.push(format!("packet {id}: opened by {}, who is not in its group", claim.user));
        }
        if claim.amount < 1 {
            violations.push(format!("packet {id}: the share of {} is {} fen", claim.user, claim.amount));
        }
    }
    if violations.is_empty() {
        check_shares(packet, claims, share_min, &mut violations);
    }
    report.violations.append(&mut violations);
}

/// Invariant 3: every share is the one the packet's rule gives for its index.
fn check_shares(packet: &PacketRow, claims: &[&ClaimRow], share_min: Amount, violations: &mut Vec<String>) {
    let mut ordered: Vec<&ClaimRow> = claims.to_vec();
    ordered.sort_by_key(|claim| claim.index);
    let total = Amount::from_signed(packet.total_amount).unwrap_or(Amount::ZERO);
    let count = u32::try_from(packet.count).unwrap_or(0);
    let mut remaining = total;
    for (position, claim) in ordered.iter().enumerate() {
        let index = position as u32;
        if claim.index != i64::from(index) {
            violations.push(format!("packet {}: share indexes are not 0..{}", packet.id, ordered.len()));
            return;
        }
        let Some(kind) = PacketKind::parse(&packet.kind) else {
            violations.push(format!("packet {} has unknown kind {}", packet.id, packet.kind));
            return;
        };
        if index >= count || remaining.fen() < u64::from(count - index) * share_min.fen() {
            violations.push(format!("packet {}: share {index} is past what its {count} shares can hold", packet.id));
            return;
        }
        let expected = ShareDraw {
            kind,
            seed: packet.seed,
            total_amount: total,
            count,
            index,
            remaining_amount: remaining,
            share_min,
        }
        .share();
        if i128::from(claim.amount) != i128::from(expected.fen()) {
            violations.push(format!(
                "packet {}: share {index} of {} is {} fen, but its rule gives {}",
                packet.id,
                claim.user,
                claim.amount,
                expected.fen()
            ));
            return;
        }
        remaining = remaining.checked_sub(expected).unwrap_or(Amount::ZERO);
    }
}

/// Invariants 5 and 6 for one packet: its send debit, each claim credited
/// exactly once (in a ledger or still in the outbox), its refund once.
fn check_packet_money(
    packet: &PacketRow,
    claims: &[&ClaimRow],
    ledger: &HashMap<&str, &LedgerRow>,
    outbox: &HashMap<&str, &OutboxRow>,
    explained: &mut HashSet<String>,
    now_ms: i64,
    report: &mut AuditReport,
) {
    let id = &packet.id;
    let expect_entry =
        |reference: String, user: &str, amount: i64, report: &mut AuditReport| match ledger.get(reference.as_str()) {
            Some(row) if row.user == user && row.amount == amount => true,
            Some(row) => {
                report.violations.push(format!(
                    "ledger entry {reference} moves {} for {}, expected {amount} for {user}",
                    row.amount, row.user
                ));
                true
            }
            None => false,
        };
    let debit = send_ref(id);
    if !expect_entry(debit.clone(), &packet.sender, -packet.total_amount, report) {
        report.violations.push(format!("packet {id} has no send debit"));
    }
    explained.insert(debit);
    for claim in claims {
        let reference = claim_ref(id, &claim.user);
        let credited = expect_entry(reference.clone(), &claim.user, claim.amount, report);
        let pending = outbox.get(reference.as_str());
        if let Some(row) = pending
            && (row.amount != claim.amount || row.user != claim.user)
        {
            report.violations.push(format!("outbox credit {reference} does not match its claim"));
        }
        if !credited && pending.is_none() {
            report.violations.push(format!("claim {reference} was never credited"));
        }
        explained.insert(reference);
    }
    let refund = refund_ref(id);
    if packet.refunded_amount > 0 {
        report.refunds += 1;
        if !expect_entry(refund.clone(), &packet.sender, packet.refunded_amount, report) {
            report.violations.push(format!("packet {id} is marked refunded but has no refund entry"));
        }
        explained.insert(refund);
    } else {
        report.locked += i128::from(packet.remaining_amount);
        if packet.remaining_amount > 0 && packet.expires_at <= now_ms {
            report.refunds_pending += 1;
        }
    }
}

/// Each withdrawal's money left by its entry, for its amount and user, and
/// came back (once, for the same) only if it failed; a pending or completed
/// one has no return. Its entries may have gone cold with their day, when
/// the cold days are counted by their totals: then they are not looked for.
fn check_withdrawals(
    snapshot: &SetSnapshot,
    ledger: &HashMap<&str, &LedgerRow>,
    explained: &mut HashSet<String>,
    report: &mut AuditReport,
) {
    let cold_days: HashSet<u32> = snapshot.cold.iter().map(|row| row.day).collect();
    for withdrawal in &snapshot.withdrawals {
        report.withdrawals += 1;
        let id = &withdrawal.id;
        let day = id.strip_prefix("wd-").and_then(|rest| rest.get(..8)).and_then(|day| day.parse::<u32>().ok());
        let debit = crate::ledger::withdrawal_ref(id);
        let back = crate::ledger::withdrawal_return_ref(id);
        let failed = match withdrawal.status.as_str() {
            "pending" => {
                report.withdrawals_pending += 1;
                false
            }
            "completed" => false,
            "failed" => true,
            other => {
                report.violations.push(format!("withdrawal {id} has unknown status {other}"));
                continue;
            }
        };
        if withdrawal.amount <= 0 {
            report.violations.push(format!("withdrawal {id} is of {} fen", withdrawal.amount));
        }
        match ledger.get(debit.as_str()) {
            Some(row) if row.user == withdrawal.user && row.amount == -withdrawal.amount => {
                explained.insert(debit);
            }
            Some(row) => report.violations.push(format!(
                "withdrawal {id} of {} fen by {} has the entry {} fen by {}",
                withdrawal.amount, withdrawal.user, row.amount, row.user
            )),
            None if day.is_some_and(|day| cold_days.contains(&day)) => {}
            None => report.violations.push(format!("withdrawal {id} has no {debit} entry")),
        }
        match (failed, ledger.get(back.as_str())) {
            (true, Some(row)) if row.user == withdrawal.user && row.amount == withdrawal.amount => {
                explained.insert(back);
            }
            (false, None) => {}
            (true, None) if !cold_days.is_empty() => {}
            (true, _) => report.violations.push(format!("failed withdrawal {id} did not come back once, whole")),
            (false, Some(_)) => report.violations.push(format!("withdrawal {id} came back, but it did not fail")),
        }
    }
}

/// Every entry other than a deposit must be explained by a packet, and every
/// outbox row by a claim.
fn check_ledger_explained(
    ledger: &HashMap<&str, &LedgerRow>,
    outbox: &HashMap<&str, &OutboxRow>,
    explained: &HashSet<String>,
    any_cold: bool,
    report: &mut AuditReport,
) {
    for (reference, row) in ledger {
        let known_kind = EntryKind::parse(&row.kind).is_some();
        if !known_kind {
            report.violations.push(format!("ledger entry {reference} has unknown kind {}", row.kind));
        } else if row.kind == "deposit" {
            if row.amount <= 0 {
                report.violations.push(format!("deposit {reference} is not positive"));
            }
        } else if row.kind == "reversal" {
            // It takes back its deposit, whole (unless that day is cold and
            // counted by its totals).
            let deposit = reference.strip_prefix(REVERSAL_REF_PREFIX).and_then(|deposit| ledger.get(deposit));
            let whole = deposit.is_some_and(|d| d.kind == "deposit" && d.user == row.user && d.amount == -row.amount);
            if !whole && (deposit.is_some() || !any_cold) {
                report.violations.push(format!("reversal {reference} does not take back a deposit of its amount"));
            }
        } else if !explained.contains(*reference) {
            report.violations.push(format!("ledger entry {reference} matches no packet, claim or withdrawal"));
        }
    }
    for reference in outbox.keys() {
        if !explained.contains(*reference) {
            report.violations.push(format!("outbox credit {reference} matches no claim"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SetId;
    use crate::ledger::{DepositKey, claim_ref, deposit_ref, send_ref};

    const FAR: i64 = 4_000_000_000_000;

    fn id(seq: u64) -> String {
        PacketId::new(20_270_128, SetId(0), seq, 7).to_string()
    }

    fn entry(reference: String, user: &str, amount: i64, kind: &str) -> LedgerRow {
        LedgerRow { reference, user: user.to_owned(), amount, kind: kind.to_owned() }
    }

    /// One set: alice deposits 1000 and sends a fixed packet of 300 in 3
    /// shares; bob opens one (credited in the same set, so no outbox row).
    fn books() -> SetSnapshot {
        let packet = id(1);
        SetSnapshot {
            set: 0,
            accounts: vec![
                AccountRow { user: "alice".to_owned(), balance: 700 },
                AccountRow { user: "bob".to_owned(), balance: 100 },
            ],
            ledger: vec![
                entry(deposit_ref("alice", DepositKey::Keyed("k1")), "alice", 1000, "deposit"),
                entry(send_ref(&packet), "alice", -300, "send"),
                entry(claim_ref(&packet, "bob"), "bob", 100, "credit"),
            ],
            packets: vec![PacketRow {
                id: packet.clone(),
                sender: "alice".to_owned(),
                kind: "fixed".to_owned(),
                total_amount: 300,
                count: 3,
                remaining_amount: 200,
                remaining_count: 2,
                refunded_amount: 0,
                seed: 1,
                recipient: None,
                expires_at: FAR,
                members: None,
            }],
            claims: vec![ClaimRow { packet_id: packet, user: "bob".to_owned(), index: 0, amount: 100 }],
            outbox: vec![],
            withdrawals: vec![],
            cold: vec![],
            problems: vec![],
        }
    }

    /// `books()` where alice then withdrew 100 (pending) and 50 (failed,
    /// returned), and bob withdrew 30 (completed).
    fn books_with_withdrawals() -> SetSnapshot {
        let mut books = books();
        let withdrawal = |seq: u64, user: &str, amount: i64, status: &str| WithdrawalRow {
            id: format!("wd-{}", id(seq)),
            user: user.to_owned(),
            amount,
            status: status.to_owned(),
        };
        books.withdrawals = vec![
            withdrawal(2, "alice", 100, "pending"),
            withdrawal(3, "alice", 50, "failed"),
            withdrawal(4, "bob", 30, "completed"),
        ];
        for row in books.withdrawals.clone() {
            books.ledger.push(entry(crate::ledger::withdrawal_ref(&row.id), &row.user, -row.amount, "withdrawal"));
            if row.status == "failed" {
                let back = crate::ledger::withdrawal_return_ref(&row.id);
                books.ledger.push(entry(back, &row.user, row.amount, "withdrawal_return"));
            }
        }
        books.accounts[0].balance -= 100;
        books.accounts[1].balance -= 30;
        books
    }

    #[test]
    fn withdrawals_are_money_out_and_each_moves_as_its_status_says() {
        let report = audit(&[books_with_withdrawals()], Amount::from_fen(1).expect("1 fen"), 0);
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!((report.withdrawals, report.withdrawals_pending, report.withdrawn), (3, 1, 130));
        type Break = fn(&mut SetSnapshot);
        let table: [(&str, Break, &str); 5] = [
            (
                "a failure not returned",
                |b| b.withdrawals[1].status = "completed".to_owned(),
                "came back, but it did not fail",
            ),
            ("a return missing", |b| b.withdrawals[0].status = "failed".to_owned(), "did not come back once"),
            ("another amount", |b| b.withdrawals[2].amount = 31, "has the entry -30 fen"),
            (
                "an entry without its withdrawal",
                |b| drop(b.withdrawals.remove(0)),
                "matches no packet, claim or withdrawal",
            ),
            ("an unknown status", |b| b.withdrawals[0].status = "lost".to_owned(), "unknown status lost"),
        ];
        for (name, break_it, expected) in table {
            let mut broken = books_with_withdrawals();
            break_it(&mut broken);
            let found = violations(broken);
            assert!(found.iter().any(|v| v.contains(expected)), "{name}: {found:?}");
        }
        // A deposit of 50 taken back whole is money out; a part of it is not a reversal.
        let mut reversed = books_with_withdrawals();
        let deposit = deposit_ref("alice", DepositKey::Keyed("k2"));
        reversed.ledger.push(entry(deposit.clone(), "alice", 50, "deposit"));
        reversed.ledger.push(entry(crate::ledger::reversal_ref(&deposit), "alice", -50, "reversal"));
        let report = audit(&[reversed.clone()], Amount::from_fen(1).expect("1 fen"), 0);
        assert_eq!((report.violations.clone(), report.withdrawn), (Vec::<String>::new(), 180));
        reversed.ledger.last_mut().unwrap().amount = -49;
        reversed.accounts[0].balance += 1;
        assert!(violations(reversed).iter().any(|v| v.contains("does not take back a deposit of its amount")));
        let mut leaked = books_with_withdrawals();
        leaked.accounts[0].balance += 1;
        leaked.ledger.push(entry("withdrawal_return:x".to_owned(), "alice", 1, "withdrawal_return"));
        assert!(violations(leaked).iter().any(|v| v.contains("withdrawal_return:x matches no packet")));
    }

    fn cold(day: u32, user: &str, kind: &str, entries: i64, amount: i64) -> ColdTotalRow {
        ColdTotalRow { day, user: user.to_owned(), kind: kind.to_owned(), entries, amount }
    }

    /// A cold day's entries are counted by their totals: in the balances,
    /// in the deposits money is conserved against, and where they disagree.
    #[test]
    fn cold_days_count_by_their_totals() {
        let mut books = books();
        // On an earlier day, now cold: carol deposited 500 and sent alice 200
        // in a packet alice opened whole.
        books.cold = vec![
            cold(20_270_120, "carol", "deposit", 1, 500),
            cold(20_270_120, "carol", "send", 1, -200),
            cold(20_270_120, "alice", "credit", 1, 200),
        ];
        books.accounts[0].balance += 200;
        books.accounts.push(AccountRow { user: "carol".to_owned(), balance: 300 });
        let report = audit(&[books.clone()], Amount::from_fen(1).expect("1 fen"), 0);
        assert_eq!(report.violations, Vec::<String>::new());
        assert_eq!((report.cold_entries, report.ledger_entries, report.deposits), (3, 6, 1500));
        books.cold[2].amount = 201;
        assert!(
            violations(books.clone())
                .iter()
                .any(|v| v.contains("balance of alice is 900 but its ledger entries sum to 901"))
        );
        books.cold[2].amount = 200;
        books.problems.push("cold day 20270120: totals disagree".to_owned());
        assert_eq!(violations(books), ["set 0: cold day 20270120: totals disagree"]);
    }

    fn violations(books: SetSnapshot) -> Vec<String> {
        audit(&[books], Amount::from_fen(1).expect("1 fen"), 0).violations
    }

    #[test]
    fn sound_books_pass() {
        assert_eq!(violations(books()), Vec::<String>::new());
    }

    /// Each row breaks one invariant of DESIGN.md §4 in otherwise sound
    /// books; the audit must name it.
    #[test]
    fn each_broken_invariant_is_caught_by_name() {
        type Break = fn(&mut SetSnapshot);
        let table: [(&str, Break, &str); 11] = [
            ("1: money leaves a packet", |b| b.packets[0].remaining_amount = 199, "claims 100 + remaining 199"),
            ("1: more shares than count", |b| b.packets[0].remaining_count = 3, "1 claims and 3 shares left"),
            (
                "2: two claims by one user",
                |b| {
                    let mut again = b.claims[0].clone();
                    again.index = 1;
                    b.claims.push(again);
                    b.packets[0].remaining_amount = 100;
                    b.packets[0].remaining_count = 1;
                },
                "bob holds two claims",
            ),
            ("2: not the recipient", |b| b.packets[0].recipient = Some("carol".to_owned()), "not its recipient"),
            ("2: not in the group", |b| b.packets[0].members = Some("alice,carol".to_owned()), "not in its group"),
            (
                "3: a share off its rule",
                |b| {
                    b.claims[0].amount = 99;
                    b.packets[0].remaining_amount = 201;
                },
                "its rule gives 100",
            ),
            ("4: a balance off its entries", |b| b.accounts[1].balance = 101, "balance of bob is 101"),
            (
                "4: a balance below zero",
                |b| {
                    b.accounts[1].balance = -1;
                    b.ledger.push(entry("deposit:bob:key:x".to_owned(), "bob", -101, "deposit"));
                },
                "balance of bob is negative",
            ),
            ("5: money from nowhere", |b| b.ledger[0].amount = 1001, "money is not conserved"),
            ("6: a claim never credited", |b| drop(b.ledger.pop()), "was never credited"),
            ("6: a send without its debit", |b| drop(b.ledger.remove(1)), "has no send debit"),
        ];
        for (invariant, break_it, expected) in table {
            let mut broken = books();
            break_it(&mut broken);
            let found = violations(broken);
            assert!(found.iter().any(|v| v.contains(expected)), "{invariant}: expected {expected:?} in {found:?}");
        }
    }

    #[test]
    fn a_claim_on_a_packet_that_does_not_exist_is_caught() {
        let mut broken = books();
        broken.claims.push(ClaimRow { packet_id: id(9), user: "carol".to_owned(), index: 0, amount: 5 });
        let found = violations(broken);
        assert!(found.iter().any(|v| v.contains("which does not exist")), "{found:?}");
    }

    #[test]
    fn acknowledged_opens_are_found_only_with_their_amount() {
        let stored = StoredClaims::of(&[books()]);
        assert!(stored.holds(&id(1), "bob", 100));
        assert!(!stored.holds(&id(1), "bob", 101), "the amount the client was told");
        assert!(!stored.holds(&id(1), "alice", 100));
        assert!(stored.any(&id(1), "bob") && !stored.any(&id(2), "bob"));
    }
}
