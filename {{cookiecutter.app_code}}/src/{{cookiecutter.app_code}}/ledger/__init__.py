"""The job ledger, the source of truth: submission, the worker's tracking, the dispatcher
that makes Redis match the ledger, and the reads.

- `submit`: commit the row first, then hand the job to Redis (the fast path);
- `tracking`: the wrapper that records each run (in_progress, succeeded, failed);
- `writer`: the worker's group-committed ledger writes, and whether PostgreSQL is reachable;
- `dispatch`: delivers again what Redis lost, settles what arq finished;
- `reads`: the newest-first pages of the API and the status page.

Nothing here talks to arq except through the `queue` package.
"""
