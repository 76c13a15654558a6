//! The small range checkers of validation: each takes the field's dotted path and its value, and
//! returns the value in the model's units or an `Invalid` naming the field, the range and a fix.

use super::error::{Invalid, invalid};
use super::raw::RawDist;
use super::{MAX_DURATION_S, MAX_FACTOR, MAX_MS, NANOS_PER_MS, NANOS_PER_SEC};
use crate::draw::LogNormal;

pub(super) fn secs(path: &str, value: f64) -> Result<u64, Invalid> {
    if value.is_finite() && (0.0..=MAX_DURATION_S).contains(&value) {
        Ok((value * NANOS_PER_SEC).round() as u64)
    } else {
        Err(invalid(
            path,
            format!("must be a number of seconds in 0..={MAX_DURATION_S}, got {value}"),
            "use seconds from the scenario start, such as 60",
        ))
    }
}

pub(super) fn fraction(path: &str, value: Option<f64>, default: f64) -> Result<f64, Invalid> {
    let v = value.unwrap_or(default);
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be in [0, 1], got {v}"),
            "use a share such as 0.25",
        ))
    }
}

pub(super) fn positive(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            path,
            format!("must be a positive number, got {value}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// A whole number of milliseconds in 0..=[`MAX_MS`], as nanoseconds (never overflows).
pub(super) fn millis(path: &str, ms: u64) -> Result<u64, Invalid> {
    if ms <= MAX_MS {
        Ok(ms * NANOS_PER_MS)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_MS} ms (31 days), got {ms}"),
            "give milliseconds, such as 30000",
        ))
    }
}

/// A positive number of milliseconds up to [`MAX_MS`].
pub(super) fn positive_ms(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    let v = positive(path, value, example)?;
    if v <= MAX_MS as f64 {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_MS} ms (31 days), got {v}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// A positive multiplier up to [`MAX_FACTOR`].
pub(super) fn factor_in_range(path: &str, value: f64, example: &str) -> Result<f64, Invalid> {
    let v = positive(path, value, example)?;
    if v <= MAX_FACTOR {
        Ok(v)
    } else {
        Err(invalid(
            path,
            format!("must be at most {MAX_FACTOR:e}, got {v}"),
            format!("use a value such as {example}"),
        ))
    }
}

/// Upper bounds of the log-normal distributions: (largest value, unit).
pub(super) const DIST_MS: (f64, &str) = (MAX_MS as f64, "ms (31 days)");
pub(super) const DIST_TOKENS: (f64, &str) = (4.0e9, "tokens");

pub(super) fn dist(
    path: &str,
    raw: Option<RawDist>,
    default: (f64, f64),
    (max, unit): (f64, &str),
) -> Result<LogNormal, Invalid> {
    let (p50, p99) = match raw {
        Some(d) => (d.p50, d.p99.unwrap_or(d.p50)),
        None => default,
    };
    positive(&format!("{path}.p50"), p50, "800")?;
    for (field, v) in [("p50", p50), ("p99", p99)] {
        if v > max {
            return Err(invalid(
                format!("{path}.{field}"),
                format!("must be at most {max} {unit}, got {v}"),
                "give a smaller value",
            ));
        }
    }
    if !(p99.is_finite() && p99 >= p50) {
        return Err(invalid(
            format!("{path}.p99"),
            format!("must be at least p50 ({p50}), got {p99}"),
            "give the 99th percentile, which is at least the median",
        ));
    }
    Ok(LogNormal::from_p50_p99(p50, p99))
}
