-- The ledger is the source of truth: the dispatcher (ledger/dispatch.py) walks the rows that
-- are not finished yet, oldest first, to deliver again what Redis lost and to settle what arq
-- finished. This index holds only those rows, so the walk costs what is pending, not the
-- ledger's size.
CREATE INDEX job_unfinished_idx ON ${schema}.job (enqueued_at, job_id)
    WHERE status IN ('queued', 'in_progress');
