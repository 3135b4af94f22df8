//! The liveness phase (spec §7 liveness): heal every fault, then every
//! agent that did not halt must tick again within the scenario's bound. The
//! simulated operator recovers an agent that only RECOVERY_REQUIRED copies
//! hold (newest head first, a refusing node never twice). Failures are
//! LIVENESS, or LOST when the fault model destroyed every honest copy.

use super::RunError;
use super::schema::AgentBytes;
use super::world::World;
use crate::checker::{State, Violation};
use crate::net::LinkFaults;
use crate::scenario::{Action, Storage};
use crate::trace::{self, Line, fmt_time};
use igor::units::{AgentId, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// After the heal, how long the runner lets restarted nodes reload their
/// agents before it decides that an agent needs the operator.
pub(super) const SETTLE_NS: u64 = 2_000_000_000;

/// The invariant name of a liveness failure.
pub const LIVENESS: &str = "LIVENESS";

/// The verdict of a run whose injected wipes destroyed every copy of an
/// agent (the checker's own record: the last node holding it was wiped and
/// none held it since), or only misbehaving nodes hold it (a hostage). Not a protocol failure: Igor keeps one replica, so
/// no protocol can bring it back. `explore` counts it apart from failures.
pub const LOST: &str = "LOST";

impl World<'_> {
    /// Liveness: heal every fault, then within `within_ns` every agent that
    /// did not halt must finish a tick. An agent that only RECOVERY_REQUIRED
    /// copies hold gets one operator recovery, on the copy with the newest
    /// head. A run that is safe only because everything stopped fails here.
    pub(super) fn liveness(
        &mut self,
        within_ns: u64,
        may_recover: bool,
        agents: &[AgentBytes],
    ) -> Result<Result<(), Violation>, RunError> {
        self.heal(agents);
        let heal_ns = self.now_ns;
        let deadline = heal_ns.saturating_add(within_ns);
        // The operator looks for agents to recover from the settle time on.
        self.alarm_ns = heal_ns + SETTLE_NS;
        // Only the liveness operator's own refused attempts send it on to
        // the next node: a refusal of a timeline `Recover` during the fault
        // window (a live owner elsewhere, say) says nothing about now.
        self.recover_refused.clear();
        self.ticked_since_heal = Some(BTreeSet::new());
        // agent → the node of the operator's last recovery attempt. One
        // recovery that the node accepts is all the operator gets; one the
        // node refuses (it says why) sends the operator to the next
        // candidate, each node at most once.
        let mut recovered: BTreeMap<String, String> = BTreeMap::new();
        let mut violation = None;
        let r = self.run_until(deadline, agents, |w| {
            let mut all_live = true;
            for a in agents {
                let name = a.id.to_string();
                if w.halted.contains(&name) || w.ticked_since_heal.as_ref().is_some_and(|t| t.contains(&name)) {
                    continue;
                }
                all_live = false;
                let retry = |n: &String| w.recover_refused.contains(&(name.clone(), n.clone()));
                if may_recover
                    && w.now_ns >= heal_ns + SETTLE_NS
                    && recovered.get(&name).is_none_or(retry)
                    && let Some(node) = w.recovery_candidate(&a.id)
                {
                    recovered.insert(name.clone(), node.clone());
                    // The simulator has checked no live node holds the agent.
                    let action = Action::Recover { agent: name, node, anchor_tick: None, force: true };
                    w.trace.sim(w.now_ns, trace::action_line("liveness_", &action));
                    // Recover yields no checker observations.
                    let _ = w.apply(&action, agents);
                }
            }
            all_live
        })?;
        if let Err(v) = r {
            return Ok(Err(v));
        }
        for a in agents {
            let name = a.id.to_string();
            let ticked = self.ticked_since_heal.as_ref().is_some_and(|t| t.contains(&name));
            if ticked && recovered.contains_key(&name) {
                self.coverage.mark("recovered_after_heal");
            }
            if self.halted.contains(&name) || ticked {
                continue;
            }
            // The fault model destroyed every copy (the last holder was
            // wiped): no protocol can bring the agent back. Named apart
            // from LIVENESS, which is a failure of the protocol.
            if let Some((node, at)) = self.checker.lost(&a.id) {
                self.coverage.mark("agent_lost_with_its_disk");
                violation = Some(Violation {
                    invariant: LOST,
                    at_ns: self.now_ns,
                    nodes: vec![node.clone()],
                    agent: a.id.clone(),
                    message: format!(
                        "every copy is gone: the last node holding it, {node}, was wiped at {} (no tick since the heal at {})",
                        fmt_time(at),
                        fmt_time(heal_ns)
                    ),
                });
                break;
            }
            // A hostage: the operator was allowed to help and could not,
            // because only misbehaving nodes hold the agent. (Without an
            // operator, the scenario asks whether the system stays live by
            // itself: that failure is LIVENESS, whoever holds the agent.)
            if may_recover && let Some(nodes) = self.checker.hostage_holders(&a.id) {
                self.coverage.mark("agent_held_hostage");
                let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
                violation = Some(Violation {
                    invariant: LOST,
                    at_ns: self.now_ns,
                    nodes,
                    agent: a.id.clone(),
                    message: format!(
                        "no honest node holds a copy: the only ones are on [{}], which misbehaved (no tick since the heal at {})",
                        names.join(", "),
                        fmt_time(heal_ns)
                    ),
                });
                break;
            }
            let held = self.checker.states(&a.id);
            let states: Vec<String> = held.iter().map(|(n, s)| format!("{n}={}", s.name())).collect();
            let refused: Vec<&str> =
                self.recover_refused.iter().filter(|(a, _)| *a == name).map(|(_, n)| n.as_str()).collect();
            let tried = if recovered.contains_key(&name) && refused.is_empty() {
                ", after one operator recovery".to_string()
            } else if recovered.contains_key(&name) {
                format!(", the operator's recovery refused on [{}]", refused.join(", "))
            } else if !may_recover {
                ", no operator recovery allowed".to_string()
            } else {
                String::new()
            };
            violation = Some(Violation {
                invariant: LIVENESS,
                at_ns: self.now_ns,
                nodes: held.into_iter().map(|(n, _)| n).collect(),
                agent: a.id.clone(),
                message: format!(
                    "no tick within {} ms of the heal at {}{tried} (authority: [{}])",
                    within_ns / 1_000_000,
                    fmt_time(heal_ns),
                    states.join(", ")
                ),
            });
            break;
        }
        Ok(match violation {
            Some(v) => Err(v),
            None => Ok(()),
        })
    }

    /// The node to recover `agent` on, if nobody can tick it without the
    /// operator: no live node owns it or is in a handoff, and some live node
    /// holds it in RECOVERY_REQUIRED (the one with the newest head wins;
    /// a node that refused a recovery is not asked again).
    pub(super) fn recovery_candidate(&self, agent: &AgentId) -> Option<String> {
        let states: Vec<(NodeId, State)> = self
            .reported
            .iter()
            .filter(|((a, _), _)| a == agent.as_str())
            .filter_map(|((_, n), st)| Some((NodeId::new(n).ok()?, *st)))
            .collect();
        let live = |n: &NodeId| !self.down.contains(n.as_str());
        let busy = states
            .iter()
            .any(|(n, s)| live(n) && matches!(s, State::ActiveOwner | State::HandoffInitiated | State::HandoffPending));
        if busy {
            return None;
        }
        let refused = |n: &NodeId| self.recover_refused.contains(&(agent.to_string(), n.to_string()));
        states
            .iter()
            .filter(|(n, s)| live(n) && *s == State::RecoveryRequired && !refused(n))
            .max_by_key(|(n, _)| {
                let head = self.heads.get(&(n.to_string(), agent.to_string())).and_then(|m| m.keys().next_back());
                (head.copied(), std::cmp::Reverse(n.to_string()))
            })
            .map(|(n, _)| n.to_string())
    }

    /// End of the fault window: repair every cut link, release every hold,
    /// clear message faults, drop pending fault steps and armed BUGGIFY
    /// crashes, and restart crashed nodes with their disks as they are.
    /// Clock skew stays: a wrong clock is a condition, not an event.
    pub(super) fn heal(&mut self, agents: &[AgentBytes]) {
        self.poked = true;
        self.trace.sim(self.now_ns, Line::new("heal_all"));
        for (a, b) in std::mem::take(&mut self.cut) {
            self.sim.repair_oneway(a.as_str(), b.as_str());
        }
        for node in std::mem::take(&mut self.held).into_keys() {
            for other in self.nodes.iter().filter(|o| **o != node) {
                self.sim.release(node.as_str(), other.as_str());
            }
        }
        for ctl in self.ctls.values() {
            ctl.faults.borrow_mut().faults = LinkFaults::default();
            ctl.disk.end(self.now_ns, true);
        }
        self.scheduled.clear();
        self.armed.clear();
        for node in self.down.clone() {
            let restart = Action::Restart { node, storage: Storage::Intact };
            self.trace.sim(self.now_ns, trace::action_line("", &restart));
            let _ = self.apply(&restart, agents);
        }
    }
}
