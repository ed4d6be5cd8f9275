#!/usr/bin/env bash
# Runs Salon's whole test suite on a fresh machine: unit tests and the end-to-end suite
# (real servers on 127.0.0.1). Installs nothing by hand: whatever a suite needs is
# installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
bash scripts/browser-tests.sh
