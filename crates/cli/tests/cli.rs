//! End-to-end tests of the `stilts` binary: exit codes and the messages users see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stilts(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run stilts")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
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

/// Builds the openai plugin with cargo (a real cdylib) and returns its path.
fn openai_plugin() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            "stilts-plugin-openai",
            "--lib",
            "--manifest-path",
        ])
        .arg(workspace_root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("run cargo");
    assert!(out.status.success(), "{}", stderr(&out));
    let lib = format!(
        "{}stilts_plugin_openai{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    target.join("debug").join(lib)
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
