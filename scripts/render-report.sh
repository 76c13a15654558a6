#!/usr/bin/env bash
# Renders the picture of the HTML report shown in docs/scenarios.md (docs/img/report.png): runs a
# shipped scenario with `stilts sim --format html` and takes a headless Chromium screenshot of the
# top of the page (the charts).
#
# Usage: scripts/render-report.sh [SCENARIO.toml] [OUT.png] [WIDTH] [HEIGHT]
#   defaults: scenarios/launch-spike-outage.toml docs/img/report.png 1100 1640
# Needs Chromium: apt-get install -y chromium (CHROMIUM names another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/launch-spike-outage.toml}
out=${2:-docs/img/report.png}
width=${3:-1100}
height=${4:-1640}
chromium=${CHROMIUM:-chromium}
if ! command -v "$chromium" >/dev/null 2>&1; then
    echo "render-report.sh: $chromium not found; install it: apt-get install -y chromium" >&2
    exit 1
fi
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --locked -p stilts-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$target/debug/stilts" sim --quiet --format html --out "$tmp/report.html" "$scenario"
mkdir -p "$(dirname "$out")"
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$tmp/profile" --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="$width,$height" --screenshot="$out" "file://$tmp/report.html" 2>/dev/null
echo "wrote $out (${width}x${height}, $(wc -c <"$out") bytes) from $scenario"
