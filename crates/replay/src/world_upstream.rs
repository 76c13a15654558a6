//! The fake upstreams of a replay: one loopback [`MockUpstream`] per scenario provider, whose
//! [`Planner`] plays the world's fate for each attempt.
//!
//! The simulator's world says what happens to the `k`-th attempt of request `r` on provider `p`
//! sent at virtual time `t` ([`Scenario::fate`]). The replay client writes `r` into the request
//! (a marker in the first message, which every dialect carries through), the planner counts `k`
//! per request, reads `t` from the gateway's compressed clock and turns the fate into a [`Plan`]
//! with wall-clock timings (virtual durations divided by the speed). A provider's capacity
//! (concurrency and queue) is enforced here as the simulator's engine does.
//!
//! How a fate is played:
//! - refused connection: response headers, then a broken connection (the client sees a failed
//!   connection after the provider's connect time);
//! - error: the status and error code the deployment's plugin classifies as that class (checked
//!   at start, see `check_error_mapping`), with `retry-after-ms` and `Retry-After` in virtual time;
//! - hang: no answer;
//! - answer: a plain answer's headers and body when the whole answer is generated; a stream's
//!   headers at once, the first content chunk at the time to first token, the rest spread over the
//!   generation; a cut, stall or malformed event after the chunk where the fraction falls.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stilts_core::ErrorClass;
use stilts_gateway::Clock;
use stilts_gateway::mock::{Dialect, Faults, Plan, Planner};
use stilts_sim::{Fate, Mishap, Request, Scenario};

/// What the replay client writes before a request's index in its first message.
pub(crate) const MARKER: &str = "stilts-replay-request ";

/// Longest gap between stream chunks, in virtual time: far below any stall limit.
const CHUNK_GAP_NS: u64 = 250_000_000;
/// Most content chunks in one streamed answer (a 17-minute generation at the gap above).
const MAX_CHUNKS: u64 = 4096;
/// How long a provider takes to reject an attempt its queue has no room for (the simulator's).
const REJECT_NS: u64 = 5_000_000;

/// The HTTP status, error code (OpenAI's `error.code`, Anthropic's `error.type`) and, where the
/// code alone does not say it, the message that stand for each class in `dialect`.
pub(crate) fn upstream_error(
    dialect: Dialect,
    class: ErrorClass,
) -> (u16, &'static str, Option<&'static str>) {
    match dialect {
        Dialect::OpenAi => match class {
            ErrorClass::RateLimited => (429, "rate_limit_exceeded", None),
            ErrorClass::Server => (500, "server_error", None),
            ErrorClass::Timeout => (504, "timeout", None),
            ErrorClass::ContextLength => (400, "context_length_exceeded", None),
            ErrorClass::ContentFilter => (400, "content_filter", None),
            ErrorClass::Auth => (401, "invalid_api_key", None),
            ErrorClass::Quota => (429, "insufficient_quota", None),
            ErrorClass::BadRequest => (400, "invalid_request_error", None),
        },
        Dialect::Anthropic => match class {
            ErrorClass::RateLimited => (429, "rate_limit_error", None),
            ErrorClass::Server => (500, "api_error", None),
            ErrorClass::Timeout => (504, "timeout_error", None),
            ErrorClass::ContextLength => (
                400,
                "invalid_request_error",
                Some("prompt is too long: 210000 tokens > 200000 maximum"),
            ),
            // Anthropic has no content-filter error: played as a bad request, refused at start.
            ErrorClass::ContentFilter | ErrorClass::BadRequest => {
                (400, "invalid_request_error", None)
            }
            ErrorClass::Auth => (401, "authentication_error", None),
            ErrorClass::Quota => (
                400,
                "billing_error",
                Some("Your credit balance is too low to access the Anthropic API."),
            ),
        },
    }
}

/// The capacity state of one provider.
#[derive(Default)]
struct Slots {
    busy: u32,
    /// Attempts waiting for a slot, first come first served, with their service time.
    queue: VecDeque<(tokio::sync::oneshot::Sender<()>, Duration)>,
}

/// Plays one scenario provider.
pub(crate) struct WorldPlanner {
    pub scenario: Arc<Scenario>,
    pub provider: usize,
    pub requests: Arc<Vec<Request>>,
    pub clock: Clock,
    /// Attempts seen per request index.
    tries: Mutex<HashMap<u64, u32>>,
    slots: Arc<Mutex<Slots>>,
    /// The account's rate limit, checked before the capacity (as the simulator's engine does).
    rate_window: Option<Mutex<stilts_sim::RateWindow>>,
}

impl WorldPlanner {
    pub(crate) fn new(
        scenario: Arc<Scenario>,
        provider: usize,
        requests: Arc<Vec<Request>>,
        clock: Clock,
    ) -> Self {
        WorldPlanner {
            provider,
            requests,
            clock,
            tries: Mutex::new(HashMap::new()),
            slots: Arc::new(Mutex::new(Slots::default())),
            rate_window: scenario.providers[provider]
                .requests_per_minute
                .map(|rpm| Mutex::new(stilts_sim::RateWindow::new(rpm))),
            scenario,
        }
    }

    /// Attempts the provider serves at once now: its concurrency times the capacity events' factor
    /// (the simulator's engine rounds the same way).
    fn concurrency_now(&self, concurrency: u32) -> u32 {
        let factor = self
            .scenario
            .capacity_factor(self.provider, self.clock.now().as_nanos());
        (f64::from(concurrency) * factor).floor() as u32
    }

    /// At each time the provider's capacity changes, queued attempts start while slots are free
    /// (as the simulator's engine does on its capacity events).
    pub(crate) fn watch_capacity(self: &Arc<Self>) {
        let Some(cap) = self.scenario.providers[self.provider].capacity else {
            return;
        };
        for at in self.scenario.capacity_changes(self.provider) {
            let planner = Arc::clone(self);
            tokio::spawn(async move {
                let due = planner.clock.tokio(stilts_core::Instant::from_nanos(at));
                tokio::time::sleep_until(due).await;
                let limit = planner.limit();
                let mut slots = lock(&planner.slots);
                while slots.busy < limit() {
                    let Some((next, service)) = slots.queue.pop_front() else {
                        break;
                    };
                    // A waiter that left is served anyway when the provider cannot tell.
                    if next.send(()).is_ok() || cap.serve_abandoned {
                        slots.busy += 1;
                        release_after(
                            Arc::clone(&planner.slots),
                            cap.serve_abandoned,
                            service,
                            Arc::clone(&limit),
                        );
                    }
                }
            });
        }
    }

    /// The provider's concurrency at the moment it is called.
    fn limit(&self) -> Limit {
        let scenario = Arc::clone(&self.scenario);
        let (provider, clock) = (self.provider, self.clock);
        let concurrency = scenario.providers[provider]
            .capacity
            .map_or(u32::MAX, |c| c.concurrency);
        Arc::new(move || {
            let factor = scenario.capacity_factor(provider, clock.now().as_nanos());
            (f64::from(concurrency) * factor).floor() as u32
        })
    }

    fn wall(&self, virtual_ns: u64) -> Duration {
        Duration::from_nanos((virtual_ns as f64 / self.clock.speed()).round() as u64)
    }

    /// Takes a capacity slot for `service_ns` (virtual), waiting in the queue if need be; `Err`
    /// if the queue is full.
    async fn serve(&self, service_ns: u64) -> Result<(), ()> {
        let Some(cap) = self.scenario.providers[self.provider].capacity else {
            return Ok(());
        };
        let wall = self.wall(service_ns);
        let limit = self.concurrency_now(cap.concurrency);
        let waiter = {
            let mut slots = lock(&self.slots);
            if slots.busy < limit {
                slots.busy += 1;
                None
            } else if slots.queue.len() < cap.queue as usize {
                let (tx, rx) = tokio::sync::oneshot::channel();
                slots.queue.push_back((tx, wall));
                Some(rx)
            } else {
                return Err(());
            }
        };
        match waiter {
            // A slot handed over by a release, whose end is already timed from the hand-over (so
            // a client that leaves now cannot keep it); a closed channel cannot happen while the
            // planner lives.
            Some(rx) => rx.await.map_err(|_| ()),
            None => {
                // The slot is busy for the service time whether or not the client stays (a
                // provider cannot tell); then it passes to the first waiter still waiting.
                release_after(
                    Arc::clone(&self.slots),
                    cap.serve_abandoned,
                    wall,
                    self.limit(),
                );
                Ok(())
            }
        }
    }

    fn plan_fate(&self, dialect: Dialect, fate: Fate, request: &Request) -> Plan {
        let mut plan = Plan {
            usage: Some((
                u64::from(request.input_tokens),
                u64::from(request.output_tokens),
            )),
            ..Plan::default()
        };
        match fate {
            Fate::Refused { after } => {
                plan.latency = self.wall(after);
                plan.reset = true;
            }
            Fate::Error {
                class,
                after,
                retry_after,
            } => {
                let (status, code, message) = upstream_error(dialect, class);
                plan.latency = self.wall(after);
                plan.faults = Faults {
                    status: Some(status),
                    error_code: Some(code.to_owned()),
                    error_message: message.map(str::to_owned),
                    retry_after_s: retry_after.map(|ns| ns as f64 / 1e9),
                    ..Faults::default()
                };
            }
            Fate::Hang => plan.faults.hang = true,
            Fate::Answer {
                ttft,
                generation,
                mishap,
            } => {
                if !request.stream {
                    plan.latency = self.wall(ttft.saturating_add(generation));
                    plan.malformed_body = matches!(mishap, Mishap::Malformed(_));
                    return plan;
                }
                let chunks = (generation / CHUNK_GAP_NS + 2).min(MAX_CHUNKS);
                plan.first_token = self.wall(ttft);
                plan.chunk_interval = self.wall(generation / (chunks - 1));
                plan.content_chunks = Some(chunks as u32);
                // Chunk k (1-based) is sent at ttft + (k-1) * interval: the mishap at fraction f
                // falls after chunk floor(f * (chunks-1)) + 1, so the client always saw the first.
                let after =
                    |f: f64| ((f * (chunks - 1) as f64).floor() as u32 + 1).min(chunks as u32);
                match mishap {
                    Mishap::None => {}
                    Mishap::Cut(f) => plan.faults.cut_after = Some(after(f)),
                    Mishap::Stall(f) => plan.faults.stall_after = Some(after(f)),
                    Mishap::Malformed(f) => plan.faults.malformed_after = Some(after(f)),
                }
            }
        }
        plan
    }
}

/// The provider's concurrency now.
type Limit = Arc<dyn Fn() -> u32 + Send + Sync>;

/// Frees a slot after `wall`: hands it to the first waiter still there (unless the capacity has
/// since shrunk below what is busy), its own service time starting at the hand-over, as the
/// simulator's engine times it; else marks it idle. With `serve_abandoned`, a waiter that left is
/// served anyway (the slot busy for its service time), as a provider that cannot tell does.
fn release_after(slots: Arc<Mutex<Slots>>, serve_abandoned: bool, wall: Duration, limit: Limit) {
    tokio::spawn(async move {
        tokio::time::sleep(wall).await;
        let mut s = lock(&slots);
        if s.busy <= limit() {
            while let Some((next, service)) = s.queue.pop_front() {
                if next.send(()).is_ok() || serve_abandoned {
                    drop(s);
                    release_after(slots, serve_abandoned, service, limit);
                    return;
                }
            }
        }
        s.busy = s.busy.saturating_sub(1);
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The request index the replay client wrote into `request`, if any.
pub(crate) fn request_index(request: &serde_json::Value) -> Option<u64> {
    let messages = request.get("messages")?.as_array()?;
    messages.iter().find_map(|m| {
        let text = match m.get("content")? {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Array(parts) => parts
                .iter()
                .find_map(|p| p.get("text")?.as_str().filter(|t| t.contains(MARKER)))?,
            _ => return None,
        };
        let rest = &text[text.find(MARKER)? + MARKER.len()..];
        let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse().ok()
    })
}

impl Planner for WorldPlanner {
    fn plan(
        &self,
        path: &'static str,
        request: &serde_json::Value,
    ) -> Pin<Box<dyn Future<Output = Plan> + Send + '_>> {
        let index = request_index(request);
        let dialect = if path == Dialect::Anthropic.path() {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        };
        Box::pin(async move {
            let Some(req) = index.and_then(|i| self.requests.get(i as usize)) else {
                return Plan {
                    faults: Faults {
                        status: Some(400),
                        error_code: Some("invalid_request_error".to_owned()),
                        ..Faults::default()
                    },
                    ..Plan::default()
                };
            };
            let k = {
                let mut tries = lock(&self.tries);
                let k = tries.entry(req.index).or_insert(0);
                *k = k.saturating_add(1);
                *k
            };
            let sent = self.clock.now().as_nanos();
            let fate = self.scenario.fate(req, self.provider, k, sent);
            if let Some(window) = &self.rate_window {
                if let Err(wait) = lock(window).admit(sent) {
                    return self.plan_fate(
                        dialect,
                        Fate::Error {
                            class: ErrorClass::RateLimited,
                            after: REJECT_NS,
                            retry_after: Some(wait),
                        },
                        req,
                    );
                }
            }
            if let Some(service) = fate.service_ns() {
                if self.serve(service).await.is_err() {
                    let cap = self.scenario.providers[self.provider].capacity;
                    let (class, retry_after) = cap.map_or((ErrorClass::Server, None), |c| {
                        (c.overload, c.retry_after_ns)
                    });
                    return self.plan_fate(
                        dialect,
                        Fate::Error {
                            class,
                            after: REJECT_NS,
                            retry_after,
                        },
                        req,
                    );
                }
            }
            self.plan_fate(dialect, fate, req)
        })
    }
}
