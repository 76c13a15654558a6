//! A strict OpenMetrics 1.0 text parser, for what the gateway writes: every line is metadata
//! (`HELP`, `TYPE`, `UNIT`), a sample, or the final `# EOF`; a family's metadata precede its
//! samples, each at most once, and its lines are contiguous; every sample belongs to the family
//! declared above it, with a suffix its type allows; label names and escapes are valid, label
//! sets unique; values are numbers; counters are not negative; histogram buckets are cumulative
//! and end with `+Inf`, which equals `_count`.

use std::collections::BTreeSet;

pub struct Family {
    pub name: String,
    pub kind: String,
    pub samples: Vec<super::text::Sample>,
}

pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or("does not end with # EOF")?;
    let mut families: Vec<Family> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut metadata = BTreeSet::new();
    let lines = body.split('\n').count();
    for (n, line) in body.split('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            if n + 1 == lines {
                continue; // the newline before `# EOF`
            }
            return Err(at("empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().ok_or_else(|| at("no name".into()))?,
                parts.next(),
            );
            valid_name(name).map_err(at)?;
            if families.last().is_none_or(|f| f.name != name) {
                if !seen.insert(name.to_owned()) {
                    return Err(at(format!("family {name} is not contiguous")));
                }
                families.push(Family {
                    name: name.to_owned(),
                    kind: "unknown".to_owned(),
                    samples: Vec::new(),
                });
                metadata.clear();
            }
            let family = families.last_mut().unwrap();
            if !family.samples.is_empty() {
                return Err(at("metadata after samples".into()));
            }
            if !metadata.insert(what.to_owned()) {
                return Err(at(format!("second {what}")));
            }
            match (what, rest) {
                ("HELP", Some(help)) => check_escapes(help).map_err(at)?,
                ("HELP", None) => {}
                ("TYPE", Some(kind)) => {
                    const KINDS: [&str; 8] = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !KINDS.contains(&kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if kind == "counter" && name.ends_with("_total") {
                        return Err(at("a counter family named with _total".into()));
                    }
                    family.kind = kind.to_owned();
                }
                ("UNIT", Some(unit)) => {
                    if !name.ends_with(&format!("_{unit}")) {
                        return Err(at(format!("{name} does not end with its unit")));
                    }
                }
                _ => return Err(at("not HELP, TYPE or UNIT with a value".into())),
            }
            continue;
        }
        let sample = sample_line(line).map_err(at)?;
        let (name, labels, value) = (&sample.name, &sample.labels, sample.value);
        let family = families
            .last_mut()
            .ok_or_else(|| at("a sample before any family".into()))?;
        if !metadata.contains("TYPE") {
            return Err(at(format!("{} has no TYPE", family.name)));
        }
        let suffix = name
            .strip_prefix(family.name.as_str())
            .ok_or_else(|| at(format!("not in family {}", family.name)))?;
        let allowed: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "gaugehistogram" => &["_bucket", "_gcount", "_gsum"],
            "summary" => &["", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(at(format!("{name} under {} {}", family.kind, family.name)));
        }
        if suffix == "_bucket" && !labels.iter().any(|(k, _)| k == "le") {
            return Err(at("a bucket without le".into()));
        }
        if family.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a counter below zero or NaN".into()));
        }
        family.samples.push(sample);
    }
    for f in &families {
        check_family(f)?;
    }
    Ok(families)
}

fn check_family(f: &Family) -> Result<(), String> {
    let mut keys = BTreeSet::new();
    for s in &f.samples {
        let key = format!("{}{:?}", s.name, s.labels);
        if !keys.insert(key.clone()) {
            return Err(format!("{key} appears twice"));
        }
    }
    if f.kind != "histogram" {
        return Ok(());
    }
    // Per series (labels without le): buckets in order, cumulative, ending at +Inf = _count.
    let series_of = |s: &super::text::Sample| -> String {
        format!(
            "{:?}",
            s.labels
                .iter()
                .filter(|(k, _)| k != "le")
                .collect::<Vec<_>>()
        )
    };
    /// One histogram series: its buckets (bound, count) in order, `_count`, whether `_sum` is there.
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        sum: bool,
    }
    let mut series: std::collections::BTreeMap<String, Series> = Default::default();
    for s in &f.samples {
        let entry = series.entry(series_of(s)).or_default();
        match &s.name[f.name.len()..] {
            "_bucket" => {
                let le = &s.labels.iter().find(|(k, _)| k == "le").unwrap().1;
                entry.buckets.push((number(le)?, s.value));
            }
            "_count" => entry.count = Some(s.value),
            "_sum" => entry.sum = true,
            _ => {}
        }
    }
    for (
        labels,
        Series {
            buckets,
            count,
            sum,
        },
    ) in series
    {
        let last = buckets
            .last()
            .ok_or(format!("{} {labels}: no buckets", f.name))?;
        if last.0 != f64::INFINITY {
            return Err(format!("{} {labels}: no +Inf bucket", f.name));
        }
        if Some(last.1) != count || !sum {
            return Err(format!(
                "{} {labels}: +Inf bucket != _count, or no _sum",
                f.name
            ));
        }
        for pair in buckets.windows(2) {
            if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                return Err(format!("{} {labels}: buckets not cumulative", f.name));
            }
        }
    }
    Ok(())
}

/// `name{labels} value [timestamp]`, exemplars refused (the gateway writes none).
pub fn sample_line(line: &str) -> Result<super::text::Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    valid_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut names = BTreeSet::new();
        loop {
            let start = match chars.peek() {
                Some((_, '}')) => {
                    let (i, _) = chars.next().unwrap();
                    rest = &after[i + 1..];
                    break;
                }
                Some((i, _)) => *i,
                None => return Err("unterminated labels".into()),
            };
            let eq = after[start..].find('=').ok_or("a label without =")? + start;
            let label = &after[start..eq];
            valid_name(label)?;
            if label.starts_with("__") {
                return Err(format!("reserved label {label}"));
            }
            if !names.insert(label.to_owned()) {
                return Err(format!("label {label} twice"));
            }
            while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    Some('\n') | None => return Err("unterminated label value".into()),
                    Some(c) => value.push(c),
                }
            }
            labels.push((label.to_owned(), value));
            match chars.peek().map(|(_, c)| *c) {
                Some(',') => {
                    chars.next();
                }
                Some('}') => {}
                _ => return Err("labels not separated by ,".into()),
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if rest.contains('#') {
        return Err("an exemplar".into());
    }
    let mut fields = rest.split(' ');
    let value = number(fields.next().unwrap_or(""))?;
    if let Some(ts) = fields.next() {
        number(ts)?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(super::text::Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

pub fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) =>
        {
            Err(format!("not a number: {s:?}"))
        }
        _ => s.parse().map_err(|_| format!("not a number: {s:?}")),
    }
}

fn valid_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':');
    if first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
        Ok(())
    } else {
        Err(format!("invalid name {name:?}"))
    }
}

fn check_escapes(help: &str) -> Result<(), String> {
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !matches!(chars.next(), Some('\\' | '"' | 'n')) {
            return Err("bad escape in HELP".into());
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_openmetrics_forbids() {
    let ok = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\na_seconds_bucket{le=\"1.0\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\na_seconds_sum 3.0\na_seconds_count 2\n# TYPE b counter\nb_total{x=\"q\\\"\\\\\\n\"} 1\n# EOF\n";
    parse(ok).unwrap();
    for (bad, why) in [
        (ok.replace("# EOF\n", ""), "no EOF"),
        (
            ok.replace("# TYPE b counter\n", ""),
            "b_total under the histogram",
        ),
        (
            ok.replace("# TYPE b counter", "# TYPE b_total counter"),
            "counter named _total",
        ),
        (
            ok.replace("a_seconds_count 2", "a_seconds_count 3"),
            "+Inf != count",
        ),
        (
            ok.replace("} 1\na_seconds_bucket", "} 3\na_seconds_bucket"),
            "not cumulative",
        ),
        (
            ok.replace("a_seconds_bucket{le=\"+Inf\"} 2\n", ""),
            "no +Inf",
        ),
        (
            ok.replace("b_total{x=", "b_total{x=\"1\",x="),
            "label twice",
        ),
        (ok.replace("\\\"\\\\", "\\t"), "bad escape"),
        (ok.replace("b_total{x=\"q", "b_total{x=q"), "unquoted"),
        (ok.replace("} 1\n# EOF", "} -1\n# EOF"), "negative counter"),
        (
            ok.replace("} 1\n# EOF", "} 1 # {a=\"b\"} 1\n# EOF"),
            "exemplar",
        ),
        (
            ok.replace("# TYPE b counter\n", "# TYPE b counter\n\n"),
            "empty line",
        ),
        (
            format!(
                "{}# TYPE a_seconds histogram\n# EOF\n",
                ok.replace("# EOF\n", "")
            ),
            "not contiguous",
        ),
        (
            ok.replace(
                "# TYPE b counter\nb_total",
                "# TYPE b counter\nb_total 1\n# HELP b B\nb_total",
            ),
            "metadata after samples",
        ),
        (ok.replace("b counter", "b countr"), "unknown type"),
        (ok.replace("} 1\n# EOF", "} one\n# EOF"), "not a number"),
    ] {
        assert!(parse(&bad).is_err(), "accepted ({why}):\n{bad}");
    }
}
