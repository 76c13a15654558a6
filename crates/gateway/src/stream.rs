//! Streams: free failover until the first token, then exact continuation or an honest error.
//!
//! Before the first informative chunk (text, a tool call or a finish reason) reaches the client,
//! a stream attempt is like any other: a time-to-first-token limit, a stall limit and every
//! failure lead to the next attempt, and nothing was sent. [`open`] performs that phase.
//!
//! After that, [`Live`] forwards chunks as they arrive, under the same attempt timer (the core's
//! [`AttemptTimer`]: the stall limit and the attempt deadline). If the stream then breaks (cut
//! connection, stall, an upstream error event, an event that is not valid data), the router is
//! told the attempt failed and that only providers able to continue exactly may be used
//! (`require_continuation`); if one is available (a deployment opted in and its plugin declares
//! prefill continuation), the request is sent again with the text so far as a final assistant
//! message and the new chunks continue the same answer. Otherwise the stream ends with an
//! OpenAI-style error event (`data: {"error":…}`) and no `[DONE]`, so no client mistakes a
//! truncated answer for a complete one.
//!
//! A client that goes away drops the stream; dropping [`Live`] drops the upstream response (the
//! connection closes) and the call guard records the attempt as cancelled.

use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use stilts_core::{Attempt, AttemptTimer, Cause, ErrorClass, Outcome};
use stilts_plugin::types::StreamEnd;

use crate::driver::{Driver, LoopEnd};
use crate::engine::Clock;
use crate::error::TriedAttempt;
use crate::upstream::{Deployment, Failure, ReadOptions, StreamReader, until_expiry, usage_of};

/// The SSE bytes of a live stream.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// A stream past its first token: the reader (the token in its queue) and the attempt's timer.
pub(crate) type Opened = (StreamReader, AttemptTimer);

/// Sends a stream attempt under `timer` (made when the attempt was sent) and reads it until its
/// first informative chunk (kept in the reader's queue) or its end.
pub(crate) async fn open(
    deployment: &Deployment,
    body: &[u8],
    mut timer: AttemptTimer,
    clock: Clock,
    options: ReadOptions,
    local: Arc<AtomicU64>,
) -> Result<Opened, Failure> {
    let response = deployment.send(body, &mut timer, clock, &local).await?;
    let mut reader = StreamReader::new(response, deployment.plugin.clone(), options, local)?;
    while !reader.informative && reader.end.is_none() {
        until_expiry(&mut timer, clock, reader.pump())
            .await
            .map_err(|expiry| Failure::expired(&expiry))?;
        if reader.informative {
            timer.on_first_token(clock.now());
        } else {
            timer.on_data(clock.now());
        }
    }
    match &reader.end {
        None | Some(StreamEnd::Clean) => Ok((reader, timer)),
        Some(StreamEnd::Cut { reason }) => Err(deployment.failure(Failure::new(
            ErrorClass::Server,
            format!("the stream broke before the first token: {reason}"),
        ))),
        Some(StreamEnd::Error { error }) => {
            Err(deployment.failure(Failure::from_info(error.clone(), None)))
        }
    }
}

/// Reads a stream past its first token (after `first_token`) that nobody forwards, a probe
/// detached from its call, to its end under its attempt's timer, and returns its outcome: a
/// success with the answer's whole time and usage, or the failure that ended it.
pub(crate) async fn read_to_end(opened: Opened, first_token: Duration, clock: Clock) -> Outcome {
    let (mut reader, mut timer) = opened;
    loop {
        reader.out.clear();
        match reader.end.take() {
            Some(StreamEnd::Clean) => {}
            Some(_) if reader.finished => {}
            Some(_) => {
                return Outcome::Failure {
                    class: ErrorClass::Server,
                    latency: ended(&mut timer, clock),
                    retry_after: None,
                };
            }
            None => match until_expiry(&mut timer, clock, reader.pump()).await {
                Ok(()) => {
                    timer.on_data(clock.now());
                    continue;
                }
                // Finished, then silent without [DONE]: a complete answer.
                Err(_) if reader.finished => {}
                Err(expiry) => {
                    let failure = Failure::expired(&expiry);
                    return Outcome::Failure {
                        class: failure.class,
                        latency: ended(&mut timer, clock),
                        retry_after: None,
                    };
                }
            },
        }
        return Outcome::Success {
            latency: ended(&mut timer, clock),
            first_token: Some(first_token),
            usage: usage_of(reader.usage.as_ref()),
        };
    }
}

/// Ends `timer` now and returns the time from the attempt's send, on the core's clock.
fn ended(timer: &mut AttemptTimer, clock: Clock) -> Duration {
    let now = clock.now();
    timer.on_end(now);
    now.saturating_since(timer.sent())
}

/// A stream past its first token.
pub(crate) struct Live {
    driver: Driver,
    body: Bytes,
    attempt: Attempt,
    deployment: Arc<Deployment>,
    reader: StreamReader,
    /// The attempt's timer, from its send: the stall limit and the deadline, and its latency.
    timer: AttemptTimer,
    first_token: Duration,
    /// Text sent to the client by earlier attempts of a continued stream.
    text: String,
    finished: bool,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

impl Live {
    pub fn new(
        driver: Driver,
        body: Bytes,
        attempt: Attempt,
        deployment: Arc<Deployment>,
        (reader, timer): Opened,
        first_token: Duration,
    ) -> Self {
        Live {
            driver,
            body,
            attempt,
            deployment,
            reader,
            timer,
            first_token,
            text: String::new(),
            finished: false,
        }
    }

    pub fn into_stream(self) -> ChunkStream {
        Box::pin(futures_util::stream::unfold(self, |mut live| async move {
            live.next().await.map(|b| (b, live))
        }))
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(bytes) = self.reader.out.pop_front() {
                return Some(bytes);
            }
            if self.finished {
                return None;
            }
            match self.reader.end.take() {
                Some(StreamEnd::Clean) => {
                    self.succeed();
                    return Some(Bytes::from_static(DONE));
                }
                // The client already has the whole answer: whatever broke after the finish
                // reason (a cut, a bad event, an error event) takes nothing from it.
                Some(_) if self.reader.finished => {
                    self.succeed();
                    return Some(Bytes::from_static(DONE));
                }
                Some(StreamEnd::Cut { reason }) => {
                    let f = self.deployment.failure(Failure::new(
                        ErrorClass::Server,
                        format!("the stream broke: {reason}"),
                    ));
                    if let Some(bytes) = self.fail(f).await {
                        return Some(bytes);
                    }
                    continue;
                }
                Some(StreamEnd::Error { error }) => {
                    let f = self.deployment.failure(Failure::from_info(error, None));
                    if let Some(bytes) = self.fail(f).await {
                        return Some(bytes);
                    }
                    continue;
                }
                None => {}
            }
            let clock = self.driver.guard.clock();
            let t0 = std::time::Instant::now();
            let read = until_expiry(&mut self.timer, clock, self.reader.pump()).await;
            self.driver.waited += t0.elapsed();
            if let Err(expiry) = read {
                if self.reader.finished {
                    // Finished, then silent without [DONE]: a complete answer.
                    self.succeed();
                    return Some(Bytes::from_static(DONE));
                }
                let mut failure = self.deployment.failure(Failure::expired(&expiry));
                // Data was flowing (no stall) when the client's own deadline ended it: the
                // provider did nothing wrong.
                failure.client_cut = expiry.cause == Cause::CallDeadline
                    && self.driver.guard.call.deadline_is_clients();
                if let Some(bytes) = self.fail(failure).await {
                    return Some(bytes);
                }
            } else {
                self.timer.on_data(clock.now());
            }
        }
    }

    /// Time from the current attempt's send to now, on the core's clock.
    fn latency(&mut self) -> Duration {
        ended(&mut self.timer, self.driver.guard.clock())
    }

    fn succeed(&mut self) {
        let usage = usage_of(self.reader.usage.as_ref());
        let latency = self.latency();
        self.driver.guard.record(
            self.attempt,
            Outcome::Success {
                latency,
                first_token: Some(self.first_token),
                usage,
            },
            &self.deployment,
        );
        self.deployment.metrics.served.inc();
        self.driver.finish(200, Some(&self.deployment.name));
        self.finished = true;
    }

    /// Handles a failure after bytes were sent: continue exactly elsewhere (returns `None`, the
    /// new reader is in place) or end with an error event (returned).
    async fn fail(&mut self, failure: Failure) -> Option<Bytes> {
        let route = self.driver.guard.route.name.clone();
        if failure.client_cut {
            tracing::info!(
                route = %route,
                provider = %self.deployment.name,
                "the client's own deadline ended its stream mid-answer"
            );
        } else {
            tracing::warn!(
                route = %route,
                provider = %self.deployment.name,
                class = %failure.class,
                error = %failure.message,
                "stream broke after bytes reached the client"
            );
        }
        self.driver.tried.push(TriedAttempt {
            provider: self.deployment.name.clone(),
            class: failure.class.as_str(),
            status: failure.status,
            message: failure.message.clone(),
        });
        let outcome = if failure.client_cut {
            Outcome::Cancelled
        } else {
            Outcome::Failure {
                class: failure.class,
                latency: self.latency(),
                retry_after: failure.retry_after,
            }
        };
        // Bytes reached the client: the call is committed before this failure is recorded (the
        // router then takes it for a broken stream, not a wait for a first token).
        self.driver.guard.call.require_continuation();
        self.driver
            .guard
            .record(self.attempt, outcome, &self.deployment);
        // Continue elsewhere only where it is exact: plain text of one choice, not finished.
        if let Some(text) = self.reader.text.take() {
            if self.reader.continuable && !self.reader.finished {
                self.text.push_str(&text);
                if let Some(bytes) = self.continue_elsewhere().await {
                    return bytes;
                }
            }
        }
        self.finished = true;
        self.driver.gateway.metrics().stream_interrupted(
            &route,
            &self.deployment.name,
            "error_event",
        );
        // Counted against the deployment whose stream broke, not `none`: the client got a 200
        // and part of an answer from it.
        self.driver.gateway.metrics().request_failed_at(
            &route,
            &self.deployment.name,
            "stream_interrupted",
        );
        self.driver.finish(200, Some(&self.deployment.name));
        let event = serde_json::json!({
            "error": {
                "message": format!(
                    "the answer was cut after it started and could not be continued exactly; it is incomplete. {}: {}",
                    self.deployment.name, failure.message
                ),
                "type": "stream_interrupted",
                "param": null,
                "code": "stream_interrupted",
                "stilts": { "route": route, "class": failure.class.as_str(), "attempts": self.driver.tried },
            }
        });
        let mut bytes = b"data: ".to_vec();
        bytes.extend_from_slice(event.to_string().as_bytes());
        bytes.extend_from_slice(b"\n\n");
        Some(Bytes::from(bytes))
    }

    /// Tries an exact continuation. `Some(None)`: continued; `None`: not possible.
    async fn continue_elsewhere(&mut self) -> Option<Option<Bytes>> {
        let mut request: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        let messages = request.get_mut("messages")?.as_array_mut()?;
        messages.push(serde_json::json!({ "role": "assistant", "content": self.text }));
        let body = Bytes::from(serde_json::to_vec(&request).ok()?);
        let shared = body.clone();
        let local = Arc::clone(&self.driver.local);
        let options = ReadOptions {
            track_text: true,
            continuation: true,
            usage_chunks: self.driver.usage_chunks,
        };
        let end = self
            .driver
            .run(move |attempt, deployment, clock| {
                let body = shared.clone();
                let local = Arc::clone(&local);
                Box::pin(async move {
                    let sent = clock.now();
                    let timer = attempt.timer(sent);
                    let result = open(&deployment, &body, timer, clock, options, local).await;
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
            LoopEnd::Won(attempt, deployment, (reader, timer), first_token) => {
                self.driver.guard.cancel_pending_except(&[attempt]);
                self.driver.gateway.metrics().stream_interrupted(
                    &self.driver.guard.route.name,
                    &self.deployment.name,
                    "continued",
                );
                tracing::info!(
                    route = %self.driver.guard.route.name,
                    from = %self.deployment.name,
                    to = %deployment.name,
                    "stream continued exactly on another provider"
                );
                self.attempt = attempt;
                self.deployment = deployment;
                self.reader = reader;
                self.timer = timer;
                self.first_token = first_token;
                Some(None)
            }
            LoopEnd::Failed(_) | LoopEnd::Refused(..) => None,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if !self.finished {
            let route = &self.driver.guard.route.name;
            tracing::info!(route = %route, provider = %self.deployment.name, "client left mid-stream; upstream attempt cancelled");
            // 499, as nginx logs a client that closed the connection before the answer ended.
            self.driver.finish(499, Some(&self.deployment.name));
            self.driver.gateway.metrics().stream_interrupted(
                route,
                &self.deployment.name,
                "client_gone",
            );
        }
    }
}
