//! End-to-end tests of the `stilts` binary: exit codes and the messages users see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::{openai_plugin, workspace_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn stilts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run stilts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str, contents: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn sim_check_runs_a_scenario_twice_and_passes_its_expectations() {
    let out = stilts(&["sim", "scenarios/hang-blackhole.toml", "--check", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn sim_exits_non_zero_naming_the_failed_expectation() {
    let scenario = std::fs::read_to_string(workspace_root().join("scenarios/hang-blackhole.toml"))
        .unwrap()
        + "\n[[expect]]\nconfig = \"stilts\"\ncost_per_1k_max = 0.0\n";
    let path = scratch("impossible.toml", &scenario);
    let out = stilts(&["sim", path.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("cost_per_1k_max"), "{err}");
    assert!(err.contains("stilts"), "{err}");
}

#[test]
fn sim_names_file_line_and_field_of_a_bad_scenario() {
    let path = scratch(
        "typo.toml",
        "name = \"typo\"\nseed = 1\nduration_s = 10\n[traffic]\nrate_rsp = 5\n",
    );
    let out = stilts(&["sim", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("typo.toml:5:1"), "{err}");
    assert!(err.contains("rate_rsp"), "{err}");
}

#[test]
fn config_check_names_the_problem() {
    let path = scratch("empty.toml", "[server]\nlisten = \"127.0.0.1:0\"\n");
    let out = stilts(&["config", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("empty.toml") && err.contains("routes"),
        "{err}"
    );
}

#[test]
fn plugin_check_refuses_a_file_that_is_not_a_library() {
    let path = scratch("not-a-plugin.so", "just text\n");
    let out = stilts(&["plugin", "check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not-a-plugin.so"), "{}", stderr(&out));
}

#[test]
fn plugin_check_loads_the_openai_plugin_and_passes_its_self_test() {
    let plugin = openai_plugin();
    let out = stilts(&["plugin", "check", plugin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("openai"), "{stdout}");
    assert!(stdout.contains("metadata:     binary"), "{stdout}");
}

/// The simulator reads a gateway config's route the way the gateway does: the route's deployments
/// become the router's providers with the same routing settings.
#[test]
fn sim_reads_a_gateway_route_with_the_gateways_routing_settings() {
    let root = workspace_root();
    let gateway = stilts_gateway::GatewayConfig::load(&root.join("examples/stilts.toml")).unwrap();
    let route = gateway.routes.iter().find(|r| r.name == "chat").unwrap();
    let scenario =
        stilts_sim::Scenario::load(&root.join("scenarios/example-config-primary-outage.toml"))
            .unwrap();
    // The whole validated router: policy, deadline, breaker, retries, budget, hedging, spend,
    // timeouts, and every provider with its prices, window, limits and timeouts.
    assert_eq!(scenario.configs[0].config, route.router);
}

#[test]
fn sim_names_the_deployment_a_scenario_does_not_know() {
    let gateway = scratch(
        "gw-unknown-deployment.toml",
        "[routes.chat.router]\npolicy = \"priority\"\n\
         [[routes.chat.deployments]]\nname = \"openai\"\nplugin = \"openai\"\nmodel = \"m\"\n\
         [[routes.chat.deployments]]\nname = \"mistral\"\nplugin = \"openai\"\nmodel = \"m\"\n",
    );
    let scenario = scratch(
        "gw-unknown-deployment-scenario.toml",
        &format!(
            "name = \"s\"\nduration_s = 10\n[traffic]\nrate_rps = 1\n\
             [[providers]]\nname = \"openai\"\n\
             [[configs]]\nname = \"prod\"\nfile = \"{}\"\ntable = \"routes.chat.router\"\n",
            gateway.display()
        ),
    );
    let out = stilts(&["sim", scenario.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("routes.chat.deployments[1].name"), "{err}");
    assert!(err.contains("\"mistral\""), "{err}");
    assert!(err.contains("gw-unknown-deployment.toml"), "{err}");
}

/// Runs `stilts sim` on a one-provider scenario whose config is `table` of the gateway file
/// `gateway`; returns the exit code and stderr.
fn sim_with_gateway_file(name: &str, gateway: &str, table: &str) -> (Option<i32>, String) {
    let gateway = scratch(&format!("{name}.toml"), gateway);
    let scenario = scratch(
        &format!("{name}-scenario.toml"),
        &format!(
            "name = \"s\"\nduration_s = 5\n[traffic]\nrate_rps = 1\n\
             [[providers]]\nname = \"openai\"\n\
             [[configs]]\nname = \"prod\"\nfile = \"{}\"\ntable = '{table}'\n",
            gateway.display()
        ),
    );
    let out = stilts(&["sim", "--quiet", scenario.to_str().unwrap()]);
    (out.status.code(), stderr(&out))
}

#[test]
fn sim_reads_gateway_routes_as_the_gateway_does_or_refuses_them_alike() {
    let one =
        "[[routes.chat.deployments]]\nname = \"openai\"\nplugin = \"openai\"\nmodel = \"m\"\n";
    // No router table: the defaults, as in the gateway.
    let (code, err) = sim_with_gateway_file("gw-no-router", one, "routes.chat.router");
    assert_eq!(code, Some(0), "{err}");
    // A route name with a dot, quoted in `table`.
    let dotted = one.replace("routes.chat", "routes.\"gpt-4.1\"");
    let (code, err) = sim_with_gateway_file("gw-dotted", &dotted, "routes.\"gpt-4.1\".router");
    assert_eq!(code, Some(0), "{err}");
    // A typo in a deployment's routing field is refused, naming the deployment.
    let typo = format!("{one}priorty = 1\n");
    let (code, err) = sim_with_gateway_file("gw-typo", &typo, "routes.chat.router");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("routes.chat.deployments[0]") && err.contains("priorty"),
        "{err}"
    );
    // A wrong type too, at the deployment's line.
    let wrong = format!("{one}priority = \"high\"\n");
    let (code, err) = sim_with_gateway_file("gw-type", &wrong, "routes.chat.router");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("gw-type.toml:1:") && err.contains("routes.chat.deployments[0]"),
        "{err}"
    );
    // A router that lists providers itself is refused, as `stilts config check` refuses it.
    let listed = format!("[routes.chat.router]\nproviders = [{{ name = \"openai\" }}]\n{one}");
    let (code, err) = sim_with_gateway_file("gw-listed", &listed, "routes.chat.router");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("routes.chat.router.providers"), "{err}");
    // A route without deployments.
    let (code, err) = sim_with_gateway_file(
        "gw-empty",
        "[routes.chat]\ndeployments = []\n[routes.chat.router]\npolicy = \"priority\"\n",
        "routes.chat.router",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("routes.chat.deployments: is empty"), "{err}");
    // A table path that is not a dotted key.
    let (code, err) = sim_with_gateway_file("gw-bad-path", one, "routes.chat.router.");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a TOML dotted key"), "{err}");
}

/// A scenario of `duration_s` at `rate_rps` with one config (so 5 runs per seed).
fn sized_scenario(name: &str, duration_s: u64, rate_rps: u64) -> PathBuf {
    scratch(
        name,
        &format!(
            "name = \"{name}\"\nduration_s = {duration_s}\n[traffic]\nrate_rps = {rate_rps}\n\
             [[providers]]\nname = \"a\"\n[[providers]]\nname = \"b\"\n\
             [[configs]]\nname = \"stilts\"\n[configs.router]\npolicy = \"priority\"\n\
             providers = [{{ name = \"a\" }}, {{ name = \"b\" }}]\n"
        ),
    )
}

#[test]
fn sim_refuses_a_scenario_too_big_to_run_before_starting_it() {
    // 31 days at 10 M requests/s: 2.68e13 arrivals x 5 runs, years of work.
    let path = sized_scenario("huge.toml", 31 * 86_400, 10_000_000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(["sim", "--quiet", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stilts");
    // Liveness, not speed: a refusal is instant, a simulation that started would run for years.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("stilts sim started simulating a scenario it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    for part in [
        "huge.toml: too big to simulate",
        "26 784 000 000 000 requests arrive in 2 678 400 s",
        "x 5 runs (1 config + 4 baselines) x 1 seed",
        "= 133 920 000 000 000 simulated requests",
        "more than the limit of 1 000 000 000",
        "--max-requests 133920000000000",
    ] {
        assert!(err.contains(part), "missing {part:?} in: {err}");
    }
    // A sweep with --check multiplies by the seeds and by 2.
    let out = stilts(&[
        "sim",
        "--quiet",
        "--check",
        "--seeds",
        "1..4",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("x 3 seeds x 2 (--check) = 803 520 000 000 000 simulated requests"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sim_max_requests_moves_the_limit() {
    // 10 s at 20 rps = 200 arrivals x 5 runs = 1 000 simulated requests.
    let path = sized_scenario("small.toml", 10, 20);
    let path = path.to_str().unwrap();
    let out = stilts(&["sim", "--quiet", "--max-requests", "999", path]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("= 1 000 simulated requests, more than the limit of 999"),
        "{err}"
    );
    assert!(err.contains("--max-requests 1000"), "{err}");
    for limit in ["1000", "1_000", "1e3"] {
        let out = stilts(&["sim", "--quiet", "--max-requests", limit, path]);
        assert!(out.status.success(), "{limit}: {}", stderr(&out));
    }
    let out = stilts(&["sim", "--quiet", "--max-requests", "lots", path]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("2_000_000_000"), "{}", stderr(&out));
}

#[test]
fn sim_out_says_what_it_wrote_where() {
    let path = sized_scenario("out.toml", 10, 20);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-tests");
    let html = dir.join("out.html");
    let _ = std::fs::remove_file(&html);
    let out = stilts(&[
        "sim",
        "--quiet",
        "--format",
        "html",
        "--out",
        html.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::metadata(&html).unwrap().len();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "wrote the HTML report of out.toml (seed 1) to {} ({bytes} bytes)\n",
            html.display()
        )
    );
}

#[test]
fn config_check_names_every_missing_key_variable_at_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(["config", "check", "examples/stilts.toml"])
        .current_dir(workspace_root())
        .env_remove("OPENAI_API_KEY")
        .env_remove("GROQ_API_KEY")
        .env_remove("OPENAI_API_KEY_B")
        .env_remove("STILTS_CLIENT_KEYS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for var in [
        "OPENAI_API_KEY=",
        "GROQ_API_KEY=",
        "OPENAI_API_KEY_B=",
        "STILTS_CLIENT_KEYS=",
    ] {
        assert!(err.contains(var), "{var} missing from: {err}");
    }
    assert_eq!(
        err.matches("OPENAI_API_KEY=").count(),
        1,
        "named once: {err}"
    );
    // With them set (the README's placeholders), the example checks out.
    let out = Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(["config", "check", "examples/stilts.toml"])
        .current_dir(workspace_root())
        .env("OPENAI_API_KEY", "sk-placeholder")
        .env("GROQ_API_KEY", "gsk-placeholder")
        .env("OPENAI_API_KEY_B", "sk-placeholder-b")
        .env("STILTS_CLIENT_KEYS", "my-client-key")
        .env("STILTS_PLUGIN_DIR", openai_plugin().parent().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
