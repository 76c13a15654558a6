//! A storm of `/metrics` scrapes shares renders and bounds memory. In its own test binary: it
//! measures the process's RSS, which other tests running beside it would move.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use stilts_gateway::mock::{MockConfig, MockUpstream};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_scrape_storm_shares_renders_and_bounds_memory() {
    let up = MockUpstream::start_local(MockConfig::named("a"))
        .await
        .unwrap();
    let mut toml = SERVER.to_owned();
    for r in 0..1_500 {
        toml.push_str(&format!(
            "[[routes.route-{r}.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
            up.base_url()
        ));
    }
    let h = Harness::start(&toml).await;
    let one = h.get("/metrics").await;
    assert!(one.len() > 1_000_000, "{} bytes", one.len());
    // The documented cardinality bound (docs/configuration.md): at most 14 + 49 per route + 24
    // per deployment.
    let series = one
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(series <= 14 + 49 * 1_500 + 24 * 1_500, "{series} series");
    assert_eq!(
        stilts_gateway::metrics::series_bound(1_500, 1_500),
        14 + 49 * 1_500 + 24 * 1_500
    );
    let before = rss_kib();
    let scrapes = (0..40).map(|_| {
        let http = h.http.clone();
        let url = h.url("/metrics");
        tokio::spawn(async move {
            use futures_util::StreamExt;
            use std::hash::Hasher;
            let r = http.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            // Hashed as it streams: the test holds no copy of its own.
            let mut hash = std::collections::hash_map::DefaultHasher::new();
            let mut chunks = r.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                hash.write(&chunk.unwrap());
            }
            (status, hash.finish())
        })
    });
    let results = futures_util::future::join_all(scrapes).await;
    let mut bodies = std::collections::HashSet::new();
    let mut served = 0;
    for r in results {
        let (status, body) = r.unwrap();
        match status {
            200 => {
                served += 1;
                bodies.insert(body);
            }
            503 => {}
            other => panic!("scrape answered {other}"),
        }
    }
    assert!(served >= 8, "only {served} scrapes served");
    assert!(
        bodies.len() <= 3,
        "{} distinct renders for one storm",
        bodies.len()
    );
    let grown_kib = rss_kib().saturating_sub(before);
    let render_kib = (one.len() / 1024) as u64;
    assert!(
        grown_kib < 12 * render_kib,
        "RSS grew {grown_kib} KiB for renders of {render_kib} KiB"
    );
}
