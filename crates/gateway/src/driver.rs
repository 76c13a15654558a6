//! The request loop: one request's routing state ([`CallGuard`]) and the driver that turns the
//! router's decisions into timed HTTP attempts ([`Driver`]).
//!
//! The guard records every attempt it started exactly once: when its outcome is known, or as
//! cancelled when the request is dropped (client gone, another attempt won). The driver runs
//! decisions until an attempt produces an answer (or a stream past its first token) or the router
//! gives up, and ends each request with its metrics and its access log line.

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stilts_core::{
    Attempt, Call, Decision, GiveUp, GiveUpReason, Instant as CoreInstant, Outcome, RequestMeta,
    Usage,
};

use crate::engine::{ChatReply, Clock, Gateway, Route, RouteState};
use crate::error::{ApiError, DeadlineSource, TriedAttempt};
use crate::stream;
use crate::upstream::{Answer, Deployment, Failure};

/// The access log line of a request refused before it was routed (401, a malformed header or
/// body, an unknown route): the same target and fields as [`Driver::finish`], with what is known.
pub(crate) fn access_refused(route: &str, status: u16, started: std::time::Instant) {
    tracing::info!(
        target: "stilts::access",
        route = %crate::log_safe::escape(route),
        provider = "none",
        attempts = 0u32,
        status,
        duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        "request"
    );
}

/// Retry-budget exhaustion is logged at most once per this many ms per route.
const BUDGET_LOG_EVERY_MS: u64 = 10_000;

/// One request's routing state, with every attempt it started until recorded.
///
/// Dropping it records the attempts still pending as cancelled, so a request abandoned at any
/// await (client gone, shutdown) leaves the router's in-flight counts and probes right.
pub(crate) struct CallGuard {
    pub route: Arc<Route>,
    pub call: Call,
    pending: Vec<Attempt>,
    clock: Clock,
    /// Tokens and cost of the attempts that succeeded (more than one for a continued stream).
    pub spent: (Usage, f64),
}

impl CallGuard {
    pub(crate) fn begin(route: Arc<Route>, clock: Clock, meta: RequestMeta) -> Self {
        let call = route.lock().router.begin(meta, clock.now());
        CallGuard {
            route,
            call,
            pending: Vec::new(),
            clock,
            spent: (Usage::default(), 0.0),
        }
    }

    /// The router's next decision, with the deployment of a `Send`.
    pub fn decide(&mut self) -> (Decision, Option<Arc<Deployment>>, bool) {
        let now = self.clock.now();
        let mut state = self.route.lock();
        let decision = state.router.next_attempt(&mut self.call, now);
        let mut deployment = None;
        if let Decision::Send(attempt) = decision {
            deployment = state.deployments.get(attempt.provider.index()).cloned();
            match &deployment {
                Some(_) => self.pending.push(attempt),
                None => {
                    // Cannot happen: deployments and router are swapped together.
                    state
                        .router
                        .record(&mut self.call, attempt, Outcome::Cancelled, now);
                }
            }
        }
        (decision, deployment, state.continuation)
    }

    /// Records the outcome of `attempt`. Returns `false` for a failure the router held neutral
    /// (cut short by the client's own deadline): not the provider's failure, so not counted or
    /// logged as one.
    pub fn record(&mut self, attempt: Attempt, outcome: Outcome, deployment: &Deployment) -> bool {
        let Some(at) = self.pending.iter().position(|a| *a == attempt) else {
            return true;
        };
        let _recorded_below = self.pending.swap_remove(at);
        let now = self.clock.now();
        let mut state = self.route.lock();
        // The attempt's provider, if a reload has not moved or removed it since.
        let same = state
            .deployments
            .get(attempt.provider.index())
            .is_some_and(|d| d.name == deployment.name);
        let before = if same && !matches!(outcome, Outcome::Cancelled) {
            state.router.health_of(attempt.provider, now)
        } else {
            None
        };
        let cuts = |state: &RouteState| {
            same.then(|| state.router.stats(attempt.provider).cut_by_client_deadline)
        };
        let cuts_before = cuts(&state);
        state.router.record(&mut self.call, attempt, outcome, now);
        if same {
            if let Some((quota, at)) = deployment.take_reported_quota() {
                state.router.note_quota(attempt.provider, quota, at);
            }
        }
        let providers_fault = cuts(&state) == cuts_before;
        if let Some(before) = before {
            if let Some(after) = state.router.health_of(attempt.provider, now) {
                log_transition(&self.route.name, &deployment.name, before, after, now);
            }
        }
        match outcome {
            Outcome::Success { usage, .. } => {
                let cost = if same {
                    state
                        .router
                        .provider(attempt.provider)
                        .cost_usd(usage.input_tokens, usage.output_tokens)
                } else {
                    0.0
                };
                drop(state);
                self.spent.0.input_tokens += usage.input_tokens;
                self.spent.0.output_tokens += usage.output_tokens;
                self.spent.1 += cost;
                deployment.metrics.input_tokens.inc_by(usage.input_tokens);
                deployment.metrics.output_tokens.inc_by(usage.output_tokens);
                deployment.metrics.cost_usd.inc_by(cost);
            }
            Outcome::Failure { class, .. } => {
                drop(state);
                if providers_fault {
                    deployment.metrics.failures[class.index()].inc();
                }
            }
            Outcome::Cancelled => {}
        }
        providers_fault
    }

    /// Records every pending attempt as cancelled. The router records one as a timeout of its
    /// provider when it lost to its fallback hedge (`Router::record`): the metrics and the log
    /// say so too.
    pub fn cancel_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = self.clock.now();
        let mut state = self.route.lock();
        for attempt in self.pending.drain(..) {
            let before = state.router.health_of(attempt.provider, now);
            let recorded = state
                .router
                .record(&mut self.call, attempt, Outcome::Cancelled, now);
            let Outcome::Failure { class, .. } = recorded else {
                continue;
            };
            let after = state.router.health_of(attempt.provider, now);
            // Deployments and router are swapped together: the index is the router's.
            if let Some(deployment) = state.deployments.get(attempt.provider.index()) {
                deployment.metrics.failures[class.index()].inc();
                if let (Some(before), Some(after)) = (before, after) {
                    log_transition(&self.route.name, &deployment.name, before, after, now);
                }
            }
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.cancel_pending();
    }
}

/// Logs a provider's breaker opening or closing, and a cool-down starting, once each: what an
/// operator needs to see when a provider goes bad or comes back.
fn log_transition(
    route: &str,
    provider: &str,
    before: (
        stilts_core::BreakerState,
        Option<(stilts_core::Cooldown, CoreInstant)>,
    ),
    after: (
        stilts_core::BreakerState,
        Option<(stilts_core::Cooldown, CoreInstant)>,
    ),
    now: CoreInstant,
) {
    use stilts_core::BreakerState as B;
    match (before.0, after.0) {
        (B::Open { .. }, B::Open { .. }) => {}
        (_, B::Open { until }) => tracing::warn!(
            route = %route,
            provider = %provider,
            reopens_in_ms = until.saturating_since(now).as_millis() as u64,
            "breaker opened: the provider is failing; traffic goes to the others"
        ),
        (B::HalfOpen { .. } | B::Open { .. }, B::Closed) => {
            tracing::info!(route = %route, provider = %provider, "breaker closed: the provider recovered")
        }
        _ => {}
    }
    if let (None, Some((kind, until))) = (before.1, after.1) {
        let level_warn = !matches!(kind, stilts_core::Cooldown::RateLimited);
        let ms = until.saturating_since(now).as_millis() as u64;
        let kind = format!("{kind:?}").to_lowercase();
        if level_warn {
            tracing::warn!(
                route = %route,
                provider = %provider,
                kind = %kind,
                cooldown_ms = ms,
                "provider cooling down"
            );
        } else {
            tracing::info!(
                route = %route,
                provider = %provider,
                kind = %kind,
                cooldown_ms = ms,
                "provider cooling down"
            );
        }
    }
}

type AttemptFuture<T> =
    Pin<Box<dyn Future<Output = (Attempt, Arc<Deployment>, Result<T, Failure>, Duration)> + Send>>;

/// The request loop shared by plain and stream calls.
pub(crate) struct Driver {
    pub gateway: Gateway,
    pub guard: CallGuard,
    pub started: std::time::Instant,
    /// Time spent waiting on upstreams and backoff (excluded from the overhead metric).
    pub waited: Duration,
    /// Time spent in stilts inside attempts (plugin calls, framing), added back to the overhead.
    pub local: Arc<AtomicU64>,
    pub tried: Vec<TriedAttempt>,
    /// Attempts a plugin refused before sending (not counted as attempts).
    pub refused: u32,
    /// The client's own deadline (`X-Stilts-Deadline-Ms`), if it sent one.
    pub client_deadline: Option<Duration>,
    /// Whether the client asked for the usage-only chunk at the end of a stream
    /// (`stream_options.include_usage`). Plugins ask upstreams for usage on every stream, for accounting;
    /// a client that did not ask does not get that chunk, as from OpenAI itself.
    pub usage_chunks: bool,
}

/// Where the loop ended.
pub(crate) enum LoopEnd<T> {
    Won(Attempt, Arc<Deployment>, T, Duration),
    Failed(GiveUp),
    /// A plugin refused to translate the client's request (nothing was sent): the client's error.
    /// Not yet counted: the caller answers it ([`Driver::refusal`]) or, mid-stream, ends the
    /// stream.
    Refused(Arc<Deployment>, Failure),
}

/// A limit on loop turns, far above what `max_attempts` allows: a broken invariant ends the
/// request instead of spinning.
const MAX_TURNS: u32 = 1_000;

impl Driver {
    /// Runs decisions until one attempt produces a `T` (an answer, or a stream past its first
    /// token) or the router gives up. Attempts still running are cancelled and recorded, except
    /// probes of a half-open breaker: they run on, detached from the request, and are recorded
    /// when they end (the core's contract, `Attempt::is_probe`).
    pub async fn run<T, F>(&mut self, mut start: F) -> LoopEnd<T>
    where
        T: Settle + Send + 'static,
        F: FnMut(Attempt, Arc<Deployment>, Clock) -> AttemptFuture<T>,
    {
        let mut probes: FuturesUnordered<AttemptFuture<T>> = FuturesUnordered::new();
        let end = self.turns(&mut start, &mut probes).await;
        let winner = match &end {
            LoopEnd::Won(attempt, ..) => Some(*attempt),
            _ => None,
        };
        self.detach_probes(probes, winner);
        if !matches!(end, LoopEnd::Won(..)) {
            self.guard.cancel_pending();
        }
        end
    }

    /// Hands the probes still in flight (not `winner`, the attempt whose answer the request
    /// keeps) to a task of their own, which records each when it ends (an answer is discarded; a
    /// stream is read to its end and discarded) and then ends.
    fn detach_probes<T: Settle + Send + 'static>(
        &mut self,
        mut probes: FuturesUnordered<AttemptFuture<T>>,
        winner: Option<Attempt>,
    ) {
        if probes.is_empty() {
            return;
        }
        let attempts = self.guard.take_probes(winner);
        let detached = self
            .guard
            .call
            .detach(u32::try_from(attempts.len()).unwrap_or(u32::MAX));
        let mut guard = CallGuard {
            route: Arc::clone(&self.guard.route),
            call: detached,
            pending: attempts,
            clock: self.guard.clock,
            spent: (Usage::default(), 0.0),
        };
        tokio::spawn(async move {
            while let Some((attempt, deployment, result, latency)) = probes.next().await {
                let outcome = match result {
                    Ok(value) => value.settle(latency, guard.clock).await,
                    Err(failure) => failure_outcome(&failure, latency),
                };
                guard.record(attempt, outcome, &deployment);
            }
        });
    }

    async fn turns<T, F>(
        &mut self,
        start: &mut F,
        probes: &mut FuturesUnordered<AttemptFuture<T>>,
    ) -> LoopEnd<T>
    where
        T: Send + 'static,
        F: FnMut(Attempt, Arc<Deployment>, Clock) -> AttemptFuture<T>,
    {
        let mut in_flight: FuturesUnordered<AttemptFuture<T>> = FuturesUnordered::new();
        let clock = self.guard.clock();
        for _ in 0..MAX_TURNS {
            let (decision, deployment, _) = self.guard.decide();
            let wake = match decision {
                Decision::Send(attempt) => {
                    if let Some(d) = deployment {
                        let future = start(attempt, d, clock);
                        if attempt.is_probe() {
                            probes.push(future);
                        } else {
                            in_flight.push(future);
                        }
                    }
                    continue;
                }
                Decision::Wait { until } => Some(until),
                Decision::Hedge { at } => Some(at),
                Decision::Pending => None,
                Decision::Done { .. } => {
                    // Success is handled when the outcome arrives; Done without a kept answer
                    // means a raced success was already taken: cannot happen with one winner.
                    break;
                }
                Decision::GiveUp(g) => return LoopEnd::Failed(g),
            };
            let t0 = std::time::Instant::now();
            let idle = in_flight.is_empty() && probes.is_empty();
            let next = match wake {
                Some(at) => {
                    tokio::select! {
                        biased;
                        r = in_flight.next(), if !in_flight.is_empty() => r,
                        r = probes.next(), if !probes.is_empty() => r,
                        () = tokio::time::sleep_until(clock.tokio(at)) => None,
                    }
                }
                None if idle => {
                    // Pending with nothing in flight: cannot happen; give up cleanly.
                    break;
                }
                None => {
                    tokio::select! {
                        biased;
                        r = in_flight.next(), if !in_flight.is_empty() => r,
                        r = probes.next(), if !probes.is_empty() => r,
                    }
                }
            };
            self.waited += t0.elapsed();
            let Some((attempt, deployment, result, latency)) = next else {
                continue;
            };
            match result {
                Ok(value) => {
                    // Keep the winner; cancel the rest (but probes, which the caller detaches).
                    drop(in_flight);
                    return LoopEnd::Won(attempt, deployment, value, latency);
                }
                Err(failure) if failure.refused_by_plugin => {
                    // Nothing reached the provider: neutral for its health, not an attempt the
                    // client is told about, not a provider failure in the metrics.
                    self.guard
                        .record(attempt, failure_outcome(&failure, latency), &deployment);
                    self.refused += 1;
                    return LoopEnd::Refused(deployment, failure);
                }
                Err(failure) => {
                    let providers_fault =
                        self.guard
                            .record(attempt, failure_outcome(&failure, latency), &deployment);
                    if providers_fault {
                        tracing::warn!(
                            route = %self.guard.route.name,
                            provider = %deployment.name,
                            class = %failure.class,
                            status = failure.status,
                            error = %failure.message,
                            "attempt failed"
                        );
                    } else {
                        tracing::debug!(
                            route = %self.guard.route.name,
                            provider = %deployment.name,
                            error = %failure.message,
                            "attempt cut short by the client's own deadline"
                        );
                    }
                    self.tried.push(TriedAttempt {
                        provider: deployment.name.clone(),
                        class: failure.class.as_str(),
                        status: failure.status,
                        message: failure.message.clone(),
                    });
                }
            }
        }
        LoopEnd::Failed(GiveUp {
            reason: GiveUpReason::NoHealthyProvider,
            last_error: self.guard.call.last_error(),
        })
    }

    /// The client's error for a request a plugin could not translate, counted.
    pub(crate) fn refusal(&mut self, deployment: &Deployment, failure: &Failure) -> ApiError {
        let route = &self.guard.route.name;
        let mut error = ApiError::invalid_request(format!(
            "stilts cannot send this request to {} (plugin {}): {}",
            deployment.name,
            deployment.plugin.describe().name,
            failure.message
        ));
        error.route = Some(route.clone());
        error.tried = std::mem::take(&mut self.tried);
        error.attempts = self.attempts_sent();
        self.gateway
            .metrics()
            .request_failed(route, "invalid_request");
        self.finish(400, None);
        tracing::info!(route = %route, provider = %deployment.name, error = %failure.message, "request refused by the plugin (the client's request is not valid for it)");
        error
    }

    /// Attempts that reached a provider (the `X-Stilts-Attempts` header).
    pub fn attempts_sent(&self) -> u32 {
        self.guard.call.attempts().saturating_sub(self.refused)
    }

    /// The error answer for a give-up, counted.
    pub fn give_up(&mut self, g: GiveUp) -> ApiError {
        let route = &self.guard.route;
        let deadline = match self.client_deadline {
            Some(d) if self.guard.call.deadline_is_clients() => DeadlineSource::Client(d),
            _ => DeadlineSource::Route(route.lock().router.config().deadline),
        };
        let mut error =
            ApiError::from_give_up(&route.name, g, std::mem::take(&mut self.tried), deadline);
        error.attempts = error.attempts.max(self.attempts_sent());
        if g.reason == GiveUpReason::AllRateLimited {
            // Tell the client when the first provider's rate-limit cool-down ends.
            let now = self.guard.clock().now();
            let soonest = route
                .lock()
                .router
                .status(now)
                .iter()
                .filter_map(|p| match p.cooldown {
                    Some((stilts_core::Cooldown::RateLimited, until)) => {
                        Some(until.saturating_since(now))
                    }
                    _ => None,
                })
                .min();
            error.retry_after = Some(soonest.unwrap_or(Duration::from_secs(1)));
        }
        self.gateway
            .metrics()
            .request_failed(&route.name, g.reason.as_str());
        self.finish(error.status.as_u16(), None);
        if g.reason == GiveUpReason::BudgetExhausted {
            // Once per budget window while it lasts, not once per refused request.
            let now_ms = self.guard.clock().now().as_nanos() / 1_000_000;
            let last = route.budget_logged_ms.load(Ordering::Relaxed);
            if last == 0 || now_ms.saturating_sub(last) >= BUDGET_LOG_EVERY_MS {
                route
                    .budget_logged_ms
                    .store(now_ms.max(1), Ordering::Relaxed);
                tracing::warn!(route = %route.name, "retry budget exhausted: failing requests are not retried until it refills (many requests are failing)");
            }
        }
        tracing::warn!(route = %route.name, reason = %g, status = error.status.as_u16(), "request failed");
        error
    }

    /// Records duration and overhead of a finished request, and writes its access log line
    /// (target `stilts::access`): route, serving provider, attempts, status, duration, tokens and
    /// cost. Never a key, a prompt or an answer.
    pub fn finish(&self, status: u16, provider: Option<&str>) {
        let total = self.started.elapsed();
        let m = &self.guard.route.metrics;
        m.duration.observe(total.as_secs_f64());
        let local = Duration::from_nanos(self.local.load(Ordering::Relaxed));
        m.overhead
            .observe((total.saturating_sub(self.waited) + local).as_secs_f64());
        let (usage, cost) = self.guard.spent;
        tracing::info!(
            target: "stilts::access",
            route = %self.guard.route.name,
            provider = %provider.unwrap_or("none"),
            attempts = self.attempts_sent(),
            status,
            stream = self.guard.call.is_stream(),
            duration_ms = (total.as_secs_f64() * 1e6).round() / 1e3,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_usd = cost,
            "request"
        );
    }

    pub(crate) async fn complete(
        mut self,
        body: Bytes,
        op: crate::upstream::Operation,
    ) -> Result<ChatReply, ApiError> {
        let shared_body = body.clone();
        let local = Arc::clone(&self.local);
        let end = self
            .run(move |attempt, deployment, clock| {
                let body = shared_body.clone();
                let local = Arc::clone(&local);
                Box::pin(async move {
                    let sent = clock.now();
                    let mut timer = attempt.timer(sent);
                    let result = deployment
                        .complete(op, &body, &mut timer, clock, &local)
                        .await;
                    (
                        attempt,
                        deployment,
                        result,
                        clock.now().saturating_since(sent),
                    )
                })
            })
            .await;
        match end {
            LoopEnd::Won(attempt, deployment, Answer { body, usage }, latency) => {
                self.guard.record(
                    attempt,
                    Outcome::Success {
                        latency,
                        first_token: None,
                        usage,
                    },
                    &deployment,
                );
                self.guard.cancel_pending();
                deployment.metrics.served.inc();
                self.finish(200, Some(&deployment.name));
                Ok(ChatReply::Complete {
                    provider: deployment.name.clone(),
                    attempts: self.attempts_sent(),
                    body,
                })
            }
            LoopEnd::Failed(g) => Err(self.give_up(g)),
            LoopEnd::Refused(deployment, failure) => Err(self.refusal(&deployment, &failure)),
        }
    }

    pub(crate) async fn stream(mut self, body: Bytes) -> Result<ChatReply, ApiError> {
        let shared_body = body.clone();
        let options = crate::upstream::ReadOptions {
            track_text: self.guard.route.lock().continuation,
            continuation: false,
            usage_chunks: self.usage_chunks,
        };
        let local = Arc::clone(&self.local);
        let end = self
            .run(move |attempt, deployment, clock| {
                let body = shared_body.clone();
                let local = Arc::clone(&local);
                Box::pin(async move {
                    let sent = clock.now();
                    let timer = attempt.timer(sent);
                    let result =
                        stream::open(&deployment, &body, timer, clock, options, local).await;
                    (
                        attempt,
                        deployment,
                        result,
                        clock.now().saturating_since(sent),
                    )
                })
            })
            .await;
        match end {
            LoopEnd::Won(attempt, deployment, opened, first_token) => {
                // Other attempts (hedges) lose: the stream's provider is chosen.
                let keep: Vec<Attempt> = vec![attempt];
                self.guard.cancel_pending_except(&keep);
                let provider = deployment.name.clone();
                let attempts = self.attempts_sent();
                let live = stream::Live::new(self, body, attempt, deployment, opened, first_token);
                Ok(ChatReply::Stream {
                    provider,
                    attempts,
                    stream: live.into_stream(),
                })
            }
            LoopEnd::Failed(g) => Err(self.give_up(g)),
            LoopEnd::Refused(deployment, failure) => Err(self.refusal(&deployment, &failure)),
        }
    }
}

/// What a failed attempt tells the router: nothing when a plugin refused to translate the request
/// (nothing reached the provider), else the failure.
fn failure_outcome(failure: &Failure, latency: Duration) -> Outcome {
    if failure.refused_by_plugin {
        return Outcome::Cancelled;
    }
    Outcome::Failure {
        class: failure.class,
        latency,
        retry_after: failure.retry_after,
    }
}

/// What a detached probe's result tells the router when it ends (the result itself is dropped).
pub(crate) trait Settle {
    /// The outcome of an attempt that produced `self` after `latency`, on the core's `clock`.
    fn settle(self, latency: Duration, clock: Clock) -> impl Future<Output = Outcome> + Send;
}

impl Settle for Answer {
    async fn settle(self, latency: Duration, _clock: Clock) -> Outcome {
        Outcome::Success {
            latency,
            first_token: None,
            usage: self.usage,
        }
    }
}

impl Settle for stream::Opened {
    /// A stream past its first token: read to its end (under the attempt's timer) and dropped, so
    /// its outcome carries the answer's whole time and length, as the router's pace needs.
    async fn settle(self, latency: Duration, clock: Clock) -> Outcome {
        stream::read_to_end(self, latency, clock).await
    }
}

impl CallGuard {
    /// Takes the probes but `keep` out of the pending attempts (a detached task records them).
    fn take_probes(&mut self, keep: Option<Attempt>) -> Vec<Attempt> {
        let (probes, rest) = self
            .pending
            .drain(..)
            .partition(|a| a.is_probe() && Some(*a) != keep);
        self.pending = rest;
        probes
    }

    /// Records every pending attempt except `keep` as cancelled.
    pub fn cancel_pending_except(&mut self, keep: &[Attempt]) {
        let now = self.clock.now();
        let mut state = self.route.lock();
        let mut kept = Vec::new();
        for attempt in self.pending.drain(..) {
            if keep.contains(&attempt) {
                kept.push(attempt);
            } else {
                state
                    .router
                    .record(&mut self.call, attempt, Outcome::Cancelled, now);
            }
        }
        drop(state);
        self.pending = kept;
    }
}
