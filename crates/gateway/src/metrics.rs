//! Prometheus metrics (prometheus-client), exposed at `GET /metrics` as OpenMetrics 1.0 or the
//! Prometheus text format 0.0.4, whichever the scraper asks for ([`Format`], [`Exposition`]).
//!
//! Counters that every request touches are created once per route and deployment when a config
//! is applied ([`RouteMetrics`], [`DeploymentMetrics`]), so the request path only bumps atomics;
//! label strings are never built per request on the success path. Gauges that mirror router state
//! (breaker state, in-flight attempts, EWMA latency, retry budget) are refreshed at scrape time
//! from `Router::status`, so they cost nothing between scrapes.
//!
//! Every series whose labels are known in advance exists from the start at zero: reload results,
//! client limits, and per route and deployment every failure outcome, error class and stream
//! interruption. A query or an alert on `rate(...)` then sees 0, not "no data", until the first
//! event, and the series count is fixed by the config ([`series_bound`]).

mod exposition;

pub use exposition::{Exposition, Format};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use stilts_core::{ErrorClass, GiveUpReason};

/// Labels of route-level series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

/// Labels of deployment-level series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Route name.
    pub route: String,
    /// Deployment name.
    pub provider: String,
}

/// Labels of per-class failure series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Route name.
    pub route: String,
    /// Deployment name.
    pub provider: String,
    /// Error class (`rate_limited`, `server`, `timeout`, …).
    pub class: String,
}

/// Labels of plugin fault series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginFaultLabels {
    /// The plugin's name (as it describes itself).
    pub plugin: String,
    /// `panic`, `contract` (output that breaks the ABI contract) or `slow` (a call over the
    /// host's limit).
    pub kind: String,
}

/// Labels of request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name (`unknown` for requests naming no route).
    pub route: String,
    /// The deployment that served, or `none`.
    pub provider: String,
    /// `ok`, or the reason the call failed (`deadline`, `all_rate_limited`, …, `client_error`).
    pub outcome: String,
}

/// Labels of token series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Route name.
    pub route: String,
    /// Deployment name.
    pub provider: String,
    /// `input` or `output`.
    pub kind: String,
}

/// Labels of stream interruption series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterruptLabels {
    /// Route name.
    pub route: String,
    /// Deployment whose stream broke.
    pub provider: String,
    /// `continued` (exact continuation elsewhere), `error_event` (ended with an error event) or
    /// `client_gone`.
    pub action: String,
}

/// Labels of config reload series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric family of the gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    attempts: Family<ProviderLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    overhead: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ProviderLabels, FloatCounter>,
    interruptions: Family<InterruptLabels, Counter>,
    /// Breaker state per deployment: 0 closed, 1 half-open, 2 open.
    pub(crate) breaker: Family<ProviderLabels, Gauge>,
    /// Breaker trips since start.
    pub(crate) breaker_trips: Family<ProviderLabels, Gauge>,
    /// Attempts in flight.
    pub(crate) in_flight: Family<ProviderLabels, Gauge>,
    /// Peak-EWMA latency estimate.
    pub(crate) latency: Family<ProviderLabels, FloatGauge>,
    /// Retries the budget allows now.
    pub(crate) retry_budget: Family<RouteLabels, FloatGauge>,
    reloads: Family<ReloadLabels, Counter>,
    /// 1 when the last reload attempt was applied, 0 when it was refused.
    pub(crate) config_ok: Gauge,
    /// Open client connections.
    pub(crate) client_connections: Gauge,
    /// Tasks alive on the async runtime (refreshed at scrape time): connections, requests,
    /// streams and background work. Flat under steady load; growth is a leak.
    pub(crate) runtime_tasks: Gauge,
    /// Failed calls into each loaded plugin, by kind (copied from the host's counts at scrape time).
    pub(crate) plugin_faults: Family<PluginFaultLabels, Counter>,
    client_refused: Family<ReasonLabels, Counter>,
    client_timeouts: Family<StageLabels, Counter>,
    scrapes_refused: Counter,
    /// Shared-state exchange through Redis, when `[cluster]` is configured.
    pub(crate) cluster: Option<ClusterMetrics>,
}

/// The `stilts_cluster_*` series: present only when `[cluster]` is configured.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// 1 while the last exchange with Redis succeeded.
    pub(crate) connected: Gauge,
    /// Round-trip time of each exchange.
    pub(crate) sync_seconds: Histogram,
    /// Seconds since the last successful exchange (refreshed at every exchange attempt, each
    /// `sync_ms`, whether it succeeds or not).
    pub(crate) last_sync_age: FloatGauge,
    /// Times the replica fell back to local state (Redis unreachable, slow or garbled).
    pub(crate) fallbacks: Counter,
    /// Exchanges that failed.
    pub(crate) sync_failures: Counter,
    /// Sibling entries in Redis that could not be read (garbage, another version).
    pub(crate) bad_entries: Counter,
    /// Replicas whose state arrived within the last ten exchange periods, this one included.
    pub(crate) replicas: Gauge,
}

/// Labels of refused client connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `max_connections` (over the limit: answered 503 and closed) or `accept_error` (the
    /// system refused a descriptor).
    pub reason: String,
}

/// Labels of client timeouts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// `header_read`, `body_read`, `idle` or `send`.
    pub stage: String,
}

/// Pre-made counters of one deployment.
#[derive(Clone, Debug)]
pub struct DeploymentMetrics {
    pub(crate) attempts: Counter,
    pub(crate) failures: [Counter; 8],
    pub(crate) input_tokens: Counter,
    pub(crate) output_tokens: Counter,
    pub(crate) cost_usd: FloatCounter,
    pub(crate) served: Counter,
}

/// Pre-made histograms of one route.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    pub(crate) duration: Histogram,
    pub(crate) overhead: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, and the `stilts_cluster_*` ones when `cluster` is set.
    pub fn with_cluster(cluster: bool) -> Self {
        let mut metrics = Self::new();
        if cluster {
            let c = ClusterMetrics {
                connected: Gauge::default(),
                sync_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
                last_sync_age: FloatGauge::default(),
                fallbacks: Counter::default(),
                sync_failures: Counter::default(),
                bad_entries: Counter::default(),
                replicas: Gauge::default(),
            };
            let r = &mut metrics.registry;
            r.register(
                "cluster_connected",
                "1 while the last exchange of shared state with Redis succeeded, 0 while the replica runs on local state",
                c.connected.clone(),
            );
            r.register(
                "cluster_sync_seconds",
                "Round-trip time of each exchange of shared state with Redis (the sync lag beyond sync_ms)",
                c.sync_seconds.clone(),
            );
            r.register(
                "cluster_last_sync_age_seconds",
                "Seconds since the last successful exchange of shared state",
                c.last_sync_age.clone(),
            );
            r.register(
                "cluster_fallbacks",
                "Times the replica lost Redis and fell back to its local state",
                c.fallbacks.clone(),
            );
            r.register(
                "cluster_sync_failures",
                "Exchanges of shared state that failed (Redis unreachable, slow or answering garbage)",
                c.sync_failures.clone(),
            );
            r.register(
                "cluster_bad_entries",
                "Sibling entries in Redis that could not be read and were skipped",
                c.bad_entries.clone(),
            );
            r.register(
                "cluster_replicas",
                "Replicas whose shared state is fresh, this one included",
                c.replicas.clone(),
            );
            metrics.cluster = Some(c);
        }
        metrics
    }

    /// Registers every family (no cluster series).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stilts");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Chat completion requests by route, serving provider and outcome",
            requests.clone(),
        );
        let attempts = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "attempts",
            "Upstream attempts by route and provider",
            attempts.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "attempt_failures",
            "Failed upstream attempts by route, provider and error class",
            failures.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        let duration = unify(duration);
        registry.register(
            "request_duration_seconds",
            "Whole request duration (for streams: until the last byte)",
            duration.clone(),
        );
        let overhead = unify(Family::<RouteLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_005, 2.0, 16))) as fn() -> Histogram,
        ));
        registry.register(
            "gateway_overhead_seconds",
            "Time spent in stilts itself per request, excluding upstream waits and backoff",
            overhead.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens billed by route, provider and kind",
            tokens.clone(),
        );
        let cost = Family::<ProviderLabels, FloatCounter>::default();
        registry.register(
            "cost_usd",
            "Spend in USD at the configured prices",
            cost.clone(),
        );
        let interruptions = Family::<InterruptLabels, Counter>::default();
        registry.register(
            "stream_interruptions",
            "Streams that broke after bytes reached the client, by what was done",
            interruptions.clone(),
        );
        let breaker = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        let breaker_trips = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "breaker_trips",
            "Times the breaker opened",
            breaker_trips.clone(),
        );
        let in_flight = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "in_flight_attempts",
            "Upstream attempts in flight",
            in_flight.clone(),
        );
        let latency = Family::<ProviderLabels, FloatGauge>::default();
        registry.register(
            "provider_latency_seconds",
            "Peak-EWMA latency estimate (time to first token for streams)",
            latency.clone(),
        );
        let retry_budget = Family::<RouteLabels, FloatGauge>::default();
        registry.register(
            "retry_budget_available",
            "Retries the route's retry budget allows now",
            retry_budget.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reload attempts by result (ok or error)",
            reloads.clone(),
        );
        let config_ok = Gauge::default();
        registry.register(
            "config_last_reload_ok",
            "1 when the last reload was applied, 0 when it was refused",
            config_ok.clone(),
        );
        config_ok.set(1);
        let client_connections = Gauge::default();
        registry.register(
            "client_connections",
            "Open client connections",
            client_connections.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive on the gateway's async runtime (connections, requests, streams, background work)",
            runtime_tasks.clone(),
        );
        let plugin_faults = Family::<PluginFaultLabels, Counter>::default();
        registry.register(
            "plugin_faults",
            "Calls into a plugin that panicked, broke the ABI contract or took too long, by plugin and kind",
            plugin_faults.clone(),
        );
        let client_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "client_connections_refused",
            "Client connections turned away: max_connections reached (answered 503) or accept failed",
            client_refused.clone(),
        );
        let client_timeouts = Family::<StageLabels, Counter>::default();
        registry.register(
            "client_timeouts",
            "Client connections or requests ended by a client-side time limit, by stage",
            client_timeouts.clone(),
        );
        for reason in ["max_connections", "accept_error"] {
            drop(client_refused.get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            }));
        }
        for stage in ["header_read", "body_read", "idle", "send"] {
            drop(client_timeouts.get_or_create(&StageLabels {
                stage: stage.to_owned(),
            }));
        }
        for result in ["ok", "error"] {
            drop(reloads.get_or_create(&ReloadLabels {
                result: result.to_owned(),
            }));
        }
        drop(requests.get_or_create(&RequestLabels {
            route: "unknown".to_owned(),
            provider: "none".to_owned(),
            outcome: "unknown_route".to_owned(),
        }));
        let scrapes_refused = Counter::default();
        registry.register(
            "metrics_scrapes_refused",
            "Scrapes of /metrics refused because too many were already waiting",
            scrapes_refused.clone(),
        );
        Metrics {
            registry,
            requests,
            attempts,
            failures,
            duration,
            overhead,
            tokens,
            cost,
            interruptions,
            breaker,
            breaker_trips,
            in_flight,
            latency,
            retry_budget,
            reloads,
            config_ok,
            client_connections,
            runtime_tasks,
            plugin_faults,
            client_refused,
            client_timeouts,
            scrapes_refused,
            cluster: None,
        }
    }

    /// Counts a client connection turned away.
    pub(crate) fn client_connection_refused(&self, reason: &str) {
        self.client_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a client-side time limit that ended a connection or a request.
    pub(crate) fn client_timeout(&self, stage: &str) {
        self.client_timeouts
            .get_or_create(&StageLabels {
                stage: stage.to_owned(),
            })
            .inc();
    }

    /// Counts a refused scrape.
    pub(crate) fn scrape_refused(&self) {
        self.scrapes_refused.inc();
    }

    /// The counters of deployment `provider` of `route`.
    pub fn deployment(&self, route: &str, provider: &str) -> DeploymentMetrics {
        let labels = ProviderLabels {
            route: route.to_owned(),
            provider: provider.to_owned(),
        };
        let failures = ErrorClass::ALL.map(|class| {
            self.failures.get_or_create_owned(&FailureLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                class: class.as_str().to_owned(),
            })
        });
        let token = |kind: &str| {
            self.tokens.get_or_create_owned(&TokenLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                kind: kind.to_owned(),
            })
        };
        // Rare events, counted through the families; created here so they read 0 from the start.
        for action in INTERRUPTION_ACTIONS {
            drop(self.interruptions.get_or_create(&InterruptLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                action: action.to_owned(),
            }));
        }
        for outcome in PARTLY_SERVED_OUTCOMES {
            drop(self.requests.get_or_create(&RequestLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
            }));
        }
        DeploymentMetrics {
            attempts: self.attempts.get_or_create_owned(&labels),
            failures,
            input_tokens: token("input"),
            output_tokens: token("output"),
            cost_usd: self.cost.get_or_create_owned(&labels),
            served: self.requests.get_or_create_owned(&RequestLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                outcome: "ok".to_owned(),
            }),
        }
    }

    /// The histograms of `route`; also creates its failure outcomes at zero.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        for outcome in unserved_outcomes() {
            drop(self.requests.get_or_create(&RequestLabels {
                route: route.to_owned(),
                provider: "none".to_owned(),
                outcome: outcome.to_owned(),
            }));
        }
        RouteMetrics {
            duration: self.duration.get_or_create_owned(&labels),
            overhead: self.overhead.get_or_create_owned(&labels),
        }
    }

    /// Counts a request that did not succeed and that no provider served.
    pub fn request_failed(&self, route: &str, outcome: &str) {
        self.request_failed_at(route, "none", outcome);
    }

    /// Counts a request that did not succeed, against the provider that served part of it (a
    /// stream cut after bytes reached the client).
    pub fn request_failed_at(&self, route: &str, provider: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a stream broken after bytes were sent; `action` is one of
    /// [`INTERRUPTION_ACTIONS`].
    pub fn stream_interrupted(&self, route: &str, provider: &str, action: &str) {
        debug_assert!(
            INTERRUPTION_ACTIONS.contains(&action),
            "{action}: add it to INTERRUPTION_ACTIONS (its series must exist from start)"
        );
        self.interruptions
            .get_or_create(&InterruptLabels {
                route: route.to_owned(),
                provider: provider.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ReloadLabels {
                result: if ok { "ok" } else { "error" }.to_owned(),
            })
            .inc();
        self.config_ok.set(i64::from(ok));
    }

    /// Every metric, in both text forms.
    pub fn encode(&self) -> Exposition {
        Exposition::render(&self.registry)
    }
}

/// What the gateway did about a stream broken after bytes reached the client: the `action` label
/// of `stilts_stream_interruptions_total`.
pub const INTERRUPTION_ACTIONS: [&str; 3] = ["continued", "error_event", "client_gone"];

/// Every reason the router gives up, for the `outcome` label (`NotRetryable` is one outcome,
/// whatever its class).
const GIVE_UPS: [GiveUpReason; 8] = [
    GiveUpReason::Deadline,
    GiveUpReason::NotRetryable(ErrorClass::BadRequest),
    GiveUpReason::AttemptsExhausted,
    GiveUpReason::BudgetExhausted,
    GiveUpReason::AllRateLimited,
    GiveUpReason::NoHealthyProvider,
    GiveUpReason::ContextTooLong,
    GiveUpReason::SpendLimit,
];

/// Failed requests' outcomes, besides the give-up reasons, counted with `provider="none"`:
/// `invalid_request` (a plugin refused the request before any attempt).
const UNSERVED_OUTCOMES: [&str; 1] = ["invalid_request"];

/// Failed requests' outcomes counted against the deployment that served part of the answer:
/// `stream_interrupted` (the stream was cut after bytes reached the client).
const PARTLY_SERVED_OUTCOMES: [&str; 1] = ["stream_interrupted"];

/// The outcomes of requests on a known route that no provider served: every give-up reason and
/// [`UNSERVED_OUTCOMES`].
fn unserved_outcomes() -> impl Iterator<Item = &'static str> {
    GIVE_UPS
        .iter()
        .map(|reason| reason.as_str())
        .chain(UNSERVED_OUTCOMES)
}

/// The most series `/metrics` can hold for `routes` routes with `deployments` deployments in all:
/// 14 process-wide; per route 49 (two histograms of 17 and 19 series, the retry budget, and up to 12
/// failure outcomes); per deployment 24 (attempts, 8 failure classes, 2 token kinds, cost, served,
/// 4 router gauges, 3 interruption actions, a stream cut after it served bytes, and the 3 fault
/// kinds of its plugin, which no more plugins than deployments can have). Counted lines, not families.
pub fn series_bound(routes: usize, deployments: usize) -> usize {
    14 + 49 * routes + 24 * deployments
}

/// A config whose metrics would exceed this many series is logged as a warning at load.
pub const SERIES_WARNING: usize = 200_000;

/// Erases the constructor closure type so the family can be stored in a struct field.
fn unify(
    f: Family<RouteLabels, Histogram, fn() -> Histogram>,
) -> Family<RouteLabels, Histogram, fn() -> Histogram> {
    f
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[test]
    fn every_give_up_reason_has_its_outcome_series() {
        // A new variant fails to compile here: add it to GIVE_UPS too.
        for reason in GIVE_UPS {
            match reason {
                GiveUpReason::Deadline
                | GiveUpReason::NotRetryable(_)
                | GiveUpReason::AttemptsExhausted
                | GiveUpReason::BudgetExhausted
                | GiveUpReason::AllRateLimited
                | GiveUpReason::NoHealthyProvider
                | GiveUpReason::ContextTooLong
                | GiveUpReason::SpendLimit => {}
            }
        }
        let names: std::collections::BTreeSet<_> = unserved_outcomes().collect();
        assert_eq!(
            names.len(),
            GIVE_UPS.len() + UNSERVED_OUTCOMES.len(),
            "{names:?}"
        );
        for class in ErrorClass::ALL {
            assert!(names.contains(GiveUpReason::NotRetryable(class).as_str()));
        }
    }

    #[test]
    fn every_series_exists_before_any_event() {
        let m = Metrics::new();
        drop(m.route("chat"));
        drop(m.deployment("chat", "primary"));
        let text = m.encode().body(Format::Text);
        let text = std::str::from_utf8(&text).unwrap();
        let series: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for want in [
            "stilts_config_reloads_total{result=\"ok\"} 0",
            "stilts_config_reloads_total{result=\"error\"} 0",
            "stilts_requests_total{route=\"unknown\",provider=\"none\",outcome=\"unknown_route\"} 0",
            "stilts_requests_total{route=\"chat\",provider=\"none\",outcome=\"budget_exhausted\"} 0",
            "stilts_requests_total{route=\"chat\",provider=\"none\",outcome=\"invalid_request\"} 0",
            "stilts_stream_interruptions_total{route=\"chat\",provider=\"primary\",action=\"client_gone\"} 0",
            "stilts_client_timeouts_total{stage=\"idle\"} 0",
        ] {
            assert!(series.contains(&want), "missing {want} in\n{text}");
        }
        for outcome in unserved_outcomes() {
            let want = format!(
                "stilts_requests_total{{route=\"chat\",provider=\"none\",outcome=\"{outcome}\"}} 0"
            );
            assert!(series.contains(&want.as_str()), "missing {want}");
        }
        for outcome in PARTLY_SERVED_OUTCOMES {
            let want = format!(
                "stilts_requests_total{{route=\"chat\",provider=\"primary\",outcome=\"{outcome}\"}} 0"
            );
            assert!(series.contains(&want.as_str()), "missing {want}");
        }
        // 13 process-wide; per route 17 + 19 histogram series and the unserved outcomes; per
        // deployment 16 counters and the partly served outcomes. The 5 router gauges come from
        // the engine at scrape time.
        let unserved = GIVE_UPS.len() + UNSERVED_OUTCOMES.len();
        assert_eq!(
            series.len(),
            13 + (17 + 19 + unserved) + (16 + PARTLY_SERVED_OUTCOMES.len()),
            "{text}"
        );
        assert!(series.len() + 1 + 4 <= series_bound(1, 1));
        // Counting an event adds no series.
        m.reload(false);
        m.stream_interrupted("chat", "primary", "continued");
        m.request_failed("chat", "deadline");
        m.request_failed("unknown", "unknown_route");
        let after = m.encode().body(Format::Text);
        let after = std::str::from_utf8(&after).unwrap();
        assert_eq!(
            after.lines().filter(|l| !l.starts_with('#')).count(),
            series.len()
        );
    }
}
