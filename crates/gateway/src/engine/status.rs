//! What the gateway reports about itself: the JSON status of every route and provider, and the
//! Prometheus metrics, refreshed from router state and rendered once for a storm of scrapes.

use super::Gateway;

impl Gateway {
    /// The metrics for a scrape, in both text forms: rendered off the async threads, shared by
    /// every scrape that arrived before the rendering began. `None` when too many scrapes are
    /// already waiting.
    pub async fn metrics_snapshot(&self) -> Option<crate::metrics::Exposition> {
        let _turn = self.shared.scrape_turns.try_acquire().ok()?;
        let asked = std::time::Instant::now();
        let mut last = self.shared.scrape.lock().await;
        if let Some((began, text)) = &*last {
            if *began >= asked {
                return Some(text.clone());
            }
        }
        let began = std::time::Instant::now();
        let gateway = self.clone();
        let text = tokio::task::spawn_blocking(move || gateway.metrics_text())
            .await
            .ok()?;
        *last = Some((began, text.clone()));
        Some(text)
    }

    /// A JSON view of every route and provider: breaker, cool-down, latency, in-flight, counters.
    pub fn status_json(&self) -> serde_json::Value {
        let generation = self.generation();
        let now = self.shared.clock.now();
        let mut routes = serde_json::Map::new();
        for name in &generation.route_names {
            let Some(route) = generation.routes.get(name) else {
                continue;
            };
            let mut state = route.lock();
            let budget = state.router.retry_budget_available(now);
            let policy = state.router.config().policy.as_str();
            let spent = state.router.spent_usd();
            let siblings_spent = state.router.siblings_spent_usd();
            let providers: Vec<serde_json::Value> = state
                .router
                .status(now)
                .into_iter()
                .map(|p| {
                    let breaker = match p.breaker {
                        stilts_core::BreakerState::Open { until } => serde_json::json!({
                            "state": "open",
                            "reopens_in_ms": until.saturating_since(now).as_millis() as u64,
                        }),
                        other => serde_json::json!({ "state": other.as_str() }),
                    };
                    serde_json::json!({
                        "name": p.name,
                        "breaker": breaker,
                        "breaker_trips": p.breaker_trips,
                        "cooldown": p.cooldown.map(|(kind, until)| serde_json::json!({
                            "kind": format!("{kind:?}").to_lowercase(),
                            "remaining_ms": until.saturating_since(now).as_millis() as u64,
                        })),
                        "in_flight": p.in_flight,
                        "latency_ms": p.latency.as_secs_f64() * 1e3,
                        "attempts": p.stats.attempts,
                        "cut_by_client_deadline": p.stats.cut_by_client_deadline,
                        "free_failovers": p.stats.free_failovers,
                        "panic_sends": p.stats.panic_sends,
                        "successes": p.stats.successes,
                        "failures": stilts_core::ErrorClass::ALL.iter()
                            .map(|c| (c.as_str().to_owned(), serde_json::json!(p.stats.failures[c.index()])))
                            .collect::<serde_json::Map<_, _>>(),
                        "input_tokens": p.stats.input_tokens,
                        "output_tokens": p.stats.output_tokens,
                        "cost_usd": p.stats.cost_usd,
                    })
                })
                .collect();
            drop(state);
            routes.insert(
                name.clone(),
                serde_json::json!({
                    "policy": policy,
                    "retry_budget_available": budget,
                    "spent_usd": spent,
                    "siblings_spent_usd": siblings_spent,
                    "providers": providers,
                }),
            );
        }
        serde_json::json!({ "routes": routes })
    }

    /// Refreshes the gauges that mirror router state, then encodes every metric in both text
    /// forms.
    pub fn metrics_text(&self) -> crate::metrics::Exposition {
        // One render at a time: a render orphaned by a scraper that left (its blocking task runs
        // on) must not clear the gauges while another encodes them.
        let _one_render = self
            .shared
            .render
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &self.shared.metrics;
        m.breaker.clear();
        m.breaker_trips.clear();
        m.in_flight.clear();
        m.latency.clear();
        m.retry_budget.clear();
        let mut faults =
            std::collections::BTreeMap::<String, stilts_plugin::host::PluginFaults>::new();
        for plugin in self.shared.plugins.loaded() {
            let f = plugin.faults();
            let sum = faults.entry(plugin.describe().name.clone()).or_default();
            sum.panics += f.panics;
            sum.contract_violations += f.contract_violations;
            sum.slow_calls += f.slow_calls;
        }
        for (plugin, f) in faults {
            for (kind, count) in [
                ("panic", f.panics),
                ("contract", f.contract_violations),
                ("slow", f.slow_calls),
            ] {
                let labels = crate::metrics::PluginFaultLabels {
                    plugin: plugin.clone(),
                    kind: kind.to_owned(),
                };
                m.plugin_faults
                    .get_or_create(&labels)
                    .inner()
                    .store(count, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            m.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let generation = self.generation();
        let now = self.shared.clock.now();
        for name in &generation.route_names {
            let Some(route) = generation.routes.get(name) else {
                continue;
            };
            let mut state = route.lock();
            m.retry_budget
                .get_or_create(&crate::metrics::RouteLabels {
                    route: name.clone(),
                })
                .set(state.router.retry_budget_available(now));
            for p in state.router.status(now) {
                let labels = crate::metrics::ProviderLabels {
                    route: name.clone(),
                    provider: p.name.clone(),
                };
                let code = match p.breaker {
                    stilts_core::BreakerState::Closed => 0,
                    stilts_core::BreakerState::HalfOpen { .. } => 1,
                    stilts_core::BreakerState::Open { .. } => 2,
                };
                m.breaker.get_or_create(&labels).set(code);
                m.breaker_trips
                    .get_or_create(&labels)
                    .set(i64::try_from(p.breaker_trips).unwrap_or(i64::MAX));
                m.in_flight
                    .get_or_create(&labels)
                    .set(i64::from(p.in_flight));
                m.latency
                    .get_or_create(&labels)
                    .set(p.latency.as_secs_f64());
            }
        }
        m.encode()
    }
}
