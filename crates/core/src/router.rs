//! The router: one route's providers, their health, and the decisions for each request.

use crate::attempt::Attempt;
use crate::breaker::{Breaker, BreakerState, ProbeEpoch};
use crate::budget::RetryBudget;
use crate::class::ErrorClass;
use crate::config::{PolicyKind, ProviderSettings, ValidConfig};
use crate::ewma::PeakEwma;
use crate::policy::{self, Policy, PolicyView, ProviderLoad};
use crate::provider::{ProviderId, ProviderSet};
use crate::refusals::Refusals;
use crate::rng::RouterRng;
use crate::slowdown::Slowdown;
use crate::speed::Speed;
use crate::time::Instant;
use crate::window::SlidingWindow;
use std::fmt;
use std::time::Duration;

mod plain_limit;
pub mod quota;
pub mod shared;

/// An attempt cut by the client's own deadline is the provider's timeout only if it had already
/// run this many times the provider's usual latency: its latency estimate, and at least
/// `latency.default_ms` (see [`Router::record`]).
const CLIENT_CUT_FACTOR: u32 = 2;

/// What the caller knows about a request before sending it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// Estimated input (prompt) tokens.
    pub input_tokens: u32,
    /// Expected output tokens (the request's `max_tokens`, or an estimate); used for context fit,
    /// cost estimates and token rate limits.
    pub output_tokens: u32,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The client's own deadline, if shorter than the router's default.
    pub deadline: Option<Duration>,
}

/// Tokens an attempt consumed, as reported by the provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Outcome {
    /// The provider answered.
    Success {
        /// Time from send to the last byte.
        latency: Duration,
        /// Time from send to the first token, for streams.
        first_token: Option<Duration>,
        /// Tokens billed.
        usage: Usage,
    },
    /// The attempt failed.
    Failure {
        /// What kind of failure.
        class: ErrorClass,
        /// Time from send to the failure.
        latency: Duration,
        /// The provider's Retry-After, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The caller abandoned the attempt (another one won, or the client left). Neutral for health.
    Cancelled,
}

/// Why the router stopped trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The call's deadline passed.
    Deadline,
    /// The last failure must not be retried (bad request, content filter, context length).
    NotRetryable(ErrorClass),
    /// `max_attempts` attempts were made.
    AttemptsExhausted,
    /// The retry budget is spent: the route is failing for many requests at once.
    BudgetExhausted,
    /// Every usable provider is rate limited (by itself or by the local limits).
    AllRateLimited,
    /// Every provider is unhealthy, cooling down or already failed for this call.
    NoHealthyProvider,
    /// The request does not fit the context window of any provider.
    ContextTooLong,
    /// The spend limit is reached and no free provider is usable.
    SpendLimit,
}

impl GiveUpReason {
    /// A short snake_case name for metrics and reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::NotRetryable(_) => "not_retryable",
            GiveUpReason::AttemptsExhausted => "attempts_exhausted",
            GiveUpReason::BudgetExhausted => "budget_exhausted",
            GiveUpReason::AllRateLimited => "all_rate_limited",
            GiveUpReason::NoHealthyProvider => "no_healthy_provider",
            GiveUpReason::ContextTooLong => "context_too_long",
            GiveUpReason::SpendLimit => "spend_limit",
        }
    }
}

/// The end of a call that did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GiveUp {
    /// Why.
    pub reason: GiveUpReason,
    /// The class of the last failed attempt, if any.
    pub last_error: Option<ErrorClass>,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            GiveUpReason::NotRetryable(class) => {
                write!(f, "the provider answered {class}, which is not retried")?
            }
            reason => f.write_str(reason.as_str())?,
        }
        if let Some(class) = self.last_error {
            write!(f, " (last error: {class})")?;
        }
        Ok(())
    }
}

/// What the caller should do next for a call.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a decision is the only way the router asks for work"]
pub enum Decision {
    /// Send this attempt now.
    Send(Attempt),
    /// Nothing to send before `until` (backoff, or waiting out a short Retry-After); call
    /// [`Router::next_attempt`] again then.
    Wait {
        /// When to ask again.
        until: Instant,
    },
    /// An attempt is in flight; if no outcome arrives by `at`, call [`Router::next_attempt`] again:
    /// it returns a hedged [`Decision::Send`] to another provider if one is usable and the retry
    /// budget allows, else [`Decision::Pending`].
    Hedge {
        /// When to ask again.
        at: Instant,
    },
    /// Attempts are in flight and nothing else is planned: wait for their outcomes.
    Pending,
    /// A provider answered; the call is over. Cancel (and record) any attempt still in flight,
    /// except probes ([`Attempt::is_probe`]): let them end by themselves and record them.
    Done {
        /// The provider whose answer won, or `None` if a config reload removed it since.
        provider: Option<ProviderId>,
    },
    /// The call failed. Cancel (and record) any attempt still in flight, except probes, as for
    /// [`Decision::Done`].
    GiveUp(GiveUp),
}

/// One request's routing state: what was tried, what failed, what is in flight.
///
/// Made by [`Router::begin`]; owned by the caller; small and free of heap data.
#[derive(Clone, Debug)]
pub struct Call {
    deadline: Instant,
    /// The deadline is the client's own (shorter than the route's): a timeout it causes says
    /// nothing about the provider.
    client_deadline: bool,
    input_tokens: u32,
    output_tokens: u32,
    stream: bool,
    tried: ProviderSet,
    silent: ProviderSet,
    rate_limited: ProviderSet,
    /// Rate-limited providers this call already waited for once.
    waited_out: ProviderSet,
    excluded: ProviderSet,
    min_context: u32,
    attempts: u32,
    in_flight: u32,
    last_send: Instant,
    hedged: bool,
    /// A half-open probe of this call is in flight (or was): hedge it once, at once.
    probing: bool,
    probe_hedged: bool,
    /// Providers this call's probes are still on: no other attempt of the call goes there.
    probes_out: ProviderSet,
    same_provider_retries: u32,
    wait_until: Instant,
    backoff_served: bool,
    needs_continuation: bool,
    last_error: Option<ErrorClass>,
    end: Option<Result<Option<ProviderId>, GiveUp>>,
    /// The router's config generation the provider ids in this call refer to.
    generation: u32,
}

impl Call {
    /// Attempts started so far (hedges included).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts started and not yet recorded.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The call's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the call's deadline is the client's own (shorter than the route's).
    pub fn deadline_is_clients(&self) -> bool {
        self.client_deadline
    }

    /// Whether the client asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Providers tried so far.
    pub fn tried(&self) -> ProviderSet {
        self.tried
    }

    /// The class of the last failure, if any.
    pub fn last_error(&self) -> Option<ErrorClass> {
        self.last_error
    }

    /// Hands `attempts` probes of this call, still in flight, over to the caller, who lets them run
    /// to their end after the call ended ([`Attempt::is_probe`]): the call stops counting them,
    /// and the copy returned is the one to record them on.
    pub fn detach(&mut self, attempts: u32) -> Call {
        self.in_flight = self.in_flight.saturating_sub(attempts);
        let mut detached = self.clone();
        detached.in_flight = attempts;
        self.probes_out = ProviderSet::EMPTY;
        detached
    }

    /// From now on, only providers that can continue a partial answer exactly are eligible
    /// (`prefill_continuation`). The driver sets this after stream bytes reached the client.
    pub fn require_continuation(&mut self) {
        self.needs_continuation = true;
    }
}

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
        }
    }

    fn fresh_load(&self) -> ProviderLoad {
        ProviderLoad {
            in_flight: 0,
            latency: PeakEwma::new(self.config.latency_default, self.config.latency_decay),
        }
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
            client_deadline,
            input_tokens: meta.input_tokens,
            output_tokens: meta.output_tokens,
            stream: meta.stream,
            tried: ProviderSet::EMPTY,
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
            call.silent = remap(call.silent);
            call.rate_limited = remap(call.rate_limited);
            call.waited_out = remap(call.waited_out);
            call.excluded = remap(call.excluded);
            call.probes_out = remap(call.probes_out);
            if let Some(Ok(Some(p))) = call.end {
                call.end = Some(Ok(self.previous_ids.get(p.index()).copied().flatten()));
            }
        } else {
            // Several reloads ago: forget the details, but never prefer a provider it already tried.
            call.tried = self.all;
            call.silent = ProviderSet::EMPTY;
            call.rate_limited = ProviderSet::EMPTY;
            call.waited_out = ProviderSet::EMPTY;
            call.excluded = ProviderSet::EMPTY;
            call.probes_out = ProviderSet::EMPTY;
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

    /// The next thing to do for `call` at `now`.
    pub fn next_attempt(&mut self, call: &mut Call, now: Instant) -> Decision {
        self.sync(call);
        match call.end {
            Some(Ok(provider)) => return Decision::Done { provider },
            Some(Err(give_up)) => return Decision::GiveUp(give_up),
            None => {}
        }
        if now >= call.deadline {
            return Self::give_up(call, GiveUpReason::Deadline);
        }
        // Attempts in flight: a hedge may be due. Unless only probes already hedged are left (their
        // hedge failed): the user must not wait out a probe, so the call goes on as if idle.
        let only_hedged_probes = call.probe_hedged
            && call.in_flight == u32::try_from(call.probes_out.len()).unwrap_or(0);
        if call.in_flight > 0 && !only_hedged_probes {
            return self.plan_hedge(call, now);
        }
        let decision = self.plan_next(call, now);
        if only_hedged_probes && call.in_flight > 0 {
            if let Decision::GiveUp(_) = decision {
                // Nothing else to try: the probe still running is the call's last chance.
                call.end = None;
                return Decision::Pending;
            }
        }
        decision
    }

    /// The next attempt of a call with nothing in flight to wait for (or only probes whose hedge
    /// failed): a wait, a send, or the end.
    fn plan_next(&mut self, call: &mut Call, now: Instant) -> Decision {
        if now < call.wait_until {
            return Decision::Wait {
                until: call.wait_until,
            };
        }
        if call.attempts >= self.config.max_attempts {
            return Self::give_up(call, GiveUpReason::AttemptsExhausted);
        }
        let (usable, blocked) = self.available(call, now);
        let mut available = usable;
        // A provider that is only cooling down from a 429 it will soon be over is worth waiting
        // for (`nothing_available`); else, with nothing available, panic routing.
        let rate_limit_soon = blocked.rate_limited
            && blocked.soonest_rate_limit_end.is_some_and(|until| {
                until <= now + self.config.retry.rate_limit_wait_max && until < call.deadline
            });
        if available.is_empty() && !rate_limit_soon {
            available = self.panic_set(&blocked);
        }

        // A preferred provider that answered 429 with a short Retry-After may be worth waiting for
        // rather than falling to a lower tier.
        let untried = available.minus(call.tried);
        let best_untried = self.best_preference(untried);
        if let Some((until, p)) =
            self.rate_limited_worth_waiting(call, available, blocked.cooling, best_untried, now)
        {
            if until > now {
                if !self.retry_affordable(call, now) {
                    return Self::give_up(call, GiveUpReason::BudgetExhausted);
                }
                call.wait_until = until;
                return Decision::Wait { until };
            }
            call.rate_limited.remove(p);
            // Waited out once; if it says 429 again, fall to the next tier.
            call.waited_out.insert(p);
            return self.send(call, p, SendKind::Plain, usable, now);
        }

        if let Some(p) = self.preferred_worth_retrying(call, available, best_untried, now) {
            if let Some(wait) = self.backoff_first(call, now) {
                return wait;
            }
            call.same_provider_retries += 1;
            return self.send(call, p, SendKind::Plain, usable, now);
        }

        let provider = if !untried.is_empty() {
            self.choose(untried, call, now)
        } else {
            let tried = available.and(call.tried);
            let loud = tried.minus(call.silent);
            let candidates = if loud.is_empty() { tried } else { loud };
            // A retry goes to a provider that still answers most of its calls when there is one:
            // the one failing most of its calls most likely fails the retry too.
            let answering: ProviderSet = candidates
                .iter()
                .filter(|p| self.health[p.index()].breaker.mostly_answers(now))
                .collect();
            let candidates = if answering.is_empty() {
                candidates
            } else {
                answering
            };
            if candidates.is_empty() {
                return self.nothing_available(call, &blocked, now);
            }
            let first_visit = !call.backoff_served;
            let wait = self.backoff_first(call, now);
            if first_visit {
                call.same_provider_retries += 1;
            }
            if let Some(wait) = wait {
                return wait;
            }
            self.choose(candidates, call, now)
        };
        match provider {
            Some(p) => self.send(call, p, SendKind::Plain, usable, now),
            None => self.nothing_available(call, &blocked, now),
        }
    }

    /// Before retrying a provider the call already tried: one full-jitter backoff per retry
    /// (`same_provider_retries` sets its size). `Some` is the wait, or the give-up when the budget
    /// could not pay for the retry after it; `None`: send now.
    fn backoff_first(&mut self, call: &mut Call, now: Instant) -> Option<Decision> {
        if call.backoff_served {
            return None;
        }
        call.backoff_served = true;
        let delay = self.backoff(call.same_provider_retries);
        let until = now + delay;
        if delay > Duration::ZERO && until < call.deadline {
            if !self.retry_affordable(call, now) {
                return Some(Self::give_up(call, GiveUpReason::BudgetExhausted));
            }
            call.wait_until = until;
            return Some(Decision::Wait { until });
        }
        None
    }

    /// The preferred provider, when it deserves a quick retry before a lower tier: it is the
    /// best tier among the available providers, better than every untried one, this call tried it
    /// and it failed loudly (not a timeout: a silent provider costs a whole wait; not a 429, whose
    /// own rule decides), its breaker is closed and it still answers most of its calls (a retry
    /// is more likely than not to succeed, at the preferred tier's price), the call has retries of it left (`retry.preferred_retries`), and the budget can
    /// pay for the retry (else the free failover to a provider with headroom is the better use).
    fn preferred_worth_retrying(
        &mut self,
        call: &Call,
        available: ProviderSet,
        best_untried: Option<u64>,
        now: Instant,
    ) -> Option<ProviderId> {
        if call.same_provider_retries >= self.config.retry.preferred_retries {
            return None;
        }
        let best = self.best_preference(available)?;
        if best_untried.is_some_and(|u| u <= best) {
            return None;
        }
        let p = available
            .and(call.tried)
            .minus(call.silent)
            .minus(call.rate_limited)
            .minus(call.waited_out)
            .iter()
            .find(|p| self.preference(*p) == best)?;
        if !self.health[p.index()].breaker.mostly_answers(now) || !self.retry_affordable(call, now)
        {
            return None;
        }
        Some(p)
    }

    fn plan_hedge(&mut self, call: &mut Call, now: Instant) -> Decision {
        if call.probing
            && !call.probe_hedged
            && self.config.hedge_probes
            && call.attempts < self.config.max_attempts
        {
            // The user's request went out as a probe of a provider that may still be down: hedge
            // it at once, so the user is answered either way. The probe runs to its end (see
            // `Attempt::is_probe`) and decides the breaker. Charged as the failover it replaces.
            call.probe_hedged = true;
            let (available, _) = self.available(call, now);
            let untried = available.minus(call.tried);
            if let Some(p) = self.choose(untried, call, now) {
                return self.send(call, p, SendKind::ProbeHedge, available, now);
            }
        }
        let Some(delay) = self.config.hedge_delay else {
            return Decision::Pending;
        };
        if call.hedged || call.attempts >= self.config.max_attempts {
            return Decision::Pending;
        }
        let at = call.last_send + delay;
        if at >= call.deadline {
            return Decision::Pending;
        }
        if now < at {
            return Decision::Hedge { at };
        }
        call.hedged = true;
        let (available, _) = self.available(call, now);
        let untried = available.minus(call.tried);
        match self.choose(untried, call, now) {
            Some(p) => self.send(call, p, SendKind::Hedge, available, now),
            None => Decision::Pending,
        }
    }

    /// Picks from `candidates` within the best preference tier, or within the next one for the
    /// share of traffic the best tier's slowdown spills (`spill_tier`).
    fn choose(&mut self, candidates: ProviderSet, call: &Call, now: Instant) -> Option<ProviderId> {
        let best = self.best_preference(candidates)?;
        let tier: ProviderSet = if candidates.iter().all(|p| self.preference(p) == best) {
            candidates
        } else {
            let tier = self.tier(candidates, best);
            self.spill_tier(candidates, tier).unwrap_or(tier)
        };
        let view = PolicyView {
            now,
            providers: &self.config.providers,
            loads: &self.loads,
            input_tokens: u64::from(call.input_tokens),
            output_tokens: u64::from(call.output_tokens),
        };
        self.policy.pick(tier, &view, &mut self.rng)
    }

    /// The providers of `candidates` in tier `preference`.
    fn tier(&self, candidates: ProviderSet, preference: u64) -> ProviderSet {
        candidates
            .iter()
            .filter(|p| self.preference(*p) == preference)
            .collect()
    }

    /// When every provider of the best tier answers much slower than usual (queueing behind its
    /// capacity, or a brownout), the next tier, for a share of the traffic that grows with the
    /// slowdown (`slowdown.rs`): a saturated tier is relieved instead of piled on, and requests
    /// stop running into their deadlines there. Only toward a tier that is itself less slowed.
    fn spill_tier(&mut self, candidates: ProviderSet, tier: ProviderSet) -> Option<ProviderSet> {
        let spill_of = |set: ProviderSet, health: &[Health]| {
            set.iter()
                .map(|p| health[p.index()].slowdown.spill())
                .fold(f64::INFINITY, f64::min)
        };
        let spill = spill_of(tier, &self.health);
        if spill <= 0.0 || !spill.is_finite() {
            return None;
        }
        let rest = candidates.minus(tier);
        let next = self.tier(rest, self.best_preference(rest)?);
        if spill_of(next, &self.health) >= spill || self.rng.unit() >= spill {
            return None;
        }
        Some(next)
    }

    /// Lower is preferred. Under `priority` the config order ranks providers of the same tier.
    fn preference(&self, p: ProviderId) -> u64 {
        self.preferences[p.index()]
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

    fn best_preference(&self, set: ProviderSet) -> Option<u64> {
        set.iter().map(|p| self.preference(p)).min()
    }

    fn rate_limited_worth_waiting(
        &self,
        call: &Call,
        available: ProviderSet,
        cooling: ProviderSet,
        best_untried: Option<u64>,
        now: Instant,
    ) -> Option<(Instant, ProviderId)> {
        let wait_max = self.config.retry.rate_limit_wait_max;
        let mut best: Option<(u64, Instant, ProviderId)> = None;
        for p in call.rate_limited.minus(call.waited_out).iter() {
            let until = if available.contains(p) {
                now
            } else if cooling.contains(p) {
                match self.health[p.index()].cooldown {
                    Some((Cooldown::RateLimited, until))
                        if until <= now + wait_max && until < call.deadline =>
                    {
                        until
                    }
                    _ => continue,
                }
            } else {
                continue;
            };
            let pref = self.preference(p);
            if best_untried.is_some_and(|b| pref >= b) {
                continue;
            }
            // A provider answering much slower than usual is having its traffic spilled: not
            // worth a wait on top of its slowness (the wait plus a slowed answer can miss the
            // deadline that the next tier would meet).
            if self.health[p.index()].slowdown.spill() > 0.0 {
                continue;
            }
            // Nor one that lately refused most of its calls: the wait would likely end in
            // another 429, where the next tier most likely answers.
            if self.health[p.index()].refusals.mostly_refuses() {
                continue;
            }
            if best.is_none_or(|(bp, bu, _)| (pref, until) < (bp, bu)) {
                best = Some((pref, until, p));
            }
        }
        best.map(|(_, until, p)| (until, p))
    }

    fn nothing_available(&mut self, call: &mut Call, blocked: &Blocked, now: Instant) -> Decision {
        if blocked.rate_limited {
            if let Some(until) = blocked.soonest_rate_limit_end {
                if until <= now + self.config.retry.rate_limit_wait_max
                    && until < call.deadline
                    && self.retry_affordable(call, now)
                {
                    call.wait_until = until;
                    return Decision::Wait { until };
                }
            }
        }
        let reason = match call.last_error {
            Some(class @ (ErrorClass::ContextLength | ErrorClass::ContentFilter)) => {
                GiveUpReason::NotRetryable(class)
            }
            _ if blocked.context && !blocked.unhealthy && !blocked.rate_limited => {
                GiveUpReason::ContextTooLong
            }
            _ if blocked.rate_limited && !blocked.unhealthy => GiveUpReason::AllRateLimited,
            _ if blocked.spend && !blocked.unhealthy => GiveUpReason::SpendLimit,
            _ => GiveUpReason::NoHealthyProvider,
        };
        Self::give_up(call, reason)
    }

    /// Panic routing (Envoy's panic threshold is the model): when every provider is kept out by
    /// its breaker alone, a router that gives up answers less than "just try the primary" would,
    /// though an open breaker may guard a provider that still answers most calls. So the call is
    /// routed as if the breakers of the providers that still answer at least a quarter of their
    /// calls (as each breaker last knew: the window's share at the trip, moved by every later
    /// outcome) were closed: untried first, then retries with backoff, each charged to the budget
    /// as any other. One that answers (nearly) nothing would only add a wait. Providers cooling
    /// down (429, auth, quota), too small for the request, over the spend limit or excluded for
    /// the call never get panic traffic. The breakers are unchanged: a panic attempt is not a
    /// probe, and a breaker still closes only through its probes.
    fn panic_set(&self, blocked: &Blocked) -> ProviderSet {
        let mut set = ProviderSet::EMPTY;
        for p in blocked.breaker_only.iter() {
            let answers = self.health[p.index()]
                .breaker
                .answered_share()
                .is_some_and(|r| r >= PANIC_MIN_ANSWERED);
            if answers {
                set.insert(p);
            }
        }
        set
    }

    /// Whether the budget could pay for the call's next attempt (free for a first attempt).
    fn retry_affordable(&mut self, call: &Call, now: Instant) -> bool {
        call.attempts == 0 || self.budget.available(now) >= 1.0
    }

    fn backoff(&mut self, retries: u32) -> Duration {
        let retry = &self.config.retry;
        let ceiling = retry
            .backoff_base
            .saturating_mul(1u32 << retries.min(20))
            .min(retry.backoff_max);
        Duration::from_nanos((nanos(ceiling) as f64 * self.rng.unit()) as u64)
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

    /// The providers usable for `call` at `now`, and why the others are not.
    fn available(&mut self, call: &Call, now: Instant) -> (ProviderSet, Blocked) {
        let mut blocked = Blocked::default();
        let spend_reached = self.spend_reached(now);
        let needed_context = call
            .input_tokens
            .saturating_add(call.output_tokens)
            .max(call.min_context);
        let mut set = ProviderSet::EMPTY;
        for p in self.all.minus(call.excluded).minus(call.probes_out).iter() {
            let i = p.index();
            let settings = &self.config.providers[i];
            if call.needs_continuation && !settings.prefill_continuation {
                continue;
            }
            if settings.context_window.is_some_and(|w| w < needed_context) {
                blocked.context = true;
                continue;
            }
            if spend_reached && !settings.is_free() {
                blocked.spend = true;
                continue;
            }
            let health = &mut self.health[i];
            if health.breaker.admits(now, &self.config.breaker).is_none() {
                blocked.unhealthy = true;
                if health.cooldown.is_none_or(|(_, until)| now >= until) {
                    blocked.breaker_only.insert(p);
                }
                continue;
            }
            if let Some((kind, until)) = health.cooldown {
                if now < until {
                    if kind == Cooldown::RateLimited {
                        // Usable once the cool-down ends: a candidate to wait for.
                        blocked.rate_limited = true;
                        blocked.cooling.insert(p);
                        blocked.soonest_rate_limit_end = Some(
                            blocked
                                .soonest_rate_limit_end
                                .map_or(until, |s| s.min(until)),
                        );
                    } else {
                        blocked.unhealthy = true;
                    }
                    continue;
                }
                health.cooldown = None;
            }
            let tokens_needed = u64::from(call.input_tokens) + u64::from(call.output_tokens);
            if let Some(reset) = health.quota.blocks(tokens_needed, now) {
                // The provider said it is out of this: skipped as a local limit skips, and
                // worth waiting for when nothing else is available.
                blocked.rate_limited = true;
                blocked.soonest_rate_limit_end = Some(
                    blocked
                        .soonest_rate_limit_end
                        .map_or(reset, |s| s.min(reset)),
                );
                continue;
            }
            if let Some(minute) = &mut health.minute {
                let [requests, tokens] = minute.totals(now);
                let [requests, tokens] = [
                    requests.saturating_add(health.siblings_minute[0]),
                    tokens.saturating_add(health.siblings_minute[1]),
                ];
                let tokens_needed = u64::from(call.input_tokens) + u64::from(call.output_tokens);
                if settings
                    .requests_per_minute
                    .is_some_and(|rpm| requests >= u64::from(rpm))
                    || settings
                        .tokens_per_minute
                        .is_some_and(|tpm| tokens.saturating_add(tokens_needed) > tpm)
                {
                    blocked.rate_limited = true;
                    continue;
                }
            }
            set.insert(p);
        }
        (set, blocked)
    }

    /// Sends an attempt of `call` to `p`; `usable` is the set of providers this decision found
    /// available (before panic routing), the fallbacks a plain attempt's limit leaves time for.
    fn send(
        &mut self,
        call: &mut Call,
        p: ProviderId,
        kind: SendKind,
        usable: ProviderSet,
        now: Instant,
    ) -> Decision {
        let is_hedge = kind != SendKind::Plain;
        // The budget protects a struggling provider from extra load. A failover to a provider this
        // call has not tried, whose breaker is closed and at most a tenth of whose recent calls
        // failed (`has_headroom`), adds
        // load only where there is headroom: it is free, or a spike would keep requests away from
        // an idle, healthy fallback (as Envoy's per-cluster budgets charge the cluster that
        // receives the retry). Retries of a tried provider, hedges and failovers to a failing
        // provider are charged.
        let free_failover =
            kind != SendKind::Hedge && !call.tried.contains(p) && self.vouched_for(p, now);
        if call.attempts > 0 && !free_failover && !self.budget.try_withdraw(now) {
            if is_hedge {
                return Decision::Pending;
            }
            return Self::give_up(call, GiveUpReason::BudgetExhausted);
        }
        let i = p.index();
        let timeouts = self.attempt_timeouts(call, p, usable, now);
        let settings = &self.config.providers[i];
        let health = &mut self.health[i];
        let admitted = health.breaker.admits(now, &self.config.breaker);
        let probe = admitted.flatten();
        health.breaker.on_send(probe);
        if probe.is_some() {
            call.probing = true;
            call.probes_out.insert(p);
        }
        health
            .quota
            .spend(u64::from(call.input_tokens) + u64::from(call.output_tokens));
        if let Some(minute) = &mut health.minute {
            minute.add(
                now,
                [
                    1,
                    u64::from(call.input_tokens) + u64::from(call.output_tokens),
                ],
            );
        }
        self.loads[i].in_flight += 1;
        let stats = &mut self.stats[i];
        stats.attempts += 1;
        stats.hedges += u64::from(is_hedge);
        stats.free_failovers += u64::from(free_failover && call.attempts > 0);
        // Past its breaker: only panic routing sends there.
        stats.panic_sends += u64::from(admitted.is_none());
        call.tried.insert(p);
        call.attempts += 1;
        call.in_flight += 1;
        call.last_send = now;
        call.backoff_served = false;
        Decision::Send(Attempt {
            provider: p,
            number: call.attempts,
            is_hedge,
            deadline: (now + settings.timeouts.attempt).min(call.deadline),
            timeouts,
            provider_uid: self.uids[i],
            probe,
            stream: call.stream,
            by_call: call.deadline <= now + settings.timeouts.attempt,
        })
    }

    /// Whether `p` has room for one more attempt free of the retry budget: its breaker shows
    /// headroom, and its recent successes vouch for every attempt already in flight there (an
    /// idle provider takes one at a time until it answers). Without the second rule, attempts sent
    /// concurrently before any outcome of a failing provider came back were all free.
    fn vouched_for(&mut self, p: ProviderId, now: Instant) -> bool {
        let breaker = &mut self.health[p.index()].breaker;
        breaker.has_headroom(now)
            && u64::from(self.loads[p.index()].in_flight) <= breaker.recent_successes(now)
    }

    /// The index of the provider `attempt` went to, if it still exists after reloads.
    fn resolve(&self, attempt: &Attempt) -> Option<usize> {
        let i = attempt.provider.index();
        if self.uids.get(i) == Some(&attempt.provider_uid) {
            Some(i)
        } else {
            self.uids.iter().position(|u| *u == attempt.provider_uid)
        }
    }

    /// Records how `attempt` of `call` ended.
    pub fn record(&mut self, call: &mut Call, attempt: Attempt, outcome: Outcome, now: Instant) {
        self.sync(call);
        call.in_flight = call.in_flight.saturating_sub(1);
        if attempt.probe.is_some() {
            if let Some(p) = self.resolve(&attempt).and_then(ProviderId::from_index) {
                call.probes_out.remove(p);
            }
        }
        let index = self.resolve(&attempt);
        if let Some(i) = index {
            self.loads[i].in_flight = self.loads[i].in_flight.saturating_sub(1);
        }
        // The provider's id now (it may have moved in a reload), if it still exists.
        let current = index.and_then(ProviderId::from_index);
        match outcome {
            Outcome::Success {
                latency,
                first_token,
                usage,
            } => {
                if let Some(i) = index {
                    self.health[i].refusals.observe(false);
                    let felt = first_token.unwrap_or(latency);
                    self.health[i].breaker.on_success(
                        now,
                        felt,
                        attempt.probe,
                        &self.config.breaker,
                        &mut self.rng,
                    );
                    self.loads[i].latency.observe(now, felt);
                    let slowdown = &mut self.health[i].slowdown;
                    match first_token {
                        Some(first_token) => slowdown.observe_stream(now, first_token),
                        None => slowdown.observe_plain(now, latency, usage.output_tokens),
                    }
                    self.health[i]
                        .speed
                        .observe(now, latency, usage.output_tokens);
                    let cost =
                        self.config.providers[i].cost_usd(usage.input_tokens, usage.output_tokens);
                    let stats = &mut self.stats[i];
                    stats.successes += 1;
                    stats.input_tokens = stats.input_tokens.saturating_add(usage.input_tokens);
                    stats.output_tokens = stats.output_tokens.saturating_add(usage.output_tokens);
                    stats.cost_usd += cost;
                    if self.config.spend.is_some() {
                        let _ = self.spend_reached(now);
                        self.spent_usd += cost;
                    }
                }
                if call.end.is_none() {
                    call.end = Some(Ok(current));
                }
            }
            Outcome::Failure {
                class: ErrorClass::Timeout,
                latency,
                ..
            } if call.client_deadline
                && now >= call.deadline
                && index.is_some_and(|i| {
                    // The usual latency: the estimate, but never below the configured default,
                    // since the estimate decays toward zero while a provider is idle.
                    let usual = self.loads[i]
                        .latency
                        .estimate(now)
                        .max(self.config.latency_default);
                    latency < usual * CLIENT_CUT_FACTOR
                }) =>
            {
                // The client's own deadline ended the attempt before the provider had taken
                // even twice its usual time: that says nothing about the provider. Neutral for
                // health (no breaker failure, no slow call, no latency sample), or a client with
                // a 10 ms deadline could open every breaker for everyone. An attempt that ran
                // past twice the provider's usual latency before the client gave up is evidence
                // of a slow provider, and counts below like any timeout.
                call.last_error = Some(ErrorClass::Timeout);
                if let Some(i) = index {
                    self.stats[i].cut_by_client_deadline += 1;
                    self.health[i].breaker.on_neutral(attempt.probe);
                }
            }
            Outcome::Failure {
                class,
                latency,
                retry_after,
            } => {
                call.last_error = Some(class);
                if let Some(i) = index {
                    self.stats[i].failures[class.index()] += 1;
                    if class == ErrorClass::RateLimited {
                        self.health[i].refusals.observe(true);
                    }
                    // A timeout the client's deadline cut short is a lower bound on the
                    // provider's latency, not a sample: feeding it would raise the estimate
                    // that tells the next client-cut timeout apart (above).
                    let censored = class == ErrorClass::Timeout
                        && call.client_deadline
                        && now >= call.deadline;
                    self.apply_failure(i, class, latency, retry_after, attempt.probe, now);
                    if class == ErrorClass::Timeout && !censored {
                        self.loads[i].latency.observe(now, latency);
                        // A timeout says the provider is at least this slow, never faster.
                        let slowdown = &mut self.health[i].slowdown;
                        if attempt.stream {
                            // Only a wait for the first token: a stream that broke after bytes
                            // reached the client (the call needs continuation) is no sample of it.
                            if !call.needs_continuation {
                                slowdown.observe_stream_timeout(now, latency);
                            }
                        } else {
                            slowdown.observe_plain_timeout(
                                now,
                                latency,
                                u64::from(call.output_tokens),
                            );
                        }
                    }
                }
                if matches!(class, ErrorClass::BadRequest)
                    || (class == ErrorClass::ContentFilter
                        && !self.config.retry.content_filter_failover)
                {
                    if call.end.is_none() {
                        let _ = Self::give_up(call, GiveUpReason::NotRetryable(class));
                    }
                } else if let Some(p) = current {
                    match class {
                        ErrorClass::RateLimited => call.rate_limited.insert(p),
                        ErrorClass::Timeout => call.silent.insert(p),
                        ErrorClass::ContextLength => {
                            // Never resent unchanged: this provider is out, and so is any other
                            // whose known window is not larger.
                            call.excluded.insert(p);
                            if let Some(window) = self.config.providers[p.index()].context_window {
                                call.min_context = call.min_context.max(window.saturating_add(1));
                            }
                        }
                        ErrorClass::ContentFilter => call.excluded.insert(p),
                        ErrorClass::Server
                        | ErrorClass::Auth
                        | ErrorClass::Quota
                        | ErrorClass::BadRequest => {}
                    }
                }
            }
            Outcome::Cancelled => {
                if let Some(i) = index {
                    self.stats[i].cancelled += 1;
                    self.health[i].breaker.on_neutral(attempt.probe);
                }
            }
        }
    }

    fn apply_failure(
        &mut self,
        i: usize,
        class: ErrorClass,
        latency: Duration,
        retry_after: Option<Duration>,
        probe: Option<ProbeEpoch>,
        now: Instant,
    ) {
        let retry = &self.config.retry;
        // A Retry-After beyond the quota cool-down is a broken header, not a plan.
        let retry_after = retry_after.map(|d| d.min(retry.quota_cooldown));
        let health = &mut self.health[i];
        let cooldown = match class {
            // Without Retry-After, an isolated 429 (`Refusals::repeated`) cools nothing down.
            ErrorClass::RateLimited => match retry_after {
                Some(d) => Some((Cooldown::RateLimited, d)),
                None if health.refusals.repeated() => {
                    Some((Cooldown::RateLimited, retry.rate_limit_cooldown))
                }
                None => None,
            },
            ErrorClass::Auth => Some((Cooldown::Auth, retry.auth_cooldown)),
            ErrorClass::Quota => Some((
                Cooldown::Quota,
                retry.quota_cooldown.max(retry_after.unwrap_or_default()),
            )),
            _ => None,
        };
        if class.is_outage() {
            health
                .breaker
                .on_failure(now, latency, probe, &self.config.breaker, &mut self.rng);
        } else {
            health.breaker.on_neutral(probe);
        }
        if let Some((kind, duration)) = cooldown {
            let until = now + duration;
            // A cool-down never gets shorter, and a rate limit never hides a longer auth/quota one.
            health.cooldown = match health.cooldown {
                Some((old_kind, old_until)) if old_until > now && old_until >= until => {
                    Some((old_kind, old_until))
                }
                _ => Some((kind, until)),
            };
        }
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
