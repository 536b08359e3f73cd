-- The status page's charts: jobs finished per minute by outcome, and their queue wait, over the
-- last hour, from a per-minute rollup kept by a trigger, so the page reads a few hundred rows
-- whatever the ledger's size (a range scan of job over an hour's finishes took 198-433 ms of
-- a page load at 1,000,000 rows; api/status/minutes.py reads this table instead).
--
-- A row counts the jobs of one function that finished in one minute with one outcome (their
-- status then) and a queue wait (started_at - enqueued_at) in one bucket: 5 buckets a decade
-- from 1 ms (job_wait_bucket below; bucket -1: never started, e.g. cancelled while queued).
-- The page's p50/p95 come from the bucket counts, so they are exact to within one bucket: a
-- factor of 10^0.2 (1.58). Rows are written in the slot of V4's job_count (the session's own,
-- job_count_slot()), so concurrent workers never wait for each other on a row; the reader sums
-- over slots.
--
-- A finish is an UPDATE that sets finished_at (NULL before): the worker's end of a job, the
-- dispatcher's settle, a cancellation; whatever status it sets is the outcome, so a new final
-- status appears on the charts without a change here. Inserted rows that are already finished
-- (imports, tests' fills) are not counted: the trigger would cost every submission a call.
--
-- Privileges: the trigger function is SECURITY DEFINER (owned by the admin role, fixed
-- search_path), so a finish counts whichever role made it. The data role (the worker) gets
-- the schema's default DML on the table: the hourly clean-up cron (jobs/cleanup.py) deletes
-- minutes older than two days. The API's role reads it (default SELECT).
CREATE TABLE ${schema}.job_minute (
    minute      timestamptz NOT NULL,
    function    text        NOT NULL,
    outcome     text        NOT NULL,
    wait_bucket smallint    NOT NULL,
    slot        integer     NOT NULL,
    n           bigint      NOT NULL,
    CONSTRAINT job_minute_pkey PRIMARY KEY (minute, function, outcome, wait_bucket, slot)
) WITH (fillfactor = 50);  -- room for HOT updates: n is updated in place

-- A queue wait's bucket: 0 below 1 ms; b in 1..40 for [10^((b-1)/5 - 3), 10^(b/5 - 3)) s;
-- 41 from 100,000 s (27.8 h); -1 for no wait (never started). The same bounds as
-- api/status/minutes.py (an integration test compares them).
CREATE FUNCTION ${schema}.job_wait_bucket(seconds double precision) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN seconds IS NULL THEN -1
        WHEN seconds < 0.001 THEN 0
        ELSE least(41, 1 + floor(5 * (log(seconds) + 3)))
    END::smallint
$$;

-- Counted at the end of each statement from its transition tables, like V4's counters: one
-- small upsert for a single finish, one aggregate for a bulk update. A statement that finishes
-- nothing (a job's start, a retry's requeue) leaves after one look at its new rows.
--
-- Write-side cost, measured with EXPLAIN ANALYZE of single-row updates (150 x 3 of each,
-- interleaved, medians, on a loaded 2-core machine): a finish 0.25 -> 0.42 ms (the upsert; the
-- index dropped below no longer costs it), a start 0.25 -> 0.26 ms. A row-level trigger with a
-- WHEN clause cost the same per finish, but a bulk finish (cancelling thousands of jobs in one
-- statement) would upsert the same rows once per job in one transaction.
CREATE FUNCTION ${schema}.job_minute_on_finish() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mine integer;
BEGIN
    IF NOT EXISTS (SELECT FROM new_rows AS r WHERE r.finished_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    mine := coalesce(nullif(current_setting('${schema}.job_count_slot', true), '')::integer,
                     ${schema}.job_count_slot());
    INSERT INTO ${schema}.job_minute AS m (minute, function, outcome, wait_bucket, slot, n)
    SELECT date_trunc('minute', r.finished_at), r.function, r.status,
           ${schema}.job_wait_bucket(extract(epoch FROM r.started_at - r.enqueued_at)::float8),
           mine, count(*)
    FROM new_rows AS r JOIN old_rows AS o ON o.job_id = r.job_id
    WHERE r.finished_at IS NOT NULL AND o.finished_at IS NULL
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (minute, function, outcome, wait_bucket, slot) DO UPDATE SET n = m.n + EXCLUDED.n;
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION ${schema}.job_minute_on_finish() FROM PUBLIC;

CREATE TRIGGER job_minute_finish AFTER UPDATE ON ${schema}.job
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION ${schema}.job_minute_on_finish();

-- The index V6 made for charts read from job itself: nothing reads it now, and every finish
-- paid for it (one more index entry per finished job).
DROP INDEX ${schema}.job_finished_idx;
