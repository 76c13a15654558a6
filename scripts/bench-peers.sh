#!/usr/bin/env bash
# Peers side by side, in one run, against the same loopback fake upstream (`stilts mock-upstream`):
# the upstream called directly (the baseline), nginx as a plain reverse proxy (the floor of one
# proxy hop), stilts, LiteLLM's proxy and Portkey's gateway. Each proxy is started alone, pinned
# alone to the same core, given the same load, measured and stopped before the next one starts.
#
# For each: the latency it adds to sequential requests (one connection, back to back) and to the
# first event of sequential streams, p50 and p99, against the upstream measured directly just
# before it; fixed-rate steps (oha, open loop, latency correction) from RATES upwards until the
# first step it does not sustain, then REFINE bisection steps between the last sustained and the
# first failed rate; the highest rate sustained (on one core); the CPU time per request of its
# whole process tree (user + system, from /proc) at that rate; its peak RSS (the sum of VmHWM over
# its process tree). A step is sustained when the achieved rate of 200 answers is at least 95 % of
# the target, at least 99.9 % of the requests succeed (200) and the latency-corrected p99 is at
# most P99_BOUND_MS above the target's own sequential p99 (at most that much queueing). Prints a
# markdown report, with the targets checked (met / not met) from the numbers of the same run.
#
# Placement: with 2 or more cores the proxy under test runs alone on the last core this script may
# use (`taskset`), and the load generator, the stream client and the fake upstream share the
# others. PIN=0 leaves placement to the scheduler.
#
# Peers are installed on first use, pinned, into $CACHE (default target/bench-peers): LiteLLM
# (`litellm[proxy]`) into a Python venv, Portkey's gateway (`@portkey-ai/gateway`) with npm into
# a local folder, nginx with apt-get (Debian's nginx-light) when run as root. A peer that fails to
# install or start is reported as such and the others are still measured. INSTALL=0 installs
# nothing. Everything listens on 127.0.0.1 only, and everything started here is stopped at exit.
#
#   scripts/bench-peers.sh                               # all peers, about 6-8 minutes
#   PEERS="nginx stilts" scripts/bench-peers.sh          # a subset (the baseline always runs)
#   STEP_S=3 RATES="100 1000 4000 16000" REFINE=1 scripts/bench-peers.sh   # quicker, coarser
#   LATENCY_MS=20 FIRST_TOKEN_MS=200 scripts/bench-peers.sh   # an upstream that takes its time
#   STILTS_BIN=/path/to/stilts PLUGIN_DIR=/path/to/plugins scripts/bench-peers.sh   # no build
#   DOC=docs/benchmarks.md scripts/bench-peers.sh        # also write the report into that file,
#                                                        # between its bench-peers markers
#   STRICT=1 scripts/bench-peers.sh                      # exit 1 when a peer in PEERS could not
#                                                        # be measured (CI's smoke run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
CACHE="${CACHE:-$TARGET/bench-peers}"
PEERS="${PEERS:-nginx stilts litellm portkey}"
# Pinned peer versions. LiteLLM: the newest whose `proxy` extra resolves from the package index
# (1.108.8 and later pin litellm-enterprise / litellm-proxy-extras releases it does not have).
LITELLM_VERSION="${LITELLM_VERSION:-1.108.7}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
# Portkey's gateway declares @hono/node-server ^1.3.3; from 1.14.2 on, that server's Response
# wrapper keeps the upstream response's immutable headers and every stream through Portkey fails
# with "TypeError: immutable" (Portkey-AI/gateway issues 1389 and 1550). 1.14.1 is the newest
# that works, so it is pinned as an npm override.
HONO_NODE_SERVER_VERSION="${HONO_NODE_SERVER_VERSION:-1.14.1}"
RATES="${RATES:-10 20 50 100 200 500 1000 2000 4000 8000 16000}"
STEP_S="${STEP_S:-5}"
REFINE="${REFINE:-2}"
CONNS="${CONNS:-64}"
P99_BOUND_MS="${P99_BOUND_MS:-50}"
SEQ_REQUESTS="${SEQ_REQUESTS:-2000}"
SEQ_MAX_S="${SEQ_MAX_S:-15}"
STREAMS="${STREAMS:-300}"
STREAM_MAX_S="${STREAM_MAX_S:-20}"
LATENCY_MS="${LATENCY_MS:-0}"
FIRST_TOKEN_MS="${FIRST_TOKEN_MS:-0}"
CHUNK_INTERVAL_MS="${CHUNK_INTERVAL_MS:-0}"
START_TIMEOUT_S="${START_TIMEOUT_S:-120}"
PORT_BASE="${PORT_BASE:-19120}"
INSTALL="${INSTALL:-1}"
DOC="${DOC:-}"
MOCK_PORT="$PORT_BASE"
declare -A PORT=([nginx]=$((PORT_BASE + 1)) [stilts]=$((PORT_BASE + 2)) [litellm]=$((PORT_BASE + 3)) [portkey]=$((PORT_BASE + 4)))
declare -A FAIL=()
declare -A VERSION=()
# Every peer talks to loopback only: no proxy from the environment may take the traffic elsewhere.
unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

for peer in $PEERS; do
    case "$peer" in
        nginx|stilts|litellm|portkey) ;;
        *) echo "unknown peer '$peer' in PEERS (known: nginx stilts litellm portkey)"; exit 1 ;;
    esac
done

WORK="$(mktemp -d)"
mkdir -p "$WORK/res" "$CACHE"
. "$ROOT/scripts/placement.sh"
. "$ROOT/scripts/bench-configs.sh"
if [ "$PINNED" = 1 ]; then
    PLACEMENT="each proxy alone on core $GW_CPUS; load generator, stream client and fake upstream on cores $REST_CPUS"
else
    PLACEMENT="not pinned (the scheduler places everything)"
fi
PIDS=()

tree_pids() { # pid: the pid and all its descendants
    local child
    echo "$1"
    for child in $(pgrep -P "$1" || true); do tree_pids "$child"; done
}
tree_ticks() { # pid: user + system ticks of the tree, reaped children included
    local total=0 pid ticks
    for pid in $(tree_pids "$1"); do
        ticks="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}' || true)"
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}
tree_hwm_kb() { # pid: the sum of the peak resident sets (VmHWM) over the tree
    local total=0 pid kb
    for pid in $(tree_pids "$1"); do
        kb="$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
stop_tree() { # pid: TERM the whole tree, KILL what is left after 10 s
    local pids pid
    pids="$(tree_pids "$1" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for pid in $pids; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null && stop_tree "$pid"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fail() { # peer reason (paths shown relative to the repository; the scratch folder as <tmp>)
    local reason="${2//$ROOT\//}"
    FAIL[$1]="${reason//$WORK/<tmp>}"
    echo "!! $1: ${FAIL[$1]} (reported, the other peers go on)"
}
selected() { [[ " $PEERS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- tools, stilts, peer installs
if ! command -v oha >/dev/null; then
    echo "== installing oha (cargo install --locked oha)"
    cargo install --locked oha
fi
if [ -n "${STILTS_BIN:-}" ]; then
    BIN="$STILTS_BIN"
else
    echo "== building stilts and the openai plugin (release)"
    (cd "$ROOT" && cargo build --locked --release -q -p stilts-cli -p stilts-plugin-openai)
    BIN="$TARGET/release/stilts"
fi
[ -n "${PLUGIN_DIR:-}" ] && export STILTS_PLUGIN_DIR="$PLUGIN_DIR"
STILTS_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- crates 2>/dev/null || STILTS_REV="$STILTS_REV+changes"
if [ -n "${STILTS_BIN:-}" ]; then
    VERSION[stilts]="$("$BIN" --version | awk '{print $2}'), a prebuilt binary (STILTS_BIN; the repository is at $STILTS_REV)"
else
    VERSION[stilts]="$("$BIN" --version | awk '{print $2}'), built from commit $STILTS_REV"
fi

if selected nginx; then
    if ! command -v nginx >/dev/null && [ "$INSTALL" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing nginx-light (apt-get)"
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light; }; } >"$WORK/apt.log" 2>&1 \
            || tail -5 "$WORK/apt.log"
    fi
    if command -v nginx >/dev/null; then
        VERSION[nginx]="$(nginx -v 2>&1 | sed 's#.*nginx/##')"
    else
        fail nginx "not installed (Debian: apt-get install nginx-light)"
    fi
fi

LITELLM_VENV="$CACHE/litellm-venv"
litellm_version() { "$LITELLM_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true; }
if selected litellm; then
    if [ "$(litellm_version)" != "$LITELLM_VERSION" ] && [ "$INSTALL" = 1 ]; then
        echo "== installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV (a few minutes, once)"
        { python3 -m venv "$LITELLM_VENV" && timeout 1200 "$LITELLM_VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; } \
            >"$WORK/pip.log" 2>&1 || tail -5 "$WORK/pip.log"
    fi
    if [ "$(litellm_version)" = "$LITELLM_VERSION" ]; then
        VERSION[litellm]="$LITELLM_VERSION (Python $("$LITELLM_VENV/bin/python" -c 'import platform; print(platform.python_version())'), uvicorn, 1 worker)"
    else
        fail litellm "litellm[proxy]==$LITELLM_VERSION is not installed in $LITELLM_VENV (pip failed, or INSTALL=0)"
    fi
fi

PORTKEY_DIR="$CACHE/portkey"
PORTKEY_PKG="$PORTKEY_DIR/node_modules/@portkey-ai/gateway"
json_version() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$1" 2>/dev/null || true; }
if selected portkey; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        fail portkey "needs node and npm (Debian: apt-get install nodejs npm)"
    else
        if { [ "$(json_version "$PORTKEY_PKG/package.json")" != "$PORTKEY_VERSION" ] \
            || [ "$(json_version "$PORTKEY_DIR/node_modules/@hono/node-server/package.json")" != "$HONO_NODE_SERVER_VERSION" ]; } \
            && [ "$INSTALL" = 1 ]; then
            echo "== installing @portkey-ai/gateway@$PORTKEY_VERSION into $PORTKEY_DIR"
            mkdir -p "$PORTKEY_DIR"
            rm -rf "$PORTKEY_DIR/node_modules" "$PORTKEY_DIR/package-lock.json"
            printf '{"private": true, "dependencies": {"@portkey-ai/gateway": "%s"}, "overrides": {"@hono/node-server": "%s"}}\n' \
                "$PORTKEY_VERSION" "$HONO_NODE_SERVER_VERSION" >"$PORTKEY_DIR/package.json"
            # --ignore-scripts: the package's only install script is patch-package, with no patches shipped.
            timeout 900 npm install --prefix "$PORTKEY_DIR" --no-audit --no-fund --ignore-scripts >"$WORK/npm.log" 2>&1 \
                || tail -5 "$WORK/npm.log"
        fi
        if [ "$(json_version "$PORTKEY_PKG/package.json")" = "$PORTKEY_VERSION" ]; then
            VERSION[portkey]="$PORTKEY_VERSION (Node $(node --version | tr -d v), @hono/node-server $(json_version "$PORTKEY_DIR/node_modules/@hono/node-server/package.json"))"
        else
            fail portkey "@portkey-ai/gateway@$PORTKEY_VERSION is not installed in $PORTKEY_DIR (npm failed, or INSTALL=0)"
        fi
    fi
fi

# ---------------------------------------------------------------- helpers run during the bench
KEY="sk-bench-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
BODY='{"model":"bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hi in five words."}],"max_tokens":16}'

# Streams: sequential, one keep-alive connection; the time from sending the request to the first
# `data:` line of the answer, and to its end. A stream counts only if it is a 200 that ends with
# `data: [DONE]`.
cat >"$WORK/ttft.py" <<'PY'
import http.client, json, sys, time
port, n, headers, out, max_s = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4], float(sys.argv[5])
headers = {"content-type": "application/json", **headers}
body = json.dumps({"model": "bench", "stream": True, "max_tokens": 16,
                   "messages": [{"role": "system", "content": "You are terse."},
                                {"role": "user", "content": "Say hi in five words."}]})
conn, ttft, total, errors = None, [], [], 0
deadline = time.monotonic() + max_s
for _ in range(n):
    if time.monotonic() > deadline:
        break
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, headers)
        r = conn.getresponse()
        first, done = None, False
        while True:
            line = r.readline()
            if not line:
                break
            if first is None and line.startswith(b"data:"):
                first = time.perf_counter() - t0
            if line.startswith(b"data: [DONE]"):
                done = True
        r.read()
        if r.status != 200 or first is None or not done:
            errors += 1
            conn.close()
            conn = None
            continue
        ttft.append(first)
        total.append(time.perf_counter() - t0)
        if (r.getheader("connection") or "").lower() == "close":
            conn.close()
            conn = None
    except Exception:
        errors += 1
        if conn is not None:
            conn.close()
        conn = None
json.dump({"ttft": ttft, "total": total, "errors": errors}, open(out, "w"))
PY

# One fixed-rate step from oha's JSON: prints "sustained achieved_rate success_percent p99_ms".
cat >"$WORK/step.py" <<'PY'
import json, sys
path, rate, bound_ms = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
j = json.load(open(path))
codes = {k: int(v) for k, v in j.get("statusCodeDistribution", {}).items()}
# Requests still in flight when the step's time is up are cut by oha; they are neither answers nor failures.
errors = sum(int(v) for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
ok = codes.get("200", 0)
total = sum(codes.values()) + errors
achieved = ok / max(j["summary"]["total"], 1e-9)
success = ok / total if total else 0.0
p99_ms = (j["latencyPercentiles"].get("p99") or float("inf")) * 1e3
sustained = achieved >= 0.95 * rate and success >= 0.999 and p99_ms <= bound_ms
print(int(sustained), f"{achieved:.0f}", f"{success * 100:.2f}", f"{p99_ms:.1f}")
PY

# Node preload for Portkey, whose server takes only a port and would listen on every interface:
# a listen() given a port and no host gets 127.0.0.1.
cat >"$WORK/loopback.cjs" <<'JS'
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && typeof args[1] !== 'string') {
    if (args[1] === undefined) args[1] = '127.0.0.1'; else args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
JS

HDR=()
set_headers() { # peer: the request headers every load generator sends to it
    HDR=("content-type: application/json" "authorization: Bearer $KEY")
    if [ "$1" = portkey ]; then
        HDR+=("x-portkey-provider: openai" "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1")
    fi
}
oha_headers() { local h; for h in "${HDR[@]}"; do printf '%s\0%s\0' -H "$h"; done; }
json_headers() {
    local h
    for h in "${HDR[@]}"; do [ "${h%%:*}" = content-type ] || printf '%s\n' "$h"; done \
        | python3 -c 'import json, sys; print(json.dumps(dict(l.rstrip("\n").split(": ", 1) for l in sys.stdin)))'
}
oha_run() { # out-file, then oha's load arguments; the request, headers and url come from the caller's
    local out=$1
    shift
    local -a hargs
    mapfile -d '' hargs < <(oha_headers)
    ${ON_REST[@]+"${ON_REST[@]}"} timeout $((STEP_S + SEQ_MAX_S + 120)) oha --no-tui --output-format json -t 10s "$@" \
        -m POST "${hargs[@]}" -d "$BODY" "$URL" >"$out"
}
settle() { # pid: wait (at most 20 s) until the tree is idle, so a backlog does not spill into the next step
    local prev now
    [ -n "$1" ] || { sleep 0.5; return; }
    prev="$(tree_ticks "$1")"
    for _ in $(seq 40); do
        sleep 0.5
        now="$(tree_ticks "$1")"
        [ $((now - prev)) -le 5 ] && return
        prev="$now"
    done
}
midpoint() { # low high: the geometric middle, two significant digits, 0 if none strictly between
    python3 -c 'import math, sys
a, b = int(sys.argv[1]), int(sys.argv[2])
m = math.sqrt(a * b)
e = 10 ** max(0, int(math.log10(m)) - 1)
r = int(round(m / e) * e)
print(r if a < r < b else 0)' "$1" "$2"
}
BOUND_MS=$P99_BOUND_MS

step() { # name pid rate: one fixed-rate step; returns 0 if sustained
    local name=$1 pid=$2 rate=$3 dir="$WORK/res/$1" t0=0 verdict ok achieved success p99
    settle "$pid"
    [ -n "$pid" ] && t0="$(tree_ticks "$pid")"
    oha_run "$dir/step-$rate.json" -z "${STEP_S}s" -q "$rate" -c "$CONNS" --latency-correction || true
    [ -n "$pid" ] && echo $(($(tree_ticks "$pid") - t0)) >"$dir/step-$rate.ticks"
    verdict="$(python3 "$WORK/step.py" "$dir/step-$rate.json" "$rate" "$BOUND_MS" 2>/dev/null || echo "0 0 0 inf")"
    echo "$rate" >>"$dir/rates"
    read -r ok achieved success p99 <<<"$verdict"
    printf '   %6s req/s: achieved %s/s, %s %% ok, p99 %s ms: %s\n' "$rate" "$achieved" "$success" "$p99" \
        "$([ "$ok" = 1 ] && echo sustained || echo 'not sustained')"
    [ "$ok" = 1 ]
}
steps() { # name pid rates...: up to the first step not sustained, then REFINE bisection steps
    local name=$1 pid=$2 last_ok=0 first_fail=0 rate mid
    shift 2
    for rate in "$@"; do
        if step "$name" "$pid" "$rate"; then last_ok=$rate; else first_fail=$rate; break; fi
    done
    if [ "$last_ok" = 0 ]; then # not even the first rate: halve it until a step is sustained
        for _ in $(seq $((REFINE + 1))); do
            rate=$((first_fail / 2))
            [ "$rate" -ge 1 ] || break
            if step "$name" "$pid" "$rate"; then last_ok=$rate; break; else first_fail=$rate; fi
        done
    fi
    for _ in $(seq "$REFINE"); do
        { [ "$first_fail" -gt 0 ] && [ "$last_ok" -gt 0 ]; } || break
        mid="$(midpoint "$last_ok" "$first_fail")"
        [ "$mid" -gt 0 ] || break
        if step "$name" "$pid" "$mid"; then last_ok=$mid; else first_fail=$mid; fi
    done
    echo "$last_ok $first_fail" >"$WORK/res/$name/sustained"
}
streams() { # port out-file
    ${ON_REST[@]+"${ON_REST[@]}"} timeout $((STREAM_MAX_S + 60)) python3 "$WORK/ttft.py" "$1" "$STREAMS" "$(json_headers)" \
        "$2" "$STREAM_MAX_S" || true
}
baseline() { # name: the direct sequential requests and streams again, just before this proxy's own,
    # so that its "added" compares two measurements a few seconds apart
    local dir="$WORK/res/$1"
    mkdir -p "$dir"
    URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    set_headers direct
    echo "== direct again, just before $1: sequential requests and streams"
    oha_run "$dir/base-seq.json" -n "$(cat "$WORK/res/direct/seq_n")" -c 1 || true
    streams "$MOCK_PORT" "$dir/base-stream.json"
}
fill_direct() { # name: the baseline at the rates only this proxy's bisection ran, so they have an "added" too
    local rates rate
    rates="$(grep -vxF -f "$WORK/res/direct/rates" "$WORK/res/$1/rates" | sort -n | tr '\n' ' ' || true)"
    [ -n "$rates" ] || return 0
    echo "== direct at the rates $1's bisection added: $rates"
    URL="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
    set_headers direct
    BOUND_MS="$(cat "$WORK/res/direct/bound_ms")"
    for rate in $rates; do step direct "" "$rate" || true; done
}
measure() { # name port pid rates...
    local name=$1 port=$2 pid=$3 n
    shift 3
    local dir="$WORK/res/$name"
    mkdir -p "$dir"
    URL="http://127.0.0.1:$port/v1/chat/completions"
    set_headers "$name"
    oha_run "$dir/probe.json" -n 50 -c 1 || true
    n="$(python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
per = max(j["summary"]["average"] or 1e-3, 1e-5)
print(max(100, min(int(sys.argv[2]), int(float(sys.argv[3]) / per))))' "$dir/probe.json" "$SEQ_REQUESTS" "$SEQ_MAX_S" 2>/dev/null || echo 100)"
    echo "== $name: $n sequential requests, one connection"
    oha_run "$dir/seq.json" -n "$n" -c 1 || true
    echo "$n" >"$dir/seq_n"
    # The steps' p99 bound: P99_BOUND_MS of queueing over this target's own unloaded p99.
    BOUND_MS="$(python3 -c 'import json, math, sys
print(math.ceil(float(sys.argv[2]) + json.load(open(sys.argv[1]))["latencyPercentiles"]["p99"] * 1e3))' \
        "$dir/seq.json" "$P99_BOUND_MS" 2>/dev/null || echo "$P99_BOUND_MS")"
    echo "$BOUND_MS" >"$dir/bound_ms"
    echo "== $name: $STREAMS sequential streams (at most ${STREAM_MAX_S} s)"
    streams "$port" "$dir/stream.json"
    echo "== $name: fixed-rate steps of ${STEP_S} s, $CONNS connections"
    steps "$name" "$pid" "$@"
    [ -n "$pid" ] && tree_hwm_kb "$pid" >"$dir/hwm_kb"
    return 0
}
wait_ready() { # name port pid log: until a request answers 200; fails if the process dies or time is up
    local name=$1 port=$2 pid=$3 log=$4
    local -a hargs
    set_headers "$name"
    mapfile -d '' hargs < <(oha_headers)
    local deadline=$((SECONDS + START_TIMEOUT_S))
    while [ "$SECONDS" -lt "$deadline" ]; do
        kill -0 "$pid" 2>/dev/null || { fail "$name" "exited at start: $(tail -3 "$log" | tr -d '\r' | tr '\n' ' ' | cut -c1-300)"; return 1; }
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${hargs[@]}" -d "$BODY" \
            "http://127.0.0.1:$port/v1/chat/completions" 2>/dev/null)" = 200 ]; then
            return 0
        fi
        sleep 0.25
    done
    fail "$name" "no 200 answer within ${START_TIMEOUT_S} s: $(tail -3 "$log" | tr -d '\r' | tr '\n' ' ' | cut -c1-300)"
    return 1
}

start_peer() { # name: starts it pinned and prints nothing; sets PEER_PID
    local name=$1 port=${PORT[$1]} log="$WORK/$1.log"
    PEER_PID=""
    port_free "$port" || { fail "$name" "port $port is already in use (set PORT_BASE)"; return 1; }
    case "$name" in
        nginx)
            write_nginx_conf "$WORK/nginx" "$port" "$MOCK_PORT"
            ${ON_GW[@]+"${ON_GW[@]}"} nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$log" 2>&1 &
            ;;
        stilts)
            write_stilts_conf "$WORK/stilts.toml" "$port" "$MOCK_PORT"
            RUST_LOG=warn ${ON_GW[@]+"${ON_GW[@]}"} "$BIN" serve --config "$WORK/stilts.toml" >"$log" 2>&1 &
            ;;
        litellm)
            # No database, no callbacks, no telemetry, errors only in the log, the model price map
            # read from the package (not fetched): nothing per request but the proxying itself.
            cat >"$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:$MOCK_PORT/v1
      api_key: sk-bench-upstream
litellm_settings:
  telemetry: false
  callbacks: []
  success_callback: []
  failure_callback: []
  turn_off_message_logging: true
  request_timeout: 30
general_settings:
  master_key: $KEY
  disable_spend_logs: true
  disable_error_logs: true
YAML
            LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOCAL_BLOG_POSTS=True LITELLM_LOG=ERROR DISABLE_ADMIN_UI=True \
                ${ON_GW[@]+"${ON_GW[@]}"} "$LITELLM_VENV/bin/litellm" --config "$WORK/litellm.yaml" \
                --host 127.0.0.1 --port "$port" --num_workers 1 >"$log" 2>&1 &
            ;;
        portkey)
            # --headless and NODE_ENV=production: no console, no log streaming.
            NODE_ENV=production ${ON_GW[@]+"${ON_GW[@]}"} node -r "$WORK/loopback.cjs" "$PORTKEY_PKG/build/start-server.js" \
                --port="$port" --headless >"$log" 2>&1 &
            ;;
    esac
    PEER_PID=$!
    PIDS+=("$PEER_PID")
    wait_ready "$name" "$port" "$PEER_PID" "$log" || { stop_tree "$PEER_PID"; return 1; }
}

# ---------------------------------------------------------------- the run
port_free "$MOCK_PORT" || { echo "port $MOCK_PORT is already in use (set PORT_BASE)"; exit 1; }
${ON_REST[@]+"${ON_REST[@]}"} "$BIN" mock-upstream --listen "127.0.0.1:$MOCK_PORT" --name bench --latency-ms "$LATENCY_MS" \
    --first-token-ms "$FIRST_TOKEN_MS" --chunk-interval-ms "$CHUNK_INTERVAL_MS" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
set_headers direct
for _ in $(seq 100); do
    curl -sf -o /dev/null -H 'content-type: application/json' -d "$BODY" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" && break
    sleep 0.1
done
START="$(date -u '+%Y-%m-%d %H:%M UTC')"
T_START=$SECONDS

echo "== direct (the baseline): the fake upstream itself"
# shellcheck disable=SC2086
measure direct "$MOCK_PORT" "" $RATES
read -r CAP _ <"$WORK/res/direct/sustained"
# The proxies are stepped up to the highest rate the load generator sustained directly: above it, a
# failed step would measure this machine's load generator, not the proxy.
PROXY_RATES=""
for rate in $RATES; do [ "$rate" -lt "$CAP" ] && PROXY_RATES="$PROXY_RATES $rate"; done
[ "$CAP" -gt 0 ] && PROXY_RATES="$PROXY_RATES $CAP"

for peer in nginx stilts litellm portkey; do
    selected "$peer" || continue
    [ -z "${FAIL[$peer]:-}" ] || continue
    echo "== $peer: starting on the proxy core"
    start_peer "$peer" || continue
    baseline "$peer"
    # shellcheck disable=SC2086
    measure "$peer" "${PORT[$peer]}" "$PEER_PID" $PROXY_RATES
    stop_tree "$PEER_PID"
    fill_direct "$peer"
done
LOAD="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== done in $((SECONDS - T_START)) s"

for peer in $PEERS; do
    [ -n "${FAIL[$peer]:-}" ] && echo "${FAIL[$peer]}" >"$WORK/res/$peer.fail"
    echo "${VERSION[$peer]:-}" >"$WORK/res/$peer.version"
done
echo "${VERSION[stilts]}" >"$WORK/res/stilts.version"

python3 - "$WORK/res" "$PEERS" "$DOC" "$START" "$LOAD" "$PLACEMENT" "$CORES" "$(getconf CLK_TCK)" \
    "$STEP_S" "$CONNS" "$P99_BOUND_MS" "$LATENCY_MS" "$FIRST_TOKEN_MS" "$CHUNK_INTERVAL_MS" "$(oha --version | awk '{print $2}')" "$CAP" \
    "$SEQ_REQUESTS" "$SEQ_MAX_S" <<'PY'
import json, os, sys
res, peers, doc, start, loadavg, placement, cores, hz = sys.argv[1:9]
step_s, conns, p99_bound, latency_ms, first_token_ms, chunk_ms, oha_version, cap = sys.argv[9:17]
peers, hz, cap = peers.split(), int(hz), int(cap)
NAMES = {"direct": "fake upstream, direct", "nginx": "nginx", "stilts": "stilts", "litellm": "LiteLLM", "portkey": "Portkey"}

def read(path, default=None):
    try:
        return open(path).read().strip()
    except OSError:
        return default

def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(q * len(v) + 0.5)) - 1))]

def load(name):
    d = f"{res}/{name}"
    r = {"fail": read(f"{res}/{name}.fail"), "version": read(f"{res}/{name}.version", "")}
    if not os.path.isdir(d):
        return r
    for key, file in (("seq", "seq"), ("base_seq", "base-seq")):
        try:
            j = json.load(open(f"{d}/{file}.json"))
            codes = j["statusCodeDistribution"]
            r[key] = {"p50": j["latencyPercentiles"]["p50"] * 1e6, "p99": j["latencyPercentiles"]["p99"] * 1e6,
                      "n": sum(int(v) for v in codes.values()), "ok": int(codes.get("200", 0))}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for key, file in (("stream", "stream"), ("base_stream", "base-stream")):
        try:
            s = json.load(open(f"{d}/{file}.json"))
            r[key] = {"n": len(s["ttft"]), "errors": s["errors"]}
            if s["ttft"]:
                r[key].update(p50=pct(s["ttft"], 0.5) * 1e6, p99=pct(s["ttft"], 0.99) * 1e6)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    r["bound_ms"] = float(read(f"{d}/bound_ms", p99_bound))
    steps = {}
    for rate in (read(f"{d}/rates", "") or "").split():
        rate = int(rate)
        try:
            j = json.load(open(f"{d}/step-{rate}.json"))
        except (OSError, ValueError):
            continue
        codes = {k: int(v) for k, v in j.get("statusCodeDistribution", {}).items()}
        errors = sum(int(v) for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k)
        ok = codes.get("200", 0)
        total = sum(codes.values()) + errors
        lp = j.get("latencyPercentiles", {})
        p50 = (lp.get("p50") or float("inf")) * 1e6
        p99 = (lp.get("p99") or float("inf")) * 1e6
        achieved = ok / max(j["summary"]["total"], 1e-9)
        success = ok / total if total else 0.0
        ticks = read(f"{d}/step-{rate}.ticks")
        steps[rate] = {"achieved": achieved, "success": success, "p50": p50, "p99": p99, "ok": ok,
                       "sustained": achieved >= 0.95 * rate and success >= 0.999 and p99 <= r["bound_ms"] * 1e3,
                       "cpu_us": int(ticks) / hz / ok * 1e6 if ticks is not None and ok else None}
    r["steps"] = steps
    sus = read(f"{d}/sustained")
    if sus:
        last_ok, first_fail = map(int, sus.split())
        r["max"], r["first_fail"] = last_ok, first_fail
    hwm = read(f"{d}/hwm_kb")
    r["hwm_mib"] = int(hwm) / 1024 if hwm else None
    return r

data = {name: load(name) for name in ["direct"] + peers}
D = data["direct"]

def us(v, signed=False):
    if v is None:
        return "—"
    if v == float("inf"):
        return "∞"
    sign = "+" if signed and v >= 0 else ("−" if v < 0 else "")
    a = abs(v)
    if a < 1000:
        return f"{sign}{a:.0f} µs"
    if a < 100_000:
        return f"{sign}{a / 1000:.1f} ms"
    return f"{sign}{a / 1e6:.2f} s"

def added(name, kind, q, rate=None):
    r = data[name]
    if rate is None:  # against the direct run just before this proxy's, else the first one
        a, b = r.get(kind), r.get("base_" + kind) or D.get(kind)
        if not a or not b or q not in a or q not in b:
            return None
        return a[q] - b[q]
    a, b = r.get("steps", {}).get(rate), D.get("steps", {}).get(rate)
    if not a or not b or not b["sustained"]:  # no baseline at a rate the upstream did not sustain directly
        return None
    return a[q] - b[q]

def capped(name):  # sustained every step up to the load generator's own ceiling
    r = data[name]
    return r.get("max", 0) > 0 and r["max"] >= cap and r.get("first_fail", 0) == 0

def max_rate(name):
    r = data[name]
    if "max" not in r:
        return "—"
    if r["max"] == 0:
        low = min(r["steps"]) if r.get("steps") else None
        return f"< {low:,} req/s" if low else "—"
    return ("≥ " if capped(name) else "") + f"{r['max']:,} req/s"

def cpu(name):
    r = data[name]
    if name == "direct" or not r.get("max"):
        return "—"
    s = r["steps"].get(r["max"])
    return f"{us(s['cpu_us'])} (at {r['max']:,}/s)" if s and s.get("cpu_us") is not None else "—"

lines = [
    f"Run of {start}: {cores} cores allowed; {placement}.",
    "",
    "Versions: " + "; ".join(
        [f"stilts {read(res + '/stilts.version', '')}"]
        + [f"{NAMES[p]} {data[p]['version']}" for p in peers if p != "stilts" and data[p].get("version")]
        + [f"oha {oha_version}"]) + ".",
    "",
    f"Load: sequential = one connection, requests back to back; steps = {step_s} s each at a fixed rate, "
    f"{conns} connections, open loop with latency correction, plain chat requests; streams = sequential, "
    f"time to the first `data:` event. Upstream: `stilts mock-upstream`, latency {latency_ms} ms, "
    f"first token {first_token_ms} ms, chunk interval {chunk_ms} ms. "
    f"Sustained: ≥ 95 % of the target rate answered 200, ≥ 99.9 % success, and a p99 at most {float(p99_bound):g} ms "
    f"above the target's own sequential p99 (bounds: "
    + ", ".join(f"{NAMES[n]} {data[n]['bound_ms']:g} ms" for n in ["direct"] + peers if data[n].get("steps")) + ").",
    "",
    "| | sequential: added p50 | added p99 | stream first event: added p50 | added p99 | highest rate sustained, one core | CPU per request | peak RSS (process tree) |",
    "|---|---|---|---|---|---|---|---|",
]
ds, dst = D.get("seq", {}), D.get("stream", {})
lines.append(f"| {NAMES['direct']} (absolute, not added) | {us(ds.get('p50'))} | {us(ds.get('p99'))} | "
             f"{us(dst.get('p50'))} | {us(dst.get('p99'))} | {max_rate('direct')} (load generator's ceiling) | — | — |")
for p in peers:
    r = data[p]
    if r.get("fail") and not r.get("steps"):
        lines.append(f"| {NAMES[p]} | not measured: {r['fail']} | | | | | | |")
        continue
    st = r.get("stream", {})
    stream_note = f" ({st['errors']} of {st['n'] + st['errors']} streams failed)" if st.get("errors") else ""
    s50 = us(added(p, "stream", "p50"), True) if st.get("n") else "all streams failed"
    s99 = us(added(p, "stream", "p99"), True) if st.get("n") else "—"
    rss = f"{r['hwm_mib']:.1f} MiB" if r.get("hwm_mib") else "—"
    lines.append(f"| {NAMES[p]} | {us(added(p, 'seq', 'p50'), True)} | {us(added(p, 'seq', 'p99'), True)} | "
                 f"{s50}{stream_note} | {s99} | {max_rate(p)} | {cpu(p)} | {rss} |")

# Fixed-rate steps: what each proxy adds at each rate (its percentile minus the direct one).
rates = sorted({rate for n in data for rate in data[n].get("steps", {})})
measured = [p for p in peers if data[p].get("steps")]
lines += ["", "Fixed-rate steps: direct p50 / p99, and what each proxy adds to them (✗: not sustained; "
          "then the achieved rate, the success ratio and its own p99).", "",
          "| req/s | direct | " + " | ".join(NAMES[p] for p in measured) + " |",
          "|---|---|" + "---|" * len(measured)]
def cell(name, rate):
    s = data[name].get("steps", {}).get(rate)
    if not s:
        return ""
    if not s["sustained"]:
        return f"✗ {s['achieved']:,.0f}/s, {s['success'] * 100:.1f} %, p99 {us(s['p99'])}"
    if name == "direct":
        return f"{us(s['p50'])} / {us(s['p99'])}"
    a50, a99 = added(name, "steps", "p50", rate), added(name, "steps", "p99", rate)
    if a50 is None:
        return f"{us(s['p50'])} / {us(s['p99'])} (its own: no baseline)"
    return f"{us(a50, True)} / {us(a99, True)}"
for rate in rates:
    lines.append(f"| {rate:,} | {cell('direct', rate)} | " + " | ".join(cell(p, rate) for p in measured) + " |")

# Targets, each decided from this run's numbers.
def have(p):
    return p in data and data[p].get("steps")
targets = []
if have("stilts") and have("nginx"):
    checks, bad = [], []
    loads = [("sequential", None)] + [(f"{r:,} req/s", r) for r in sorted(data["nginx"]["steps"])
                                      if data["nginx"]["steps"][r]["sustained"] and D.get("steps", {}).get(r, {}).get("sustained")]
    for label, rate in loads:
        for q in ("p50", "p99"):
            kind = "seq" if rate is None else "steps"
            n, s = added("nginx", kind, q, rate), added("stilts", kind, q, rate)
            st = data["stilts"]["steps"].get(rate) if rate else True
            if n is None:
                continue
            ok = s is not None and bool(st) and (rate is None or st["sustained"]) and s <= 1.25 * n
            checks.append(ok)
            if not ok:
                bad.append(f"{label} {q}: {us(s, True)} against {us(n, True)}")
    worst = "; ".join(bad[:6]) + (f"; and {len(bad) - 6} more" if len(bad) > 6 else "")
    targets.append(("stilts' added latency ≤ 1.25× nginx's, p50 and p99, sequential and at every rate nginx sustains",
                    f"{sum(checks)} of {len(checks)} comparisons within" + (f"; over: {worst}" if bad else ""),
                    "met" if checks and all(checks) else "not met"))
else:
    targets.append(("stilts' added latency ≤ 1.25× nginx's", "stilts or nginx not measured", "not measured"))

def rate_target(peer, factor):
    label = f"stilts' highest sustained rate per core ≥ {factor}× {NAMES[peer]}'s"
    if not (have("stilts") and have(peer)):
        return (label, f"stilts or {NAMES[peer]} not measured", "not measured")
    s, o = data["stilts"]["max"], data[peer]["max"]
    low = min(data[peer]["steps"])
    if o == 0:  # the peer did not sustain even the lowest step: its rate is below it
        ratio, text = s / low, f"stilts {max_rate('stilts')} against {NAMES[peer]} < {low:,}: more than {s / low:.0f}×"
        return (label, text, "met" if ratio >= factor else "undecided (lower the first rate in RATES)")
    ratio = s / o
    text = f"stilts {max_rate('stilts')} against {NAMES[peer]} {o:,} req/s: {'at least ' if capped('stilts') else ''}{ratio:.1f}×"
    if ratio >= factor:
        return (label, text, "met")
    if capped("stilts"):
        return (label, text + " (stilts was held by the load generator's ceiling)", "undecided")
    return (label, text, "not met")
targets.append(rate_target("portkey", 10) if "portkey" in peers else ("stilts ≥ 10× Portkey's rate", "Portkey not in PEERS", "not measured"))
targets.append(rate_target("litellm", 100) if "litellm" in peers else ("stilts ≥ 100× LiteLLM's rate", "LiteLLM not in PEERS", "not measured"))
if have("stilts") and data["stilts"].get("hwm_mib"):
    m = data["stilts"]["hwm_mib"]
    targets.append(("stilts' peak RSS < 64 MiB", f"{m:.1f} MiB", "met" if m < 64 else "not met"))
else:
    targets.append(("stilts' peak RSS < 64 MiB", "stilts not measured", "not measured"))
lines += ["", "| target (same run) | measured | result |", "|---|---|---|"]
lines += [f"| {t} | {m} | **{v}** |" for t, m, v in targets]
seq_n = ", ".join(f"{NAMES[n]} {data[n]['seq']['n']}" for n in ["direct"] + peers if data[n].get("seq"))
stream_n = ", ".join(f"{NAMES[n]} {data[n]['stream']['n']}" for n in ["direct"] + peers if data[n].get("stream"))
lines += ["", f"Sequential requests per peer (at most {sys.argv[17]}, or {sys.argv[18]} s): {seq_n}. "
          f"Streams per peer: {stream_n}. Load average at the end of the run: {loadavg}."]
failed = [f"{NAMES[p]}: {data[p]['fail']}" for p in peers if data[p].get("fail")]
if failed:
    lines += ["", "Not measured: " + "; ".join(failed) + "."]

out = "\n".join(lines)
print()
print(out)
if doc:
    begin_m, end_m = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"
    text = open(doc).read() if os.path.exists(doc) else ""
    begin, end = text.find(begin_m), text.find(end_m)
    if begin < 0 or end < begin:
        sys.exit(f"{doc} has no bench-peers markers; add {begin_m} and {end_m}")
    open(doc, "w").write(text[:begin] + begin_m + "\n" + out + "\n" + text[end:])
    print(f"\nwrote {doc} (the block between the bench-peers markers only)")
PY
if [ "${STRICT:-0}" = 1 ] && [ "${#FAIL[@]}" -gt 0 ]; then
    echo "STRICT=1: not measured: ${!FAIL[*]}"
    exit 1
fi
