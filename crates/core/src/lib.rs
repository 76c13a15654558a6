//! stilts-core: the sans-IO routing engine of stilts.
//!
//! It decides which LLM provider gets each attempt of a request, when to retry, fail over, hedge,
//! wait or give up, and keeps each provider's health (circuit breaker, cool-downs, latency, local
//! rate limits) and cost. It does no I/O, reads no clock and owns no thread: time comes in as an
//! [`Instant`] argument, randomness from a seeded [`RouterRng`], and decisions and outcomes go in
//! and out as values. The gateway drives it with real time and HTTP; the simulator drives the
//! same code in virtual time. Start at [`Router`]; each attempt it plans runs under an
//! [`AttemptTimer`], which tells the driver when to wake it and decides when a stage ran out.
//!
//! ```
//! use stilts_core::{Decision, Instant, Outcome, ProviderConfig, RequestMeta, Router, RouterConfig, Usage};
//! use std::time::Duration;
//!
//! let config = RouterConfig {
//!     providers: vec![ProviderConfig::named("primary"), ProviderConfig::named("backup")],
//!     ..RouterConfig::default()
//! };
//! let mut router = Router::new(config.validate()?, 42);
//! let now = Instant::ZERO;
//! let mut call = router.begin(RequestMeta::default(), now);
//! let Decision::Send(attempt) = router.next_attempt(&mut call, now) else { unreachable!() };
//! let outcome = Outcome::Success { latency: Duration::from_millis(300), first_token: None, usage: Usage::default() };
//! router.record(&mut call, attempt, outcome, now + Duration::from_millis(300));
//! assert!(matches!(router.next_attempt(&mut call, now), Decision::Done { .. }));
//! # Ok::<(), stilts_core::ConfigError>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod answer_length;
mod attempt;
mod breaker;
mod breaks;
mod budget;
mod class;
pub mod config;
mod deadline_misses;
mod ewma;
pub mod policy;
mod provider;
mod refusals;
mod rng;
mod router;
mod slowdown;
mod speed;
mod time;
pub mod timer;
mod window;

pub use attempt::Attempt;
pub use breaker::BreakerState;
pub use class::ErrorClass;
pub use config::{ConfigError, PolicyKind, ProviderConfig, RouterConfig, Timeouts, ValidConfig};
pub use ewma::PeakEwma;
pub use provider::{ProviderId, ProviderSet};
pub use rng::RouterRng;
pub use router::quota::Quota;
pub use router::shared::{
    Opening, ProviderReport, ReplicaReport, SIBLING_CLOCK_TOLERANCE, SharedProvider, SharedView,
};
pub use router::{
    Call, Cooldown, Decision, GiveUp, GiveUpReason, Outcome, ProviderStats, ProviderStatus,
    RequestMeta, Router, Usage,
};
pub use time::Instant;
pub use timer::{AttemptTimer, Cause, Expiry, Stage};
