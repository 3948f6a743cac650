//! Durations written as Go's `time.ParseDuration` reads them (`90s`, `1.5s`, `1m30s`,
//! `500ms`, `300us`, `300µs`, `2h`), so a value that works in a MetalLB `BGPPeer` works here.
//!
//! The same grammar, `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or a bare `0`, the same units (`ns`,
//! `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), the same arithmetic (a fraction is scaled through
//! `f64` as Go does) and the same limit (2^63-1 ns, about 292 years). Pure.

use std::time::Duration;

/// Why a text is not a duration; the message quotes the text as Go's error does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the grammar (empty, no digits, garbage).
    #[error("{0:?} is not a duration (e.g. 90s, 1m30s, 1.5s, 500ms)")]
    Invalid(String),
    /// A number without a unit (`5`); only `0` may go without one.
    #[error("{0:?} has no unit (ns, us, ms, s, m or h)")]
    MissingUnit(String),
    /// A unit Go does not know (`5d`, `1sec`).
    #[error("{text:?} has the unknown unit {unit:?} (ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// Beyond 2^63-1 nanoseconds.
    #[error("{0:?} is too large")]
    Overflow(String),
    /// Below zero (Go accepts it; no edgelb field can use it).
    #[error("{0:?} must not be negative")]
    Negative(String),
}

const LIMIT: u64 = 1 << 63;

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Digits at the start of `s` as an integer (`None` on overflow, as Go's `leadingInt`).
fn leading_int(s: &str) -> (Option<u64>, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut x: u64 = 0;
    for c in s[..end].bytes() {
        if x > LIMIT / 10 {
            return (None, &s[end..]);
        }
        x = x * 10 + u64::from(c - b'0');
        if x > LIMIT {
            return (None, &s[end..]);
        }
    }
    (Some(x), &s[end..])
}

/// Digits after a decimal point: the value, its scale (10^digits kept) and the rest; digits
/// past what fits are read and ignored (Go's `leadingFraction`).
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (mut x, mut scale, mut overflow) = (0u64, 1.0f64, false);
    for c in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

/// Parses `text` as Go's `time.ParseDuration`, refusing negative values.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_string());
    let mut s = text;
    let mut negative = false;
    if let Some(rest) = s.strip_prefix('-') {
        negative = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (v, rest) = leading_int(s);
        let mut v = v.ok_or_else(invalid)?;
        let pre = rest.len() != before;
        s = rest;
        let (mut f, mut scale, mut post) = (0u64, 1.0f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let before = rest.len();
            let (x, sc, rest) = leading_fraction(rest);
            (f, scale, post) = (x, sc, rest.len() != before);
            s = rest;
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_end = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_end == 0 {
            return Err(DurationError::MissingUnit(text.to_string()));
        }
        let unit = &s[..unit_end];
        s = &s[unit_end..];
        let per = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            text: text.to_string(),
            unit: unit.to_string(),
        })?;
        let overflow = || DurationError::Overflow(text.to_string());
        if v > LIMIT / per {
            return Err(overflow());
        }
        v *= per;
        if f > 0 {
            // As Go: through f64, exact to the nanosecond for up to nine fraction digits.
            v += (f as f64 * (per as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(overflow());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(overflow());
        }
    }
    if negative {
        return if total == 0 {
            Ok(Duration::ZERO)
        } else {
            Err(DurationError::Negative(text.to_string()))
        };
    }
    if total > LIMIT - 1 {
        return Err(DurationError::Overflow(text.to_string()));
    }
    Ok(Duration::from_nanos(total))
}

/// `d` as Go's `Duration.String` writes it (`1h2m3.5s`, `1.5ms`, `300µs`, `0s`): what the
/// property tests read back, and how the docs show defaults.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    let frac = |value: u128, digits: u32| -> String {
        let div = 10u128.pow(digits);
        let (int, rest) = (value / div, value % div);
        if rest == 0 {
            return int.to_string();
        }
        let text = format!("{rest:0width$}", width = digits as usize);
        format!("{int}.{}", text.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}\u{b5}s", frac(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 6));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = frac(rest, 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples_from_go_and_metallb_docs() {
        let ok = [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("500ms", Duration::from_millis(500)),
            ("300us", Duration::from_micros(300)),
            ("300\u{b5}s", Duration::from_micros(300)),
            ("300\u{3bc}s", Duration::from_micros(300)),
            ("7ns", Duration::from_nanos(7)),
            ("1h1m1s1ms1us1ns", Duration::from_nanos(3_661_001_001_001)),
            ("0.100000000000000000000h", Duration::from_secs(360)),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        let bad = [
            ("", "not a duration"),
            ("s", "not a duration"),
            (".s", "not a duration"),
            ("5", "no unit"),
            ("1.5", "no unit"),
            ("5d", "unknown unit"),
            ("1sec", "unknown unit"),
            ("1s2", "no unit"),
            ("-1s", "negative"),
            ("2562047h47m16.854775808s", "too large"),
            ("9223372036854775808ns", "too large"),
            (" 1s", "not a duration"),
        ];
        for (text, want) in bad {
            let e = parse_duration(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn go_strings() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(format_duration(Duration::from_micros(300)), "300\u{b5}s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    proptest! {
        /// Whatever Go's `Duration.String` writes, `ParseDuration` reads back exactly.
        #[test]
        fn formatted_durations_read_back(ns in 0u64..=(i64::MAX as u64)) {
            let d = Duration::from_nanos(ns);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        /// Components add up, in any mix of units.
        #[test]
        fn components_add_up(h in 0u64..1000, m in 0u64..100_000, s in 0u64..100_000, ms in 0u64..100_000, us in 0u64..100_000) {
            let text = format!("{h}h{m}m{s}s{ms}ms{us}us");
            let want = Duration::from_secs(h * 3600 + m * 60 + s)
                + Duration::from_millis(ms)
                + Duration::from_micros(us);
            prop_assert_eq!(parse_duration(&text), Ok(want));
        }

        /// A decimal fraction of up to nine digits is exact to the nanosecond.
        #[test]
        fn fractions_are_exact(int in 0u64..1_000_000, digits in 1usize..=9, raw in 0u64..1_000_000_000) {
            let frac = raw % 10u64.pow(digits as u32);
            let text = format!("{int}.{frac:0digits$}s");
            let want = Duration::from_secs(int) + Duration::from_nanos(frac * 10u64.pow(9 - digits as u32));
            prop_assert_eq!(parse_duration(&text), Ok(want));
        }

        /// Any text: an answer, never a panic.
        #[test]
        fn never_panics(text in "[-+0-9.a-z\u{b5}\u{3bc} ]{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
