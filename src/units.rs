//! Value types of the Igor domain: money, epochs, ticks and the ids of agents
//! and nodes. They exist so that wrong states are hard to write: money only
//! moves through checked arithmetic, epochs order lexicographically, ids are
//! validated once at the boundary and are safe to use as file names.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Microcents per currency unit (spec §3: 1 unit = 1,000,000 microcents).
pub const MICROCENTS_PER_UNIT: i64 = 1_000_000;

/// Money: an amount in microcents. Arithmetic never wraps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Microcents(pub i64);

/// An arithmetic operation on money that would overflow or go negative.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("money arithmetic overflow: {lhs} {op} {rhs}")]
pub struct MoneyOverflow {
    pub lhs: i64,
    pub op: &'static str,
    pub rhs: i64,
}

impl Microcents {
    pub const ZERO: Microcents = Microcents(0);

    /// Whole units to microcents, checked.
    pub fn from_units(units: i64) -> Result<Self, MoneyOverflow> {
        units.checked_mul(MICROCENTS_PER_UNIT).map(Microcents).ok_or(MoneyOverflow {
            lhs: units,
            op: "*",
            rhs: MICROCENTS_PER_UNIT,
        })
    }

    pub fn checked_add(self, rhs: Microcents) -> Result<Self, MoneyOverflow> {
        self.0.checked_add(rhs.0).map(Microcents).ok_or(MoneyOverflow { lhs: self.0, op: "+", rhs: rhs.0 })
    }

    pub fn checked_sub(self, rhs: Microcents) -> Result<Self, MoneyOverflow> {
        self.0.checked_sub(rhs.0).map(Microcents).ok_or(MoneyOverflow { lhs: self.0, op: "-", rhs: rhs.0 })
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// `self` clamped to `0..=cap` (a charge can take no more than what is
    /// left, and never gives money back). A negative `cap` gives zero.
    pub fn clamp_to(self, cap: Microcents) -> Microcents {
        self.min(cap).max(Microcents::ZERO)
    }
}

impl fmt::Display for Microcents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}µ¢", self.0)
    }
}

/// Authority epoch: `(major, lease generation)`, ordered lexicographically
/// (spec §5). Field order matters: the derived `Ord` compares `major` first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Epoch {
    pub major: u64,
    pub generation: u64,
}

impl Epoch {
    pub const fn new(major: u64, generation: u64) -> Self {
        Epoch { major, generation }
    }
}

impl Epoch {
    /// The first epoch of the next major (a handoff's target assumes at
    /// it); `None` at the end of the range, which no honest history reaches.
    pub fn next_major(self) -> Option<Epoch> {
        self.major.checked_add(1).map(|major| Epoch::new(major, 0))
    }

    /// The major a handoff's target takes, as a bound a recovery must stay
    /// above: `major + 1`, or the last major at the end of the range (where
    /// no newer epoch can be taken at all, so the bound stays sound).
    pub fn next_major_bound(self) -> u64 {
        self.next_major().map_or(u64::MAX, |e| e.major)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.generation)
    }
}

/// The number of a tick; a checkpoint's tick is the number of ticks run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TickNumber(pub u64);

impl TickNumber {
    /// The tick after this one; `None` at the end of the range.
    pub fn next(self) -> Option<TickNumber> {
        self.checked_add(1)
    }

    /// `n` ticks after this one; `None` past the end of the range.
    pub fn checked_add(self, n: u64) -> Option<TickNumber> {
        self.0.checked_add(n).map(TickNumber)
    }
}

impl fmt::Display for TickNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Longest id accepted for an agent or node: ids become file names and trace
/// fields, so they are short and made of a safe alphabet.
pub const MAX_ID_LEN: usize = 64;

/// An id that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn validate_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let fail = |reason| Err(InvalidId { kind, value: value.to_string(), reason });
    if value.is_empty() {
        return fail("empty");
    }
    if value.len() > MAX_ID_LEN {
        return fail("longer than 64 bytes");
    }
    if value.starts_with('.') {
        return fail("starts with '.'");
    }
    let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.chars().all(safe) {
        return fail("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

macro_rules! string_id {
    ($name:ident, $kind:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok($name(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(AgentId, "agent");
string_id!(NodeId, "node");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_order_by_major_then_generation() {
        assert!(Epoch::new(1, 99) < Epoch::new(2, 0));
        assert!(Epoch::new(2, 0) < Epoch::new(2, 1));
    }

    #[test]
    fn money_never_wraps() {
        assert!(Microcents(i64::MAX).checked_add(Microcents(1)).is_err());
        assert!(Microcents(i64::MIN).checked_sub(Microcents(1)).is_err());
        assert_eq!(Microcents::from_units(3).unwrap(), Microcents(3_000_000));
        assert!(Microcents::from_units(i64::MAX).is_err());
    }

    #[test]
    fn ticks_and_epochs_never_wrap() {
        assert_eq!(TickNumber(7).next(), Some(TickNumber(8)));
        assert_eq!(TickNumber(u64::MAX).next(), None);
        assert_eq!(TickNumber(7).checked_add(3), Some(TickNumber(10)));
        assert_eq!(Epoch::new(3, 9).next_major(), Some(Epoch::new(4, 0)));
        assert_eq!(Epoch::new(u64::MAX, 0).next_major(), None);
    }

    #[test]
    fn a_charge_is_clamped_to_what_is_left_and_never_negative() {
        assert_eq!(Microcents(5).clamp_to(Microcents(3)), Microcents(3));
        assert_eq!(Microcents(2).clamp_to(Microcents(3)), Microcents(2));
        assert_eq!(Microcents(-2).clamp_to(Microcents(3)), Microcents::ZERO);
        assert_eq!(Microcents(2).clamp_to(Microcents(-3)), Microcents::ZERO);
    }

    #[test]
    fn ids_reject_path_tricks() {
        assert!(AgentId::new("counter-1").is_ok());
        for bad in ["", "..", "a/b", ".hidden", "x y", &"a".repeat(65)] {
            assert!(AgentId::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = serde_json::from_str::<NodeId>("\"a/b\"").unwrap_err();
        assert!(err.to_string().contains("invalid node id"), "{err}");
    }
}
