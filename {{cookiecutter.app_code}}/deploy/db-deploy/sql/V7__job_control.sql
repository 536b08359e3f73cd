-- Job control (#14): cancel, retry, and every attempt of a job kept.
--
-- `cancelled`: a queued job cancelled never starts, a running one is aborted; either way the
-- row says so for good (only a retry queues it again). The V4 counters count it like any
-- status (their triggers group by whatever status a row has).
ALTER TABLE ${schema}.job DROP CONSTRAINT job_status_check;
ALTER TABLE ${schema}.job ADD CONSTRAINT job_status_check
    CHECK (status IN ('queued', 'in_progress', 'succeeded', 'failed', 'cancelled')) NOT VALID;
ALTER TABLE ${schema}.job VALIDATE CONSTRAINT job_status_check;

-- attempts: one object per run, oldest first: {attempt, started_at, finished_at, outcome,
-- error, worker_id}; outcome is running, succeeded, failed, retrying (the job's retry policy
-- runs it again), interrupted (the worker stopped mid-run) or cancelled. The worker's own
-- statements (db/queries.py) append and close them in the writes they made anyway, so a run
-- costs no extra statement. Rows from before this migration start with none.
-- tries_base: the tries of the runs before the last retry (NULL: never retried). arq counts a
-- job's tries afresh when it runs again under the same id, so tries = tries_base + arq's try,
-- the count of runs.
ALTER TABLE ${schema}.job
    ADD COLUMN attempts jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN tries_base integer;

-- A run starts: attempt n is appended (or replaces attempt n, when the same try starts again:
-- arq gave the try back because the ledger was away mid-run).
CREATE FUNCTION ${schema}.job_attempt_begin(attempts jsonb, n integer, worker text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN (attempts -> -1 ->> 'attempt')::integer = n
        THEN attempts - (-1) ELSE attempts END
    || jsonb_build_array(jsonb_build_object(
        'attempt', n, 'started_at', now(), 'finished_at', NULL, 'outcome', 'running',
        'error', NULL, 'worker_id', worker))
$$;

-- A run ends: the last attempt, if it is still running, gets its end, outcome and error.
CREATE FUNCTION ${schema}.job_attempt_end(attempts jsonb, outcome text, error text)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN attempts -> -1 ->> 'outcome' = 'running'
        THEN jsonb_set(attempts, '{-1}', (attempts -> -1) || jsonb_build_object(
            'finished_at', now(), 'outcome', outcome, 'error', error))
        ELSE attempts END
$$;

-- The worker's start of a cancelled job fails with this error, in the same statement that
-- would have marked it running (db/queries.py job.start): a cancel that committed first wins,
-- and the worker does not run the job (ledger/tracking.py looks for the hint).
CREATE FUNCTION ${schema}.job_refuse_start(job_id text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'job % is cancelled: the worker does not start it', job_id
        USING HINT = 'job_cancelled';
END $$;

REVOKE EXECUTE ON FUNCTION ${schema}.job_attempt_begin(jsonb, integer, text),
    ${schema}.job_attempt_end(jsonb, text, text), ${schema}.job_refuse_start(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${schema}.job_attempt_begin(jsonb, integer, text),
    ${schema}.job_attempt_end(jsonb, text, text), ${schema}.job_refuse_start(text)
    TO ${data_role};

-- The API's role may only INSERT job rows. Cancel and retry are these two functions instead
-- of UPDATE on job: SECURITY DEFINER (they run as their owner, the admin role, which owns
-- job), a fixed search_path, and EXECUTE for the API's role alone. Each changes only what its
-- verb needs, and only from the states it allows.

-- Cancel one job. No row: no such job. Otherwise its status before, and after: `cancelled`
-- when it was queued or in_progress, else unchanged (the caller answers 409).
CREATE FUNCTION ${schema}.cancel_job(wanted text)
RETURNS TABLE (job_id text, previous text, status text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    was text;
BEGIN
    SELECT j.status INTO was FROM ${schema}.job AS j WHERE j.job_id = wanted FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF was IN ('queued', 'in_progress') THEN
        UPDATE ${schema}.job AS j
        SET status = 'cancelled', finished_at = now(),
            error = CASE WHEN was = 'queued' THEN 'cancelled before it started'
                         ELSE 'cancelled while running' END,
            attempts = ${schema}.job_attempt_end(j.attempts, 'cancelled', 'cancelled')
        WHERE j.job_id = wanted;
        RETURN QUERY SELECT wanted, was, 'cancelled'::text;
    ELSE
        RETURN QUERY SELECT wanted, was, was;
    END IF;
END $$;

-- Retry jobs: each failed or cancelled one goes back to `queued`, at the back of the queue
-- (enqueued_at is now), its tries so far kept in tries_base. One row per id found: its status
-- before and after, and what the caller needs to hand it to Redis (function, params, trace,
-- enqueued_at: the retry's runs carry it, to be told from the earlier runs). A row of before V7 with an error and no attempts gets its last run as attempt.
CREATE FUNCTION ${schema}.retry_jobs(ids text[])
RETURNS TABLE (job_id text, function text, params jsonb, previous text, status text,
               enqueued_at timestamptz, trace_id text, span_id text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY
    WITH wanted AS (
        SELECT j.job_id AS id, j.status AS was FROM ${schema}.job AS j
        WHERE j.job_id = ANY(ids) ORDER BY j.job_id FOR UPDATE
    ), retried AS (
        UPDATE ${schema}.job AS j
        SET status = 'queued', tries_base = j.tries, enqueued_at = now(), started_at = NULL,
            finished_at = NULL, result = NULL, error = NULL,
            attempts = CASE WHEN j.attempts = '[]'::jsonb AND j.tries > 0
                THEN jsonb_build_array(jsonb_build_object(
                    'attempt', j.tries, 'started_at', j.started_at,
                    'finished_at', j.finished_at, 'outcome', j.status, 'error', j.error,
                    'worker_id', j.worker_id))
                ELSE j.attempts END
        FROM wanted AS w
        WHERE j.job_id = w.id AND w.was IN ('failed', 'cancelled')
        RETURNING j.job_id AS id, j.function AS fn, j.params AS ps, j.enqueued_at AS at,
                  j.trace_id AS tid, j.span_id AS sid
    )
    SELECT w.id, r.fn, r.ps, w.was, CASE WHEN r.id IS NULL THEN w.was ELSE 'queued' END,
           r.at, r.tid, r.sid
    FROM wanted AS w LEFT JOIN retried AS r ON r.id = w.id;
END $$;

REVOKE EXECUTE ON FUNCTION ${schema}.cancel_job(text), ${schema}.retry_jobs(text[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${schema}.cancel_job(text), ${schema}.retry_jobs(text[])
    TO ${app_role};
