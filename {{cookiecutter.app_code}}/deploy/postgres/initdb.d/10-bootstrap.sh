#!/bin/sh
# Runs once, when the postgres container initialises its volume. The same bootstrap.sql is
# re-run by `make bootstrap` to rotate passwords. Secrets come from the container environment.
set -eu
PGPASSWORD="$DB_ADMIN_PWD" psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
    --dbname postgres --file /bootstrap/bootstrap.sql
