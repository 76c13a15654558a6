#!/usr/bin/env bash
# Checks stilts against the official OpenAI Python SDK: builds stilts and the openai plugin,
# installs the `openai` package into a venv, starts `stilts serve` (the embedded demo, or the config
# given as $1), runs a plain and a streamed completion with the SDK, checks X-Provider (through
# with_raw_response) and the /metrics series. Exits non-zero on any failure; stops what it started.
#
#   scripts/openai-sdk-check.sh                 # embedded demo
#   STILTS_SDK_ROUTE=chat scripts/openai-sdk-check.sh my.toml
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${STILTS_SDK_VENV:-$TARGET/openai-sdk-venv}"
CONFIG="${1:-}"
ROUTE="${STILTS_SDK_ROUTE:-local}"
WORK="$(mktemp -d)"
PID=""

cleanup() {
    if [[ -n "$PID" ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== building stilts and the openai plugin"
(cd "$ROOT" && cargo build --locked -q -p stilts-cli -p stilts-plugin-openai)
STILTS="$TARGET/debug/stilts"

echo "== installing the openai SDK into $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade openai

echo "== starting stilts serve ${CONFIG:+--config $CONFIG}"
if [[ -n "$CONFIG" ]]; then
    "$STILTS" serve --config "$CONFIG" >"$WORK/out" 2>"$WORK/err" &
else
    "$STILTS" serve --listen 127.0.0.1:0 >"$WORK/out" 2>"$WORK/err" &
fi
PID=$!
ADDR=""
for _ in $(seq 300); do
    ADDR="$(grep -oE 'listening on http://[0-9.:]+|serving on http://[0-9.:]+' "$WORK/out" "$WORK/err" 2>/dev/null | head -1 | sed -E 's#.*http://##')" || true
    [[ -n "$ADDR" ]] && break
    kill -0 "$PID" 2>/dev/null || { echo "stilts exited early:"; cat "$WORK/out" "$WORK/err"; exit 1; }
    sleep 0.1
done
[[ -n "$ADDR" ]] || { echo "stilts did not print its address"; cat "$WORK/out" "$WORK/err"; exit 1; }
echo "   stilts at http://$ADDR"

echo "== running the SDK checks (route $ROUTE)"
STILTS_ADDR="$ADDR" STILTS_ROUTE="$ROUTE" STILTS_DEMO="${CONFIG:+0}" "$VENV/bin/python" - <<'PY'
import os, sys, urllib.request
from openai import OpenAI

addr, route = os.environ["STILTS_ADDR"], os.environ["STILTS_ROUTE"]
demo = os.environ.get("STILTS_DEMO", "") != "0"
client = OpenAI(base_url=f"http://{addr}/v1", api_key=os.environ.get("STILTS_CLIENT_KEY", "unused"), max_retries=0)
failures = []

def check(cond, what):
    print(("   ok   " if cond else "   FAIL ") + what)
    if not cond:
        failures.append(what)

models = [m.id for m in client.models.list()]
check(route in models, f"/v1/models lists {route} ({models})")

raw = client.chat.completions.with_raw_response.create(
    model=route, messages=[{"role": "user", "content": "Say hi."}])
provider = raw.headers.get("x-provider")
completion = raw.parse()
check(bool(provider), f"plain: X-Provider is set ({provider})")
check(raw.headers.get("x-stilts-attempts", "").isdigit(), "plain: X-Stilts-Attempts is a number")
text = completion.choices[0].message.content or ""
check(len(text) > 0, f"plain: answer text ({text!r})")
check(completion.choices[0].finish_reason == "stop", "plain: finish_reason stop")
if demo and route == "local":
    check(provider == "local" and text.startswith("Hello from local"), "plain: the demo's local upstream answered")

raw = client.chat.completions.with_raw_response.create(
    model=route, messages=[{"role": "user", "content": "Say hi."}], stream=True,
    stream_options={"include_usage": True})
sprovider = raw.headers.get("x-provider")
pieces, finish, usage = [], None, None
for chunk in raw.parse():
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
streamed = "".join(pieces)
check(bool(sprovider), f"stream: X-Provider is set ({sprovider})")
check(len(streamed) > 0, f"stream: text ({streamed!r})")
check(finish == "stop", "stream: finish_reason stop")
check(usage is not None and usage.completion_tokens > 0, f"stream: usage chunk ({usage})")
if demo and route == "local":
    check(streamed == text, "stream: same answer as the plain call")

# Without stream_options the client gets no usage-only chunk, as from OpenAI: the common
# `chunk.choices[0].delta.content` loop must work on every chunk.
bare = []
for chunk in client.chat.completions.create(
        model=route, messages=[{"role": "user", "content": "Say hi."}], stream=True):
    bare.append(chunk.choices[0].delta.content or "")
check(len("".join(bare)) > 0, "stream without include_usage: chunk.choices[0] on every chunk")

try:
    client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "x"}])
    check(False, "unknown route raises NotFoundError")
except Exception as e:  # the SDK maps our 404 JSON to its NotFoundError
    check(type(e).__name__ == "NotFoundError" and "no route" in str(e), f"unknown route raises NotFoundError ({type(e).__name__})")

metrics = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
for series in [
    f'stilts_requests_total{{route="{route}",provider="{provider}",outcome="ok"}}',
    f'stilts_attempts_total{{route="{route}",provider="{provider}"}}',
    f'stilts_request_duration_seconds_count{{route="{route}"}}',
    f'stilts_gateway_overhead_seconds_count{{route="{route}"}}',
    f'stilts_breaker_state{{route="{route}",provider="{provider}"}}',
    f'stilts_tokens_total{{route="{route}",provider="{provider}",kind="output"}}',
    'stilts_retry_budget_available{',
    'stilts_requests_total{route="unknown",provider="none",outcome="unknown_route"} 1',
]:
    check(series in metrics, f"/metrics has {series}")

sys.exit(1 if failures else 0)
PY
echo "== openai SDK check passed"
