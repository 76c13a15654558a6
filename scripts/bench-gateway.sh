#!/usr/bin/env bash
# Gateway overhead bench: the fake upstream called directly vs through `stilts serve`, on
# loopback, at a fixed request rate (open loop, oha with latency correction), plain requests.
# Reports p50/p99 of both, the added latency, the gateway's own overhead histogram mean, its CPU
# per request and peak RSS, then the most requests per second the gateway serves on one core
# (closed loop, as many as the upstream answers). Stops everything it started.
#
# Placement: with 2 or more cores the gateway runs alone on the last core (`taskset`, so it gets
# one worker: a single-threaded runtime) and the load generator and the fake upstream share the
# others; PIN=0 leaves placement to the scheduler (and the gateway to one worker per core).
#
#   scripts/bench-gateway.sh                 # 2000 req/s for 20 s, then 10 s at full speed
#   RATE=2000 DURATION=30s CONNS=64 scripts/bench-gateway.sh
#   SATURATE=0 scripts/bench-gateway.sh      # skip the full-speed run
#   NGINX=1 scripts/bench-gateway.sh         # also nginx as a plain reverse proxy (keep-alive to
#                                            # the same upstream, same placement): what one proxy
#                                            # hop costs on this machine, with no work per request
#   CLUSTER=1 scripts/bench-gateway.sh       # also a gateway with [cluster] (a loopback
#                                            # redis-server, sync_ms 100, one idle sibling
#                                            # replica), same placement and load: what shared
#                                            # state costs per request
#   DOC=docs/benchmarks-gateway.md scripts/bench-gateway.sh   # also write the results there
#   CALLGRIND=2000 scripts/bench-gateway.sh  # instructions and code run per request instead
#                                            # (valgrind callgrind, 2000 requests at 300 req/s,
#                                            # 16 conns; scripts/code-footprint.py): repeatable
#                                            # on a noisy machine, unlike timings
#   NGINX=1 CALLGRIND=2000 scripts/bench-gateway.sh    # the same for nginx alongside
#   STREAM=1 CALLGRIND=1000 scripts/bench-gateway.sh   # the same for streamed requests (the
#                                            # fake upstream's answer: 15 events)
#   STILTS_BIN=target/pgo/release/stilts CALLGRIND=2000 scripts/bench-gateway.sh   # a prebuilt
#                                            # binary instead (here scripts/build-pgo.sh's)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RATE="${RATE:-2000}"
DURATION="${DURATION:-20s}"
CONNS="${CONNS:-64}"
MOCK_PORT="${MOCK_PORT:-19101}"
GW_PORT="${GW_PORT:-19102}"
DOC="${DOC:-}"
CALLGRIND="${CALLGRIND:-}"
if [ "${STREAM:-0}" = 1 ] && [ -z "$CALLGRIND" ]; then
    echo "STREAM=1 counts instructions per streamed request: use it with CALLGRIND=N" >&2
    exit 2
fi
SATURATE="${SATURATE:-1}"
NGINX="${NGINX:-0}"
NGINX_PORT="${NGINX_PORT:-19103}"
CLUSTER="${CLUSTER:-0}"
REDIS_PORT="${REDIS_PORT:-19104}"
CLUSTER_PORT="${CLUSTER_PORT:-19105}"
SIBLING_PORT="${SIBLING_PORT:-19106}"
WORK="$(mktemp -d)"
# Placement: the gateway alone on the last core this script may use, everything else on the others.
. "$ROOT/scripts/placement.sh"
. "$ROOT/scripts/bench-configs.sh"
if [ "$PINNED" = 1 ]; then
    PLACEMENT="gateway alone on core $GW_CPUS, load generator and fake upstream on cores $REST_CPUS"
    GW_SCOPE="on one core"
else
    PLACEMENT="not pinned (the scheduler places the gateway, load generator and fake upstream)"
    GW_SCOPE="not pinned"
fi
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

if ! command -v oha >/dev/null; then
    echo "== installing oha (cargo install --locked oha)"
    cargo install --locked oha
fi

if [ -n "${STILTS_BIN:-}" ]; then
    BIN="$STILTS_BIN" # a prebuilt binary (the fake upstream runs it too); its plugins are beside it
else
    echo "== building stilts and the openai plugin (release)"
    (cd "$ROOT" && cargo build --locked --release -q -p stilts-cli -p stilts-plugin-openai)
    BIN="$TARGET/release/stilts"
fi

${ON_REST[@]+"${ON_REST[@]}"} "$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --name bench >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
write_stilts_conf "$WORK/bench.toml" "$GW_PORT" "$MOCK_PORT"
# Per-instruction counts (not only per line of source): scripts/code-footprint.py reads them.
CALLGRIND_ARGS=(--tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no)
if [ -n "$CALLGRIND" ]; then
    RUST_LOG=warn ${ON_GW[@]+"${ON_GW[@]}"} valgrind "${CALLGRIND_ARGS[@]}" --callgrind-out-file="$WORK/callgrind.out" \
        "$BIN" serve --config "$WORK/bench.toml" >"$WORK/gw.log" 2>&1 &
else
    RUST_LOG=warn ${ON_GW[@]+"${ON_GW[@]}"} "$BIN" serve --config "$WORK/bench.toml" >"$WORK/gw.log" 2>&1 &
fi
GW_PID=$!
PIDS+=("$GW_PID")
if [ "$CLUSTER" = 1 ]; then
    command -v redis-server >/dev/null || { echo "CLUSTER=1 needs redis-server (Debian: apt-get install redis-server)"; exit 1; }
    ${ON_REST[@]+"${ON_REST[@]}"} redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    for port in "$CLUSTER_PORT" "$SIBLING_PORT"; do
        sed "s/127.0.0.1:$GW_PORT/127.0.0.1:$port/" "$WORK/bench.toml" >"$WORK/cluster-$port.toml"
        printf '\n[cluster]\nredis_url = "redis://127.0.0.1:%s"\nsync_ms = 100\nkey_prefix = "bench:"\n' "$REDIS_PORT" >>"$WORK/cluster-$port.toml"
    done
    RUST_LOG=warn ${ON_GW[@]+"${ON_GW[@]}"} "$BIN" serve --config "$WORK/cluster-$CLUSTER_PORT.toml" >"$WORK/gw-cluster.log" 2>&1 &
    CLUSTER_PID=$!
    PIDS+=("$CLUSTER_PID")
    RUST_LOG=warn ${ON_REST[@]+"${ON_REST[@]}"} "$BIN" serve --config "$WORK/cluster-$SIBLING_PORT.toml" >"$WORK/gw-sibling.log" 2>&1 &
    PIDS+=($!)
fi
if [ "$NGINX" = 1 ]; then
    command -v nginx >/dev/null || { echo "NGINX=1 needs nginx (Debian: apt-get install nginx-light)"; exit 1; }
    # Under callgrind, one process serves (no master): the profile is the worker's.
    MASTER=""
    [ -n "$CALLGRIND" ] && MASTER="master_process off;"
    write_nginx_conf "$WORK/nginx" "$NGINX_PORT" "$MOCK_PORT" "$MASTER"
    if [ -n "$CALLGRIND" ]; then
        ${ON_GW[@]+"${ON_GW[@]}"} valgrind "${CALLGRIND_ARGS[@]}" --callgrind-out-file="$WORK/nginx-callgrind.out" \
            nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
    else
        ${ON_GW[@]+"${ON_GW[@]}"} nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$WORK/nginx.log" 2>&1 &
    fi
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
fi

BODY='{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi in five words."}],"max_tokens":16}'
STREAM_BODY="${BODY%\}},\"stream\":true}"
PORTS=("$MOCK_PORT" "$GW_PORT")
[ "$NGINX" = 1 ] && PORTS+=("$NGINX_PORT")
[ "$CLUSTER" = 1 ] && PORTS+=("$CLUSTER_PORT")
for port in "${PORTS[@]}"; do
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' -d "$BODY"; then
            break
        fi
        sleep 0.1
    done
done
curl -sf -o /dev/null "http://127.0.0.1:$GW_PORT/v1/chat/completions" -H 'content-type: application/json' -d "$BODY" \
    || { echo "gateway not answering"; cat "$WORK/gw.log"; exit 1; }

run() { # name url
    ${ON_REST[@]+"${ON_REST[@]}"} oha --no-tui --output-format json -z "$DURATION" -q "$RATE" -c "$CONNS" --latency-correction \
        -m POST -H 'content-type: application/json' -d "$BODY" "$2" >"$WORK/$1.json"
}

if [ -n "$CALLGRIND" ]; then
    CG_BODY="$BODY"
    [ "${STREAM:-0}" = 1 ] && CG_BODY="$STREAM_BODY"
    fixed() { # name port requests rate
        ${ON_REST[@]+"${ON_REST[@]}"} oha --no-tui --output-format json -n "$3" -q "$4" -c 16 -m POST -H 'content-type: application/json' \
            -d "$CG_BODY" "http://127.0.0.1:$2/v1/chat/completions" >"$WORK/$1.json"
    }
    counted() { # name pid port out-prefix: warm-up, then CALLGRIND requests counted; prints the profile's path
        fixed "$1-warm" "$3" 500 200
        callgrind_control -z "$2" >/dev/null 2>&1
        fixed "$1-counted" "$3" "$CALLGRIND" 300
        callgrind_control -d "$2" >/dev/null 2>&1
        sleep 1
        ls "$WORK/$4".out.* | tail -1
    }
    echo "== callgrind: 500 warm-up requests, then $CALLGRIND counted"
    OUT="$(counted gateway "$GW_PID" "$GW_PORT" callgrind)"
    IR="$(awk '/^summary:/ {print $2}' "$OUT")"
    echo "gateway instructions per request: $((IR / CALLGRIND)) ($IR over $CALLGRIND requests)"
    python3 "$ROOT/scripts/code-footprint.py" "$OUT" "$CALLGRIND" --label stilts --crates 12
    [ -n "${CALLGRIND_OUT:-}" ] && cp "$OUT" "$CALLGRIND_OUT"
    callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null | sed -n '1,60p' >"${CALLGRIND_REPORT:-/dev/null}" || true
    if [ "$NGINX" = 1 ]; then
        echo "== callgrind, nginx (reference): the same requests"
        python3 "$ROOT/scripts/code-footprint.py" "$(counted nginx "$NGINX_PID" "$NGINX_PORT" nginx-callgrind)" \
            "$CALLGRIND" --label nginx
    fi
    exit 0
fi

echo "== warm-up (3 s each)"
DURATION=3s run warm-direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
DURATION=3s run warm-gw "http://127.0.0.1:$GW_PORT/v1/chat/completions"
echo "== direct: $RATE req/s for $DURATION"
run direct "http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
MOCK_PID="${PIDS[0]}"
cpu_ns() { # pid: nanoseconds its live threads have run (the scheduler's count: precise at low
    # rates, where clock ticks of 10 ms would round a request's work away; a thread that exits
    # during the window takes its time with it, so the figure is a floor)
    awk '{ns += $1} END {printf "%.0f\n", ns}' /proc/"$1"/task/*/schedstat 2>/dev/null || echo 0
}
echo "== through stilts: $RATE req/s for $DURATION"
GW_T0="$(cpu_ns "$GW_PID")"; MOCK_T0="$(cpu_ns "$MOCK_PID")"
run through "http://127.0.0.1:$GW_PORT/v1/chat/completions"
GW_NS=$(( $(cpu_ns "$GW_PID") - GW_T0 )); MOCK_NS=$(( $(cpu_ns "$MOCK_PID") - MOCK_T0 ))
NGINX_NS=0
if [ "$NGINX" = 1 ]; then
    NGINX_WORKER="$(pgrep -P "$NGINX_PID" | head -1 || true)"
    [ -n "$NGINX_WORKER" ] || { echo "nginx started no worker process"; cat "$WORK/nginx.log"; exit 1; }
    echo "== through nginx (reference): $RATE req/s for $DURATION"
    DURATION=3s run warm-nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    NGINX_T0="$(cpu_ns "$NGINX_WORKER")"
    run nginx "http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
    NGINX_NS=$(( $(cpu_ns "$NGINX_WORKER") - NGINX_T0 ))
fi
CLUSTER_NS=0
if [ "$CLUSTER" = 1 ]; then
    echo "== through stilts with [cluster] (Redis on loopback, one idle sibling): $RATE req/s for $DURATION"
    DURATION=3s run warm-cluster "http://127.0.0.1:$CLUSTER_PORT/v1/chat/completions"
    curl -s "http://127.0.0.1:$CLUSTER_PORT/metrics" | grep -q '^stilts_cluster_replicas 2$' \
        || { echo "the [cluster] gateway does not see its sibling"; curl -s "http://127.0.0.1:$CLUSTER_PORT/metrics" | grep cluster; exit 1; }
    CLUSTER_T0="$(cpu_ns "$CLUSTER_PID")"
    run cluster "http://127.0.0.1:$CLUSTER_PORT/v1/chat/completions"
    CLUSTER_NS=$(( $(cpu_ns "$CLUSTER_PID") - CLUSTER_T0 ))
fi
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
SAT_NS=0
SAT_SECONDS=10
if [ "$SATURATE" = 1 ]; then
    echo "== full speed: closed loop, 32 connections, ${SAT_SECONDS} s"
    SAT_T0="$(cpu_ns "$GW_PID")"
    ${ON_REST[@]+"${ON_REST[@]}"} oha --no-tui --output-format json -z "${SAT_SECONDS}s" -c 32 \
        -m POST -H 'content-type: application/json' -d "$BODY" \
        "http://127.0.0.1:$GW_PORT/v1/chat/completions" >"$WORK/saturate.json"
    SAT_NS=$(( $(cpu_ns "$GW_PID") - SAT_T0 ))
fi

HWM_KB="$(awk '/VmHWM/ {print $2}' "/proc/$GW_PID/status")"
RSS_KB="$(awk '/VmRSS/ {print $2}' "/proc/$GW_PID/status")"
curl -s "http://127.0.0.1:$GW_PORT/metrics" >"$WORK/metrics.txt"

python3 - "$WORK" "$RATE" "$DURATION" "$CONNS" "$HWM_KB" "$RSS_KB" "$DOC" "$GW_NS" "$MOCK_NS" "$LOAD" "$PLACEMENT" "$NGINX" "$NGINX_NS" "$SATURATE" "$SAT_NS" "$SAT_SECONDS" "$GW_SCOPE" "$CLUSTER" "$CLUSTER_NS" <<'PY'
import json, sys, re, platform, subprocess, datetime
work, rate, duration, conns, hwm_kb, rss_kb, doc, gw_ns, mock_ns, loadavg = sys.argv[1:11]
placement, nginx, nginx_ns, saturate, sat_ns, sat_seconds, gw_scope = sys.argv[11:18]
cluster, cluster_ns = sys.argv[18:20]
def load(name):
    j = json.load(open(f"{work}/{name}.json"))
    p = j["latencyPercentiles"]
    codes = j.get("statusCodeDistribution", {})
    return {"p50": p["p50"] * 1e6, "p90": p["p90"] * 1e6, "p99": p["p99"] * 1e6,
            "rps": j["summary"]["requestsPerSec"], "ok": j["summary"]["successRate"], "codes": codes,
            "count": max(sum(int(v) for v in codes.values()), 1)}
d, t = load("direct"), load("through")
m = open(f"{work}/metrics.txt").read()
def metric(name):
    r = re.search(rf'^{name}{{route="bench"}} ([0-9.e+-]+)$', m, re.M)
    return float(r.group(1)) if r else float("nan")
ov_mean_us = metric("stilts_gateway_overhead_seconds_sum") / max(metric("stilts_gateway_overhead_seconds_count"), 1) * 1e6
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    f"| | p50 | p90 | p99 | achieved req/s | success |",
    f"|---|---|---|---|---|---|",
    f"| mock upstream, direct | {d['p50']:.0f} µs | {d['p90']:.0f} µs | {d['p99']:.0f} µs | {d['rps']:.0f} | {d['ok']*100:.2f} % |",
    f"| through stilts | {t['p50']:.0f} µs | {t['p90']:.0f} µs | {t['p99']:.0f} µs | {t['rps']:.0f} | {t['ok']*100:.2f} % |",
    f"| **added by stilts** | **{t['p50']-d['p50']:.0f} µs** | {t['p90']-d['p90']:.0f} µs | **{t['p99']-d['p99']:.0f} µs** | | |",
]
if cluster == "1":
    c = load("cluster")
    lines += [
        f"| through stilts with [cluster] | {c['p50']:.0f} µs | {c['p90']:.0f} µs | {c['p99']:.0f} µs | {c['rps']:.0f} | {c['ok']*100:.2f} % |",
        f"| added by stilts with [cluster] | {c['p50']-d['p50']:.0f} µs | {c['p90']-d['p90']:.0f} µs | {c['p99']-d['p99']:.0f} µs | | |",
    ]
if nginx == "1":
    n = load("nginx")
    lines += [
        f"| through nginx (reference) | {n['p50']:.0f} µs | {n['p90']:.0f} µs | {n['p99']:.0f} µs | {n['rps']:.0f} | {n['ok']*100:.2f} % |",
        f"| added by nginx | {n['p50']-d['p50']:.0f} µs | {n['p90']-d['p90']:.0f} µs | {n['p99']-d['p99']:.0f} µs | | |",
    ]
lines += [
    "",
    f"- placement: {placement}",
    f"- stilts' own overhead histogram (`stilts_gateway_overhead_seconds`, time in stilts excluding the upstream wait): mean {ov_mean_us:.1f} µs",
    f"- gateway peak RSS (VmHWM): {int(hwm_kb)/1024:.1f} MiB (RSS at the end: {int(rss_kb)/1024:.1f} MiB)",
    f"- CPU per request (time on a core, from /proc/PID/task/*/schedstat): gateway {int(gw_ns) / 1e3 / t['count']:.0f} µs, fake upstream {int(mock_ns) / 1e3 / t['count']:.0f} µs",
    f"- status codes through stilts: {t['codes']}",
]
if cluster == "1":
    plain_us = int(gw_ns) / 1e3 / t['count']
    cluster_us = int(cluster_ns) / 1e3 / c['count']
    lines.append(f"- with [cluster] (loopback redis-server, sync_ms 100, one idle sibling; same placement and load): gateway CPU per request "
                 f"{cluster_us:.0f} µs against {plain_us:.0f} µs without ({(cluster_us / max(plain_us, 1e-9) - 1) * 100:+.0f}%), "
                 f"status codes {c['codes']}")
if nginx == "1":
    lines.append(f"- nginx worker CPU per request (time on a core): {int(nginx_ns) / 1e3 / n['count']:.0f} µs")
if saturate == "1":
    s = load("saturate")
    busy = int(sat_ns) / 1e9 / float(sat_seconds)
    lines.append(f"- full speed (closed loop, 32 connections, {sat_seconds} s, gateway {gw_scope}): **{s['rps']:.0f} req/s** through stilts, "
                 f"gateway CPU {busy:.2f} cores ({int(sat_ns) / 1e3 / s['count']:.0f} µs per request), "
                 f"p50 {s['p50']:.0f} µs, status codes {s['codes']}")
lines += [
    f"- load average at the end of the run: {loadavg}",
]
print("\n".join(lines))
if doc:
    # Only the block between the results markers is generated; the rest of the page is kept.
    import os
    block = "<!-- results:begin -->\n" + "\n".join(lines) + "\n<!-- results:end -->"
    text = open(doc).read() if os.path.exists(doc) else ""
    begin, end = text.find("<!-- results:begin -->"), text.find("<!-- results:end -->")
    if begin < 0 or end < begin:
        sys.exit(f"{doc} has no results markers; add <!-- results:begin --> and <!-- results:end -->")
    stamp = f"{cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average at the end {loadavg}"
    print(f"machine: {stamp}")
    text = text[:begin] + block + text[end + len("<!-- results:end -->"):]
    open(doc, "w").write(text)
    print(f"wrote {doc} (results block only; update the machine line and the hand-written sections)")
PY
