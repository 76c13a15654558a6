//! A plain attempt on a provider the router has not measured yet is not cut to leave its fallback
//! time: the fallback is hedged when it needs to start, and the first answer wins; a stream
//! without its first token by then is hedged too, and the first first token wins
//! (`crates/core/src/router/plain_limit.rs`). Fake upstreams behind a real gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockUpstream};

/// A 2 s deadline: with the fallback unmeasured, half of it (1 s) is kept for the fallback. A
/// 200 ms default latency lets an unmeasured provider be hedged that early (at least twice it).
const ROUTE: &str = "deadline_ms = 2000\nlatency = { default_ms = 200 }\n";

fn slow(latency_ms: u64) -> Faults {
    Faults {
        latency_ms,
        ..Faults::default()
    }
}

/// A gateway with one `priority` route over `a` then `b`.
async fn gateway(a: &MockUpstream, b: &MockUpstream) -> Harness {
    Harness::start(&format!(
        "{SERVER}{}",
        priority_route("chat", &[("a", a), ("b", b)], ROUTE)
    ))
    .await
}

/// Streams whose first token comes `ms` after their headers.
fn first_token_after(ms: u64) -> Faults {
    Faults {
        first_token_ms: ms,
        ..Faults::default()
    }
}

/// `a` never answers, `b` answers at once, and a gateway over them.
async fn hung_a_healthy_b() -> (MockUpstream, MockUpstream, Harness) {
    let a = mock(
        "a",
        Faults {
            hang: true,
            ..Faults::default()
        },
    )
    .await;
    let b = mock("b", Faults::default()).await;
    let h = gateway(&a, &b).await;
    (a, b, h)
}

/// A plain request with a small `max_tokens`, so a's own headers limit stays far off.
async fn ask(h: &Harness) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = request("chat");
    req["max_tokens"] = json!(16);
    h.chat(req).await
}

async fn provider_status(h: &Harness, index: usize) -> Value {
    let status: Value = serde_json::from_str(&h.get("/status").await).unwrap();
    status["routes"]["chat"]["providers"][index].clone()
}

#[tokio::test]
async fn a_cold_provider_that_hangs_is_hedged_in_time_and_counted_as_timed_out() {
    let (a, _b, h) = hung_a_healthy_b().await;
    let (status, headers, body) = ask(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "b");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned == 1).await,
        "the hung attempt was not cancelled"
    );
    // It lost to the fallback by all the time the fallback needed: a timeout, for the breaker
    // and for the metrics alike.
    assert_eq!(provider_status(&h, 0).await["failures"]["timeout"], 1);
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"stilts_attempt_failures_total{route="chat",provider="a",class="timeout"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cold_provider_s_long_answer_is_kept_while_its_fallback_is_hedged() {
    // a answers after 1.4 s, past the 1 s at which a cut would have left b its time; b, hedged at
    // 1 s, would answer at 2.2 s, too late for the deadline.
    let a = mock("a", slow(1_400)).await;
    let b = mock("b", slow(1_200)).await;
    let h = gateway(&a, &b).await;
    let (status, headers, body) = ask(&h).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "a");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert!(
        eventually(Duration::from_secs(5), || b.stats().abandoned == 1).await,
        "the losing hedge was not cancelled"
    );
    let a_status = provider_status(&h, 0).await;
    assert_eq!(a_status["failures"]["timeout"], 0, "a answered: no failure");
    assert_eq!(a_status["in_flight"], 0);
}

/// A stream whose provider hangs before its first token: with the configured 10 s first-token
/// limit it used to hold the call to its 2 s deadline. Its fallback is hedged when it must start,
/// answers the client's stream, and the hung attempt is cancelled at the fallback's first token
/// and counted as a timeout.
#[tokio::test]
async fn a_stream_without_its_first_token_is_hedged_in_time() {
    let (a, _b, h) = hung_a_healthy_b().await;
    let (status, headers, body) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "b");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    let (text, done, error) = sse_text(&body);
    assert!(!text.is_empty() && done == 1 && error.is_none(), "{body}");
    assert!(
        eventually(Duration::from_secs(5), || a.stats().abandoned == 1).await,
        "the hung stream was not cancelled"
    );
    assert_eq!(provider_status(&h, 0).await["failures"]["timeout"], 1);
}

/// The first first token wins: a's first token (1.3 s) comes after its fallback was hedged (1 s)
/// but before b's (1.6 s), so the client gets a's stream and b's is cancelled; a answered, so it
/// counts no failure.
#[tokio::test]
async fn a_stream_s_late_first_token_beats_its_fallback_hedge() {
    let a = mock("a", first_token_after(1_300)).await;
    let b = mock("b", first_token_after(600)).await;
    let h = gateway(&a, &b).await;
    let (status, headers, body) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&headers, "x-provider"), "a");
    assert_eq!(header(&headers, "x-stilts-attempts"), "2");
    assert!(
        eventually(Duration::from_secs(5), || b.stats().abandoned == 1).await,
        "the losing hedge was not cancelled"
    );
    assert_eq!(provider_status(&h, 0).await["failures"]["timeout"], 0);
}
