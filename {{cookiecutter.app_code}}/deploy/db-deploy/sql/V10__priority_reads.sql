-- Priorities on the status page, and a retry that keeps its job's priority (issue 14).
--
-- 1. The page's priority filter (ledger/reads.py) walks an index like its other filters, newest
-- (or oldest) first, stopping after a page. Most jobs are `default`, so these indexes are
-- partial: they hold only the `high` and `low` rows, and a submission at `default` priority
-- pays nothing for them (a high or low one pays four small index entries). The filter's SQL
-- repeats the predicate (`priority = %(priority)s AND priority <> 'default'`), so a prepared
-- statement's generic plan, which does not know the value, can still prove it and use them.
-- `default` needs no index of its own: it is most of the ledger, so a walk of V1's and V4's
-- indexes, dropping the few non-default rows it meets, fills a page after about as many rows
-- (a ledger mostly high or low would make it walk further: the page's statement timeout
-- bounds it). The four mirror V1's and V4's: alone, with a status, with a function, with both.
--
-- Built in the migration's transaction, like V4's index (the native applier and Flyway run
-- each migration in one; CREATE INDEX CONCURRENTLY cannot): writes to job wait while they
-- build, one scan of the table each (about 0.3 s a million rows on 2 cores).
CREATE INDEX job_priority_enqueued_idx
    ON ${schema}.job (priority, enqueued_at DESC, job_id DESC) WHERE priority <> 'default';
CREATE INDEX job_priority_status_enqueued_idx
    ON ${schema}.job (priority, status, enqueued_at DESC, job_id DESC)
    WHERE priority <> 'default';
CREATE INDEX job_priority_function_enqueued_idx
    ON ${schema}.job (priority, function, enqueued_at DESC, job_id DESC)
    WHERE priority <> 'default';
CREATE INDEX job_priority_function_status_enqueued_idx
    ON ${schema}.job (priority, function, status, enqueued_at DESC, job_id DESC)
    WHERE priority <> 'default';

-- 2. retry_jobs (V7) also returns each retried job's priority and run_at, so the hand-over puts
-- it in its own priority's queue (ledger/control.py), as the dispatcher would, and not before
-- its run_at (a run_at in the past: at once). Its result type changes, which CREATE OR REPLACE
-- cannot do: dropped and created again in this one transaction (no caller sees it missing),
-- SECURITY DEFINER owned by the migrating (admin) role, fixed search_path, EXECUTE for the
-- API's role alone, as in V7. The body is V7's.
DROP FUNCTION ${schema}.retry_jobs(text[]);

CREATE FUNCTION ${schema}.retry_jobs(ids text[])
RETURNS TABLE (job_id text, function text, params jsonb, previous text, status text,
               enqueued_at timestamptz, trace_id text, span_id text, priority text,
               run_at timestamptz)
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
                  j.trace_id AS tid, j.span_id AS sid, j.priority AS pri, j.run_at AS due
    )
    SELECT w.id, r.fn, r.ps, w.was, CASE WHEN r.id IS NULL THEN w.was ELSE 'queued' END,
           r.at, r.tid, r.sid, r.pri, r.due
    FROM wanted AS w LEFT JOIN retried AS r ON r.id = w.id;
END $$;

REVOKE EXECUTE ON FUNCTION ${schema}.retry_jobs(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ${schema}.retry_jobs(text[]) TO ${app_role};
