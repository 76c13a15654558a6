//! The two text forms `GET /metrics` answers in, and which one a scraper asked for.
//!
//! OpenMetrics 1.0 (`application/openmetrics-text`) names a counter family without its `_total`
//! suffix in `# HELP` / `# TYPE` and ends with `# EOF`. The Prometheus text format 0.0.4
//! (`text/plain; version=0.0.4`), which `promtool check metrics`, curl users and older scrapers
//! read, names the full sample name (`stilts_requests_total`) there and has no `# EOF`. Both come
//! from prometheus-client's own encoders over one registry: no hand-written conversion to drift
//! from either format.
//!
//! A render produces both forms at once ([`Exposition`]), so scrapes that share a render
//! (`Gateway::metrics_snapshot`) never encode again, whichever form each asked for.
//!
//! [`Format::negotiate`] reads the `Accept` header the way Prometheus' own client library does
//! (highest `q` wins, ties go to the earlier entry): OpenMetrics only when the client names
//! `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) above anything the text format
//! serves (`text/plain`, `text/*`, `*/*`); everything else, no header included, gets the text
//! format. Prometheus itself asks for OpenMetrics first.

use bytes::Bytes;

/// The text form of a `/metrics` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text, ending with `# EOF`.
    OpenMetrics,
    /// The Prometheus text exposition format 0.0.4.
    Text,
}

/// `Content-Type` of the OpenMetrics answer.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The form asked for by the values of a request's `Accept` headers (several headers read as
    /// one comma-separated list).
    pub fn negotiate<'a>(accept: impl IntoIterator<Item = &'a str>) -> Format {
        // (q in thousandths, format); the first entry of the highest q wins.
        let mut best: Option<(u16, Format)> = None;
        for header in accept {
            for entry in split_unquoted(header, ',') {
                let Some((q, format)) = media_range(entry) else {
                    continue;
                };
                if q > 0 && best.is_none_or(|(best_q, _)| q > best_q) {
                    best = Some((q, format));
                }
            }
        }
        best.map_or(Format::Text, |(_, format)| format)
    }

    /// The answer's `Content-Type`.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// One `Accept` entry: its weight (0..=1000) and the form that serves it, or `None` when neither
/// form does (`application/json`, an OpenMetrics version this gateway does not write) or the
/// entry is malformed.
fn media_range(entry: &str) -> Option<(u16, Format)> {
    let mut parts = split_unquoted(entry, ';');
    let range = parts.next()?.trim().to_ascii_lowercase();
    let mut q = 1000;
    let mut version = None;
    for param in parts {
        let (name, value) = param.split_once('=')?;
        let value = value.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "q" => q = qvalue(value)?,
            "version" => version = Some(value.to_owned()),
            _ => {}
        }
    }
    let format = match range.as_str() {
        "application/openmetrics-text" => match version.as_deref() {
            None | Some("1.0.0" | "0.0.1") => Format::OpenMetrics,
            Some(_) => return None,
        },
        // Text format 1.0.0 only adds UTF-8 names, which stilts never exports.
        "text/plain" => match version.as_deref() {
            None | Some("0.0.4" | "1.0.0") => Format::Text,
            Some(_) => return None,
        },
        "text/*" | "*/*" => Format::Text,
        _ => return None,
    };
    Some((q, format))
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths.
fn qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Splits `s` at `sep` outside double-quoted strings (a parameter value may quote a comma).
fn split_unquoted(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                c if c == sep && !quoted => {
                    rest = Some(&s[i + c.len_utf8()..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// One render of every metric in both text forms. Cloning shares the bytes.
#[derive(Clone, Debug)]
pub struct Exposition {
    openmetrics: Bytes,
    text: Bytes,
}

impl Exposition {
    /// Encodes `registry` in both forms.
    pub(crate) fn render(registry: &prometheus_client::registry::Registry) -> Exposition {
        let mut openmetrics = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut openmetrics, registry) {
            tracing::error!(error = %e, "metrics encoding (OpenMetrics) failed");
        }
        // The text form is a little shorter: no `# EOF`, slightly shorter floats.
        let mut text = String::with_capacity(openmetrics.len());
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
            tracing::error!(error = %e, "metrics encoding (Prometheus text) failed");
        }
        Exposition {
            openmetrics: Bytes::from(openmetrics),
            text: Bytes::from(text),
        }
    }

    /// The answer in `format`.
    pub fn body(&self, format: Format) -> Bytes {
        match format {
            Format::OpenMetrics => self.openmetrics.clone(),
            Format::Text => self.text.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::{Registry, Unit};
    use std::sync::atomic::AtomicU64;

    const PROMETHEUS_2: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    const PROMETHEUS_3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    fn negotiate(accept: &str) -> Format {
        Format::negotiate([accept])
    }

    #[test]
    fn openmetrics_only_when_asked_for_above_the_text_format() {
        use Format::{OpenMetrics, Text};
        for (accept, want) in [
            (PROMETHEUS_2, OpenMetrics),
            (PROMETHEUS_3, OpenMetrics),
            ("application/openmetrics-text", OpenMetrics),
            ("Application/OpenMetrics-Text; Version=1.0.0", OpenMetrics),
            (
                "application/openmetrics-text; version=\"0.0.1\"",
                OpenMetrics,
            ),
            (
                "text/plain;q=0.5, application/openmetrics-text;q=0.9",
                OpenMetrics,
            ),
            (
                "application/json, application/openmetrics-text;q=0.1",
                OpenMetrics,
            ),
            ("*/*", Text),
            ("", Text),
            ("text/plain", Text),
            ("text/plain;version=0.0.4", Text),
            ("text/*;q=0.8, application/openmetrics-text;q=0.8", Text),
            (
                "application/openmetrics-text;q=0.8, text/*;q=0.8",
                OpenMetrics,
            ),
            ("application/openmetrics-text;q=0", Text),
            ("application/openmetrics-text;version=2.0.0", Text),
            ("application/openmetrics-text;q=banana", Text),
            ("application/openmetrics-text;q=1.5", Text),
            ("application/openmetrics-text;q=0.1234", Text),
            ("application/json", Text),
            (
                "text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=1",
                OpenMetrics,
            ),
            (
                "application/openmetrics-text;x=\"a,b;q=0\";q=0.9, text/plain;q=0.8",
                OpenMetrics,
            ),
        ] {
            assert_eq!(negotiate(accept), want, "Accept: {accept}");
        }
        assert_eq!(Format::negotiate([]), Text, "no Accept header");
        assert_eq!(
            Format::negotiate(["text/plain;q=0.2", "application/openmetrics-text;q=0.3"]),
            OpenMetrics,
            "several Accept headers read as one list"
        );
    }

    #[test]
    fn qvalues_follow_rfc_9110() {
        for (value, want) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.123", Some(123)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("2", None),
            ("0.1234", None),
            ("-1", None),
            (".5", None),
            ("0.5x", None),
        ] {
            assert_eq!(qvalue(value), want, "q={value}");
        }
    }

    #[test]
    fn content_types_name_each_format() {
        assert_eq!(
            Format::OpenMetrics.content_type(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }

    /// Every kind of metric the gateway registers: counters (integer and float), gauges
    /// (integer and float), histograms, with and without labels, a unit, and label values that
    /// need escaping.
    fn registry() -> Registry {
        let mut registry = Registry::with_prefix("stilts");
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register("requests", "Requests", requests.clone());
        requests
            .get_or_create(&vec![("route".into(), "a \"quoted\\\" \nroute".into())])
            .inc_by(3);
        let cost = Counter::<f64, AtomicU64>::default();
        registry.register("cost_usd", "Spend in USD", cost.clone());
        cost.inc_by(0.25);
        let up = Gauge::<i64>::default();
        registry.register("client_connections", "Open connections", up.clone());
        up.set(2);
        let latency = Gauge::<f64, AtomicU64>::default();
        registry.register("latency", "Latency", latency.clone());
        latency.set(0.5);
        let duration = Histogram::new([0.000_005, 0.5, 1.0]);
        registry.register_with_unit(
            "request_duration",
            "Duration",
            Unit::Seconds,
            duration.clone(),
        );
        duration.observe(0.3);
        let bytes = Counter::<u64>::default();
        registry.register_with_unit("sent", "Sent back\\slash", Unit::Bytes, bytes);
        registry
    }

    fn render() -> (String, String) {
        let e = Exposition::render(&registry());
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        (
            text(e.body(Format::OpenMetrics)),
            text(e.body(Format::Text)),
        )
    }

    #[test]
    fn the_text_form_names_full_counter_names_and_has_no_eof() {
        let (_, text) = render();
        for want in [
            "# HELP stilts_requests_total Requests.\n# TYPE stilts_requests_total counter\n",
            "# HELP stilts_cost_usd_total Spend in USD.\n# TYPE stilts_cost_usd_total counter\nstilts_cost_usd_total 0.25\n",
            "# TYPE stilts_client_connections gauge\nstilts_client_connections 2\n",
            "# TYPE stilts_request_duration_seconds histogram\n",
            "stilts_request_duration_seconds_bucket{le=\"+Inf\"} 1\n",
            "stilts_request_duration_seconds_count 1\n",
            "# HELP stilts_sent_bytes_total Sent back\\\\slash.\n# TYPE stilts_sent_bytes_total counter\n",
            // Label values escaped as both formats require.
            "stilts_requests_total{route=\"a \\\"quoted\\\\\\\" \\nroute\"} 3\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        for absent in ["# EOF", "# UNIT", "_created"] {
            assert!(!text.contains(absent), "{absent:?} in\n{text}");
        }
        // Every HELP and TYPE names a sample name that the family's samples use.
        for line in text.lines().filter(|l| l.starts_with("# ")) {
            let name = line.split(' ').nth(2).unwrap();
            let typ = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or_else(|| panic!("no TYPE for {name}"));
            let samples: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split(['{', ' ']).next().unwrap())
                .filter(|s| s.starts_with(name))
                .collect();
            assert!(!samples.is_empty(), "{name} has no samples");
            for s in samples {
                let suffix = &s[name.len()..];
                let allowed: &[&str] = match typ {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    _ => &[""],
                };
                assert!(allowed.contains(&suffix), "{s} under {typ} {name}");
            }
        }
    }

    #[test]
    fn the_openmetrics_form_is_unchanged_and_both_carry_the_same_samples() {
        let (om, text) = render();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert_eq!(om.matches("# EOF").count(), 1);
        assert!(om.contains("# HELP stilts_requests Requests.\n# TYPE stilts_requests counter\n"));
        assert!(om.contains("# UNIT stilts_request_duration_seconds seconds\n"));
        // The same series and values in both, `le` compared as numbers (the text form writes
        // bounds as Go does: 5e-06, not 5e-6).
        let samples = |s: &str| -> Vec<(String, f64)> {
            let mut v: Vec<(String, f64)> = s
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| {
                    let (series, value) = l.rsplit_once(' ').unwrap();
                    let series = match series.split_once("le=\"") {
                        Some((head, tail)) => {
                            let (le, rest) = tail.split_once('"').unwrap();
                            let le: f64 = match le {
                                "+Inf" => f64::INFINITY,
                                le => le.parse().unwrap(),
                            };
                            format!("{head}le={le}{rest}")
                        }
                        None => series.to_owned(),
                    };
                    (series, value.parse().unwrap())
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(samples(&om), samples(&text));
    }
}
