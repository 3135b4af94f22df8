//! Simulated twin of `igor::env::real::SystemClock`: time from the turmoil
//! simulation. The monotonic reading is simulated elapsed time; the wall
//! clock is the scenario's fixed epoch plus elapsed time plus a per-node
//! skew and drift that the timeline can change (clock faults).

use igor::env::Clock;
use std::cell::Cell;
use std::rc::Rc;

/// Unix time at simulated t = 0: 2025-01-01T00:00:00Z. Fixed so traces never
/// depend on when the simulation ran.
pub const SIM_EPOCH_UNIX_NS: i64 = 1_735_689_600_000_000_000;

/// A node's wall-clock error: a fixed offset plus a drift rate that has
/// applied since `drift_since_ns` of simulated time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockFault {
    pub skew_ns: i64,
    pub drift_ppm: i64,
    pub drift_since_ns: u64,
}

impl ClockFault {
    /// Offset from true time at simulated time `now_ns`.
    pub fn offset_ns(&self, now_ns: u64) -> i64 {
        let run = i128::from(now_ns.saturating_sub(self.drift_since_ns));
        let drift = run * i128::from(self.drift_ppm) / 1_000_000;
        self.skew_ns.saturating_add(i64::try_from(drift).unwrap_or(0))
    }

    /// Shift the clock by `ms`.
    pub fn skew(&mut self, ms: i64) {
        self.skew_ns = self.skew_ns.saturating_add(ms.saturating_mul(1_000_000));
    }

    /// Change the drift rate at `now_ns`; the offset gathered so far stays.
    pub fn set_drift(&mut self, now_ns: u64, ppm: i64) {
        self.skew_ns = self.offset_ns(now_ns);
        self.drift_ppm = ppm;
        self.drift_since_ns = now_ns;
    }
}

#[derive(Clone, Debug, Default)]
pub struct SimClock {
    fault: Rc<Cell<ClockFault>>,
}

impl SimClock {
    /// A clock whose wall-clock error is shared with the timeline driver.
    pub fn new(fault: Rc<Cell<ClockFault>>) -> Self {
        SimClock { fault }
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
        SIM_EPOCH_UNIX_NS.saturating_add(elapsed).saturating_add(self.fault.get().offset_ns(sim_now_ns()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_accumulates_and_keeps_its_offset_when_changed() {
        let mut f = ClockFault::default();
        f.skew(-5);
        assert_eq!(f.offset_ns(1_000_000_000), -5_000_000);
        f.set_drift(1_000_000_000, 1_000); // 1000 ppm fast from t = 1 s
        assert_eq!(f.offset_ns(3_000_000_000), -5_000_000 + 2_000_000);
        f.set_drift(3_000_000_000, 0);
        assert_eq!(f.offset_ns(9_000_000_000), -3_000_000);
    }
}
