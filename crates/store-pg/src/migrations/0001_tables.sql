-- hongbao's tables on PostgreSQL. Every set of a data set shares them; a
-- set's rows carry its id where the key does not already name a user or a
-- packet (which name their set). Packets, claims and the ledger are
-- partitioned by day (range, `yyyymmdd`), and a day's packets and claims by
-- a hash of the packet id; days are made ahead by the store (`days.rs`).
--
-- Every unique key includes the packet id or the user, so the same schema
-- distributes on Citus as it is (DESIGN.md names the distribution columns).
--
-- The constraints are the second line of defence: the engine decides, but a
-- wrong decision cannot be written. The triggers are statement-level, over
-- transition tables, because the materializer writes thousands of rows per
-- statement: one check per statement, not one per row.

-- The data set this database belongs to: its set count (`sets`), fixed at
-- creation, since it decides which set holds each user.
CREATE TABLE hongbao_meta (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);

-- The days whose partitions exist (`days.rs` makes them, ahead of time).
CREATE TABLE hongbao_days (
    day   integer PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('hot', 'cold'))
);

-- One row per set: how far its tables have materialized its journal, and
-- its next packet sequence number.
CREATE TABLE hongbao_sets (
    set_id   smallint PRIMARY KEY CHECK (set_id >= 0),
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0),
    next_seq bigint NOT NULL DEFAULT 1 CHECK (next_seq >= 1)
);

-- The commit point: one row per batch, keyed by set and position, so two
-- writers of one set can never both append the same position.
CREATE TABLE journal (
    set_id   smallint NOT NULL,
    position bigint NOT NULL CHECK (position > 0),
    record   bytea NOT NULL,
    PRIMARY KEY (set_id, position)
);

CREATE TABLE accounts (
    user_id text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);

-- Every balance change, under a unique reference. `day` is the entry's
-- business day: its packet's day (spelled in the packet id, and checked), or
-- the day of a deposit. So a packet's entries live in its day, and a
-- reference names its day: unique within the day is unique.
-- `position` and `entry` say which journal record wrote it, and in what
-- order within the set.
CREATE TABLE ledger (
    day       integer NOT NULL,
    user_id   text NOT NULL,
    reference text NOT NULL,
    amount    bigint NOT NULL CHECK (amount <> 0),
    kind      text NOT NULL CHECK (kind IN ('deposit', 'send', 'credit', 'refund')),
    packet_id text,
    at        bigint NOT NULL,
    position  bigint NOT NULL,
    entry     integer NOT NULL,
    CHECK ((kind = 'send') = (amount < 0)),
    CHECK ((kind = 'deposit') = (packet_id IS NULL)),
    CHECK (packet_id IS NULL OR day = split_part(packet_id, '-', 1)::integer),
    PRIMARY KEY (day, user_id, reference)
) PARTITION BY RANGE (day);

-- Balances change only through the ledger: each statement's entries are
-- applied to the accounts here, in journal order; a debit needs an account
-- and may never take a balance below zero, even for a moment within the
-- statement. Entries are immutable.
CREATE FUNCTION ledger_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- From a missing account (zero), a first debit runs below zero too.
    IF EXISTS (
        SELECT 1 FROM (
            SELECT COALESCE(a.balance, 0)
                     + sum(n.amount) OVER (PARTITION BY n.user_id ORDER BY n.position, n.entry) AS running
            FROM new_entries n LEFT JOIN accounts a ON a.user_id = n.user_id
        ) r
        WHERE r.running < 0
    ) THEN
        RAISE EXCEPTION 'a debit below zero, or of an account that does not exist' USING ERRCODE = 'check_violation';
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
CREATE TRIGGER ledger_apply AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION ledger_apply();

-- The triggers here are on the partitioned tables and fire for statements
-- that name them; each day's partitions get this one (`days.rs`), so a
-- statement that names a partition directly, past the checks, is refused.
CREATE FUNCTION through_parent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'write % through its partitioned table', TG_TABLE_NAME USING ERRCODE = 'check_violation';
END $$;

CREATE FUNCTION immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable', TG_TABLE_NAME USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER ledger_immutable BEFORE UPDATE OR DELETE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION immutable();

CREATE TABLE packets (
    day              integer NOT NULL,
    id               text NOT NULL,
    set_id           smallint NOT NULL,
    seq              bigint NOT NULL,
    sender           text NOT NULL,
    kind             text NOT NULL CHECK (kind IN ('lucky', 'fixed', 'exclusive')),
    total_amount     bigint NOT NULL CHECK (total_amount > 0),
    count            integer NOT NULL CHECK (count > 0),
    remaining_amount bigint NOT NULL CHECK (remaining_amount >= 0),
    remaining_count  integer NOT NULL CHECK (remaining_count >= 0),
    refunded_amount  bigint NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    seed             bigint NOT NULL,
    greeting         text,
    password_digest  bytea CHECK (password_digest IS NULL OR length(password_digest) = 32),
    recipient        text,
    created_at       bigint NOT NULL,
    expires_at       bigint NOT NULL CHECK (expires_at > created_at),
    position         bigint NOT NULL,
    CHECK (day = split_part(id, '-', 1)::integer AND set_id = split_part(id, '-', 2)::smallint
           AND seq = split_part(id, '-', 3)::bigint),
    CHECK (remaining_amount + refunded_amount <= total_amount),
    CHECK (remaining_count <= count),
    CHECK (refunded_amount > 0 OR remaining_amount >= remaining_count),
    CHECK (remaining_count > 0 OR remaining_amount = 0),
    CHECK ((kind = 'exclusive') = (recipient IS NOT NULL)),
    CHECK (kind <> 'exclusive' OR count = 1),
    CHECK (kind <> 'fixed' OR total_amount % count = 0),
    PRIMARY KEY (day, id)
) PARTITION BY RANGE (day);
CREATE INDEX packets_by_sender ON packets (sender, set_id, seq);
CREATE INDEX packets_by_set ON packets (set_id, seq);

-- A packet starts whole, and only after its sender paid for it.
CREATE FUNCTION packets_start_whole() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_packets p
               WHERE p.remaining_amount <> p.total_amount OR p.remaining_count <> p.count
                  OR p.refunded_amount <> 0) THEN
        RAISE EXCEPTION 'a new packet must start whole' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM new_packets p
               WHERE NOT EXISTS (SELECT 1 FROM ledger l
                                 WHERE l.day = p.day AND l.user_id = p.sender
                                   AND l.reference = 'send:' || p.id AND l.amount = -p.total_amount
                                   AND l.position <= p.position)) THEN
        RAISE EXCEPTION 'a packet needs its send debit' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER packets_start_whole AFTER INSERT ON packets
    REFERENCING NEW TABLE AS new_packets FOR EACH STATEMENT EXECUTE FUNCTION packets_start_whole();

-- What a packet is never changes; what is left changes only by claims (the
-- claims' trigger) and by one refund, after expiry, of exactly what was
-- left, with its ledger entry.
CREATE FUNCTION packets_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_packets o JOIN new_packets n ON n.day = o.day AND n.id = o.id
               WHERE (n.sender, n.kind, n.total_amount, n.count, n.seed, n.created_at, n.expires_at, n.position)
                     IS DISTINCT FROM
                     (o.sender, o.kind, o.total_amount, o.count, o.seed, o.created_at, o.expires_at, o.position)
                  OR n.greeting IS DISTINCT FROM o.greeting OR n.recipient IS DISTINCT FROM o.recipient
                  OR n.password_digest IS DISTINCT FROM o.password_digest) THEN
        RAISE EXCEPTION 'a packet''s terms are immutable' USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM old_packets o JOIN new_packets n ON n.day = o.day AND n.id = o.id
               WHERE n.refunded_amount <> o.refunded_amount
                 AND (o.refunded_amount <> 0 OR n.remaining_amount <> 0
                      OR n.refunded_amount <> o.remaining_amount OR n.remaining_count <> o.remaining_count
                      OR NOT EXISTS (SELECT 1 FROM ledger l
                                     WHERE l.day = n.day AND l.user_id = n.sender
                                       AND l.reference = 'refund:' || n.id AND l.amount = n.refunded_amount))) THEN
        RAISE EXCEPTION 'a packet is refunded once, for what is left, with its entry' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER packets_change AFTER UPDATE ON packets
    REFERENCING OLD TABLE AS old_packets NEW TABLE AS new_packets FOR EACH STATEMENT EXECUTE FUNCTION packets_change();
CREATE TRIGGER packets_kept BEFORE DELETE ON packets FOR EACH STATEMENT EXECUTE FUNCTION immutable();

-- One claim per packet and user, and one per share index; a statement's
-- claims of a packet take its next indexes, in journal order, and only
-- claims journaled after their packet. (A claim journaled after its
-- packet's refund is refused by the refund's own update: the materializer
-- writes a transaction's batches in runs that end at each refund,
-- `writer.rs`.)
CREATE TABLE claims (
    day       integer NOT NULL,
    packet_id text NOT NULL,
    user_id   text NOT NULL,
    idx       integer NOT NULL CHECK (idx >= 0),
    amount    bigint NOT NULL CHECK (amount >= 1),
    at        bigint NOT NULL,
    position  bigint NOT NULL,
    CHECK (day = split_part(packet_id, '-', 1)::integer),
    PRIMARY KEY (day, packet_id, user_id),
    UNIQUE (day, packet_id, idx)
) PARTITION BY RANGE (day);
CREATE INDEX claims_by_user ON claims (user_id, at);

CREATE FUNCTION claims_take() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    why text;
BEGIN
    SELECT CASE
        WHEN p.id IS NULL OR p.position > c.position THEN 'claim on an unknown packet'
        WHEN p.recipient IS NOT NULL AND p.recipient <> c.user_id THEN 'claim by someone other than the recipient'
        WHEN c.at >= p.expires_at OR p.refunded_amount <> 0 THEN 'claim at or after expiry, or after the refund'
    END INTO why
    FROM new_claims c LEFT JOIN packets p ON p.day = c.day AND p.id = c.packet_id
    WHERE p.id IS NULL OR p.position > c.position OR (p.recipient IS NOT NULL AND p.recipient <> c.user_id)
       OR c.at >= p.expires_at OR p.refunded_amount <> 0
    LIMIT 1;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION '%', why USING ERRCODE = 'check_violation';
    END IF;
    -- In journal order, a packet's claims take its next indexes one by one.
    IF EXISTS (SELECT 1 FROM (SELECT day, packet_id, idx,
                                     row_number() OVER (PARTITION BY day, packet_id ORDER BY position, idx) - 1 AS nth
                              FROM new_claims) c
               JOIN packets p ON p.day = c.day AND p.id = c.packet_id
               WHERE c.idx <> p.count - p.remaining_count + c.nth) THEN
        RAISE EXCEPTION 'claim out of share order' USING ERRCODE = 'check_violation';
    END IF;
    UPDATE packets p
    SET remaining_amount = p.remaining_amount - g.taken, remaining_count = p.remaining_count - g.n
    FROM (SELECT day, packet_id, sum(amount) AS taken, count(*) AS n FROM new_claims GROUP BY day, packet_id) g
    WHERE p.day = g.day AND p.id = g.packet_id;
    RETURN NULL;
END $$;
CREATE TRIGGER claims_take AFTER INSERT ON claims
    REFERENCING NEW TABLE AS new_claims FOR EACH STATEMENT EXECUTE FUNCTION claims_take();
CREATE TRIGGER claims_immutable BEFORE UPDATE OR DELETE ON claims
    FOR EACH STATEMENT EXECUTE FUNCTION immutable();

-- Credits for openers whose wallets live in other sets, until acknowledged.
-- Kept by the set of the packet (`set_id`), keyed by the claim it pays.
CREATE TABLE outbox (
    day       integer NOT NULL,
    packet_id text NOT NULL,
    user_id   text NOT NULL,
    set_id    smallint NOT NULL,
    reference text NOT NULL,
    amount    bigint NOT NULL CHECK (amount > 0),
    at        bigint NOT NULL,
    CHECK (reference = 'claim:' || packet_id || ':' || user_id),
    PRIMARY KEY (day, packet_id, user_id)
);
CREATE INDEX outbox_by_set ON outbox (set_id);

CREATE FUNCTION outbox_of_a_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_credits o
               WHERE NOT EXISTS (SELECT 1 FROM claims c WHERE c.day = o.day AND c.packet_id = o.packet_id
                                 AND c.user_id = o.user_id AND c.amount = o.amount)) THEN
        RAISE EXCEPTION 'an outbox credit must match its claim' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_of_a_claim AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_credits FOR EACH STATEMENT EXECUTE FUNCTION outbox_of_a_claim();

CREATE TABLE idempotency (
    user_id     text NOT NULL,
    op          text NOT NULL CHECK (op IN ('deposit', 'send')),
    key         text NOT NULL,
    fingerprint text NOT NULL,
    result      text NOT NULL,
    PRIMARY KEY (user_id, op, key)
);
