//! Metering: the conversion from wasmtime fuel to microcents, and the rule
//! that splits one tick's charge against the agent's budget. Pure arithmetic
//! over integers (`i128` intermediates, checked conversions): no clock, no
//! wall time, so any node can recompute a tick's cost from a replay (spec §3).
//!
//! Conversion: `cost = ceil(fuel × price_per_second / FUEL_PER_SECOND)`.
//! Hostcalls burn extra fuel from the same store counter
//! ([`HOSTCALL_FUEL`] + [`FUEL_PER_BYTE`] per byte moved), so they are part
//! of `fuel` and need no second price.

use crate::units::Microcents;
use sha2::{Digest, Sha256};

/// Fuel a reference core is deemed to burn per second: a nominal 1 GHz core
/// retiring one wasm operator per cycle. Wasmtime charges ~1 fuel per
/// operator, so `price_per_second` buys this much fuel. The number is a unit
/// definition, not a measurement: it only has to be the same on every node.
pub const FUEL_PER_SECOND: u64 = 1_000_000_000;

/// Fixed fuel charge of every hostcall (about what a host transition plus a
/// bounds check costs compared with a wasm operator), charged before the
/// call does anything.
pub const HOSTCALL_FUEL: u64 = 1_000;

/// Fuel per byte a hostcall copies in or out of guest memory (log messages,
/// random bytes, kv keys and values, http bodies, receipts).
pub const FUEL_PER_BYTE: u64 = 1;

/// Least fuel billed for a tick: a tick that does nothing still costs the
/// node a host transition and bookkeeping (and fuel undercounts on some
/// trapping paths, see NOTES.md).
pub const MIN_TICK_FUEL: u64 = 1_000;

/// Default fuel limit per tick: 0.1 s of the reference core.
pub const DEFAULT_TICK_FUEL: u64 = 100_000_000;

/// Fuel given to instantiation and to each lifecycle export (`_initialize`,
/// `agent_init`, `agent_resume`, `agent_checkpoint*`, `malloc`). Generous
/// and never charged: instantiation fuel differs across platforms (wasmtime
/// #14331), so it is discarded; the bound only stops a hostile lifecycle
/// export from running forever.
pub const DEFAULT_LIFECYCLE_FUEL: u64 = 1_000_000_000;

/// The wasmtime release whose fuel table we bill by. Fuel counts change
/// between releases: a receipt names the meter it was computed with.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Identity of the meter: a hash of everything that decides a tick's fuel
/// and cost (wasmtime release, constants above, stack limit, architecture).
/// Two nodes agree on costs only if their meter ids are equal.
pub fn meter_id(max_wasm_stack: usize) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"igor-meter-v1\0");
    h.update(WASMTIME_VERSION.as_bytes());
    for v in [FUEL_PER_SECOND, HOSTCALL_FUEL, FUEL_PER_BYTE, MIN_TICK_FUEL, max_wasm_stack as u64] {
        h.update(v.to_le_bytes());
    }
    // Stack overflow depth depends on the architecture (NOTES.md).
    h.update(std::env::consts::ARCH.as_bytes());
    h.finalize().into()
}

/// A charge that cannot be represented (overflow or negative inputs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    #[error("negative price per second: {0}")]
    NegativePrice(i64),
    #[error("negative budget: {0}")]
    NegativeBudget(i64),
    #[error("cost of {fuel} fuel at {price} µ¢/s does not fit in i64 microcents")]
    Overflow { fuel: u64, price: i64 },
}

/// Microcents for `fuel` at `price_per_second`, rounded up (a node never
/// works for free): `ceil(fuel × price / FUEL_PER_SECOND)`.
pub fn cost_of_fuel(fuel: u64, price_per_second: Microcents) -> Result<Microcents, MeterError> {
    if price_per_second.0 < 0 {
        return Err(MeterError::NegativePrice(price_per_second.0));
    }
    let num = i128::from(fuel) * i128::from(price_per_second.0);
    let den = i128::from(FUEL_PER_SECOND);
    let cost = (num + den - 1) / den;
    i64::try_from(cost).map(Microcents).map_err(|_| MeterError::Overflow { fuel, price: price_per_second.0 })
}

/// The most fuel `budget` pays for at `price_per_second` (floor), saturated
/// at `u64::MAX`; unlimited when the price is zero.
pub fn affordable_fuel(budget: Microcents, price_per_second: Microcents) -> Result<u64, MeterError> {
    if price_per_second.0 < 0 {
        return Err(MeterError::NegativePrice(price_per_second.0));
    }
    if budget.0 < 0 {
        return Err(MeterError::NegativeBudget(budget.0));
    }
    if price_per_second.0 == 0 {
        return Ok(u64::MAX);
    }
    let fuel = i128::from(budget.0) * i128::from(FUEL_PER_SECOND) / i128::from(price_per_second.0);
    Ok(u64::try_from(fuel).unwrap_or(u64::MAX))
}

/// One tick's bill: what was charged and whether the budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bill {
    /// Execution charge, already capped at what the budget had left.
    pub cost: Microcents,
    /// The charge was capped: the tick crossed (or reached) zero.
    pub exhausted: bool,
}

/// Bill `billable_fuel` against `budget` after `paid` already left it in
/// this tick. A tick that would cross zero is charged exactly what is left
/// (spec §3: the budget never goes negative), so `cost + paid <= budget`.
pub fn bill(
    billable_fuel: u64,
    price_per_second: Microcents,
    budget: Microcents,
    paid: Microcents,
) -> Result<Bill, MeterError> {
    let raw = cost_of_fuel(billable_fuel, price_per_second)?;
    let left = budget.checked_sub(paid).map_err(|_| MeterError::NegativeBudget(budget.0))?;
    if left.0 < 0 {
        return Err(MeterError::NegativeBudget(left.0));
    }
    if raw >= left { Ok(Bill { cost: left, exhausted: true }) } else { Ok(Bill { cost: raw, exhausted: false }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_rounds_up_and_never_overflows_silently() {
        assert_eq!(cost_of_fuel(0, Microcents(1_000_000)).unwrap(), Microcents(0));
        assert_eq!(cost_of_fuel(1, Microcents(1_000_000)).unwrap(), Microcents(1));
        assert_eq!(cost_of_fuel(1_000, Microcents(1_000_000)).unwrap(), Microcents(1));
        assert_eq!(cost_of_fuel(1_001, Microcents(1_000_000)).unwrap(), Microcents(2));
        assert_eq!(cost_of_fuel(FUEL_PER_SECOND, Microcents(7)).unwrap(), Microcents(7));
        assert!(matches!(cost_of_fuel(u64::MAX, Microcents(i64::MAX)), Err(MeterError::Overflow { .. })));
        assert!(cost_of_fuel(1, Microcents(-1)).is_err());
    }

    #[test]
    fn affordable_fuel_inverts_cost() {
        let price = Microcents(1_000_000);
        let f = affordable_fuel(Microcents(5), price).unwrap();
        assert_eq!(f, 5_000);
        assert_eq!(cost_of_fuel(f, price).unwrap(), Microcents(5));
        assert_eq!(affordable_fuel(Microcents(5), Microcents(0)).unwrap(), u64::MAX);
    }

    #[test]
    fn crossing_zero_charges_exactly_what_is_left() {
        let b = bill(10_000, Microcents(1_000_000), Microcents(15), Microcents(8)).unwrap();
        assert_eq!(b, Bill { cost: Microcents(7), exhausted: true });
        let b = bill(1_000, Microcents(1_000_000), Microcents(15), Microcents(8)).unwrap();
        assert_eq!(b, Bill { cost: Microcents(1), exhausted: false });
    }

    #[test]
    fn meter_id_depends_on_stack_limit() {
        assert_ne!(meter_id(1 << 19), meter_id(1 << 20));
        assert_eq!(meter_id(1 << 19), meter_id(1 << 19));
    }
}
