//! Fuzzing the chat request body as the gateway reads it: arbitrary bytes and mutations of the
//! seed corpus (`tests/fuzz-corpus/request`) sent to `Gateway::chat`, over the real openai plugin
//! (loaded from its shared library) and a healthy mock upstream (`fuzz_gateway_chat_body`).
//!
//! The gateway peeks at a few fields (route, stream, token limits) and the plugin reads the whole
//! body with the canonical deserializer. Whatever the body: no panic; a body the canonical
//! deserializer refuses is a 4xx; a canonical body naming the route is never refused by the peek;
//! no answer is a 5xx (the upstream is healthy); and no body counts against the provider (no
//! failure but `bad_request`, the breaker stays closed). A short run in `cargo test`;
//! `scripts/fuzz.sh` runs it long (docs/testing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;
#[path = "../../../tests/fuzz/mutate.rs"]
mod mutate;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use mutate::{JSON, REQUEST_DICT, Structure, corpus, inputs};
use proptest::prelude::*;
use serde_json::Value;
use stilts_gateway::mock::{MockConfig, MockUpstream};
use stilts_gateway::{ChatReply, Gateway, GatewayConfig};
use stilts_plugin::canonical::ChatRequest;

struct World {
    rt: tokio::runtime::Runtime,
    gateway: Gateway,
    _mock: MockUpstream,
}

/// One gateway over one healthy mock upstream, for every case of the test binary.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let plugin = common::openai_plugin();
        let (gateway, mock) = rt.block_on(async {
            let mock = MockUpstream::start_local(MockConfig::named("fuzz"))
                .await
                .unwrap();
            let text = format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 0\n\
                 [routes.chat]\nrouter = {{ policy = \"priority\" }}\n\
                 [[routes.chat.deployments]]\nname = \"mock\"\nplugin = \"{0}\"\n\
                 base_url = \"http://{1}/v1\"\nmodel = \"mock-model\"\n\
                 [routes.emb]\nkind = \"embeddings\"\nrouter = {{ policy = \"priority\" }}\n\
                 [[routes.emb.deployments]]\nname = \"mock\"\nplugin = \"{0}\"\n\
                 base_url = \"http://{1}/v1\"\nmodel = \"mock-embedding\"\n",
                plugin.display(),
                mock.addr()
            );
            let valid = GatewayConfig::parse(&text)
                .unwrap()
                .validate(std::path::Path::new("."))
                .unwrap();
            (Gateway::new(&valid).unwrap(), mock)
        });
        World {
            rt,
            gateway,
            _mock: mock,
        }
    })
}

/// The body, with `model` set to the route when `to_route` (so most cases get past the route
/// lookup) and `stream` forced when `stream` is set.
fn aimed(body: &[u8], to_route: bool, stream: Option<bool>) -> Vec<u8> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    if to_route {
        obj.insert("model".into(), Value::from("chat"));
    }
    if let Some(s) = stream {
        obj.insert("stream".into(), Value::from(s));
    }
    serde_json::to_vec(&obj).unwrap()
}

fn check(body: Vec<u8>) {
    let w = world();
    let canonical = ChatRequest::from_json(&body);
    let names_route = canonical.as_ref().is_ok_and(|r| r.model == "chat");
    let result = w.rt.block_on(async {
        let reply = w.gateway.chat(Bytes::from(body.clone()), None).await;
        // A stream is read to its end, as a client would.
        if let Ok(ChatReply::Stream { stream, .. }) = reply {
            let drained = tokio::time::timeout(Duration::from_secs(30), stream.count()).await;
            assert!(drained.is_ok(), "a stream did not end");
            return Ok(());
        }
        reply.map(|_| ())
    });
    let shown = body.escape_ascii().to_string();
    match result {
        Ok(()) => assert!(
            canonical.is_ok(),
            "answered a body the canonical deserializer refuses: {shown}"
        ),
        Err(e) => {
            assert!(
                e.status.is_client_error(),
                "{} for {shown}: {}",
                e.status,
                e.message
            );
            if names_route {
                assert!(
                    !e.message
                        .starts_with("the body is not a chat completion request"),
                    "the peek refused a canonical request: {shown}: {}",
                    e.message
                );
            }
        }
    }
    assert_no_provider_failure(&shown);
}

/// No client body counted against the provider: its breaker is closed and it has no failure but
/// `bad_request`.
fn assert_no_provider_failure(shown: &str) {
    let status = world().gateway.status_json();
    for route in ["chat", "emb"] {
        let provider = &status["routes"][route]["providers"][0];
        assert_eq!(provider["breaker"]["state"], "closed", "{status}");
        for (class, n) in provider["failures"].as_object().unwrap() {
            if class != "bad_request" {
                assert_eq!(
                    n, 0,
                    "a client's body counted as a {class} failure on {route}: {shown}"
                );
            }
        }
    }
}

/// The harness reaches the upstream: every seed, aimed at the route, is answered (so the fuzz
/// target cannot pass by refusing everything at the door).
#[test]
fn fuzz_seeds_are_answered() {
    let w = world();
    for seed in corpus("request") {
        for stream in [false, true] {
            let body = aimed(&seed, true, Some(stream));
            let reply = w.rt.block_on(w.gateway.chat(Bytes::from(body), None));
            assert!(reply.is_ok(), "{reply:?}");
        }
    }
}

/// Found by fuzzing (AFL++ on `canonical-request`): a body with a byte like 0x80 in a string the
/// gateway's peek skips (a message) or the canonical deserializer ignores (an unknown field of a
/// tool) was read as a request; it is a 400 now, before any routing.
#[test]
fn regression_a_request_body_that_is_not_utf8_is_a_400() {
    let w = world();
    for body in [
        &b"{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"h\x80i\"}]}"[..],
        b"{\"model\":\"chat\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"kype\":\"\x86\",\"function\":{\"name\":\"f\"}}]}",
    ] {
        let reply = w.rt.block_on(w.gateway.chat(Bytes::from(body.to_vec()), None));
        match reply {
            Err(e) => assert_eq!(e.status.as_u16(), 400, "{}", e.message),
            Ok(r) => panic!("answered {r:?}"),
        }
    }
}

proptest! {
    #[test]
    fn fuzz_gateway_chat_body(
        body in inputs(corpus("request"), REQUEST_DICT, Structure::Whole(JSON)),
        to_route in prop::bool::weighted(0.9),
        stream in prop::option::of(any::<bool>()),
    ) {
        check(aimed(&body, to_route, stream));
    }
}

/// The Messages, Responses and embeddings ingresses under the same contract as chat: the handler
/// (what `POST /v1/messages`, `/v1/messages/count_tokens`, `/v1/responses` and `/v1/embeddings`
/// run) answers any body with
/// a success or a 4xx in the dialect's error shape, never a 5xx (the upstream is healthy), streams
/// end, and no body counts against the provider.
mod dialects {
    use super::*;
    use axum::body::Body;
    use axum::extract::State;
    use http_body_util::BodyExt;
    use stilts_gateway::ingress::{embeddings, messages, responses};

    #[derive(Clone, Copy, Debug)]
    enum Endpoint {
        Messages,
        CountTokens,
        Responses,
        Embeddings,
    }

    /// Runs the handler of `endpoint` on `body`, as the server would for a request.
    async fn call(endpoint: Endpoint, body: Vec<u8>) -> axum::response::Response {
        let gateway = world().gateway.clone();
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
        let request = Body::from(body);
        match endpoint {
            Endpoint::Messages => messages::handle(State(gateway), headers, request).await,
            Endpoint::CountTokens => messages::count_tokens(State(gateway), headers, request).await,
            Endpoint::Responses => responses::handle(State(gateway), headers, request).await,
            Endpoint::Embeddings => embeddings::handle(State(gateway), headers, request).await,
        }
    }

    fn check_dialect(endpoint: Endpoint, body: Vec<u8>) {
        let w = world();
        let shown = body.escape_ascii().to_string();
        let (status, text) = w.rt.block_on(async {
            let response = call(endpoint, body.clone()).await;
            let status = response.status();
            // A stream is read to its end, as a client would.
            let collected =
                tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
                    .await
                    .expect("an answer did not end");
            let bytes = collected.map(|c| c.to_bytes()).unwrap_or_default();
            (status, String::from_utf8_lossy(&bytes).into_owned())
        });
        assert!(
            status.is_success() || status.is_client_error(),
            "{endpoint:?}: {status} for {shown}: {text}"
        );
        if status.is_client_error() {
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{endpoint:?}: a {status} that is not JSON ({e}): {text}")
            });
            let message = match endpoint {
                Endpoint::Messages | Endpoint::CountTokens => {
                    assert_eq!(json["type"], "error", "{endpoint:?}: {text}");
                    &json["error"]["message"]
                }
                Endpoint::Responses | Endpoint::Embeddings => &json["error"]["message"],
            };
            assert!(
                message.as_str().is_some_and(|m| !m.is_empty()),
                "{endpoint:?}: a {status} without a message: {text}"
            );
        }
        assert_no_provider_failure(&format!("{endpoint:?}: {shown}"));
    }

    /// The harness reaches the upstream: every seed is answered with a 200.
    #[test]
    fn fuzz_dialect_seeds_are_answered() {
        let w = world();
        for (endpoint, folder) in [
            (Endpoint::Messages, "messages-request"),
            (Endpoint::CountTokens, "messages-request"),
            (Endpoint::Responses, "responses-request"),
            (Endpoint::Embeddings, "embeddings-request"),
        ] {
            for seed in corpus(folder) {
                let mut seed: Value = serde_json::from_slice(&seed).unwrap();
                if matches!(endpoint, Endpoint::CountTokens) {
                    // A count takes only what shapes the prompt.
                    let obj = seed.as_object_mut().unwrap();
                    obj.retain(|k, _| {
                        ["model", "messages", "system", "tools", "tool_choice"]
                            .contains(&k.as_str())
                    });
                }
                let body = serde_json::to_vec(&seed).unwrap();
                let status =
                    w.rt.block_on(async { call(endpoint, body.clone()).await.status() });
                assert_eq!(
                    status,
                    200,
                    "{endpoint:?}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
    }

    proptest! {
        #[test]
        fn fuzz_gateway_messages_body(
            body in inputs(corpus("messages-request"), REQUEST_DICT, Structure::Whole(JSON)),
            to_route in prop::bool::weighted(0.9),
            stream in prop::option::of(any::<bool>()),
            count in prop::bool::weighted(0.2),
        ) {
            let endpoint = if count { Endpoint::CountTokens } else { Endpoint::Messages };
            check_dialect(endpoint, aimed(&body, to_route, stream));
        }

        #[test]
        fn fuzz_gateway_responses_body(
            body in inputs(corpus("responses-request"), REQUEST_DICT, Structure::Whole(JSON)),
            to_route in prop::bool::weighted(0.9),
            stream in prop::option::of(any::<bool>()),
        ) {
            check_dialect(Endpoint::Responses, aimed(&body, to_route, stream));
        }

        #[test]
        fn fuzz_gateway_embeddings_body(
            body in inputs(corpus("embeddings-request"), REQUEST_DICT, Structure::Whole(JSON)),
            to_route in prop::bool::weighted(0.9),
        ) {
            let mut body = aimed(&body, false, None);
            if to_route {
                if let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) {
                    obj.insert("model".into(), Value::from("emb"));
                    body = serde_json::to_vec(&obj).unwrap();
                }
            }
            check_dialect(Endpoint::Embeddings, body);
        }
    }
}
