#!/usr/bin/env bash
# Starts the FHIR test server in the background on a free 127.0.0.1 port and waits until it is ready.
#
#   eval "$(test-support/fhir-server/start.sh)"     # sets CAREBRIDGE_FHIR_URL and CAREBRIDGE_FHIR_PID
#   ...
#   test-support/fhir-server/stop.sh                # stops the server started above
#
# Prints `export CAREBRIDGE_FHIR_URL=...` and `export CAREBRIDGE_FHIR_PID=...` on stdout; the pid is
# also written to $CAREBRIDGE_FHIR_PIDFILE (default: <this dir>/.server.pid). Installs the pinned
# npm packages with `npm ci` first unless node_modules is already up to date with the lock file.
# Environment: CAREBRIDGE_FHIR_PORT (default 0 = free port), CAREBRIDGE_FHIR_START_TIMEOUT (s, default 60).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

pidfile="${CAREBRIDGE_FHIR_PIDFILE:-$here/.server.pid}"
out="$(mktemp "${TMPDIR:-/tmp}/carebridge-fhir-server.XXXXXX")"
node --experimental-websocket server.mjs --port "${CAREBRIDGE_FHIR_PORT:-0}" >"$out" 2> >(grep -v -e ExperimentalWarning -e 'node --trace-warnings' >&2) &
pid=$!
echo "$pid" >"$pidfile"

deadline=$((SECONDS + ${CAREBRIDGE_FHIR_START_TIMEOUT:-60}))
url=""
while [ -z "$url" ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "fhir-server: exited before it was ready" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "fhir-server: not ready after ${CAREBRIDGE_FHIR_START_TIMEOUT:-60}s" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  url="$(sed -n 's/^listening on //p' "$out")"
  [ -n "$url" ] || sleep 0.2
done
rm -f "$out"
echo "export CAREBRIDGE_FHIR_URL=$url"
echo "export CAREBRIDGE_FHIR_PID=$pid"
