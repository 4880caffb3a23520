-- Set ownership by lease, for several nodes serving one data set
-- (`lease.rs`), and the fence that makes a lease safe: a journal append
-- carries its writer's epoch and is refused unless the set's lease is still
-- at that epoch. A node that lost its set (its lease expired and another
-- took it, or a standalone node started on the set) can then never append
-- behind the new owner's back, however late its append arrives.
--
-- Times are the database's clock (`clock_timestamp()`), never a node's.

-- The nodes of a cluster, as they registered themselves, with their last
-- heartbeat: who is live, and where to reach them.
CREATE TABLE hongbao_nodes (
    node_id      text PRIMARY KEY,
    advertise    text NOT NULL,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

-- One row per set (made by the migration step that records the set count):
-- who holds it, until when, and its epoch, which every takeover raises.
-- A free set has no owner and expired at '-infinity'; a standalone node
-- holds its sets until 'infinity'.
CREATE TABLE hongbao_leases (
    set_id      smallint PRIMARY KEY CHECK (set_id >= 0),
    owner       text,
    epoch       bigint NOT NULL DEFAULT 0 CHECK (epoch >= 0),
    expires_at  timestamptz NOT NULL DEFAULT '-infinity',
    acquired_at timestamptz
);

-- The epoch each record was appended under. Records from before leases
-- were appended at epoch 0.
ALTER TABLE journal ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

-- The fence. The set's lease row is read FOR SHARE: the lock is held until
-- the append commits, so a takeover (an UPDATE of the row) waits for an
-- append in flight, and its new owner's recovery reads that record; an
-- append that comes after the takeover waits for it in turn and then reads
-- the new epoch. Expiry is not checked: an expired lease that nobody took
-- is still safe to write under, since nobody else can have written.
--
-- Which node appended which positions of a set at each epoch, kept as the
-- journal is trimmed: the evidence that a set was written by one node per
-- epoch and that epochs follow each other in the journal (what
-- `hongbao chaos --nodes` checks). One row per set and epoch, its upper
-- bound moved by every append.
CREATE TABLE journal_epochs (
    set_id         smallint NOT NULL,
    epoch          bigint NOT NULL,
    node           text NOT NULL,
    first_position bigint NOT NULL,
    last_position  bigint NOT NULL,
    PRIMARY KEY (set_id, epoch),
    CHECK (first_position <= last_position)
);

CREATE FUNCTION journal_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    held bigint;
    holder text;
BEGIN
    SELECT l.epoch, l.owner INTO held, holder FROM hongbao_leases l WHERE l.set_id = NEW.set_id FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'set % has no lease: its journal takes no appends', NEW.set_id USING ERRCODE = 'HB409';
    END IF;
    IF NEW.epoch <> held THEN
        RAISE EXCEPTION 'set %: an append at epoch % is fenced, the set''s lease is at epoch %',
            NEW.set_id, NEW.epoch, held USING ERRCODE = 'HB409';
    END IF;
    INSERT INTO journal_epochs AS e (set_id, epoch, node, first_position, last_position)
        VALUES (NEW.set_id, NEW.epoch, COALESCE(holder, ''), NEW.position, NEW.position)
        ON CONFLICT (set_id, epoch) DO UPDATE SET last_position = GREATEST(e.last_position, EXCLUDED.last_position);
    RETURN NEW;
END $$;
CREATE TRIGGER journal_fence BEFORE INSERT ON journal FOR EACH ROW EXECUTE FUNCTION journal_fence();
