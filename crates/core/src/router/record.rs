//! Recording how an attempt ended: the provider's health (breaker, cool-down, latency, speed,
//! slowdown, refusals), its counters and spend, and the call's history that its next decision
//! reads.

use super::{CLIENT_CUT_FACTOR, Call, Cooldown, GiveUpReason, Outcome, Router};
use crate::attempt::Attempt;
use crate::breaker::ProbeEpoch;
use crate::class::ErrorClass;
use crate::provider::ProviderId;
use crate::time::Instant;
use std::time::Duration;

impl Router {
    /// The index of the provider `attempt` went to, if it still exists after reloads.
    fn resolve(&self, attempt: &Attempt) -> Option<usize> {
        let i = attempt.provider.index();
        if self.uids.get(i) == Some(&attempt.provider_uid) {
            Some(i)
        } else {
            self.uids.iter().position(|u| *u == attempt.provider_uid)
        }
    }

    /// Records how `attempt` of `call` ended. Returns the outcome as recorded: `outcome`, except
    /// that a plain attempt cancelled after losing to its fallback hedge is recorded as a timeout
    /// of its provider (`FallbackHedge`), which a driver counts in its metrics as such.
    pub fn record(
        &mut self,
        call: &mut Call,
        attempt: Attempt,
        outcome: Outcome,
        now: Instant,
    ) -> Outcome {
        self.sync(call);
        call.in_flight = call.in_flight.saturating_sub(1);
        if attempt.is_probe() {
            if let Some(p) = self.resolve(&attempt).and_then(ProviderId::from_index) {
                call.probes_out.remove(p);
            }
        }
        let index = self.resolve(&attempt);
        if let Some(i) = index {
            self.loads[i].in_flight = self.loads[i].in_flight.saturating_sub(1);
        }
        // The provider's id now (it may have moved in a reload), if it still exists.
        let current = index.and_then(ProviderId::from_index);
        let outcome = Self::overdue_as_timeout(call, &attempt, outcome, now);
        let stream_broke = std::mem::take(&mut call.stream_broke);
        if let Some(i) = index.filter(|_| attempt.number == 1) {
            // Answered in time, or still running when the call's deadline ended it. Only a call's
            // first attempt counts: it had all of the call's time, where a failover starts with
            // what is left. And a deadline shorter than the provider's usual latency is the
            // client's choice, not the provider's slowness: counted, a client asking for answers
            // in 10 ms would move everyone's traffic (as the neutral time-out below, for the
            // breaker).
            let usual = self.loads[i]
                .latency
                .estimate(now)
                .max(self.config.latency_default);
            let ran_out = now >= call.deadline && call.given >= usual;
            match outcome {
                Outcome::Success { .. } => self.health[i].deadline_misses.observe(ran_out),
                Outcome::Failure {
                    class: ErrorClass::Timeout,
                    ..
                }
                | Outcome::Cancelled
                    if ran_out =>
                {
                    self.health[i].deadline_misses.observe(true);
                }
                _ => {}
            }
        }
        match outcome {
            Outcome::Success {
                latency,
                first_token,
                usage,
            } => {
                if let Some(i) = index {
                    self.health[i].refusals.observe(false);
                    if first_token.is_some() {
                        self.health[i].breaks.observe(false);
                    }
                    let felt = first_token.unwrap_or(latency);
                    self.health[i].breaker.observe_answer_time(latency);
                    self.health[i].breaker.on_success(
                        now,
                        felt,
                        attempt.probe,
                        &self.config.breaker,
                        &mut self.rng,
                    );
                    self.loads[i].latency.observe(now, felt);
                    let slowdown = &mut self.health[i].slowdown;
                    match first_token {
                        Some(first_token) => slowdown.observe_stream(now, first_token),
                        None => slowdown.observe_plain(now, latency, usage.output_tokens),
                    }
                    self.health[i]
                        .speed
                        .observe(now, latency, usage.output_tokens);
                    self.answer_length.observe(usage.output_tokens);
                    let cost =
                        self.config.providers[i].cost_usd(usage.input_tokens, usage.output_tokens);
                    let stats = &mut self.stats[i];
                    stats.successes += 1;
                    stats.input_tokens = stats.input_tokens.saturating_add(usage.input_tokens);
                    stats.output_tokens = stats.output_tokens.saturating_add(usage.output_tokens);
                    stats.cost_usd += cost;
                    if self.config.spend.is_some() {
                        let _ = self.spend_reached(now);
                        self.spent_usd += cost;
                    }
                }
                if call.end.is_none() {
                    call.end = Some(Ok(current));
                }
            }
            Outcome::Failure {
                class: ErrorClass::Timeout,
                latency,
                ..
            } if call.client_deadline
                && now >= call.deadline
                && index.is_some_and(|i| {
                    // The usual latency: the estimate, but never below the configured default,
                    // since the estimate decays toward zero while a provider is idle.
                    let usual = self.loads[i]
                        .latency
                        .estimate(now)
                        .max(self.config.latency_default);
                    latency < usual * CLIENT_CUT_FACTOR
                }) =>
            {
                // The client's own deadline ended the attempt before the provider had taken
                // even twice its usual time: that says nothing about the provider. Neutral for
                // health (no breaker failure, no slow call, no latency sample), or a client with
                // a 10 ms deadline could open every breaker for everyone. An attempt that ran
                // past twice the provider's usual latency before the client gave up is evidence
                // of a slow provider, and counts below like any timeout.
                call.last_error = Some(ErrorClass::Timeout);
                if let Some(i) = index {
                    self.stats[i].cut_by_client_deadline += 1;
                    self.health[i].breaker.on_neutral(attempt.probe);
                }
            }
            Outcome::Failure {
                class,
                latency,
                retry_after,
            } => {
                call.last_error = Some(class);
                if let Some(i) = index {
                    self.stats[i].failures[class.index()] += 1;
                    if class == ErrorClass::RateLimited {
                        self.health[i].refusals.observe(true);
                    }
                    if stream_broke {
                        self.health[i].breaks.observe(true);
                    }
                    // A timeout the client's deadline cut short is a lower bound on the
                    // provider's latency, not a sample: feeding it would raise the estimate
                    // that tells the next client-cut timeout apart (above).
                    let censored = class == ErrorClass::Timeout
                        && call.client_deadline
                        && now >= call.deadline;
                    self.apply_failure(i, class, latency, retry_after, attempt.probe, now);
                    if class == ErrorClass::Timeout && !censored {
                        self.loads[i].latency.observe(now, latency);
                        // A timeout says the provider is at least this slow, never faster.
                        let slowdown = &mut self.health[i].slowdown;
                        if attempt.stream {
                            // Only a wait for the first token: a stream that broke after bytes
                            // reached the client (the call needs continuation) is no sample of it.
                            if !call.needs_continuation {
                                slowdown.observe_stream_timeout(now, latency);
                            }
                        } else {
                            slowdown.observe_plain_timeout(
                                now,
                                latency,
                                u64::from(call.output_tokens),
                            );
                        }
                    }
                }
                if matches!(class, ErrorClass::BadRequest)
                    || (class == ErrorClass::ContentFilter
                        && !self.config.retry.content_filter_failover)
                {
                    if call.end.is_none() {
                        let _ = Self::give_up(call, GiveUpReason::NotRetryable(class));
                    }
                } else if let Some(p) = current {
                    match class {
                        ErrorClass::RateLimited => call.rate_limited.insert(p),
                        ErrorClass::Timeout => call.silent.insert(p),
                        ErrorClass::ContextLength => {
                            // Never resent unchanged: this provider is out, and so is any other
                            // whose known window is not larger.
                            call.excluded.insert(p);
                            if let Some(window) = self.config.providers[p.index()].context_window {
                                call.min_context = call.min_context.max(window.saturating_add(1));
                            }
                        }
                        ErrorClass::ContentFilter => call.excluded.insert(p),
                        ErrorClass::Server
                        | ErrorClass::Auth
                        | ErrorClass::Quota
                        | ErrorClass::BadRequest => {}
                    }
                }
            }
            Outcome::Cancelled => {
                if let Some(i) = index {
                    self.stats[i].cancelled += 1;
                    self.health[i].breaker.on_neutral(attempt.probe);
                }
                // Cancelled while its call goes on: a stream's loser, cancelled at the winner's
                // first token. It said nothing of its provider, so the call has not really tried
                // it: if the winner is cut, the continuation may go there as a first attempt
                // (a failover the budget does not charge when the provider has headroom).
                if call.end.is_none() {
                    if let Some(p) = current {
                        call.tried.remove(p);
                    }
                }
            }
        }
        outcome
    }

    /// An attempt whose fallback hedge won (`plain_limit.rs`), cancelled because of that, was
    /// slower than its fallback by all the time the fallback needed: a timeout of its provider,
    /// not a neutral cancel, or a provider that hangs from its first call would never trip its
    /// breaker. Any outcome of the attempt ends its fallback hedge.
    fn overdue_as_timeout(
        call: &mut Call,
        attempt: &Attempt,
        outcome: Outcome,
        now: Instant,
    ) -> Outcome {
        let Some(hedge) = call.fallback_hedge.filter(|f| f.attempt == attempt.number) else {
            return outcome;
        };
        call.fallback_hedge = None;
        // A cancelled attempt is never the one that won (ids may have moved in a reload since).
        // A stream's call has not ended when its drivers cancel the losers: that happens at the
        // winner's first token.
        let won_elsewhere = matches!(call.end, Some(Ok(_))) || (call.stream && call.end.is_none());
        if hedge.hedged && won_elsewhere && outcome == Outcome::Cancelled {
            return Outcome::Failure {
                class: ErrorClass::Timeout,
                latency: now.saturating_since(hedge.sent),
                retry_after: None,
            };
        }
        outcome
    }

    fn apply_failure(
        &mut self,
        i: usize,
        class: ErrorClass,
        latency: Duration,
        retry_after: Option<Duration>,
        probe: Option<ProbeEpoch>,
        now: Instant,
    ) {
        let retry = &self.config.retry;
        // A Retry-After beyond the quota cool-down is a broken header, not a plan.
        let retry_after = retry_after.map(|d| d.min(retry.quota_cooldown));
        let health = &mut self.health[i];
        let cooldown = match class {
            // Without Retry-After, an isolated 429 (`Refusals::repeated`) cools nothing down.
            ErrorClass::RateLimited => match retry_after {
                Some(d) => Some((Cooldown::RateLimited, d)),
                None if health.refusals.repeated() => {
                    Some((Cooldown::RateLimited, retry.rate_limit_cooldown))
                }
                None => None,
            },
            ErrorClass::Auth => Some((Cooldown::Auth, retry.auth_cooldown)),
            ErrorClass::Quota => Some((
                Cooldown::Quota,
                retry.quota_cooldown.max(retry_after.unwrap_or_default()),
            )),
            _ => None,
        };
        if class.is_outage() {
            health
                .breaker
                .on_failure(now, latency, probe, &self.config.breaker, &mut self.rng);
        } else {
            health.breaker.on_neutral(probe);
        }
        if let Some((kind, duration)) = cooldown {
            let until = now + duration;
            // A cool-down never gets shorter, and a rate limit never hides a longer auth/quota one.
            health.cooldown = match health.cooldown {
                Some((old_kind, old_until)) if old_until > now && old_until >= until => {
                    Some((old_kind, old_until))
                }
                _ => Some((kind, until)),
            };
        }
    }
}
