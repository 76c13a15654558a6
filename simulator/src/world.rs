//! The simulated world: arrivals, and what each provider does with each attempt.
//!
//! Everything here is a pure function of the scenario, the seed and its arguments. [`Arrivals`]
//! yields the same requests for every run. [`Scenario::fate`] says what happens to the `k`-th attempt
//! of request `r` on provider `p` sent at time `t` (before the provider's capacity and the client's
//! timeouts are applied, which the engine does): every run that makes that attempt meets the same
//! fate. Time enters only through the timeline, whose events are piecewise constant; that is what
//! lets the oracle search every useful send time exactly ([`Scenario::oracle`]).

use crate::draw::{Key, Purpose};
use crate::scenario::{EventKind, OutageMode, Rate, Scenario};
use stilts_core::ErrorClass;

/// One request, as the world generated it.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Sequence number from 0.
    pub index: u64,
    /// Arrival time, ns.
    pub arrival: u64,
    /// When the client stops waiting, ns.
    pub deadline: u64,
    /// Input (prompt) tokens.
    pub input_tokens: u32,
    /// Output tokens the answer has when it completes.
    pub output_tokens: u32,
    /// Whether the client asks for a stream.
    pub stream: bool,
    pub(crate) key: Key,
}

/// What a stream (or body) suffers on an otherwise good answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mishap {
    /// The answer arrives whole.
    None,
    /// The connection closes at this fraction of the generation.
    Cut(f64),
    /// The stream stops sending at this fraction and never resumes.
    Stall(f64),
    /// Invalid data at this fraction (handled as a cut there; a whole bad body for non-streams).
    Malformed(f64),
}

/// What the provider does with one attempt, before capacity and client timeouts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fate {
    /// Connection refused after `after` ns. Uses no capacity.
    Refused {
        /// ns after the send.
        after: u64,
    },
    /// An error response after `after` ns.
    Error {
        /// The provider's error, as stilts classifies it.
        class: ErrorClass,
        /// ns after the attempt starts being served.
        after: u64,
        /// The Retry-After sent with it, ns.
        retry_after: Option<u64>,
    },
    /// No response at all. Uses no capacity.
    Hang,
    /// An answer: first token after `ttft` ns, the rest over `generation` ns.
    Answer {
        /// Time to the first token, ns.
        ttft: u64,
        /// Time from the first token to the last, ns.
        generation: u64,
        /// What goes wrong with it, if anything.
        mishap: Mishap,
    },
}

impl Fate {
    /// How long the attempt occupies a capacity slot, if it takes one.
    pub fn service_ns(&self) -> Option<u64> {
        match *self {
            Fate::Refused { .. } | Fate::Hang => None,
            Fate::Error { after, .. } => Some(after),
            Fate::Answer {
                ttft, generation, ..
            } => Some(ttft.saturating_add(generation)),
        }
    }
}

/// A successful attempt the oracle found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OracleAnswer {
    pub provider: usize,
    /// Time the answer completes, ns.
    pub finish: u64,
    /// Time the first token arrives, ns.
    pub first_token: u64,
}

/// Longest duration one fate may give (about 3 years): validated scenarios stay far below it, and
/// the clamp keeps the far tails of their log-normal draws from overflowing time arithmetic.
const SPAN_MAX_NS: f64 = 1e17;

/// Milliseconds (or any f64 duration in ns after scaling) to ns, clamped to [`SPAN_MAX_NS`].
fn span_ns(ns: f64) -> u64 {
    if ns.is_nan() {
        return 0;
    }
    ns.clamp(0.0, SPAN_MAX_NS) as u64
}

/// Most distinct timeline pieces the oracle examines per provider and request.
const ORACLE_PIECES_MAX: usize = 256;

impl Scenario {
    /// What happens to attempt `k` (1-based, per provider) of `req` on provider `p`, sent at `t`
    /// (ns): the same for every driver that makes that attempt then (the simulator's engine, or
    /// `stilts replay`'s fake upstreams), before capacity and the client's timeouts.
    pub fn fate(&self, req: &Request, p: usize, k: u32, t: u64) -> Fate {
        let key = req.key.attempt(p, k);
        let m = &self.providers[p];
        let error_after = || span_ns(m.error_latency.at(key.normal(Purpose::ErrorLatency)) * 1e6);
        if let Some(window) = m.context_window {
            if u64::from(req.input_tokens) + u64::from(req.output_tokens) > u64::from(window) {
                return Fate::Error {
                    class: ErrorClass::ContextLength,
                    after: error_after(),
                    retry_after: None,
                };
            }
        }
        let outage = |mode: OutageMode| match mode {
            OutageMode::Refused => Fate::Refused {
                after: m.connect_ns,
            },
            OutageMode::Unavailable => Fate::Error {
                class: ErrorClass::Server,
                after: error_after(),
                retry_after: None,
            },
        };
        let mut latency_factor = 1.0;
        let mut ttft_factor = 1.0;
        let mut ttft_floor = 0u64;
        let mut mishap = Mishap::None;
        for &i in &m.events {
            let e = &self.events[i];
            // Events are in file order (which sets precedence), not start order: skip, never stop.
            if t < e.start_ns || t >= e.end_ns {
                continue;
            }
            let u = || key.unit_n(Purpose::Event as u64 + i as u64);
            match e.kind {
                EventKind::Outage(mode) => return outage(mode),
                EventKind::Flapping {
                    period_ns,
                    down_ns,
                    mode,
                } => {
                    if (t - e.start_ns) % period_ns < down_ns {
                        return outage(mode);
                    }
                }
                EventKind::ErrorBurst {
                    class,
                    fraction,
                    retry_after_ns,
                } => {
                    if u() < fraction {
                        if class == ErrorClass::Timeout {
                            return Fate::Hang;
                        }
                        return Fate::Error {
                            class,
                            after: error_after(),
                            retry_after: retry_after_ns.or_else(|| {
                                (class == ErrorClass::RateLimited)
                                    .then_some(m.rate_limit_retry_after_ns)
                                    .flatten()
                            }),
                        };
                    }
                }
                EventKind::PartialOutage { fraction } => {
                    if u() < fraction {
                        return outage(OutageMode::Unavailable);
                    }
                }
                EventKind::Hang { fraction } => {
                    if u() < fraction {
                        return Fate::Hang;
                    }
                }
                EventKind::RateLimit {
                    fraction,
                    retry_after_ns,
                } => {
                    if u() < fraction {
                        return Fate::Error {
                            class: ErrorClass::RateLimited,
                            after: error_after() / 4,
                            retry_after: retry_after_ns,
                        };
                    }
                }
                EventKind::QuotaExhausted => {
                    return Fate::Error {
                        class: ErrorClass::Quota,
                        after: error_after() / 4,
                        retry_after: None,
                    };
                }
                EventKind::Brownout { factor } => latency_factor *= factor,
                EventKind::SlowFirstToken { factor, ttft_ns } => {
                    ttft_factor *= factor;
                    ttft_floor = ttft_floor.max(ttft_ns);
                }
                EventKind::StreamCut { fraction } => {
                    if req.stream && mishap == Mishap::None && u() < fraction {
                        mishap = Mishap::Cut(key.unit(Purpose::Mishap));
                    }
                }
                EventKind::StreamStall { fraction } => {
                    if req.stream && mishap == Mishap::None && u() < fraction {
                        mishap = Mishap::Stall(key.unit(Purpose::Mishap));
                    }
                }
                EventKind::Malformed { fraction } => {
                    if mishap == Mishap::None && u() < fraction {
                        mishap = Mishap::Malformed(key.unit(Purpose::Mishap));
                    }
                }
                EventKind::Capacity { .. } => {}
            }
        }
        let mut u = key.unit(Purpose::BaseError);
        for class in ErrorClass::ALL {
            let rate = m.errors[class.index()];
            if u < rate {
                if class == ErrorClass::Timeout {
                    return Fate::Hang;
                }
                return Fate::Error {
                    class,
                    after: error_after(),
                    retry_after: (class == ErrorClass::RateLimited)
                        .then_some(m.rate_limit_retry_after_ns)
                        .flatten(),
                };
            }
            u -= rate;
        }
        let ttft_ms = m.ttft.at(key.normal(Purpose::Ttft)) * latency_factor * ttft_factor;
        let ttft = span_ns(ttft_ms * 1e6).max(ttft_floor);
        let generation =
            span_ns(f64::from(req.output_tokens) / m.tokens_per_s * latency_factor * 1e9);
        Fate::Answer {
            ttft,
            generation,
            mishap,
        }
    }

    /// The share of provider `p`'s concurrency available at `t` (capacity events).
    pub fn capacity_factor(&self, p: usize, t: u64) -> f64 {
        let mut factor = 1.0;
        for &i in &self.providers[p].events {
            let e = &self.events[i];
            if let EventKind::Capacity { factor: f } = e.kind {
                if e.start_ns <= t && t < e.end_ns {
                    factor *= f;
                }
            }
        }
        factor
    }

    /// The first time after `t` at which provider `p`'s fates may change.
    pub(crate) fn next_boundary(&self, p: usize, t: u64) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut consider = |b: u64| {
            if b > t {
                next = Some(next.map_or(b, |n| n.min(b)));
            }
        };
        for &i in &self.providers[p].events {
            let e = &self.events[i];
            consider(e.start_ns);
            consider(e.end_ns);
            if let EventKind::Flapping {
                period_ns, down_ns, ..
            } = e.kind
            {
                if e.start_ns <= t && t < e.end_ns {
                    let phase = (t - e.start_ns) % period_ns;
                    let period_start = t - phase;
                    consider(if phase < down_ns {
                        period_start + down_ns
                    } else {
                        period_start + period_ns
                    });
                }
            }
        }
        next
    }

    /// Times at which provider `p`'s capacity changes (for a driver to start queued work).
    pub fn capacity_changes(&self, p: usize) -> Vec<u64> {
        self.providers[p]
            .events
            .iter()
            .map(|&i| &self.events[i])
            .filter(|e| matches!(e.kind, EventKind::Capacity { .. }))
            .flat_map(|e| [e.start_ns, e.end_ns])
            .collect()
    }

    /// Perfect foresight: the cheapest provider and send time at which `req` could have been
    /// answered before its deadline, trying up to `self.oracle_attempts` attempts per provider
    /// (with their own draws) and every piece of the timeline. Capacity and client timeouts are
    /// ignored (they only ever make an attempt fail or finish later), so no router can answer a
    /// request the oracle cannot, or pay less for it.
    ///
    /// `by_cost` lists world providers cheapest first for this request's size.
    pub(crate) fn oracle(&self, req: &Request, by_cost: &[usize]) -> Option<OracleAnswer> {
        for &p in by_cost {
            let mut t = req.arrival;
            for _ in 0..ORACLE_PIECES_MAX {
                for k in 1..=self.oracle_attempts {
                    if let Fate::Answer {
                        ttft,
                        generation,
                        mishap: Mishap::None,
                    } = self.fate(req, p, k, t)
                    {
                        let finish = t.saturating_add(ttft).saturating_add(generation);
                        if finish <= req.deadline {
                            return Some(OracleAnswer {
                                provider: p,
                                finish,
                                first_token: t.saturating_add(ttft),
                            });
                        }
                    }
                }
                match self.next_boundary(p, t) {
                    Some(b) if b < req.deadline => t = b,
                    _ => break,
                }
            }
        }
        None
    }

    /// World providers sorted cheapest first for a request of this size (ties: file order).
    pub(crate) fn providers_by_cost(&self, req: &Request, out: &mut Vec<usize>) {
        out.clear();
        out.extend(0..self.providers.len());
        out.sort_by(|&a, &b| {
            self.price(a, req)
                .total_cmp(&self.price(b, req))
                .then(a.cmp(&b))
        });
    }

    /// What provider `p` charges for `req`, USD.
    pub(crate) fn price(&self, p: usize, req: &Request) -> f64 {
        self.price_of_tokens(p, f64::from(req.input_tokens), f64::from(req.output_tokens))
    }

    /// What provider `p` bills for `input` and `output` tokens.
    pub(crate) fn price_of_tokens(&self, p: usize, input: f64, output: f64) -> f64 {
        let m = &self.providers[p];
        (input * m.input_usd_per_mtok + output * m.output_usd_per_mtok) / 1e6
    }
}

/// The arrival process: a non-homogeneous Poisson process by thinning, keyed by candidate number.
#[derive(Clone, Debug)]
pub struct Arrivals<'a> {
    scenario: &'a Scenario,
    root: Key,
    candidate: u64,
    t_ns: f64,
    accepted: u64,
    rate_max_per_ns: f64,
}

impl<'a> Arrivals<'a> {
    /// The requests of `scenario` with `seed`, in arrival order.
    pub fn new(scenario: &'a Scenario, seed: u64) -> Self {
        Arrivals {
            scenario,
            root: Key::root(seed),
            candidate: 0,
            t_ns: 0.0,
            accepted: 0,
            rate_max_per_ns: scenario.traffic.rate_max_rps / 1e9,
        }
    }

    /// The rate at `t_ns`, requests per second.
    pub(crate) fn rate_at(scenario: &Scenario, t_ns: u64) -> f64 {
        let traffic = &scenario.traffic;
        let base = match &traffic.rate {
            Rate::Constant(r) => *r,
            Rate::Steps(steps) => steps
                .iter()
                .take_while(|(at, _)| *at <= t_ns)
                .last()
                .map_or(0.0, |(_, r)| *r),
            Rate::Diurnal {
                trough_rps,
                peak_rps,
                peak_at_s,
                period_s,
            } => {
                let phase = (t_ns as f64 / 1e9 - peak_at_s) / period_s;
                let mid = (peak_rps + trough_rps) / 2.0;
                let amp = (peak_rps - trough_rps) / 2.0;
                mid + amp * (std::f64::consts::TAU * phase).cos()
            }
        };
        let spike: f64 = traffic
            .spikes
            .iter()
            .filter(|(s, e, _)| *s <= t_ns && t_ns < *e)
            .map(|(_, _, f)| *f)
            .product();
        base * spike
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        let s = self.scenario;
        let constant = matches!(s.traffic.rate, Rate::Constant(_)) && s.traffic.spikes.is_empty();
        loop {
            let key = self.root.request(self.candidate);
            self.candidate += 1;
            let gap = -key.open_unit(Purpose::ArrivalGap as u64).ln() / self.rate_max_per_ns;
            self.t_ns += gap;
            if self.t_ns.is_nan() || self.t_ns >= s.duration_ns as f64 {
                return None;
            }
            let t = self.t_ns as u64;
            if !constant
                && key.unit(Purpose::ArrivalKeep) * s.traffic.rate_max_rps
                    >= Arrivals::rate_at(s, t)
            {
                continue;
            }
            let index = self.accepted;
            self.accepted += 1;
            let rk = self.root.request(index ^ 0x8000_0000_0000_0000);
            let tokens = |d: crate::draw::LogNormal, purpose| {
                d.at(rk.normal(purpose)).round().clamp(1.0, 4.0e9) as u32
            };
            return Some(Request {
                index,
                arrival: t,
                deadline: t + s.traffic.deadline_ns,
                input_tokens: tokens(s.traffic.input_tokens, Purpose::InputTokens),
                // An answer stops at the request's max_tokens.
                output_tokens: tokens(s.traffic.output_tokens, Purpose::OutputTokens)
                    .min(s.traffic.max_tokens.unwrap_or(u32::MAX)),
                stream: rk.unit(Purpose::Stream) < s.traffic.stream_share,
                key: rk,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;
    use std::path::Path;

    fn burst(class: &str, retry_after: &str) -> Scenario {
        let text = format!(
            r#"
name = "burst"
duration_s = 10
[traffic]
rate_rps = 5
[[providers]]
name = "a"
rate_limit_retry_after_ms = 1000
[[events]]
kind = "error_burst"
provider = "a"
start_s = 0
class = "{class}"
{retry_after}
"#
        );
        Scenario::parse(&text, Path::new("burst.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn retry_after_of(s: &Scenario) -> Option<u64> {
        let req = Arrivals::new(s, 1).next().unwrap();
        match s.fate(&req, 0, 1, req.arrival) {
            Fate::Error { retry_after, .. } => retry_after,
            other => panic!("the burst (fraction 1) must fail the attempt, got {other:?}"),
        }
    }

    #[test]
    fn error_burst_retry_after_ms_is_carried_into_the_failures() {
        let s = burst("server", "retry_after_ms = 7000");
        assert_eq!(retry_after_of(&s), Some(7_000_000_000));
        let s = burst("rate_limited", "retry_after_ms = 7000");
        assert_eq!(retry_after_of(&s), Some(7_000_000_000));
        // Without it: the provider's Retry-After for 429s, none for other classes.
        assert_eq!(
            retry_after_of(&burst("rate_limited", "")),
            Some(1_000_000_000)
        );
        assert_eq!(retry_after_of(&burst("server", "")), None);
        // A hang has no response to carry it.
        let text = "name = \"b\"\nduration_s = 10\n[traffic]\nrate_rps = 5\n[[providers]]\nname = \"a\"\n[[events]]\nkind = \"error_burst\"\nprovider = \"a\"\nstart_s = 0\nclass = \"timeout\"\nretry_after_ms = 5\n";
        let e = Scenario::parse(text, Path::new("b.toml")).expect_err("timeout + retry_after");
        assert_eq!(e.path, "events[0].retry_after_ms");
        assert_eq!(e.position.map(|p| p.0), Some(12), "{e}");
    }
}

/// A provider account's rate limit as the provider enforces it: at most `limit` attempts admitted
/// over any trailing minute. Shared by the engine and `stilts replay`'s fake upstreams, so both
/// reject the same attempts.
#[derive(Clone, Debug)]
pub struct RateWindow {
    limit: usize,
    /// Admission times (ns) within the last minute, oldest first.
    admitted: std::collections::VecDeque<u64>,
}

/// The window of [`RateWindow`].
const RATE_WINDOW_NS: u64 = 60_000_000_000;

impl RateWindow {
    /// A window admitting `requests_per_minute`.
    pub fn new(requests_per_minute: u32) -> Self {
        RateWindow {
            limit: requests_per_minute.max(1) as usize,
            admitted: std::collections::VecDeque::new(),
        }
    }

    /// Admits an attempt at `now`, or refuses it with the wait until a slot frees (the
    /// Retry-After a provider sends).
    pub fn admit(&mut self, now: u64) -> Result<(), u64> {
        while self
            .admitted
            .front()
            .is_some_and(|&t| t.saturating_add(RATE_WINDOW_NS) <= now)
        {
            self.admitted.pop_front();
        }
        if self.admitted.len() >= self.limit {
            let oldest = self.admitted.front().copied().unwrap_or(now);
            return Err(oldest
                .saturating_add(RATE_WINDOW_NS)
                .saturating_sub(now)
                .max(1));
        }
        self.admitted.push_back(now);
        Ok(())
    }

    /// What the provider reports on an answer at `now`, as the vendors' rate-limit headers do:
    /// the requests left in the window, and the time until the next one frees (when the oldest
    /// admission leaves the window).
    pub fn report(&self, now: u64) -> (u64, u64) {
        let inside = self
            .admitted
            .iter()
            .filter(|&&t| t.saturating_add(RATE_WINDOW_NS) > now)
            .count();
        let frees_in = self
            .admitted
            .iter()
            .find(|&&t| t.saturating_add(RATE_WINDOW_NS) > now)
            .map_or(0, |&t| t.saturating_add(RATE_WINDOW_NS).saturating_sub(now));
        (self.limit.saturating_sub(inside) as u64, frees_in)
    }
}

#[cfg(test)]
mod rate_window_tests {
    use super::RateWindow;

    #[test]
    fn admits_the_limit_per_trailing_minute_and_says_when_a_slot_frees() {
        let mut w = RateWindow::new(2);
        assert_eq!(w.admit(0), Ok(()));
        assert_eq!(w.admit(10_000_000_000), Ok(()));
        assert_eq!(w.admit(20_000_000_000), Err(40_000_000_000));
        assert_eq!(w.admit(60_000_000_000), Ok(()));
        assert_eq!(w.admit(65_000_000_000), Err(5_000_000_000));
    }
}
