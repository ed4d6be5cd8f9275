#!/usr/bin/env bash
# Builds the previous version's `salon` (the commit named in scripts/previous-version),
# which the rolling upgrade test (crates/salon/tests/e2e/processes.rs) starts a cluster
# on before upgrading it node by node to this build. Prints the binary's path on the
# last line of standard output; kept under target/previous/, so it is built once.
# Needs the repository's history (a clone, not an archive).
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(grep -v '^#' scripts/previous-version | tr -d '[:space:]')
out="target/previous/salon-$commit"
if [ -x "$out" ]; then
  echo "$PWD/$out"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "previous version $commit is not in this repository's history" >&2
  exit 1
fi
src="target/previous/src-$commit"
rm -rf "$src"
mkdir -p "$src"
git archive "$commit" | tar -x -C "$src"
echo "== building the previous version ($commit) for the rolling upgrade test" >&2
(cd "$src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --locked -p salon --bin salon >&2)
cp "target/previous/target/debug/salon" "$out.tmp"
mv "$out.tmp" "$out"
rm -rf "$src"
echo "$PWD/$out"
