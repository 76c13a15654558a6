//! TOML documents as JSON trees, for the value-level mutations of `mutate.rs` (included beside it
//! with `#[path]` by the fuzz tests of TOML formats). A value TOML cannot hold, such as null, makes
//! a mutation skipped.
#![allow(dead_code)] // reason: test support

use crate::mutate::Codec;

/// TOML, written by the `toml` crate.
pub const TOML: Codec = Codec {
    decode: |b| {
        let table: toml::Table = std::str::from_utf8(b).ok()?.parse().ok()?;
        serde_json::to_value(table).ok()
    },
    encode: |v| toml::to_string(v).ok().map(String::into_bytes),
};
