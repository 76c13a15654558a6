//! `stilts serve` logs as a person and a machine need them: text without colour codes when
//! stderr is not a terminal, one JSON object per line with `--log-format json`, one access line per
//! request either way, and a config error on one line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly on broken fixtures.

mod common;

use common::{openai_plugin, workspace_root};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A gateway config over an upstream that refuses connections (port 9 on loopback): requests fail
/// over nowhere and end in 502, which makes warn lines and access lines.
fn config(name: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("log-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nreload_poll_ms = 0\n\
             [[routes.chat.deployments]]\nname = \"down\"\nplugin = \"{}\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\n",
            openai_plugin().display()
        ),
    )
    .unwrap();
    path
}

/// Starts `stilts serve` with `args`, reads stderr until the banner, and returns the child, the
/// gateway's address and a reader of the rest of stderr.
#[allow(clippy::zombie_processes)] // reason: the child is returned; `stop` kills and waits for it
fn serve(args: &[&str]) -> (Child, String, BufReader<std::process::ChildStderr>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(args)
        .current_dir(workspace_root())
        .env_remove("RUST_LOG")
        .env_remove("STILTS_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            panic!("serve exited before its banner: {seen}");
        }
        seen.push_str(&line);
        if let Some(at) = line.find("serving on http://") {
            let addr: String = line[at + "serving on http://".len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return (child, addr, stderr, seen);
        }
    }
}

fn post_chat(addr: &str) -> String {
    let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi"}]}"#;
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        tcp,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    answer
}

/// Stops the child and returns everything it wrote to stderr after `seen`.
fn stop(
    mut child: Child,
    mut stderr: BufReader<std::process::ChildStderr>,
    seen: String,
) -> String {
    child.kill().unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    let _ = child.wait();
    seen + &rest
}

#[test]
fn text_logs_have_no_colour_codes_off_a_terminal_and_one_access_line_per_request() {
    let cfg = config("text.toml");
    let (child, addr, stderr, seen) = serve(&["serve", "--config", cfg.to_str().unwrap()]);
    let answer = post_chat(&addr);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let logs = stop(child, stderr, seen);
    assert!(!logs.contains('\x1b'), "ANSI codes in a file:\n{logs}");
    let access: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("stilts::access"))
        .collect();
    assert_eq!(access.len(), 1, "{logs}");
    assert!(access[0].contains("status=502") && access[0].contains("route=chat"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let cfg = config("json.toml");
    let (child, addr, stderr, seen) = serve(&[
        "serve",
        "--log-format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let answer = post_chat(&addr);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    std::thread::sleep(Duration::from_millis(200));
    let logs = stop(child, stderr, seen);
    let mut access = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{logs}"));
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
        if record["target"] == "stilts::access" {
            access += 1;
            assert_eq!(record["fields"]["status"], 502, "{line}");
            assert_eq!(record["fields"]["route"], "chat", "{line}");
        }
    }
    assert_eq!(access, 1, "{logs}");
}

#[test]
fn a_config_error_is_one_line_with_its_dotted_path() {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("log-tests/typo.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        "[[routes.chat.deployments]]\nname = \"a\"\nplugin = \"openai\"\nmodel = \"m\"\nweigth = 2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stilts"))
        .args(["config", "check", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("line 5, column 1: routes.chat.deployments[0].weigth: unknown field"),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");
}
