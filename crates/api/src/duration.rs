//! Durations as Istio's YAML writes them: Go's syntax (`1.5s`, `100ms`, `1h30m`, `2m`),
//! which the protobuf `Duration` fields of Istio's CRDs accept.

use std::time::Duration;

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a Go-style duration: a sequence of decimal numbers, each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`). Negative durations are rejected.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        text: text.to_string(),
        reason,
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit (use ns, us, ms, s, m or h)"))?;
        let number = &rest[..num_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("expected a number"));
        }
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("missing unit (use ns, us, ms, s, m or h)")),
            _ => return Err(err("unknown unit (use ns, us, ms, s, m or h)")),
        };
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err("number out of range"))?
        };
        let mut nanos = int
            .checked_mul(scale)
            .ok_or_else(|| err("number out of range"))?;
        let mut place = scale;
        for d in frac.chars().take(18) {
            place /= 10;
            nanos += u128::from(d.to_digit(10).unwrap_or(0)) * place;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| err("number out of range"))?;
    }
    let secs =
        u64::try_from(total_nanos / 1_000_000_000).map_err(|_| err("number out of range"))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("1.5s", ms(1500)),
            ("100ms", ms(100)),
            ("2m", ms(120_000)),
            ("1h30m", ms(5_400_000)),
            ("0.001s", ms(1)),
            ("250us", Duration::from_micros(250)),
            ("0", Duration::ZERO),
            (".5s", ms(500)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        for text in ["", "5", "5x", "-1s", "1.2.3s", "s", "1 s", "abc"] {
            assert!(parse_duration(text).is_err(), "{text:?} should not parse");
        }
    }
}
