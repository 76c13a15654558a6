//! Text from outside (clients, upstreams) made safe to log and to echo back.
//!
//! Two hazards: an upstream's error text (or a client's header) carrying control characters can
//! forge log lines (a `\n` followed by a fake `ERROR` record) or drive a terminal (ANSI escapes);
//! and an upstream or an HTTP client may echo a deployment's API key, not only verbatim but
//! percent-encoded (a key sent in a query string) or base64-encoded (inside `Basic` credentials or
//! a token). [`escape`] handles the first, [`KeyScrubber`] the second; `Deployment::failure` applies
//! both to every upstream message before it reaches a log line or a client.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes every control character (C0, DEL, C1) and the Unicode bidirectional overrides, so the
/// text stays on one line and cannot move the cursor, recolour a terminal or reorder what is
/// shown: `\n`, `\r` and `\t` as themselves, others as `\u{..}`. Text without them is borrowed.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What replaces a key.
const REDACTED: &str = "***";

/// Keys shorter than this are only scrubbed verbatim: the encodings of a very short string are
/// short enough to occur by chance.
const MIN_ENCODED_KEY: usize = 8;

/// Finds a secret in text in every form an upstream or an HTTP client may echo it: verbatim,
/// percent-encoded (each byte, upper- or lower-case hex, or only the reserved ones), and base64
/// (standard and URL-safe alphabets, at each of the three byte alignments the key can have inside
/// a longer encoded value, so `Basic base64(user:key)` is caught too).
#[derive(Clone, Debug, Default)]
pub struct KeyScrubber {
    /// The forms to remove, longest first (a longer form may contain a shorter one).
    forms: Vec<String>,
}

impl KeyScrubber {
    /// A scrubber for `key` (none when the key is empty).
    pub fn new(key: &str) -> Self {
        if key.is_empty() {
            return KeyScrubber::default();
        }
        let mut forms = vec![key.to_owned()];
        if key.len() >= MIN_ENCODED_KEY {
            let bytes = key.as_bytes();
            forms.push(percent_encode(bytes, true, false));
            forms.push(percent_encode(bytes, true, true));
            forms.push(percent_encode(bytes, false, false));
            forms.push(percent_encode(bytes, false, true));
            use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
            for offset in 0..3 {
                for inner in [
                    base64_inner(bytes, offset, &STANDARD_NO_PAD),
                    base64_inner(bytes, offset, &URL_SAFE_NO_PAD),
                ] {
                    if inner.len() >= MIN_ENCODED_KEY {
                        forms.push(inner);
                    }
                }
            }
        }
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        KeyScrubber { forms }
    }

    /// `text` with every form of the key replaced by `***`.
    pub fn scrub(&self, text: String) -> String {
        let mut text = text;
        for form in &self.forms {
            if text.contains(form.as_str()) {
                text = text.replace(form.as_str(), REDACTED);
            }
        }
        text
    }
}

/// Percent-encodes `bytes`: all of them (`all`), or all but RFC 3986's unreserved characters.
fn percent_encode(bytes: &[u8], all: bool, upper: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved && !all {
            out.push(char::from(b));
        } else if upper {
            let _ = write!(out, "%{b:02X}");
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

/// The base64 characters that depend only on `key`'s bits when the key starts `offset` bytes
/// into the encoded value: whatever surrounds it, an encoding of a value containing the key at
/// that alignment contains this string.
fn base64_inner(key: &[u8], offset: usize, engine: &impl base64::Engine) -> String {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(key);
    let encoded = engine.encode(&padded);
    // Characters whose six bits all lie inside the key's bits.
    let first = (8 * offset).div_ceil(6);
    let last = 8 * (offset + key.len()) / 6;
    encoded.get(first..last).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Standard base64 with padding, as an HTTP client writes `Basic` credentials.
    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn escape_keeps_text_on_one_line_and_drops_terminal_control() {
        assert!(matches!(escape("plain text"), Cow::Borrowed(_)));
        assert_eq!(
            escape("bad\n2026-01-01T00:00:00Z ERROR forged\r\x1b[31mred\x1b[0m\u{202e}"),
            "bad\\n2026-01-01T00:00:00Z ERROR forged\\r\\u{1b}[31mred\\u{1b}[0m\\u{202e}"
        );
        assert_eq!(escape("tab\there\u{7f}\u{85}"), "tab\\there\\u{7f}\\u{85}");
        // Idempotent: escaped text has nothing left to escape.
        let once = escape("a\nb\x1b").into_owned();
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn scrubs_the_key_verbatim_and_percent_encoded() {
        let key = "sk-test_AbC123+/=xyz";
        let s = KeyScrubber::new(key);
        let enc_upper = percent_encode(key.as_bytes(), false, true);
        assert_eq!(enc_upper, "sk-test_AbC123%2B%2F%3Dxyz");
        for echoed in [
            format!("bad key {key}."),
            format!("GET /v1?key={enc_upper}&x=1"),
            format!(
                "GET /v1?key={}",
                percent_encode(key.as_bytes(), false, false)
            ),
            format!("raw {}", percent_encode(key.as_bytes(), true, true)),
            format!("raw {}", percent_encode(key.as_bytes(), true, false)),
        ] {
            let out = s.scrub(echoed.clone());
            assert!(!out.contains("AbC123"), "{echoed} -> {out}");
            assert!(out.contains(REDACTED), "{out}");
        }
    }

    #[test]
    fn scrubs_the_key_inside_any_base64_value() {
        let key = "sk-proj-0123456789abcdefXYZ";
        let s = KeyScrubber::new(key);
        for prefix in ["", "u:", "us:", "user:", "Bearer "] {
            for suffix in ["", "!", "?x"] {
                let value = format!("{prefix}{key}{suffix}");
                let standard = b64(value.as_bytes());
                let url = standard.replace('+', "-").replace('/', "_");
                for encoded in [standard, url] {
                    let out = s.scrub(format!("Authorization: Basic {encoded}"));
                    assert!(out.contains(REDACTED), "{value:?} as {encoded} -> {out}");
                    // What is left of the encoded value is at most the bits shared with the
                    // neighbours: a few characters, not the key.
                    let left = out.len() - "Authorization: Basic ".len() - REDACTED.len();
                    assert!(left <= b64(format!("{prefix}{suffix}").as_bytes()).len() + 4);
                }
            }
        }
    }

    #[test]
    fn short_or_empty_keys_are_scrubbed_only_verbatim() {
        assert_eq!(KeyScrubber::new("").scrub("text".into()), "text");
        let s = KeyScrubber::new("abc");
        assert_eq!(s.scrub("x abc y YWJj".into()), "x *** y YWJj");
    }
}
