#!/usr/bin/env bash
# Added latency at a low request rate, measured in interleaved rounds: the fake upstream called
# directly, nginx as a plain reverse proxy and stilts (and optionally a second stilts binary, such
# as scripts/build-pgo.sh's) take turns, ROUNDS times, each for SECS seconds at RATE requests/s
# over one connection. Each round's added p50 and p99 are taken against that round's direct
# measurement, and the medians over the rounds are reported with their ratio to nginx's. At low
# rates this VM's latency drifts by tens of percent within minutes; taking turns puts every target
# under the same drift, which one window per target, minutes apart, does not.
#
#   scripts/bench-low-rate.sh                                  # 10 req/s, 6 rounds of 10 s
#   RATE=100 ROUNDS=4 SECS=5 scripts/bench-low-rate.sh
#   SECOND_BIN=target/pgo/release/stilts SECOND_LABEL="stilts, profile-guided" scripts/bench-low-rate.sh
#
# Placement as in the other benches (scripts/placement.sh): the proxies share the last core, one
# at a time busy; the load generator and the fake upstream run on the others. Both proxies are
# configured as in the other benches (scripts/bench-configs.sh). Each round starts with a
# different target; a 2 s warm-up of each comes first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RATE="${RATE:-10}"
ROUNDS="${ROUNDS:-6}"
SECS="${SECS:-10}"
PORT_BASE="${PORT_BASE:-19140}"
SECOND_BIN="${SECOND_BIN:-}"
SECOND_LABEL="${SECOND_LABEL:-stilts (second binary)}"
for v in RATE ROUNDS SECS PORT_BASE; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "$v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
command -v nginx >/dev/null || { echo "needs nginx (Debian: apt-get install nginx-light)" >&2; exit 2; }
command -v oha >/dev/null || { echo "needs oha (cargo install --locked oha)" >&2; exit 2; }

if [ -n "${STILTS_BIN:-}" ]; then
    BIN="$STILTS_BIN"
else
    echo "== building stilts and the openai plugin (release)"
    (cd "$ROOT" && cargo build --locked --release -q -p stilts-cli -p stilts-plugin-openai)
    BIN="$TARGET/release/stilts"
fi
[ -z "$SECOND_BIN" ] || [ -x "$SECOND_BIN" ] || { echo "SECOND_BIN $SECOND_BIN is not an executable" >&2; exit 2; }

. "$ROOT/scripts/placement.sh"
. "$ROOT/scripts/bench-configs.sh"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

MOCK_PORT=$PORT_BASE
NGINX_PORT=$((PORT_BASE + 1))
STILTS_PORT=$((PORT_BASE + 2))
SECOND_PORT=$((PORT_BASE + 3))
${ON_REST[@]+"${ON_REST[@]}"} "$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --name bench >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
write_nginx_conf "$WORK/nginx" "$NGINX_PORT" "$MOCK_PORT"
${ON_GW[@]+"${ON_GW[@]}"} nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
start_stilts() { # binary port log
    write_stilts_conf "$WORK/stilts-$2.toml" "$2" "$MOCK_PORT"
    RUST_LOG=warn ${ON_GW[@]+"${ON_GW[@]}"} "$1" serve --config "$WORK/stilts-$2.toml" >"$3" 2>&1 &
    PIDS+=($!)
}
start_stilts "$BIN" "$STILTS_PORT" "$WORK/stilts.log"
TARGETS=("direct:$MOCK_PORT" "nginx:$NGINX_PORT" "stilts:$STILTS_PORT")
if [ -n "$SECOND_BIN" ]; then
    start_stilts "$SECOND_BIN" "$SECOND_PORT" "$WORK/second.log"
    TARGETS+=("second:$SECOND_PORT")
fi

BODY='{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi in five words."}],"max_tokens":16}'
for t in "${TARGETS[@]}"; do
    ok=0
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:${t#*:}/v1/chat/completions" -H 'content-type: application/json' -d "$BODY"; then
            ok=1; break
        fi
        sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "${t%%:*} does not answer on port ${t#*:}"; tail -n 5 "$WORK"/*.log "$WORK"/nginx/error.log; exit 1; }
done

load() { # target out-file seconds
    ${ON_REST[@]+"${ON_REST[@]}"} oha --no-tui --output-format json -z "${3}s" -q "$RATE" -c 1 \
        -m POST -H 'content-type: application/json' -d "$BODY" \
        "http://127.0.0.1:${1#*:}/v1/chat/completions" >"$2"
}
echo "== warm-up: 2 s each"
for t in "${TARGETS[@]}"; do load "$t" "$WORK/warm-${t%%:*}.json" 2; done
echo "== $ROUNDS rounds, each: ${TARGETS[*]%%:*} for ${SECS} s at $RATE req/s, one connection"
for round in $(seq "$ROUNDS"); do
    # Each round starts one target later: none is always first, or always right after another.
    n=${#TARGETS[@]}
    order=()
    for i in $(seq 0 $((n - 1))); do order+=("${TARGETS[$(((i + round - 1) % n))]}"); done
    for t in "${order[@]}"; do load "$t" "$WORK/$round-${t%%:*}.json" "$SECS"; done
    echo "   round $round of $ROUNDS done (${order[*]%%:*})"
done

python3 - "$WORK" "$ROUNDS" "$RATE" "$SECS" "$SECOND_LABEL" "${TARGETS[@]%%:*}" <<'PY'
import json, statistics, sys
work, rounds, rate, secs, second_label = sys.argv[1:6]
names = sys.argv[6:]
labels = {"nginx": "nginx", "stilts": "stilts", "second": second_label}
added = {n: {"p50": [], "p99": []} for n in names if n != "direct"}
for r in range(1, int(rounds) + 1):
    runs = {}
    for n in names:
        j = json.load(open(f"{work}/{r}-{n}.json"))
        codes = j.get("statusCodeDistribution", {})
        if set(codes) != {"200"} or j["summary"]["successRate"] < 1:
            sys.exit(f"round {r}: {n} did not answer every request with 200 (status codes {codes}, "
                     f"{j['summary']['successRate'] * 100:.2f} % completed)")
        runs[n] = j["latencyPercentiles"]
    for n in added:
        for q in ("p50", "p99"):
            added[n][q].append((runs[n][q] - runs["direct"][q]) * 1e6)
print(f"added latency at {rate} req/s, median over {rounds} interleaved rounds of {secs} s (one connection):")
print("| | added p50 | added p99 | p50 ratio to nginx | p99 ratio to nginx |")
print("|---|---|---|---|---|")
med = {n: {q: statistics.median(v) for q, v in added[n].items()} for n in added}
for n in added:
    ratio = lambda q: "—" if n == "nginx" else (f"{med[n][q] / med['nginx'][q]:.2f}×" if med["nginx"][q] > 0 else "n/a")
    print(f"| {labels[n]} | {med[n]['p50']:+.0f} µs | {med[n]['p99']:+.0f} µs | {ratio('p50')} | {ratio('p99')} |")
for n in added:
    print(f"{labels[n]}: per-round added p50 " + ", ".join(f"{v:+.0f}" for v in added[n]["p50"]) + " µs")
PY
