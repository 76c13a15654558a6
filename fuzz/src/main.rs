//! AFL++ targets of stilts, one binary: `stilts-fuzz TARGET` fuzzes TARGET (under `cargo afl fuzz`,
//! with `tests/fuzz-corpus/<corpus>/` as its seeds), `stilts-fuzz TARGET --run FILE...` runs the
//! check on saved inputs (a crash AFL++ found, to reproduce it). `scripts/fuzz.sh --afl` drives it;
//! docs/testing.md explains. The checks are the files the proptest targets run in `cargo test`.

#[path = "../../tests/fuzz/config.rs"]
mod config;
#[path = "../../tests/fuzz/host.rs"]
mod host;
#[path = "../../tests/fuzz/mutate.rs"]
mod mutate;
#[path = "../../tests/fuzz/plugin.rs"]
mod plugin;
#[path = "../../tests/fuzz/scenario.rs"]
mod scenario;

#[cfg(any(feature = "openai", feature = "anthropic", feature = "gemini"))]
use plugin::Output;

/// A target: its name, its seed folder under tests/fuzz-corpus, its check.
type Target = (&'static str, &'static str, fn(&[u8]));

/// The targets of this build: those of the host, the config and the scenario, and those of the
/// plugin of the build's feature (`openai`, `anthropic` or `gemini`).
fn targets() -> Vec<Target> {
    #[allow(unused_mut)] // reason: only a build with a plugin feature adds to it
    let mut t: Vec<Target> = vec![
        ("sse", "sse", sse),
        ("canonical-request", "request", |b| {
            host::check_canonical_request(b)
        }),
        ("retry-after", "retry-after", retry_after),
        ("binary-meta", "meta", host::check_meta),
        ("gateway-config", "gateway-config", |b| {
            if let Ok(text) = std::str::from_utf8(b) {
                config::check_gateway_config(text);
            }
        }),
        ("scenario", "scenario", |b| {
            if let Ok(text) = std::str::from_utf8(b) {
                scenario::check_scenario(text, std::path::Path::new("/nonexistent/fuzz.toml"));
            }
        }),
    ];
    #[cfg(feature = "openai")]
    {
        use stilts_plugin_openai::OpenAi;
        t.extend([
            (
                "openai-response",
                "openai-response",
                (|b| plugin::parse_response(&OpenAi, Output::PassThrough, 200, &[], b))
                    as fn(&[u8]),
            ),
            ("openai-error", "openai-error", |b| {
                plugin::classify_error(&OpenAi, 429, &[], b)
            }),
            ("openai-stream", "openai-stream", |b| {
                plugin::stream(&OpenAi, Output::PassThrough, b);
            }),
            ("openai-request", "request", |b| {
                plugin::build_request(&OpenAi, b, &deployment())
            }),
        ]);
    }
    #[cfg(feature = "anthropic")]
    {
        use stilts_plugin_anthropic::Anthropic;
        t.extend([
            (
                "anthropic-response",
                "anthropic-response",
                (|b| plugin::parse_response(&Anthropic, Output::Canonical, 200, &[], b))
                    as fn(&[u8]),
            ),
            ("anthropic-error", "anthropic-error", |b| {
                plugin::classify_error(&Anthropic, 529, &[], b)
            }),
            ("anthropic-stream", "anthropic-stream", |b| {
                plugin::stream(&Anthropic, Output::Canonical, b);
            }),
            ("anthropic-request", "request", |b| {
                plugin::build_request(&Anthropic, b, &deployment())
            }),
        ]);
    }
    #[cfg(feature = "gemini")]
    {
        use stilts_plugin_gemini::Gemini;
        t.extend([
            (
                "gemini-response",
                "gemini-response",
                (|b| plugin::parse_response(&Gemini, Output::Canonical, 200, &[], b)) as fn(&[u8]),
            ),
            ("gemini-error", "gemini-error", |b| {
                plugin::classify_error(&Gemini, 429, &[], b)
            }),
            ("gemini-stream", "gemini-stream", |b| {
                plugin::stream(&Gemini, Output::Canonical, b);
            }),
            ("gemini-request", "request", |b| {
                plugin::build_request(&Gemini, b, &deployment())
            }),
        ]);
    }
    t
}

#[cfg(any(feature = "openai", feature = "anthropic", feature = "gemini"))]
fn deployment() -> stilts_plugin::DeploymentConfig {
    plugin::deployment("fuzz-model", Default::default())
}

/// The first byte picks the line limit and up to 7 cut points (the next bytes, as fractions of
/// the rest); the rest is the transcript.
fn sse(b: &[u8]) {
    let Some((&head, rest)) = b.split_first() else {
        return;
    };
    let cuts = usize::from(head & 7).min(rest.len());
    let (cut_bytes, bytes) = rest.split_at(cuts);
    let cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&c| usize::from(c) * bytes.len() / 255)
        .collect();
    let limit = if head & 0x80 == 0 {
        stilts_plugin::sse::SseFramer::DEFAULT_MAX_LINE_BYTES
    } else {
        usize::from(head >> 3 & 0x0f) * 16 + 1
    };
    host::check_framer(bytes, &cuts, limit);
}

/// The bytes as a header value, under each retry header and both at once.
fn retry_after(b: &[u8]) {
    let v = String::from_utf8_lossy(b).into_owned();
    for names in [
        &["retry-after"][..],
        &["retry-after-ms"],
        &["retry-after-ms", "retry-after"],
    ] {
        let headers: Vec<(String, String)> =
            names.iter().map(|n| ((*n).to_owned(), v.clone())).collect();
        host::check_retry_after(&headers);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let targets = targets();
    let Some(&(_, corpus, check)) = args
        .first()
        .and_then(|t| targets.iter().find(|(name, _, _)| name == t))
    else {
        eprintln!(
            "usage: stilts-fuzz TARGET [--corpus | --run FILE...]\ntargets of this build (seed folder):"
        );
        for (name, corpus, _) in &targets {
            eprintln!("  {name} (tests/fuzz-corpus/{corpus})");
        }
        std::process::exit(2);
    };
    if args.get(1).map(String::as_str) == Some("--corpus") {
        println!("{corpus}");
        return;
    }
    if args.get(1).map(String::as_str) == Some("--run") {
        for file in &args[2..] {
            let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
            check(&bytes);
            eprintln!("{file}: ok");
        }
        return;
    }
    afl::fuzz!(|data: &[u8]| {
        check(data);
    });
}
