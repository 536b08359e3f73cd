-- Bootstrap: database, schema, the three roles and their privileges.
--
-- Idempotent: run it again at any time; it also sets every role's password to the one in the
-- environment, which is how passwords are rotated. Run by psql as the cluster's superuser
-- (DB_BOOTSTRAP_USER: the postgres image's POSTGRES_USER, or the native cluster's initdb user),
-- connected to the `postgres` database. That credential is the bootstrap step's alone: no
-- service holds it, and the admin role below is no superuser. Names and passwords come from the environment through psql variables
-- (\getenv, then :'var' / :"var"), so no secret is pasted into this file or onto a command line.
--
-- Privileges, decided from what each process does:
--   <app>_admin  owns the database, the schema and every table; runs the migrations. Not a
--                superuser: it cannot create roles or databases, or run programs on the server.
--   <app>_data   the worker: SELECT, INSERT, UPDATE, DELETE on the schema's tables (it records
--                job progress, inserts job rows, deletes expired cron rows). No DDL.
--   <app>_app    the API: SELECT on the schema's tables; INSERT only where a migration grants
--                it (the job ledger, to submit jobs). No UPDATE, DELETE or DDL.
--   PUBLIC       nothing on the database's schema, no CONNECT, no TEMP.
\set ON_ERROR_STOP on
\set QUIET on
\getenv db_name DB_NAME
\getenv schema DB_SCHEMA
\getenv admin_user DB_ADMIN_USER
\getenv data_user DB_DATA_USER
\getenv app_user DB_APP_USER
\getenv admin_pwd DB_ADMIN_PWD
\getenv data_pwd DB_DATA_PWD
\getenv app_pwd DB_APP_PWD

-- Keep the ALTER ROLE ... PASSWORD statements below out of the server log whatever the
-- server's logging settings are.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET password_encryption = 'scram-sha-256';

SELECT format('CREATE ROLE %I', :'admin_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'admin_user') \gexec
SELECT format('CREATE ROLE %I', :'data_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'data_user') \gexec
SELECT format('CREATE ROLE %I', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec

ALTER ROLE :"admin_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 20 PASSWORD :'admin_pwd';
ALTER ROLE :"data_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD :'data_pwd';
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS CONNECTION LIMIT 50 PASSWORD :'app_pwd';

-- UTF8 whatever the cluster's default (a cluster initialised under LANG=C defaults to
-- SQL_ASCII, which stores any bytes and compares them wrongly); template0 because template1
-- may carry another encoding. The locale stays the cluster's: if it cannot hold UTF8,
-- PostgreSQL says so here ("encoding UTF8 does not match locale").
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L TEMPLATE template0',
              :'db_name', :'admin_user', 'UTF8')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \gexec

REVOKE ALL ON DATABASE :"db_name" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db_name" TO :"data_user", :"app_user";

\connect :"db_name"
SET log_statement = 'none';

-- A database made before this script (by a provider, or by hand) must be UTF8 too.
DO $check$
BEGIN
    IF pg_encoding_to_char((SELECT encoding FROM pg_database
                            WHERE datname = current_database())) <> 'UTF8' THEN
        RAISE EXCEPTION 'database % is encoded %, not UTF8', current_database(),
            pg_encoding_to_char((SELECT encoding FROM pg_database
                                 WHERE datname = current_database()))
            USING HINT = 'job ids, params and errors are Unicode text: create the database '
                         'with ENCODING ''UTF8'' TEMPLATE template0 (or drop it and let this '
                         'script create it), then run the bootstrap again';
    END IF;
END
$check$;

CREATE SCHEMA IF NOT EXISTS :"schema" AUTHORIZATION :"admin_user";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA :"schema" FROM PUBLIC;
GRANT USAGE ON SCHEMA :"schema" TO :"data_user", :"app_user";

-- Tables that exist now (a re-run after migrations) ...
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA :"schema" TO :"data_user";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA :"schema" TO :"data_user";
GRANT SELECT ON ALL TABLES IN SCHEMA :"schema" TO :"app_user";
-- ... and tables that later migrations (run by the admin role) create.
ALTER DEFAULT PRIVILEGES FOR ROLE :"admin_user" IN SCHEMA :"schema"
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"data_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"admin_user" IN SCHEMA :"schema"
    GRANT USAGE, SELECT ON SEQUENCES TO :"data_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"admin_user" IN SCHEMA :"schema"
    GRANT SELECT ON TABLES TO :"app_user";
-- Functions are executable by PUBLIC by default; nobody but the owner needs them here.
ALTER DEFAULT PRIVILEGES FOR ROLE :"admin_user" IN SCHEMA :"schema"
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The migration history is the admin's alone (a re-run after migrations: the default
-- privileges above granted it to the other roles when Flyway created it).
SELECT format('REVOKE ALL ON TABLE %I.flyway_schema_history FROM %I, %I', :'schema', :'data_user', :'app_user')
 WHERE to_regclass(format('%I.flyway_schema_history', :'schema')) IS NOT NULL \gexec

ALTER ROLE :"data_user" IN DATABASE :"db_name" SET search_path = :"schema";
ALTER ROLE :"app_user" IN DATABASE :"db_name" SET search_path = :"schema";
\echo bootstrap: database :db_name, schema :schema, roles :admin_user :data_user :app_user ready
