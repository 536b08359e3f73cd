-- Delayed jobs and priorities (issue 14): when a job may start at the earliest (NULL: at once)
-- and which of the three queues it waits in (queue.py's queue_for; the claim reads high, then
-- default, then low). Both are set at submission and never change; a constant default makes
-- the new columns cost no table rewrite.
ALTER TABLE ${schema}.job
    ADD COLUMN run_at timestamptz,
    ADD COLUMN priority text NOT NULL DEFAULT 'default'
        CONSTRAINT job_priority_check CHECK (priority IN ('high', 'default', 'low'));
