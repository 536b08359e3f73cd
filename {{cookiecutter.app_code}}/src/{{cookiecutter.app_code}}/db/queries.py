"""Every named SQL statement of the service, in one place.

Statements use named parameters (`%(name)s`), always bound by psycopg, never formatted in.
Table names are unqualified: each pool pins `search_path` to the service's schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, LiteralString

# A worker's start of a job whose row exists (the API's, an earlier run's). A cancelled job
# is not started: the statement fails (V7__job_control.sql).
_START_CONFLICT: Final = (
    "ON CONFLICT (job_id) DO UPDATE SET "
    "status = CASE WHEN job.status = 'cancelled' THEN job_refuse_start(job.job_id) "
    "ELSE 'in_progress' END, tries = coalesce(job.tries_base, 0) + EXCLUDED.tries, "
    "started_at = now(), finished_at = NULL, error = NULL, worker_id = EXCLUDED.worker_id, "
    "trace_id = coalesce(job.trace_id, EXCLUDED.trace_id), "
    "attempts = job_attempt_begin(job.attempts, "
    "coalesce(job.tries_base, 0) + EXCLUDED.tries, EXCLUDED.worker_id)"
)

QUERIES: Final[Mapping[str, LiteralString]] = MappingProxyType(
    {
        "health.ping": "SELECT 1 AS ok",
        # The ledger
        "job.insert": (
            "INSERT INTO job (job_id, function, params, source, trace_id, span_id) "
            "VALUES (%(job_id)s, %(function)s, %(params)s, %(source)s, %(trace_id)s, "
            "%(span_id)s) "
            "RETURNING job_id, function, params, status, source, tries, enqueued_at, "
            "started_at, finished_at, result, error, worker_id, trace_id, attempts, run_at, "
            "priority"
        ),
        # Single submissions that arrived together, in one statement (ledger/group.py): the
        # rows it inserted; an id the ledger held is not among them.
        # The rows come as one JSON array (`jsonb_to_recordset`): psycopg's dumping of a text[]
        # or jsonb[] array escaped every element with a regex, most of the API's CPU a batch.
        "job.insert_group": (
            "INSERT INTO job (job_id, function, params, source, trace_id, span_id, run_at, "
            "priority) SELECT job_id, function, coalesce(params, '{}'), 'api', trace_id, span_id, "
            "run_at, coalesce(priority, 'default') FROM jsonb_to_recordset(%(jobs)s) "
            "AS submitted (job_id text, function text, params jsonb, trace_id text, span_id text, "
            "run_at timestamptz, priority text) "
            "ON CONFLICT (job_id) DO NOTHING "
            "RETURNING job_id, function, params, status, source, tries, enqueued_at, "
            "started_at, finished_at, result, error, worker_id, trace_id, run_at, priority"
        ),
        # A batch (POST /api/v1/batches) in one statement: the new rows, then those of the
        # ids the ledger held before it (their status says why they were refused). An id a
        # concurrent submission commits meanwhile is in neither (the caller asks again).
        "job.insert_many": (
            "WITH new AS (INSERT INTO job (job_id, function, params, source, trace_id, span_id, "
            "run_at, priority) SELECT job_id, function, coalesce(params, '{}'), 'api', "
            "%(trace_id)s, %(span_id)s, run_at, coalesce(priority, 'default') "
            "FROM jsonb_to_recordset(%(jobs)s) "
            "AS batch (job_id text, function text, params jsonb, run_at timestamptz, "
            "priority text) "
            "ON CONFLICT (job_id) DO NOTHING RETURNING job_id) "
            "SELECT job_id, NULL::text AS status FROM new UNION ALL "
            "SELECT job_id, status FROM job WHERE job_id IN "
            "(SELECT job_id FROM jsonb_to_recordset(%(jobs)s) AS batch (job_id text))"
        ),
        "job.statuses": "SELECT job_id, status FROM job WHERE job_id = ANY(%(job_ids)s)",
        "job.get": (
            "SELECT job_id, function, params, status, source, tries, enqueued_at, started_at, "
            "finished_at, result, error, worker_id, trace_id, attempts, run_at, priority "
            "FROM job WHERE job_id = %(job_id)s"
        ),
        # A worker starts a job. The upsert also records cron jobs and any job whose API
        # transaction has not committed yet (the insert waits on the row, then updates it).
        "job.start": (
            "INSERT INTO job (job_id, function, params, source, status, tries, enqueued_at, "
            "started_at, worker_id, trace_id, attempts) "
            "VALUES (%(job_id)s, %(function)s, %(params)s, %(source)s, 'in_progress', %(tries)s, "
            "%(enqueued_at)s, now(), %(worker_id)s, %(trace_id)s, "
            "job_attempt_begin('[]', %(tries)s, %(worker_id)s)) " + _START_CONFLICT
        ),
        # The starts of one group commit (ledger/writer.py) in one statement: the same upsert
        # for many rows, given as one JSON array, so the statement-level triggers on job (the
        # counters, the minutes) run once a batch instead of once a job.
        "job.start_many": (
            "INSERT INTO job (job_id, function, params, source, status, tries, enqueued_at, "
            "started_at, worker_id, trace_id, attempts) "
            "SELECT w.job_id, w.function, w.params, w.source, 'in_progress', w.tries, "
            "w.enqueued_at, now(), w.worker_id, w.trace_id, "
            "job_attempt_begin('[]', w.tries, w.worker_id) FROM jsonb_to_recordset(%(writes)s) "
            "AS w (job_id text, function text, params jsonb, source text, tries integer, "
            "enqueued_at timestamptz, worker_id text, trace_id text) " + _START_CONFLICT
        ),
        # A run's end is recorded only while the row says it is running: a job cancelled (or
        # retried) meanwhile keeps what the cancel (or retry) wrote.
        "job.succeed": (
            "UPDATE job SET status = 'succeeded', result = %(result)s, error = NULL, "
            "finished_at = now(), attempts = job_attempt_end(attempts, 'succeeded', NULL) "
            "WHERE job_id = %(job_id)s AND status = 'in_progress'"
        ),
        # Many of them in one statement (as job.start_many); a JSON null result stays one.
        "job.succeed_many": (
            "UPDATE job SET status = 'succeeded', result = coalesce(w.result, 'null'), "
            "error = NULL, finished_at = now(), "
            "attempts = job_attempt_end(job.attempts, 'succeeded', NULL) "
            "FROM jsonb_to_recordset(%(writes)s) AS w (job_id text, result jsonb) "
            "WHERE job.job_id = w.job_id AND job.status = 'in_progress'"
        ),
        "job.fail": (
            "UPDATE job SET status = 'failed', error = %(error)s, finished_at = now(), "
            "attempts = job_attempt_end(attempts, 'failed', %(error)s) "
            "WHERE job_id = %(job_id)s AND status = 'in_progress'"
        ),
        # The run ends and arq will run the job again (a retry, or the worker shutting down):
        # back to queued, keep the error seen; the attempt ends with `outcome`.
        "job.requeue": (
            "UPDATE job SET status = 'queued', error = %(error)s, "
            "attempts = job_attempt_end(attempts, %(outcome)s, %(error)s) "
            "WHERE job_id = %(job_id)s AND status = 'in_progress'"
        ),
        # Cancel and retry (ledger/control.py): the API role may not UPDATE job; these
        # SECURITY DEFINER functions (V7__job_control.sql) change only what they must.
        "job.cancel": "SELECT job_id, previous, status FROM cancel_job(%(job_id)s)",
        "job.retry": (
            "SELECT job_id, function, params, previous, status, enqueued_at, trace_id, span_id, "
            "priority, run_at FROM retry_jobs(%(job_ids)s::text[])"
        ),
        # Retry all failed (ledger/control.py retry_failed): the failed jobs of a filter, oldest
        # first. One statement per combination of filters, not one with `%(x)s IS NULL OR ...`
        # (a prepared statement's generic plan keeps every OR and cannot pick the filter's
        # index), each a walk of one index: (status, ...), (function, status, ...), job_id's.
        "job.failed_ids": (
            "SELECT job_id FROM job WHERE status = 'failed' "
            "ORDER BY enqueued_at, job_id LIMIT %(limit)s"
        ),
        "job.failed_ids_of": (
            "SELECT job_id FROM job WHERE status = 'failed' AND function = %(function)s "
            "ORDER BY enqueued_at, job_id LIMIT %(limit)s"
        ),
        "job.failed_ids_prefix": (
            "SELECT job_id FROM job WHERE status = 'failed' AND job_id LIKE %(prefix)s "
            "ORDER BY enqueued_at, job_id LIMIT %(limit)s"
        ),
        "job.failed_ids_prefix_of": (
            "SELECT job_id FROM job WHERE status = 'failed' AND job_id LIKE %(prefix)s "
            "AND function = %(function)s ORDER BY enqueued_at, job_id LIMIT %(limit)s"
        ),
        "job.failed_ids_exact": (
            "SELECT job_id FROM job WHERE status = 'failed' AND job_id = %(job_id)s LIMIT %(limit)s"
        ),
        "job.failed_ids_exact_of": (
            "SELECT job_id FROM job WHERE status = 'failed' AND job_id = %(job_id)s "
            "AND function = %(function)s LIMIT %(limit)s"
        ),
        # The dispatcher (ledger/dispatch.py). The unfinished rows' ids, oldest first
        # (job_unfinished_idx), as one array per priority: a sweep reads up to 50,000 of them,
        # and most wait in their queue; ids in arrays cost the worker ~0.5 us each, rows of all
        # columns (the params' JSON) ~10 us (rows of three columns, 4 us). Then in full only
        # the rows it must check one by one (by primary key, still unfinished). Then the
        # outcomes it settles from what arq kept: a settle never overwrites an end the worker
        # recorded itself.
        "dispatch.unfinished": (
            "SELECT priority, array_agg(job_id ORDER BY enqueued_at, job_id) AS job_ids "
            "FROM (SELECT job_id, priority, enqueued_at FROM job "
            "WHERE status IN ('queued', 'in_progress') "
            "AND enqueued_at < now() - make_interval(secs => %(min_age_s)s) "
            "ORDER BY enqueued_at, job_id LIMIT %(limit)s) AS unfinished GROUP BY priority"
        ),
        "dispatch.unfinished_rows": (
            "SELECT job_id, function, params, status, source, enqueued_at, trace_id, span_id, "
            "tries_base, run_at, priority FROM job WHERE job_id = ANY(%(job_ids)s) "
            "AND status IN ('queued', 'in_progress') ORDER BY enqueued_at, job_id"
        ),
        "dispatch.settle_succeeded": (
            "UPDATE job SET status = 'succeeded', result = %(result)s, error = NULL, "
            "finished_at = now(), attempts = job_attempt_end(attempts, 'succeeded', NULL) "
            "WHERE job_id = %(job_id)s AND status IN ('queued', 'in_progress')"
        ),
        "dispatch.settle_failed": (
            "UPDATE job SET status = 'failed', error = %(error)s, finished_at = now(), "
            "attempts = job_attempt_end(attempts, 'failed', %(error)s) "
            "WHERE job_id = %(job_id)s AND status IN ('queued', 'in_progress')"
        ),
        # The API wakes the dispatchers when it could not hand a job to Redis itself.
        "dispatch.wake": "SELECT pg_notify(%(channel)s, '')",
        # GET /metrics: the oldest queued job, from the (status, enqueued_at) index; one row
        # per priority (one, `default`, until jobs have priorities).
        "metrics.queue_oldest": (
            # Per priority, how long the oldest due job has waited since it was due (a delayed
            # job waits from its run_at); each a walk of the unfinished-rows index, oldest first.
            "SELECT p.priority, extract(epoch FROM now() - ("
            "SELECT min(greatest(enqueued_at, coalesce(run_at, enqueued_at))) FROM job "
            "WHERE status = 'queued' AND priority = p.priority "
            "AND (run_at IS NULL OR run_at <= now())))::float8 AS age "
            "FROM (VALUES ('high'), ('default'), ('low')) AS p (priority)"
        ),
        # The status page
        # The counters the triggers of V4__job_counts.sql keep in step with the ledger, summed
        # over their slots: a few dozen rows whatever the ledger's size (0.1 ms at 1,000,000
        # rows, where the GROUP BY over job it replaces took ~120 ms).
        "status.counts": (
            "SELECT function, status, sum(n)::bigint AS n FROM job_count "
            "GROUP BY function, status HAVING sum(n) <> 0"
        ),
        # The page reads in one read-only transaction (one snapshot, one connection) that a
        # slow plan cannot hold for long: a statement over the limit is cancelled.
        "status.page_transaction": (
            "SELECT set_config('transaction_read_only', 'on', true), "
            "set_config('statement_timeout', %(ms)s, true)"
        ),
        # The charts: the last hour of the per-minute rollup (V9__minute_stats.sql), summed
        # over its slots; a range of its primary key, a few hundred rows whatever the ledger's
        # size. Two statements, not one with `%(function)s IS NULL OR ...`: a prepared
        # statement's generic plan cannot drop that OR, and scanned the whole table (90 ms
        # over two busy days' rows).
        "status.minutes": (
            "SELECT minute, outcome, wait_bucket, sum(n)::bigint AS n FROM job_minute "
            "WHERE minute >= %(since)s GROUP BY minute, outcome, wait_bucket"
        ),
        "status.minutes_of": (
            "SELECT minute, outcome, wait_bucket, sum(n)::bigint AS n FROM job_minute "
            "WHERE minute >= %(since)s AND function = %(function)s "
            "GROUP BY minute, outcome, wait_bucket"
        ),
        # The newest run of one cron job: ids are 'cron:<name>:<ms>', found through the
        # job_id text_pattern_ops index; the clean-up cron keeps these rows few (KEY_TTL).
        "cron.last_run": (
            "SELECT job_id, status, tries, enqueued_at, started_at, finished_at, error "
            "FROM job WHERE job_id LIKE %(prefix)s "
            "ORDER BY enqueued_at DESC, job_id DESC LIMIT 1"
        ),
        # The clean-up cron
        "cleanup.cron_jobs": (
            "DELETE FROM job WHERE source = 'cron' "
            "AND enqueued_at < now() - make_interval(secs => %(ttl_seconds)s) RETURNING job_id"
        ),
        "cleanup.cron_hello": (
            "DELETE FROM hello WHERE source = 'cron' "
            "AND run_at < now() - make_interval(secs => %(ttl_seconds)s)"
        ),
        "cleanup.minutes": (
            "DELETE FROM job_minute WHERE minute < now() - make_interval(secs => %(keep_s)s)"
        ),
        # The hello job
        "hello.insert": (
            "INSERT INTO hello (job_id, source, message) "
            "VALUES (%(job_id)s, %(source)s, %(message)s) ON CONFLICT (job_id) DO NOTHING"
        ),
    }
)


class UnknownQuery(KeyError):
    """A query name that is not in QUERIES; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def query(name: str) -> LiteralString:
    """The SQL text registered under `name`."""
    try:
        return QUERIES[name]
    except KeyError:
        known = ", ".join(sorted(QUERIES))
        raise UnknownQuery(f"unknown query {name!r}; known queries: {known}") from None
