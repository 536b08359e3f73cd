-- One row per run of the sample hello job. job_id is unique, so a job that runs again after a
-- crash (arq delivers at least once) cannot insert twice.
CREATE TABLE ${schema}.hello (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  text        NOT NULL CONSTRAINT hello_job_id_key UNIQUE,
    source  text        NOT NULL CONSTRAINT hello_source_check CHECK (source IN ('api', 'cron')),
    message text        NOT NULL,
    run_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX hello_cron_run_at_idx ON ${schema}.hello (run_at) WHERE source = 'cron';
