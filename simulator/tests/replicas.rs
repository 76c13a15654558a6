//! Gateway replicas in the simulator (`replicas`, `sync_ms`, `shared` on a config): per-replica
//! routers behind a round-robin balancer, exchanging the core's shared state in virtual time as
//! the gateway's `[cluster]` does through Redis.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a broken fixture should fail the test loudly

use std::path::Path;
use stilts_sim::{Report, RunReport, Scenario, simulate};

fn parse(text: &str) -> Result<Scenario, String> {
    Scenario::parse(text, Path::new("replicas.toml")).map_err(|e| e.to_string())
}

fn run(text: &str) -> Report {
    let s = parse(text).unwrap_or_else(|e| panic!("{e}"));
    simulate(&s, s.seed, &mut |_| {})
}

fn named<'a>(report: &'a Report, name: &str) -> &'a RunReport {
    report.runs.iter().find(|r| r.name == name).unwrap()
}

/// One account limited to 240 requests a minute, 10 requests/s offered, a backup beside it.
fn limited(configs: &str) -> String {
    format!(
        r#"
name = "replicas"
duration_s = 300
[traffic]
rate_rps = 10
[[providers]]
name = "a"
requests_per_minute = 240
[[providers]]
name = "b"
{configs}
"#
    )
}

fn config(name: &str, extra: &str) -> String {
    format!(
        r#"
[[configs]]
name = "{name}"
{extra}
[configs.router]
policy = "priority"
providers = [{{ name = "a", priority = 0, requests_per_minute = 240 }}, {{ name = "b", priority = 1 }}]
"#
    )
}

fn attempts_on(run: &RunReport, provider: &str) -> u64 {
    run.providers
        .iter()
        .find(|p| p.name == provider)
        .unwrap()
        .attempts
}

#[test]
fn shared_replicas_keep_a_rate_limit_that_lone_replicas_overrun() {
    let report = run(&limited(&format!(
        "{}{}{}",
        config("one", ""),
        config("shared", "replicas = 4\nsync_ms = 100"),
        config("alone", "replicas = 4\nshared = false"),
    )));
    let one = named(&report, "one");
    let shared = named(&report, "shared");
    let alone = named(&report, "alone");
    // 300 s at 240/min: 1200 admitted at most; one gateway sends exactly that to `a`.
    assert!(attempts_on(one, "a") <= 1_200, "{}", attempts_on(one, "a"));
    // Shared: over by at most what the siblings send in one exchange period: 3 replicas x 2.5
    // requests/s x 0.1 s, at each of the 5 minute turns, rounded up generously.
    let over = attempts_on(shared, "a").saturating_sub(1_200);
    assert!(over <= 25, "shared replicas overran the limit by {over}");
    // Alone: each replica thinks the whole limit is its own; the provider turns away the rest
    // (each replica then waits out the Retry-After it got, so the excess is bounded too).
    assert!(
        attempts_on(alone, "a") > attempts_on(shared, "a") + 150,
        "alone {} vs shared {}",
        attempts_on(alone, "a"),
        attempts_on(shared, "a")
    );
    // Their extra attempts (the 429s they run into, and the failovers after) are several times
    // the shared replicas'.
    assert!(
        alone.amplification - 1.0 > 3.0 * (shared.amplification - 1.0),
        "alone {} vs shared {}",
        alone.amplification,
        shared.amplification
    );
    for r in [one, shared, alone] {
        assert!(r.availability >= 0.999, "{}: {}", r.name, r.availability);
    }
}

#[test]
fn one_replica_is_exactly_one_gateway() {
    let plain = run(&limited(&config("x", "")));
    let one = run(&limited(&config("x", "replicas = 1")));
    assert_eq!(
        serde_json::to_string(&plain).unwrap(),
        serde_json::to_string(&one).unwrap()
    );
}

#[test]
fn replicas_are_deterministic() {
    let text = limited(&config("shared", "replicas = 3\nsync_ms = 250"));
    assert_eq!(
        serde_json::to_string(&run(&text)).unwrap(),
        serde_json::to_string(&run(&text)).unwrap()
    );
}

#[test]
fn bad_replica_settings_are_named_with_a_fix() {
    for (extra, path, says) in [
        ("replicas = 0", "configs[0].replicas", "from 1 to 64"),
        ("replicas = 65", "configs[0].replicas", "from 1 to 64"),
        ("sync_ms = 100", "configs[0].sync_ms", "several replicas"),
        ("shared = true", "configs[0].shared", "several replicas"),
        (
            "replicas = 2\nsync_ms = 5",
            "configs[0].sync_ms",
            "outside 10 to 60000",
        ),
        (
            "replicas = 2\nshared = false\nsync_ms = 100",
            "configs[0].sync_ms",
            "shared = false",
        ),
    ] {
        let e = parse(&limited(&config("x", extra))).unwrap_err();
        assert!(e.contains(path) && e.contains(says), "{extra}: {e}");
    }
    let e = parse(&limited("").replace("requests_per_minute = 240", "requests_per_minute = 0"))
        .unwrap_err();
    assert!(e.contains("providers[0].requests_per_minute"), "{e}");
}
