//! How one attempt ends, as the client sees it: the world's fate walked through the core's
//! attempt timer.
//!
//! The engine draws a fate ([`Fate`]) and applies capacity; this module turns it into a
//! [`Resolution`] by reporting the fate's milestones to the attempt's [`AttemptTimer`] (the one
//! the gateway runs) and ending the attempt as a `Timeout` wherever the timer falls due first. No
//! limit is computed here.

use crate::world::{Fate, Mishap};
use stilts_core::{AttemptTimer, Cause, ErrorClass, Instant, Stage};

/// How an attempt ends, as the client sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Resolution {
    pub at: u64,
    pub end: End,
    /// When the first stream token reached the client, if one did.
    pub first_token: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum End {
    Answered,
    Failed {
        class: ErrorClass,
        retry_after: Option<u64>,
    },
    /// The attempt's timer ran out: a `Timeout`, except a flowing stream ended by the client's
    /// own deadline (`cause` is the call's deadline), which is neutral, as in the gateway.
    Expired {
        /// Read by the tests (which stage ran out).
        #[cfg_attr(not(test), allow(dead_code))]
        stage: Stage,
        cause: Cause,
    },
}

impl Resolution {
    fn success(at: u64, first_token: Option<u64>) -> Self {
        Resolution {
            at,
            end: End::Answered,
            first_token,
        }
    }

    fn failure(at: u64, class: ErrorClass, retry_after: Option<u64>) -> Self {
        Resolution {
            at,
            end: End::Failed { class, retry_after },
            first_token: None,
        }
    }
}

/// Nothing more arrives: the attempt ends when its timer falls due.
fn silence(timer: &mut AttemptTimer, first_token: Option<u64>) -> Resolution {
    let due = timer.poll_timeout();
    let end = match timer.handle_timeout(due) {
        Some(expiry) => End::Expired {
            stage: expiry.stage,
            cause: expiry.cause,
        },
        // Not reached: a timer that is not over always has a limit due at `poll_timeout`.
        None => End::Failed {
            class: ErrorClass::Timeout,
            retry_after: None,
        },
    };
    Resolution {
        at: due.as_nanos(),
        end,
        first_token,
    }
}

/// Walks the timer to a milestone at `at` (something arrives then): `Err` with the timeout if a
/// limit falls due strictly before it. What arrives at the very instant a limit falls due counts,
/// as it does for the gateway (whose wait prefers the arrival).
fn reach(timer: &mut AttemptTimer, at: u64, first_token: Option<u64>) -> Result<(), Resolution> {
    if timer.poll_timeout().as_nanos() < at {
        Err(silence(timer, first_token))
    } else {
        Ok(())
    }
}

/// A stream's tokens flow from the last milestone to `to`: data keeps arriving, so a limit that
/// data resets (the stall) never runs out, and one it does not (the attempt's deadline) does.
fn flow(timer: &mut AttemptTimer, to: u64, first_token: Option<u64>) -> Result<(), Resolution> {
    loop {
        let due = timer.poll_timeout();
        if due.as_nanos() >= to {
            timer.on_data(Instant::from_nanos(to));
            return Ok(());
        }
        timer.on_data(due);
        if timer.poll_timeout() == due {
            return Err(silence(timer, first_token));
        }
    }
}

/// Runs a fate through the attempt's timer (made at its send). `start` is when the provider began
/// serving (after any queueing).
///
/// The milestones, as the world models a provider: a refused connection or an error response
/// arrives whole; a plain answer's headers come with its whole body once it is generated; a
/// stream's headers come when the provider starts serving, then its first token, then tokens flow
/// without gaps until the end or the point of a cut, a malformed event or a stall (after which
/// nothing comes). At each milestone the timer is asked first ([`reach`]).
pub(super) fn resolve(fate: Fate, start: u64, mut timer: AttemptTimer, stream: bool) -> Resolution {
    walk(fate, start, &mut timer, stream).unwrap_or_else(|timed_out| timed_out)
}

fn walk(
    fate: Fate,
    start: u64,
    timer: &mut AttemptTimer,
    stream: bool,
) -> Result<Resolution, Resolution> {
    match fate {
        Fate::Refused { after } => {
            let at = start.saturating_add(after);
            reach(timer, at, None)?;
            Ok(Resolution::failure(at, ErrorClass::Server, None))
        }
        Fate::Error {
            class,
            after,
            retry_after,
        } => {
            let at = start.saturating_add(after);
            reach(timer, at, None)?;
            Ok(Resolution::failure(at, class, retry_after))
        }
        Fate::Hang => Err(silence(timer, None)),
        Fate::Answer {
            ttft,
            generation,
            mishap,
        } => {
            let first = start.saturating_add(ttft);
            if !stream {
                let total = first.saturating_add(generation);
                reach(timer, total, None)?;
                timer.on_headers(Instant::from_nanos(total));
                return Ok(match mishap {
                    Mishap::Malformed(_) => Resolution::failure(total, ErrorClass::Server, None),
                    _ => Resolution::success(total, None),
                });
            }
            reach(timer, start, None)?;
            timer.on_headers(Instant::from_nanos(start));
            reach(timer, first, None)?;
            timer.on_first_token(Instant::from_nanos(first));
            let seen = Some(first);
            let part = |f: f64| first.saturating_add((generation as f64 * f) as u64);
            match mishap {
                Mishap::None => {
                    let end = first.saturating_add(generation);
                    flow(timer, end, seen)?;
                    Ok(Resolution::success(end, seen))
                }
                Mishap::Cut(f) | Mishap::Malformed(f) => {
                    let at = part(f);
                    flow(timer, at, seen)?;
                    Ok(Resolution {
                        first_token: seen,
                        ..Resolution::failure(at, ErrorClass::Server, None)
                    })
                }
                Mishap::Stall(f) => {
                    flow(timer, part(f), seen)?;
                    Err(silence(timer, seen))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use super::*;
    use std::time::Duration;
    use stilts_core::Timeouts;

    /// Headers 10 µs, first token 5 µs, stall 2 µs (ns are the simulator's unit).
    fn timer(stream: bool, send: u64, deadline: u64) -> AttemptTimer {
        let ns = Duration::from_nanos;
        let t = Timeouts {
            connect: ns(1_000),
            headers: ns(10_000),
            plain_headers_per_output_token: Duration::ZERO,
            first_token: ns(5_000),
            stall: ns(2_000),
            attempt: ns(1_000_000),
        };
        AttemptTimer::with_limits(
            &t,
            stream,
            Instant::from_nanos(send),
            Instant::from_nanos(deadline),
        )
    }

    /// How `fate` ends for an attempt sent at 0, served from `start`: (at, outcome, first token),
    /// the outcome a class, or the stage that ran out (and whether the deadline came first).
    fn run(fate: Fate, start: u64, deadline: u64, stream: bool) -> (u64, String, Option<u64>) {
        let r = resolve(fate, start, timer(stream, 0, deadline), stream);
        let end = match r.end {
            End::Answered => "answered".to_owned(),
            End::Failed { class, .. } => class.as_str().to_owned(),
            End::Expired {
                stage,
                cause: Cause::Stage,
            } => format!("{} limit", stage.as_str()),
            End::Expired { stage, .. } => format!("{} cut by the deadline", stage.as_str()),
        };
        (r.at, end, r.first_token)
    }

    fn answer(ttft: u64, generation: u64, mishap: Mishap) -> Fate {
        Fate::Answer {
            ttft,
            generation,
            mishap,
        }
    }

    #[test]
    fn the_core_timer_turns_slowness_into_timeouts_at_the_limit() {
        let far = 100_000;
        // Plain: the headers come with the whole body.
        assert_eq!(
            run(answer(4_000, 7_000, Mishap::None), 0, far, false),
            (10_000, "headers limit".into(), None)
        );
        assert_eq!(
            run(answer(4_000, 5_000, Mishap::None), 0, far, false),
            (9_000, "answered".into(), None)
        );
        // Arriving at the very instant the limit falls due counts.
        assert_eq!(
            run(answer(4_000, 6_000, Mishap::None), 0, far, false),
            (10_000, "answered".into(), None)
        );
        // Stream: the first token within `first_token` of the send.
        assert_eq!(
            run(answer(1_000, 50_000, Mishap::None), 0, far, true),
            (51_000, "answered".into(), Some(1_000))
        );
        // Queueing counts against the limits: served at 4.5 µs, no token by 5 µs.
        assert_eq!(
            run(answer(1_000, 1_000, Mishap::None), 4_500, far, true),
            (5_000, "first_token limit".into(), None)
        );
        // A stall is detected `stall` after the last token; the client already had bytes.
        assert_eq!(
            run(answer(1_000, 10_000, Mishap::Stall(0.5)), 0, far, true),
            (8_000, "stall limit".into(), Some(1_000))
        );
        // A cut or a malformed event ends it where it happens.
        assert_eq!(
            run(answer(1_000, 10_000, Mishap::Cut(0.5)), 0, far, true),
            (6_000, "server".into(), Some(1_000))
        );
        // A hang waits for the silent limit: headers (plain), the first token (stream).
        assert_eq!(
            run(Fate::Hang, 0, far, false),
            (10_000, "headers limit".into(), None)
        );
        assert_eq!(
            run(Fate::Hang, 0, far, true),
            (5_000, "first_token limit".into(), None)
        );
        // The deadline clips everything, and says it came first.
        assert_eq!(
            run(answer(1_000, 50_000, Mishap::None), 0, 20_000, true),
            (20_000, "stall cut by the deadline".into(), Some(1_000))
        );
        assert_eq!(
            run(Fate::Hang, 0, 3_000, false),
            (3_000, "headers cut by the deadline".into(), None)
        );
    }

    #[test]
    fn the_timer_applies_the_gateways_semantics_where_the_old_code_did_not() {
        let far = 100_000;
        // A stream's headers come when the provider starts serving; a first token more than
        // `stall` later is a stall before the first token, as the gateway sees it (the old code
        // waited for the first-token limit: a timeout at 5 µs).
        assert_eq!(
            run(answer(3_000, 1_000, Mishap::None), 0, far, true),
            (2_000, "stall limit".into(), None)
        );
        // The first-token limit runs from the send while the headers are awaited, so an error
        // response after it is a timeout (the old code allowed a stream's error until the headers
        // limit).
        let error = Fate::Error {
            class: ErrorClass::Server,
            after: 7_000,
            retry_after: None,
        };
        assert_eq!(
            run(error, 0, far, true),
            (5_000, "first_token limit".into(), None)
        );
        assert_eq!(run(error, 0, far, false), (7_000, "server".into(), None));
        // A refused connection after the headers limit is a headers timeout.
        assert_eq!(
            run(Fate::Refused { after: 12_000 }, 0, far, false),
            (10_000, "headers limit".into(), None)
        );
    }
}
