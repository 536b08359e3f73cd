#!/bin/sh
# Runs once, when the postgres container initialises its volume. The same bootstrap.sql is
# re-run by `make bootstrap` to rotate passwords. Secrets come from the container environment:
# this container's superuser (POSTGRES_USER, POSTGRES_PASSWORD = DB_BOOTSTRAP_PWD) makes the
# three roles; no other service gets that password.
set -eu
PGPASSWORD="$POSTGRES_PASSWORD" psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
    --dbname postgres --file /bootstrap/bootstrap.sql
