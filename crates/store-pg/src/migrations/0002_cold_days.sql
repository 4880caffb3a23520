-- Cold days. A day whose packets are all settled, whose credits have all
-- landed, and that is older than the retention leaves the hot tables: its
-- partitions of `ledger`, `packets` and `claims` are detached and attached
-- to the same tables in the schema `hongbao_archive`, where they stay
-- readable (packet detail, lists, `hongbao audit --cold`) and take no
-- writes. In the same transaction each user's entries of the day are
-- summed by kind into `ledger_day_totals`, so the audit checks "balance =
-- sum of entries" from the hot entries and those totals, without reading
-- the cold days every time.

CREATE SCHEMA hongbao_archive;

CREATE TABLE hongbao_archive.ledger (LIKE public.ledger INCLUDING DEFAULTS) PARTITION BY RANGE (day);
CREATE TABLE hongbao_archive.packets (LIKE public.packets INCLUDING DEFAULTS) PARTITION BY RANGE (day);
CREATE TABLE hongbao_archive.claims (LIKE public.claims INCLUDING DEFAULTS) PARTITION BY RANGE (day);

CREATE FUNCTION hongbao_archive.cold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cold days take no writes' USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER ledger_cold BEFORE INSERT OR UPDATE OR DELETE ON hongbao_archive.ledger
    FOR EACH STATEMENT EXECUTE FUNCTION hongbao_archive.cold();
CREATE TRIGGER packets_cold BEFORE INSERT OR UPDATE OR DELETE ON hongbao_archive.packets
    FOR EACH STATEMENT EXECUTE FUNCTION hongbao_archive.cold();
CREATE TRIGGER claims_cold BEFORE INSERT OR UPDATE OR DELETE ON hongbao_archive.claims
    FOR EACH STATEMENT EXECUTE FUNCTION hongbao_archive.cold();

-- Per cold day, user and kind of entry: how many entries and their sum.
CREATE TABLE ledger_day_totals (
    day     integer NOT NULL,
    user_id text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('deposit', 'send', 'credit', 'refund')),
    entries bigint NOT NULL CHECK (entries > 0),
    amount  bigint NOT NULL,
    PRIMARY KEY (day, user_id, kind)
);

-- What reads see: hot and cold days together (the day in a query prunes
-- both sides to the one partition that holds it).
CREATE VIEW packets_all AS
    SELECT * FROM public.packets UNION ALL SELECT * FROM hongbao_archive.packets;
CREATE VIEW claims_all AS
    SELECT * FROM public.claims UNION ALL SELECT * FROM hongbao_archive.claims;
