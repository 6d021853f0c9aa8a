//! Durations (`"100ms"`, `"1.5s"`) and sizes (`"256MiB"`), parsed once.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The schema pattern for durations; validation maps it back to a readable message.
pub const DURATION_PATTERN: &str = r"^[0-9]+(\.[0-9]{1,9})?(ms|s|m|h)$";
/// The schema pattern for sizes.
pub const SIZE_PATTERN: &str = r"^[0-9]+(KiB|MiB|GiB|TiB)$";

const NANOS_PER_MS: u128 = 1_000_000;

/// A duration written with one unit: `ms`, `s`, `m` or `h`, with an optional fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a duration: write a number and a unit, e.g. \"100ms\", \"1.5s\", \"2m\", \"1h\"")]
    Duration(String),
    #[error("`{0}` is not a size: write a whole number and a unit, e.g. \"512KiB\", \"256MiB\", \"2GiB\"")]
    Size(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::Duration(s.to_owned());
        let split = s.find(|c: char| c.is_ascii_alphabetic()).ok_or_else(bad)?;
        let (number, unit) = s.split_at(split);
        let unit_nanos: u128 = match unit {
            "ms" => NANOS_PER_MS,
            "s" => 1_000 * NANOS_PER_MS,
            "m" => 60_000 * NANOS_PER_MS,
            "h" => 3_600_000 * NANOS_PER_MS,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (number.contains('.') && (!digits(fraction) || fraction.len() > 9)) {
            return Err(bad());
        }
        let overflow = || UnitError::Overflow(s.to_owned());
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        if !fraction.is_empty() {
            // fraction has at most 9 digits, so this cannot overflow u128.
            let scale = 10u128.pow(fraction.len() as u32);
            let frac: u128 = fraction.parse().map_err(|_| bad())?;
            nanos += frac * unit_nanos / scale;
        }
        let nanos = u64::try_from(nanos).map_err(|_| overflow())?;
        Ok(Self(std::time::Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Duration {
    /// The shortest exact spelling: `30s` rather than `30000ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        for (unit, per) in [("h", 3_600_000 * NANOS_PER_MS), ("m", 60_000 * NANOS_PER_MS), ("s", 1_000 * NANOS_PER_MS)]
        {
            if nanos != 0 && nanos % per == 0 {
                return write!(f, "{}{unit}", nanos / per);
            }
        }
        let (ms, rest) = (nanos / NANOS_PER_MS, nanos % NANOS_PER_MS);
        if rest == 0 {
            write!(f, "{ms}ms")
        } else {
            let frac = format!("{rest:06}");
            write!(f, "{ms}.{}ms", frac.trim_end_matches('0'))
        }
    }
}

/// A size in bytes, written as a whole number of `KiB`, `MiB`, `GiB` or `TiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size(u64);

impl Size {
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

const SIZE_UNITS: [(&str, u64); 4] = [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];

impl FromStr for Size {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnitError::Size(s.to_owned());
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = s.split_at(split);
        let per = SIZE_UNITS.iter().find(|(u, _)| *u == unit).map(|(_, per)| *per).ok_or_else(bad)?;
        if number.is_empty() {
            return Err(bad());
        }
        let overflow = || UnitError::Overflow(s.to_owned());
        let n: u64 = number.parse().map_err(|_| overflow())?;
        n.checked_mul(per).map(Self).ok_or_else(overflow)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, per) = SIZE_UNITS
            .iter()
            .find(|(_, per)| self.0 % per == 0)
            .copied()
            // Sizes are parsed from whole KiB at least; bytes only arise from code.
            .unwrap_or(("KiB", 1 << 10));
        if self.0 % per == 0 { write!(f, "{}{unit}", self.0 / per) } else { write!(f, "{}B", self.0) }
    }
}

macro_rules! string_newtype_serde {
    ($ty:ident, $pattern:expr, $description:expr) => {
        serde_as_string!($ty);

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "pattern": $pattern, "description": $description })
            }
        }
    };
}

string_newtype_serde!(
    Duration,
    DURATION_PATTERN,
    "A duration: a number and one unit of ms, s, m or h, e.g. \"100ms\", \"1.5s\", \"2m\"."
);
string_newtype_serde!(
    Size,
    SIZE_PATTERN,
    "A size: a whole number and one unit of KiB, MiB, GiB or TiB, e.g. \"256MiB\"."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        let ms = |s: &str| s.parse::<Duration>().unwrap().as_std().as_nanos();
        assert_eq!(ms("100ms"), 100_000_000);
        assert_eq!(ms("1.5s"), 1_500_000_000);
        assert_eq!(ms("2m"), 120_000_000_000);
        assert_eq!(ms("1h"), 3_600_000_000_000);
        assert_eq!(ms("0s"), 0);
        assert_eq!(ms("0.25ms"), 250_000);
    }

    #[test]
    fn durations_refuse_other_spellings() {
        for bad in ["", "10", "s", "1.s", ".5s", "1 s", "1S", "1d", "-1s", "1.0000000001s", "1m30s"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?}");
        }
        assert!(matches!("99999999999h".parse::<Duration>(), Err(UnitError::Overflow(_))));
    }

    #[test]
    fn durations_print_their_shortest_exact_form() {
        for (input, shown) in [
            ("30000ms", "30s"),
            ("90s", "90s"),
            ("120s", "2m"),
            ("1.5s", "1500ms"),
            ("0s", "0ms"),
            ("0.25ms", "0.25ms"),
        ] {
            assert_eq!(input.parse::<Duration>().unwrap().to_string(), shown);
            assert_eq!(shown.parse::<Duration>().unwrap(), input.parse::<Duration>().unwrap());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!("256MiB".parse::<Size>().unwrap().bytes(), 256 << 20);
        assert_eq!("1KiB".parse::<Size>().unwrap().to_string(), "1KiB");
        assert_eq!("1024MiB".parse::<Size>().unwrap().to_string(), "1GiB");
        for bad in ["", "256", "MiB", "256mb", "256 MiB", "1.5GiB", "-1KiB"] {
            assert!(bad.parse::<Size>().is_err(), "{bad:?}");
        }
        assert!(matches!("99999999999TiB".parse::<Size>(), Err(UnitError::Overflow(_))));
    }
}
