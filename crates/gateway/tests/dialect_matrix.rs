//! Translation across every ingress × provider pair: each of the three client dialects the gateway
//! serves (OpenAI Chat Completions, Anthropic Messages, OpenAI Responses) over each of the three
//! shipped provider plugins (openai, anthropic, gemini, built as cdylibs), through a real gateway on
//! loopback. For every pair: a plain answer comes back in the client's own dialect with the
//! provider's text and `X-Provider` naming the deployment; a streamed answer's text deltas add up
//! to the same text and the stream ends as its dialect ends one; and a request offering a tool is
//! forwarded with the tool and answered with the dialect's tool call, name and arguments intact.
//! The openai and anthropic deployments sit on the fake upstream (`stilts_gateway::mock`), the
//! gemini one on a wiremock server serving Gemini API bodies (the plugin's wire fixtures).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use std::fmt;

use common::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use stilts_gateway::mock::{Faults, MockUpstream};
use wiremock::matchers::{body_string_contains, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The tool every tool request offers (the name the Gemini fixture calls).
const TOOL: &str = "find_theaters";

/// A Gemini `streamGenerateContent?alt=sse` transcript (CRLF line endings, no terminal marker).
const GEMINI_STREAM: &str = include_str!("../../../plugins/gemini/tests/fixtures/stream_basic.sse");
/// The text of [`GEMINI_STREAM`], which the plain Gemini answer also carries.
const GEMINI_TEXT: &str = "The old lighthouse keeper, Silas, had seen many storms.";
/// A Gemini `generateContent` answer calling [`TOOL`].
const GEMINI_CALL: &str =
    include_str!("../../../plugins/gemini/tests/fixtures/response_function_call.json");
/// The Gemini model of the deployment (a path segment of the upstream URL).
const GEMINI_MODEL: &str = "gemini-2.5-flash";

fn tool_parameters() -> Value {
    json!({
        "type": "object",
        "properties": {"location": {"type": "string"}, "movie": {"type": "string"}},
        "required": ["location", "movie"],
    })
}

#[derive(Clone, Copy, Debug)]
enum Ingress {
    Chat,
    Messages,
    Responses,
}

#[derive(Clone, Copy, Debug)]
enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
}

/// One cell of the matrix; its `Display` labels every assertion message.
#[derive(Clone, Copy, Debug)]
struct Pair {
    ingress: Ingress,
    provider: Provider,
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:?} ingress × {:?} provider]",
            self.ingress, self.provider
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Ingress side: what the client sends and how it reads the answer in its own dialect.
// ---------------------------------------------------------------------------------------------

impl Ingress {
    fn path(self) -> &'static str {
        match self {
            Ingress::Chat => "/v1/chat/completions",
            Ingress::Messages => "/v1/messages",
            Ingress::Responses => "/v1/responses",
        }
    }

    /// A request to route `chat`, streamed or not, offering [`TOOL`] or not.
    fn request(self, stream: bool, tool: bool) -> Value {
        let mut body = match self {
            Ingress::Chat => json!({"model": "chat", "stream": stream,
                "messages": [{"role": "user", "content": "Where is Barbie playing?"}]}),
            Ingress::Messages => json!({"model": "chat", "max_tokens": 256, "stream": stream,
                "messages": [{"role": "user", "content": "Where is Barbie playing?"}]}),
            Ingress::Responses => {
                json!({"model": "chat", "stream": stream, "input": "Where is Barbie playing?"})
            }
        };
        if tool {
            let description = "Theaters showing a movie near a location";
            body["tools"] = match self {
                Ingress::Chat => json!([{"type": "function", "function": {
                    "name": TOOL, "description": description, "parameters": tool_parameters()}}]),
                Ingress::Messages => json!([{
                    "name": TOOL, "description": description, "input_schema": tool_parameters()}]),
                Ingress::Responses => json!([{"type": "function",
                    "name": TOOL, "description": description, "parameters": tool_parameters()}]),
            };
        }
        body
    }

    async fn send(self, h: &Harness, body: &Value) -> (u16, HeaderMap, String) {
        let mut request = h.http.post(h.url(self.path())).json(body);
        if let Ingress::Messages = self {
            request = request.header("anthropic-version", "2023-06-01");
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.text().await.unwrap())
    }

    /// The text of a plain answer, checking it is the dialect's text-answer shape.
    fn plain_text(self, pair: Pair, body: &Value) -> String {
        match self {
            Ingress::Chat => {
                assert_eq!(body["object"], "chat.completion", "{pair}: {body}");
                let choice = &body["choices"][0];
                assert_eq!(choice["message"]["role"], "assistant", "{pair}: {body}");
                assert_eq!(choice["finish_reason"], "stop", "{pair}: {body}");
                choice["message"]["content"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pair}: no choices[0].message.content: {body}"))
                    .to_owned()
            }
            Ingress::Messages => {
                assert_eq!(body["type"], "message", "{pair}: {body}");
                assert_eq!(body["role"], "assistant", "{pair}: {body}");
                assert_eq!(body["stop_reason"], "end_turn", "{pair}: {body}");
                assert_eq!(body["content"][0]["type"], "text", "{pair}: {body}");
                body["content"][0]["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pair}: no content[0].text: {body}"))
                    .to_owned()
            }
            Ingress::Responses => {
                assert_eq!(body["object"], "response", "{pair}: {body}");
                assert_eq!(body["status"], "completed", "{pair}: {body}");
                let message = output_item(body, "message")
                    .unwrap_or_else(|| panic!("{pair}: no message output item: {body}"));
                assert_eq!(message["role"], "assistant", "{pair}: {body}");
                assert_eq!(
                    message["content"][0]["type"], "output_text",
                    "{pair}: {body}"
                );
                message["content"][0]["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pair}: no output_text text: {body}"))
                    .to_owned()
            }
        }
    }

    /// The concatenated text deltas of a stream, checking it ends as the dialect ends a
    /// successful stream.
    fn stream_text(self, pair: Pair, sse: &str) -> String {
        match self {
            Ingress::Chat => {
                let (text, done, error) = sse_text(sse);
                assert_eq!(error, None, "{pair}: {sse}");
                assert_eq!(done, 1, "{pair}: one [DONE]: {sse}");
                assert!(
                    sse.trim_end().ends_with("data: [DONE]"),
                    "{pair}: the stream ends with [DONE]: {sse}"
                );
                text
            }
            Ingress::Messages => {
                let events = named_events(sse);
                let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(names.first(), Some(&"message_start"), "{pair}: {names:?}");
                assert_eq!(names.last(), Some(&"message_stop"), "{pair}: {names:?}");
                assert!(!names.contains(&"error"), "{pair}: {sse}");
                let stop = events
                    .iter()
                    .find(|(n, _)| n == "message_delta")
                    .unwrap_or_else(|| panic!("{pair}: no message_delta: {names:?}"));
                assert_eq!(stop.1["delta"]["stop_reason"], "end_turn", "{pair}: {sse}");
                events
                    .iter()
                    .filter(|(n, d)| {
                        n == "content_block_delta" && d["delta"]["type"] == "text_delta"
                    })
                    .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
                    .collect()
            }
            Ingress::Responses => {
                let events = named_events(sse);
                let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
                assert_eq!(
                    names.first(),
                    Some(&"response.created"),
                    "{pair}: {names:?}"
                );
                assert_eq!(
                    names.last(),
                    Some(&"response.completed"),
                    "{pair}: {names:?}"
                );
                assert!(!names.contains(&"error"), "{pair}: {sse}");
                let text: String = events
                    .iter()
                    .filter(|(n, _)| n == "response.output_text.delta")
                    .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
                    .collect();
                let done = &events.last().unwrap().1["response"];
                assert_eq!(done["status"], "completed", "{pair}: {done}");
                let message = output_item(done, "message")
                    .unwrap_or_else(|| panic!("{pair}: no message in the completed response"));
                assert_eq!(
                    message["content"][0]["text"],
                    text.as_str(),
                    "{pair}: the completed response carries the streamed text"
                );
                text
            }
        }
    }

    /// The tool call of a plain answer: its name and arguments, checking the dialect's shape
    /// (an id, a tool-call stop, arguments as the dialect carries them).
    fn tool_call(self, pair: Pair, body: &Value) -> (String, Value) {
        let (name, arguments) = match self {
            Ingress::Chat => {
                let choice = &body["choices"][0];
                assert_eq!(choice["finish_reason"], "tool_calls", "{pair}: {body}");
                let call = &choice["message"]["tool_calls"][0];
                assert_eq!(call["type"], "function", "{pair}: {body}");
                assert!(non_empty(&call["id"]), "{pair}: a call id: {body}");
                let arguments = call["function"]["arguments"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pair}: arguments are JSON text: {body}"));
                (
                    &call["function"]["name"],
                    serde_json::from_str(arguments)
                        .unwrap_or_else(|e| panic!("{pair}: arguments {arguments:?}: {e}")),
                )
            }
            Ingress::Messages => {
                assert_eq!(body["stop_reason"], "tool_use", "{pair}: {body}");
                let block = body["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|b| b["type"] == "tool_use")
                    .unwrap_or_else(|| panic!("{pair}: no tool_use block: {body}"));
                assert!(non_empty(&block["id"]), "{pair}: a tool_use id: {body}");
                assert!(
                    block["input"].is_object(),
                    "{pair}: input is an object: {body}"
                );
                (&block["name"], block["input"].clone())
            }
            Ingress::Responses => {
                assert_eq!(body["status"], "completed", "{pair}: {body}");
                let item = output_item(body, "function_call")
                    .unwrap_or_else(|| panic!("{pair}: no function_call output item: {body}"));
                assert!(non_empty(&item["call_id"]), "{pair}: a call_id: {body}");
                let arguments = item["arguments"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{pair}: arguments are JSON text: {body}"));
                (
                    &item["name"],
                    serde_json::from_str(arguments)
                        .unwrap_or_else(|e| panic!("{pair}: arguments {arguments:?}: {e}")),
                )
            }
        };
        let name = name
            .as_str()
            .unwrap_or_else(|| panic!("{pair}: a tool name: {body}"))
            .to_owned();
        (name, arguments)
    }
}

fn non_empty(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

/// The first item of a Responses object's `output` of type `kind`.
fn output_item<'a>(response: &'a Value, kind: &str) -> Option<&'a Value> {
    response["output"]
        .as_array()?
        .iter()
        .find(|item| item["type"] == kind)
}

// ---------------------------------------------------------------------------------------------
// Provider side: the upstream, the deployment, and what the provider answers.
// ---------------------------------------------------------------------------------------------

/// A running upstream for one provider.
enum Upstream {
    Fake(MockUpstream),
    Gemini(MockServer),
}

impl Upstream {
    /// The tool names of the last request the upstream received, read in its own dialect.
    async fn offered_tools(&self, pair: Pair) -> Vec<String> {
        let names = |request: &Value, pointers: &[&str]| -> Vec<String> {
            pointers
                .iter()
                .filter_map(|p| request.pointer(p))
                .filter_map(Value::as_array)
                .flatten()
                // OpenAI: {"type":"function","function":{"name":…}}; Anthropic and Gemini
                // declarations: {"name":…}.
                .filter_map(|t| t.pointer("/function/name").or_else(|| t.get("name")))
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        match self {
            Upstream::Fake(up) => {
                let request = up
                    .last_request()
                    .unwrap_or_else(|| panic!("{pair}: the upstream got no request"));
                names(&request, &["/tools"])
            }
            Upstream::Gemini(server) => {
                let requests = server.received_requests().await.unwrap();
                let last = requests
                    .last()
                    .unwrap_or_else(|| panic!("{pair}: the upstream got no request"));
                let request: Value = serde_json::from_slice(&last.body).unwrap();
                names(&request, &["/tools/0/functionDeclarations"])
            }
        }
    }
}

/// What a provider's upstream answers, as the client should see it.
struct Expected {
    /// The deployment name (`X-Provider`).
    deployment: &'static str,
    /// The plain and streamed answer's text.
    text: String,
    /// The arguments of the tool call.
    arguments: Value,
}

impl Provider {
    /// Starts the upstream; returns it, the route's deployment table and what the client should
    /// get.
    async fn start(self) -> (Upstream, String, Expected) {
        let deployment = |name: &str, plugin: &str, base_url: &str, model: &str| {
            format!(
                "[[routes.chat.deployments]]\nname = \"{name}\"\nplugin = \"{plugin}\"\nbase_url = \"{base_url}\"\nmodel = \"{model}\"\n"
            )
        };
        // The fake upstream fills every string parameter of the tool with its reply text.
        let fake = |name: &'static str, reply: String| Expected {
            deployment: name,
            arguments: json!({"location": reply, "movie": reply}),
            text: reply,
        };
        match self {
            Provider::OpenAi => {
                let up = mock("gpt", Faults::default()).await;
                let toml = deployment("gpt", "PLUGIN", &up.base_url(), "gpt-4o-mini");
                let reply = stilts_gateway::mock::MockConfig::named("gpt").reply;
                (Upstream::Fake(up), toml, fake("gpt", reply))
            }
            Provider::Anthropic => {
                let up = mock("claude", Faults::default()).await;
                let toml = deployment("claude", "ANTHROPIC", &up.base_url(), "claude-haiku-4-5");
                let reply = stilts_gateway::mock::MockConfig::named("claude").reply;
                (Upstream::Fake(up), toml, fake("claude", reply))
            }
            Provider::Gemini => {
                let server = gemini_upstream().await;
                let base_url = format!("{}/v1beta", server.uri());
                let toml = deployment("gemini", "GEMINI", &base_url, GEMINI_MODEL);
                let expected = Expected {
                    deployment: "gemini",
                    text: GEMINI_TEXT.to_owned(),
                    arguments: json!({"location": "Mountain View, CA", "movie": "Barbie"}),
                };
                (Upstream::Gemini(server), toml, expected)
            }
        }
    }
}

/// A Gemini API stand-in: `generateContent` answers [`GEMINI_CALL`] when the request declares
/// functions and [`GEMINI_TEXT`] otherwise; `streamGenerateContent?alt=sse` streams
/// [`GEMINI_STREAM`].
async fn gemini_upstream() -> MockServer {
    let server = MockServer::start().await;
    let plain = format!("/v1beta/models/{GEMINI_MODEL}:generateContent");
    let streamed = format!("/v1beta/models/{GEMINI_MODEL}:streamGenerateContent");
    let text_answer = json!({
        "candidates": [{
            "content": {"parts": [{"text": GEMINI_TEXT}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 11, "totalTokenCount": 16},
        "modelVersion": GEMINI_MODEL,
        "responseId": "plain-1",
    });
    Mock::given(method("POST"))
        .and(path(plain.as_str()))
        .and(body_string_contains("functionDeclarations"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(GEMINI_CALL, "application/json"))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(plain.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(text_answer))
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(streamed.as_str()))
        .and(query_param("alt", "sse"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(GEMINI_STREAM, "text/event-stream"))
        .mount(&server)
        .await;
    server
}

// ---------------------------------------------------------------------------------------------
// The matrix.
// ---------------------------------------------------------------------------------------------

async fn check_pair(ingress: Ingress, provider: Provider) {
    let pair = Pair { ingress, provider };
    let (upstream, deployment, expected) = provider.start().await;
    let h = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n{deployment}"
    ))
    .await;

    // 1. A plain text answer, in the client's dialect.
    let (status, headers, body) = ingress.send(&h, &ingress.request(false, false)).await;
    assert_eq!(status, 200, "{pair} plain: {body}");
    assert_eq!(
        header(&headers, "x-provider"),
        expected.deployment,
        "{pair} plain"
    );
    let body: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{pair} plain: not JSON ({e}): {body}"));
    let plain = ingress.plain_text(pair, &body);
    assert_eq!(plain, expected.text, "{pair} plain: the provider's text");

    // 2. The same answer streamed: the text deltas add up to it, and the stream ends properly.
    let (status, headers, sse) = ingress.send(&h, &ingress.request(true, false)).await;
    assert_eq!(status, 200, "{pair} stream: {sse}");
    assert_eq!(
        header(&headers, "x-provider"),
        expected.deployment,
        "{pair} stream"
    );
    assert!(
        header(&headers, "content-type").starts_with("text/event-stream"),
        "{pair} stream: {headers:?}"
    );
    let streamed = ingress.stream_text(pair, &sse);
    assert_eq!(
        streamed, plain,
        "{pair} stream: the deltas add up to the plain text"
    );

    // 3. A tool offered: forwarded to the provider, and its call comes back in the dialect.
    let (status, headers, body) = ingress.send(&h, &ingress.request(false, true)).await;
    assert_eq!(status, 200, "{pair} tool: {body}");
    assert_eq!(
        header(&headers, "x-provider"),
        expected.deployment,
        "{pair} tool"
    );
    assert_eq!(
        upstream.offered_tools(pair).await,
        [TOOL],
        "{pair} tool: the provider was offered the tool"
    );
    let body: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{pair} tool: not JSON ({e}): {body}"));
    let (name, arguments) = ingress.tool_call(pair, &body);
    assert_eq!(name, TOOL, "{pair} tool: the name");
    assert_eq!(arguments, expected.arguments, "{pair} tool: the arguments");
}

/// One test per pair, so a failure names its pair in the test's name as well as its message.
macro_rules! matrix {
    ($($test:ident: $ingress:ident over $provider:ident;)*) => {$(
        #[tokio::test]
        async fn $test() {
            check_pair(Ingress::$ingress, Provider::$provider).await;
        }
    )*};
}

matrix! {
    chat_over_openai: Chat over OpenAi;
    chat_over_anthropic: Chat over Anthropic;
    chat_over_gemini: Chat over Gemini;
    messages_over_openai: Messages over OpenAi;
    messages_over_anthropic: Messages over Anthropic;
    messages_over_gemini: Messages over Gemini;
    responses_over_openai: Responses over OpenAi;
    responses_over_anthropic: Responses over Anthropic;
    responses_over_gemini: Responses over Gemini;
}
