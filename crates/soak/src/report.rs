//! The gateway config the soak serves, the checks of a finished run and its report.

use crate::load::{LATE_GRACE, Tally};
use crate::watch::{Sample, mean_in, min_in, sum_by_label};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

/// A resource may grow by this share between the first cycle after warm-up and the last.
const FLAT_SHARE: f64 = 0.10;
/// ... or by this many, for counts too small for a share to mean anything (a few descriptors).
const FLAT_FLOOR: f64 = 16.0;

/// The gateway config of rewrite `generation` (0 at start): three routes over the fake upstreams
/// `urls` (a, b, c). Each rewrite swaps the `spread` weights, a change the reload must apply.
pub fn gateway_config(
    listen: SocketAddr,
    urls: &[String],
    deadline: Duration,
    generation: u64,
) -> String {
    let url = |i: usize| urls.get(i).cloned().unwrap_or_default();
    let (wb, wc) = if generation % 2 == 0 { (2, 1) } else { (1, 2) };
    let d = deadline.as_millis();
    format!(
        r#"# stilts-soak config, rewrite {generation}
[server]
listen = "{listen}"
reload_poll_ms = 200
shutdown_grace_ms = 5000

[routes.chat.router]
policy = "priority"
deadline_ms = {d}

[[routes.chat.deployments]]
name = "a"
plugin = "openai"
base_url = "{a}"
model = "soak-a"

[[routes.chat.deployments]]
name = "b"
plugin = "openai"
base_url = "{b}"
model = "soak-b"
priority = 1

[[routes.chat.deployments]]
name = "c"
plugin = "openai"
base_url = "{c}"
model = "soak-c"
priority = 2

[routes.spread.router]
policy = "weighted"
deadline_ms = {d}

[[routes.spread.deployments]]
name = "b"
plugin = "openai"
base_url = "{b}"
model = "soak-b"
weight = {wb}

[[routes.spread.deployments]]
name = "c"
plugin = "openai"
base_url = "{c}"
model = "soak-c"
weight = {wc}

[routes.claude.router]
policy = "priority"
deadline_ms = {d}

[[routes.claude.deployments]]
name = "c-anthropic"
plugin = "anthropic"
base_url = "{c}"
model = "claude-soak"

[[routes.claude.deployments]]
name = "a"
plugin = "openai"
base_url = "{a}"
model = "soak-a"
priority = 1
"#,
        a = url(0),
        b = url(1),
        c = url(2),
    )
}

/// Everything a finished run measured.
pub struct Run {
    /// Requests per second asked.
    pub rate: u32,
    /// Load duration asked.
    pub duration: Duration,
    /// Until the last answer.
    pub load_time: Duration,
    /// The fault cycle.
    pub cycle: Duration,
    /// Each request's deadline.
    pub deadline: Duration,
    /// Config rewrites done.
    pub rewrites: u64,
    /// The client's count.
    pub tally: Tally,
    /// The final `/metrics`.
    pub metrics: String,
    /// The gateway's resources, a sample a second.
    pub samples: Vec<Sample>,
    /// The gateway's log (JSON lines).
    pub log: String,
    /// How the gateway exited on SIGTERM (`None`: it had to be killed).
    pub exit: Option<std::process::ExitStatus>,
    /// CPU used during the load.
    pub cpu: crate::Cpu,
}

/// How a resource's samples over one cycle are summed up for the flatness checks.
#[derive(Clone, Copy, Debug)]
enum Summary {
    /// Their mean.
    Mean,
    /// Their fewest: what stays held through the quietest moment of the cycle.
    LowWater,
}

impl Summary {
    fn name(self) -> &'static str {
        match self {
            Summary::Mean => "mean",
            Summary::LowWater => "low-water mark",
        }
    }

    fn of(
        self,
        samples: &[Sample],
        from: Duration,
        to: Duration,
        read: fn(&Sample) -> u64,
    ) -> Option<f64> {
        match self {
            Summary::Mean => mean_in(samples, from, to, read),
            Summary::LowWater => min_in(samples, from, to, read).map(|v| v as f64),
        }
    }
}

/// One check of the run.
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers behind it.
    pub detail: String,
}

fn check(name: &str, passed: bool, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        passed,
        detail,
    }
}

impl Run {
    /// Every check, in report order.
    pub fn checks(&self) -> Vec<Check> {
        let t = &self.tally;
        let mut checks = vec![
            check(
                "every request ended in an answer or a clear error",
                t.lost == 0 && t.skipped == 0 && t.sent > 0,
                format!(
                    "{} sent, {} answered, {} clear errors, {} lost, {} not sent (generator behind)",
                    t.sent,
                    t.answered,
                    t.clear_errors(),
                    t.lost,
                    t.skipped
                ),
            ),
            check(
                "every request ended within its deadline",
                t.late == 0,
                format!(
                    "{} ended later than the deadline ({} ms) plus {} ms; the latest {} ms past it",
                    t.late,
                    self.deadline.as_millis(),
                    LATE_GRACE.as_millis(),
                    t.worst_overrun_ms
                ),
            ),
        ];
        let outcomes = sum_by_label(&self.metrics, "stilts_requests_total", "outcome");
        let gateway_ok = outcomes.get("ok").copied().unwrap_or(0.0) as u64;
        let gateway_failed = outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "ok")
            .map(|(_, v)| *v as u64)
            .sum::<u64>();
        // A connection over `max_connections` is answered 503 before it is a request: counted
        // apart, in stilts_client_connections_refused_total.
        let turned_away = sum_by_label(
            &self.metrics,
            "stilts_client_connections_refused_total",
            "reason",
        )
        .get("max_connections")
        .copied()
        .unwrap_or(0.0) as u64;
        checks.push(check(
            "the gateway's metrics agree with the client's count",
            gateway_ok == t.answered && gateway_failed + turned_away == t.clear_errors(),
            format!(
                "stilts_requests_total: {gateway_ok} ok, {gateway_failed} failed ({}), {turned_away} connections turned away; client: {} answered, {} clear errors",
                outcomes
                    .iter()
                    .filter(|(k, v)| k.as_str() != "ok" && **v > 0.0)
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.answered,
                t.clear_errors()
            ),
        ));
        let reloads = sum_by_label(&self.metrics, "stilts_config_reloads_total", "result");
        let applied = reloads.get("ok").copied().unwrap_or(0.0) as u64;
        let refused = reloads.get("error").copied().unwrap_or(0.0) as u64;
        checks.push(check(
            "every config rewrite was reloaded",
            applied == self.rewrites && refused == 0 && self.rewrites > 0,
            format!(
                "{} rewrites, {applied} reloads applied, {refused} refused",
                self.rewrites
            ),
        ));
        checks.extend(self.flat_checks());
        let panics = self.log.lines().filter(|l| l.contains("panicked")).count();
        let errors: Vec<&str> = self
            .log
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .collect();
        checks.push(check(
            "no panic and no error-level line in the gateway's log",
            panics == 0 && errors.is_empty(),
            format!(
                "{panics} panics, {} error lines{}",
                errors.len(),
                errors
                    .first()
                    .map(|l| format!("; the first: {l}"))
                    .unwrap_or_default()
            ),
        ));
        checks.push(check(
            "the gateway exits cleanly on SIGTERM",
            self.exit.is_some_and(|s| s.success()),
            match self.exit {
                Some(s) => format!("{s}"),
                None => "still running 40 s after SIGTERM; killed".to_owned(),
            },
        ));
        checks
    }

    /// RSS, descriptors and tasks: the last cycle against the first cycle after warm-up (the
    /// first cycle), each window seeing every fault phase once.
    ///
    /// RSS is compared by its mean. Descriptors and tasks are compared by their low-water mark
    /// (the fewest sampled in the cycle): most of them are connections, to clients and to
    /// upstreams, and how many a cycle holds at its peak follows how many requests its hangs,
    /// stalls and slow first tokens happened to hold at once, which moved the mean by up to 15%
    /// between two cycles of a healthy run. What a leak leaves behind stays through the quiet part
    /// of every later cycle, so it raises the low-water mark.
    fn flat_checks(&self) -> Vec<Check> {
        // Only the load's own time: a sample taken after its last request went out reads an idle
        // gateway draining its last answers, and that quiet would hide a leak from the low-water
        // mark.
        let end = self
            .samples
            .last()
            .map(|s| s.at)
            .unwrap_or_default()
            .min(self.duration);
        let until = (end + Duration::from_secs(1)).min(self.duration);
        let reference = (self.cycle, self.cycle * 2);
        let last_start = end.saturating_sub(self.cycle);
        let mut out = Vec::new();
        type Reading = fn(&Sample) -> u64;
        let resources: [(&str, Reading, &str, Summary); 3] = [
            ("RSS", |s| s.rss_kib, "KiB", Summary::Mean),
            ("open file descriptors", |s| s.fds, "", Summary::LowWater),
            ("runtime tasks", |s| s.tasks, "", Summary::LowWater),
        ];
        for (name, read, unit, summary) in resources {
            let first = summary.of(&self.samples, reference.0, reference.1, read);
            let last = summary.of(&self.samples, last_start, until, read);
            let (passed, detail) = match (first, last) {
                (Some(first), Some(last)) if last_start >= reference.1 => {
                    let bound = (first * (1.0 + FLAT_SHARE)).max(first + FLAT_FLOOR);
                    (
                        last <= bound,
                        format!(
                            "{} {first:.0}{unit} over {}–{} s, {last:.0}{unit} over the last cycle ({}–{} s): {:+.1}%",
                            summary.name(),
                            reference.0.as_secs(),
                            reference.1.as_secs(),
                            last_start.as_secs(),
                            end.as_secs(),
                            (last / first.max(1.0) - 1.0) * 100.0
                        ),
                    )
                }
                _ => (
                    false,
                    format!(
                        "too few samples: a run needs three fault cycles ({} s each), it sampled {} s",
                        self.cycle.as_secs(),
                        end.as_secs()
                    ),
                ),
            };
            out.push(check(
                &format!("{name} flat after warm-up (within 10%)"),
                passed,
                detail,
            ));
        }
        out
    }

    /// The report, as markdown.
    pub fn render(&self, checks: &[Check]) -> String {
        let t = &self.tally;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} req/s for {} s (last answer at {:.1} s); fault cycle {} s ({} phases); a config rewrite every {} s; deadline {} ms.\n",
            self.rate,
            self.duration.as_secs(),
            self.load_time.as_secs_f64(),
            self.cycle.as_secs(),
            crate::faults::PHASES.len(),
            self.duration.as_secs() / self.rewrites.max(1),
            self.deadline.as_millis()
        );
        let _ = writeln!(
            s,
            "Phases of each cycle, in order: {}.\n",
            crate::faults::PHASES
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let _ = writeln!(s, "| check | result | measured |\n|---|---|---|");
        for c in checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                c.name,
                if c.passed { "pass" } else { "**FAIL**" },
                c.detail.replace('|', "\\|")
            );
        }
        let _ = writeln!(s, "\n| requests | sent | answered |\n|---|---|---|");
        for (kind, (sent, answered)) in &t.by_kind {
            let _ = writeln!(
                s,
                "| {} on `{}`, {} | {sent} | {:.2}% |",
                kind.dialect.name(),
                kind.route,
                if kind.stream { "streamed" } else { "plain" },
                *answered as f64 * 100.0 / (*sent).max(1) as f64
            );
        }
        let _ = writeln!(
            s,
            "\n| sent at (s) | sent | answered | clear errors | lost | late | gateway RSS (MiB) | descriptors | tasks | client connections |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        let window = t.window.max(Duration::from_secs(1));
        for (i, w) in t.timeline.iter().enumerate() {
            let from = window * i as u32;
            let sample = self
                .samples
                .iter()
                .filter(|x| x.at >= from && x.at < from + window)
                .max_by_key(|x| x.tasks);
            let (rss, fds, tasks, connections) = sample.map_or((0.0, 0, 0, 0), |x| {
                (x.rss_kib as f64 / 1024.0, x.fds, x.tasks, x.connections)
            });
            let _ = writeln!(
                s,
                "| {}–{} | {} | {} | {} | {} | {} | {rss:.0} | {fds} | {tasks} | {connections} |",
                from.as_secs(),
                (from + window).as_secs(),
                w.sent,
                w.answered,
                w.errors,
                w.lost,
                w.late
            );
        }
        if let Some(h) = &t.latency_us {
            let _ = writeln!(
                s,
                "\nAnswered latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3
            );
        }
        if !t.errors.is_empty() {
            let _ = writeln!(
                s,
                "\nClear errors by status and code: {}.",
                t.errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !t.by_phase.is_empty() {
            let _ = writeln!(
                s,
                "\nBy the fault phase a request was sent in (over every cycle):\n\n| phase | sent | answered | clear errors |\n|---|---|---|---|"
            );
            for (i, p) in &t.by_phase {
                let name = crate::faults::PHASES.get(*i).map_or("?", |p| p.name);
                let errors = if p.errors.is_empty() {
                    "none".to_owned()
                } else {
                    p.errors
                        .iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let lost = if p.lost > 0 {
                    format!("; {} lost", p.lost)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "| {name} | {} | {:.2}% | {errors}{lost} |",
                    p.sent,
                    p.answered as f64 * 100.0 / p.sent.max(1) as f64
                );
            }
        }
        if let (Some(first), Some(last)) = (self.samples.first(), self.samples.last()) {
            let peak = self.samples.iter().map(|x| x.rss_kib).max().unwrap_or(0);
            let _ = writeln!(
                s,
                "\nGateway process: RSS {:.1} → {:.1} MiB (peak {:.1} MiB), descriptors {} → {}, threads {} → {}, runtime tasks {} → {} (first and last samples).",
                first.rss_kib as f64 / 1024.0,
                last.rss_kib as f64 / 1024.0,
                peak as f64 / 1024.0,
                first.fds,
                last.fds,
                first.threads,
                last.threads,
                first.tasks,
                last.tasks
            );
        }
        // Linux reports CPU time in USER_HZ ticks, 100 a second on every architecture it runs.
        let tick_us = 10_000.0;
        let c = &self.cpu;
        let _ = writeln!(
            s,
            "\nCPU during the load: the gateway {:.0} µs per request sent ({:.2} cores), the load generator and fake upstreams {:.2} cores; the machine was {:.0}% busy over its {} cores (anything above the two processes is another program's).",
            c.gateway as f64 * tick_us / t.sent.max(1) as f64,
            c.gateway as f64 * tick_us / 1e6 / self.load_time.as_secs_f64().max(1e-9),
            c.soak as f64 * tick_us / 1e6 / self.load_time.as_secs_f64().max(1e-9),
            c.machine_busy as f64 * 100.0 / c.machine_total.max(1) as f64,
            crate::watch::machine_cores()
        );
        for sample in &t.lost_samples {
            let _ = writeln!(s, "\n- lost: {sample}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of three 10 s cycles (sampled up to 30 s) whose tasks and descriptors peak at
    /// `peaks` in each cycle and fall to `floors` at its start.
    fn run(peaks: [u64; 3], floors: [u64; 3]) -> Run {
        let samples = (0..=30u64)
            .map(|at| {
                let cycle = (at / 10).min(2) as usize;
                let held = if at % 10 == 0 {
                    floors[cycle]
                } else {
                    peaks[cycle]
                };
                Sample {
                    at: Duration::from_secs(at),
                    rss_kib: 40_000,
                    fds: held,
                    tasks: held,
                    ..Sample::default()
                }
            })
            .collect();
        Run {
            rate: 1,
            duration: Duration::from_secs(30),
            load_time: Duration::from_secs(30),
            cycle: Duration::from_secs(10),
            deadline: Duration::from_secs(4),
            rewrites: 0,
            tally: Tally::default(),
            metrics: String::new(),
            samples,
            log: String::new(),
            exit: None,
            cpu: crate::Cpu::default(),
        }
    }

    #[test]
    fn peaks_that_differ_by_chance_pass_and_a_rising_low_water_mark_fails() {
        let noisy = run([600, 540, 620], [340, 345, 350]);
        assert!(noisy.flat_checks().iter().all(|c| c.passed));
        let leaking = run([600, 600, 600], [340, 345, 420]);
        let failed: Vec<String> = leaking
            .flat_checks()
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            failed,
            [
                "open file descriptors flat after warm-up (within 10%)",
                "runtime tasks flat after warm-up (within 10%)"
            ]
        );
        let growing_memory = Run {
            samples: noisy
                .samples
                .iter()
                .map(|s| Sample {
                    rss_kib: 40_000 + s.at.as_secs() * 1_000,
                    ..*s
                })
                .collect(),
            ..run([600, 540, 620], [340, 345, 350])
        };
        assert!(!growing_memory.flat_checks()[0].passed);
        // The drain after the load's last request reads as quiet as a fresh gateway: it must not
        // stand for the last cycle's low-water mark.
        let mut drained = run([600, 600, 600], [340, 345, 420]);
        drained.samples.push(Sample {
            at: Duration::from_secs(31),
            rss_kib: 40_000,
            fds: 12,
            tasks: 6,
            ..Sample::default()
        });
        let failed = drained.flat_checks().iter().filter(|c| !c.passed).count();
        assert_eq!(failed, 2, "a leak hidden by the drain");
    }

    #[test]
    fn the_report_names_the_fault_phase_its_errors_came_from() {
        let mut r = run([600, 540, 620], [340, 345, 350]);
        let hangs = crate::load::PhaseTally {
            sent: 200,
            answered: 190,
            errors: [("504 deadline_exceeded".to_owned(), 10)].into(),
            lost: 0,
        };
        let healthy = crate::load::PhaseTally {
            sent: 200,
            answered: 200,
            ..Default::default()
        };
        r.tally.by_phase = [(0, healthy), (3, hangs)].into();
        let text = r.render(&[]);
        assert!(
            text.contains("| healthy | 200 | 100.00% | none |"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "| {} | 200 | 95.00% | 504 deadline_exceeded: 10 |",
                crate::faults::PHASES[3].name
            )),
            "{text}"
        );
    }
}
