//! The metadata frame of a plugin's answer, in its two encodings: JSON (every ABI 1 plugin) and
//! binary (ABI 1.2, once the host asked for it through `meta_format`).
//!
//! A built request, a parsed response and a stream step each start with one metadata frame (the
//! request's method, URL and headers; the answer's usage, model and finish reason; the step's usage
//! and end) followed by the payload. As JSON, encoding and decoding that frame took about a sixth of
//! the gateway's instructions per request, more than the plugin's own work on the answer; the
//! binary form is a plain sequence of [`frames`](crate::abi::frames):
//!
//! * **request head**: frames `[method, url, name, value, name, value…]`, all UTF-8;
//! * **response meta** and **step meta**: frames of one field each, a tag byte then the field's
//!   bytes, each tag at most once, in any order:
//!
//!   | tag | field | bytes |
//!   |---|---|---|
//!   | 1 | usage | `prompt_tokens`, `completion_tokens`, `total_tokens`: three little-endian `u64` |
//!   | 2 | usage's `prompt_tokens_details` | JSON (only with tag 1) |
//!   | 3 | usage's `completion_tokens_details` | JSON (only with tag 1) |
//!   | 4 | model (response meta only) | UTF-8 |
//!   | 5 | finish reason (response meta only) | one byte: 0 stop, 1 length, 2 tool_calls, 3 content_filter, 4 function_call |
//!   | 6 | end (step meta only) | a [`StreamEnd`] as JSON (rare: once per stream) |
//!
//! Decoding is total: malformed bytes give an error naming what is wrong, never a panic. An
//! unknown tag is an error too: a new field is a new meta format, offered by the host first.

use serde_json::Value;

use crate::abi::frames;
use crate::canonical::{FinishReason, Usage};
use crate::types::{RequestHead, ResponseMeta, StepMeta, StreamEnd};

const USAGE: u8 = 1;
const PROMPT_DETAILS: u8 = 2;
const COMPLETION_DETAILS: u8 = 3;
const MODEL: u8 = 4;
const FINISH: u8 = 5;
const END: u8 = 6;

/// Appends a request head's binary frame (its length, then its inner frames) to `out`. `None` when
/// a part is longer than 4 GiB.
pub fn push_request_head(
    out: &mut Vec<u8>,
    method: &str,
    url: &str,
    headers: &[(String, String)],
) -> Option<()> {
    frames::push_with(out, |out| {
        frames::push(out, method.as_bytes())?;
        frames::push(out, url.as_bytes())?;
        for (name, value) in headers {
            frames::push(out, name.as_bytes())?;
            frames::push(out, value.as_bytes())?;
        }
        Some(())
    })
}

/// Appends a response meta's binary frame to `out`. `None` when a part is longer than 4 GiB or a
/// usage detail cannot be encoded.
pub fn push_response_meta(
    out: &mut Vec<u8>,
    usage: Option<&Usage>,
    model: Option<&str>,
    finish_reason: Option<FinishReason>,
) -> Option<()> {
    frames::push_with(out, |out| {
        if let Some(usage) = usage {
            push_usage(out, usage)?;
        }
        if let Some(model) = model {
            push_field(out, MODEL, model.as_bytes())?;
        }
        if let Some(reason) = finish_reason {
            push_field(out, FINISH, &[finish_byte(reason)])?;
        }
        Some(())
    })
}

/// Appends a step meta's binary frame to `out`.
pub fn push_step_meta(
    out: &mut Vec<u8>,
    usage: Option<&Usage>,
    done: Option<&StreamEnd>,
) -> Option<()> {
    frames::push_with(out, |out| {
        if let Some(usage) = usage {
            push_usage(out, usage)?;
        }
        if let Some(end) = done {
            push_field(out, END, &serde_json::to_vec(end).ok()?)?;
        }
        Some(())
    })
}

/// A request head from its binary frame.
pub fn decode_request_head(buf: &[u8]) -> Result<RequestHead, String> {
    let mut parts = frames::Iter::new(buf);
    let mut text = |what: &str| -> Result<String, String> {
        match parts.next() {
            Some(Some(part)) => std::str::from_utf8(part)
                .map(str::to_owned)
                .map_err(|_| format!("the request's {what} is not UTF-8")),
            Some(None) => Err("malformed frames in the request head".to_owned()),
            None => Err(format!("the request head has no {what}")),
        }
    };
    let method = text("method")?;
    let url = text("url")?;
    let mut headers = Vec::new();
    loop {
        let name = match parts.next() {
            None => break,
            Some(None) => return Err("malformed frames in the request head".to_owned()),
            Some(Some(name)) => name,
        };
        let Some(Some(value)) = parts.next() else {
            return Err("a request header has a name and no value".to_owned());
        };
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            return Err("a request header is not UTF-8".to_owned());
        };
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(RequestHead {
        method,
        url,
        headers,
    })
}

/// A response meta from its binary frame.
pub fn decode_response_meta(buf: &[u8]) -> Result<ResponseMeta, String> {
    let mut meta = ResponseMeta::default();
    let mut usage = UsageFields::default();
    for_each_field(buf, |tag, bytes| {
        match tag {
            MODEL => {
                let model = std::str::from_utf8(bytes).map_err(|_| "the model is not UTF-8")?;
                meta.model = Some(model.to_owned());
            }
            FINISH => {
                meta.finish_reason = Some(match bytes {
                    [b] => finish_reason(*b).ok_or("unknown finish reason")?,
                    _ => return Err("a finish reason is one byte".to_owned()),
                });
            }
            _ => usage.take(tag, bytes)?,
        }
        Ok(())
    })?;
    meta.usage = usage.finish()?;
    Ok(meta)
}

/// A step meta from its binary frame.
pub fn decode_step_meta(buf: &[u8]) -> Result<StepMeta, String> {
    let mut meta = StepMeta::default();
    let mut usage = UsageFields::default();
    for_each_field(buf, |tag, bytes| {
        match tag {
            END => {
                let end = serde_json::from_slice(bytes)
                    .map_err(|e| format!("invalid stream end: {e}"))?;
                meta.done = Some(end);
            }
            _ => usage.take(tag, bytes)?,
        }
        Ok(())
    })?;
    meta.usage = usage.finish()?;
    Ok(meta)
}

fn push_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) -> Option<()> {
    frames::push_with(out, |out| {
        out.push(tag);
        out.extend_from_slice(bytes);
        Some(())
    })
}

fn push_usage(out: &mut Vec<u8>, usage: &Usage) -> Option<()> {
    let mut counts = [0u8; 24];
    for (slot, n) in counts.chunks_exact_mut(8).zip([
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens,
    ]) {
        slot.copy_from_slice(&n.to_le_bytes());
    }
    push_field(out, USAGE, &counts)?;
    if let Some(details) = &usage.prompt_tokens_details {
        push_field(out, PROMPT_DETAILS, &serde_json::to_vec(details).ok()?)?;
    }
    if let Some(details) = &usage.completion_tokens_details {
        push_field(out, COMPLETION_DETAILS, &serde_json::to_vec(details).ok()?)?;
    }
    Some(())
}

/// Calls `f` with each field's tag and bytes, refusing malformed frames, empty fields and a tag
/// seen twice.
fn for_each_field(
    buf: &[u8],
    mut f: impl FnMut(u8, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut seen = 0u64;
    for part in frames::Iter::new(buf) {
        let Some(part) = part else {
            return Err("malformed frames in the meta".to_owned());
        };
        let Some((&tag, bytes)) = part.split_first() else {
            return Err("an empty field in the meta".to_owned());
        };
        let bit = 1u64 << (tag % 64);
        if tag >= 64 || seen & bit != 0 {
            return Err(format!("meta field {tag} is unknown or repeated"));
        }
        seen |= bit;
        f(tag, bytes)?;
    }
    Ok(())
}

/// The usage fields of a meta, gathered in any order.
#[derive(Default)]
struct UsageFields {
    counts: Option<[u64; 3]>,
    prompt_details: Option<Value>,
    completion_details: Option<Value>,
}

impl UsageFields {
    fn take(&mut self, tag: u8, bytes: &[u8]) -> Result<(), String> {
        let details = || {
            serde_json::from_slice::<Value>(bytes)
                .map_err(|e| format!("invalid usage details: {e}"))
        };
        match tag {
            USAGE => {
                if bytes.len() != 24 {
                    return Err("usage is three 8-byte counts".to_owned());
                }
                let mut counts = [0u64; 3];
                for (n, chunk) in counts.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut le = [0u8; 8];
                    le.copy_from_slice(chunk);
                    *n = u64::from_le_bytes(le);
                }
                self.counts = Some(counts);
            }
            PROMPT_DETAILS => self.prompt_details = Some(details()?),
            COMPLETION_DETAILS => self.completion_details = Some(details()?),
            _ => return Err(format!("meta field {tag} is unknown here")),
        }
        Ok(())
    }

    fn finish(self) -> Result<Option<Usage>, String> {
        match self.counts {
            Some([prompt_tokens, completion_tokens, total_tokens]) => Ok(Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens,
                prompt_tokens_details: self.prompt_details,
                completion_tokens_details: self.completion_details,
            })),
            None if self.prompt_details.is_some() || self.completion_details.is_some() => {
                Err("usage details without usage".to_owned())
            }
            None => Ok(None),
        }
    }
}

fn finish_byte(reason: FinishReason) -> u8 {
    match reason {
        FinishReason::Stop => 0,
        FinishReason::Length => 1,
        FinishReason::ToolCalls => 2,
        FinishReason::ContentFilter => 3,
        FinishReason::FunctionCall => 4,
    }
}

fn finish_reason(byte: u8) -> Option<FinishReason> {
    Some(match byte {
        0 => FinishReason::Stop,
        1 => FinishReason::Length,
        2 => FinishReason::ToolCalls,
        3 => FinishReason::ContentFilter,
        4 => FinishReason::FunctionCall,
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // reason: tests
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inner(buf: &[u8]) -> &[u8] {
        let parts = frames::split(buf).unwrap();
        assert_eq!(parts.len(), 1, "one outer frame");
        parts[0]
    }

    #[test]
    fn a_request_head_round_trips() {
        let headers = vec![
            ("authorization".to_owned(), "Bearer k".to_owned()),
            ("x-empty".to_owned(), String::new()),
        ];
        let mut out = Vec::new();
        push_request_head(&mut out, "POST", "http://h/v1/chat", &headers).unwrap();
        let head = decode_request_head(inner(&out)).unwrap();
        assert_eq!(
            (head.method.as_str(), head.url.as_str()),
            ("POST", "http://h/v1/chat")
        );
        assert_eq!(head.headers, headers);
    }

    #[test]
    fn a_request_head_without_url_or_with_a_lone_name_is_refused() {
        let mut one = Vec::new();
        frames::push(&mut one, b"POST").unwrap();
        assert!(decode_request_head(&one).unwrap_err().contains("url"));
        let mut lone = one.clone();
        frames::push(&mut lone, b"/x").unwrap();
        frames::push(&mut lone, b"x-name").unwrap();
        assert!(decode_request_head(&lone).unwrap_err().contains("no value"));
    }

    #[test]
    fn repeated_unknown_and_misplaced_fields_are_refused() {
        let mut twice = Vec::new();
        push_field(&mut twice, MODEL, b"a").unwrap();
        push_field(&mut twice, MODEL, b"b").unwrap();
        assert!(decode_response_meta(&twice).is_err());
        let mut unknown = Vec::new();
        push_field(&mut unknown, 200, b"x").unwrap();
        assert!(decode_response_meta(&unknown).is_err());
        let mut end_in_response = Vec::new();
        push_field(&mut end_in_response, END, br#"{"end":"clean"}"#).unwrap();
        assert!(decode_response_meta(&end_in_response).is_err());
        let mut details_alone = Vec::new();
        push_field(&mut details_alone, PROMPT_DETAILS, b"{}").unwrap();
        assert!(decode_step_meta(&details_alone).is_err());
        assert!(decode_response_meta(&[1, 0, 0, 0]).is_err());
    }

    fn usage() -> impl Strategy<Value = Option<Usage>> {
        let details =
            prop::option::of((0u64..1000).prop_map(|n| serde_json::json!({"cached_tokens": n})));
        prop::option::of(
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                details.clone(),
                details,
            )
                .prop_map(|(p, c, t, pd, cd)| Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                    total_tokens: t,
                    prompt_tokens_details: pd,
                    completion_tokens_details: cd,
                }),
        )
    }

    fn finish() -> impl Strategy<Value = Option<FinishReason>> {
        prop::option::of((0u8..5).prop_map(|b| finish_reason(b).unwrap()))
    }

    fn end() -> impl Strategy<Value = Option<StreamEnd>> {
        prop::option::of(prop_oneof![
            Just(StreamEnd::Clean),
            ".*".prop_map(|reason| StreamEnd::Cut { reason }),
        ])
    }

    proptest! {
        #[test]
        fn response_meta_round_trips(usage in usage(), model in prop::option::of(".*"), finish in finish()) {
            let mut out = Vec::new();
            push_response_meta(&mut out, usage.as_ref(), model.as_deref(), finish).unwrap();
            let meta = decode_response_meta(inner(&out)).unwrap();
            prop_assert_eq!(meta.usage, usage);
            prop_assert_eq!(meta.model, model);
            prop_assert_eq!(meta.finish_reason, finish);
        }

        #[test]
        fn step_meta_round_trips(usage in usage(), done in end()) {
            let mut out = Vec::new();
            push_step_meta(&mut out, usage.as_ref(), done.as_ref()).unwrap();
            let meta = decode_step_meta(inner(&out)).unwrap();
            prop_assert_eq!(meta.usage, usage);
            prop_assert_eq!(meta.done, done);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request_head(&bytes);
            let _ = decode_response_meta(&bytes);
            let _ = decode_step_meta(&bytes);
        }
    }
}
