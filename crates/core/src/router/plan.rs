//! The decision path: what a call does next (send, wait, hedge or give up), which provider gets
//! its attempt (preference tiers, spill, panic routing, rate limits worth waiting for), and what
//! sending it charges.

use super::call::FallbackHedge;
use super::{
    Blocked, Call, Cooldown, Decision, GiveUpReason, Health, PANIC_MIN_ANSWERED, Router, SendKind,
    nanos,
};
use crate::attempt::Attempt;
use crate::class::ErrorClass;
use crate::policy::PolicyView;
use crate::provider::{ProviderId, ProviderSet};
use crate::time::Instant;
use std::time::Duration;

impl Router {
    /// The next thing to do for `call` at `now`.
    pub fn next_attempt(&mut self, call: &mut Call, now: Instant) -> Decision {
        self.sync(call);
        match call.end {
            Some(Ok(provider)) => return Decision::Done { provider },
            Some(Err(give_up)) => return Decision::GiveUp(give_up),
            None => {}
        }
        if now >= call.deadline {
            return Self::give_up(call, GiveUpReason::Deadline);
        }
        // Attempts in flight: a hedge may be due. Unless only probes already hedged are left (their
        // hedge failed): the user must not wait out a probe, so the call goes on as if idle.
        let only_hedged_probes = call.probe_hedged
            && call.in_flight == u32::try_from(call.probes_out.len()).unwrap_or(0);
        // Likewise when only a plain attempt whose fallback hedge went out (and failed) is left:
        // the call goes on elsewhere while it runs, as a cut would have let it.
        let only_overdue = call.fallback_hedge.is_some_and(|f| f.hedged) && call.in_flight == 1;
        let go_on = only_hedged_probes || only_overdue;
        if call.in_flight > 0 && !go_on {
            return self.plan_hedge(call, now);
        }
        let decision = self.plan_next(call, now);
        if go_on && call.in_flight > 0 {
            if let Decision::GiveUp(_) = decision {
                // Nothing else to try: the probe still running is the call's last chance.
                call.end = None;
                return Decision::Pending;
            }
        }
        decision
    }

    /// The next attempt of a call with nothing in flight to wait for (or only probes whose hedge
    /// failed): a wait, a send, or the end.
    fn plan_next(&mut self, call: &mut Call, now: Instant) -> Decision {
        if now < call.wait_until {
            return Decision::Wait {
                until: call.wait_until,
            };
        }
        if call.attempts >= self.config.max_attempts {
            return Self::give_up(call, GiveUpReason::AttemptsExhausted);
        }
        let (usable, blocked) = self.available(call, now);
        let mut available = usable;
        // A provider that is only cooling down from a 429 it will soon be over is worth waiting
        // for (`nothing_available`); else, with nothing available, panic routing.
        let rate_limit_soon = blocked.rate_limited
            && blocked.soonest_rate_limit_end.is_some_and(|until| {
                until <= now + self.config.retry.rate_limit_wait_max && until < call.deadline
            });
        if available.is_empty() && !rate_limit_soon {
            available = self.panic_set(&blocked);
        }

        // A preferred provider that answered 429 with a short Retry-After may be worth waiting for
        // rather than falling to a lower tier.
        let untried = available.minus(call.tried);
        let best_untried = self.best_preference(untried);
        if let Some((until, p)) =
            self.rate_limited_worth_waiting(call, available, blocked.cooling, best_untried, now)
        {
            if until > now {
                if !self.retry_affordable(call, now) {
                    return Self::give_up(call, GiveUpReason::BudgetExhausted);
                }
                call.wait_until = until;
                return Decision::Wait { until };
            }
            // Unless the call just waited out its cool-down: a full-jitter backoff first, as before
            // any retry of a provider the call tried (an isolated 429 without Retry-After cools
            // nothing down, and a retry at once would be the hammer a 429 asks to stop).
            let waited = call.wait_until > call.last_send;
            if !waited {
                if let Some(wait) = self.backoff_first(call, now) {
                    return wait;
                }
            }
            call.rate_limited.remove(p);
            // Waited out once; if it says 429 again, fall to the next tier.
            call.waited_out.insert(p);
            return self.send(call, p, SendKind::Plain, usable, now);
        }

        if let Some(p) = self.preferred_worth_retrying(call, available, best_untried, now) {
            if let Some(wait) = self.backoff_first(call, now) {
                return wait;
            }
            call.same_provider_retries += 1;
            return self.send(call, p, SendKind::Plain, usable, now);
        }

        let provider = if !untried.is_empty() {
            self.choose(untried, call, now)
        } else {
            let tried = available.and(call.tried);
            let loud = tried.minus(call.silent);
            let candidates = if loud.is_empty() { tried } else { loud };
            // A retry goes to a provider not known to fail most of its calls when there is one:
            // the one failing most of its calls most likely fails the retry too.
            let answering: ProviderSet = candidates
                .iter()
                .filter(|p| !self.health[p.index()].breaker.fails_most(now))
                .collect();
            // Among those, to one the call tried only once: a provider that failed this call
            // twice (its quick retry too) though its window says it answers is failing now (a
            // flap's onset), and the other's single failure is more likely isolated. Where the
            // windows say the providers fail most calls, a second failure is what they said:
            // the call's own count tells nothing new, and preference decides.
            let candidates = if answering.is_empty() {
                candidates
            } else {
                let once = answering.minus(call.retried);
                if once.is_empty() { answering } else { once }
            };
            if candidates.is_empty() {
                return self.nothing_available(call, &blocked, now);
            }
            let first_visit = !call.backoff_served;
            let wait = self.backoff_first(call, now);
            if first_visit {
                call.same_provider_retries += 1;
            }
            if let Some(wait) = wait {
                return wait;
            }
            self.choose(candidates, call, now)
        };
        match provider {
            Some(p) => self.send(call, p, SendKind::Plain, usable, now),
            None => self.nothing_available(call, &blocked, now),
        }
    }

    /// Before retrying a provider the call already tried: one full-jitter backoff per retry
    /// (`same_provider_retries` sets its size). `Some` is the wait, or the give-up when the budget
    /// could not pay for the retry after it; `None`: send now.
    fn backoff_first(&mut self, call: &mut Call, now: Instant) -> Option<Decision> {
        if call.backoff_served {
            return None;
        }
        call.backoff_served = true;
        let delay = self.backoff(call.same_provider_retries);
        let until = now + delay;
        if delay > Duration::ZERO && until < call.deadline {
            if !self.retry_affordable(call, now) {
                return Some(Self::give_up(call, GiveUpReason::BudgetExhausted));
            }
            call.wait_until = until;
            return Some(Decision::Wait { until });
        }
        None
    }

    /// The preferred provider, when it deserves a quick retry before a lower tier: it is the
    /// best tier among the available providers, better than every untried one, this call tried it
    /// and it failed loudly (not a timeout: a silent provider costs a whole wait; not a 429, whose
    /// own rule decides), its breaker is closed and it still answers most of its calls (a retry
    /// is more likely than not to succeed, at the preferred tier's price), the call has retries
    /// of it left (`retry.preferred_retries`), and the budget can pay for the retry (else the
    /// free failover to a provider with headroom is the better use).
    fn preferred_worth_retrying(
        &mut self,
        call: &Call,
        available: ProviderSet,
        best_untried: Option<u64>,
        now: Instant,
    ) -> Option<ProviderId> {
        if call.same_provider_retries >= self.config.retry.preferred_retries {
            return None;
        }
        let best = self.best_preference(available)?;
        if best_untried.is_some_and(|u| u <= best) {
            return None;
        }
        let p = available
            .and(call.tried)
            .minus(call.silent)
            .minus(call.rate_limited)
            .minus(call.waited_out)
            .iter()
            .find(|p| self.preference(*p) == best)?;
        if !self.health[p.index()].breaker.mostly_answers(now) || !self.retry_affordable(call, now)
        {
            return None;
        }
        Some(p)
    }

    fn plan_hedge(&mut self, call: &mut Call, now: Instant) -> Decision {
        if call.probing
            && !call.probe_hedged
            && self.config.hedge_probes
            && call.attempts < self.config.max_attempts
        {
            // The user's request went out as a probe of a provider that may still be down: hedge
            // it at once, so the user is answered either way. The probe runs to its end (see
            // `Attempt::is_probe`) and decides the breaker. Charged as the failover it replaces.
            call.probe_hedged = true;
            let (available, _) = self.available(call, now);
            let untried = available.minus(call.tried);
            if let Some(p) = self.choose(untried, call, now) {
                return self.send(call, p, SendKind::ProbeHedge, available, now);
            }
        }
        if call.hedged || call.attempts >= self.config.max_attempts {
            return Decision::Pending;
        }
        // The configured hedge after a delay of silence, or the fallback hedge of a plain attempt
        // whose provider is not measured yet (`plain_limit.rs`), whichever comes first.
        let configured = self.config.hedge_delay.map(|delay| call.last_send + delay);
        let fallback = call.fallback_hedge.filter(|f| !f.hedged).map(|f| f.at);
        let Some(at) = [configured, fallback].into_iter().flatten().min() else {
            return Decision::Pending;
        };
        if at >= call.deadline {
            return Decision::Pending;
        }
        if now < at {
            return Decision::Hedge { at };
        }
        if let Some(f) = call.fallback_hedge.as_mut() {
            let due = !f.hedged && f.at <= now;
            let trouble_only_until = f.trouble_only_until.filter(|&until| now < until);
            if let Some(until) = trouble_only_until.filter(|_| {
                due && configured.is_none_or(|c| c > now) && self.shows_no_trouble(f.provider, now)
            }) {
                // The provider shows no trouble: a long answer, most likely. Look again later,
                // and no later than the attempt outlasts a healthy answer there.
                f.at = (now + FALLBACK_RECHECK).min(until);
                let next = configured.map_or(f.at, |c| c.min(f.at));
                return if next < call.deadline {
                    Decision::Hedge { at: next }
                } else {
                    Decision::Pending
                };
            }
        }
        let for_fallback = fallback.is_some_and(|due| due <= now);
        let (available, _) = self.available(call, now);
        let untried = available.minus(call.tried);
        let Some(p) = self.choose(untried, call, now) else {
            return self.recheck_fallback(call, for_fallback, now);
        };
        let kind = if for_fallback {
            SendKind::FallbackHedge
        } else {
            SendKind::Hedge
        };
        match self.send(call, p, kind, available, now) {
            Decision::Send(attempt) => {
                call.hedged = true;
                if let Some(f) = call.fallback_hedge.as_mut().filter(|_| for_fallback) {
                    f.hedged = true;
                }
                Decision::Send(attempt)
            }
            Decision::Pending => self.recheck_fallback(call, for_fallback, now),
            other => other,
        }
    }

    /// A fallback hedge that is due but could not go out now (no fallback available, or the
    /// retry budget refused it): look again a moment later, while the fallback would still have
    /// the cold floor of twice `latency.default_ms` before the deadline. At a spike's onset an
    /// idle fallback takes one free attempt at a time until it answers, and the budget is spent
    /// on the rest, so a refusal is often over within a second or two; without a second look the
    /// call waited for its stuck attempt to run into the deadline. A later hedge would leave the
    /// fallback too little time to be worth a token of the budget.
    fn recheck_fallback(&self, call: &mut Call, for_fallback: bool, now: Instant) -> Decision {
        let at = now + FALLBACK_RECHECK;
        let cold_floor = self.cold_floor();
        match call.fallback_hedge.as_mut() {
            Some(f) if for_fallback && at + cold_floor <= call.deadline => {
                f.at = at;
                Decision::Hedge { at }
            }
            _ => Decision::Pending,
        }
    }

    /// Picks from `candidates` within the best preference tier, or within the next one for the
    /// share of traffic the best tier's slowdown spills (`spill_tier`).
    fn choose(&mut self, candidates: ProviderSet, call: &Call, now: Instant) -> Option<ProviderId> {
        let best = self.best_preference(candidates)?;
        let tier: ProviderSet = if candidates.iter().all(|p| self.preference(p) == best) {
            candidates
        } else {
            let tier = self.tier(candidates, best);
            self.spill_tier(candidates, tier, call, now).unwrap_or(tier)
        };
        let tier = self.shun_deadline_misses(tier);
        let tier = self.fit_time_left(tier, call, now);
        let view = PolicyView {
            now,
            providers: &self.config.providers,
            loads: &self.loads,
            input_tokens: u64::from(call.input_tokens),
            output_tokens: self.answer_length.expected(u64::from(call.output_tokens)),
        };
        self.policy.pick(tier, &view, &mut self.rng)
    }

    /// The providers of `candidates` in tier `preference`.
    fn tier(&self, candidates: ProviderSet, preference: u64) -> ProviderSet {
        candidates
            .iter()
            .filter(|p| self.preference(*p) == preference)
            .collect()
    }

    /// When every provider of the best tier answers much slower than usual (queueing behind its
    /// capacity, or a brownout), the next tier, for a share of the traffic that grows with the
    /// slowdown (`slowdown.rs`): a saturated tier is relieved instead of piled on, and requests
    /// stop running into their deadlines there. A `stream` call also spills for the tier's
    /// broken streams (`breaks.rs`), and any call for nearly all of it when the route's long
    /// answers would miss the call's deadline there but not in the next tier
    /// ([`Router::misses_deadline`]). Only toward a tier that would itself spill less.
    fn spill_tier(
        &mut self,
        candidates: ProviderSet,
        tier: ProviderSet,
        call: &Call,
        now: Instant,
    ) -> Option<ProviderSet> {
        let spill_of = |set: ProviderSet, health: &[Health]| {
            set.iter()
                .map(|p| health[p.index()].spill(call.stream))
                .fold(f64::INFINITY, f64::min)
        };
        let rest = candidates.minus(tier);
        let next = self.tier(rest, self.best_preference(rest)?);
        let mut spill = spill_of(tier, &self.health);
        if self.misses_deadline(tier, next, call.deadline.saturating_since(now), now) {
            spill = spill.max(DEADLINE_SPILL);
        }
        if spill <= 0.0 || !spill.is_finite() {
            return None;
        }
        if spill_of(next, &self.health) >= spill || self.rng.unit() >= spill {
            return None;
        }
        Some(next)
    }

    /// Lower is preferred. Under `priority` the config order ranks providers of the same tier.
    fn preference(&self, p: ProviderId) -> u64 {
        self.preferences[p.index()]
    }

    fn best_preference(&self, set: ProviderSet) -> Option<u64> {
        set.iter().map(|p| self.preference(p)).min()
    }

    fn rate_limited_worth_waiting(
        &self,
        call: &Call,
        available: ProviderSet,
        cooling: ProviderSet,
        best_untried: Option<u64>,
        now: Instant,
    ) -> Option<(Instant, ProviderId)> {
        let wait_max = self.config.retry.rate_limit_wait_max;
        let mut best: Option<(u64, Instant, ProviderId)> = None;
        for p in call.rate_limited.minus(call.waited_out).iter() {
            let until = if available.contains(p) {
                now
            } else if cooling.contains(p) {
                match self.health[p.index()].cooldown {
                    Some((Cooldown::RateLimited, until))
                        if until <= now + wait_max && until < call.deadline =>
                    {
                        until
                    }
                    _ => continue,
                }
            } else {
                continue;
            };
            let pref = self.preference(p);
            if best_untried.is_some_and(|b| pref >= b) {
                continue;
            }
            // A provider answering much slower than usual (or, for a stream, breaking its
            // streams) is having its traffic spilled: not worth a wait on top of its slowness
            // (the wait plus a slowed answer can miss the deadline that the next tier would meet).
            if self.health[p.index()].spill(call.stream) > 0.0 {
                continue;
            }
            // Nor one that lately refused most of its calls: the wait would likely end in
            // another 429, where the next tier most likely answers.
            if self.health[p.index()].refusals.mostly_refuses() {
                continue;
            }
            if best.is_none_or(|(bp, bu, _)| (pref, until) < (bp, bu)) {
                best = Some((pref, until, p));
            }
        }
        best.map(|(_, until, p)| (until, p))
    }

    fn nothing_available(&mut self, call: &mut Call, blocked: &Blocked, now: Instant) -> Decision {
        if blocked.rate_limited {
            if let Some(until) = blocked.soonest_rate_limit_end {
                if until <= now + self.config.retry.rate_limit_wait_max
                    && until < call.deadline
                    && self.retry_affordable(call, now)
                {
                    call.wait_until = until;
                    return Decision::Wait { until };
                }
            }
        }
        let reason = match call.last_error {
            Some(class @ (ErrorClass::ContextLength | ErrorClass::ContentFilter)) => {
                GiveUpReason::NotRetryable(class)
            }
            _ if blocked.context && !blocked.unhealthy && !blocked.rate_limited => {
                GiveUpReason::ContextTooLong
            }
            _ if blocked.rate_limited && !blocked.unhealthy => GiveUpReason::AllRateLimited,
            _ if blocked.spend && !blocked.unhealthy => GiveUpReason::SpendLimit,
            _ => GiveUpReason::NoHealthyProvider,
        };
        Self::give_up(call, reason)
    }

    /// Panic routing (Envoy's panic threshold is the model): when every provider is kept out by
    /// its breaker alone, a router that gives up answers less than "just try the primary" would,
    /// though an open breaker may guard a provider that still answers most calls. So the call is
    /// routed as if the breakers of the providers that still answer at least a quarter of their
    /// calls (as each breaker last knew: the window's share at the trip, moved by every later
    /// outcome) were closed: untried first, then retries with backoff, each charged to the budget
    /// as any other. One that answers (nearly) nothing would only add a wait. Providers cooling
    /// down (429, auth, quota), too small for the request, over the spend limit or excluded for
    /// the call never get panic traffic. The breakers are unchanged: a panic attempt is not a
    /// probe, and a breaker still closes only through its probes.
    fn panic_set(&self, blocked: &Blocked) -> ProviderSet {
        let mut set = ProviderSet::EMPTY;
        for p in blocked.breaker_only.iter() {
            let answers = self.health[p.index()]
                .breaker
                .answered_share()
                .is_some_and(|r| r >= PANIC_MIN_ANSWERED);
            if answers {
                set.insert(p);
            }
        }
        set
    }

    /// Whether the budget could pay for the call's next attempt (free for a first attempt).
    fn retry_affordable(&mut self, call: &Call, now: Instant) -> bool {
        call.attempts == 0 || self.budget.available(now) >= 1.0
    }

    fn backoff(&mut self, retries: u32) -> Duration {
        let retry = &self.config.retry;
        let ceiling = retry
            .backoff_base
            .saturating_mul(1u32 << retries.min(20))
            .min(retry.backoff_max);
        Duration::from_nanos((nanos(ceiling) as f64 * self.rng.unit()) as u64)
    }

    /// The providers usable for `call` at `now`, and why the others are not.
    fn available(&mut self, call: &Call, now: Instant) -> (ProviderSet, Blocked) {
        let mut blocked = Blocked::default();
        let spend_reached = self.spend_reached(now);
        let needed_context = call
            .input_tokens
            .saturating_add(call.output_tokens)
            .max(call.min_context);
        let mut set = ProviderSet::EMPTY;
        // Never a second attempt where the call keeps one running while it goes on elsewhere: its
        // probes, and a plain attempt whose fallback hedge went out.
        let mut kept = call.probes_out;
        if let Some(f) = call.fallback_hedge.filter(|f| f.hedged) {
            kept.insert(f.provider);
        }
        for p in self.all.minus(call.excluded).minus(kept).iter() {
            let i = p.index();
            let settings = &self.config.providers[i];
            if call.needs_continuation && !settings.prefill_continuation {
                continue;
            }
            if settings.context_window.is_some_and(|w| w < needed_context) {
                blocked.context = true;
                continue;
            }
            if spend_reached && !settings.is_free() {
                blocked.spend = true;
                continue;
            }
            let health = &mut self.health[i];
            // A half-open probe rides on a call's first attempt, which has the other providers
            // left to hedge it to: a call that already failed does not spend its next attempt
            // on a provider that is likely still down (unless nothing else is left: panic
            // routing).
            let admits = health.breaker.admits(now, &self.config.breaker);
            if admits.is_none() || (call.attempts > 0 && admits.flatten().is_some()) {
                blocked.unhealthy = true;
                if health.cooldown.is_none_or(|(_, until)| now >= until) {
                    blocked.breaker_only.insert(p);
                }
                continue;
            }
            if let Some((kind, until)) = health.cooldown {
                if now < until {
                    if kind == Cooldown::RateLimited {
                        // Usable once the cool-down ends: a candidate to wait for.
                        blocked.rate_limited = true;
                        blocked.cooling.insert(p);
                        blocked.soonest_rate_limit_end = Some(
                            blocked
                                .soonest_rate_limit_end
                                .map_or(until, |s| s.min(until)),
                        );
                    } else {
                        blocked.unhealthy = true;
                    }
                    continue;
                }
                health.cooldown = None;
            }
            let tokens_needed = u64::from(call.input_tokens) + u64::from(call.output_tokens);
            if let Some(reset) = health.quota.blocks(tokens_needed, now) {
                // The provider said it is out of this: skipped as a local limit skips, and
                // worth waiting for when nothing else is available.
                blocked.rate_limited = true;
                blocked.soonest_rate_limit_end = Some(
                    blocked
                        .soonest_rate_limit_end
                        .map_or(reset, |s| s.min(reset)),
                );
                continue;
            }
            if let Some(minute) = &mut health.minute {
                let [requests, tokens] = minute.totals(now);
                let [requests, tokens] = [
                    requests.saturating_add(health.siblings_minute[0]),
                    tokens.saturating_add(health.siblings_minute[1]),
                ];
                let tokens_needed = u64::from(call.input_tokens) + u64::from(call.output_tokens);
                if settings
                    .requests_per_minute
                    .is_some_and(|rpm| requests >= u64::from(rpm))
                    || settings
                        .tokens_per_minute
                        .is_some_and(|tpm| tokens.saturating_add(tokens_needed) > tpm)
                {
                    blocked.rate_limited = true;
                    continue;
                }
            }
            set.insert(p);
        }
        (set, blocked)
    }

    /// Sends an attempt of `call` to `p`; `usable` is the set of providers this decision found
    /// available (before panic routing), the fallbacks a plain attempt's limit leaves time for.
    fn send(
        &mut self,
        call: &mut Call,
        p: ProviderId,
        kind: SendKind,
        usable: ProviderSet,
        now: Instant,
    ) -> Decision {
        let is_hedge = kind != SendKind::Plain;
        // The budget protects a struggling provider from extra load. A failover to a provider this
        // call has not tried, whose breaker is closed and at most a tenth of whose recent calls
        // failed (`has_headroom`), adds
        // load only where there is headroom: it is free, or a spike would keep requests away from
        // an idle, healthy fallback (as Envoy's per-cluster budgets charge the cluster that
        // receives the retry). Retries of a tried provider, hedges and failovers to a failing
        // provider are charged.
        let free_failover =
            kind != SendKind::Hedge && !call.tried.contains(p) && self.vouched_for(p, now);
        if call.attempts > 0 && !free_failover && !self.budget.try_withdraw(now) {
            if is_hedge {
                return Decision::Pending;
            }
            return Self::give_up(call, GiveUpReason::BudgetExhausted);
        }
        let i = p.index();
        let limits = self.attempt_limits(call, p, usable, now);
        let pace_probe = kind == SendKind::Plain
            && self.config.hedge_probes
            && self.pace_probe(call, p, usable, now);
        let settings = &self.config.providers[i];
        let health = &mut self.health[i];
        let admitted = health.breaker.admits(now, &self.config.breaker);
        let probe = admitted.flatten();
        health.breaker.on_send(probe);
        let pace_probe = pace_probe && probe.is_none();
        if probe.is_some() || pace_probe {
            call.probing = true;
            call.probes_out.insert(p);
        }
        health
            .quota
            .spend(u64::from(call.input_tokens) + u64::from(call.output_tokens));
        if let Some(minute) = &mut health.minute {
            minute.add(
                now,
                [
                    1,
                    u64::from(call.input_tokens) + u64::from(call.output_tokens),
                ],
            );
        }
        self.loads[i].in_flight += 1;
        let stats = &mut self.stats[i];
        stats.attempts += 1;
        stats.hedges += u64::from(is_hedge);
        stats.free_failovers += u64::from(free_failover && call.attempts > 0);
        // Past its breaker: only panic routing sends there.
        stats.panic_sends += u64::from(admitted.is_none());
        if call.tried.contains(p) {
            call.retried.insert(p);
        }
        call.tried.insert(p);
        call.attempts += 1;
        call.in_flight += 1;
        call.last_send = now;
        // A probe is hedged at once already (unless `hedge.probes` is off); a hedge, and an
        // attempt sent while a hedged one still runs (a call hedges once), keep the fallback hedge
        // of the attempt it was for.
        if kind == SendKind::Plain && !call.fallback_hedge.is_some_and(|f| f.hedged) {
            let probe_hedged = (probe.is_some() || pace_probe) && self.config.hedge_probes;
            call.fallback_hedge =
                limits
                    .hedge_after
                    .filter(|_| !probe_hedged)
                    .map(|after| FallbackHedge {
                        attempt: call.attempts,
                        provider: p,
                        sent: now,
                        at: now + after,
                        hedged: false,
                        trouble_only_until: limits.hedge_on_trouble_until.map(|until| now + until),
                    });
        }
        call.backoff_served = false;
        Decision::Send(Attempt {
            provider: p,
            number: call.attempts,
            is_hedge,
            deadline: (now + settings.timeouts.attempt).min(call.deadline),
            timeouts: limits.timeouts,
            provider_uid: self.uids[i],
            probe,
            pace_probe,
            stream: call.stream,
            by_call: call.deadline <= now + settings.timeouts.attempt,
        })
    }

    /// Whether an attempt of `call` sent to `p` is a pace probe: `p`'s tier would miss the call's
    /// deadline on the route's long answers while a tier of `usable` the call has not tried would
    /// not ([`Router::misses_deadline`]). Such a tier keeps only the share of traffic its spill
    /// leaves it, to stay measured; that share is hedged at once to the faster tier, as a
    /// half-open probe is, so the user is answered by whichever comes first, and the probe runs to
    /// its end, measuring the pace either way. Not a stream call when the faster tier breaks more
    /// streams than `p`'s (the call is where the break spill sent it).
    fn pace_probe(&self, call: &Call, p: ProviderId, usable: ProviderSet, now: Instant) -> bool {
        let preference = self.preference(p);
        let mut tier = self.tier(usable, preference);
        tier.insert(p);
        let rest = usable.minus(call.tried).minus(tier);
        let Some(next) = self.best_preference(rest).map(|best| self.tier(rest, best)) else {
            return false;
        };
        // For a stream, a faster tier that breaks more streams is no way out: hedged at once,
        // its first token would win the race most often, and its break would leave a
        // continuation too little time (its pace does not show its breaks).
        let breaks_of = |set: ProviderSet| {
            set.iter()
                .map(|p| self.health[p.index()].breaks.spill())
                .fold(f64::INFINITY, f64::min)
        };
        if call.stream && breaks_of(next) > breaks_of(tier) {
            return false;
        }
        self.misses_deadline(tier, next, call.deadline.saturating_since(now), now)
    }

    /// Whether `p` shows none of the trouble a plain attempt's fallback hedge waits for
    /// (`FallbackHedge::trouble_only_until`): its breaker has headroom, and it answers about as
    /// fast as usual (`slowdown.rs`). A provider queueing behind its capacity, or in a brownout,
    /// answers slower long before its breaker sees a failure, and an attempt already in its
    /// queue is not helped by the spill that keeps new calls away.
    fn shows_no_trouble(&mut self, p: ProviderId, now: Instant) -> bool {
        let health = &mut self.health[p.index()];
        health.breaker.has_headroom(now) && health.slowdown.spill() == 0.0
    }

    /// Whether `p` has room for one more attempt free of the retry budget: its breaker shows
    /// headroom, and its recent successes vouch for every attempt already in flight there (an
    /// idle provider takes one at a time until it answers). Without the second rule, attempts sent
    /// concurrently before any outcome of a failing provider came back were all free.
    fn vouched_for(&mut self, p: ProviderId, now: Instant) -> bool {
        let breaker = &mut self.health[p.index()].breaker;
        breaker.has_headroom(now)
            && u64::from(self.loads[p.index()].in_flight) <= breaker.recent_successes(now)
    }
}

/// How often a plain attempt's fallback hedge that waits for its provider to show trouble looks
/// again (`FallbackHedge::trouble_only_until`).
pub(super) const FALLBACK_RECHECK: Duration = Duration::from_secs(1);

/// The share of a tier's traffic spilled when the route's long answers would miss their
/// deadline there (the rest keeps the tier measured, so the traffic comes back when it is fast).
const DEADLINE_SPILL: f64 = 0.99;
