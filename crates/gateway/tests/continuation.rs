//! Exact continuation of a cut stream on an OpenAI-compatible fallback that declares it
//! (`prefill_continuation = true` and the server's form in `options.continuation`): after bytes
//! reached the client, a cut, a stall or an unparseable event is continued with exactly the text
//! already forwarded as the final assistant message, in the declared form; a fallback that has not
//! declared it is never asked, and the client gets the clean in-band error. A property test over
//! every cut point: the client's text is the primary's forwarded words followed by the fallback's
//! answer, never a word twice or a word lost.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::Value;
use stilts_gateway::mock::{Faults, MockUpstream};

/// The reply of a mock named `name`, one word a chunk.
fn reply_of(name: &str) -> String {
    stilts_gateway::mock::MockConfig::named(name).reply
}

/// The first `k` chunks of `text` as the mock streams them (a word and its following space each).
fn first_chunks(text: &str, k: usize) -> String {
    text.split_inclusive(' ').take(k).collect()
}

/// A route whose primary is `primary` and whose fallback `fallback` has `continuation` (a TOML
/// fragment for the deployment: the declaration and its options, or nothing).
async fn gateway(primary: &MockUpstream, fallback: &MockUpstream, continuation: &str) -> Harness {
    Harness::start(&format!(
        "{SERVER}[routes.chat.router]\npolicy = \"priority\"\ntimeouts = {{ stall_ms = 400 }}\n\
         [[routes.chat.deployments]]\nname = \"primary\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"p\"\n\
         [[routes.chat.deployments]]\nname = \"fallback\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"f\"\npriority = 1\n{continuation}\n",
        primary.base_url(),
        fallback.base_url()
    ))
    .await
}

const VLLM: &str =
    "prefill_continuation = true\noptions = { continuation = \"continue_final_message\" }";
const PREFIX: &str = "prefill_continuation = true\noptions = { continuation = \"prefix\" }";

#[tokio::test]
async fn a_cut_a_stall_and_a_bad_event_each_continue_exactly_on_a_declared_fallback() {
    for (what, faults, declaration) in [
        (
            "cut",
            Faults {
                cut_after: Some(3),
                ..Faults::default()
            },
            VLLM,
        ),
        (
            "stall",
            Faults {
                stall_after: Some(3),
                ..Faults::default()
            },
            PREFIX,
        ),
        (
            "bad event",
            Faults {
                malformed_after: Some(3),
                ..Faults::default()
            },
            VLLM,
        ),
    ] {
        let primary = mock("primary", faults).await;
        let fallback = mock("fallback", Faults::default()).await;
        let h = gateway(&primary, &fallback, declaration).await;
        let (status, headers, body) = h.stream(stream_request("chat")).await;
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(header(&headers, "x-provider"), "primary", "{what}");
        let (text, done, error) = sse_text(&body);
        assert_eq!(error, None, "{what}: {body}");
        assert_eq!(done, 1, "{what}: {body}");
        let forwarded = first_chunks(&reply_of("primary"), 3);
        assert_eq!(
            text,
            format!("{forwarded}{}", reply_of("fallback")),
            "{what}"
        );
        // The fallback was asked to continue exactly the forwarded text, in its declared form.
        let sent = fallback.last_request().unwrap();
        let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["role"], "assistant", "{what}: {sent}");
        assert_eq!(
            last["content"],
            Value::from(forwarded.clone()),
            "{what}: {sent}"
        );
        if declaration == VLLM {
            assert_eq!(sent["continue_final_message"], true, "{what}: {sent}");
            assert_eq!(sent["add_generation_prompt"], false, "{what}: {sent}");
        } else {
            assert_eq!(last["prefix"], true, "{what}: {sent}");
        }
        let m = h.get("/metrics").await;
        assert!(
            m.contains(r#"stilts_stream_interruptions_total{route="chat",provider="primary",action="continued"} 1"#),
            "{what}: {m}"
        );
    }
}

#[tokio::test]
async fn an_undeclared_fallback_is_never_asked_to_continue() {
    let primary = mock(
        "primary",
        Faults {
            cut_after: Some(3),
            ..Faults::default()
        },
    )
    .await;
    let fallback = mock("fallback", Faults::default()).await;
    let h = gateway(&primary, &fallback, "").await;
    let (status, _, body) = h.stream(stream_request("chat")).await;
    assert_eq!(status, 200, "{body}");
    let (text, done, error) = sse_text(&body);
    assert_eq!(text, first_chunks(&reply_of("primary"), 3), "{body}");
    assert_eq!(done, 0, "{body}");
    assert!(error.is_some(), "the clean in-band error: {body}");
    assert_eq!(fallback.stats().requests, 0);
}

#[tokio::test]
async fn a_continuation_form_the_plugin_does_not_know_is_a_config_error() {
    let primary = mock("primary", Faults::default()).await;
    let fallback = mock("fallback", Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        with_plugin(&format!(
            "{SERVER}[[routes.chat.deployments]]\nname = \"a\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n\
             [[routes.chat.deployments]]\nname = \"b\"\nplugin = \"PLUGIN\"\nbase_url = \"{}\"\nmodel = \"m\"\n\
             prefill_continuation = true\noptions = {{ continuation = \"vllm\" }}\n",
            primary.base_url(),
            fallback.base_url()
        )),
    )
    .unwrap();
    let valid = stilts_gateway::GatewayConfig::load(&path).unwrap();
    let e = stilts_gateway::Gateway::new(&valid).unwrap_err();
    assert_eq!(e.path, "routes.chat.deployments[1].options");
    assert!(
        e.problem.contains("continue_final_message"),
        "{}",
        e.problem
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the cut point, the client's text is exactly the forwarded words followed by the
    /// fallback's answer, and the fallback was given exactly the forwarded words.
    #[test]
    fn continuation_never_repeats_or_loses_text(cut in 1u32..10, prefix_form in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let primary = mock("primary", Faults { cut_after: Some(cut), ..Faults::default() }).await;
            let fallback = mock("fallback", Faults::default()).await;
            let h = gateway(&primary, &fallback, if prefix_form { PREFIX } else { VLLM }).await;
            let (_, _, body) = h.stream(stream_request("chat")).await;
            let (text, done, error) = sse_text(&body);
            let forwarded = first_chunks(&reply_of("primary"), cut as usize);
            prop_assert!(error.is_none(), "{}", body);
            prop_assert_eq!(done, 1);
            prop_assert_eq!(text, format!("{forwarded}{}", reply_of("fallback")));
            let sent = fallback.last_request().unwrap();
            let last = sent["messages"].as_array().unwrap().last().unwrap().clone();
            prop_assert_eq!(&last["content"], &Value::from(forwarded));
            Ok(())
        })?;
    }
}
