//! The rate-limit headers providers send on their answers, read as a core [`Quota`] (what is left
//! of the limits and when they reset), so the router steers traffic away before a 429.
//!
//! * OpenAI (and compatible servers): `x-ratelimit-remaining-requests`,
//!   `x-ratelimit-remaining-tokens`, and `x-ratelimit-reset-requests` / `-tokens` as a duration
//!   (`1s`, `6m0s`, `20ms`, `0.5s`).
//! * Anthropic: `anthropic-ratelimit-requests-remaining`, `anthropic-ratelimit-tokens-remaining`
//!   (else `-input-tokens-remaining`), and `-reset` as an RFC 3339 time.
//!
//! Request limits refill continuously: with the limit header, the reset the router keeps is the
//! time one request takes to free up, not the full replenishment (see `next_unit`).
//!
//! A count without a readable reset is ignored (the router would not know when it ends), and a
//! reset further away than [`MAX_RESET`] is capped there: a broken header must not keep a
//! provider out for long. Nothing here fails: an unreadable header is as good as none.

use http::{HeaderMap, HeaderName};
use std::time::{Duration, SystemTime};
use stilts_core::Quota;

/// The furthest reset a header can set.
pub(crate) const MAX_RESET: Duration = Duration::from_secs(15 * 60);

/// The headers of one limit: what is left, when it resets (and how the vendor writes that), and
/// the limit itself.
struct LimitHeaders {
    remaining: HeaderName,
    reset: HeaderName,
    /// The time until the reset, from the reset header's text and the wall-clock time.
    reset_in: fn(&str, SystemTime) -> Option<Duration>,
    limit: HeaderName,
    /// A request limit (refills one request at a time) rather than a token limit.
    requests: bool,
}

impl LimitHeaders {
    const fn new(
        remaining: &'static str,
        reset: &'static str,
        limit: &'static str,
        reset_in: fn(&str, SystemTime) -> Option<Duration>,
    ) -> Self {
        LimitHeaders {
            remaining: HeaderName::from_static(remaining),
            reset: HeaderName::from_static(reset),
            reset_in,
            limit: HeaderName::from_static(limit),
            requests: false,
        }
    }

    const fn of_requests(mut self) -> Self {
        self.requests = true;
        self
    }
}

/// Named once, so reading an answer's headers hashes each name and parses none (this runs on
/// every successful answer).
static OPENAI_REQUESTS: LimitHeaders = LimitHeaders::new(
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-requests",
    openai_reset,
)
.of_requests();
static OPENAI_TOKENS: LimitHeaders = LimitHeaders::new(
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-tokens",
    openai_reset,
);
static ANTHROPIC_REQUESTS: LimitHeaders = LimitHeaders::new(
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-requests-limit",
    anthropic_reset,
)
.of_requests();
static ANTHROPIC_TOKENS: LimitHeaders = LimitHeaders::new(
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-tokens-limit",
    anthropic_reset,
);
static ANTHROPIC_INPUT_TOKENS: LimitHeaders = LimitHeaders::new(
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    anthropic_reset,
);

/// The quota `headers` report, read at wall-clock time `now` (for Anthropic's absolute resets).
pub(crate) fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Quota> {
    // Most answers carry none: a look at the names costs less than the lookups.
    let reported = headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")
    });
    if !reported {
        return None;
    }
    let text = |name: &HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let count = |name: &HeaderName| text(name).and_then(|v| v.parse::<u64>().ok());
    let read = |limit: &LimitHeaders| {
        let left = count(&limit.remaining)?;
        let reset = text(&limit.reset).and_then(|v| (limit.reset_in)(v, now))?;
        Some((left, next_unit(limit, left, count(&limit.limit), reset)))
    };
    let quota = Quota {
        requests: read(&OPENAI_REQUESTS).or_else(|| read(&ANTHROPIC_REQUESTS)),
        tokens: read(&OPENAI_TOKENS)
            .or_else(|| read(&ANTHROPIC_TOKENS))
            .or_else(|| read(&ANTHROPIC_INPUT_TOKENS)),
    };
    (quota != Quota::default()).then_some(quota)
}

/// How long what is `left` holds. Both vendors report when the limit is *fully* replenished;
/// their limits refill continuously, so with the limit known a request is free again after the
/// full reset divided by the units used: the router forgets the count then and sends again (and
/// learns the new count from that answer), instead of keeping the provider out until the bucket
/// is full. Token limits keep the full reset (a request needs many tokens at once).
fn next_unit(headers: &LimitHeaders, left: u64, limit: Option<u64>, full: Duration) -> Duration {
    let full = full.min(MAX_RESET);
    match limit {
        Some(limit) if headers.requests && limit > left => {
            full / u32::try_from(limit - left).unwrap_or(u32::MAX)
        }
        _ => full,
    }
}

/// OpenAI's reset: a duration (see [`duration`]).
fn openai_reset(text: &str, _now: SystemTime) -> Option<Duration> {
    duration(text)
}

/// Anthropic's reset: an RFC 3339 time, `now` or sooner in the past meaning at once.
fn anthropic_reset(text: &str, now: SystemTime) -> Option<Duration> {
    let at = humantime::parse_rfc3339(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A reset duration as OpenAI writes it: `1s`, `6m0s`, `1h2m3s`, `20ms`, or decimal seconds
/// (`0.5s`, `2.25`).
fn duration(v: &str) -> Option<Duration> {
    if let Ok(d) = humantime::parse_duration(v) {
        return Some(d);
    }
    let secs: f64 = v.strip_suffix('s').unwrap_or(v).parse().ok()?;
    (secs.is_finite() && secs >= 0.0 && secs <= MAX_RESET.as_secs_f64())
        .then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn openai_counts_and_durations() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let q = from_headers(&h, SystemTime::now()).unwrap();
        assert_eq!(q.requests, Some((59, Duration::from_secs(1))));
        assert_eq!(q.tokens, Some((149_984, Duration::from_secs(360))));
        for (text, want) in [
            ("20ms", Duration::from_millis(20)),
            ("0.5s", Duration::from_millis(500)),
            ("2.25", Duration::from_millis(2_250)),
            ("1h2m3s", Duration::from_secs(3_723)),
        ] {
            assert_eq!(duration(text), Some(want), "{text}");
        }
    }

    #[test]
    fn with_the_limit_a_request_count_holds_until_one_request_frees() {
        // 60 a minute, none left, full in 60 s: one frees every second.
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "60s"),
            ("x-ratelimit-limit-tokens", "1000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "60s"),
        ]);
        let q = from_headers(&h, SystemTime::now()).unwrap();
        assert_eq!(q.requests, Some((0, Duration::from_secs(1))));
        assert_eq!(q.tokens, Some((0, Duration::from_secs(60))));
    }

    #[test]
    fn anthropic_resets_are_absolute_times() {
        let now = humantime::parse_rfc3339("2026-11-30T21:00:00Z").unwrap();
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-30T21:00:02Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "12000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-11-30T21:00:30Z",
            ),
        ]);
        let q = from_headers(&h, now).unwrap();
        assert_eq!(q.requests, Some((0, Duration::from_secs(2))));
        assert_eq!(q.tokens, Some((12_000, Duration::from_secs(30))));
        // A reset in the past is now.
        let later = now + Duration::from_secs(60);
        assert_eq!(
            from_headers(&h, later).unwrap().requests,
            Some((0, Duration::ZERO))
        );
    }

    #[test]
    fn unreadable_or_unbounded_headers_are_ignored_or_capped() {
        let now = SystemTime::now();
        assert_eq!(from_headers(&HeaderMap::new(), now), None);
        // A count without a reset, a reset without a count, garbage: nothing.
        for pairs in [
            &[("x-ratelimit-remaining-requests", "5")][..],
            &[("x-ratelimit-reset-requests", "1s")][..],
            &[
                ("x-ratelimit-remaining-requests", "-1"),
                ("x-ratelimit-reset-requests", "1s"),
            ][..],
            &[
                ("x-ratelimit-remaining-requests", "5"),
                ("x-ratelimit-reset-requests", "soon"),
            ][..],
            &[
                ("anthropic-ratelimit-requests-remaining", "5"),
                ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ][..],
        ] {
            assert_eq!(from_headers(&headers(pairs), now), None, "{pairs:?}");
        }
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "9999h"),
        ]);
        assert_eq!(
            from_headers(&h, now).unwrap().requests,
            Some((0, MAX_RESET))
        );
    }

    /// Fuzzing the headers (issue: every parser fed from outside): any bytes in any of the
    /// headers read, each vendor's or both at once, never panic, and what is read is bounded: a
    /// reset within [`MAX_RESET`], a count that came from a header.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const NAMES: [&str; 13] = [
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
            "anthropic-ratelimit-tokens-limit",
        ];

        /// A header value: plausible (numbers at their edges, durations, RFC 3339 times) or any
        /// visible bytes a header can carry.
        fn value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop_oneof![
                    Just("0".to_owned()),
                    Just("18446744073709551615".to_owned()),
                    Just("18446744073709551616".to_owned()),
                    Just("-1".to_owned()),
                    Just("1e309".to_owned()),
                    Just("NaN".to_owned()),
                    Just("99999999999999999999h".to_owned()),
                    Just("1h2m3.5s".to_owned()),
                    Just("0.000000001s".to_owned()),
                    Just("9999-12-31T23:59:59Z".to_owned()),
                    Just("1970-01-01T00:00:00Z".to_owned()),
                    Just("2026-13-45T99:99:99+25:00".to_owned()),
                    any::<u64>().prop_map(|n| n.to_string()),
                    (0.0f64..1e12).prop_map(|f| format!("{f}s")),
                    "[0-9]{1,30}(ms|s|m|h|d|us|ns)?",
                ]
                .prop_map(String::into_bytes),
                proptest::collection::vec(0x20u8..0x7f, 0..64),
                proptest::collection::vec(any::<u8>(), 0..32),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]
            #[test]
            fn fuzz_rate_limit_headers(
                picked in proptest::collection::vec((0..NAMES.len(), value()), 0..10),
                now_s in 0u64..4_102_444_800,
            ) {
                let mut h = HeaderMap::new();
                for (name, bytes) in &picked {
                    // Bytes a header cannot carry never reach the parser.
                    if let Ok(v) = http::HeaderValue::from_bytes(bytes) {
                        h.insert(NAMES[*name], v);
                    }
                }
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now_s);
                if let Some(q) = from_headers(&h, now) {
                    for (left, reset) in [q.requests, q.tokens].into_iter().flatten() {
                        prop_assert!(reset <= MAX_RESET, "{reset:?} from {h:?}");
                        prop_assert!(
                            h.values().any(|v| {
                                v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok()) == Some(left)
                            }),
                            "{left} is in no header: {h:?}"
                        );
                    }
                }
            }
        }
    }
}
