//! stilts-plugin: the versioned C ABI between the stilts host and provider plugins, both sides of it.
//!
//! A provider plugin is a translator, not a client: it turns a canonical request (OpenAI Chat Completions
//! JSON) into the vendor's HTTP request, turns the vendor's response and stream events back into canonical
//! JSON, and classifies errors. The host owns sockets, TLS, pools, timeouts, cancellation and SSE framing.
//!
//! * [`abi`]: the `#[repr(C)]` table, status codes and byte buffers that cross the `dlopen` boundary, and
//!   the rules for changing them (magic, ABI major/minor, append-only fields).
//! * [`canonical`]: serde types for the canonical format, shared by every plugin.
//! * [`meta`]: the binary form of the metadata frame that starts a plugin's multi-part answers.
//! * [`types`]: deployment config, upstream HTTP request, error classes, plugin description, stream steps.
//! * [`sdk`]: for plugin authors: the [`sdk::Translator`] trait and the [`export_plugin!`] macro.
//! * [`host`]: for the host: [`host::Plugin::load`] and the safe call wrappers.
//! * [`sse`]: an SSE framer the host can use to split a stream into events.
//! * [`testing`]: helpers to test a plugin through its rlib on recorded SSE transcripts.
//!
//! `docs/plugins.md` in the repository walks a plugin author from `stilts plugin new` (which writes a
//! plugin crate) to a loaded plugin.
#![deny(missing_docs)]

pub mod abi;
pub mod canonical;
pub mod host;
pub mod meta;
pub mod sdk;
pub mod sse;
pub mod testing;
pub mod types;

pub use sdk::{PluginError, Translator};
pub use types::{
    ApiKey, Capabilities, DeploymentConfig, ErrorClass, ErrorInfo, HttpRequest, ParsedResponse,
    PluginInfo, StreamEnd, StreamStep,
};
