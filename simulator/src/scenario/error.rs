//! Errors: the [`ScenarioError`] a caller sees, the `Invalid` that validation returns before it
//! is placed in a file, and the placing itself: a dotted field path (`providers[1].ttft_ms.p99`)
//! looked up in toml's spanned document tree, and a byte offset turned into a line and column.

use std::fmt;
use std::path::PathBuf;
use stilts_core::ConfigError;

/// A scenario that cannot be loaded: where the problem is and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ScenarioError {
    /// The file the problem is in (a scenario, or a router config file it includes).
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the field, e.g. `providers[1].ttft_ms.p99`; empty for syntax errors.
    pub path: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it; empty when the problem says it all.
    pub fix: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.problem)?;
        if !self.fix.is_empty() {
            write!(f, "; {}", self.fix)?;
        }
        Ok(())
    }
}

/// A problem found by validation, before it is placed in a file: stilts' one "place, problem,
/// fix" error ([`ConfigError`], the core's, which the gateway's config reports with too), and the
/// included file it is in, if not the scenario.
#[derive(Debug)]
pub(super) struct Invalid {
    pub(super) error: ConfigError,
    /// The problem is in an included config file (with this text), not in the scenario.
    pub(super) file: Option<(PathBuf, String)>,
}

impl From<ConfigError> for Invalid {
    fn from(error: ConfigError) -> Self {
        Invalid { error, file: None }
    }
}

pub(super) fn invalid(
    path: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> Invalid {
    ConfigError::new(path, problem, fix).into()
}

/// The 1-based line and column of byte `offset` in `text` (the end, if past it).
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

/// The byte offset of the deepest part of `path` found in the document `text`.
pub(super) fn locate(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for segment in segments(path) {
        let next = match (segment, table, value) {
            (Segment::Key(k), Some(t), _) => t
                .get_key_value(k)
                .map(|(key, v)| (key.span().start, v.span().start, v.get_ref())),
            (Segment::Index(i), _, Some(DeValue::Array(a))) => a
                .get(i)
                .map(|v| (v.span().start, v.span().start, v.get_ref())),
            _ => None,
        };
        let Some((key_at, value_at, v)) = next else {
            break;
        };
        // Tables opened by a `[header]` have spans at their header; keys are always precise.
        best = Some(if matches!(v, DeValue::Table(_)) {
            key_at.min(value_at)
        } else {
            value_at
        });
        table = match v {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
        value = Some(v);
    }
    best
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on broken fixtures
mod tests {
    use crate::scenario::test_support::{MINIMAL, err};

    #[test]
    fn unknown_field_names_line() {
        let e = err(&MINIMAL.replace("rate_rps = 5", "rate_rps = 5\nburst = 3"));
        assert_eq!(e.position.map(|p| p.0), Some(6), "{e}");
        assert!(e.problem.contains("burst"), "{e}");
    }
}
