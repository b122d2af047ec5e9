#!/bin/sh
# docker-compose's PostgreSQL, at its first start (an empty volume): the outbox's owner and one
# login role per process, each with its own password (docs/security.md#in-docker-compose). Run once, by the image's
# entrypoint, as the superuser; no outbox service connects as the superuser afterwards.
#
# - outbox_owner owns the database and its public schema: it runs the migrations (the `migrate`
#   service) and `outbox grants --apply` (the `grants` service). Not a superuser: it cannot
#   reach COPY ... PROGRAM, other databases or the server's files.
# - outbox_worker (worker and beat), outbox_receiver, outbox_operator (the CLI), outbox_metrics,
#   outbox_producer (the application's): logins with no rights yet; `outbox grants` gives each
#   exactly what its process needs once the tables exist.
#
# Passwords come from the environment of this service alone, read by psql's \getenv, so that
# none is on a command line.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv owner_password DB_OWNER_PASSWORD
\getenv worker_password DB_WORKER_PASSWORD
\getenv receiver_password DB_RECEIVER_PASSWORD
\getenv operator_password DB_OPERATOR_PASSWORD
\getenv metrics_password DB_METRICS_PASSWORD
\getenv producer_password DB_PRODUCER_PASSWORD
CREATE ROLE outbox_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_password';
CREATE ROLE outbox_worker LOGIN PASSWORD :'worker_password';
CREATE ROLE outbox_receiver LOGIN PASSWORD :'receiver_password';
CREATE ROLE outbox_operator LOGIN PASSWORD :'operator_password';
CREATE ROLE outbox_metrics LOGIN PASSWORD :'metrics_password';
CREATE ROLE outbox_producer LOGIN PASSWORD :'producer_password';
ALTER DATABASE outbox OWNER TO outbox_owner;
ALTER SCHEMA public OWNER TO outbox_owner;
REVOKE ALL ON DATABASE outbox FROM PUBLIC;
GRANT CONNECT ON DATABASE outbox
    TO outbox_worker, outbox_receiver, outbox_operator, outbox_metrics, outbox_producer;
SQL
