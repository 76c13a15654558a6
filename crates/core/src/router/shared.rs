//! State shared between replicas of one route: what a router reports, and what it takes in.
//!
//! Several gateways serving the same route each run their own [`Router`]. What must be global
//! (breaker openings and recoveries, cool-downs, per-minute rate-limit usage, spend per period)
//! is exchanged by the driver, never by the core: a router writes a [`ReplicaReport`] of what it
//! saw first-hand, the driver carries reports between replicas (the gateway through Redis, the
//! simulator in memory), merges its siblings' reports with [`SharedView::merge`] and hands the
//! view back with [`Router::apply_shared`]. Like time, shared state is an input: the core stays
//! sans-IO and deterministic.
//!
//! Providers are matched by name, since ids differ between replicas that loaded configs in a
//! different order. Instants must be on one time line across replicas (the gateway's clock is
//! anchored to the Unix epoch, the simulator's replicas share virtual time).
//!
//! Merging rules, each idempotent so a report may be applied any number of times:
//! - a sibling's breaker opening newer than anything this router saw opens its breaker until the
//!   sibling's deadline; a sibling's recovery newer than this breaker's last opening closes it;
//! - a cool-down is the longest running one;
//! - per-minute usage and spend add up: a limit counts this router's own traffic plus its
//!   siblings' as last reported, so the global overshoot is at most what the siblings sent
//!   since their last report (see `docs/replicas.md`).

use super::{Cooldown, Router};
use crate::time::Instant;
use std::time::Duration;

/// A breaker opening: when, and until when it stays open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// When the breaker opened.
    pub at: Instant,
    /// When it becomes half-open.
    pub until: Instant,
}

/// What one router knows of one provider, for the siblings of its replica.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderReport {
    /// The provider's configured name.
    pub name: String,
    /// Its breaker's last opening, while the breaker is still open.
    pub opened: Option<Opening>,
    /// When its breaker last closed after being open.
    pub recovered_at: Option<Instant>,
    /// The running cool-down and its end.
    pub cooldown: Option<(Cooldown, Instant)>,
    /// Requests and tokens this replica sent the provider over the last minute (zero unless the
    /// provider has a per-minute limit).
    pub minute: [u64; 2],
}

/// What one router reports to its siblings.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaReport {
    /// The spend period its spend belongs to (the time line divided by the period).
    pub spend_period: u64,
    /// Its spend in that period, in USD (its own traffic only).
    pub spent_usd: f64,
    /// One entry per provider.
    pub providers: Vec<ProviderReport>,
}

/// What a router's siblings know of one provider, merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedProvider {
    /// The provider's configured name.
    pub name: String,
    /// The latest breaker opening a sibling reports.
    pub opened: Option<Opening>,
    /// The latest recovery a sibling reports.
    pub recovered_at: Option<Instant>,
    /// The longest running cool-down.
    pub cooldown: Option<(Cooldown, Instant)>,
    /// The siblings' requests and tokens over the last minute, summed.
    pub minute: [u64; 2],
}

/// Everything a router's siblings know, merged from their reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedView {
    /// The siblings' spend per spend period, summed, in period order: a reader takes its own
    /// period's (siblings a period ahead or behind at a boundary change nothing for the others).
    pub spent_usd: Vec<(u64, f64)>,
    /// Per provider, by name.
    pub providers: Vec<SharedProvider>,
}

impl SharedView {
    /// Merges sibling reports (never the router's own: its own state is already counted). The
    /// result does not depend on the order of the reports.
    pub fn merge<'a>(reports: impl IntoIterator<Item = &'a ReplicaReport>) -> SharedView {
        let mut view = SharedView::default();
        for report in reports {
            if report.spent_usd.is_finite() && report.spent_usd > 0.0 {
                match view
                    .spent_usd
                    .binary_search_by_key(&report.spend_period, |(p, _)| *p)
                {
                    Ok(i) => view.spent_usd[i].1 += report.spent_usd,
                    Err(i) => view
                        .spent_usd
                        .insert(i, (report.spend_period, report.spent_usd)),
                }
            }
            for p in &report.providers {
                let merged = match view.providers.iter_mut().position(|m| m.name == p.name) {
                    Some(i) => &mut view.providers[i],
                    None => {
                        view.providers.push(SharedProvider {
                            name: p.name.clone(),
                            ..SharedProvider::default()
                        });
                        let last = view.providers.len() - 1;
                        &mut view.providers[last]
                    }
                };
                // Ties are broken on every field, so the order of the reports never matters.
                merged.opened = match (merged.opened, p.opened) {
                    (Some(a), Some(b)) => Some(if (b.at, b.until) > (a.at, a.until) {
                        b
                    } else {
                        a
                    }),
                    (a, b) => a.or(b),
                };
                merged.recovered_at = merged.recovered_at.max(p.recovered_at);
                merged.cooldown = match (merged.cooldown, p.cooldown) {
                    (Some(a), Some(b)) => {
                        Some(if (b.1, cooldown_rank(b.0)) > (a.1, cooldown_rank(a.0)) {
                            b
                        } else {
                            a
                        })
                    }
                    (a, b) => a.or(b),
                };
                merged.minute[0] = merged.minute[0].saturating_add(p.minute[0]);
                merged.minute[1] = merged.minute[1].saturating_add(p.minute[1]);
            }
        }
        view
    }
}

/// An order among cool-down kinds, for ties: the longer-lasting kind wins.
fn cooldown_rank(kind: Cooldown) -> u8 {
    match kind {
        Cooldown::RateLimited => 0,
        Cooldown::Auth => 1,
        Cooldown::Quota => 2,
    }
}

/// How far in this router's future a sibling's event may be dated and still count (clock skew
/// between hosts). A later one is a clock far ahead or a forged entry: taken in, a recovery dated
/// in the future would close every breaker this router opens until then.
pub const SIBLING_CLOCK_TOLERANCE: Duration = Duration::from_secs(2);

impl Router {
    /// What this router saw first-hand, for its siblings: breaker openings and recoveries,
    /// cool-downs, per-minute usage of limited providers and spend in the current period.
    pub fn shared_report(&mut self, now: Instant) -> ReplicaReport {
        let _ = self.spend_reached(now);
        let providers = (0..self.config.providers.len())
            .map(|i| {
                let health = &mut self.health[i];
                let (opened, recovered_at) = health.breaker.transitions(now);
                ProviderReport {
                    name: self.config.providers[i].name.clone(),
                    opened: opened.map(|(at, until)| Opening { at, until }),
                    recovered_at,
                    cooldown: health.cooldown.filter(|(_, until)| *until > now),
                    minute: health
                        .minute
                        .as_mut()
                        .map_or([0, 0], |minute| minute.totals(now)),
                }
            })
            .collect();
        ReplicaReport {
            spend_period: self.spend_period,
            spent_usd: self.spent_usd,
            providers,
        }
    }

    /// Takes in what the siblings know (see the module doc for the rules). The view replaces the
    /// siblings' usage and spend (a provider it does not name had none); a provider it names but
    /// this router does not have is ignored. A sibling's deadline is never taken further than this
    /// router would set one itself (`breaker.open_max`, the longest cool-down), so a sibling with
    /// a clock far ahead, or a forged entry, cannot block a provider for longer. Applying the same
    /// view twice changes nothing more.
    pub fn apply_shared(&mut self, view: &SharedView, now: Instant) {
        let _ = self.spend_reached(now);
        self.siblings_spent_usd = view
            .spent_usd
            .iter()
            .find(|(period, _)| *period == self.spend_period)
            .map_or(0.0, |(_, usd)| *usd);
        let latest = now + SIBLING_CLOCK_TOLERANCE;
        for health in &mut self.health {
            health.siblings_minute = [0, 0];
        }
        let longest_open = now + self.config.breaker.open_max;
        let retry = &self.config.retry;
        let longest_cooldown = now + retry.quota_cooldown.max(retry.auth_cooldown);
        for shared in &view.providers {
            let Some(i) = self
                .config
                .providers
                .iter()
                .position(|p| p.name == shared.name)
            else {
                continue;
            };
            let health = &mut self.health[i];
            // In the order they happened, so an opening and a later recovery end closed.
            let opened = shared
                .opened
                .filter(|o| o.at <= latest)
                .map(|o| Opening {
                    at: o.at,
                    until: o.until.min(longest_open),
                })
                .filter(|o| o.until > now);
            let recovered_at = shared.recovered_at.filter(|r| *r <= latest);
            match (opened, recovered_at) {
                (Some(o), Some(r)) if r > o.at => {
                    health.breaker.sibling_opened(o.at, o.until, now);
                    health.breaker.sibling_recovered(r, now);
                }
                (o, r) => {
                    if let Some(r) = r {
                        health.breaker.sibling_recovered(r, now);
                    }
                    if let Some(o) = o {
                        health.breaker.sibling_opened(o.at, o.until, now);
                    }
                }
            }
            if let Some((kind, until)) = shared.cooldown {
                let until = until.min(longest_cooldown);
                let longer = health
                    .cooldown
                    .is_none_or(|(_, own)| own <= now || until > own);
                if until > now && longer {
                    health.cooldown = Some((kind, until));
                }
            }
            health.siblings_minute = if health.minute.is_some() {
                shared.minute
            } else {
                [0, 0]
            };
        }
    }
}
