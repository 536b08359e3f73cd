-- The job ledger: the system of record for every job, submitted through the API or run by cron.
-- Redis keys expire after KEY_TTL_SECONDS; these rows stay, so duplicate ids are refused for
-- good and the status page stays complete.
CREATE TABLE ${schema}.job (
    job_id      text        PRIMARY KEY,
    function    text        NOT NULL,
    params      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status      text        NOT NULL DEFAULT 'queued'
                CONSTRAINT job_status_check
                CHECK (status IN ('queued', 'in_progress', 'succeeded', 'failed')),
    source      text        NOT NULL DEFAULT 'api'
                CONSTRAINT job_source_check CHECK (source IN ('api', 'cron')),
    tries       integer     NOT NULL DEFAULT 0,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    result      jsonb,
    error       text,
    worker_id   text
);

-- Newest first, optionally filtered by status or function; (enqueued_at, job_id) is the cursor.
CREATE INDEX job_enqueued_idx ON ${schema}.job (enqueued_at DESC, job_id DESC);
CREATE INDEX job_status_enqueued_idx ON ${schema}.job (status, enqueued_at DESC, job_id DESC);
CREATE INDEX job_function_enqueued_idx ON ${schema}.job (function, enqueued_at DESC, job_id DESC);
-- Search by id prefix (LIKE 'abc%') whatever the database collation.
CREATE INDEX job_id_prefix_idx ON ${schema}.job (job_id text_pattern_ops);
-- The clean-up cron deletes old cron rows.
CREATE INDEX job_cron_enqueued_idx ON ${schema}.job (enqueued_at) WHERE source = 'cron';

-- The API submits jobs: it may insert ledger rows, and only that (SELECT comes by default).
GRANT INSERT ON ${schema}.job TO ${app_role};

-- The history table is the admin's alone: the schema's default privileges gave it to the others.
REVOKE ALL ON TABLE ${schema}.${flyway:table} FROM ${data_role}, ${app_role};
