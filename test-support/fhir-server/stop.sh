#!/usr/bin/env bash
# Stops the FHIR test server started by start.sh (SIGTERM, then waits for it to exit).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pidfile="${CAREBRIDGE_FHIR_PIDFILE:-$here/.server.pid}"
pid="${CAREBRIDGE_FHIR_PID:-$(cat "$pidfile" 2>/dev/null || true)}"
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
fi
rm -f "$pidfile"
