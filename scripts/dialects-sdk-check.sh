#!/usr/bin/env bash
# Checks stilts' dialects other than Chat Completions against the official SDKs: builds stilts and
# the openai plugin, installs the `anthropic` and `openai` packages into a venv, starts two fake
# OpenAI upstreams (one that answers, one that cuts its streams after two chunks) and `stilts serve`
# with a route whose first deployment refuses connections, so every call fails over. Then:
# - Anthropic Messages: messages.create plain and streamed (the failover is invisible but for
#   X-Stilts-Attempts), the stream helper's final message, a tool call and its result (plain and
#   streamed), a stream cut after its first bytes (the
#   SDK must raise), count_tokens, an unknown route (NotFoundError), a field stilts cannot carry
#   (BadRequestError);
# - OpenAI Responses: responses.create plain and streamed, the stream helper's final response, a
#   function call and its output (plain and streamed), a json_schema answer, a
#   cut stream (the SDK must raise), stored state refused; models.retrieve; embeddings.create
#   (base64 by default, floats, dimensions) through a failover.
# Exits non-zero on any failure; stops what it started.
#
#   scripts/dialects-sdk-check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="${STILTS_SDK_VENV:-$TARGET/sdk-venv}"
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== building stilts and the openai plugin"
(cd "$ROOT" && cargo build --locked -q -p stilts-cli -p stilts-plugin-openai)
STILTS="$TARGET/debug/stilts"

echo "== installing the anthropic and openai SDKs into $VENV"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --upgrade anthropic openai

GOOD=$(free_port); CUTTER=$(free_port); DEAD=$(free_port); GW=$(free_port)
"$STILTS" mock-upstream --listen "127.0.0.1:$GOOD" --name good --chunk-interval-ms 5 >"$WORK/good.log" 2>&1 &
PIDS+=($!)
"$STILTS" mock-upstream --listen "127.0.0.1:$CUTTER" --name cutter --chunk-interval-ms 5 --cut-after 2 >"$WORK/cutter.log" 2>&1 &
PIDS+=($!)
# A route whose first deployment refuses connections, so its calls fail over to the good one.
# Each dialect's checks use a route of their own, so their first call meets a closed breaker.
failover_route() { # name, kind, good deployment's model
    printf '[routes.%s]\nkind = "%s"\n[routes.%s.router]\npolicy = "priority"\n' "$1" "$2" "$1"
    for deployment in "dead 0 http://127.0.0.1:$DEAD/v1 gone" "good 1 http://127.0.0.1:$GOOD/v1 $3"; do
        read -r name priority url model <<<"$deployment"
        printf '[[routes.%s.deployments]]\nname = "%s"\nplugin = "openai"\nbase_url = "%s"\nmodel = "%s"\npriority = %s\n' \
            "$1" "$name" "$url" "$model" "$priority"
    done
}
{
    printf '[server]\nlisten = "127.0.0.1:%s"\nreload_poll_ms = 0\nplugin_dir = "%s"\n' "$GW" "$TARGET/debug"
    failover_route chat chat mock-good       # Anthropic Messages
    failover_route resp chat mock-good       # OpenAI Responses
    failover_route emb embeddings text-embedding-3-small
    printf '[[routes.cut.deployments]]\nname = "cutter"\nplugin = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\nmodel = "mock-cutter"\n' "$CUTTER"
} >"$WORK/stilts.toml"
"$STILTS" serve --config "$WORK/stilts.toml" >"$WORK/out" 2>"$WORK/err" &
PIDS+=($!)
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$GW/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$GW/healthz" >/dev/null || { echo "stilts did not start"; cat "$WORK/out" "$WORK/err"; exit 1; }
echo "   stilts at http://127.0.0.1:$GW"

echo "== Anthropic Messages with the anthropic SDK"
STILTS_ADDR="127.0.0.1:$GW" "$VENV/bin/python" - <<'PY'
import os, sys
import anthropic

addr = os.environ["STILTS_ADDR"]
# The Anthropic SDK appends /v1/messages itself: its base URL has no /v1.
client = anthropic.Anthropic(base_url=f"http://{addr}", api_key="unused", max_retries=0)
failures = []

def check(cond, what):
    print(("   ok   " if cond else "   FAIL ") + what)
    if not cond:
        failures.append(what)

ask = [{"role": "user", "content": "Say hi."}]

raw = client.messages.with_raw_response.create(model="chat", max_tokens=64, messages=ask)
message = raw.parse()
text = "".join(b.text for b in message.content if b.type == "text")
check(raw.headers.get("x-provider") == "good", f"plain: served by the backup after a failover (X-Provider {raw.headers.get('x-provider')})")
check(raw.headers.get("x-stilts-attempts") == "2", f"plain: two attempts (X-Stilts-Attempts {raw.headers.get('x-stilts-attempts')})")
check(bool(raw.headers.get("request-id")), "plain: request-id header")
check(message.type == "message" and message.role == "assistant", "plain: a message")
check(len(text) > 0, f"plain: answer text ({text!r})")
check(message.stop_reason == "end_turn", f"plain: stop_reason end_turn ({message.stop_reason})")
check(message.usage.output_tokens > 0, f"plain: usage ({message.usage})")

with client.messages.stream(model="chat", max_tokens=64, messages=ask) as stream:
    streamed = "".join(stream.text_stream)
    final = stream.get_final_message()
check(streamed == text, f"stream: same answer as the plain call ({streamed!r})")
check(final.stop_reason == "end_turn", f"stream: final stop_reason end_turn ({final.stop_reason})")
check(final.usage.output_tokens > 0 and final.usage.input_tokens > 0, f"stream: final usage ({final.usage})")

names = [event.type for event in client.messages.create(model="chat", max_tokens=64, messages=ask, stream=True)]
check(names[0] == "message_start" and names[-1] == "message_stop", f"stream events from message_start to message_stop ({names[0]} .. {names[-1]})")
check("content_block_delta" in names and "message_delta" in names, "stream events carry deltas and the message_delta")

try:
    with client.messages.stream(model="cut", max_tokens=64, messages=ask) as stream:
        cut_text = "".join(stream.text_stream)
    check(False, f"a stream cut after its first bytes raises (got {cut_text!r} and no error)")
except anthropic.APIStatusError as e:
    check(getattr(e, "type", None) in ("api_error", "overloaded_error") or "api_error" in str(e),
          f"a stream cut after its first bytes raises APIStatusError ({str(e)[:80]})")

weather = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
call = client.messages.create(model="chat", max_tokens=64, messages=ask, tools=[weather])
uses = [b for b in call.content if b.type == "tool_use"]
check(call.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather" and isinstance(uses[0].input, dict),
      f"tools: a tool_use block with an input object ({call.content})")
after = client.messages.create(model="chat", max_tokens=64, tools=[weather], messages=ask + [
    {"role": "assistant", "content": call.content},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 C"}]}])
check(after.stop_reason == "end_turn" and after.content[0].type == "text", "tools: the tool's result gets a text answer")
with client.messages.stream(model="chat", max_tokens=64, messages=ask, tools=[weather]) as stream:
    streamed_call = stream.get_final_message()
suses = [b for b in streamed_call.content if b.type == "tool_use"]
check(streamed_call.stop_reason == "tool_use" and len(suses) == 1 and suses[0].input == uses[0].input,
      f"tools, streamed: the helper rebuilds the same tool_use ({streamed_call.content})")

counted = client.messages.count_tokens(model="chat", messages=ask)
check(isinstance(counted.input_tokens, int) and 0 < counted.input_tokens < 50, f"count_tokens: a count ({counted.input_tokens})")
more = client.messages.count_tokens(model="chat", messages=ask, system="Answer in French.", tools=[weather])
check(more.input_tokens > counted.input_tokens, f"count_tokens: a system prompt and a tool count too ({more.input_tokens})")

try:
    client.messages.create(model="no-such-route", max_tokens=16, messages=ask)
    check(False, "an unknown route raises NotFoundError")
except anthropic.NotFoundError as e:
    check("no route" in str(e), f"an unknown route raises NotFoundError ({str(e)[:80]})")

try:
    client.messages.create(model="chat", max_tokens=16, messages=ask, extra_body={"top_k": 5})
    check(False, "a field stilts cannot carry raises BadRequestError")
except anthropic.BadRequestError as e:
    check("top_k" in str(e), f"a field stilts cannot carry raises BadRequestError naming it ({str(e)[:80]})")

sys.exit(1 if failures else 0)
PY

echo "== OpenAI Responses with the openai SDK"
STILTS_ADDR="127.0.0.1:$GW" "$VENV/bin/python" - <<'PY'
import os, sys
import openai

addr = os.environ["STILTS_ADDR"]
client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
failures = []

def check(cond, what):
    print(("   ok   " if cond else "   FAIL ") + what)
    if not cond:
        failures.append(what)

raw = client.responses.with_raw_response.create(model="resp", input="Say hi.", instructions="Be brief.")
response = raw.parse()
check(raw.headers.get("x-provider") == "good", f"plain: served by the backup after a failover (X-Provider {raw.headers.get('x-provider')})")
check(raw.headers.get("x-stilts-attempts") == "2", f"plain: two attempts (X-Stilts-Attempts {raw.headers.get('x-stilts-attempts')})")
check(response.object == "response" and response.status == "completed", f"plain: a completed response ({response.status})")
check(len(response.output_text) > 0, f"plain: output_text ({response.output_text!r})")
check(response.usage is not None and response.usage.output_tokens > 0, f"plain: usage ({response.usage})")

with client.responses.stream(model="chat", input=[{"role": "user", "content": "Say hi."}]) as stream:
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    final = stream.get_final_response()
check("".join(deltas) == response.output_text, f"stream: the deltas make the plain answer ({''.join(deltas)!r})")
check(final.status == "completed" and final.output_text == response.output_text, "stream: the helper's final response")
check(final.usage is not None and final.usage.input_tokens > 0, f"stream: final usage ({final.usage})")

types = [e.type for e in client.responses.create(model="chat", input="Say hi.", stream=True)]
check(types[0] == "response.created" and types[-1] == "response.completed", f"stream events from response.created to response.completed ({types[0]} .. {types[-1]})")

try:
    with client.responses.stream(model="cut", input="Say hi.") as stream:
        for _ in stream:
            pass
        stream.get_final_response()
    check(False, "a stream cut after its first bytes raises")
except openai.APIError as e:
    # The error event itself raises (not the helper missing response.completed).
    check("cut" in str(e), f"a stream cut after its first bytes raises APIError on the error event ({str(e)[:70]})")

tools = [{"type": "function", "name": "get_weather", "description": "The weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
called = client.responses.create(model="chat", input="Weather in Paris?", tools=tools)
calls = [item for item in called.output if item.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "get_weather" and "city" in calls[0].arguments,
      f"tools: a function_call item ({called.output})")
answered = client.responses.create(model="chat", tools=tools, input=[
    {"role": "user", "content": "Weather in Paris?"},
    {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
    {"type": "function_call_output", "call_id": calls[0].call_id, "output": "21 C"}])
check(len(answered.output_text) > 0, f"tools: the function's output gets a text answer ({answered.output_text!r})")
with client.responses.stream(model="chat", input="Weather in Paris?", tools=tools) as stream:
    streamed_called = stream.get_final_response()
scalls = [item for item in streamed_called.output if item.type == "function_call"]
check(len(scalls) == 1 and scalls[0].arguments == calls[0].arguments,
      f"tools, streamed: the helper's final response has the same call ({streamed_called.output})")
shaped = client.responses.create(model="chat", input="Weather?", text={"format": {"type": "json_schema", "name": "w",
    "schema": {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
               "required": ["city", "temp"], "additionalProperties": False}, "strict": True}})
import json as _json
try:
    parsed = _json.loads(shaped.output_text)
    check(set(parsed) == {"city", "temp"}, f"json_schema: the answer is schema-shaped JSON ({parsed})")
except ValueError:
    check(False, f"json_schema: the answer is JSON ({shaped.output_text!r})")

try:
    client.responses.create(model="chat", input="hi", previous_response_id="resp_123")
    check(False, "stored state is refused")
except openai.BadRequestError as e:
    check("previous_response_id" in str(e), f"stored state is refused, naming the field ({str(e)[:70]})")

# The SDK asks for base64 unless told otherwise, and decodes it.
raw = client.embeddings.with_raw_response.create(model="emb", input=["hello world", "bye"])
embedded = raw.parse()
check(raw.headers.get("x-stilts-attempts") == "2", f"embeddings: through a failover (X-Stilts-Attempts {raw.headers.get('x-stilts-attempts')})")
vectors = [d.embedding for d in embedded.data]
check(len(vectors) == 2 and all(len(v) == 8 and all(isinstance(x, float) for x in v) for v in vectors),
      f"embeddings: two vectors of 8 floats, decoded from base64 ({[len(v) for v in vectors]})")
floats = client.embeddings.create(model="emb", input=["hello world", "bye"], encoding_format="float")
check([d.embedding for d in floats.data] == vectors, "embeddings: floats and base64 carry the same vectors")
shorter = client.embeddings.create(model="emb", input="hello", dimensions=4)
check(len(shorter.data[0].embedding) == 4, "embeddings: dimensions is carried")

model = client.models.retrieve("chat")
check(model.id == "chat" and model.object == "model", f"models.retrieve ({model.id})")
try:
    client.models.retrieve("no-such-route")
    check(False, "models.retrieve of an unknown route raises NotFoundError")
except openai.NotFoundError:
    check(True, "models.retrieve of an unknown route raises NotFoundError")

sys.exit(1 if failures else 0)
PY
echo "== dialect SDK checks passed"
