#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the real-database tests of the store
# implementations, and prints the variables those tests read:
#
#   eval "$(test-support/postgres/start-postgres.sh)"   # exports CAREBRIDGE_POSTGRES_URL and
#                                                       # CAREBRIDGE_POSTGRES_DIR
#   cargo test -p carebridge-store --test it -- --include-ignored
#   test-support/postgres/start-postgres.sh --stop "$CAREBRIDGE_POSTGRES_DIR"
#
# Never the system service: a new cluster (initdb, trust authentication on loopback, a Unix
# socket in its own directory) that --stop removes. PostgreSQL comes from Debian's `postgresql`
# package (.ci/run installs it when missing); when this script runs as root, the cluster runs as
# the `postgres` user, since PostgreSQL refuses to run as root.
#
# Environment: CAREBRIDGE_POSTGRES_PORT (default: a free port). Everything but the export lines
# goes to stderr.
set -euo pipefail

find_bin() {
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
        return
    fi
    local candidate
    candidate="$(ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$candidate" ]]; then
        echo "$candidate"
        return
    fi
    echo "$1 not found: install Debian's postgresql package" >&2
    exit 1
}

as_owner() {
    if [[ "$(id -u)" == "0" ]]; then
        su postgres -s /bin/sh -c "$*"
    else
        sh -c "$*"
    fi
}

if [[ "${1:-}" == "--stop" ]]; then
    DIR="${2:-}"
    if [[ -z "$DIR" || ! -f "$DIR/carebridge-postgres" ]]; then
        echo "usage: $0 --stop DIR (a directory this script created)" >&2
        exit 2
    fi
    PG_CTL="$(find_bin pg_ctl)"
    as_owner "'$PG_CTL' -D '$DIR/data' -m immediate -w stop" >&2 || true
    rm -rf "$DIR"
    echo "postgres stopped" >&2
    exit 0
fi

INITDB="$(find_bin initdb)"
PG_CTL="$(find_bin pg_ctl)"
PORT="${CAREBRIDGE_POSTGRES_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
DIR="$(mktemp -d "${TMPDIR:-/tmp}/carebridge-postgres-XXXXXX")"
touch "$DIR/carebridge-postgres"
chmod 755 "$DIR"
if [[ "$(id -u)" == "0" ]]; then
    chown postgres "$DIR"
fi
as_owner "'$INITDB' -D '$DIR/data' -U postgres --auth=trust -E UTF8 --no-sync" >"$DIR/initdb.log" 2>&1 || {
    cat "$DIR/initdb.log" >&2
    exit 1
}
as_owner "'$PG_CTL' -D '$DIR/data' -l '$DIR/log' -w -t 30 \
    -o \"-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200\" start" >&2 || {
    cat "$DIR/log" >&2
    exit 1
}
echo "postgres listening on 127.0.0.1:${PORT} (cluster $DIR, log $DIR/log)" >&2
echo "export CAREBRIDGE_POSTGRES_URL=postgres://postgres@127.0.0.1:${PORT}/postgres"
echo "export CAREBRIDGE_POSTGRES_DIR=${DIR}"
