#!/usr/bin/env bash
# Bounded soak of `stilts serve` under every fault kind (crates/soak): an open-loop load of plain
# and streamed requests over three routes and three client dialects, through a real gateway
# process, while three fake upstreams inject outages, 429 storms with Retry-After, hangs, cuts,
# stalls, malformed events, slow first tokens, connection resets and in-band overload events on a
# repeating schedule, and the config file is rewritten (and reloaded) on a period. It fails unless
# every request ended in an answer or a clear error within its deadline, the gateway's metrics
# agree with the client's count, every reload applied, RSS, descriptors and runtime tasks stayed
# flat after warm-up (within 10%), the log holds no panic or error line, and SIGTERM ends it
# cleanly. Traffic stays on loopback; everything stops by itself.
#
#   scripts/soak.sh                          # 10 minutes at 2,000 requests/s
#   RATE=1000 DURATION=120 scripts/soak.sh   # the CI version: 120 s (three 40 s fault cycles)
#   DURATION=60 scripts/soak.sh              # the shortest run: three 20 s fault cycles
#   DOC=docs/benchmarks.md scripts/soak.sh   # also write the report into that page's soak section
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DURATION="${DURATION:-600}"
RATE="${RATE:-2000}"
DOC="${DOC:-}"

echo "== building stilts, its plugins and stilts-soak (release)"
(cd "$ROOT" && cargo build --locked --release -q -p stilts-cli -p stilts-plugin-openai \
    -p stilts-plugin-anthropic -p stilts-soak)

# A request in flight holds a descriptor in the gateway and one here: allow many.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Placement: with 2 or more cores the gateway runs alone on the last one and the load generator
# with the fake upstreams on the others; PIN=0 leaves it to the scheduler.
. "$ROOT/scripts/placement.sh"
GW_PLACE=()
if [ "$PINNED" = 1 ]; then
    GW_PLACE=(--gateway-cpus "$GW_CPUS")
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
status=0
${ON_REST[@]+"${ON_REST[@]}"} "$TARGET/release/stilts-soak" --stilts "$TARGET/release/stilts" \
    --duration-s "$DURATION" --rate "$RATE" --work-dir "$WORK" --markdown "$WORK/report.md" \
    ${GW_PLACE[@]+"${GW_PLACE[@]}"} || status=$?
if [ "$status" -ne 0 ] && [ -f "$WORK/gateway.log" ]; then
    echo "== the gateway's last log lines"
    tail -n 20 "$WORK/gateway.log"
fi
# Printed last, so that a log cut to its end still names what failed.
if [ "$status" -ne 0 ] && [ -f "$WORK/report.md" ]; then
    echo "== failed checks"
    grep -F '| **FAIL** |' "$WORK/report.md" || echo "(none failed: stilts-soak itself stopped with status $status)"
fi

if [ -n "$DOC" ] && [ -f "$WORK/report.md" ]; then
    python3 - "$ROOT/$DOC" "$WORK/report.md" "$(git -C "$ROOT" rev-parse --short HEAD)" <<'PY'
import datetime, re, sys
doc, report, rev = sys.argv[1:4]
text = open(doc).read()
begin, end = "<!-- soak:begin -->", "<!-- soak:end -->"
if begin not in text or end not in text:
    sys.exit(f"{doc} has no {begin} … {end} section")
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
body = f"{begin}\nRun of {stamp}, commit {rev}:\n\n{open(report).read().strip()}\n{end}"
text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: body, text, flags=re.S)
open(doc, "w").write(text)
print(f"== wrote the report into {doc}")
PY
fi
exit "$status"
