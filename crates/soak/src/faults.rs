//! The fault schedule: which fault each fake upstream injects, in which share of its requests,
//! during each phase of a cycle.
//!
//! A cycle is split into equal phases, one per [`PHASES`] entry, in order; the cycle repeats for
//! the whole soak, so every window of one cycle sees the same mix (which is what makes resource
//! samples of two cycles comparable). In a phase, an upstream with a fault injects it into every
//! `every`-th request it receives and answers the others normally, so the gateway sees a fault mix,
//! as in a real incident, not a clean switch.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use stilts_gateway::mock::{Plan, Planner};

/// The fake upstreams, by index: `a` (first choice of `chat`), `b`, `c` (also served in the
/// Anthropic dialect, for the `claude` route).
pub const UPSTREAMS: [&str; 3] = ["a", "b", "c"];

/// One fault on one upstream in one phase.
#[derive(Clone, Copy, Debug)]
pub struct Injection {
    /// Upstream index into [`UPSTREAMS`].
    pub upstream: usize,
    /// The fault.
    pub fault: Fault,
    /// Every n-th request of that upstream gets it (1: all).
    pub every: u64,
}

/// The fault kinds a provider shows in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 answers.
    Outage,
    /// 429 answers with `Retry-After` in seconds.
    RateLimited(u32),
    /// No answer at all, the connection kept open.
    Hang,
    /// A stream cut after this many content chunks (plain answers are unaffected).
    Cut(u32),
    /// A stream that stops sending after this many chunks, the connection kept open.
    Stall(u32),
    /// A stream event that is not JSON after this many chunks; a plain body that is not JSON.
    Malformed(u32),
    /// Headers after this many ms; streams' first token this many ms later again.
    SlowFirstToken(u64),
    /// Headers, then the connection broken before any body.
    Reset,
    /// The provider's in-band overload error after this many chunks.
    OverloadEvent(u32),
}

/// One phase of the cycle.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    /// Shown in the report.
    pub name: &'static str,
    /// What each upstream injects.
    pub injections: &'static [Injection],
}

const fn inject(upstream: usize, fault: Fault, every: u64) -> Injection {
    Injection {
        upstream,
        fault,
        every,
    }
}

/// The phases of one cycle, in order.
pub const PHASES: [Phase; 10] = [
    Phase {
        name: "healthy",
        injections: &[],
    },
    Phase {
        name: "outage (a: every request 503)",
        injections: &[inject(0, Fault::Outage, 1)],
    },
    Phase {
        name: "429 storm (a: all, Retry-After 2 s; b: one in 2, Retry-After 1 s)",
        injections: &[
            inject(0, Fault::RateLimited(2), 1),
            inject(1, Fault::RateLimited(1), 2),
        ],
    },
    Phase {
        name: "hangs (b: one in 3)",
        injections: &[inject(1, Fault::Hang, 3)],
    },
    Phase {
        name: "stream cuts (a: one in 4 after 2 chunks; c: one in 4 after 1)",
        injections: &[inject(0, Fault::Cut(2), 4), inject(2, Fault::Cut(1), 4)],
    },
    Phase {
        name: "stream stalls (a: one in 4 after 2 chunks)",
        injections: &[inject(0, Fault::Stall(2), 4)],
    },
    Phase {
        name: "malformed answers (b: one in 4, after 1 chunk)",
        injections: &[inject(1, Fault::Malformed(1), 4)],
    },
    Phase {
        name: "slow first tokens (a: one in 2, 1.5 s; c: one in 3, 1 s)",
        injections: &[
            inject(0, Fault::SlowFirstToken(1_500), 2),
            inject(2, Fault::SlowFirstToken(1_000), 3),
        ],
    },
    Phase {
        name: "connection resets (b: one in 3)",
        injections: &[inject(1, Fault::Reset, 3)],
    },
    Phase {
        name: "in-band overload events (c: one in 4, before the first chunk)",
        injections: &[inject(2, Fault::OverloadEvent(0), 4)],
    },
];

/// The current phase index, shared by the schedule and every upstream's planner.
#[derive(Debug, Default)]
pub struct PhaseClock(AtomicUsize);

impl PhaseClock {
    /// Moves to phase `index` (modulo the phase count).
    pub fn set(&self, index: usize) {
        self.0.store(index % PHASES.len(), Ordering::Relaxed);
    }

    /// The current phase's index into [`PHASES`].
    pub fn index(&self) -> usize {
        self.0.load(Ordering::Relaxed) % PHASES.len()
    }

    /// The current phase.
    pub fn phase(&self) -> &'static Phase {
        &PHASES[self.index()]
    }
}

/// Plans one upstream's answers from the current phase.
pub struct SchedulePlanner {
    upstream: usize,
    phases: Arc<PhaseClock>,
    received: AtomicU64,
}

impl SchedulePlanner {
    /// The planner of upstream `upstream` (an index into [`UPSTREAMS`]).
    pub fn new(upstream: usize, phases: Arc<PhaseClock>) -> Self {
        SchedulePlanner {
            upstream,
            phases,
            received: AtomicU64::new(0),
        }
    }

    fn plan_now(&self) -> Plan {
        let n = self.received.fetch_add(1, Ordering::Relaxed);
        let injection = self
            .phases
            .phase()
            .injections
            .iter()
            .find(|i| i.upstream == self.upstream && n % i.every.max(1) == 0);
        match injection {
            Some(i) => faulty(i.fault),
            None => healthy(),
        }
    }
}

impl Planner for SchedulePlanner {
    fn plan(
        &self,
        _path: &'static str,
        _request: &serde_json::Value,
    ) -> Pin<Box<dyn std::future::Future<Output = Plan> + Send + '_>> {
        let plan = self.plan_now();
        Box::pin(async move { plan })
    }
}

/// A healthy answer: headers after 2 ms; streams of 6 content chunks, 2 ms apart.
fn healthy() -> Plan {
    Plan {
        latency: Duration::from_millis(2),
        first_token: Duration::from_millis(2),
        chunk_interval: Duration::from_millis(2),
        content_chunks: Some(6),
        ..Plan::default()
    }
}

/// The plan of `fault`, otherwise healthy.
fn faulty(fault: Fault) -> Plan {
    let mut plan = healthy();
    match fault {
        Fault::Outage => plan.faults.status = Some(503),
        Fault::RateLimited(seconds) => {
            plan.faults.status = Some(429);
            plan.faults.error_code = Some("rate_limit_exceeded".to_owned());
            plan.faults.retry_after_s = Some(f64::from(seconds));
        }
        Fault::Hang => plan.faults.hang = true,
        Fault::Cut(after) => plan.faults.cut_after = Some(after),
        Fault::Stall(after) => plan.faults.stall_after = Some(after),
        Fault::Malformed(after) => {
            plan.faults.malformed_after = Some(after);
            plan.malformed_body = true;
        }
        Fault::SlowFirstToken(ms) => {
            plan.latency = Duration::from_millis(ms / 5);
            plan.first_token = Duration::from_millis(ms);
        }
        Fault::Reset => plan.reset = true,
        Fault::OverloadEvent(after) => plan.faults.overload_event_after = Some(after),
    }
    plan
}

/// Only the faults; used where a plan is compared.
#[cfg(test)]
fn faults_of(fault: Fault) -> stilts_gateway::mock::Faults {
    faulty(fault).faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_names_known_upstreams_and_a_positive_share() {
        for phase in PHASES {
            for i in phase.injections {
                assert!(i.upstream < UPSTREAMS.len(), "{}", phase.name);
                assert!(i.every >= 1, "{}", phase.name);
            }
        }
    }

    #[test]
    fn an_injection_hits_exactly_every_nth_request() {
        let clock = Arc::new(PhaseClock::default());
        clock.set(4); // cuts: upstream a one in 4
        let planner = SchedulePlanner::new(0, Arc::clone(&clock));
        let cut: Vec<bool> = (0..8)
            .map(|_| planner.plan_now().faults.cut_after.is_some())
            .collect();
        assert_eq!(cut, [true, false, false, false, true, false, false, false]);
        let untouched = SchedulePlanner::new(1, clock);
        let healthy = stilts_gateway::mock::Faults::default();
        assert!((0..8).all(|_| untouched.plan_now().faults == healthy));
    }

    #[test]
    fn the_phase_wraps_around_the_cycle() {
        let clock = PhaseClock::default();
        clock.set(PHASES.len() + 1);
        assert_eq!(clock.phase().name, PHASES[1].name);
        assert_eq!(faults_of(Fault::Outage).status, Some(503));
    }
}
