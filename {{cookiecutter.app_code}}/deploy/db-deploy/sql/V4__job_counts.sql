-- Counts of the ledger by (function, status), kept up to date by triggers on job in the same
-- transaction as the change, so the status page reads a few dozen rows instead of scanning
-- the ledger (a GROUP BY over 1,000,000 rows took ~120 ms of a pooled connection per page
-- load and per 2 s refresh).
--
-- Sharded, so writers never wait for each other: a count is the sum of its rows over `slot`.
-- Each session that changes the ledger claims a slot of its own the first time (a session-level
-- advisory lock on (hashtext('<schema>.job_count'), slot), kept until it disconnects; the
-- slot number is cached in the session setting <schema>.job_count_slot) and only ever writes
-- the rows of that slot. A single row per (function, status) would serialise every submission
-- and every worker commit on one row lock held until the commit's WAL flush, and rows picked
-- by pid or at random would make two multi-row transactions (the worker's group commits) lock
-- them in different orders and deadlock. Slot 0 holds the backfill and is shared by sessions
-- beyond the 128th at once (those may wait for each other, as on a single row). Rows: at most
-- (functions x 4 statuses) per slot; a slot is freed when its session ends and reused, lowest
-- free first, so the table stays a few hundred rows at most.
--
-- Privileges: the trigger functions are SECURITY DEFINER (owned by the admin role, fixed
-- search_path), so the roles need no write privilege on job_count: the API role's insert into
-- job and the worker's updates count through the trigger, and nobody can write a count that
-- disagrees with the ledger. Both roles keep SELECT. Write privileges are revoked here, and
-- row-level security refuses every write of theirs anyway: bootstrap.sql, run again (to rotate
-- passwords), grants the worker's role DML on every table of the schema, this one included.
-- Only the owner bypasses the policy (the roles are NOBYPASSRLS), so the triggers still count.
-- Nobody but the owner may EXECUTE the functions (bootstrap revokes EXECUTE from PUBLIC by
-- default); a trigger fires whatever the privileges of the role that changed the row.
--
-- Write-side cost (README, Performance): `make bench` with and without these triggers and the
-- index below, back to back on a 2-core machine: no-op drain, one worker, ledger on, 1,739
-- against 2,012 jobs/s (-14%); API submissions 599 against 577/s (no change).
CREATE TABLE ${schema}.job_count (
    function text    NOT NULL,
    status   text    NOT NULL,
    slot     integer NOT NULL,
    n        bigint  NOT NULL,
    CONSTRAINT job_count_pkey PRIMARY KEY (function, status, slot)
) WITH (fillfactor = 50);  -- room for HOT updates: n is updated in place on every change

REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ${schema}.job_count FROM ${data_role}, ${app_role};
GRANT SELECT ON ${schema}.job_count TO ${data_role}, ${app_role};
ALTER TABLE ${schema}.job_count ENABLE ROW LEVEL SECURITY;
CREATE POLICY job_count_read ON ${schema}.job_count FOR SELECT USING (true);

-- This session's slot: claimed once, then read from a session setting (microseconds).
CREATE FUNCTION ${schema}.job_count_slot() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mine integer := nullif(current_setting('${schema}.job_count_slot', true), '')::integer;
BEGIN
    IF mine IS NOT NULL THEN
        RETURN mine;
    END IF;
    FOR s IN 1..128 LOOP
        IF pg_try_advisory_lock(hashtext('${schema}.job_count'), s) THEN
            -- A plain SET: it outlives the transaction (unless that rolls back; then the next
            -- call claims again and gets this slot back, its lock being this session's).
            PERFORM set_config('${schema}.job_count_slot', s::text, false);
            RETURN s;
        END IF;
    END LOOP;
    RETURN 0;
END $$;

-- Every change to job, counted at the end of its statement from the statement's transition
-- tables: one upsert of a few rows per statement, whatever its size. A single-row statement
-- (a submission, a worker's start or end) costs one small aggregate; a bulk one (the clean-up
-- cron's DELETE, an operator's UPDATE) one aggregate too, where a row-level trigger would
-- update the same counter row once per row in one transaction, each time walking the row's
-- growing chain of versions (20,000 updates of one row in one transaction: 3.3 s more).
-- An update counts what left each (function, status) and what arrived; unchanged rows cancel.
CREATE FUNCTION ${schema}.job_count_on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mine integer := coalesce(
        nullif(current_setting('${schema}.job_count_slot', true), '')::integer,
        ${schema}.job_count_slot());
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ${schema}.job_count AS c (function, status, slot, n)
        SELECT r.function, r.status, mine, count(*) FROM new_rows AS r
        GROUP BY r.function, r.status ORDER BY r.function, r.status
        ON CONFLICT (function, status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ${schema}.job_count AS c (function, status, slot, n)
        SELECT r.function, r.status, mine, -count(*) FROM old_rows AS r
        GROUP BY r.function, r.status ORDER BY r.function, r.status
        ON CONFLICT (function, status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    ELSE
        INSERT INTO ${schema}.job_count AS c (function, status, slot, n)
        SELECT d.function, d.status, mine, sum(d.n) FROM (
            SELECT r.function, r.status, 1 AS n FROM new_rows AS r
            UNION ALL
            SELECT r.function, r.status, -1 FROM old_rows AS r
        ) AS d
        GROUP BY d.function, d.status HAVING sum(d.n) <> 0 ORDER BY d.function, d.status
        ON CONFLICT (function, status, slot) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION ${schema}.job_count_on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM ${schema}.job_count;
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION ${schema}.job_count_slot(), ${schema}.job_count_on_change(),
    ${schema}.job_count_on_truncate() FROM PUBLIC;

-- Counting starts under a lock that keeps writers out, so no change is missed or counted
-- twice between the backfill and the triggers (writers wait for the migration to commit).
LOCK TABLE ${schema}.job IN SHARE ROW EXCLUSIVE MODE;

CREATE TRIGGER job_count_insert AFTER INSERT ON ${schema}.job
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION ${schema}.job_count_on_change();
CREATE TRIGGER job_count_update AFTER UPDATE ON ${schema}.job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION ${schema}.job_count_on_change();
CREATE TRIGGER job_count_delete AFTER DELETE ON ${schema}.job
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION ${schema}.job_count_on_change();
CREATE TRIGGER job_count_truncate AFTER TRUNCATE ON ${schema}.job
    FOR EACH STATEMENT EXECUTE FUNCTION ${schema}.job_count_on_truncate();

INSERT INTO ${schema}.job_count (function, status, slot, n)
SELECT function, status, 0, count(*) FROM ${schema}.job GROUP BY function, status;

-- The status page's list filtered by function and status at once, newest first: without it
-- the planner walks one of the single-column indexes and filters the other column, which
-- reads every row of a rare combination's status (tens of thousands at 1,000,000 rows).
CREATE INDEX job_function_status_enqueued_idx
    ON ${schema}.job (function, status, enqueued_at DESC, job_id DESC);
