//! Several gateway replicas sharing routing state through a real Redis (`[cluster]`): limits
//! hold across replicas within the bound docs/replicas.md derives, what one replica learns
//! steers the others within `sync_ms` plus a margin, and Redis going away loses no request.
//! Real gateways on loopback, fake upstreams, a real `redis-server` per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::redis_server::RedisServer;
use common::*;
use serde_json::Value;
use std::time::Duration;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};

const SYNC_MS: u64 = 50;
/// What "within sync_ms" is allowed on a loaded 2-core test machine, beyond sync_ms itself.
const MARGIN: Duration = Duration::from_millis(1_500);

async fn mock(name: &str) -> MockUpstream {
    MockUpstream::start_local(MockConfig::named(name))
        .await
        .unwrap()
}

fn down() -> Faults {
    Faults {
        status: Some(503),
        ..Faults::default()
    }
}

/// A config for replica `id`: `[cluster]` on `redis`, a `chat` route over `primary` (with
/// `primary_extra` lines) then `backup`.
fn replica_config(
    redis: &RedisServer,
    id: &str,
    primary: &MockUpstream,
    backup: &MockUpstream,
    route_extra: &str,
    primary_extra: &str,
) -> String {
    format!(
        "{SERVER}[cluster]\nredis_url = \"{}\"\nsync_ms = {SYNC_MS}\nreplica_id = \"{id}\"\n\
         [routes.chat.router]\npolicy = \"priority\"\n{route_extra}\n\
         [[routes.chat.deployments]]\nname = \"primary\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"p\"\npriority = 0\n{primary_extra}\n\
         [[routes.chat.deployments]]\nname = \"backup\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"b\"\npriority = 1\n",
        redis.url(),
        primary.base_url(),
        backup.base_url()
    )
}

async fn replicas(n: usize, config: impl Fn(&str) -> String) -> Vec<Harness> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(Harness::start(&config(&format!("r{i}"))).await);
    }
    // Every replica has exchanged once.
    for h in &all {
        assert!(
            eventually(Duration::from_secs(5), || metric(
                h,
                "stilts_cluster_replicas"
            ) == n as f64)
            .await,
            "replica never saw its {n} siblings: {}",
            metrics_of(h)
        );
    }
    all
}

/// A Redis, a primary and a backup upstream, and `n` replicas sharing state over them with the
/// default route.
async fn cluster_of(n: usize) -> (RedisServer, MockUpstream, MockUpstream, Vec<Harness>) {
    let redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    let all = replicas(n, |id| {
        replica_config(&redis, id, &primary, &backup, "", "")
    })
    .await;
    (redis, primary, backup, all)
}

fn metrics_of(h: &Harness) -> String {
    let body = h
        .gateway
        .metrics_text()
        .body(stilts_gateway::metrics::Format::Text);
    String::from_utf8_lossy(&body).into_owned()
}

fn metric(h: &Harness, series: &str) -> f64 {
    let text = metrics_of(h);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(f64::NAN)
}

fn provider_status(h: &Harness, name: &str) -> Value {
    let status = h.gateway.status_json();
    status["routes"]["chat"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap()
}

async fn served_by(h: &Harness) -> String {
    let (status, headers, body) = h.chat(request("chat")).await;
    assert_eq!(status, 200, "{body}");
    headers
        .get("x-provider")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_breaker_opened_on_one_replica_steers_the_others() {
    let (_redis, primary, _backup, all) = cluster_of(3).await;
    primary.set_faults(down());
    // Five consecutive failures on r0 open its breaker.
    for _ in 0..5 {
        assert_eq!(served_by(&all[0]).await, "backup");
    }
    assert_eq!(
        provider_status(&all[0], "primary")["breaker"]["state"],
        "open"
    );
    let sent = primary.stats().requests;
    let started = std::time::Instant::now();
    for h in &all[1..] {
        assert!(
            eventually(Duration::from_millis(SYNC_MS) + MARGIN, || {
                provider_status(h, "primary")["breaker"]["state"] == "open"
            })
            .await,
            "the opening did not reach a sibling"
        );
    }
    eprintln!(
        "breaker opening reached both siblings in {:?}",
        started.elapsed()
    );
    for h in &all[1..] {
        assert_eq!(served_by(h).await, "backup");
    }
    assert_eq!(
        primary.stats().requests,
        sent,
        "a sibling sent to the primary r0 found broken"
    );
}

#[tokio::test]
async fn a_retry_after_reaches_the_other_replicas() {
    let (_redis, primary, _backup, all) = cluster_of(3).await;
    primary.script([Faults {
        status: Some(429),
        retry_after_s: Some(30.0),
        ..Faults::default()
    }]);
    assert_eq!(served_by(&all[0]).await, "backup");
    let sent = primary.stats().requests;
    for h in &all[1..] {
        assert!(
            eventually(Duration::from_millis(SYNC_MS) + MARGIN, || {
                provider_status(h, "primary")["cooldown"]["kind"] == "ratelimited"
            })
            .await,
            "the Retry-After did not reach a sibling: {}",
            provider_status(h, "primary")
        );
        let remaining = provider_status(h, "primary")["cooldown"]["remaining_ms"]
            .as_u64()
            .unwrap();
        assert!(
            (25_000..=30_000).contains(&remaining),
            "the sibling waits out r0's Retry-After, not its own default: {remaining} ms"
        );
        assert_eq!(served_by(h).await, "backup");
    }
    assert_eq!(primary.stats().requests, sent);
}

/// Sends `total` requests round-robin over `all`, one every `interval`, and returns how many the
/// primary served.
async fn paced(all: &[Harness], total: usize, interval: Duration) -> usize {
    let mut primary = 0;
    let mut ticks = tokio::time::interval(interval);
    for i in 0..total {
        ticks.tick().await;
        if served_by(&all[i % all.len()]).await == "primary" {
            primary += 1;
        }
    }
    primary
}

/// The documented bound (docs/replicas.md): each sibling may send what it sends in two exchange
/// periods plus a round trip before the others count it. Here: 3 replicas, each sending one
/// request every 3 × 40 ms, exchange 50 ms (2 × 50 ms + a margin for a loaded machine: 150 ms).
fn overshoot_bound(replicas: usize, per_replica_interval: Duration) -> usize {
    let stale = Duration::from_millis(2 * SYNC_MS + 50);
    (replicas - 1)
        * (stale.as_millis() as usize).div_ceil(per_replica_interval.as_millis() as usize)
}

#[tokio::test]
async fn a_requests_per_minute_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    let all = replicas(3, |id| {
        replica_config(
            &redis,
            id,
            &primary,
            &backup,
            "",
            "requests_per_minute = 12",
        )
    })
    .await;
    let interval = Duration::from_millis(40);
    let served = paced(&all, 45, interval).await;
    let bound = overshoot_bound(3, interval * 3);
    eprintln!("primary served {served} of 45 under a limit of 12 (bound 12 + {bound})");
    assert!(served >= 12, "the limit wasted capacity: {served}");
    assert!(
        served <= 12 + bound,
        "{served} requests passed a shared limit of 12 (bound {bound}); unshared it would be 36"
    );
}

#[tokio::test]
async fn the_spend_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    // The price of one request, measured on a lone gateway: the mock bills a quarter of the
    // request's size in input tokens.
    let priced = "input_usd_per_mtok = 1000000.0";
    let probe = Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"primary\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"p\"\n{priced}\n",
        primary.base_url()
    ))
    .await;
    served_by(&probe).await;
    let unit = provider_status(&probe, "primary")["cost_usd"]
        .as_f64()
        .unwrap();
    assert!(unit > 0.0);
    drop(probe);
    let limit = unit * 10.0 - unit / 2.0;
    let all = replicas(3, |id| {
        replica_config(
            &redis,
            id,
            &primary,
            &backup,
            &format!("[routes.chat.router.spend]\nlimit_usd = {limit}\n"),
            priced,
        )
    })
    .await;
    let interval = Duration::from_millis(40);
    let served = paced(&all, 45, interval).await;
    let bound = overshoot_bound(3, interval * 3);
    eprintln!(
        "primary served {served} of 45 under a spend limit of 10 requests (bound 10 + {bound})"
    );
    assert!(served >= 10, "the limit wasted budget: {served}");
    // Each replica's /status shows its own spend and what its siblings reported.
    let route = &all[0].gateway.status_json()["routes"]["chat"];
    let own = route["spent_usd"].as_f64().unwrap();
    let siblings = route["siblings_spent_usd"].as_f64().unwrap();
    assert!(
        own > 0.0 && siblings > own,
        "own {own}, siblings {siblings}"
    );
    assert!(
        served <= 10 + bound,
        "{served} paid requests passed a shared limit of 10 (bound {bound}); unshared it would be 30"
    );
}

#[tokio::test]
async fn killing_redis_loses_no_request_and_restarting_it_reconverges() {
    let mut redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    let all = replicas(3, |id| {
        replica_config(&redis, id, &primary, &backup, "", "")
    })
    .await;
    let all = std::sync::Arc::new(all);
    // Steady traffic on every replica while Redis dies and comes back.
    let load = {
        let all = all.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            let mut failed = Vec::new();
            for i in 0..150 {
                let (status, _, body) = all[i % 3].chat(request("chat")).await;
                if status == 200 {
                    answered += 1;
                } else {
                    failed.push((status, body));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (answered, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    for h in all.iter() {
        assert!(
            eventually(Duration::from_secs(3), || metric(
                h,
                "stilts_cluster_connected"
            ) == 0.0)
            .await,
            "a replica did not notice Redis was gone"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    for h in all.iter() {
        assert!(
            eventually(Duration::from_secs(10), || metric(
                h,
                "stilts_cluster_connected"
            ) == 1.0
                && metric(h, "stilts_cluster_replicas") == 3.0)
            .await,
            "a replica did not re-converge after Redis came back: {}",
            metrics_of(h)
        );
        assert!(metric(h, "stilts_cluster_fallbacks_total") >= 1.0);
    }
    let (answered, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed while Redis was away: {failed:?}"
    );
    assert_eq!(answered, 150);
    assert!(
        logs().contains("Redis is not answering"),
        "the fallback was not logged"
    );
    // Shared state flows again: a breaker opened on r2 steers r0.
    primary.set_faults(down());
    for _ in 0..5 {
        served_by(&all[2]).await;
    }
    assert!(
        eventually(Duration::from_millis(SYNC_MS) + MARGIN, || {
            provider_status(&all[0], "primary")["breaker"]["state"] == "open"
        })
        .await
    );
}

#[tokio::test]
async fn a_slow_redis_slows_no_request() {
    let redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    // sync_ms 500: an exchange waits up to 2 s (5 x sync_ms) for Redis, so a request that waited
    // for one would take at least that long.
    let all = replicas(2, |id| {
        replica_config(&redis, id, &primary, &backup, "", "")
            .replace(&format!("sync_ms = {SYNC_MS}"), "sync_ms = 500")
    })
    .await;
    // Redis stops answering for 3 s (it is busy, not gone: connections stay open).
    let port = redis.port;
    let sleeper = tokio::task::spawn_blocking(move || {
        let busy = RedisServer::attach(port);
        busy.command_with_timeout(&["DEBUG", "SLEEP", "3"], Duration::from_secs(10))
    });
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(3_000) {
        for h in &all {
            let t0 = std::time::Instant::now();
            assert_eq!(served_by(h).await, "primary");
            slowest = slowest.max(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("slowest request while Redis slept: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(1_000),
        "a request waited for Redis (an exchange waits up to 2 s): {slowest:?}"
    );
    assert!(metric(&all[0], "stilts_cluster_sync_failures_total") >= 1.0);
    sleeper.await.unwrap();
    for h in &all {
        assert!(
            eventually(Duration::from_secs(10), || metric(
                h,
                "stilts_cluster_connected"
            ) == 1.0)
            .await
        );
    }
}

#[tokio::test]
async fn a_replica_started_late_picks_up_the_shared_state() {
    let redis = RedisServer::start();
    let primary = mock("primary").await;
    let backup = mock("backup").await;
    let config = |id: &str| replica_config(&redis, id, &primary, &backup, "", "");
    let early = replicas(1, config).await;
    primary.set_faults(down());
    for _ in 0..5 {
        served_by(&early[0]).await;
    }
    let late = Harness::start(&config("late")).await;
    assert!(
        eventually(Duration::from_millis(SYNC_MS) + MARGIN, || {
            provider_status(&late, "primary")["breaker"]["state"] == "open"
        })
        .await,
        "a new replica must start from the shared state"
    );
    let sent = primary.stats().requests;
    assert_eq!(served_by(&late).await, "backup");
    assert_eq!(primary.stats().requests, sent);
}

#[tokio::test]
async fn garbage_in_redis_is_logged_and_skipped_never_a_panic() {
    let (redis, _primary, _backup, all) = cluster_of(2).await;
    // A sibling entry that is not one.
    let reply = redis
        .command(&["HSET", "stilts:replicas", "intruder#1", "{not json"])
        .unwrap();
    assert!(reply.starts_with(':'), "{reply}");
    assert!(
        eventually(Duration::from_secs(3), || metric(
            &all[0],
            "stilts_cluster_bad_entries_total"
        ) >= 1.0)
        .await
    );
    assert!(
        logs().contains("cannot be read"),
        "the garbage was not logged"
    );
    assert_eq!(served_by(&all[0]).await, "primary");
    // The whole key of the wrong type: every exchange fails, requests do not.
    redis.command(&["DEL", "stilts:replicas"]).unwrap();
    redis
        .command(&["SET", "stilts:replicas", "garbage"])
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || metric(
            &all[1],
            "stilts_cluster_connected"
        ) == 0.0)
        .await
    );
    for h in &all {
        assert_eq!(served_by(h).await, "primary");
    }
    redis.command(&["DEL", "stilts:replicas"]).unwrap();
    for h in &all {
        assert!(
            eventually(Duration::from_secs(10), || metric(
                h,
                "stilts_cluster_connected"
            ) == 1.0)
            .await
        );
    }
}
