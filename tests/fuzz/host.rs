//! The checks of the host-side parsers of stilts-plugin, as plain functions of the input (each
//! panics when a property fails): the proptest targets of `crates/plugin/tests/fuzz.rs` and the
//! AFL++ targets of `fuzz/` both call them. Included with `#[path]`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test support

use serde_json::Value;
use stilts_plugin::canonical::ChatRequest;
use stilts_plugin::meta;
use stilts_plugin::sse::{SseEvent, SseFramer, frame_all};
use stilts_plugin::types::http::{self, MAX_RETRY_AFTER_MS};

/// The SSE framer on `bytes` with a line limit of `limit`: read whole and read in pieces cut at
/// `cuts` (positions, in any order), it gives the same events (or refuses the bytes in both
/// readings, after delivering a prefix of the events they hold); no event has a CR in its data,
/// a line break in its name or data over the limit; and the events written out as SSE frame to the
/// same events.
pub fn check_framer(bytes: &[u8], cuts: &[usize], limit: usize) {
    let mut whole = SseFramer::new(limit);
    let whole_events = whole.push(bytes);
    let whole_pending = whole.finish();
    let (events, end) = frame_in_pieces(bytes, cuts, limit);
    let (unlimited, _) = frame_all(bytes).expect("no line of a fuzz input is 8 MiB long");
    match (&whole_events, &end) {
        (Ok(w), Ok(pending)) => {
            assert_eq!(&events, w, "the events depend on how the bytes were split");
            assert_eq!(
                *pending, whole_pending,
                "the pending flag depends on the split"
            );
        }
        (Err(_), Err(())) => assert!(
            unlimited.starts_with(&events),
            "delivered events that are not the transcript's"
        ),
        (w, e) => panic!("refused in one reading only: whole {w:?}, pieces {e:?}"),
    }
    for ev in &events {
        assert!(!ev.data.contains(&b'\r'), "a CR in event data: {ev:?}");
        assert!(ev.data.len() <= limit, "event data over the limit: {ev:?}");
        if let Some(name) = &ev.event {
            assert!(
                !name.contains(['\r', '\n']),
                "a line break in an event name: {ev:?}"
            );
        }
    }
    let again = frame_all(&encode(&events)).expect("short lines");
    assert_eq!(
        again,
        (events, false),
        "written out and framed again, the events changed"
    );
}

/// Frames `bytes` read in pieces cut at `cuts`; the events of every piece, and the error if one
/// piece was refused (the framer is not fed after that, as the host cuts the stream there).
fn frame_in_pieces(
    bytes: &[u8],
    cuts: &[usize],
    limit: usize,
) -> (Vec<SseEvent>, Result<bool, ()>) {
    let mut points: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    points.sort_unstable();
    let mut f = SseFramer::new(limit);
    let mut events = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain(std::iter::once(bytes.len())) {
        match f.push(&bytes[last..p]) {
            Ok(evs) => events.extend(evs),
            Err(_) => return (events, Err(())),
        }
        last = p;
    }
    (events, Ok(f.finish()))
}

/// Writes events out as an SSE transcript.
fn encode(events: &[SseEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for ev in events {
        if let Some(name) = &ev.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        for line in ev.data.split(|&b| b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

/// The canonical request deserializer on `body`, through `ChatRequest::from_json` as plugins read
/// requests: what it accepts is JSON, serialises and reads back the same, and reads the same from a
/// JSON tree and from a reader.
///
/// A JSON tree cannot be read from JSON nested deeper than serde_json's recursion limit (128),
/// while the request reader skips a field it ignores without recursing, at any depth: such a body
/// is JSON all the same (the gateway refuses it with a 400 before a plugin sees it,
/// `crates/gateway/tests/client_limits.rs`), so only the tree comparison is left out for it.
pub fn check_canonical_request(body: &[u8]) {
    let Ok(req) = ChatRequest::from_json(body) else {
        return;
    };
    let out = serde_json::to_vec(&req).unwrap();
    let back: ChatRequest = serde_json::from_slice(&out).unwrap();
    assert_eq!(back, req, "serialised and read again, the request changed");
    match serde_json::from_slice::<Value>(body) {
        Ok(tree) => {
            let from_tree: ChatRequest = serde_json::from_value(tree).unwrap();
            assert_eq!(from_tree, req, "read from a JSON tree, the request differs");
        }
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {}
        Err(e) => panic!("accepted a body that is not JSON ({e})"),
    }
    let from_reader: ChatRequest = serde_json::from_reader(body).unwrap();
    assert_eq!(from_reader, req, "read from a reader, the request differs");
}

/// The retry hint of `headers`: at most [`MAX_RETRY_AFTER_MS`], and the value of one of the two
/// headers.
pub fn check_retry_after(headers: &[(String, String)]) {
    for (_, value) in headers {
        if let Some(ms) = http::parse_seconds_ms(value) {
            assert!(ms <= MAX_RETRY_AFTER_MS, "{value:?} gave {ms} ms");
        }
    }
    let Some(ms) = http::retry_after_ms(headers) else {
        return;
    };
    assert!(ms <= MAX_RETRY_AFTER_MS, "{headers:?} gave {ms} ms");
    let from_ms = http::header(headers, "retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .map(f64::round);
    let from_secs = http::header(headers, "retry-after").and_then(http::parse_seconds_ms);
    assert!(
        from_ms == Some(ms as f64) || from_secs == Some(ms),
        "{headers:?} gave {ms} ms, from neither header"
    );
}

/// The binary metadata decoders of ABI 1.2 (`stilts_plugin::meta`) on `bytes`, read as each of
/// the three metas: never a panic, and what one accepts, encoded again, reads back the same.
pub fn check_meta(bytes: &[u8]) {
    let inner = |out: Vec<u8>| {
        let parts = stilts_plugin::abi::frames::split(&out).unwrap();
        assert_eq!(parts.len(), 1, "a meta is one frame");
        parts[0].to_vec()
    };
    if let Ok(head) = meta::decode_request_head(bytes) {
        let mut out = Vec::new();
        meta::push_request_head(&mut out, &head.method, &head.url, &head.headers).unwrap();
        let again = meta::decode_request_head(&inner(out)).unwrap();
        assert_eq!(
            (again.method, again.url, again.headers),
            (head.method, head.url, head.headers),
            "a request head changed when encoded again"
        );
    }
    if let Ok(m) = meta::decode_response_meta(bytes) {
        let mut out = Vec::new();
        meta::push_response_meta(
            &mut out,
            m.usage.as_ref(),
            m.model.as_deref(),
            m.finish_reason,
        )
        .unwrap();
        let again = meta::decode_response_meta(&inner(out)).unwrap();
        assert_eq!(
            (again.usage, again.model, again.finish_reason),
            (m.usage, m.model, m.finish_reason),
            "a response meta changed when encoded again"
        );
    }
    if let Ok(m) = meta::decode_step_meta(bytes) {
        let mut out = Vec::new();
        meta::push_step_meta(&mut out, m.usage.as_ref(), m.done.as_ref()).unwrap();
        let again = meta::decode_step_meta(&inner(out)).unwrap();
        assert_eq!(
            (again.usage, again.done),
            (m.usage, m.done),
            "a step meta changed when encoded again"
        );
    }
}
