//! Policy durations such as `30d`, `12h`, `90m`, `45s`, `2w` and `1y` (= 365 days).
//!
//! This module only parses, prints and describes durations (serde + JSON schema). It does not
//! read clocks or compare against the current time; callers add durations to times they own.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Seconds per unit, largest first (used to print the canonical form).
const UNITS: &[(char, u64)] = &[
    ('y', 365 * 86_400),
    ('w', 7 * 86_400),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// The regular expression the JSON schema uses for durations.
pub const DURATION_PATTERN: &str = "^[0-9]{1,9}[smhdwy]$";

/// A span of time in whole seconds, written in policy as a number and one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(u64);

/// A duration string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration: write a number and a unit, e.g. 30d")]
    Empty,
    /// The unit letter is missing or unknown.
    #[error("duration {0:?} has no valid unit: use s, m, h, d, w or y (e.g. 30d, 12h)")]
    BadUnit(String),
    /// The number part is missing or not a plain decimal number.
    #[error("duration {0:?} must be a whole number followed by one unit (e.g. 30d, 12h)")]
    BadNumber(String),
    /// The duration is too large to represent.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs)
    }

    /// A duration of `days` days.
    pub const fn from_days(days: u64) -> Self {
        Duration(days * 86_400)
    }

    /// The length in seconds.
    pub const fn as_secs(&self) -> u64 {
        self.0
    }

    /// Parses `30d`, `12h`, `90m`, `45s`, `2w` or `1y`.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        let s = s.trim();
        let Some(unit) = s.chars().last() else {
            return Err(DurationError::Empty);
        };
        let factor = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| DurationError::BadUnit(s.to_string()))?;
        let number = &s[..s.len() - unit.len_utf8()];
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DurationError::BadNumber(s.to_string()));
        }
        let n: u64 = number
            .parse()
            .map_err(|_| DurationError::Overflow(s.to_string()))?;
        n.checked_mul(factor)
            .map(Duration)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl fmt::Display for Duration {
    /// The canonical form: the largest unit that divides the duration exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        for (unit, factor) in UNITS {
            if self.0.is_multiple_of(*factor) {
                return write!(f, "{}{}", self.0 / factor, unit);
            }
        }
        write!(f, "{}s", self.0)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a whole number and one unit (s, m, h, d, w, y = 365d), e.g. 30d or 12h.",
            "examples": ["30d", "12h", "1y"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(Duration::parse("45s").unwrap().as_secs(), 45);
        assert_eq!(Duration::parse("90m").unwrap().as_secs(), 5_400);
        assert_eq!(Duration::parse("12h").unwrap().as_secs(), 43_200);
        assert_eq!(Duration::parse("30d").unwrap().as_secs(), 2_592_000);
        assert_eq!(Duration::parse("2w").unwrap().as_secs(), 1_209_600);
        assert_eq!(Duration::parse("1y").unwrap().as_secs(), 31_536_000);
    }

    #[test]
    fn displays_canonical_form() {
        assert_eq!(Duration::parse("90m").unwrap().to_string(), "90m");
        assert_eq!(Duration::parse("120m").unwrap().to_string(), "2h");
        assert_eq!(Duration::parse("14d").unwrap().to_string(), "2w");
        assert_eq!(Duration::parse("365d").unwrap().to_string(), "1y");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
        for s in ["45s", "90m", "12h", "30d", "2w", "3y"] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Duration::parse(""), Err(DurationError::Empty));
        assert!(matches!(
            Duration::parse("30"),
            Err(DurationError::BadUnit(_))
        ));
        assert!(matches!(
            Duration::parse("30x"),
            Err(DurationError::BadUnit(_))
        ));
        assert!(matches!(
            Duration::parse("d"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            Duration::parse("-3d"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            Duration::parse("1.5d"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            Duration::parse("3 d"),
            Err(DurationError::BadNumber(_))
        ));
        assert!(matches!(
            Duration::parse("99999999999999999999y"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            Duration::parse("9ö"),
            Err(DurationError::BadUnit(_))
        ));
    }

    #[test]
    fn serde_round_trip() {
        let d: Duration = serde_json::from_str("\"30d\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"30d\"");
        assert!(serde_json::from_str::<Duration>("\"30 days\"").is_err());
    }
}
