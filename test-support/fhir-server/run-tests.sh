#!/usr/bin/env bash
# Runs the carebridge-fhir-client integration tests against the real FHIR test server:
# installs it (npm ci on the committed lock file), starts it on a free 127.0.0.1 port, waits until
# it is ready, runs `cargo test -p carebridge-fhir-client --test it -- --include-ignored`, and stops it.
#
#   test-support/fhir-server/run-tests.sh [extra libtest args, e.g. a test name filter]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CAREBRIDGE_FHIR_PIDFILE="${CAREBRIDGE_FHIR_PIDFILE:-$(mktemp -u "${TMPDIR:-/tmp}/carebridge-fhir-server.pid.XXXXXX")}"
eval "$("$here/start.sh")"
trap '"$here/stop.sh"' EXIT
echo "FHIR test server: $CAREBRIDGE_FHIR_URL" >&2
cd "$root"
cargo test -p carebridge-fhir-client --test it -- --include-ignored "$@"
