//! Embedding stilts in an application: the router, the plugins and the HTTP client in-process, no
//! gateway server in between.
//!
//! Starts two fake OpenAI-dialect upstreams on loopback, the first one answering 503 to
//! everything, builds a gateway over them from a config string, sends one plain and one streamed
//! request, and prints which provider served each and how many attempts it took.
//!
//! ```sh
//! cargo build --release -p stilts-plugin-openai     # the plugin library the config names
//! cargo run --release -p stilts-gateway --example embed
//! ```

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use stilts_gateway::mock::{Faults, MockConfig, MockUpstream};
use stilts_gateway::{ChatReply, Gateway, GatewayConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let primary = MockUpstream::start_local(MockConfig::named("primary")).await?;
    primary.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let backup = MockUpstream::start_local(MockConfig::named("backup")).await?;

    // The same TOML as a config file; `plugin = "openai"` is looked up beside this binary (and in
    // its parent directory, where cargo puts the plugin libraries), or in STILTS_PLUGIN_DIR.
    let config = format!(
        r#"
        [routes.chat.router]
        policy = "priority"

        [[routes.chat.deployments]]
        name = "primary"
        plugin = "openai"
        base_url = "{}"
        model = "gpt-4o-mini"

        [[routes.chat.deployments]]
        name = "backup"
        plugin = "openai"
        base_url = "{}"
        model = "gpt-4o-mini"
        priority = 1
        "#,
        primary.base_url(),
        backup.base_url()
    );
    let valid = GatewayConfig::parse(&config)?.validate(Path::new("."))?;
    let gateway = Gateway::new(&valid)?;

    let plain =
        Bytes::from_static(br#"{"model":"chat","messages":[{"role":"user","content":"Say hi."}]}"#);
    match gateway.chat(plain, Some(Duration::from_secs(10))).await {
        Ok(ChatReply::Complete {
            provider,
            attempts,
            body,
        }) => {
            let answer: serde_json::Value = serde_json::from_slice(&body)?;
            if provider != "backup" {
                return Err(format!("expected the backup to answer, got {provider}").into());
            }
            println!(
                "plain: served by {provider} after {attempts} attempt(s): {}",
                answer["choices"][0]["message"]["content"]
            );
        }
        Ok(ChatReply::Stream { .. }) => return Err("a plain request got a stream".into()),
        Err(e) => return Err(format!("plain request failed: {}", e.message).into()),
    }

    let streamed = Bytes::from_static(
        br#"{"model":"chat","stream":true,"messages":[{"role":"user","content":"Say hi."}]}"#,
    );
    match gateway.chat(streamed, Some(Duration::from_secs(10))).await {
        Ok(ChatReply::Stream {
            provider,
            attempts,
            mut stream,
        }) => {
            let mut events = 0;
            while let Some(sse) = stream.next().await {
                events += sse
                    .split(|b| *b == b'\n')
                    .filter(|l| l.starts_with(b"data: "))
                    .count();
            }
            println!(
                "stream: served by {provider} after {attempts} attempt(s), {events} SSE events"
            );
        }
        Ok(ChatReply::Complete { .. }) => return Err("a stream request got a plain answer".into()),
        Err(e) => return Err(format!("stream request failed: {}", e.message).into()),
    }
    Ok(())
}
