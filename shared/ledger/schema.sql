-- Tierline's tables. One database, one schema per owning service; applied at every service start
-- (idempotent) under an advisory lock so concurrent starts do not race.
--
-- metering owns metering.*: the dedupe ledger of items and the running counts.
-- billing owns billing.*: agreements, closed periods, invoices (an outbox for billing.invoices).
-- billing.closed_periods is the one table both read: metering flags an item late when its period
-- is closed. A per-client advisory lock (shared by metering's writers, exclusive for billing's
-- close of that client) makes sure no item slips between the two: shared/ledger/README.md.

CREATE SCHEMA IF NOT EXISTS metering;
CREATE SCHEMA IF NOT EXISTS billing;

-- Every item metered, once: (client_id, item_id) is the idempotency key of SPEC §2.
CREATE TABLE IF NOT EXISTS metering.items (
    client_id     text        NOT NULL,
    item_id       text        NOT NULL,
    completed_at  timestamptz NOT NULL,
    service_line  text        NOT NULL,   -- 'unclassified' when nothing could place it
    complexity    text        NOT NULL,   -- 'none' when unclassified
    units         integer     NOT NULL,
    rule_id       text,
    agreement_version integer,
    late          boolean     NOT NULL,
    received_at   timestamptz,            -- when intake received it: ingest latency
    metered_at    timestamptz NOT NULL DEFAULT now(),
    source        text,                   -- SPEC §2's fields the item document shows (§10)
    opened_at     timestamptz,
    handling_seconds integer,             -- null when the item did not say
    facts         text,                   -- what else the rules read (queue, title, tags, attributes),
                                          -- JSON kept as written: parsed only to classify again
    PRIMARY KEY (client_id, item_id)
);

-- Each service applies this file at start, while others write: a change to a table that already
-- exists (a column, an index) runs only when missing, so once applied it takes no table lock
-- (`ADD COLUMN IF NOT EXISTS` takes ACCESS EXCLUSIVE and `CREATE INDEX IF NOT EXISTS` SHARE even
-- when there is nothing to do, and together they deadlock with metering's writers).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'metering'
                     AND table_name = 'items' AND column_name = 'received_at') THEN
        ALTER TABLE metering.items ADD COLUMN received_at timestamptz;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'metering'
                     AND table_name = 'items' AND column_name = 'facts') THEN
        ALTER TABLE metering.items ADD COLUMN source text, ADD COLUMN opened_at timestamptz,
            ADD COLUMN handling_seconds integer, ADD COLUMN facts text;
    END IF;
    -- A period's items in order (SPEC §10: by instant, then id in code-point order, hence
    -- COLLATE "C"): the items API pages and exports on it, a reclassification selects through it.
    IF to_regclass('metering.items_by_time') IS NULL THEN
        CREATE INDEX items_by_time ON metering.items (client_id, completed_at, item_id COLLATE "C");
    END IF;
END $$;

-- Every reclassification (SPEC §10), once per (client_id, id): its body (a replay is compared
-- with it), its first answer (a replay gets it verbatim), who made it and when — the audit trail
-- of a client's disputes. `note_due` marks one that moved items in a closed, invoiced period:
-- billing owes a note for it (billing.notes holds the ones issued).
CREATE TABLE IF NOT EXISTS metering.reclassifications (
    client_id  text        NOT NULL,
    id         text        NOT NULL,
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    period     text        NOT NULL,
    body       jsonb       NOT NULL,
    answer     jsonb       NOT NULL,
    made_by    text        NOT NULL,
    made_at    timestamptz NOT NULL,
    note_due   boolean     NOT NULL,
    late_delta bigint      NOT NULL,   -- the change in the period's late billable items
    PRIMARY KEY (client_id, id)
);
DO $$ BEGIN
    IF to_regclass('metering.reclassifications_by_period') IS NULL THEN
        CREATE INDEX reclassifications_by_period ON metering.reclassifications (client_id, period, seq);
    END IF;
    IF to_regclass('metering.reclassifications_note_due') IS NULL THEN
        CREATE INDEX reclassifications_note_due ON metering.reclassifications (seq) WHERE note_due;
    END IF;
END $$;

-- Each change of an item's class, oldest first: the item document's `history`.
CREATE TABLE IF NOT EXISTS metering.item_history (
    client_id        text        NOT NULL,
    item_id          text        NOT NULL,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    at               timestamptz NOT NULL,
    from_line        text        NOT NULL,   -- 'unclassified' as in metering.items
    from_complexity  text        NOT NULL,
    to_line          text        NOT NULL,
    to_complexity    text        NOT NULL,
    reclassification text        NOT NULL,
    reason           text        NOT NULL,
    PRIMARY KEY (client_id, item_id, seq)
);

-- Running counts per client, class and UTC day (`day`: its midnight). A period in any timezone
-- is read as the whole days inside it from here and its edges (the part of a day at each end that
-- the zone's midnight cuts) from metering.items: `metering.usage_between` below. So a client whose
-- agreement (and so timezone) arrives or changes later is re-bucketed by reading, never by
-- rewriting, and a client's month is at most 31 rows per class, whatever its volume.
CREATE TABLE IF NOT EXISTS metering.usage_days (
    client_id        text        NOT NULL,
    day              timestamptz NOT NULL,
    service_line     text        NOT NULL,
    complexity       text        NOT NULL,
    items            bigint      NOT NULL,
    units            bigint      NOT NULL,
    handling_seconds bigint      NOT NULL,
    late_items       bigint      NOT NULL,
    PRIMARY KEY (client_id, day, service_line, complexity)
) WITH (fillfactor = 70);  -- room on each page: counter updates stay HOT, little for vacuum

-- From 15-minute slots (the ledger before usage_days): their counts move to day rows once, in the
-- first start's schema transaction, and the table goes. A metering of the old version still
-- running then fails its next batch (it writes a view now) and commits nothing: stop the old
-- meterings first. The view keeps the old name for readers from before (the peer kit checks its
-- sums per UTC month through it): `slot` is the day. OFFSET 0 makes it read-only.
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'metering' AND c.relname = 'usage_slots' AND c.relkind = 'r') THEN
        LOCK TABLE metering.usage_slots IN ACCESS EXCLUSIVE MODE;
        INSERT INTO metering.usage_days AS d (client_id, day, service_line, complexity, items,
                                              units, handling_seconds, late_items)
        SELECT client_id, date_bin('24 hours', slot, timestamptz '2000-01-01 00:00Z'), service_line,
               complexity, sum(items), sum(units), sum(handling_seconds), sum(late_items)
          FROM metering.usage_slots
         GROUP BY 1, 2, 3, 4
        ON CONFLICT (client_id, day, service_line, complexity) DO UPDATE
           SET items = d.items + excluded.items,
               units = d.units + excluded.units,
               handling_seconds = d.handling_seconds + excluded.handling_seconds,
               late_items = d.late_items + excluded.late_items;
        DROP TABLE metering.usage_slots;
    END IF;
    IF to_regclass('metering.usage_slots') IS NULL THEN
        CREATE VIEW metering.usage_slots AS
            SELECT client_id, day AS slot, service_line, complexity, items, units,
                   handling_seconds, late_items
              FROM metering.usage_days OFFSET 0;
    END IF;
END $$;

-- Usage alerts, once per client, period and threshold: `<80|100|scope>:<tier>` (SPEC §5), or
-- `service_level:<level id>` for a service-level warning (§11); unpublished rows are an outbox.
CREATE TABLE IF NOT EXISTS metering.alerts (
    client_id  text        NOT NULL,
    period     text        NOT NULL,
    threshold  text        NOT NULL,
    body       jsonb       NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, period, threshold)
);

-- Every version of every agreement; the highest version is current. Unpublished rows are an
-- outbox for the compacted `agreements` topic.
CREATE TABLE IF NOT EXISTS billing.agreements (
    client_id  text        NOT NULL,
    version    integer     NOT NULL,
    body       jsonb       NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, version)
);

-- A (client, period) closes once. invoice_id is null for a client that had usage but no
-- agreement in force (unbilled). billed_total grows with each late adjustment.
CREATE TABLE IF NOT EXISTS billing.closed_periods (
    client_id          text        NOT NULL,
    period             text        NOT NULL,
    closed_at          timestamptz NOT NULL DEFAULT now(),
    invoice_id         text,
    agreement_version  integer,
    tier_name          text,
    tier_reason        text,
    items              bigint      NOT NULL,
    billed_total       numeric,
    late_items_settled bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, period)
);
-- credits: the service credits (SPEC §11; 0 or negative) inside billed_total, as last rated: a
-- contract year's committed spend is billed_total - credits over its periods.
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'billing'
                     AND table_name = 'closed_periods' AND column_name = 'credits') THEN
        ALTER TABLE billing.closed_periods ADD COLUMN credits numeric NOT NULL DEFAULT 0;
    END IF;
END $$;

-- Notes (SPEC §10): one per reclassification that moved items in a closed, invoiced period; body
-- is the CloudEvent `data`. billed_total of the period grows by each note's total, so a later
-- late adjustment never bills the same difference again. Unpublished rows are an outbox.
CREATE TABLE IF NOT EXISTS billing.notes (
    note_id          text        NOT NULL,
    client_id        text        NOT NULL,
    period           text        NOT NULL,
    k                integer     NOT NULL,
    reclassification text        NOT NULL,
    body             jsonb       NOT NULL,
    issued_at        timestamptz NOT NULL,
    published        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (client_id, note_id),
    UNIQUE (client_id, reclassification),
    UNIQUE (client_id, period, k)
);

-- Issued invoices; body is the CloudEvent `data`, fixed at issue. Unpublished rows are an outbox.
CREATE TABLE IF NOT EXISTS billing.invoices (
    invoice_id text        NOT NULL,
    client_id  text        NOT NULL,
    period     text        NOT NULL,
    body       jsonb       NOT NULL,
    issued_at  timestamptz NOT NULL,
    published  boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (client_id, invoice_id)
);
-- Invoices and notes are keyed by client first, like every ledger table (deploy/README.md, "A
-- plan past one database"); an id alone finds its row through a plain index (`GET
-- /v1/invoices/{id}`, the outbox's marks). A database from before keeps its id-only keys until
-- this swaps them, once (both ids embed the client: `<client>-<period>-…`, so no pair clashes).
DO $$ BEGIN
    IF (SELECT array_length(conkey, 1) FROM pg_constraint
         WHERE conrelid = 'billing.invoices'::regclass AND contype = 'p') = 1 THEN
        ALTER TABLE billing.invoices DROP CONSTRAINT invoices_pkey,
            ADD PRIMARY KEY (client_id, invoice_id);
    END IF;
    IF (SELECT array_length(conkey, 1) FROM pg_constraint
         WHERE conrelid = 'billing.notes'::regclass AND contype = 'p') = 1 THEN
        ALTER TABLE billing.notes DROP CONSTRAINT notes_pkey, ADD PRIMARY KEY (client_id, note_id);
    END IF;
    IF to_regclass('billing.invoices_by_id') IS NULL THEN
        CREATE INDEX invoices_by_id ON billing.invoices (invoice_id);
    END IF;
    IF to_regclass('billing.notes_by_id') IS NULL THEN
        CREATE INDEX notes_by_id ON billing.notes (note_id);
    END IF;
    IF to_regclass('billing.invoices_by_period') IS NULL THEN
        CREATE INDEX invoices_by_period ON billing.invoices (period, client_id);
    END IF;
    IF to_regclass('billing.invoices_unpublished') IS NULL THEN
        CREATE INDEX invoices_unpublished ON billing.invoices (issued_at) WHERE NOT published;
    END IF;
END $$;

-- Days that received late items, and the late items themselves: a close finds the invoiced
-- periods with late items to settle through these two indexes, at a cost that grows with the late
-- items, not with the client's history. Counter updates that leave late_items as it was stay HOT.
DO $$ BEGIN
    IF to_regclass('metering.usage_days_late') IS NULL THEN
        CREATE INDEX usage_days_late ON metering.usage_days (client_id, day) WHERE late_items > 0;
    END IF;
    IF to_regclass('metering.items_late') IS NULL THEN
        CREATE INDEX items_late ON metering.items (client_id, completed_at) WHERE late;
    END IF;
END $$;

-- The whole UTC days of a range [start_at, end_at): from the first midnight at or after start_at
-- to the last midnight at or before end_at (none when the first is not before the last). Plain
-- expressions of their argument (24 hours, not a day: an interval of days would follow the
-- session's timezone across a DST change), so a caller's index scans take them as bounds.
CREATE OR REPLACE FUNCTION metering.first_midnight(at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN date_bin('24 hours', at, timestamptz '2000-01-01 00:00Z') = at THEN at
                ELSE date_bin('24 hours', at, timestamptz '2000-01-01 00:00Z') + interval '24 hours'
           END
$$;
CREATE OR REPLACE FUNCTION metering.last_midnight(at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('24 hours', at, timestamptz '2000-01-01 00:00Z')
$$;
-- The rest of the range, read from the items: its head [start_at, head_end) and its tail
-- [tail_start, end_at), disjoint, either empty; the whole range when it holds no whole day.
CREATE OR REPLACE FUNCTION metering.head_end(start_at timestamptz, end_at timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT least(metering.first_midnight(start_at), end_at)
$$;
CREATE OR REPLACE FUNCTION metering.tail_start(start_at timestamptz, end_at timestamptz)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(metering.last_midnight(end_at), metering.head_end(start_at, end_at))
$$;

-- The one definition of how the ledger is read: the counts of a client's items with
-- start_at <= completed_at < end_at, as rows to sum per class. The whole UTC days inside the range
-- come from usage_days; the rest, less than a day at each end (none for a range on UTC midnights),
-- from the items, each as a row of one item (the head and the tail above). A late item counts as
-- late only in a class (as metering counts it: `unclassified` names the class of none). With
-- `late_only`, only the rows holding late items: through the partial indexes above. Inlined into
-- the caller's query (SQL, STABLE, not STRICT): every branch is an index range of one client.
CREATE OR REPLACE FUNCTION metering.usage_between(
    client text, start_at timestamptz, end_at timestamptz, unclassified text,
    late_only boolean DEFAULT false)
RETURNS TABLE (service_line text, complexity text, items bigint, units bigint,
               handling_seconds bigint, late_items bigint)
LANGUAGE sql STABLE AS $$
    SELECT u.service_line, u.complexity, u.items, u.units, u.handling_seconds, u.late_items
      FROM metering.usage_days u
     WHERE u.client_id = client
       AND u.day >= metering.first_midnight(start_at) AND u.day < metering.last_midnight(end_at)
       AND (NOT late_only OR u.late_items > 0)
    UNION ALL
    SELECT i.service_line, i.complexity, 1, i.units, coalesce(i.handling_seconds, 0),
           (i.late AND i.service_line <> unclassified)::int
      FROM metering.items i
     WHERE i.client_id = client
       AND i.completed_at >= start_at AND i.completed_at < metering.head_end(start_at, end_at)
       AND (NOT late_only OR i.late)
    UNION ALL
    SELECT i.service_line, i.complexity, 1, i.units, coalesce(i.handling_seconds, 0),
           (i.late AND i.service_line <> unclassified)::int
      FROM metering.items i
     WHERE i.client_id = client
       AND i.completed_at >= metering.tail_start(start_at, end_at) AND i.completed_at < end_at
       AND (NOT late_only OR i.late)
$$;

-- The close lock of the ledger: advisory locks in the two-key space (73013, hashtext(client_id)),
-- apart from the one-key schema locks (73011 here, 73012 console). Metering's writers hold it
-- shared for each client of their batch; billing's close of a client holds it exclusive, so it
-- waits for that client's writers in flight and holds that client's new ones until it commits,
-- while every other client's writers go on. shared/ledger/README.md says why this is enough.

-- Metering's first step in each counting transaction, in one round trip: take the close lock
-- shared for every client of the batch (in key order: no deadlock with other writers queued
-- behind a close), and only then read which of these clients' periods are closed.
CREATE OR REPLACE FUNCTION metering.lock_and_read_closed(clients text[])
RETURNS TABLE (client_id text, period text)
LANGUAGE plpgsql AS $$
DECLARE
    key integer;
BEGIN
    FOR key IN SELECT DISTINCT hashtext(c) FROM unnest(clients) AS c ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock_shared(73013, key);
    END LOOP;
    RETURN QUERY SELECT c.client_id, c.period FROM billing.closed_periods c
                  WHERE c.client_id = ANY (clients);
END
$$;

-- Billing's close of one client: the close lock, exclusive, until the transaction ends.
CREATE OR REPLACE FUNCTION metering.lock_for_close(client text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(73013, hashtext(client));
$$;

-- The reclassifications that owe a note (SPEC §10): they moved items in a closed, invoiced period,
-- and billing has issued no note for them yet. The one definition billing's reads use.
DO $$ BEGIN
    IF to_regclass('billing.notes_owed') IS NULL THEN
        CREATE VIEW billing.notes_owed AS
            SELECT r.* FROM metering.reclassifications r
             WHERE r.note_due AND NOT EXISTS (
                   SELECT 1 FROM billing.notes n
                    WHERE n.client_id = r.client_id AND n.reclassification = r.id);
    END IF;
END $$;

-- Billing's first step in a close's transaction, in one round trip: the close lock, exclusive
-- (`lock_for_close`), and only then (a statement of its own, so its snapshot is taken after the
-- wait) what the close reads first: whether a reclassification still owes the client a note
-- (`billing.notes_owed`), the client's closed periods (numerics as text:
-- exact through JSON), and the body of its agreement's latest version.
CREATE OR REPLACE FUNCTION billing.lock_and_read_for_close(client text)
RETURNS TABLE (notes_owed boolean, closed jsonb, agreement jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM metering.lock_for_close(client);
    RETURN QUERY SELECT
        EXISTS (SELECT 1 FROM billing.notes_owed o WHERE o.client_id = client),
        (SELECT coalesce(jsonb_agg(jsonb_build_object(
                    'period', c.period, 'invoice_id', c.invoice_id, 'items', c.items,
                    'billed_total', c.billed_total::text,
                    'late_items_settled', c.late_items_settled, 'credits', c.credits::text)),
                '[]'::jsonb)
           FROM billing.closed_periods c WHERE c.client_id = client),
        (SELECT a.body FROM billing.agreements a
          WHERE a.client_id = client ORDER BY a.version DESC LIMIT 1);
END
$$;

-- Metering's reclassifications of one client, one at a time (two over the same items would each
-- move them from the class they read): an advisory lock of its own key space, exclusive.
CREATE OR REPLACE FUNCTION metering.lock_for_reclassification(client text)
RETURNS void
LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(73014, hashtext(client));
$$;
