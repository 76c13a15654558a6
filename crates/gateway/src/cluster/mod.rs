//! Shared state between gateway replicas, exchanged through Redis off the request path.
//!
//! With `[cluster]`, one task per gateway ([`spawn`]) runs an exchange every `sync_ms`:
//!
//! 1. each route's router writes its [`stilts_core::ReplicaReport`] (breaker openings and
//!    recoveries, cool-downs, per-minute usage, spend), under its lock for a few hundred ns;
//! 2. one pipelined round trip writes this replica's entry into the hash `{key_prefix}replicas`
//!    (`HSET`) and reads every sibling's (`HGETALL`);
//! 3. each route merges its siblings' reports ([`stilts_core::SharedView::merge`]) and takes them
//!    in ([`stilts_core::Router::apply_shared`]).
//!
//! No request ever waits for Redis: requests read only their router, which the exchange updates
//! between them. When Redis is unreachable, slow (no answer within the round-trip limit) or
//! answers garbage, the replica runs on its local state, with the siblings' last known state
//! fading as it ages (per-minute usage after a minute; breaker openings and cool-downs at their
//! own end); `stilts_cluster_connected` drops to 0, a warning is logged once, and the task
//! reconnects with jittered exponential backoff (100 ms doubling to 5 s). Once back, the next
//! exchange re-converges every replica. Entries of replicas gone for ten minutes are removed,
//! unless they still hold spend of a running period.
//!
//! The bounds this gives (each limit's overshoot, the staleness) are derived in
//! `docs/replicas.md`.

mod wire;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::time::Duration;
use stilts_config::ClusterSettings;
use stilts_core::{Instant as CoreInstant, SharedView};

use crate::engine::Gateway;
use wire::Entry;

/// First reconnect delay; it doubles up to [`RECONNECT_MAX`].
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Entries whose replica has not written for this long are removed (unless they hold spend).
const GONE_AFTER_MS: u64 = 600_000;
/// A replica counts as live while its entry is younger than this many exchange periods.
const LIVE_PERIODS: u64 = 10;

/// A running exchange; dropping it stops the task (and lets the gateway start another).
#[derive(Debug)]
pub struct ClusterTask {
    task: tokio::task::JoinHandle<()>,
    gateway: Gateway,
}

impl Drop for ClusterTask {
    fn drop(&mut self) {
        self.task.abort();
        self.gateway.release_cluster();
    }
}

/// Starts the shared-state exchange of `gateway` if its config has `[cluster]` and none runs
/// yet. Must be called inside a tokio runtime. `stilts serve` (and [`crate::server::serve`])
/// call it; an embedding application that serves by other means calls it itself.
pub fn spawn(gateway: &Gateway) -> Option<ClusterTask> {
    let settings = gateway.cluster_settings()?.clone();
    if !gateway.claim_cluster() {
        return None;
    }
    let password = settings
        .password_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|p| !p.is_empty());
    let link = Link::new(&settings, password);
    tracing::info!(
        redis = %settings.redis_url,
        replica = %link.field,
        sync_ms = settings.sync.as_millis() as u64,
        "cluster: sharing routing state with sibling replicas through Redis"
    );
    Some(ClusterTask {
        task: tokio::spawn(run(gateway.clone(), settings, link)),
        gateway: gateway.clone(),
    })
}

/// The connection to Redis and this replica's place in it.
struct Link {
    /// The Redis client, or why none could be made from the config.
    client: Result<redis::Client, String>,
    connection: Option<redis::aio::MultiplexedConnection>,
    /// `{key_prefix}replicas`.
    key: String,
    /// This replica's field: its id and a random incarnation.
    field: String,
    /// Longest wait for a connection or an answer.
    round_trip_limit: Duration,
    /// When the next connection attempt may start, and the current backoff.
    reconnect_at: std::time::Instant,
    backoff: Duration,
}

impl Link {
    fn new(settings: &ClusterSettings, password: Option<String>) -> Link {
        let client = redis::IntoConnectionInfo::into_connection_info(settings.redis_url.as_str())
            .map(|info| match password {
                Some(password) => {
                    let redis = info.redis_settings().clone().set_password(password);
                    info.set_redis_settings(redis)
                }
                None => info,
            })
            .and_then(redis::Client::open)
            .map_err(|e| e.to_string());
        let id = settings
            .replica_id
            .clone()
            .unwrap_or_else(default_replica_id);
        let incarnation =
            std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Link {
            client,
            connection: None,
            key: format!("{}replicas", settings.key_prefix),
            field: format!("{id}#{:08x}", incarnation as u32),
            round_trip_limit: (settings.sync * 5)
                .clamp(Duration::from_millis(250), Duration::from_secs(2)),
            reconnect_at: std::time::Instant::now(),
            backoff: RECONNECT_MIN,
        }
    }

    /// A connection, opening one if the backoff allows.
    async fn connection(&mut self) -> Result<redis::aio::MultiplexedConnection, String> {
        if let Some(c) = &self.connection {
            return Ok(c.clone());
        }
        if std::time::Instant::now() < self.reconnect_at {
            return Err("reconnecting after a failure".into());
        }
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.round_trip_limit))
            .set_response_timeout(Some(self.round_trip_limit));
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.round_trip_limit, connect).await {
            Ok(Ok(c)) => {
                self.connection = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(format!("cannot connect: {e}"))),
            Err(_) => Err(self.failed(format!(
                "cannot connect within {} ms",
                self.round_trip_limit.as_millis()
            ))),
        }
    }

    /// Forgets the connection and schedules the next attempt after a jittered backoff.
    fn failed(&mut self, why: String) -> String {
        self.connection = None;
        let jitter = std::collections::hash_map::RandomState::new().hash_one(why.len()) % 1000;
        let wait = self.backoff.mul_f64(0.5 + jitter as f64 / 2000.0);
        self.reconnect_at = std::time::Instant::now() + wait;
        self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
        why
    }

    /// Writes `entry` and reads every entry (removing `gone` fields first), in one round trip.
    async fn exchange(
        &mut self,
        entry: &str,
        gone: &[String],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&self.key).arg(gone).ignore();
        }
        pipe.cmd("HSET")
            .arg(&self.key)
            .arg(&self.field)
            .arg(entry)
            .ignore();
        pipe.cmd("HGETALL").arg(&self.key);
        // Field names as bytes: one that is not UTF-8 is a bad entry, not a failed exchange.
        let answer = pipe.query_async::<(Vec<(Vec<u8>, Vec<u8>)>,)>(&mut connection);
        match tokio::time::timeout(self.round_trip_limit, answer).await {
            Ok(Ok((entries,))) => {
                self.backoff = RECONNECT_MIN;
                Ok(entries)
            }
            Ok(Err(e)) => Err(self.failed(format!("exchange failed: {e}"))),
            Err(_) => Err(self.failed(format!(
                "no answer within {} ms",
                self.round_trip_limit.as_millis()
            ))),
        }
    }
}

/// `host-pid`: unique per process on a host, readable in Redis.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| {
            h.trim()
                .replace(|c: char| c.is_whitespace() || c.is_control(), "")
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "stilts".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The siblings' entries as last read, and what was logged of them.
#[derive(Default)]
struct Siblings {
    entries: HashMap<String, Entry>,
    /// Fields whose garbage was already logged (logged once each, until they turn valid).
    logged_bad: std::collections::HashSet<String>,
}

impl Siblings {
    /// Replaces the known entries with a fresh read; returns how many could not be read.
    fn refresh(&mut self, own: &str, read: Vec<(Vec<u8>, Vec<u8>)>) -> u64 {
        self.entries.clear();
        let mut bad = 0;
        for (field, value) in read {
            let field = String::from_utf8_lossy(&field).into_owned();
            if field == own {
                continue;
            }
            match Entry::decode(&value) {
                Ok(entry) => {
                    self.logged_bad.remove(&field);
                    self.entries.insert(field, entry);
                }
                Err(why) => {
                    bad += 1;
                    if self.logged_bad.insert(field.clone()) {
                        tracing::error!(
                            replica = %crate::log_safe::escape(&field),
                            problem = %why,
                            "cluster: a sibling's entry in Redis cannot be read; it is skipped"
                        );
                    }
                }
            }
        }
        bad
    }

    /// Fields of replicas gone for [`GONE_AFTER_MS`] whose spend, if any, is of a period
    /// every route of ours has left.
    fn gone(&self, now_ms: u64, own_periods: &HashMap<&str, u64>) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, e)| now_ms.saturating_sub(e.at_ms) > GONE_AFTER_MS)
            .filter(|(_, e)| {
                e.routes.iter().all(|(route, r)| {
                    r.spent_usd == 0.0
                        || own_periods
                            .get(route.as_str())
                            .is_some_and(|p| r.spend_period < *p)
                })
            })
            .map(|(field, _)| field.clone())
            .collect()
    }

    /// Replicas with a fresh entry, this one included.
    fn live(&self, now_ms: u64, sync: Duration) -> usize {
        let fresh = LIVE_PERIODS * u64::try_from(sync.as_millis()).unwrap_or(u64::MAX);
        1 + self
            .entries
            .values()
            .filter(|e| now_ms.saturating_sub(e.at_ms) <= fresh)
            .count()
    }

    /// The merged view of `route` at `now`.
    fn view(&self, route: &str, now: CoreInstant) -> SharedView {
        let reports: Vec<_> = self
            .entries
            .values()
            .filter_map(|e| e.report(route, now))
            .collect();
        SharedView::merge(&reports)
    }
}

async fn run(gateway: Gateway, settings: ClusterSettings, mut link: Link) {
    let clock = gateway.clock();
    let metrics = gateway.metrics().cluster.clone();
    let mut siblings = Siblings::default();
    let mut connected = false;
    // Whether the loss of Redis was logged (once per loss, and once at start).
    let mut warned = false;
    let started_at = std::time::Instant::now();
    let mut last_success: Option<std::time::Instant> = None;
    let mut to_remove: Vec<String> = Vec::new();
    let mut ticks = tokio::time::interval(settings.sync);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = clock.now();
        let now_ms = now.as_nanos() / 1_000_000;
        let reports = gateway.shared_reports(now);
        let entry = Entry::from_reports(now, &reports).encode();
        let started = std::time::Instant::now();
        match link.exchange(&entry, &to_remove).await {
            Ok(read) => {
                let bad = siblings.refresh(&link.field, read);
                if let Some(m) = &metrics {
                    m.sync_seconds.observe(started.elapsed().as_secs_f64());
                    m.connected.set(1);
                    m.bad_entries.inc_by(bad);
                    m.replicas.set(
                        i64::try_from(siblings.live(now_ms, settings.sync)).unwrap_or(i64::MAX),
                    );
                }
                if !connected {
                    warned = false;
                    tracing::info!(
                        replicas = siblings.live(now_ms, settings.sync),
                        "cluster: exchanging shared state through Redis"
                    );
                }
                connected = true;
                last_success = Some(std::time::Instant::now());
                let periods: HashMap<&str, u64> = reports
                    .iter()
                    .map(|(route, r)| (route.as_str(), r.spend_period))
                    .collect();
                to_remove = siblings.gone(now_ms, &periods);
            }
            Err(why) => {
                if let Some(m) = &metrics {
                    m.sync_failures.inc();
                    m.connected.set(0);
                    if connected {
                        m.fallbacks.inc();
                    }
                }
                if !warned {
                    warned = true;
                    tracing::warn!(
                        problem = %why,
                        "cluster: Redis is not answering; this replica runs on its local state (and the siblings' last known state, fading) until it is back"
                    );
                }
                connected = false;
            }
        }
        if let Some(m) = &metrics {
            // Never synced: the age of the exchange itself.
            let since = last_success.unwrap_or(started_at);
            m.last_sync_age.set(since.elapsed().as_secs_f64());
        }
        // The siblings' last known state, read now or before: it keeps steering (and fading)
        // while Redis is away.
        let now = clock.now();
        gateway.apply_shared(now, |route| siblings.view(route, now));
    }
}
