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
