//! Embeddings (`POST /v1/embeddings`) end to end: routes with `kind = "embeddings"`, the openai
//! plugin's embeddings functions (ABI 1.1) in its real `.so`, the fake upstream's deterministic
//! vectors, failover, and the base64 encoding the official SDKs ask for by default.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

fn config(up: &MockUpstream) -> String {
    format!(
        "{SERVER}[routes.emb]\nkind = \"embeddings\"\n[routes.emb.router]\npolicy = \"priority\"\n\
         [[routes.emb.deployments]]\nname = \"dead\"\nplugin = \"PLUGIN\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"gone\"\npriority = 0\n\
         [[routes.emb.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"text-embedding-3-small\"\npriority = 1\n\
         input_usd_per_mtok = 0.02\n\
         [[routes.chat.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"gpt-4o-mini\"\n",
        up.base_url(),
        up.base_url()
    )
}

async fn post(h: &Harness, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = h.http.post(h.url(path)).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn embeddings_are_routed_with_failover_in_floats_or_base64() {
    let up = MockUpstream::start_local(MockConfig::named("up"))
        .await
        .unwrap();
    let h = Harness::start(&config(&up)).await;
    let (status, headers, floats) = post(
        &h,
        "/v1/embeddings",
        &json!({"model": "emb", "input": ["hello world", "bye"], "dimensions": 4}),
    )
    .await;
    assert_eq!(status, 200, "{floats}");
    assert_eq!(header(&headers, "x-provider"), "up");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert_eq!(floats["object"], "list");
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let first: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(first.len(), 4);
    assert!(floats["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    // The upstream got the deployment's model, floats asked for, dimensions carried.
    let sent = up.last_request().unwrap();
    assert_eq!(sent["model"], "text-embedding-3-small");
    assert_eq!(sent["encoding_format"], "float");
    assert_eq!(sent["dimensions"], 4);
    // base64: little-endian f32 of the same vector.
    let (status, _, encoded) = post(
        &h,
        "/v1/embeddings",
        &json!({"model": "emb", "input": ["hello world", "bye"], "dimensions": 4, "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{encoded}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert_eq!(decoded, first);
    // Accounted like chat: tokens and cost on the deployment that served.
    let status = h.gateway.status_json();
    let served = &status["routes"]["emb"]["providers"][1];
    assert!(served["input_tokens"].as_u64().unwrap() > 0, "{served}");
    assert!(served["cost_usd"].as_f64().unwrap() > 0.0, "{served}");
}

#[tokio::test]
async fn a_route_serves_one_kind_and_says_so() {
    let up = MockUpstream::start_local(MockConfig::named("up"))
        .await
        .unwrap();
    let h = Harness::start(&config(&up)).await;
    let (status, _, body) = post(
        &h,
        "/v1/embeddings",
        &json!({"model": "chat", "input": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "wrong_route_kind");
    let (status, _, body) = h.chat(request("emb")).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings"),
        "{body}"
    );
    let (status, _, body) = post(&h, "/v1/embeddings", &json!({"model": "emb", "input": []})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input"),
        "{body}"
    );
}

#[tokio::test]
async fn an_upstream_error_fails_over_and_a_plugin_without_embeddings_is_refused_at_load() {
    let broken = MockUpstream::start_local(MockConfig {
        faults: Faults {
            status: Some(500),
            ..Faults::default()
        },
        ..MockConfig::named("broken")
    })
    .await
    .unwrap();
    let up = MockUpstream::start_local(MockConfig::named("up"))
        .await
        .unwrap();
    let h = Harness::start(&format!(
        "{SERVER}[routes.emb]\nkind = \"embeddings\"\n[routes.emb.router]\npolicy = \"priority\"\n\
         [[routes.emb.deployments]]\nname = \"broken\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"e\"\npriority = 0\n\
         [[routes.emb.deployments]]\nname = \"up\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"e\"\npriority = 1\n",
        broken.base_url(),
        up.base_url()
    ))
    .await;
    let (status, headers, body) =
        post(&h, "/v1/embeddings", &json!({"model": "emb", "input": "x"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "up");
    assert_eq!(broken.stats().requests, 1);
    // The anthropic plugin serves no embeddings: the config is refused, naming the deployment.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stilts.toml");
    std::fs::write(
        &path,
        with_plugin(&format!(
            "{SERVER}[routes.emb]\nkind = \"embeddings\"\n\
             [[routes.emb.deployments]]\nname = \"claude\"\nplugin = \"ANTHROPIC\"\nbase_url = \"{}\"\nmodel = \"c\"\n",
            up.base_url()
        )),
    )
    .unwrap();
    let valid = stilts_gateway::GatewayConfig::load(&path).unwrap();
    let e = stilts_gateway::Gateway::new(&valid).unwrap_err();
    assert_eq!(e.path, "routes.emb.deployments[0].plugin");
    assert!(e.problem.contains("serves no embeddings"), "{e}");
}
