//! Properties of the host-side parsers: the SSE framer and the frame decoder never panic on arbitrary
//! bytes, and the framer's output does not depend on how the bytes were split into reads.
#![allow(clippy::unwrap_used)] // reason: tests

use proptest::prelude::*;
use stilts_plugin::abi::frames;
use stilts_plugin::sse::{SseFramer, frame_all};

fn sse_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"event: x\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b": c\n".to_vec()),
        Just(b"data:[DONE]\n\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|ps| ps.concat())
}

proptest! {
    #[test]
    fn framer_never_panics_and_ignores_read_boundaries(bytes in sse_like(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
        let (whole, pending) = frame_all(&bytes).unwrap();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut f = SseFramer::default();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain(std::iter::once(bytes.len())) {
            got.extend(f.push(&bytes[last..p]).unwrap());
            last = p;
        }
        prop_assert_eq!(&got, &whole);
        prop_assert_eq!(f.finish(), pending);
    }

    #[test]
    fn framer_never_panics_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut f = SseFramer::new(64);
        let _ = f.push(&bytes);
        let _ = f.finish();
    }

    #[test]
    fn frame_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = frames::split(&bytes);
        let _ = frames::decode_headers(&bytes);
    }

    #[test]
    fn header_frames_round_trip(h in prop::collection::vec(("[ -~]{0,20}", "\\PC{0,30}"), 0..8)) {
        let enc = frames::encode_headers(&h).unwrap();
        prop_assert_eq!(frames::decode_headers(&enc).unwrap(), h);
    }
}
