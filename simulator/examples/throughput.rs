//! Simulator throughput: simulated requests per second of wall time, per routing policy.
//!
//! `cargo run --release -p stilts-sim --example throughput [HOURS] [RPS]` simulates HOURS (default
//! 24) of traffic at RPS (default 100) requests/s through three providers with base error rates, a
//! 20-minute outage and a brownout, once per policy and baseline, one run at a time on one core,
//! and prints the wall time and simulated requests per second of each run. Defaults: a day at
//! 100 rps, 8.64 M requests per run.

use std::path::Path;
use std::time::Instant;
use stilts_sim::{Scenario, simulate_one};

fn scenario(hours: f64, rps: f64) -> String {
    let duration = hours * 3600.0;
    let mut text = format!(
        r#"
name = "throughput"
duration_s = {duration}
[traffic]
rate_rps = {rps}
stream_share = 0.5
output_tokens = {{ p50 = 150, p99 = 450 }}
deadline_ms = 30000
"#
    );
    for (name, input, output) in [
        ("openai", 0.15, 0.60),
        ("anthropic", 1.0, 5.0),
        ("gemini", 0.3, 2.5),
    ] {
        text.push_str(&format!(
            r#"
[[providers]]
name = "{name}"
errors = {{ server = 0.003, rate_limited = 0.001, timeout = 0.0005 }}
input_usd_per_mtok = {input}
output_usd_per_mtok = {output}
"#
        ));
    }
    let outage = duration * 0.4;
    let brownout = duration * 0.7;
    text.push_str(&format!(
        r#"
[[events]]
kind = "outage"
provider = "openai"
start_s = {outage}
duration_s = 1200
[[events]]
kind = "brownout"
factor = 3
provider = "anthropic"
start_s = {brownout}
duration_s = 1800
"#
    ));
    for policy in [
        "weighted",
        "priority",
        "round_robin",
        "least_latency",
        "cost",
    ] {
        text.push_str(&format!(
            r#"
[[configs]]
name = "{policy}"
[configs.router]
policy = "{policy}"
providers = [{{ name = "openai" }}, {{ name = "anthropic" }}, {{ name = "gemini" }}]
"#
        ));
    }
    text
}

fn main() {
    let mut args = std::env::args().skip(1);
    let hours: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(24.0);
    let rps: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100.0);
    let s = match Scenario::parse(&scenario(hours, rps), Path::new("throughput.toml")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!("{hours} h at {rps} rps per run; one run at a time, one core");
    println!(
        "{:<14} {:>10} {:>9} {:>14} {:>10}",
        "run", "requests", "wall s", "sim req/s", "avail %"
    );
    for name in s.run_names() {
        let start = Instant::now();
        let Some(run) = simulate_one(&s, 1, &name) else {
            continue;
        };
        let wall = start.elapsed().as_secs_f64();
        println!(
            "{:<14} {:>10} {:>9.3} {:>14.0} {:>10.3}",
            name,
            run.requests,
            wall,
            run.requests as f64 / wall,
            run.availability * 100.0
        );
    }
}
