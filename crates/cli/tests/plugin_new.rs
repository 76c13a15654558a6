//! docs/plugins.md's walk-through, run for real: every command of its `sh` blocks runs in order in
//! a scratch directory (`stilts` is this crate's binary, `cargo` runs offline against the
//! workspace's registry cache), the files it shows must be byte for byte what `stilts plugin new`
//! writes, and the generated gateway config serves a streamed request through `stilts serve`,
//! loading the plugin by its short name and counting the stream's tokens. Also: a plugin that
//! passes the usage chunk through without reporting it fails `stilts plugin check`, and `stilts
//! plugin new` refuses bad names and non-empty directories.
//!
//! The generated crates share one cargo target directory under this test's scratch space (a
//! `target` symlink in each crate), so stilts-plugin compiles once across runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests fail loudly on broken fixtures

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where docs/plugins.md pretends the stilts checkout is.
const DOC_CHECKOUT: &str = "/home/you/stilts";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn stilts() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stilts"))
}

/// A fresh scratch directory for one test, under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plugin-new")
        .join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Points `crate_dir/target` at the cargo target directory all generated crates share.
fn share_target(crate_dir: &Path) {
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("plugin-new")
        .join("shared-target");
    std::fs::create_dir_all(&shared).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&shared, crate_dir.join("target")).unwrap();
    #[cfg(not(unix))]
    let _ = crate_dir; // each crate builds in its own target directory
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Fenced blocks of a markdown page: (info string, body).
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match &mut current {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    current = Some((info.trim().to_owned(), String::new()));
                }
            }
            Some((_, body)) => {
                if line.starts_with("```") {
                    out.push(current.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// The blocks tagged `file=PATH`, by path.
fn doc_files(markdown: &str) -> BTreeMap<String, String> {
    blocks(markdown)
        .into_iter()
        .filter_map(|(info, body)| {
            let path = info
                .split_whitespace()
                .find_map(|w| w.strip_prefix("file="))?;
            Some((path.to_owned(), body))
        })
        .collect()
}

/// The commands of the `sh` blocks, in order, without comments.
fn doc_commands(markdown: &str) -> Vec<String> {
    blocks(markdown)
        .into_iter()
        .filter(|(info, _)| info == "sh")
        .flat_map(|(_, body)| {
            body.lines()
                .map(|l| l.split(" #").next().unwrap_or("").trim().to_owned())
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs one shell-like command line (`NAME=value` prefixes, `cd`, `stilts`, `cargo`, others as
/// programs) in `cwd`, which `cd` changes.
fn run_line(line: &str, cwd: &mut PathBuf) -> Output {
    let mut words = line.split_whitespace().peekable();
    let mut env = Vec::new();
    while let Some((k, v)) = words.peek().and_then(|w| w.split_once('=')) {
        env.push((k.to_owned(), v.to_owned()));
        words.next();
    }
    let program = words.next().unwrap();
    let args: Vec<&str> = words.collect();
    if program == "cd" {
        assert_eq!(args.len(), 1, "{line}");
        // Logical, as a shell's `cd`: `target` may be a symlink (see `share_target`).
        for part in Path::new(args[0]).components() {
            match part {
                std::path::Component::ParentDir => assert!(cwd.pop(), "{line}"),
                std::path::Component::CurDir => {}
                other => cwd.push(other),
            }
        }
        assert!(cwd.is_dir(), "`{line}`: no directory {}", cwd.display());
        return Output {
            status: std::process::ExitStatus::default(),
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
    }
    let mut cmd = match program {
        "stilts" => stilts(),
        "cargo" => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            // Offline, from the workspace's registry cache (the crate has its lockfile).
            c.env("CARGO_NET_OFFLINE", "true")
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR");
            c
        }
        other => Command::new(other),
    };
    cmd.args(&args).current_dir(&*cwd).envs(env);
    cmd.output().unwrap()
}

/// Kills a process this test started when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `stilts ARGS`, reads `from_stderr` or stdout until a line containing `marker`, and
/// returns the rest of that line after the marker.
fn start(args: &[&str], cwd: &Path, from_stderr: bool, marker: &str) -> (Running, String) {
    let mut child = stilts()
        .args(args)
        .current_dir(cwd)
        .stdout(if from_stderr {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(if from_stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let reader: Box<dyn std::io::Read + Send> = if from_stderr {
        Box::new(child.stderr.take().unwrap())
    } else {
        Box::new(child.stdout.take().unwrap())
    };
    let running = Running(child);
    let mut lines = BufReader::new(reader).lines();
    let mut seen = String::new();
    for _ in 0..100 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(at) = line.find(marker) {
            let rest = line[at + marker.len()..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned();
            // Keep draining the pipe so the process never blocks on a full one.
            std::thread::spawn(move || for _ in lines {});
            return (running, rest);
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    panic!("stilts {args:?} never printed {marker:?}:\n{seen}");
}

/// One HTTP/1.1 exchange over a fresh connection; returns the whole response.
fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the `stilts_tokens_total` sample with all of `labels`, if any.
fn tokens(metrics: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with("stilts_tokens_total{"))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "the page's commands name the Linux library (libacme_plugin.so)"
)]
fn the_walkthrough_in_docs_plugins_md_runs_as_written() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/plugins.md")).unwrap();
    let shown = doc_files(&doc);
    let commands = doc_commands(&doc);
    for needed in [
        "stilts plugin new acme",
        "cargo test",
        "cargo build --release",
        "stilts plugin check target/release/libacme_plugin.so",
        "stilts plugin check libacme_plugin.so",
        "stilts plugin check acme --plugin-dir target/release",
    ] {
        assert!(
            commands.iter().any(|c| c == needed),
            "the walk-through lost `{needed}`: {commands:?}"
        );
    }

    let mut cwd = scratch("walkthrough");
    let mut crate_dir = None;
    for line in &commands {
        let out = run_line(line, &mut cwd);
        assert!(out.status.success(), "`{line}` failed:\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if line.starts_with("stilts plugin new") {
            let dir = cwd.join("acme-plugin");
            // The page shows exactly what the generator wrote (for a checkout at DOC_CHECKOUT).
            let mut written = BTreeMap::new();
            for rel in ["Cargo.toml", "src/lib.rs", "tests/wire.rs", "stilts.toml"] {
                let text = std::fs::read_to_string(dir.join(rel)).unwrap();
                written.insert(
                    rel.to_owned(),
                    text.replace(root.to_str().unwrap(), DOC_CHECKOUT),
                );
            }
            assert_eq!(
                shown.keys().collect::<Vec<_>>(),
                written.keys().collect::<Vec<_>>()
            );
            for (rel, text) in &written {
                assert!(
                    shown[rel] == *text,
                    "docs/plugins.md's {rel} differs from what `stilts plugin new acme` writes \
                     (crates/cli/templates/plugin/); the generator wrote:\n{text}"
                );
            }
            for rel in ["README.md", ".gitignore", "Cargo.lock"] {
                assert!(dir.join(rel).is_file(), "{rel}");
            }
            share_target(&dir);
            crate_dir = Some(dir);
        }
        if line.starts_with("stilts plugin check") {
            assert!(
                stdout.contains("self-test ok: stream usage: reported (9 in, 3 out)"),
                "`{line}`:\n{stdout}"
            );
            assert!(stdout.contains(": OK"), "`{line}`:\n{stdout}");
        }
        if line.contains("stilts config check") {
            assert!(stdout.contains("ok (1 route: chat)"), "`{line}`:\n{stdout}");
        }
        if line.starts_with("cargo test") {
            assert!(
                stdout.contains("a_stream_is_reassembled_and_its_usage_reported ... ok"),
                "`{line}`:\n{stdout}"
            );
        }
    }
    let crate_dir = crate_dir.expect("the walk-through runs `stilts plugin new`");

    // The generated config, pointed at a fake upstream, serves a stream through `stilts serve`
    // with the plugin loaded by its short name, and the stream's tokens are counted.
    let (_mock, base_url) = start(
        &["mock-upstream", "--listen", "127.0.0.1:0", "--name", "acme"],
        &crate_dir,
        false,
        " listening on ",
    );
    let config = std::fs::read_to_string(crate_dir.join("stilts.toml"))
        .unwrap()
        .replace("https://api.acme.example/v1", &base_url)
        .replace("api_key_env = \"ACME_API_KEY\"\n", "")
        .replace("[server]\n", "[server]\nlisten = \"127.0.0.1:0\"\n");
    assert!(config.contains(&base_url), "{config}");
    std::fs::write(crate_dir.join("stilts-test.toml"), config).unwrap();
    let (_gateway, url) = start(
        &["serve", "--config", "stilts-test.toml"],
        &crate_dir,
        true,
        "stilts serving on ",
    );
    let addr = url.trim_start_matches("http://").to_owned();
    let answer = http(
        &addr,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"Say hi."}]}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-provider: acme"),
        "{answer}"
    );
    assert!(answer.contains(r#""finish_reason":"stop""#), "{answer}");
    assert!(answer.contains("data: [DONE]"), "{answer}");
    // The stream's end is accounted once it has been sent: look a bounded number of times.
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = http(&addr, "GET", "/metrics", "");
        if tokens(&metrics, &["provider=\"acme\"", "kind=\"output\""]).is_some_and(|n| n > 0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for kind in ["input", "output"] {
        let kind = format!("kind=\"{kind}\"");
        assert!(
            tokens(&metrics, &["provider=\"acme\"", &kind]).is_some_and(|n| n > 0.0),
            "streamed {kind} tokens not counted:\n{metrics}"
        );
    }
}

/// The template docs/plugins.md used to show passed the final usage chunk through without
/// reporting its usage: its streamed tokens were never counted, and `stilts plugin check` said OK.
#[test]
fn a_plugin_passing_the_usage_chunk_through_unreported_fails_plugin_check() {
    let dir = scratch("usage-unreported");
    let out = stilts()
        .args(["plugin", "new", "leaky", "--dir", "leaky"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let crate_dir = dir.join("leaky");
    share_target(&crate_dir);
    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let reported = "usage: usage_of(&v),\n            done: None,";
    assert!(source.contains(reported), "the template changed:\n{source}");
    std::fs::write(
        &lib,
        source.replace(reported, "usage: None,\n            done: None,"),
    )
    .unwrap();
    let mut cwd = crate_dir.clone();
    let out = run_line("cargo build", &mut cwd);
    assert!(out.status.success(), "{}", text(&out));
    let out = run_line(
        "stilts plugin check leaky --plugin-dir target/debug",
        &mut cwd,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for part in [
        "libleaky_plugin",
        "self-test `stream usage` failed",
        "usage-only chunk",
        "without reporting usage",
        "StreamStep::usage",
    ] {
        assert!(err.contains(part), "missing {part:?}:\n{err}");
    }
}

#[test]
fn plugin_new_refuses_a_bad_name_and_a_non_empty_directory_naming_the_fix() {
    let dir = scratch("refusals");
    let new = |args: &[&str]| {
        stilts()
            .args(["plugin", "new"])
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap()
    };
    let out = new(&["Acme"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lowercase letters"),
        "{}",
        text(&out)
    );
    let out = new(&["acme-plugin"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("`stilts plugin new acme`"),
        "{}",
        text(&out)
    );
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/notes.txt"), "mine").unwrap();
    let out = new(&["acme", "--dir", "taken"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("taken") && err.contains("not empty") && err.contains("--dir"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/notes.txt")).unwrap(),
        "mine"
    );
    let out = new(&["acme", "--stilts-path", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a stilts checkout"),
        "{}",
        text(&out)
    );
    assert!(!dir.join("acme-plugin").exists());
}
