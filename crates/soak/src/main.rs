//! stilts-soak: a bounded soak of the real gateway under every fault kind.
//!
//! It starts `stilts serve` as a child process (so its memory, descriptors and threads are its
//! own), three fake upstreams in this process that inject the faults of [`faults::PHASES`] on a
//! repeating schedule, and an open-loop load of plain and streamed requests over three routes and
//! three client dialects ([`load`]). The config file is rewritten on a period, so the gateway
//! reloads under load. At the end it checks, and exits 1 unless all hold:
//! - every request ended in an answer or a clear error, none lost, none past its deadline;
//! - the gateway's `stilts_requests_total` agrees with the client's count, outcome for outcome;
//! - every reload was applied;
//! - the gateway's RSS (mean), open descriptors and runtime tasks (low-water marks) in the last
//!   cycle are within 10% of the first cycle after warm-up (the same fault mix in both);
//! - its log holds no panic and no error-level line, and it exits cleanly on SIGTERM.
//!
//! `scripts/soak.sh` builds and runs it (10 minutes at 2,000 requests/s by default; CI runs 120 s
//! at 1,000).

mod faults;
mod load;
mod report;
mod watch;

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use stilts_gateway::mock::{MockConfig, MockUpstream};

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Soak `stilts serve` under scheduled faults and reloads, and check nothing was lost or leaked"
)]
struct Args {
    /// The `stilts` binary (its directory also holds the plugins). Default: `stilts` beside this
    /// binary.
    #[arg(long)]
    stilts: Option<PathBuf>,
    /// Load duration, seconds.
    #[arg(long, default_value_t = 600)]
    duration_s: u64,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 2_000)]
    rate: u32,
    /// Length of one fault cycle (every phase once), seconds. Default: 60, or a third of the
    /// duration when that is shorter.
    #[arg(long)]
    cycle_s: Option<u64>,
    /// Seconds between two config rewrites. Default: 60, or a third of the duration.
    #[arg(long)]
    reload_every_s: Option<u64>,
    /// Each request's `X-Stilts-Deadline-Ms`.
    #[arg(long, default_value_t = 4_000)]
    deadline_ms: u64,
    /// Where the gateway's config and log go (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Also write the report as markdown here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Run the gateway on these CPUs (`taskset -c` syntax, e.g. `1`), so it does not compete with
    /// the load generator for a core.
    #[arg(long)]
    gateway_cpus: Option<String>,
    /// The gateway's `RUST_LOG` (`info` logs a line per request, as in production).
    #[arg(long, default_value = "info")]
    gateway_log: String,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stilts-soak: no async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("stilts-soak: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The whole run; `Ok(false)` when a check failed.
async fn soak(args: Args) -> anyhow::Result<bool> {
    if args.duration_s < 3 || args.rate == 0 {
        anyhow::bail!("--duration-s must be at least 3 and --rate at least 1");
    }
    let duration = Duration::from_secs(args.duration_s);
    let cycle = Duration::from_secs(args.cycle_s.unwrap_or((args.duration_s / 3).min(60)).max(1));
    let reload_every = Duration::from_secs(
        args.reload_every_s
            .unwrap_or((args.duration_s / 3).min(60))
            .max(1),
    );
    let deadline = Duration::from_millis(args.deadline_ms);
    let stilts = match args.stilts {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("stilts"),
    };
    anyhow::ensure!(
        stilts.is_file(),
        "no stilts binary at {} (build it: cargo build --release -p stilts-cli, or pass --stilts)",
        stilts.display()
    );
    let work = match args.work_dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("stilts-soak-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    let phases = Arc::new(faults::PhaseClock::default());
    let mut upstreams = Vec::new();
    for (i, name) in faults::UPSTREAMS.iter().enumerate() {
        let config = MockConfig {
            planner: Some(Arc::new(faults::SchedulePlanner::new(
                i,
                Arc::clone(&phases),
            ))),
            ..MockConfig::named(name)
        };
        upstreams.push(MockUpstream::start_local(config).await?);
    }
    let listen = free_port()?;
    let config_path = work.join("soak.toml");
    let upstream_urls: Vec<String> = upstreams.iter().map(MockUpstream::base_url).collect();
    std::fs::write(
        &config_path,
        report::gateway_config(listen, &upstream_urls, deadline, 0),
    )?;
    let log_path = work.join("gateway.log");
    let mut command = match &args.gateway_cpus {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(&stilts);
            c
        }
        None => std::process::Command::new(&stilts),
    };
    let mut gateway = command
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", &args.gateway_log)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", stilts.display()))?;
    let pid = gateway.id();
    let base = format!("http://{listen}");
    let probe = reqwest::Client::builder().no_proxy().build()?;
    wait_healthy(&probe, &base, &mut gateway, &log_path).await?;
    eprintln!(
        "stilts-soak: {} req/s for {} s through {} (pid {pid}); fault cycle {} s, reload every {} s; log {}",
        args.rate,
        duration.as_secs(),
        base,
        cycle.as_secs(),
        reload_every.as_secs(),
        log_path.display()
    );

    let begun = Instant::now();
    let cpu_before = Cpu::read(pid);
    let stop = Arc::new(tokio::sync::Notify::new());
    let phase_task = {
        let phases = Arc::clone(&phases);
        let phase_len = cycle / faults::PHASES.len() as u32;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(phase_len.max(Duration::from_millis(10)));
            let mut i = 0usize;
            loop {
                tick.tick().await;
                phases.set(i);
                i += 1;
            }
        })
    };
    let rewrites = Arc::new(AtomicU64::new(0));
    let reload_task = {
        let (rewrites, path, urls) = (
            Arc::clone(&rewrites),
            config_path.clone(),
            upstream_urls.clone(),
        );
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + reload_every, reload_every);
            loop {
                tick.tick().await;
                let n = rewrites.load(Ordering::Relaxed) + 1;
                let text = report::gateway_config(listen, &urls, deadline, n);
                if std::fs::write(&path, text).is_ok() {
                    rewrites.store(n, Ordering::Relaxed);
                }
            }
        })
    };
    let sampler = {
        let (probe, base, stop) = (probe.clone(), base.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = stop.notified() => return samples,
                }
                let Some((rss_kib, fds, threads)) = watch::proc_sample(pid) else {
                    return samples;
                };
                let (tasks, connections) = match watch::scrape(&probe, &base).await {
                    Ok(text) => {
                        let read = |name| watch::plain_value(&text, name).unwrap_or(0.0) as u64;
                        (
                            read("stilts_runtime_tasks"),
                            read("stilts_client_connections"),
                        )
                    }
                    Err(_) => (0, 0),
                };
                samples.push(watch::Sample {
                    at: begun.elapsed(),
                    rss_kib,
                    fds,
                    threads,
                    tasks,
                    connections,
                });
            }
        })
    };

    let addr: SocketAddr = listen;
    let tally = load::run(addr, args.rate, duration, deadline, Arc::clone(&phases)).await?;
    let load_time = begun.elapsed();
    let cpu = Cpu::read(pid).since(&cpu_before);
    phase_task.abort();
    reload_task.abort();
    // The last streams' outcomes are counted as they end; give the gateway a moment to record.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = watch::scrape(&probe, &base)
        .await
        .context("the final /metrics scrape")?;
    stop.notify_one();
    let samples = sampler.await.unwrap_or_default();
    let exit = stop_gateway(&mut gateway).await;
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();

    let run = report::Run {
        rate: args.rate,
        duration,
        load_time,
        cycle,
        deadline,
        rewrites: rewrites.load(Ordering::Relaxed),
        tally,
        metrics,
        samples,
        log,
        exit,
        cpu,
    };
    let checks = run.checks();
    let text = run.render(&checks);
    println!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    drop(upstreams);
    Ok(checks.iter().all(|c| c.passed))
}

/// CPU used so far, in clock ticks: the gateway's, this process's (the load generator and the
/// fake upstreams), and the whole machine's busy and total.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// The gateway process.
    pub gateway: u64,
    /// This process.
    pub soak: u64,
    /// Every process, every core: busy.
    pub machine_busy: u64,
    /// Every core: all ticks.
    pub machine_total: u64,
}

impl Cpu {
    fn read(pid: u32) -> Self {
        let (machine_busy, machine_total) = watch::machine_ticks().unwrap_or_default();
        Cpu {
            gateway: watch::cpu_ticks(&pid.to_string()).unwrap_or(0),
            soak: watch::cpu_ticks("self").unwrap_or(0),
            machine_busy,
            machine_total,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            gateway: self.gateway.saturating_sub(before.gateway),
            soak: self.soak.saturating_sub(before.soak),
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
        }
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Waits for `/healthz`; fails with the log when the gateway exits or takes over 30 s.
async fn wait_healthy(
    probe: &reqwest::Client,
    base: &str,
    gateway: &mut std::process::Child,
    log: &Path,
) -> anyhow::Result<()> {
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = probe.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = gateway.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            anyhow::bail!("the gateway exited at start ({status}):\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = gateway.kill();
    anyhow::bail!(
        "the gateway did not answer /healthz within 30 s (log: {})",
        log.display()
    )
}

/// SIGTERM, then the exit status (killed after 40 s: its shutdown grace is 30 s).
async fn stop_gateway(gateway: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &gateway.id().to_string()])
        .status();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(40) {
        if let Ok(Some(status)) = gateway.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = gateway.kill();
    let _ = gateway.wait();
    None
}
