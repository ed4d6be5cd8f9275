#!/usr/bin/env bash
# Runs Salon's whole test suite on a fresh machine:
#   1. every unit test and the end-to-end suite on the embedded SQLite database;
#   2. the end-to-end suite again on PostgreSQL and on MariaDB/MySQL (R21: no feature
#      works on one backend and not another);
#      Before them, the previous version's binary is built once (scripts/
#      previous-version.sh) for the rolling upgrade test;
#   3. the web client's browser tests in Chromium (scripts/browser-tests.sh installs
#      Chromium and the npm packages they need when missing).
# A database service that cannot be reached is skipped with a loud warning, unless
# SALON_REQUIRE_SERVICES=1 (set by CI), which makes it a failure.
# Service URLs: SALON_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)
# and SALON_TEST_MYSQL_URL (default mysql://root@127.0.0.1:3306/test); each test creates
# and drops a database of its own there.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== unit tests + end-to-end suite on SQLite"
SALON_TEST_BACKEND=sqlite cargo test --workspace --locked "$@"

reachable() { # host port
  timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

host_port() { # URL -> "host port"
  local rest=${1#*://}
  rest=${rest#*@}
  rest=${rest%%/*}
  echo "${rest%%:*} ${rest##*:}"
}

# The rolling upgrade test (PostgreSQL and MariaDB passes) starts on the previous
# version's binary: built once under target/previous/ (scripts/previous-version.sh).
if previous=$(bash scripts/previous-version.sh | tail -n 1); then
  export SALON_PREVIOUS_BINARY=$previous
elif [ "${SALON_REQUIRE_SERVICES:-0}" = 1 ]; then
  echo "ERROR: the previous version could not be built and SALON_REQUIRE_SERVICES=1" >&2
  exit 1
else
  echo "## SKIPPED: the rolling upgrade test (the previous version could not be built)" >&2
fi

for backend in postgres mysql; do
  if [ "$backend" = postgres ]; then
    url=${SALON_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
  else
    url=${SALON_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}
  fi
  read -r host port < <(host_port "$url")
  if ! reachable "$host" "$port"; then
    if [ "${SALON_REQUIRE_SERVICES:-0}" = 1 ]; then
      echo "ERROR: $backend at $host:$port is unreachable and SALON_REQUIRE_SERVICES=1" >&2
      exit 1
    fi
    echo "################################################################" >&2
    echo "## SKIPPED: end-to-end suite on $backend ($host:$port unreachable)" >&2
    echo "################################################################" >&2
    continue
  fi
  echo "== end-to-end suite on $backend"
  SALON_TEST_BACKEND=$backend cargo test --locked -p salon --test e2e "$@"
done

echo "== browser tests of the web client (Chromium)"
bash scripts/browser-tests.sh
