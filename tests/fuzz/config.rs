//! The checks of the gateway's config file (`stilts_config`, which the gateway re-exports as
//! `stilts_gateway::config`), as a plain function of the text: the proptest target of
//! `crates/config/tests/fuzz.rs` and the AFL++ target of `fuzz/` both call it. Included with
//! `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test support

use std::path::Path;

use stilts_config::GatewayConfig;
use stilts_core::{Instant, RequestMeta, Router};

/// `GatewayConfig::parse` then `validate` on `text`: a refusal names a place, a problem and a fix;
/// what parses writes out as TOML and parses back the same; what validates holds only values the
/// gateway can use (header names and values an HTTP request can carry, a usable base URL, at least
/// one deployment per route), and each route's router takes a first request.
pub fn check_gateway_config(text: &str) {
    let cfg = match GatewayConfig::parse(text) {
        Ok(cfg) => cfg,
        Err(message) => {
            assert!(
                !message.trim().is_empty(),
                "a parse error without a message"
            );
            return;
        }
    };
    match toml::to_string(&cfg) {
        Ok(out) => match GatewayConfig::parse(&out) {
            Ok(back) => assert_eq!(
                back, cfg,
                "written out and parsed again, the config changed:\n{out}"
            ),
            Err(e) => panic!("a parsed config, written out, does not parse: {e}\n{out}"),
        },
        Err(e) => panic!("a parsed config cannot be written out: {e}"),
    }
    let valid = match cfg.validate(Path::new("/nonexistent/base")) {
        Ok(valid) => valid,
        Err(e) => {
            assert!(
                !e.path.trim().is_empty()
                    && !e.problem.trim().is_empty()
                    && !e.fix.trim().is_empty(),
                "an error without a place, a problem or a fix: {e:?}"
            );
            return;
        }
    };
    assert!(!valid.routes.is_empty(), "a valid config without routes");
    for route in &valid.routes {
        assert!(
            !route.deployments.is_empty(),
            "route {} has no deployment",
            route.name
        );
        for d in &route.deployments {
            assert!(!d.model.trim().is_empty(), "{}: no model", d.name);
            for (name, value) in &d.extra_headers {
                assert!(
                    http::HeaderName::from_bytes(name.as_bytes()).is_ok(),
                    "{}: header name {name:?} cannot be sent",
                    d.name
                );
                assert!(
                    http::HeaderValue::from_str(value).is_ok(),
                    "{}: header {name}'s value {value:?} cannot be sent",
                    d.name
                );
            }
        }
        let mut router = Router::new(route.router.clone(), 1);
        let meta = RequestMeta {
            input_tokens: 100,
            output_tokens: 100,
            stream: false,
            deadline: None,
        };
        let mut call = router.begin(meta, Instant::ZERO);
        let _ = router.next_attempt(&mut call, Instant::ZERO);
    }
}
