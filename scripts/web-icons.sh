#!/usr/bin/env bash
# Makes the web client's app icons (crates/server/assets/web/icon-*.png) from icon.svg,
# for the web app manifest: 192 and 512 px, plus a "maskable" 512 px variant whose
# background fills the square and whose drawing stays inside the central 80% (phones cut
# it to a circle or a rounded square). The PNGs are committed; run this again after
# changing icon.svg. Needs rsvg-convert (Debian: librsvg2-bin, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/../crates/server/assets/web"

if ! command -v rsvg-convert >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends librsvg2-bin
fi

rsvg-convert -w 192 -h 192 icon.svg -o icon-192.png
rsvg-convert -w 512 -h 512 icon.svg -o icon-512.png

# The maskable variant: the same drawing without the rounded corners, shrunk to 80%
# around the centre, on a full square of the background colour.
maskable=$(mktemp --suffix=.svg)
trap 'rm -f "$maskable"' EXIT
{
    echo '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64">'
    echo '  <rect width="64" height="64" fill="#2f5d8a"/>'
    echo '  <g transform="translate(6.4 6.4) scale(0.8)">'
    grep -v -e '<svg' -e '</svg>' -e '<rect' icon.svg
    echo '  </g>'
    echo '</svg>'
} > "$maskable"
rsvg-convert -w 512 -h 512 "$maskable" -o icon-maskable-512.png
ls -l icon-*.png
