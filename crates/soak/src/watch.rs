//! What the soak reads off the gateway: its process's resources from `/proc` and its counters
//! from `/metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

/// One reading of the gateway process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Since the load began.
    pub at: Duration,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Tasks alive on the async runtime (`stilts_runtime_tasks`).
    pub tasks: u64,
    /// Open client connections (`stilts_client_connections`).
    pub connections: u64,
}

/// Reads `/proc/PID` (and nothing when the process is gone).
pub fn proc_sample(pid: u32) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}

/// CPU time (user + system) a process used so far, in clock ticks (`/proc/PID/stat`); `self`
/// for this process.
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // plain: state is field 3, utime and stime fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's (busy, total) CPU ticks so far, over every core (`/proc/stat`).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// The machine's cores (`cpuN` lines of `/proc/stat`), whatever this process is pinned to.
pub fn machine_cores() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// The value of an unlabelled series (`stilts_runtime_tasks 12`).
pub fn plain_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The sum of a counter family's series grouped by one label (`outcome`, `result`, …).
pub fn sum_by_label(metrics: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let key = format!("{label}=\"");
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let Some(labels) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((labels, value)) = labels.split_once("} ") else {
            continue;
        };
        let Some(start) = labels.find(&key) else {
            continue;
        };
        let tail = &labels[start + key.len()..];
        let Some(end) = tail.find('"') else {
            continue;
        };
        let Ok(v) = value.split_whitespace().next().unwrap_or("").parse::<f64>() else {
            continue;
        };
        *out.entry(tail[..end].to_owned()).or_default() += v;
    }
    out
}

/// GETs `/metrics` in the Prometheus text format.
pub async fn scrape(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?)
}

/// `f` of each sample taken in `[from, to)`.
fn readings_in(
    samples: &[Sample],
    from: Duration,
    to: Duration,
    f: impl Fn(&Sample) -> u64,
) -> impl Iterator<Item = u64> {
    samples
        .iter()
        .filter(move |s| s.at >= from && s.at < to)
        .map(f)
}

/// The mean of `f` over the samples taken in `[from, to)`.
pub fn mean_in(
    samples: &[Sample],
    from: Duration,
    to: Duration,
    f: impl Fn(&Sample) -> u64,
) -> Option<f64> {
    let picked: Vec<u64> = readings_in(samples, from, to, f).collect();
    (!picked.is_empty()).then(|| picked.iter().sum::<u64>() as f64 / picked.len() as f64)
}

/// The fewest of `f` over the samples taken in `[from, to)`.
pub fn min_in(
    samples: &[Sample],
    from: Duration,
    to: Duration,
    f: impl Fn(&Sample) -> u64,
) -> Option<u64> {
    readings_in(samples, from, to, f).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x\n\
        stilts_requests_total{route=\"chat\",provider=\"a\",outcome=\"ok\"} 10\n\
        stilts_requests_total{route=\"spread\",provider=\"b\",outcome=\"ok\"} 5\n\
        stilts_requests_total{route=\"chat\",provider=\"none\",outcome=\"deadline\"} 2\n\
        stilts_requests_total_created{route=\"chat\"} 1\n\
        stilts_runtime_tasks 42\n";

    #[test]
    fn counters_are_summed_by_label() {
        let by = sum_by_label(TEXT, "stilts_requests_total", "outcome");
        assert_eq!(by.get("ok"), Some(&15.0));
        assert_eq!(by.get("deadline"), Some(&2.0));
        assert_eq!(by.len(), 2);
        assert_eq!(plain_value(TEXT, "stilts_runtime_tasks"), Some(42.0));
        assert_eq!(plain_value(TEXT, "stilts_runtime"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let (rss, fds, threads) = proc_sample(std::process::id()).unwrap_or_default();
        assert!(rss > 0 && fds > 0 && threads > 0);
        let samples = [
            Sample {
                at: Duration::from_secs(1),
                rss_kib: 10,
                ..Sample::default()
            },
            Sample {
                at: Duration::from_secs(2),
                rss_kib: 20,
                ..Sample::default()
            },
        ];
        assert_eq!(
            mean_in(&samples, Duration::ZERO, Duration::from_secs(3), |s| s
                .rss_kib),
            Some(15.0)
        );
        assert_eq!(
            min_in(&samples, Duration::ZERO, Duration::from_secs(3), |s| s
                .rss_kib),
            Some(10)
        );
        assert_eq!(
            min_in(
                &samples,
                Duration::from_secs(2),
                Duration::from_secs(3),
                |s| s.rss_kib
            ),
            Some(20)
        );
        assert!(cpu_ticks("self").is_some());
        let (busy, total) = machine_ticks().unwrap_or_default();
        assert!(total > 0 && busy <= total);
        assert_eq!(
            mean_in(
                &samples,
                Duration::from_secs(5),
                Duration::from_secs(6),
                |s| s.rss_kib
            ),
            None
        );
    }
}
