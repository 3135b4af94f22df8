//! Simulated twin of `igor::env::real::SystemClock`: time from the turmoil
//! simulation. The monotonic reading is simulated elapsed time; the wall
//! clock is the scenario's fixed epoch plus elapsed time plus a per-node
//! skew that the timeline can change (clock-skew faults).

use igor::env::Clock;
use std::cell::Cell;
use std::rc::Rc;

/// Unix time at simulated t = 0: 2025-01-01T00:00:00Z. Fixed so traces never
/// depend on when the simulation ran.
pub const SIM_EPOCH_UNIX_NS: i64 = 1_735_689_600_000_000_000;

#[derive(Clone, Debug, Default)]
pub struct SimClock {
    skew_ns: Rc<Cell<i64>>,
}

impl SimClock {
    /// A clock whose wall-clock skew is shared with the timeline driver.
    pub fn new(skew_ns: Rc<Cell<i64>>) -> Self {
        SimClock { skew_ns }
    }
}

/// Simulated time since the start of the run, in ns (0 outside a simulation).
pub fn sim_now_ns() -> u64 {
    turmoil::sim_elapsed().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

impl Clock for SimClock {
    fn mono_ns(&self) -> u64 {
        sim_now_ns()
    }
    fn unix_ns(&self) -> i64 {
        let elapsed = i64::try_from(sim_now_ns()).unwrap_or(i64::MAX);
        SIM_EPOCH_UNIX_NS.saturating_add(elapsed).saturating_add(self.skew_ns.get())
    }
}
