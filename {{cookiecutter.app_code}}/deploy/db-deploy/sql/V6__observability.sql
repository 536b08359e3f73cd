-- Traces from request to job: the OpenTelemetry trace a job belongs to (32 hex digits) and
-- the span that submitted it (16 hex digits), so the worker's run is a child of the
-- submitting request, also when the dispatcher delivers the job again from the ledger.
-- A cron run records the trace its worker started (span_id stays empty).
ALTER TABLE ${schema}.job ADD COLUMN trace_id text, ADD COLUMN span_id text;

-- The status page's charts: jobs finished per minute over the last hour (and their queue
-- wait), read as a range of this index (index-only: it holds every column they read).
CREATE INDEX job_finished_idx ON ${schema}.job (finished_at)
    INCLUDE (status, enqueued_at, started_at) WHERE finished_at IS NOT NULL;
