//! The watchdog: a node that keeps emitting events while its simulated time
//! does not advance, or that emits more events per simulated second than
//! any honest run comes near, is STUCK. A spinning node never lets turmoil's
//! step return (the runtime is never idle, so simulated time never moves),
//! so the runner cannot see it between steps: the watchdog sits between the
//! node's driver and the runner's event channel, inside the host, and stops
//! the host's software when it trips. Memory stays bounded: it keeps only a
//! ring of the last [`RING`] events for the report, and the runner receives
//! at most the limit's worth of events from a spinning node.

use igor::node::NodeEvent;
use igor::units::AgentId;
use std::collections::{BTreeMap, VecDeque};

/// The verdict name of a run the watchdog ended (`Violation("STUCK")`).
pub const STUCK: &str = "STUCK";

/// Events one node may emit at one simulated instant (its monotonic clock
/// reading, ns) before it is STUCK. Measured over the library (35
/// scenarios at their pinned seeds): at most 11 events per node per
/// simulated millisecond, fewer per exact instant. A deploy, a restart
/// reloading many agents, or a handoff emits a few dozen at one instant;
/// 5,000 is two orders of magnitude above that and still a small trace
/// (under 1 MB) when a node spins.
pub const MAX_EVENTS_PER_INSTANT: u64 = 5_000;

/// Events one node may emit within one simulated second. Measured over the
/// library: at most 134 per node per simulated second (a3-migration-churn);
/// an agent that always has more work ticks every 10 ms (`tick_fast_ns`),
/// about 300 events per second. 50,000 is over 100x the fastest honest
/// cadence, so only a node busy-looping in small time steps reaches it.
pub const MAX_EVENTS_PER_SIM_SECOND: u64 = 50_000;

/// Events kept for the STUCK report.
pub const RING: usize = 20;

/// Why a node was judged stuck, with the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// The node's clock at the last event (ns).
    pub at_ns: u64,
    /// The agent most of the last events were about, if any.
    pub agent: Option<AgentId>,
    pub reason: String,
    /// The last [`RING`] events, canonical lines.
    pub last_events: Vec<String>,
}

/// Per-node event-rate watch. Feed every event in order.
#[derive(Debug, Default)]
pub struct Watchdog {
    instant: Option<u64>,
    at_instant: u64,
    second: Option<u64>,
    in_second: u64,
    ring: VecDeque<NodeEvent>,
    limits: Limits,
}

/// The two limits (tests lower them).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_instant: u64,
    pub per_second: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_instant: MAX_EVENTS_PER_INSTANT, per_second: MAX_EVENTS_PER_SIM_SECOND }
    }
}

impl Watchdog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_limits(limits: Limits) -> Self {
        Watchdog { limits, ..Self::default() }
    }

    /// Count `e`; `Some` once the node is stuck.
    pub fn observe(&mut self, e: &NodeEvent) -> Option<Stuck> {
        if self.ring.len() == RING {
            self.ring.pop_front();
        }
        self.ring.push_back(e.clone());
        if self.instant == Some(e.at_ns) {
            self.at_instant += 1;
        } else {
            self.instant = Some(e.at_ns);
            self.at_instant = 1;
        }
        let second = e.at_ns / 1_000_000_000;
        if self.second == Some(second) {
            self.in_second += 1;
        } else {
            self.second = Some(second);
            self.in_second = 1;
        }
        let reason = if self.at_instant > self.limits.per_instant {
            format!(
                "{} events at one simulated instant ({} ns) while time did not advance (limit {})",
                self.at_instant, e.at_ns, self.limits.per_instant
            )
        } else if self.in_second > self.limits.per_second {
            format!(
                "{} events within simulated second {second} (limit {} per node per second)",
                self.in_second, self.limits.per_second
            )
        } else {
            return None;
        };
        Some(Stuck { at_ns: e.at_ns, agent: self.busiest_agent(), reason, last_events: self.lines() })
    }

    fn busiest_agent(&self) -> Option<AgentId> {
        let mut count: BTreeMap<&AgentId, usize> = BTreeMap::new();
        for e in &self.ring {
            if let Some(a) = e.event.agent() {
                *count.entry(a).or_default() += 1;
            }
        }
        count.into_iter().max_by_key(|(_, c)| *c).map(|(a, _)| a.clone())
    }

    fn lines(&self) -> Vec<String> {
        self.ring
            .iter()
            .map(|e| format!("{} {} {}", crate::trace::fmt_time(e.at_ns), e.node, crate::trace::event(&e.event)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igor::node::Event;
    use igor::units::NodeId;

    fn fault(at_ns: u64) -> NodeEvent {
        NodeEvent {
            at_ns,
            node: NodeId::new("a").unwrap(),
            seq: 0,
            event: Event::FaultObserved { agent: Some(AgentId::new("trap").unwrap()), fault: "cannot snapshot".into() },
        }
    }

    #[test]
    fn a_node_spinning_at_one_instant_is_stuck_with_its_last_events() {
        let mut w = Watchdog::new();
        let mut stuck = None;
        for i in 0..=MAX_EVENTS_PER_INSTANT {
            stuck = w.observe(&fault(7));
            if stuck.is_some() {
                assert_eq!(i, MAX_EVENTS_PER_INSTANT, "trips exactly past the limit");
            }
        }
        let s = stuck.expect("stuck past the limit");
        assert_eq!(s.agent, Some(AgentId::new("trap").unwrap()));
        assert_eq!(s.last_events.len(), RING);
        assert!(s.reason.contains("one simulated instant"), "{}", s.reason);
        assert!(w.ring.len() <= RING, "bounded memory");
    }

    #[test]
    fn honest_rates_pass_and_a_fast_loop_trips_the_per_second_limit() {
        // 300 events a second for an hour of simulated time: honest.
        let mut w = Watchdog::new();
        for i in 0..3600 * 300u64 {
            assert_eq!(w.observe(&fault(i * 3_333_333)), None);
        }
        // One event per microsecond: a busy loop in tiny time steps.
        let mut w = Watchdog::with_limits(Limits { per_instant: 10, per_second: 1000 });
        let tripped = (0..2000u64).find_map(|i| w.observe(&fault(i * 1000)));
        assert!(tripped.is_some_and(|s| s.reason.contains("within simulated second 0")));
    }
}
