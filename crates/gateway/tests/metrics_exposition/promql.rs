//! Just enough PromQL lexing to find the series an expression selects: metric names (an
//! identifier that is not a function, an aggregation, a keyword or a number) with the label
//! names of their matchers, and the labels of `by (...)`, `without (...)`, `on (...)` and
//! `ignoring (...)` clauses.

pub struct Scan {
    pub selectors: Vec<(String, Vec<String>)>,
    pub grouping: Vec<String>,
}

const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const KEYWORDS: [&str; 12] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
];

pub fn scan(q: &str) -> Result<Scan, String> {
    let b = q.as_bytes();
    let mut i = 0;
    let mut out = Scan {
        selectors: Vec::new(),
        grouping: Vec::new(),
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i)?,
            b'[' => i = q[i..].find(']').ok_or("unclosed [")? + i + 1,
            b'{' => {
                // Matchers without a metric name: {__name__=...} is not used here.
                return Err(format!("a selector without a metric name at {i}"));
            }
            b'$' => {
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'{'
                        || b[i] == b'}')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &q[start..i];
                let next = skip_ws(i);
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&word)
                {
                    if b.get(next) == Some(&b'(') {
                        let close = q[next..].find(')').ok_or("unclosed (")? + next;
                        out.grouping.extend(
                            q[next + 1..close]
                                .split(',')
                                .map(str::trim)
                                .filter(|l| !l.is_empty())
                                .map(str::to_owned),
                        );
                        i = close + 1;
                    }
                } else if AGGREGATIONS.contains(&word)
                    || KEYWORDS.contains(&word)
                    || ["Inf", "NaN", "inf", "nan"].contains(&word)
                    || b.get(next) == Some(&b'(')
                {
                    // a function, an aggregation, a keyword or a number
                } else {
                    let mut matchers = Vec::new();
                    if b.get(next) == Some(&b'{') {
                        i = next + 1;
                        loop {
                            i = skip_ws(i);
                            match b.get(i) {
                                Some(b'}') => {
                                    i += 1;
                                    break;
                                }
                                Some(b',') => i += 1,
                                Some(_) => {
                                    let l = i;
                                    while i < b.len()
                                        && (b[i].is_ascii_alphanumeric() || b[i] == b'_')
                                    {
                                        i += 1;
                                    }
                                    if l == i {
                                        return Err(format!("a bad matcher at {i}"));
                                    }
                                    matchers.push(q[l..i].to_owned());
                                    i = skip_ws(i);
                                    while i < b.len() && matches!(b[i], b'=' | b'!' | b'~') {
                                        i += 1;
                                    }
                                    i = skip_string(b, skip_ws(i))?;
                                }
                                None => return Err("unclosed {".into()),
                            }
                        }
                    }
                    out.selectors.push((word.to_owned(), matchers));
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

fn skip_string(b: &[u8], i: usize) -> Result<usize, String> {
    let quote = *b.get(i).ok_or("expected a string")?;
    if !matches!(quote, b'"' | b'\'' | b'`') {
        return Err(format!("expected a string at {i}"));
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' if quote != b'`' => j += 2,
            c if c == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err("unterminated string".into())
}

#[test]
fn scans_selectors_and_grouping() {
    let s = scan(r#"histogram_quantile(0.99, sum by (le, route) (rate(stilts_request_duration_seconds_bucket{route=~"$route", x!="a,b}"}[$__rate_interval]))) / on(route) group_left sum without (provider) (stilts_requests_total) * 3600 > bool 1e3"#).unwrap();
    assert_eq!(
        s.selectors,
        vec![
            (
                "stilts_request_duration_seconds_bucket".to_owned(),
                vec!["route".to_owned(), "x".to_owned()]
            ),
            ("stilts_requests_total".to_owned(), vec![]),
        ]
    );
    assert_eq!(s.grouping, ["le", "route", "route", "provider"]);
    assert!(scan(r#"{__name__="x"}"#).is_err());
    assert!(scan(r#"x{a="b}"#).is_err());
}
