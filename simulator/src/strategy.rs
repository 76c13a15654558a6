//! Who decides the attempts: the real stilts-core router, or one of the simulator-side baselines.
//!
//! The engine drives every run through the same [`Strategy`] interface, shaped like the core's own
//! (`begin`, `next`, `record`), so the stilts configs and the baselines meet the same world through
//! the same event loop. The baselines are what apps do without stilts:
//!
//! - [`Single`]: the primary provider, one try.
//! - [`Naive`]: the try/except chain: the primary, then on any error the next provider in file
//!   order, each step optionally with an SDK's own retries (`baselines.sdk_retries`).
//! - [`SeedRouter`]: the hand-written weighted router stilts replaces: weighted random among
//!   providers whose home-made breaker is closed; any exception counts; 3 consecutive failures open a
//!   provider for 60 s; up to 3 attempts, sleeping 2^attempt + U(0, 1) s between them, `attempt`
//!   counted from 0 (1-2 s, then 2-3 s).
//!
//! The oracle is not a strategy: it reads the world directly (see `Scenario::oracle`).

use crate::draw::{Key, Purpose};
use crate::scenario::{Baselines, ConfigUnderTest, ProviderModel};
use crate::world::Request;
use std::time::Duration;
use stilts_core::{
    Attempt, AttemptTimer, Call, Decision, ErrorClass, Instant, Outcome, ReplicaReport,
    RequestMeta, Router, SharedView, Timeouts,
};

/// An attempt a strategy asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SendAttempt<A> {
    pub attempt: A,
    /// World provider index.
    pub provider: usize,
    /// The core's timer of the attempt, from its send: every limit it runs under.
    pub timer: AttemptTimer,
}

/// A baseline's limits: one timeout for every stage and for the whole attempt, as an SDK's
/// `timeout=` is applied (the headers of a plain answer come with its body).
fn single_timeouts(timeout_ns: u64) -> Timeouts {
    let t = Duration::from_nanos(timeout_ns);
    Timeouts {
        connect: t,
        headers: t,
        plain_headers_per_output_token: Duration::ZERO,
        first_token: t,
        stall: t,
        attempt: t,
    }
}

/// What to do next for a request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step<A> {
    Send(SendAttempt<A>),
    /// Call `next` again at this time, unless an attempt ends first.
    WakeAt(u64),
    /// Wait for an attempt in flight.
    Pending,
    /// Answered.
    Done,
    /// Failed, with a reason for the report.
    GiveUp(&'static str),
}

/// The decision-maker of one run.
pub(crate) trait Strategy {
    type Call;
    type Attempt: Copy;
    fn begin(&mut self, req: &Request, now: u64) -> Self::Call;
    fn next(&mut self, call: &mut Self::Call, now: u64) -> Step<Self::Attempt>;
    fn record(&mut self, call: &mut Self::Call, attempt: Self::Attempt, outcome: Outcome, now: u64);
    /// Stream bytes reached the client: only exact continuation may follow.
    fn commit_stream(&mut self, call: &mut Self::Call);
    /// The provider of `attempt` reported its rate limit on an answer at `at`: `left` requests
    /// until one more frees in `frees_in` ns (the gateway reads the same from the vendors'
    /// headers). The baselines ignore it.
    fn note_quota(
        &mut self,
        _call: &Self::Call,
        _attempt: Self::Attempt,
        _left: u64,
        _frees_in: u64,
        _at: u64,
    ) {
    }
    /// Whether the call's deadline is the client's own (then a flowing stream it ends is not the
    /// provider's failure, as in the gateway). The baselines have no such notion.
    fn deadline_is_clients(&self, _call: &Self::Call) -> bool {
        false
    }
    /// When `call` ends with `attempt` still in flight: a copy of the call to record the attempt
    /// on when it ends by itself (a probe, which the core asks to run to its end), or `None` to
    /// cancel it. The baselines have no probes.
    fn detach(&self, _call: &mut Self::Call, _attempt: &Self::Attempt) -> Option<Self::Call> {
        None
    }
    /// Attempts the strategy still counts in flight after the run: every attempt is recorded
    /// exactly once, so anything but 0 is a broken promise.
    fn in_flight_left(&mut self, _now: u64) -> u64 {
        0
    }
    /// Breaker trips and hedges per world provider at the end of the run.
    fn finish(&mut self, now: u64, providers: usize) -> (Vec<u64>, u64);
}

/// Output tokens the gateway tells the router to expect when a request sets no `max_tokens`.
pub(crate) const GATEWAY_DEFAULT_OUTPUT_TOKENS: u32 = 512;

/// The real router: one per gateway replica (a round-robin load balancer in front), exchanging
/// their shared state every `sync_ns` of virtual time when the config says they share it, as the
/// gateway's `[cluster]` does through Redis.
pub(crate) struct Stilts<'a> {
    routers: Vec<Router>,
    config: &'a ConfigUnderTest,
    /// What the router is told to expect as output: what the gateway passes (the request's
    /// `max_tokens`, else 512), never the realised length, which nobody knows in advance.
    expected_output_tokens: u32,
    /// The replica the next request goes to.
    next_replica: usize,
    /// The exchange period, and when the next exchange is due.
    sync_ns: Option<u64>,
    next_sync: u64,
}

impl<'a> Stilts<'a> {
    /// Replica `r`'s router is seeded with `seed + r` (replica 0 with `seed`, as one gateway).
    pub(crate) fn new(config: &'a ConfigUnderTest, seed: u64, max_tokens: Option<u32>) -> Self {
        let routers = (0..u64::from(config.replicas.count.max(1)))
            .map(|r| Router::new(config.config.clone(), seed.wrapping_add(r)))
            .collect();
        Stilts {
            routers,
            config,
            expected_output_tokens: max_tokens.unwrap_or(GATEWAY_DEFAULT_OUTPUT_TOKENS),
            next_replica: 0,
            sync_ns: config.replicas.sync_ns,
            next_sync: config.replicas.sync_ns.unwrap_or(u64::MAX),
        }
    }

    /// Runs the exchange if one is due: every replica reports at `now`, then each takes in the
    /// merge of the others' reports (as the gateway's exchange does, with no network delay).
    #[inline]
    fn sync_due(&mut self, now: u64) {
        if now < self.next_sync {
            return;
        }
        self.exchange(now);
    }

    #[cold]
    fn exchange(&mut self, now: u64) {
        let Some(period) = self.sync_ns else {
            return;
        };
        let at = Instant::from_nanos(now);
        let reports: Vec<ReplicaReport> = self
            .routers
            .iter_mut()
            .map(|r| r.shared_report(at))
            .collect();
        for (i, router) in self.routers.iter_mut().enumerate() {
            let others = reports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| r);
            router.apply_shared(&SharedView::merge(others), at);
        }
        self.next_sync = (now / period + 1).saturating_mul(period);
    }
}

/// A request's call on its replica's router.
pub(crate) struct ReplicaCall {
    replica: usize,
    call: Call,
}

impl Strategy for Stilts<'_> {
    type Call = ReplicaCall;
    type Attempt = Attempt;

    fn begin(&mut self, req: &Request, now: u64) -> ReplicaCall {
        self.sync_due(now);
        let replica = self.next_replica;
        self.next_replica = (replica + 1) % self.routers.len();
        let call = self.routers[replica].begin(
            RequestMeta {
                input_tokens: req.input_tokens,
                output_tokens: self.expected_output_tokens,
                stream: req.stream,
                deadline: Some(std::time::Duration::from_nanos(req.deadline - req.arrival)),
            },
            Instant::from_nanos(now),
        );
        ReplicaCall { replica, call }
    }

    #[inline]
    fn next(&mut self, call: &mut ReplicaCall, now: u64) -> Step<Attempt> {
        self.sync_due(now);
        match self.routers[call.replica].next_attempt(&mut call.call, Instant::from_nanos(now)) {
            Decision::Send(attempt) => Step::Send(SendAttempt {
                provider: self.config.world_index[attempt.provider.index()],
                timer: attempt.timer(Instant::from_nanos(now)),
                attempt,
            }),
            Decision::Wait { until } => Step::WakeAt(until.as_nanos()),
            Decision::Hedge { at } => Step::WakeAt(at.as_nanos()),
            Decision::Pending => Step::Pending,
            Decision::Done { .. } => Step::Done,
            Decision::GiveUp(g) => Step::GiveUp(g.reason.as_str()),
        }
    }

    #[inline]
    fn record(&mut self, call: &mut ReplicaCall, attempt: Attempt, outcome: Outcome, now: u64) {
        self.sync_due(now);
        self.routers[call.replica].record(
            &mut call.call,
            attempt,
            outcome,
            Instant::from_nanos(now),
        );
    }

    fn commit_stream(&mut self, call: &mut ReplicaCall) {
        call.call.require_continuation();
    }

    fn note_quota(
        &mut self,
        call: &ReplicaCall,
        attempt: Attempt,
        left: u64,
        frees_in: u64,
        at: u64,
    ) {
        self.routers[call.replica].note_quota(
            attempt.provider,
            stilts_core::Quota {
                requests: Some((left, std::time::Duration::from_nanos(frees_in))),
                tokens: None,
            },
            Instant::from_nanos(at),
        );
    }

    fn deadline_is_clients(&self, call: &ReplicaCall) -> bool {
        call.call.deadline_is_clients()
    }

    fn detach(&self, call: &mut ReplicaCall, attempt: &Attempt) -> Option<ReplicaCall> {
        attempt.is_probe().then(|| ReplicaCall {
            replica: call.replica,
            call: call.call.detach(1),
        })
    }

    fn finish(&mut self, now: u64, providers: usize) -> (Vec<u64>, u64) {
        let mut trips = vec![0; providers];
        let mut hedges = 0;
        for router in &mut self.routers {
            for status in router.status(Instant::from_nanos(now)) {
                trips[self.config.world_index[status.id.index()]] += status.breaker_trips;
                hedges += status.stats.hedges;
            }
        }
        (trips, hedges)
    }

    fn in_flight_left(&mut self, now: u64) -> u64 {
        self.routers
            .iter_mut()
            .flat_map(|r| r.status(Instant::from_nanos(now)))
            .map(|s| u64::from(s.in_flight))
            .sum()
    }
}

/// How a baseline call ends.
#[derive(Clone, Copy, Debug)]
enum End {
    Answered,
    Failed(&'static str),
}

/// `single`: the primary, one try.
pub(crate) struct Single {
    primary: usize,
    timeout: u64,
}

impl Single {
    pub(crate) fn new(b: &Baselines) -> Self {
        Single {
            primary: b.primary,
            timeout: b.timeout_ns,
        }
    }
}

/// A baseline's per-request state.
pub(crate) struct BaselineCall {
    deadline: u64,
    stream: bool,
    key: Key,
    attempts: u32,
    step: usize,
    tries_here: u32,
    in_flight: bool,
    wait_until: u64,
    end: Option<End>,
}

impl BaselineCall {
    fn new(req: &Request) -> Self {
        BaselineCall {
            deadline: req.deadline,
            stream: req.stream,
            key: req.key,
            attempts: 0,
            step: 0,
            tries_here: 0,
            in_flight: false,
            wait_until: 0,
            end: None,
        }
    }

    /// The common prologue: ended, in flight, waiting or past the deadline.
    fn settled(&mut self, now: u64) -> Option<Step<()>> {
        match self.end {
            Some(End::Answered) => return Some(Step::Done),
            Some(End::Failed(why)) => return Some(Step::GiveUp(why)),
            None => {}
        }
        if self.in_flight {
            return Some(Step::Pending);
        }
        if now >= self.deadline {
            self.end = Some(End::Failed("deadline"));
            return Some(Step::GiveUp("deadline"));
        }
        if now < self.wait_until {
            return Some(Step::WakeAt(self.wait_until.min(self.deadline)));
        }
        None
    }

    fn send(&mut self, provider: usize, timeout: u64, now: u64) -> Step<()> {
        self.in_flight = true;
        self.attempts += 1;
        Step::Send(SendAttempt {
            attempt: (),
            provider,
            timer: AttemptTimer::with_limits(
                &single_timeouts(timeout),
                self.stream,
                Instant::from_nanos(now),
                Instant::from_nanos(self.deadline),
            ),
        })
    }

    fn give_up(&mut self, why: &'static str) -> Step<()> {
        self.end = Some(End::Failed(why));
        Step::GiveUp(why)
    }
}

impl Strategy for Single {
    type Call = BaselineCall;
    type Attempt = ();

    fn begin(&mut self, req: &Request, _: u64) -> BaselineCall {
        BaselineCall::new(req)
    }

    fn next(&mut self, call: &mut BaselineCall, now: u64) -> Step<()> {
        if let Some(step) = call.settled(now) {
            return step;
        }
        if call.attempts >= 1 {
            return call.give_up("attempts_exhausted");
        }
        call.send(self.primary, self.timeout, now)
    }

    fn record(&mut self, call: &mut BaselineCall, _: (), outcome: Outcome, _: u64) {
        call.in_flight = false;
        if matches!(outcome, Outcome::Success { .. }) {
            call.end = Some(End::Answered);
        }
    }

    fn commit_stream(&mut self, _: &mut BaselineCall) {}

    fn finish(&mut self, _: u64, providers: usize) -> (Vec<u64>, u64) {
        (vec![0; providers], 0)
    }
}

/// `naive`: the try/except chain over every provider, primary first.
pub(crate) struct Naive {
    chain: Vec<usize>,
    timeout: u64,
    sdk_retries: u32,
    sdk_backoff: u64,
}

/// The OpenAI and Anthropic SDKs cap their retry sleep at 8 s.
const SDK_BACKOFF_MAX_NS: u64 = 8_000_000_000;

impl Naive {
    pub(crate) fn new(b: &Baselines, providers: usize) -> Self {
        let mut chain = vec![b.primary];
        chain.extend((0..providers).filter(|p| *p != b.primary));
        Naive {
            chain,
            timeout: b.timeout_ns,
            sdk_retries: b.sdk_retries,
            sdk_backoff: b.sdk_backoff_ns,
        }
    }
}

impl Strategy for Naive {
    type Call = BaselineCall;
    type Attempt = ();

    fn begin(&mut self, req: &Request, _: u64) -> BaselineCall {
        BaselineCall::new(req)
    }

    fn next(&mut self, call: &mut BaselineCall, now: u64) -> Step<()> {
        if let Some(step) = call.settled(now) {
            return step;
        }
        match self.chain.get(call.step) {
            Some(&p) => call.send(p, self.timeout, now),
            None => call.give_up("attempts_exhausted"),
        }
    }

    fn record(&mut self, call: &mut BaselineCall, _: (), outcome: Outcome, now: u64) {
        call.in_flight = false;
        match outcome {
            Outcome::Success { .. } => call.end = Some(End::Answered),
            Outcome::Failure { class, .. } => {
                // SDKs retry 429, 5xx, timeouts and connection errors; not other 4xx.
                let sdk_retries = matches!(
                    class,
                    ErrorClass::RateLimited | ErrorClass::Server | ErrorClass::Timeout
                );
                if sdk_retries && call.tries_here < self.sdk_retries {
                    call.tries_here += 1;
                    let ceiling =
                        (self.sdk_backoff << (call.tries_here - 1).min(20)).min(SDK_BACKOFF_MAX_NS);
                    let jitter = 1.0
                        - 0.25
                            * call
                                .key
                                .unit_n(Purpose::BaselineSleep as u64 + u64::from(call.attempts));
                    call.wait_until = now + (ceiling as f64 * jitter) as u64;
                } else {
                    call.step += 1;
                    call.tries_here = 0;
                }
            }
            Outcome::Cancelled => {}
        }
    }

    fn commit_stream(&mut self, _: &mut BaselineCall) {}

    fn finish(&mut self, _: u64, providers: usize) -> (Vec<u64>, u64) {
        (vec![0; providers], 0)
    }
}

/// `seed_router`: the hand-written weighted router with a home-made breaker, modelled on this loop
/// (Python, as such routers are written; `now()` is the virtual clock):
///
/// ```text
/// for attempt in range(3):
///     closed = [p for p in providers if open_until[p] <= now()]  # none: no_healthy_provider
///     p = random.choices(closed, weights=[q.weight for q in closed])[0]
///     try:
///         answer = p.complete(request, timeout=baselines.timeout)
///         failures[p] = 0
///         return answer
///     except Exception:                                # any exception counts, 429s and 400s too
///         failures[p] += 1
///         if failures[p] >= 3:
///             failures[p] = 0
///             open_until[p] = now() + 60
///         if attempt == 2:
///             raise                                    # no sleep after the last attempt
///         time.sleep(2 ** attempt + random.random())   # 1-2 s, then 2-3 s
/// ```
///
/// The pick and the sleep each draw from their own stream of the request's key.
pub(crate) struct SeedRouter {
    weights: Vec<u64>,
    timeout: u64,
    consecutive: Vec<u32>,
    open_until: Vec<u64>,
    trips: Vec<u64>,
}

const SEED_FAILURES_TO_OPEN: u32 = 3;
const SEED_OPEN_NS: u64 = 60_000_000_000;
const SEED_ATTEMPTS: u32 = 3;

impl SeedRouter {
    pub(crate) fn new(b: &Baselines, providers: &[ProviderModel]) -> Self {
        SeedRouter {
            weights: providers.iter().map(|p| u64::from(p.weight)).collect(),
            timeout: b.timeout_ns,
            consecutive: vec![0; providers.len()],
            open_until: vec![0; providers.len()],
            trips: vec![0; providers.len()],
        }
    }
}

/// Per-request state of `seed_router`: the baseline call plus the provider in flight.
pub(crate) struct SeedCall {
    base: BaselineCall,
    provider: usize,
}

impl Strategy for SeedRouter {
    type Call = SeedCall;
    type Attempt = ();

    fn begin(&mut self, req: &Request, _: u64) -> SeedCall {
        SeedCall {
            base: BaselineCall::new(req),
            provider: 0,
        }
    }

    fn next(&mut self, call: &mut SeedCall, now: u64) -> Step<()> {
        if let Some(step) = call.base.settled(now) {
            return step;
        }
        if call.base.attempts >= SEED_ATTEMPTS {
            return call.base.give_up("attempts_exhausted");
        }
        let total: u64 = (0..self.weights.len())
            .filter(|&p| self.open_until[p] <= now)
            .map(|p| self.weights[p])
            .sum();
        if total == 0 {
            return call.base.give_up("no_healthy_provider");
        }
        // Tags `BaselinePick + 0..3` (10, 11, 12); the sleeps draw from their own tags.
        let draw = call
            .base
            .key
            .bits(Purpose::BaselinePick as u64 + u64::from(call.base.attempts));
        let mut ticket = ((u128::from(draw) * u128::from(total)) >> 64) as u64;
        let mut chosen = 0;
        for p in (0..self.weights.len()).filter(|&p| self.open_until[p] <= now) {
            if ticket < self.weights[p] {
                chosen = p;
                break;
            }
            ticket -= self.weights[p];
        }
        call.provider = chosen;
        call.base.send(chosen, self.timeout, now)
    }

    fn record(&mut self, call: &mut SeedCall, _: (), outcome: Outcome, now: u64) {
        call.base.in_flight = false;
        let p = call.provider;
        match outcome {
            Outcome::Success { .. } => {
                self.consecutive[p] = 0;
                call.base.end = Some(End::Answered);
            }
            Outcome::Failure { .. } => {
                // Any exception counts, 429s and 400s included.
                self.consecutive[p] += 1;
                if self.consecutive[p] >= SEED_FAILURES_TO_OPEN {
                    self.consecutive[p] = 0;
                    self.open_until[p] = now + SEED_OPEN_NS;
                    self.trips[p] += 1;
                }
                if call.base.attempts >= SEED_ATTEMPTS {
                    // The loop raises after its last attempt: no sleep, the call gives up now.
                    return;
                }
                // `2 ** attempt + random()` with `attempt` the one just made, counted from 0 as
                // `for attempt in range(3)` counts: 1-2 s, then 2-3 s.
                let attempt = call.base.attempts - 1;
                // Its own stream: with `BaselineSleep + attempts`, the tag of the 1st sleep was
                // the tag of the 3rd pick, so a short sleep meant a pick low in the weights.
                let jitter = call.base.key.unit_n(Purpose::BaselineSleep.nth(attempt));
                let sleep = ((1u64 << attempt.min(20)) as f64 + jitter) * 1e9;
                call.base.wait_until = now + sleep as u64;
            }
            Outcome::Cancelled => {}
        }
    }

    fn commit_stream(&mut self, _: &mut SeedCall) {}

    fn finish(&mut self, _: u64, _: usize) -> (Vec<u64>, u64) {
        (self.trips.clone(), 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// A fresh `seed_router` over two providers of equal weight, so that no breaker state carries
    /// over from one request to the next.
    fn seed_router() -> SeedRouter {
        SeedRouter {
            weights: vec![1, 1],
            timeout: 30 * SECOND,
            consecutive: vec![0; 2],
            open_until: vec![0; 2],
            trips: vec![0; 2],
        }
    }

    fn request(index: u64) -> Request {
        Request {
            index,
            arrival: 0,
            deadline: 600 * SECOND,
            input_tokens: 100,
            output_tokens: 100,
            stream: false,
            key: Key::root(1).request(index),
        }
    }

    /// What `seed_router` does with a request whose every attempt fails after 1 ms: the providers
    /// it picks, the sleeps between the attempts, why it gives up, and how long after the last
    /// failure.
    fn failing_request(index: u64) -> (Vec<usize>, Vec<u64>, &'static str, u64) {
        let mut router = seed_router();
        let mut call = router.begin(&request(index), 0);
        let (mut picks, mut sleeps) = (Vec::new(), Vec::new());
        let (mut now, mut failed_at) = (0, 0);
        for _ in 0..16 {
            match router.next(&mut call, now) {
                Step::Send(send) => {
                    picks.push(send.provider);
                    now += 1_000_000;
                    failed_at = now;
                    let failure = Outcome::Failure {
                        class: ErrorClass::Server,
                        latency: Duration::from_millis(1),
                        retry_after: None,
                    };
                    router.record(&mut call, (), failure, now);
                }
                Step::WakeAt(at) => {
                    sleeps.push(at - now);
                    now = at;
                }
                Step::GiveUp(why) => return (picks, sleeps, why, now - failed_at),
                other => panic!("unexpected step {other:?}"),
            }
        }
        panic!("request {index} still going after 16 steps");
    }

    #[test]
    fn seed_router_sleeps_1_then_2_seconds_plus_jitter() {
        // The hand-written loop is `for attempt in range(3)`, sleeping `2 ** attempt + random()`
        // after a failure: 1-2 s, then 2-3 s. The old code counted the attempt just made: 2-3 s,
        // then 4-5 s.
        for index in 0..1_000 {
            let (_, sleeps, _, _) = failing_request(index);
            assert!(
                (SECOND..2 * SECOND).contains(&sleeps[0]),
                "request {index}: first sleep {} ns",
                sleeps[0]
            );
            assert!(
                (2 * SECOND..3 * SECOND).contains(&sleeps[1]),
                "request {index}: second sleep {} ns",
                sleeps[1]
            );
        }
    }

    #[test]
    fn seed_router_gives_up_at_its_third_failure_without_sleeping() {
        // The loop raises after the third failure; the old code slept once more first (4-5 s).
        for index in 0..1_000 {
            let (picks, sleeps, why, gave_up_after) = failing_request(index);
            assert_eq!(picks.len(), 3, "request {index}: {picks:?}");
            assert_eq!(sleeps.len(), 2, "request {index}: sleeps {sleeps:?}");
            assert_eq!((why, gave_up_after), ("attempts_exhausted", 0));
        }
    }

    #[test]
    fn seed_router_pick_and_backoff_draw_independent_numbers() {
        // With two providers of equal weight the 3rd pick is the first provider exactly when its
        // draw is below 1/2. When that draw was also the first sleep's jitter (the keys collided),
        // a short first sleep always meant the first provider on the 3rd attempt: agreement 100%.
        // Independent draws agree about half the time.
        let n = 4_000;
        let agree = (0..n)
            .filter(|&index| {
                let (picks, sleeps, _, _) = failing_request(index);
                let short_first_sleep = sleeps[0] % SECOND < SECOND / 2;
                short_first_sleep == (picks[2] == 0)
            })
            .count();
        let share = agree as f64 / n as f64;
        assert!((0.45..0.55).contains(&share), "agreement {share}");
    }
}
