//! The discrete-event loop: one run of one strategy through the scenario's world, in virtual time.
//!
//! Single-threaded and deterministic. Pending work is a binary heap of `(time, sequence)`-ordered
//! events; the sequence number breaks ties in the order events were scheduled, so equal times never
//! depend on heap internals. Arrivals are not queued: the next one is generated lazily and merged
//! with the heap. Requests and attempts in flight live in slabs whose slots are reused (a
//! generation counter makes stale events harmless), so memory follows what is in flight, never the
//! number of requests simulated.
//!
//! For each attempt the engine takes the world's fate ([`Scenario::fate`]), applies the provider's
//! capacity (a free slot, else the queue, else a rejection; work keeps its slot until done even when
//! the client has gone, which is what sustains a metastable overload), and then walks the fate's
//! milestones through the attempt's timer, the core's [`AttemptTimer`] that the gateway runs too
//! (see [`resolve()`]): where the timer falls due before the next milestone, the attempt ends there as
//! a `Timeout`. No limit is computed here. Every attempt is recorded with the strategy exactly
//! once: its outcome, or `Cancelled` when its call ends first.
//!
//! An answer is billed in full. An attempt dropped while its provider was answering (cancelled
//! when its call ended, as a hedge's loser is, or given up by its timer) is billed as providers
//! do for a dropped request: its input once generation began (its first token was due), and the
//! output generated until the drop (`outcome.rs`). Errors, hangs, queued work and the
//! provider's own cuts, stalls and malformed answers are not billed.

use crate::metrics::Metrics;
use crate::scenario::Scenario;
use crate::strategy::{SendAttempt, Step, Strategy};
use crate::world::{Arrivals, Fate, Request};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use stilts_core::{AttemptTimer, ErrorClass};

mod outcome;
mod resolve;

use outcome::{attempt_outcome, let_go};
use resolve::{Resolution, resolve};

/// How long a provider takes to reject an attempt it has no room for.
const REJECT_NS: u64 = 5_000_000;
/// Most decisions one request may take at one instant before the engine calls it a bug.
const STEP_LIMIT: usize = 64;
/// Attempts of one request in flight at once (the core hedges at most once; baselines never).
const LIVE_MAX: usize = 4;
/// How often (in arrivals) progress is reported.
const PROGRESS_EVERY: u64 = 1 << 16;

#[derive(Clone, Copy, Debug)]
enum Ev {
    Wake { req: u32, generation: u32 },
    AttemptEnd { att: u32, generation: u32 },
    FirstToken { att: u32, generation: u32 },
    ServiceEnd { provider: u8 },
    CapacityChange { provider: u8 },
}

#[derive(Clone, Copy, Debug)]
struct Item {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Item {
    /// Reversed, so the max-heap pops the earliest (time, sequence).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A slab: reusable slots with generations.
struct Slab<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    live: u64,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
        }
    }

    fn insert(&mut self, value: T) -> (u32, u32) {
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                let slot = &mut self.slots[i as usize];
                slot.1 = Some(value);
                (i, slot.0)
            }
            None => {
                self.slots.push((0, Some(value)));
                ((self.slots.len() - 1) as u32, 0)
            }
        }
    }

    #[inline]
    fn get_mut(&mut self, id: u32, generation: u32) -> Option<&mut T> {
        match self.slots.get_mut(id as usize) {
            Some((g, Some(v))) if *g == generation => Some(v),
            _ => None,
        }
    }

    fn remove(&mut self, id: u32) -> Option<T> {
        let slot = self.slots.get_mut(id as usize)?;
        let value = slot.1.take()?;
        slot.0 = slot.0.wrapping_add(1);
        self.free.push(id);
        self.live -= 1;
        Some(value)
    }
}

struct ReqState<C> {
    call: C,
    req: Request,
    wake_gen: u32,
    live: [u32; LIVE_MAX],
    n_live: usize,
    first_token_at: Option<u64>,
    /// Attempts sent per world provider (the `k` of the world's draws; bounded by
    /// [`crate::scenario::MAX_ATTEMPTS`], so it never saturates).
    tries: [u32; crate::scenario::MAX_WORLD_PROVIDERS],
}

struct AttemptState<A, C> {
    req: u32,
    attempt: A,
    /// A probe whose call ended before it did: it runs to its end and is recorded on this copy of
    /// the call (the core's contract, `Attempt::is_probe`), its answer discarded.
    detached: Option<(C, Request)>,
    provider: usize,
    send: u64,
    /// The attempt's timer as made at its send (each resolution walks a copy).
    timer: AttemptTimer,
    stream: bool,
    fate: Fate,
    res: Resolution,
    /// When the provider began serving the attempt (`None` while it waits in the queue).
    served_at: Option<u64>,
}

#[derive(Default)]
struct ProviderRuntime {
    busy: u32,
    queue: VecDeque<(u32, u32, u64)>,
    has_capacity_events: bool,
    /// The account's rate limit, when it has one.
    rate_window: Option<crate::world::RateWindow>,
}

struct Engine<'a, S: Strategy> {
    scenario: &'a Scenario,
    strategy: S,
    reqs: Slab<ReqState<S::Call>>,
    atts: Slab<AttemptState<S::Attempt, S::Call>>,
    heap: BinaryHeap<Item>,
    seq: u64,
    wakes: u32,
    providers: Vec<ProviderRuntime>,
    metrics: Metrics,
    cost_order: CostOrder,
}

/// The oracle's provider order: fixed when input and output prices rank providers alike.
pub(crate) struct CostOrder {
    fixed: Option<Vec<usize>>,
    scratch: Vec<usize>,
}

impl CostOrder {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        let n = scenario.providers.len();
        let by = |f: fn(&crate::scenario::ProviderModel) -> f64| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                f(&scenario.providers[a])
                    .total_cmp(&f(&scenario.providers[b]))
                    .then(a.cmp(&b))
            });
            order
        };
        let input = by(|p| p.input_usd_per_mtok);
        let output = by(|p| p.output_usd_per_mtok);
        // Both orders agree and there are no price ties: the order holds for every request size.
        let strict = input.windows(2).all(|w| {
            let (a, b) = (&scenario.providers[w[0]], &scenario.providers[w[1]]);
            a.input_usd_per_mtok < b.input_usd_per_mtok
                && a.output_usd_per_mtok < b.output_usd_per_mtok
        });
        CostOrder {
            fixed: (input == output && strict).then_some(input),
            scratch: Vec::with_capacity(n),
        }
    }

    pub(crate) fn order(&mut self, scenario: &Scenario, req: &Request) -> &[usize] {
        match &self.fixed {
            Some(order) => order,
            None => {
                scenario.providers_by_cost(req, &mut self.scratch);
                &self.scratch
            }
        }
    }
}

/// Runs `strategy` through the scenario with `seed`; `progress` gets the virtual time now and then.
pub(crate) fn run<S: Strategy>(
    scenario: &Scenario,
    seed: u64,
    strategy: S,
    progress: &mut dyn FnMut(u64),
) -> Metrics {
    let n = scenario.providers.len();
    let mut engine = Engine {
        scenario,
        strategy,
        reqs: Slab::new(),
        atts: Slab::new(),
        heap: BinaryHeap::new(),
        seq: 0,
        wakes: 0,
        providers: (0..n).map(|_| ProviderRuntime::default()).collect(),
        metrics: Metrics::new(
            n,
            scenario.duration_ns,
            scenario.report.resolution_ns,
            scenario.report.chart_points,
        ),
        cost_order: CostOrder::new(scenario),
    };
    for p in 0..n {
        let changes = scenario.capacity_changes(p);
        engine.providers[p].has_capacity_events = !changes.is_empty();
        engine.providers[p].rate_window = scenario.providers[p]
            .requests_per_minute
            .map(crate::world::RateWindow::new);
        for at in changes {
            engine.push(at, Ev::CapacityChange { provider: p as u8 });
        }
    }
    let mut arrivals = Arrivals::new(scenario, seed);
    let mut next_arrival = arrivals.next();
    let mut now = 0;
    loop {
        let heap_first = engine.heap.peek().map(|i| i.at);
        match (next_arrival, heap_first) {
            (Some(req), Some(at)) if at < req.arrival => now = engine.pop(),
            (Some(req), _) => {
                now = req.arrival;
                engine.start(req);
                if req.index % PROGRESS_EVERY == PROGRESS_EVERY - 1 {
                    progress(now);
                }
                next_arrival = arrivals.next();
            }
            (None, Some(_)) => now = engine.pop(),
            (None, None) => break,
        }
    }
    progress(scenario.duration_ns);
    engine.metrics.invariant_violations += engine.strategy.in_flight_left(now);
    let (trips, hedges) = engine.strategy.finish(now, n);
    engine.metrics.breaker_trips = trips;
    engine.metrics.hedges = hedges;
    engine.metrics
}

/// The oracle's run: each request answered by the cheapest attempt that perfect foresight finds.
pub(crate) fn run_oracle(scenario: &Scenario, seed: u64, progress: &mut dyn FnMut(u64)) -> Metrics {
    let n = scenario.providers.len();
    let mut metrics = Metrics::new(
        n,
        scenario.duration_ns,
        scenario.report.resolution_ns,
        scenario.report.chart_points,
    );
    let mut order = CostOrder::new(scenario);
    for req in Arrivals::new(scenario, seed) {
        metrics.arrived(req.arrival);
        if req.index % PROGRESS_EVERY == PROGRESS_EVERY - 1 {
            progress(req.arrival);
        }
        match scenario.oracle(&req, order.order(scenario, &req)) {
            Some(answer) => {
                let price = scenario.price(answer.provider, &req);
                metrics.attempt_sent(answer.provider, req.arrival);
                metrics.attempt_succeeded(answer.provider, price);
                metrics.cost_floor_usd += price;
                metrics.answered(
                    req.arrival,
                    answer.finish - req.arrival,
                    req.stream.then(|| answer.first_token - req.arrival),
                );
            }
            None => metrics.failed("unanswerable"),
        }
    }
    progress(scenario.duration_ns);
    metrics
}

impl<S: Strategy> Engine<'_, S> {
    #[inline]
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Item {
            at,
            seq: self.seq,
            ev,
        });
    }

    /// Handles the earliest event; returns its time.
    fn pop(&mut self) -> u64 {
        let Some(item) = self.heap.pop() else {
            return 0;
        };
        let now = item.at;
        match item.ev {
            Ev::Wake { req, generation } => {
                let due = self
                    .reqs
                    .slots
                    .get(req as usize)
                    .and_then(|(_, s)| s.as_ref())
                    .is_some_and(|r| r.wake_gen == generation);
                if due {
                    self.step(req, now);
                }
            }
            Ev::AttemptEnd { att, generation } => self.complete(att, generation, now),
            Ev::FirstToken { att, generation } => self.first_token(att, generation, now),
            Ev::ServiceEnd { provider } => {
                let p = provider as usize;
                self.providers[p].busy = self.providers[p].busy.saturating_sub(1);
                self.start_queued(p, now);
            }
            Ev::CapacityChange { provider } => self.start_queued(provider as usize, now),
        }
        now
    }

    fn start(&mut self, req: Request) {
        let now = req.arrival;
        self.metrics.arrived(now);
        let call = self.strategy.begin(&req, now);
        let (id, _) = self.reqs.insert(ReqState {
            call,
            req,
            wake_gen: u32::MAX,
            live: [0; LIVE_MAX],
            n_live: 0,
            first_token_at: None,
            tries: [0; crate::scenario::MAX_WORLD_PROVIDERS],
        });
        self.metrics.in_flight_max = self.metrics.in_flight_max.max(self.reqs.live);
        self.step(id, now);
    }

    /// Asks the strategy what to do for request `id` until it waits.
    fn step(&mut self, id: u32, now: u64) {
        for _ in 0..STEP_LIMIT {
            let Some(Some(rs)) = self.reqs.slots.get_mut(id as usize).map(|s| s.1.as_mut()) else {
                return;
            };
            match self.strategy.next(&mut rs.call, now) {
                Step::Send(send) => self.launch(id, send, now),
                Step::WakeAt(at) => {
                    // Tokens are global, so a stale wake never matches a reused slot.
                    self.wakes = self.wakes.wrapping_add(1);
                    rs.wake_gen = self.wakes;
                    let generation = self.wakes;
                    self.push(
                        at.max(now),
                        Ev::Wake {
                            req: id,
                            generation,
                        },
                    );
                    return;
                }
                Step::Pending => {
                    if rs.n_live == 0 {
                        self.metrics.invariant_violations += 1;
                        self.finish(id, false, "driver_stalled", now);
                    }
                    return;
                }
                Step::Done => {
                    self.finish(id, true, "", now);
                    return;
                }
                Step::GiveUp(reason) => {
                    self.finish(id, false, reason, now);
                    return;
                }
            }
        }
        self.metrics.invariant_violations += 1;
        self.finish(id, false, "driver_stalled", now);
    }

    fn effective_concurrency(&self, p: usize, concurrency: u32, now: u64) -> u32 {
        if self.providers[p].has_capacity_events {
            (f64::from(concurrency) * self.scenario.capacity_factor(p, now)).floor() as u32
        } else {
            concurrency
        }
    }

    fn launch(&mut self, id: u32, send: SendAttempt<S::Attempt>, now: u64) {
        let Some(Some(rs)) = self.reqs.slots.get_mut(id as usize).map(|s| s.1.as_mut()) else {
            return;
        };
        let p = send.provider;
        rs.tries[p] = rs.tries[p].saturating_add(1);
        let k = rs.tries[p];
        let req = rs.req;
        let mut fate = self.scenario.fate(&req, p, k, now);
        if let Some(window) = &mut self.providers[p].rate_window {
            // The account's rate limit is checked at the door, before any queue.
            if let Err(wait) = window.admit(now) {
                fate = Fate::Error {
                    class: ErrorClass::RateLimited,
                    after: REJECT_NS,
                    retry_after: Some(wait),
                };
            }
        }
        self.metrics.attempt_sent(p, now);
        let resolve_at = |fate: Fate, start: u64| resolve(fate, start, send.timer, req.stream);
        let mut queued_service = None;
        let mut served_at = Some(now);
        let res = match (self.scenario.providers[p].capacity, fate.service_ns()) {
            (Some(cap), Some(service)) => {
                let limit = self.effective_concurrency(p, cap.concurrency, now);
                let rt = &mut self.providers[p];
                if rt.busy < limit {
                    rt.busy += 1;
                    self.push(
                        now.saturating_add(service),
                        Ev::ServiceEnd { provider: p as u8 },
                    );
                    resolve_at(fate, now)
                } else if rt.queue.len() < cap.queue as usize {
                    queued_service = Some(service);
                    served_at = None;
                    resolve_at(Fate::Hang, now)
                } else {
                    // Rejected at the door: never served, so never billed.
                    served_at = None;
                    resolve_at(
                        Fate::Error {
                            class: cap.overload,
                            after: REJECT_NS,
                            retry_after: cap.retry_after_ns,
                        },
                        now,
                    )
                }
            }
            _ => resolve_at(fate, now),
        };
        let (att, generation) = self.atts.insert(AttemptState {
            req: id,
            attempt: send.attempt,
            detached: None,
            provider: p,
            send: now,
            timer: send.timer,
            stream: req.stream,
            fate,
            res,
            served_at,
        });
        if let Some(service) = queued_service {
            self.providers[p]
                .queue
                .push_back((att, generation, service));
        }
        if let Some(Some(rs)) = self.reqs.slots.get_mut(id as usize).map(|s| s.1.as_mut()) {
            if rs.n_live < LIVE_MAX {
                rs.live[rs.n_live] = att;
                rs.n_live += 1;
            } else {
                self.metrics.invariant_violations += 1;
            }
        }
        self.push(res.at, Ev::AttemptEnd { att, generation });
        self.push_first_token(att, generation, &res);
    }

    /// Schedules the first token of a stream attempt resolved as `res`, if it has one.
    fn push_first_token(&mut self, att: u32, generation: u32, res: &Resolution) {
        if let Some(at) = res.first_token {
            self.push(at, Ev::FirstToken { att, generation });
        }
    }

    /// Starts queued work on provider `p` while it has free slots.
    fn start_queued(&mut self, p: usize, now: u64) {
        let Some(cap) = self.scenario.providers[p].capacity else {
            return;
        };
        let limit = self.effective_concurrency(p, cap.concurrency, now);
        while self.providers[p].busy < limit {
            let Some((att, generation, service)) = self.providers[p].queue.pop_front() else {
                break;
            };
            match self.atts.get_mut(att, generation) {
                Some(a) => {
                    // The queued attempt's resolution was a placeholder (a hang: a timeout when
                    // its timer falls due); now that it is served, its real resolution (a fresh
                    // walk of its timer, as made at the send) replaces it, whether earlier or
                    // later. `complete` ignores the stale heap entry.
                    let mut res = resolve(a.fate, now, a.timer, a.stream);
                    res.at = res.at.max(now);
                    let moved = res.at != a.res.at;
                    a.res = res;
                    a.served_at = Some(now);
                    self.providers[p].busy += 1;
                    self.push(
                        now.saturating_add(service),
                        Ev::ServiceEnd { provider: p as u8 },
                    );
                    if moved {
                        self.push(res.at, Ev::AttemptEnd { att, generation });
                        self.push_first_token(att, generation, &res);
                    }
                }
                None if cap.serve_abandoned => {
                    self.providers[p].busy += 1;
                    self.push(
                        now.saturating_add(service),
                        Ev::ServiceEnd { provider: p as u8 },
                    );
                }
                None => {}
            }
        }
    }

    /// An attempt's outcome is due.
    fn complete(&mut self, att: u32, generation: u32, now: u64) {
        match self.atts.get_mut(att, generation) {
            Some(a) if a.res.at == now => {}
            _ => return, // cancelled, or rescheduled (a stale entry)
        }
        let Some(mut a) = self.atts.remove(att) else {
            return;
        };
        if let Some((mut call, req)) = a.detached.take() {
            let (outcome, _) = attempt_outcome(
                &mut self.strategy,
                &mut self.metrics,
                self.scenario,
                &self.providers,
                &a,
                &call,
                &req,
                now,
            );
            self.strategy.record(&mut call, a.attempt, outcome, now);
            return;
        }
        let Some(Some(rs)) = self
            .reqs
            .slots
            .get_mut(a.req as usize)
            .map(|s| s.1.as_mut())
        else {
            self.metrics.invariant_violations += 1;
            return;
        };
        if let Some(i) = rs.live[..rs.n_live].iter().position(|x| *x == att) {
            rs.live.copy_within(i + 1..rs.n_live, i);
            rs.n_live -= 1;
        }
        let (outcome, committed) = attempt_outcome(
            &mut self.strategy,
            &mut self.metrics,
            self.scenario,
            &self.providers,
            &a,
            &rs.call,
            &rs.req,
            now,
        );
        if let Some(t) = a.res.first_token {
            rs.first_token_at = Some(rs.first_token_at.map_or(t, |f| f.min(t)));
        }
        if committed {
            // Bytes of a stream reached the client: only exact continuation may follow.
            self.strategy.commit_stream(&mut rs.call);
        }
        self.strategy.record(&mut rs.call, a.attempt, outcome, now);
        self.step(a.req, now);
    }

    /// A stream attempt's first token is due: as the gateway does, the call is committed to it.
    /// Every other attempt of its call is cancelled (probes run on, detached), and the strategy
    /// is not asked again until this attempt ends (a hedge planned for later is dropped: the
    /// client's stream has begun).
    fn first_token(&mut self, att: u32, generation: u32, now: u64) {
        let req = match self.atts.get_mut(att, generation) {
            Some(a) if a.res.first_token == Some(now) && a.detached.is_none() => a.req,
            _ => return, // cancelled, detached, or rescheduled (a stale entry)
        };
        let Some(Some(rs)) = self.reqs.slots.get_mut(req as usize).map(|s| s.1.as_mut()) else {
            self.metrics.invariant_violations += 1;
            return;
        };
        self.wakes = self.wakes.wrapping_add(1);
        rs.wake_gen = self.wakes;
        // A copy of the live list (a small array): no allocation per first token.
        let (live, n_live) = (rs.live, rs.n_live);
        rs.live[0] = att;
        rs.n_live = 1;
        for &other in live[..n_live].iter().filter(|&&x| x != att) {
            let_go(
                &mut self.atts,
                &mut self.strategy,
                &mut self.metrics,
                self.scenario,
                (&mut rs.call, rs.req),
                other,
                now,
            );
        }
    }

    /// Ends request `id`: cancels what is in flight and records the result.
    fn finish(&mut self, id: u32, success: bool, reason: &'static str, now: u64) {
        let Some(mut rs) = self.reqs.remove(id) else {
            return;
        };
        for &att in &rs.live[..rs.n_live] {
            let_go(
                &mut self.atts,
                &mut self.strategy,
                &mut self.metrics,
                self.scenario,
                (&mut rs.call, rs.req),
                att,
                now,
            );
        }
        let req = rs.req;
        if success && now <= req.deadline {
            let ttft = if req.stream {
                rs.first_token_at.map(|t| t - req.arrival)
            } else {
                None
            };
            self.metrics.answered(req.arrival, now - req.arrival, ttft);
            let order = self.cost_order.order(self.scenario, &req);
            match self.scenario.oracle(&req, order) {
                Some(best) => {
                    self.metrics.cost_floor_usd += self.scenario.price(best.provider, &req)
                }
                None => self.metrics.invariant_violations += 1,
            }
        } else if success {
            self.metrics.failed("answered_late");
        } else if now >= req.deadline && reason != "driver_stalled" {
            self.metrics.failed("deadline");
        } else {
            self.metrics.failed(reason);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;

    #[test]
    fn heap_pops_by_time_then_sequence() {
        let mut h = BinaryHeap::new();
        for (at, seq) in [(5, 1), (3, 2), (5, 0), (3, 3)] {
            h.push(Item {
                at,
                seq,
                ev: Ev::ServiceEnd { provider: 0 },
            });
        }
        let order: Vec<_> = std::iter::from_fn(|| h.pop().map(|i| (i.at, i.seq))).collect();
        assert_eq!(order, [(3, 2), (3, 3), (5, 0), (5, 1)]);
    }
}
