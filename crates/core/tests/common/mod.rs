//! A small harness that drives the router with a virtual clock and scripted provider answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.
#![allow(dead_code)] // Each test file uses a different part of the harness.

use std::time::Duration;
use stilts_core::{
    Decision, ErrorClass, GiveUp, Instant, Outcome, PolicyKind, ProviderConfig, ProviderId,
    RequestMeta, Router, RouterConfig, Usage,
};

/// A config with providers `names`, breaker jitter off, and `edit` applied.
pub fn router(names: &[&str], edit: impl FnOnce(&mut RouterConfig)) -> Router {
    let mut config = RouterConfig {
        providers: names.iter().map(|n| ProviderConfig::named(*n)).collect(),
        ..RouterConfig::default()
    };
    config.breaker.open_jitter = Some(0.0);
    edit(&mut config);
    Router::new(config.validate().expect("valid test config"), 7)
}

/// The `priority` policy, as a config edit for [`router`].
pub fn priority(c: &mut RouterConfig) {
    c.policy = PolicyKind::Priority;
}

pub fn ok(ms: u64) -> Outcome {
    Outcome::Success {
        latency: Duration::from_millis(ms),
        first_token: None,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 50,
        },
    }
}

pub fn fail(class: ErrorClass) -> Outcome {
    Outcome::Failure {
        class,
        latency: Duration::from_millis(20),
        retry_after: None,
    }
}

pub fn rate_limited(retry_after_ms: u64) -> Outcome {
    Outcome::Failure {
        class: ErrorClass::RateLimited,
        latency: Duration::from_millis(5),
        retry_after: Some(Duration::from_millis(retry_after_ms)),
    }
}

/// How a whole call went: where each attempt went, and how it ended.
#[derive(Debug, PartialEq)]
pub struct Trace {
    pub sent: Vec<String>,
    pub waited: Vec<Duration>,
    pub end: Result<String, GiveUp>,
    pub end_at: Instant,
}

/// Runs one call to its end at `start`, answering each attempt with `answer(provider name, attempt
/// number)`; each answer takes 10 ms of virtual time.
pub fn run_call(
    router: &mut Router,
    start: Instant,
    mut answer: impl FnMut(&str, u32) -> Outcome,
) -> Trace {
    let mut now = start;
    let mut call = router.begin(RequestMeta::default(), now);
    let mut sent = Vec::new();
    let mut waited = Vec::new();
    for _ in 0..100 {
        match router.next_attempt(&mut call, now) {
            Decision::Send(attempt) => {
                let name = router.provider(attempt.provider).name.clone();
                let mut outcome = answer(&name, attempt.number);
                sent.push(name);
                now = now + Duration::from_millis(10);
                if now > attempt.deadline {
                    // The driver abandons an attempt at its deadline.
                    now = attempt.deadline;
                    outcome = Outcome::Failure {
                        class: ErrorClass::Timeout,
                        latency: Duration::from_millis(10),
                        retry_after: None,
                    };
                }
                router.record(&mut call, attempt, outcome, now);
            }
            Decision::Wait { until } => {
                waited.push(until.saturating_since(now));
                now = until;
            }
            Decision::Done { provider } => {
                let provider = provider.expect("the winner was not removed");
                return Trace {
                    sent,
                    waited,
                    end: Ok(router.provider(provider).name.clone()),
                    end_at: now,
                };
            }
            Decision::GiveUp(why) => {
                return Trace {
                    sent,
                    waited,
                    end: Err(why),
                    end_at: now,
                };
            }
            other => panic!("unexpected decision without hedging: {other:?}"),
        }
    }
    panic!("the call did not end within 100 steps")
}

pub fn id(router: &Router, name: &str) -> ProviderId {
    router.provider_id(name).expect("known provider")
}
