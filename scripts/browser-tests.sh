#!/usr/bin/env bash
# Browser tests of the web client (R20): Debian's Chromium driven by playwright-core
# (tests/browser) against a real `salon serve` on free 127.0.0.1 ports with a temporary
# data directory. Installs what is missing (chromium, node, the npm packages), builds the
# binary if needed, exits non-zero if any test fails. Screenshots go to
# artifacts/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=
apt_install() {
    if [ -z "$apt_updated" ]; then
        as_root apt-get update
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium (apt-get)"
    apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "== installing node and npm (apt-get)"
    apt_install nodejs npm
fi

echo "== npm ci (tests/browser)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== cargo build (salon)"
cargo build --locked -p salon
BIN="$ROOT/target/debug/salon"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/salon-browser-tests.XXXXXX")
SERVER_PID=
TLS_PID=
stop_server() { # pid
    if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$1" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$1" 2>/dev/null || true
    fi
}
cleanup() {
    stop_server "$SERVER_PID"
    stop_server "$TLS_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # URL LOG: until URL/healthz answers (30 s at most), else show LOG and fail
    if ! READY_URL="$1" node -e '
      const url = process.env.READY_URL + "/healthz";
      const end = Date.now() + 30000;
      (async () => {
        while (Date.now() < end) {
          try { if ((await fetch(url)).ok) process.exit(0); } catch {}
          await new Promise((r) => setTimeout(r, 100));
        }
        process.exit(1);
      })();'; then
        echo "salon did not start:" >&2
        cat "$2" >&2
        exit 1
    fi
}

# Sets the variable named $1 to a free loopback port for a server started next. Taken
# below the kernel's ephemeral range (32768 and up on Linux), where neither a listen(0)
# nor Chromium's outgoing connections land, from a counter (never the same port twice in
# this run); a port something already listens on is skipped. The tests' own servers
# (tests/browser/helpers.mjs) and the e2e harness pick the same way.
next_port=$((20000 + $$ % 12000))
take_port() {
    local port _
    for _ in $(seq 12000); do
        port=$next_port
        next_port=$((20000 + (next_port - 20000 + 1) % 12000))
        if node -e 'const s=require("net").createServer();s.on("error",()=>process.exit(1));s.listen(+process.argv[1],"127.0.0.1",()=>s.close())' "$port"; then
            printf -v "$1" '%s' "$port"
            return 0
        fi
    done
    echo "no free loopback port between 20000 and 32000" >&2
    exit 1
}

# Every test signs in from 127.0.0.1: lift the per-address limits.
cat >"$WORK/salon.toml" <<'EOF'
[limits]
auth_attempts_per_minute_per_address = 100000
registrations_per_hour_per_address = 100000
registrations_per_minute = 100000
messages_per_second = 100000
message_burst = 100000
requests_per_second = 100000
request_burst = 100000
EOF

export SALON_ADMIN_PASSWORD='correct horse battery staple'
take_port TCP_PORT
take_port HTTP_PORT
echo "== starting salon on 127.0.0.1:$HTTP_PORT (data in $WORK/data)"
SALON_LOG=warn "$BIN" serve --no-console --config "$WORK/salon.toml" --data-dir "$WORK/data" \
    --listen "127.0.0.1:$TCP_PORT" --http-listen "127.0.0.1:$HTTP_PORT" --metrics-listen 127.0.0.1:0 \
    >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

export SALON_URL="http://127.0.0.1:$HTTP_PORT"
# Tests that look at what the server stored (files.test.mjs) read it there.
export SALON_DATA_DIR="$WORK/data"
wait_ready "$SALON_URL" "$WORK/server.log"

export SALON_BIN="$BIN"
export SCREENSHOT_DIR="$ROOT/artifacts/screenshots"
mkdir -p "$SCREENSHOT_DIR"

echo "== browser tests (node --test)"
status=0
(cd tests/browser && node --test --test-concurrency=1 ./*.test.mjs) || status=$?
if [ "$status" -ne 0 ]; then
    echo "== browser tests failed; server log:" >&2
    tail -n 50 "$WORK/server.log" >&2 || true
fi

# The web client over HTTPS/WSS, unchanged: a server with a self-signed certificate
# (`--self-signed`), which Chromium is told to accept (SALON_BROWSER_TLS), and node's
# own requests in the tests too (NODE_TLS_REJECT_UNAUTHORIZED, for this run only).
echo "== browser tests over HTTPS (self-signed certificate)"
take_port TLS_TCP_PORT
take_port TLS_HTTP_PORT
SALON_LOG=warn "$BIN" serve --no-console --config "$WORK/salon.toml" --data-dir "$WORK/tls-data" \
    --listen "127.0.0.1:$TLS_TCP_PORT" --http-listen "127.0.0.1:$TLS_HTTP_PORT" --self-signed \
    --metrics-listen 127.0.0.1:0 \
    >"$WORK/tls-server.log" 2>&1 &
TLS_PID=$!
export NODE_TLS_REJECT_UNAUTHORIZED=0 NODE_NO_WARNINGS=1
wait_ready "https://127.0.0.1:$TLS_HTTP_PORT" "$WORK/tls-server.log"
(cd tests/browser && SALON_URL="https://127.0.0.1:$TLS_HTTP_PORT" SALON_DATA_DIR="$WORK/tls-data" SALON_BROWSER_TLS=1 \
    node --test --test-concurrency=1 ./auth.test.mjs ./chat.test.mjs ./messaging.test.mjs ./files.test.mjs ./search.test.mjs) || status=$?
if [ "$status" -ne 0 ]; then
    echo "== browser tests failed; TLS server log:" >&2
    tail -n 50 "$WORK/tls-server.log" >&2 || true
fi
unset NODE_TLS_REJECT_UNAUTHORIZED NODE_NO_WARNINGS
echo "== screenshots in $SCREENSHOT_DIR"
exit "$status"
