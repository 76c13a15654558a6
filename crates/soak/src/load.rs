//! The load generator: an open loop at a fixed rate (a request is sent on time whether or not the
//! earlier ones were answered, as independent users send them), a deterministic mix of routes,
//! client dialects and streaming, and a strict judge of what came back.
//!
//! Every request carries `X-Stilts-Deadline-Ms`. Its outcome is one of:
//! - answered: a complete answer in its dialect (a plain 200 with its content, or a stream that
//!   reached its dialect's end event with no error event);
//! - a clear error: an error status with the dialect's JSON error body carrying a message, or a
//!   stream that ended with the dialect's error event;
//! - lost: anything else (a transport error, no end within the deadline plus
//!   [`LOST_MARGIN`], a body that cannot be read, a stream that stopped without an end event).
//!
//! Answers and clear errors that ended later than the deadline plus [`LATE_GRACE`] are counted
//! as late.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long past its deadline a request may take before the client gives up and counts it lost.
pub const LOST_MARGIN: Duration = Duration::from_secs(10);
/// How long past its deadline an end still counts as on time: the client's own scheduling on a
/// loaded machine, not the gateway's.
pub const LATE_GRACE: Duration = Duration::from_millis(500);
/// Requests the generator keeps in flight at most; beyond it a due request is not sent and is
/// counted as skipped (the generator, not the gateway, fell behind).
const MAX_IN_FLIGHT: usize = 8_192;
/// How long the load generator keeps an idle connection to the gateway.
const CLIENT_POOL_IDLE: Duration = Duration::from_secs(2);
/// Lost requests described in the report at most.
const LOST_SAMPLES: usize = 12;

/// A client dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dialect {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/messages`.
    Messages,
    /// `POST /v1/responses`.
    Responses,
}

impl Dialect {
    fn path(self) -> &'static str {
        match self {
            Dialect::Chat => "/v1/chat/completions",
            Dialect::Messages => "/v1/messages",
            Dialect::Responses => "/v1/responses",
        }
    }

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Chat => "chat completions",
            Dialect::Messages => "messages",
            Dialect::Responses => "responses",
        }
    }
}

/// One kind of request of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    /// The route (`model`).
    pub route: &'static str,
    /// The client dialect.
    pub dialect: Dialect,
    /// `stream: true`.
    pub stream: bool,
}

/// The mix, by request index: 40% chat completions on `chat`, 20% on `spread`, 20% Messages on
/// `claude`, 20% Responses on `chat`; a quarter of each streamed.
pub fn kind_of(index: u64) -> Kind {
    let (route, dialect) = match index % 10 {
        0..=3 => ("chat", Dialect::Chat),
        4 | 5 => ("spread", Dialect::Chat),
        6 | 7 => ("claude", Dialect::Messages),
        _ => ("chat", Dialect::Responses),
    };
    Kind {
        route,
        dialect,
        stream: (index / 10) % 4 == 3,
    }
}

fn body_of(kind: Kind, index: u64) -> serde_json::Value {
    let text = format!("soak request {index}: say hello");
    match kind.dialect {
        Dialect::Chat => serde_json::json!({
            "model": kind.route,
            "stream": kind.stream,
            "max_tokens": 64,
            "messages": [{ "role": "user", "content": text }],
        }),
        Dialect::Messages => serde_json::json!({
            "model": kind.route,
            "stream": kind.stream,
            "max_tokens": 64,
            "messages": [{ "role": "user", "content": text }],
        }),
        Dialect::Responses => serde_json::json!({
            "model": kind.route,
            "stream": kind.stream,
            "max_output_tokens": 64,
            "input": text,
        }),
    }
}

/// What one request got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete answer.
    Answered,
    /// A clear error; the code or type the body named.
    ClearError(String),
    /// Neither; why.
    Lost(String),
}

/// Judges a plain (not streamed) answer.
pub fn judge_plain(dialect: Dialect, status: u16, body: &[u8]) -> Outcome {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Outcome::Lost(format!("status {status} with a body that is not JSON"));
    };
    if status == 200 {
        let complete = match dialect {
            Dialect::Chat => json["choices"].as_array().is_some_and(|c| !c.is_empty()),
            Dialect::Messages => json["type"] == "message" && json["content"].is_array(),
            Dialect::Responses => json["status"] == "completed" && json["output"].is_array(),
        };
        return if complete {
            Outcome::Answered
        } else {
            Outcome::Lost(format!("a 200 that is not a complete answer: {json}"))
        };
    }
    match error_of(dialect, &json) {
        Some(code) if status >= 400 => Outcome::ClearError(format!("{status} {code}")),
        _ => Outcome::Lost(format!(
            "status {status} without the dialect's error body: {json}"
        )),
    }
}

/// The code (or type) of a dialect's error body, if `json` is one with a message.
fn error_of(dialect: Dialect, json: &serde_json::Value) -> Option<String> {
    if dialect == Dialect::Messages && json["type"] != "error" {
        return None;
    }
    let error = json.get("error")?;
    error.get("message")?.as_str().filter(|m| !m.is_empty())?;
    let code = error
        .get("code")
        .and_then(|c| c.as_str())
        .or_else(|| error.get("type").and_then(|t| t.as_str()))
        .unwrap_or("error");
    Some(code.to_owned())
}

/// Judges a streamed answer (status 200): its SSE events, in order.
pub fn judge_stream(dialect: Dialect, body: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(body) else {
        return Outcome::Lost("a stream that is not UTF-8".to_owned());
    };
    let mut event: Option<&str> = None;
    let mut ended = false;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim());
            continue;
        }
        let Some(data) = line.strip_prefix("data:") else {
            if line.is_empty() {
                event = None;
            }
            continue;
        };
        let data = data.trim();
        if ended {
            return Outcome::Lost(format!("data after the stream's end event: {data}"));
        }
        match dialect {
            Dialect::Chat => {
                if data == "[DONE]" {
                    ended = true;
                    continue;
                }
                let Ok(json) = serde_json::from_str::<serde_json::Value>(data) else {
                    return Outcome::Lost(format!("a chunk that is not JSON: {data}"));
                };
                if json.get("error").is_some() {
                    return match error_of(dialect, &json) {
                        Some(code) => Outcome::ClearError(format!("stream {code}")),
                        None => Outcome::Lost(format!("an error event without a message: {data}")),
                    };
                }
            }
            Dialect::Messages => match event {
                Some("message_stop") => ended = true,
                Some("error") => {
                    let json = serde_json::from_str(data).unwrap_or(serde_json::Value::Null);
                    return match error_of(dialect, &json) {
                        Some(code) => Outcome::ClearError(format!("stream {code}")),
                        None => Outcome::Lost(format!("an error event without a message: {data}")),
                    };
                }
                _ => {}
            },
            Dialect::Responses => match event {
                Some("response.completed") => ended = true,
                Some("response.failed") | Some("error") => {
                    return Outcome::ClearError(format!("stream {}", event.unwrap_or("error")));
                }
                _ => {}
            },
        }
    }
    if ended {
        Outcome::Answered
    } else {
        Outcome::Lost("a stream that ended without its end event".to_owned())
    }
}

/// Requests sent in one window of the timeline, by what became of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowTally {
    /// Sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Clear errors.
    pub errors: u64,
    /// Lost.
    pub lost: u64,
    /// Ended after the deadline plus [`LATE_GRACE`].
    pub late: u64,
}

/// Requests sent during one fault phase (over every cycle), by what became of them.
#[derive(Clone, Debug, Default)]
pub struct PhaseTally {
    /// Sent.
    pub sent: u64,
    /// Answered.
    pub answered: u64,
    /// Clear errors, by status and code.
    pub errors: BTreeMap<String, u64>,
    /// Lost.
    pub lost: u64,
}

/// The timeline's window for a run of `duration`: 5 s, or a 24th of a longer run (whole seconds),
/// so the report has at most about 24 rows.
pub fn window_for(duration: Duration) -> Duration {
    Duration::from_secs((duration.as_secs() / 24).max(5))
}

/// What the generator counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Per window of send time ([`window_for`] the run).
    pub timeline: Vec<WindowTally>,
    /// That window.
    pub window: Duration,
    /// Requests sent.
    pub sent: u64,
    /// Due requests not sent because [`MAX_IN_FLIGHT`] were in flight.
    pub skipped: u64,
    /// Complete answers.
    pub answered: u64,
    /// Clear errors, by status and code.
    pub errors: BTreeMap<String, u64>,
    /// Lost requests.
    pub lost: u64,
    /// Answers and clear errors that ended after their deadline plus [`LATE_GRACE`].
    pub late: u64,
    /// How far past its deadline the latest end came, ms (0 when none was past it).
    pub worst_overrun_ms: u64,
    /// A few lost requests, described.
    pub lost_samples: Vec<String>,
    /// Per kind: (sent, answered).
    pub by_kind: BTreeMap<Kind, (u64, u64)>,
    /// Per fault phase at the time the request was sent (an index into
    /// [`crate::faults::PHASES`]): what became of its requests.
    pub by_phase: BTreeMap<usize, PhaseTally>,
    /// Latency of answered requests, µs.
    pub latency_us: Option<hdrhistogram::Histogram<u64>>,
}

impl Tally {
    /// Clear errors in all.
    pub fn clear_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    #[allow(clippy::too_many_arguments)] // reason: one request's facts, recorded in one place
    fn record(
        &mut self,
        kind: Kind,
        index: u64,
        phase: usize,
        outcome: Outcome,
        sent_at: Duration,
        took: Duration,
        deadline: Duration,
    ) {
        let entry = self.by_kind.entry(kind).or_default();
        entry.0 += 1;
        let on_time = took <= deadline + LATE_GRACE;
        let w = (sent_at.as_secs() / self.window.as_secs().max(1)) as usize;
        if self.timeline.len() <= w {
            self.timeline.resize(w + 1, WindowTally::default());
        }
        let window = &mut self.timeline[w];
        window.sent += 1;
        let in_phase = self.by_phase.entry(phase).or_default();
        in_phase.sent += 1;
        match &outcome {
            Outcome::Answered => {
                window.answered += 1;
                in_phase.answered += 1;
            }
            Outcome::ClearError(code) => {
                window.errors += 1;
                *in_phase.errors.entry(code.clone()).or_default() += 1;
            }
            Outcome::Lost(_) => {
                window.lost += 1;
                in_phase.lost += 1;
            }
        }
        if !on_time && !matches!(outcome, Outcome::Lost(_)) {
            window.late += 1;
        }
        if !matches!(outcome, Outcome::Lost(_)) {
            let overrun = took.saturating_sub(deadline);
            self.worst_overrun_ms = self.worst_overrun_ms.max(overrun.as_millis() as u64);
            if !on_time {
                self.late += 1;
            }
        }
        match outcome {
            Outcome::Answered => {
                self.answered += 1;
                entry.1 += 1;
                if let Some(h) = &mut self.latency_us {
                    h.saturating_record(took.as_micros() as u64);
                }
            }
            Outcome::ClearError(code) => *self.errors.entry(code).or_default() += 1,
            Outcome::Lost(why) => {
                self.lost += 1;
                if self.lost_samples.len() < LOST_SAMPLES {
                    self.lost_samples.push(format!(
                        "request {index} ({} on {}, stream {}): {why}",
                        kind.dialect.name(),
                        kind.route,
                        kind.stream
                    ));
                }
            }
        }
    }
}

/// Sends `rate` requests a second to `gateway` for `duration`, then waits for the last answers.
/// Each request is counted under the fault phase `phases` shows when it is sent.
pub async fn run(
    gateway: SocketAddr,
    rate: u32,
    duration: Duration,
    deadline: Duration,
    phases: Arc<crate::faults::PhaseClock>,
) -> anyhow::Result<Tally> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        // Idle connections close soon, so the gateway's connections follow the requests in flight
        // and fall to a few in each cycle's quiet phase, where the soak reads its low-water marks.
        .pool_idle_timeout(CLIENT_POOL_IDLE)
        .timeout(deadline + LOST_MARGIN)
        .build()?;
    let tally = Arc::new(Mutex::new(Tally {
        window: window_for(duration),
        latency_us: hdrhistogram::Histogram::new_with_bounds(1, 120_000_000, 3).ok(),
        ..Tally::default()
    }));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let base = Arc::new(format!("http://{gateway}"));
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next: u64 = 0;
    let total = (f64::from(rate) * duration.as_secs_f64()) as u64;
    while next < total {
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        while next < due {
            let index = next;
            next += 1;
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                lock(&tally).skipped += 1;
                continue;
            };
            lock(&tally).sent += 1;
            let (client, base, tally) = (client.clone(), Arc::clone(&base), Arc::clone(&tally));
            let phase = phases.index();
            tasks.spawn(async move {
                let kind = kind_of(index);
                let began = Instant::now();
                let outcome = one(&client, &base, kind, index, deadline).await;
                let sent_at = began.duration_since(start);
                let took = began.elapsed();
                lock(&tally).record(kind, index, phase, outcome, sent_at, took, deadline);
                drop(permit);
            });
        }
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let tally = std::mem::take(&mut *lock(&tally));
    Ok(tally)
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn one(
    client: &reqwest::Client,
    base: &str,
    kind: Kind,
    index: u64,
    deadline: Duration,
) -> Outcome {
    let sent = client
        .post(format!("{base}{}", kind.dialect.path()))
        .header("x-stilts-deadline-ms", deadline.as_millis().to_string())
        .header("anthropic-version", "2023-06-01")
        .json(&body_of(kind, index))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return Outcome::Lost("no answer within the deadline plus the margin".to_owned());
        }
        Err(e) => return Outcome::Lost(format!("transport: {e}")),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(b) => b,
        Err(e) if e.is_timeout() => {
            return Outcome::Lost("body not ended within the deadline plus the margin".to_owned());
        }
        Err(e) => return Outcome::Lost(format!("body broken (status {status}): {e}")),
    };
    if kind.stream && status == 200 {
        judge_stream(kind.dialect, &body)
    } else {
        judge_plain(kind.dialect, status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_covers_every_kind_in_each_block_of_forty() {
        let kinds: std::collections::BTreeSet<Kind> = (0..40).map(kind_of).collect();
        assert_eq!(kinds.len(), 8);
        assert_eq!((0..40).filter(|i| kind_of(*i).stream).count(), 10);
    }

    #[test]
    fn chat_streams_are_judged_by_their_end_and_error_events() {
        let ok = b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(judge_stream(Dialect::Chat, ok), Outcome::Answered);
        let err = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"cut\",\"code\":\"stream_interrupted\"}}\n\n";
        assert_eq!(
            judge_stream(Dialect::Chat, err),
            Outcome::ClearError("stream stream_interrupted".to_owned())
        );
        let cut = b"data: {\"choices\":[]}\n\n";
        assert!(matches!(judge_stream(Dialect::Chat, cut), Outcome::Lost(_)));
        let after = b"data: [DONE]\n\ndata: {}\n\n";
        assert!(matches!(
            judge_stream(Dialect::Chat, after),
            Outcome::Lost(_)
        ));
    }

    #[test]
    fn messages_and_responses_streams_need_their_end_event() {
        let ok = b"event: message_start\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert_eq!(judge_stream(Dialect::Messages, ok), Outcome::Answered);
        let err = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n";
        assert_eq!(
            judge_stream(Dialect::Messages, err),
            Outcome::ClearError("stream overloaded_error".to_owned())
        );
        let open = b"event: message_start\ndata: {}\n\n";
        assert!(matches!(
            judge_stream(Dialect::Messages, open),
            Outcome::Lost(_)
        ));
        let done = b"event: response.completed\ndata: {}\n\n";
        assert_eq!(judge_stream(Dialect::Responses, done), Outcome::Answered);
        let failed = b"event: response.failed\ndata: {}\n\n";
        assert!(matches!(
            judge_stream(Dialect::Responses, failed),
            Outcome::ClearError(_)
        ));
    }

    #[test]
    fn plain_answers_need_content_and_errors_need_a_message() {
        let chat = br#"{"choices":[{"message":{"content":"hi"}}]}"#;
        assert_eq!(judge_plain(Dialect::Chat, 200, chat), Outcome::Answered);
        let err = br#"{"error":{"message":"down","code":"no_healthy_provider"}}"#;
        assert_eq!(
            judge_plain(Dialect::Chat, 503, err),
            Outcome::ClearError("503 no_healthy_provider".to_owned())
        );
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"x"}}"#;
        assert!(matches!(
            judge_plain(Dialect::Messages, 529, anthropic),
            Outcome::ClearError(_)
        ));
        assert!(matches!(
            judge_plain(Dialect::Messages, 503, err),
            Outcome::Lost(_)
        ));
        assert!(matches!(
            judge_plain(Dialect::Chat, 502, b"bad gateway"),
            Outcome::Lost(_)
        ));
        assert!(matches!(
            judge_plain(Dialect::Chat, 200, b"{}"),
            Outcome::Lost(_)
        ));
    }
}
