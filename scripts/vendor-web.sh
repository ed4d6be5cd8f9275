#!/usr/bin/env bash
# Vendors the web client's two libraries (docs/WEB_CLIENT.md, "Vendored libraries"):
# markdown-it (Markdown to HTML, raw HTML disabled) and DOMPurify (sanitizer), as their
# published minified browser builds, with their licences and those of the packages
# markdown-it's browser build bundles. Pinned exact versions from the npm registry
# (`npm pack`), each tarball checked against the integrity pinned here before anything is
# extracted. Writes crates/server/assets/web/vendor/; the files are committed, so a build
# never needs the network. To update: change a version and its integrity below (`npm view
# PACKAGE@VERSION dist.integrity`), run this script, update the file names in web.rs and
# index.html, run the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=crates/server/assets/web/vendor

# name version integrity (sha512, as the registry publishes it)
PACKAGES=(
    "markdown-it 15.0.3 sha512-+Az7Ojz3iRGu8KYMvJ6xVhvrxP3eE+vEtJX75Ow88XBpcQNV/0lGX5ZynIIBftREo4DC2jsveAMDaeltmm8QvQ=="
    "dompurify 3.4.18 sha512-ofe3wI/uNm68HInABYFJYqQxRw1EaKAjNdrFVKqjUY+UZurvNd2L/HuQe097s/4RivWiZyP6tT7aoT8atjfhwg=="
)
# Bundled inside markdown-it's browser build: only their licences are copied.
BUNDLED=(
    "entities 8.1.0"
    "linkify-it 6.1.0"
    "mdurl 2.1.0"
    "punycode.js 2.3.1"
    "uc.micro 3.0.0"
)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/salon-vendor.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Packs NAME@VERSION into $WORK/NAME and checks the tarball's sha512 against INTEGRITY
# (computed here, not taken from npm's word) when one is given.
fetch() { # name version [integrity]
    local name=$1 version=$2 integrity=${3:-}
    local dir="$WORK/$name"
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$name@$version" >/dev/null)
    local tgz
    tgz=$(ls "$dir"/*.tgz)
    if [ -n "$integrity" ]; then
        local actual
        actual="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
        if [ "$actual" != "$integrity" ]; then
            echo "integrity mismatch for $name@$version: expected $integrity, got $actual" >&2
            exit 1
        fi
    fi
    tar xzf "$tgz" -C "$dir"
    local got
    got=$(node -p "require('$dir/package/package.json').version")
    [ "$got" = "$version" ] || { echo "$name: packed $got, wanted $version" >&2; exit 1; }
}

for entry in "${PACKAGES[@]}"; do
    # shellcheck disable=SC2086
    fetch $entry
done
for entry in "${BUNDLED[@]}"; do
    # shellcheck disable=SC2086
    fetch $entry
done

rm -rf "$OUT"
mkdir -p "$OUT"
cp "$WORK/markdown-it/package/dist/browser/markdown-it.umd.min.js" "$OUT/markdown-it-15.0.3.min.js"
cp "$WORK/markdown-it/package/LICENSE" "$OUT/markdown-it-15.0.3.LICENSE"
cp "$WORK/dompurify/package/dist/purify.min.js" "$OUT/purify-3.4.18.min.js"
# DOMPurify is dual-licensed (Apache-2.0 or MPL-2.0): both texts.
cp "$WORK/dompurify/package/LICENSE" "$OUT/dompurify-3.4.18.LICENSE"
cp "$WORK/dompurify/package/LICENSE-MPL" "$OUT/dompurify-3.4.18.LICENSE-MPL"
for entry in "${BUNDLED[@]}"; do
    read -r name version <<<"$entry"
    licence=$(find "$WORK/$name/package" -maxdepth 1 -name 'LICENSE*' | head -n 1)
    [ -n "$licence" ] || { echo "$name@$version has no licence file" >&2; exit 1; }
    cp "$licence" "$OUT/markdown-it-bundles-$name-$version.LICENSE"
done

# The page's Content-Security-Policy forbids eval: neither library may need it.
if grep -lE '\beval\(|new Function\(' "$OUT"/*.js; then
    echo "a vendored library uses eval or new Function: the CSP would break it" >&2
    exit 1
fi
(cd "$OUT" && sha256sum -- *.js >SHA256SUMS)
echo "vendored into $OUT:"
ls -l "$OUT"
