-- Withdrawals (`hongbao_domain::withdrawal`): asked for pending, with the
-- debit of their money (`withdrawal:<id>`), settled once: completed, or
-- failed with their money's return (`withdrawal_return:<id>`). The rows
-- stay hot for good; their entries go cold with their day.

-- The ledger's new kinds (and their signs), in the cold days' totals and
-- the idempotency keys too. The CHECKs these replace are found by what
-- they test (their names were PostgreSQL's to choose); cold days'
-- partitions keep theirs (they take no writes).
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS tab, conname FROM pg_constraint
             WHERE contype = 'c' AND conislocal
               AND ((conrelid IN ('public.ledger'::regclass, 'public.ledger_day_totals'::regclass)
                     AND pg_get_constraintdef(oid) LIKE '%kind%')
                    OR (conrelid = 'public.idempotency'::regclass AND pg_get_constraintdef(oid) LIKE '%op%'))
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tab, c.conname);
    END LOOP;
END $$;
ALTER TABLE ledger
    ADD CONSTRAINT ledger_kind
        CHECK (kind IN ('deposit', 'send', 'credit', 'refund', 'withdrawal', 'withdrawal_return', 'reversal')),
    ADD CONSTRAINT ledger_kind_sign CHECK ((kind IN ('send', 'withdrawal', 'reversal')) = (amount < 0)),
    ADD CONSTRAINT ledger_kind_packet CHECK ((kind IN ('send', 'credit', 'refund')) = (packet_id IS NOT NULL));
ALTER TABLE ledger_day_totals ADD CONSTRAINT ledger_day_totals_kind
    CHECK (kind IN ('deposit', 'send', 'credit', 'refund', 'withdrawal', 'withdrawal_return', 'reversal'));
ALTER TABLE idempotency ADD CONSTRAINT idempotency_op CHECK (op IN ('deposit', 'send', 'withdraw'));

-- An instant's UTC day (`Millis::civil_day`): the day its entry is filed under.
CREATE FUNCTION hongbao_civil_day(at bigint) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(to_timestamp(at / 1000) AT TIME ZONE 'UTC', 'YYYYMMDD')::integer
$$;

CREATE TABLE withdrawals (
    id         text PRIMARY KEY,
    set_id     smallint NOT NULL,
    user_id    text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0),
    status     text NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    created_at bigint NOT NULL,
    settled_at bigint,
    CHECK ((status = 'pending') = (settled_at IS NULL))
);
CREATE INDEX withdrawals_pending ON withdrawals (set_id) WHERE status = 'pending';

CREATE FUNCTION withdrawals_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_withdrawals w
               WHERE w.status <> 'pending'
                  OR NOT EXISTS (SELECT 1 FROM ledger l
                                 WHERE l.day = hongbao_civil_day(w.created_at) AND l.user_id = w.user_id
                                   AND l.reference = 'withdrawal:' || w.id AND l.amount = -w.amount
                                   AND l.kind = 'withdrawal')) THEN
        RAISE EXCEPTION 'a withdrawal starts pending, after its debit' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER withdrawals_start AFTER INSERT ON withdrawals
    REFERENCING NEW TABLE AS new_withdrawals FOR EACH STATEMENT EXECUTE FUNCTION withdrawals_start();

CREATE FUNCTION withdrawals_settle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_withdrawals o JOIN new_withdrawals n ON n.id = o.id
               WHERE o.status <> 'pending' OR n.status = 'pending'
                  OR (n.set_id, n.user_id, n.amount, n.created_at) IS DISTINCT FROM
                     (o.set_id, o.user_id, o.amount, o.created_at)
                  OR (n.status = 'failed') <> EXISTS (
                         SELECT 1 FROM ledger l
                         WHERE l.day = hongbao_civil_day(n.settled_at) AND l.user_id = n.user_id
                           AND l.reference = 'withdrawal_return:' || n.id AND l.amount = n.amount
                           AND l.kind = 'withdrawal_return')) THEN
        RAISE EXCEPTION 'a withdrawal is settled once, and a failed one with its return'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER withdrawals_settle AFTER UPDATE ON withdrawals
    REFERENCING OLD TABLE AS old_withdrawals NEW TABLE AS new_withdrawals
    FOR EACH STATEMENT EXECUTE FUNCTION withdrawals_settle();
CREATE TRIGGER withdrawals_kept BEFORE DELETE ON withdrawals FOR EACH STATEMENT EXECUTE FUNCTION immutable();

-- Bills (`GET /v1/ledger`): each entry keeps the balance it left (NULL only
-- for entries from before), checked where the entries are applied; a
-- user's entries by time, hot and cold together.
ALTER TABLE ledger ADD COLUMN balance_after bigint CHECK (balance_after IS NULL OR balance_after >= 0);
ALTER TABLE hongbao_archive.ledger ADD COLUMN balance_after bigint;
CREATE INDEX ledger_by_user ON ledger (user_id, at, reference);
CREATE INDEX archive_ledger_by_user ON hongbao_archive.ledger (user_id, at, reference);
CREATE VIEW ledger_all AS
    SELECT * FROM public.ledger UNION ALL SELECT * FROM hongbao_archive.ledger;

CREATE OR REPLACE FUNCTION ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- From a missing account (zero), a first debit runs below zero too.
    IF EXISTS (
        SELECT 1 FROM (
            SELECT n.balance_after, COALESCE(a.balance, 0)
                     + sum(n.amount) OVER (PARTITION BY n.user_id ORDER BY n.position, n.entry) AS running
            FROM new_entries n LEFT JOIN accounts a ON a.user_id = n.user_id
        ) r
        WHERE r.running < 0 OR r.balance_after <> r.running
    ) THEN
        RAISE EXCEPTION 'a debit below zero, of an account that does not exist, or an entry whose balance_after is not the balance it left'
            USING ERRCODE = 'check_violation';
    END IF;
    UPDATE accounts a SET balance = a.balance + d.net
    FROM (SELECT user_id, sum(amount) AS net FROM new_entries GROUP BY user_id) d
    WHERE a.user_id = d.user_id;
    INSERT INTO accounts (user_id, balance)
    SELECT n.user_id, sum(n.amount) FROM new_entries n
    WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.user_id = n.user_id)
    GROUP BY n.user_id;
    RETURN NULL;
END $$;

-- Frozen accounts (`hongbao_engine::frozen`): a row while an admin's freeze
-- lasts, with the user's set (a set loads its own).
CREATE TABLE frozen_accounts (
    user_id text PRIMARY KEY,
    set_id  smallint NOT NULL,
    since   bigint NOT NULL
);
CREATE INDEX frozen_accounts_by_set ON frozen_accounts (set_id);

-- Deposits taken back by an admin: one row each (kept for good, so a
-- deposit is reversed once even after its entries went cold), after the
-- reversal's entry, of the deposit's amount.
CREATE TABLE reversals (
    deposit text PRIMARY KEY,
    user_id text NOT NULL,
    amount  bigint NOT NULL CHECK (amount > 0),
    at      bigint NOT NULL
);
CREATE FUNCTION reversals_entry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_reversals r
               WHERE NOT EXISTS (SELECT 1 FROM ledger l
                                 WHERE l.day = hongbao_civil_day(r.at) AND l.user_id = r.user_id
                                   AND l.reference = 'reversal:' || r.deposit AND l.amount = -r.amount
                                   AND l.kind = 'reversal')
                  OR NOT EXISTS (SELECT 1 FROM ledger l
                                 WHERE l.user_id = r.user_id AND l.reference = r.deposit
                                   AND l.amount = r.amount AND l.kind = 'deposit')) THEN
        RAISE EXCEPTION 'a reversal needs its entry, of its deposit''s amount' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER reversals_entry AFTER INSERT ON reversals
    REFERENCING NEW TABLE AS new_reversals FOR EACH STATEMENT EXECUTE FUNCTION reversals_entry();
CREATE TRIGGER reversals_kept BEFORE UPDATE OR DELETE ON reversals FOR EACH STATEMENT EXECUTE FUNCTION immutable();
