-- Group packets (`hongbao_domain::group`): the group's id and its members,
-- the sorted names joined by commas, once per packet (as SQLite keeps
-- them). Only a member may claim a share of one; a packet's group is one
-- of its terms, which never change.
ALTER TABLE packets ADD COLUMN group_id text, ADD COLUMN members text;
ALTER TABLE packets ADD CONSTRAINT packets_group CHECK ((members IS NULL) = (group_id IS NULL) AND members <> '');
-- The cold days' tables keep the same columns, so a day's partitions move
-- between them as they are.
ALTER TABLE hongbao_archive.packets ADD COLUMN group_id text, ADD COLUMN members text;
CREATE OR REPLACE VIEW packets_all AS
    SELECT * FROM public.packets UNION ALL SELECT * FROM hongbao_archive.packets;

CREATE OR REPLACE FUNCTION packets_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_packets o JOIN new_packets n ON n.day = o.day AND n.id = o.id
               WHERE (n.sender, n.kind, n.total_amount, n.count, n.seed, n.created_at, n.expires_at, n.position)
                     IS DISTINCT FROM
                     (o.sender, o.kind, o.total_amount, o.count, o.seed, o.created_at, o.expires_at, o.position)
                  OR n.greeting IS DISTINCT FROM o.greeting OR n.recipient IS DISTINCT FROM o.recipient
                  OR n.password_digest IS DISTINCT FROM o.password_digest
                  OR n.group_id IS DISTINCT FROM o.group_id OR n.members IS DISTINCT FROM o.members) THEN
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

CREATE OR REPLACE FUNCTION claims_take() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    why text;
BEGIN
    SELECT CASE
        WHEN p.id IS NULL OR p.position > c.position THEN 'claim on an unknown packet'
        WHEN p.recipient IS NOT NULL AND p.recipient <> c.user_id THEN 'claim by someone other than the recipient'
        WHEN p.members IS NOT NULL AND NOT c.user_id = ANY (string_to_array(p.members, ','))
            THEN 'claim by someone outside the packet''s group'
        WHEN c.at >= p.expires_at OR p.refunded_amount <> 0 THEN 'claim at or after expiry, or after the refund'
    END INTO why
    FROM new_claims c LEFT JOIN packets p ON p.day = c.day AND p.id = c.packet_id
    WHERE p.id IS NULL OR p.position > c.position OR (p.recipient IS NOT NULL AND p.recipient <> c.user_id)
       OR (p.members IS NOT NULL AND NOT c.user_id = ANY (string_to_array(p.members, ',')))
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
