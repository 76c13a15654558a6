//! The router: one route's providers, their health, and the decisions for each request.

use crate::answer_length::AnswerLength;
use crate::breaker::{Breaker, BreakerState};
use crate::breaks::StreamBreaks;
use crate::budget::RetryBudget;
use crate::config::{PolicyKind, ProviderSettings, ValidConfig};
use crate::deadline_misses::DeadlineMisses;
use crate::ewma::PeakEwma;
use crate::policy::{self, Policy, ProviderLoad};
use crate::provider::{ProviderId, ProviderSet};
use crate::refusals::Refusals;
use crate::rng::RouterRng;
use crate::slowdown::Slowdown;
use crate::speed::Speed;
use crate::time::Instant;
use crate::window::SlidingWindow;
use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use crate::{attempt::Attempt, class::ErrorClass};

mod call;
mod deadline;
mod plain_limit;
mod plan;
pub mod quota;
mod record;
pub mod shared;

pub use call::{Call, Decision, GiveUp, GiveUpReason, Outcome, RequestMeta, Usage};

/// An attempt cut by the client's own deadline is the provider's timeout only if it had already
/// run this many times the provider's usual latency: its latency estimate, and at least
/// `latency.default_ms` (see [`Router::record`]).
const CLIENT_CUT_FACTOR: u32 = 2;

/// Why a provider is cooling down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cooldown {
    /// It answered 429 (Retry-After or the default cool-down).
    RateLimited,
    /// It rejected the credentials.
    Auth,
    /// Its quota is spent.
    Quota,
}

/// Counters of one provider since the router was created (kept across reloads).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProviderStats {
    /// Attempts sent.
    pub attempts: u64,
    /// Hedged attempts sent.
    pub hedges: u64,
    /// Successful attempts.
    pub successes: u64,
    /// Failed attempts by class, indexed by [`ErrorClass::index`].
    pub failures: [u64; 8],
    /// Cancelled attempts.
    pub cancelled: u64,
    /// Attempts ended by the client's own deadline (neutral for health, not failures).
    pub cut_by_client_deadline: u64,
    /// Failovers it received that the retry budget did not charge (it had headroom: not tried by
    /// the call, breaker closed, few recent failures).
    pub free_failovers: u64,
    /// Attempts it got by panic routing: every provider was kept out by its breaker, and it was
    /// the least bad.
    pub panic_sends: u64,
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Cost in USD at the configured prices.
    pub cost_usd: f64,
}

/// A provider's health and load, for status pages and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderStatus {
    /// Position in the config.
    pub id: ProviderId,
    /// Configured name.
    pub name: String,
    /// Breaker state now.
    pub breaker: BreakerState,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Active cool-down and its end.
    pub cooldown: Option<(Cooldown, Instant)>,
    /// Attempts in flight.
    pub in_flight: u32,
    /// Peak-EWMA latency estimate.
    pub latency: Duration,
    /// Counters.
    pub stats: ProviderStats,
}

#[derive(Clone, Debug)]
struct Health {
    breaker: Breaker,
    cooldown: Option<(Cooldown, Instant)>,
    /// Requests and tokens over the last minute, when local limits are set.
    minute: Option<SlidingWindow<2>>,
    /// Requests and tokens sibling replicas sent it over their last minute (shared state).
    siblings_minute: [u64; 2],
    /// How long its answers take per output token (for plain attempts' headers limit).
    speed: Speed,
    /// How much slower it answers now than usually (spills its tier's traffic).
    slowdown: Slowdown,
    /// What it reported of its rate limits, counted down by our sends.
    quota: quota::QuotaLeft,
    /// How often it lately refused (429) rather than answered.
    refusals: Refusals,
    /// How often its streams lately broke after reaching the client (spills stream traffic).
    breaks: StreamBreaks,
    /// How often its calls lately ran out of their deadline on it (moves traffic to a provider
    /// that finishes in time).
    deadline_misses: DeadlineMisses,
}

impl Health {
    /// The share of its tier's traffic (of a stream call's, when `stream`) to send to the next
    /// tier: for its slowdown and its calls out of their deadline, and for a stream also for its
    /// broken streams.
    fn spill(&self, stream: bool) -> f64 {
        let slow = self.slowdown.spill().max(self.deadline_misses.shun());
        if stream {
            slow.max(self.breaks.spill())
        } else {
            slow
        }
    }
}

#[derive(Default)]
struct Blocked {
    /// Providers usable but for an active rate-limit cool-down.
    cooling: ProviderSet,
    /// Providers usable but for their breaker (open, or half-open with every probe out), with no
    /// cool-down: the candidates of panic routing.
    breaker_only: ProviderSet,
    context: bool,
    spend: bool,
    rate_limited: bool,
    unhealthy: bool,
    /// The earliest end of a rate-limit cool-down among blocked providers.
    soonest_rate_limit_end: Option<Instant>,
}

const MINUTE_NANOS: u64 = 60_000_000_000;

/// The least share of its calls a provider must have answered (as its breaker last knew) to get
/// panic traffic.
const PANIC_MIN_ANSWERED: f64 = 0.25;

/// Why the router sends an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendKind {
    /// The call's next attempt: its first, a retry or a failover.
    Plain,
    /// A hedge after `hedge.delay_ms` of silence: charged to the retry budget.
    Hedge,
    /// A hedge sent when a plain attempt's fallback needs to start (`plain_limit.rs`): charged as
    /// the failover it replaces (free when the fallback has headroom).
    FallbackHedge,
    /// A hedge of a half-open probe, sent at once: charged as the failover it replaces.
    ProbeHedge,
}

/// The routing engine of one route: sans-IO, deterministic, driven entirely by its caller.
///
/// # Contract
///
/// The router never reads a clock, sleeps, spawns or does I/O. Every method that depends on time
/// takes `now`, and successive `now`s must never decrease. Randomness comes from the seeded
/// [`RouterRng`] given at construction, so the same config, seed and inputs give the same
/// decisions.
///
/// - **Inputs:** [`begin`](Router::begin) a call for each request; [`record`](Router::record) the
///   outcome of every attempt the router asked for, exactly once (with [`Outcome::Cancelled`] for
///   attempts the caller abandons; never abandon a probe, [`Attempt::is_probe`]: detach it from
///   its call with [`Call::detach`] and record it when it ends).
/// - **Output:** [`next_attempt`](Router::next_attempt) returns the next [`Decision`] for a call.
///
/// One request's life:
///
/// ```text
/// let mut call = router.begin(meta, now);
/// loop {
///     match router.next_attempt(&mut call, now) {
///         Send(attempt)    => perform it under attempt.timer(now) (AttemptTimer), then
///                             router.record(&mut call, attempt, outcome, now)
///         Wait { until }   => sleep until `until`
///         Hedge { at }     => wait for the in-flight outcome, or until `at`
///         Pending          => wait for an in-flight outcome
///         Done { .. }      => answer the client (cancel + record other in-flight attempts)
///         GiveUp(why)      => return an error (cancel + record other in-flight attempts)
///     }
/// }
/// ```
///
/// Every call ends in `Done` or `GiveUp` within `max_attempts` attempts and before its deadline;
/// per-provider state has a fixed size, whatever the number of requests.
pub struct Router {
    config: ValidConfig,
    policy: Box<dyn Policy>,
    rng: RouterRng,
    uids: Vec<u64>,
    next_uid: u64,
    health: Vec<Health>,
    loads: Vec<ProviderLoad>,
    stats: Vec<ProviderStats>,
    budget: RetryBudget,
    spend_period: u64,
    spent_usd: f64,
    /// Sibling replicas' spend in `spend_period` (shared state).
    siblings_spent_usd: f64,
    all: ProviderSet,
    /// Bumped by every reload.
    generation: u32,
    /// Where the providers of the previous generation went (old index → new id).
    previous_ids: Vec<Option<ProviderId>>,
    /// Each provider's preference (lower first): its priority tier, and under `priority` its
    /// position.
    preferences: Vec<u64>,
    /// How long the route's answers are (what the `cost` policy prices output at).
    answer_length: AnswerLength,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("policy", &self.config.policy)
            .field("providers", &self.config.providers.len())
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Router {
    /// A router for `config`, with randomness seeded from `seed`.
    pub fn new(config: ValidConfig, seed: u64) -> Self {
        Self::with_rng(config, RouterRng::seed_from_u64(seed))
    }

    /// A router with a caller-made random stream.
    pub fn with_rng(config: ValidConfig, rng: RouterRng) -> Self {
        let config = config.clamped();
        let n = config.providers.len();
        let mut router = Router {
            policy: policy::builtin(config.policy, n),
            rng,
            uids: (0..n as u64).collect(),
            next_uid: n as u64,
            health: Vec::with_capacity(n),
            loads: Vec::with_capacity(n),
            stats: vec![ProviderStats::default(); n],
            budget: RetryBudget::new(&config.budget),
            spend_period: 0,
            spent_usd: 0.0,
            siblings_spent_usd: 0.0,
            all: ProviderSet::first_n(n),
            generation: 0,
            previous_ids: Vec::new(),
            preferences: Self::preferences_of(&config),
            answer_length: AnswerLength::default(),
            config,
        };
        for p in 0..n {
            router.health.push(router.fresh_health(p));
            router.loads.push(router.fresh_load());
        }
        router
    }

    fn fresh_health(&self, index: usize) -> Health {
        let p = &self.config.providers[index];
        Health {
            breaker: Breaker::new(&self.config.breaker),
            cooldown: None,
            minute: (p.requests_per_minute.is_some() || p.tokens_per_minute.is_some())
                .then(|| SlidingWindow::new(MINUTE_NANOS, 12)),
            siblings_minute: [0, 0],
            speed: Speed::default(),
            slowdown: Slowdown::default(),
            quota: quota::QuotaLeft::default(),
            refusals: Refusals::default(),
            breaks: StreamBreaks::default(),
            deadline_misses: DeadlineMisses::default(),
        }
    }

    fn fresh_load(&self) -> ProviderLoad {
        ProviderLoad {
            in_flight: 0,
            latency: PeakEwma::new(self.config.latency_default, self.config.latency_decay),
        }
    }

    fn preferences_of(config: &ValidConfig) -> Vec<u64> {
        config
            .providers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let tier = u64::from(p.priority) << 8;
                if config.policy == PolicyKind::Priority {
                    tier | i as u64
                } else {
                    tier
                }
            })
            .collect()
    }

    /// Replaces the policy with a custom one. A reload keeps it unless the config's `policy`
    /// changes.
    pub fn set_policy(&mut self, policy: Box<dyn Policy>) {
        self.policy = policy;
    }

    /// The configuration in force.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// The settings of provider `id`.
    pub fn provider(&self, id: ProviderId) -> &ProviderSettings {
        &self.config.providers[id.index()]
    }

    /// The provider named `name`, if any.
    pub fn provider_id(&self, name: &str) -> Option<ProviderId> {
        self.config
            .providers
            .iter()
            .position(|p| p.name == name)
            .and_then(ProviderId::from_index)
    }

    /// Applies a new configuration. Providers that keep their name keep their breaker (state, trip
    /// count, open deadline), latency estimate, cool-down and counters, wherever they move in the
    /// list. Calls begun before the reload continue with their history remapped to the new list;
    /// attempts in flight are recorded against the right provider, or only against their call if
    /// the provider was removed.
    pub fn reconfigure(&mut self, config: ValidConfig) {
        let config = config.clamped();
        let n = config.providers.len();
        let old = std::mem::replace(&mut self.config, config);
        let mut uids = Vec::with_capacity(n);
        let mut health = Vec::with_capacity(n);
        let mut loads = Vec::with_capacity(n);
        let mut stats = Vec::with_capacity(n);
        let mut previous_ids = vec![None; old.providers.len()];
        for (i, p) in self.config.providers.iter().enumerate() {
            match old.providers.iter().position(|o| o.name == p.name) {
                Some(j) => {
                    previous_ids[j] = ProviderId::from_index(i);
                    uids.push(self.uids[j]);
                    let mut h = self.health[j].clone();
                    h.breaker = h.breaker.reconfigured(&old.breaker, &self.config.breaker);
                    let limited = p.requests_per_minute.is_some() || p.tokens_per_minute.is_some();
                    if limited != h.minute.is_some() {
                        h.minute = limited.then(|| SlidingWindow::new(MINUTE_NANOS, 12));
                    }
                    health.push(h);
                    let mut load = self.loads[j];
                    load.latency = load.latency.with_decay(self.config.latency_decay);
                    loads.push(load);
                    stats.push(self.stats[j]);
                }
                None => {
                    uids.push(self.next_uid);
                    self.next_uid += 1;
                    health.push(self.fresh_health(i));
                    loads.push(self.fresh_load());
                    stats.push(ProviderStats::default());
                }
            }
        }
        self.uids = uids;
        self.health = health;
        self.loads = loads;
        self.stats = stats;
        self.all = ProviderSet::first_n(n);
        self.previous_ids = previous_ids;
        self.preferences = Self::preferences_of(&self.config);
        self.generation = self.generation.wrapping_add(1);
        if self.config.policy != old.policy {
            self.policy = policy::builtin(self.config.policy, n);
        }
        if self.config.budget != old.budget {
            self.budget = RetryBudget::new(&self.config.budget);
        }
    }

    /// Starts routing a request.
    pub fn begin(&mut self, meta: RequestMeta, now: Instant) -> Call {
        self.budget.deposit(now);
        let (deadline, client_deadline) = match meta.deadline {
            Some(d) if d < self.config.deadline => (d, true),
            _ => (self.config.deadline, false),
        };
        Call {
            deadline: now + deadline,
            given: deadline,
            client_deadline,
            input_tokens: meta.input_tokens,
            output_tokens: meta.output_tokens,
            stream: meta.stream,
            tried: ProviderSet::EMPTY,
            retried: ProviderSet::EMPTY,
            silent: ProviderSet::EMPTY,
            rate_limited: ProviderSet::EMPTY,
            waited_out: ProviderSet::EMPTY,
            excluded: ProviderSet::EMPTY,
            min_context: 0,
            attempts: 0,
            in_flight: 0,
            last_send: now,
            hedged: false,
            probing: false,
            probe_hedged: false,
            probes_out: ProviderSet::EMPTY,
            same_provider_retries: 0,
            wait_until: Instant::ZERO,
            backoff_served: false,
            needs_continuation: false,
            stream_broke: false,
            fallback_hedge: None,
            last_error: None,
            end: None,
            generation: self.generation,
        }
    }

    /// Brings a call begun before a reload up to date with the current provider ids.
    fn sync(&self, call: &mut Call) {
        if call.generation == self.generation {
            return;
        }
        let remap = |set: ProviderSet| -> ProviderSet {
            set.iter()
                .filter_map(|p| self.previous_ids.get(p.index()).copied().flatten())
                .collect()
        };
        if call.generation.wrapping_add(1) == self.generation {
            call.tried = remap(call.tried);
            call.retried = remap(call.retried);
            call.silent = remap(call.silent);
            call.rate_limited = remap(call.rate_limited);
            call.waited_out = remap(call.waited_out);
            call.excluded = remap(call.excluded);
            call.probes_out = remap(call.probes_out);
            call.fallback_hedge = call.fallback_hedge.and_then(|mut f| {
                f.provider = self
                    .previous_ids
                    .get(f.provider.index())
                    .copied()
                    .flatten()?;
                Some(f)
            });
            if let Some(Ok(Some(p))) = call.end {
                call.end = Some(Ok(self.previous_ids.get(p.index()).copied().flatten()));
            }
        } else {
            // Several reloads ago: forget the details, but never prefer a provider it already tried.
            call.tried = self.all;
            call.retried = ProviderSet::EMPTY;
            call.silent = ProviderSet::EMPTY;
            call.rate_limited = ProviderSet::EMPTY;
            call.waited_out = ProviderSet::EMPTY;
            call.excluded = ProviderSet::EMPTY;
            call.probes_out = ProviderSet::EMPTY;
            call.fallback_hedge = None;
            if let Some(Ok(Some(_))) = call.end {
                call.end = Some(Ok(None));
            }
        }
        call.generation = self.generation;
    }

    fn give_up(call: &mut Call, reason: GiveUpReason) -> Decision {
        let give_up = GiveUp {
            reason,
            last_error: call.last_error,
        };
        call.end = Some(Err(give_up));
        Decision::GiveUp(give_up)
    }

    fn spend_reached(&mut self, now: Instant) -> bool {
        let Some((limit, period)) = self.config.spend else {
            return false;
        };
        let index = now.as_nanos() / nanos(period).max(1);
        if index != self.spend_period {
            self.spend_period = index;
            self.spent_usd = 0.0;
            self.siblings_spent_usd = 0.0;
        }
        self.spent_usd + self.siblings_spent_usd >= limit
    }

    /// Retries the budget would allow now.
    pub fn retry_budget_available(&mut self, now: Instant) -> f64 {
        self.budget.available(now)
    }

    /// Spend in the current period, in USD (0 when no spend limit is set): this router's own.
    pub fn spent_usd(&self) -> f64 {
        self.spent_usd
    }

    /// Sibling replicas' spend in the current period as last shared (0 without shared state).
    pub fn siblings_spent_usd(&self) -> f64 {
        self.siblings_spent_usd
    }

    /// Counters of provider `id`.
    pub fn stats(&self, id: ProviderId) -> &ProviderStats {
        &self.stats[id.index()]
    }

    /// The breaker state of provider `id` at `now`.
    pub fn breaker_state(&mut self, id: ProviderId, now: Instant) -> BreakerState {
        self.health[id.index()].breaker.state(now)
    }

    /// Provider `id`'s breaker state and running cool-down at `now`, or `None` if no provider has
    /// that id (a reload removed it). For drivers that report transitions.
    pub fn health_of(
        &mut self,
        id: ProviderId,
        now: Instant,
    ) -> Option<(BreakerState, Option<(Cooldown, Instant)>)> {
        let health = self.health.get_mut(id.index())?;
        Some((
            health.breaker.state(now),
            health.cooldown.filter(|(_, until)| *until > now),
        ))
    }

    /// Health and load of every provider at `now`.
    pub fn status(&mut self, now: Instant) -> Vec<ProviderStatus> {
        (0..self.config.providers.len())
            .filter_map(|i| {
                let id = ProviderId::from_index(i)?;
                let health = &mut self.health[i];
                Some(ProviderStatus {
                    id,
                    name: self.config.providers[i].name.clone(),
                    breaker: health.breaker.state(now),
                    breaker_trips: health.breaker.total_trips(),
                    cooldown: health.cooldown.filter(|(_, until)| *until > now),
                    in_flight: self.loads[i].in_flight,
                    latency: self.loads[i].latency.estimate(now),
                    stats: self.stats[i],
                })
            })
            .collect()
    }
}
