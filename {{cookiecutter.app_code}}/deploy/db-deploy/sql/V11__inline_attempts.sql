-- The worker's start and end of every job call job_attempt_begin / job_attempt_end (V7). As
-- V7 wrote them (a string body with SET search_path) PostgreSQL runs them as function calls,
-- each saving and restoring search_path: 0.07 ms of PostgreSQL's CPU a job with one write a
-- commit, 0.015-0.04 ms with five (the worker's statements over 8 x 250 jobs, interleaved
-- with V7's, the backend's CPU time). Written again with a SQL-standard body (RETURN ...)
-- and no SET, they are inlined into the statements that call them: the body is parsed here,
-- once, with its references bound (so search_path at call time cannot change what it calls),
-- and the same expressions as V7's give the same attempts.
CREATE OR REPLACE FUNCTION ${schema}.job_attempt_begin(attempts jsonb, n integer, worker text)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN (attempts -> -1 ->> 'attempt')::integer = n
        THEN attempts - (-1) ELSE attempts END
    || jsonb_build_array(jsonb_build_object(
        'attempt', n, 'started_at', now(), 'finished_at', NULL, 'outcome', 'running',
        'error', NULL, 'worker_id', worker));

CREATE OR REPLACE FUNCTION ${schema}.job_attempt_end(attempts jsonb, outcome text, error text)
RETURNS jsonb LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN attempts -> -1 ->> 'outcome' = 'running'
        THEN jsonb_set(attempts, '{-1}', (attempts -> -1) || jsonb_build_object(
            'finished_at', now(), 'outcome', outcome, 'error', error))
        ELSE attempts END;
