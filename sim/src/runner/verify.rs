//! The end-of-run verify: every live, honest node's history archive is
//! checked as `igord verify` would (EI-3 at rest), split into segments at
//! adopted checkpoints; a broken chain is CHAIN.

use super::RunError;
use super::schema::AgentBytes;
use super::world::World;
use crate::checker::{CHAIN, Violation};
use crate::trace::{self, Line, list, text, word};
use igor::checkpoint::Hash32;
use igor::lineage;
use igor::units::AgentId;

/// Steps the runner waits at the end of a run for the live hosts to stop
/// and hand over their history archives (each needs one step).
pub(super) const VERIFY_STEPS: u32 = 100;

impl World<'_> {
    /// End-of-run `verify` of every live node's history: stop each host's
    /// driver, let it read its archive, and check every agent's chain with
    /// `igor::lineage::verify_lineage` and the node's recovery records (what
    /// `igord verify` runs): a recorded recovery is named, any other fork
    /// is CHAIN. Files the simulator corrupted are left out first.
    pub(super) fn verify_histories(&mut self, agents: &[AgentBytes]) -> Result<Result<(), Violation>, RunError> {
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !self.down.contains(*n) && !self.byzantine_nodes.contains(*n))
            .cloned()
            .collect();
        for n in &live {
            let ctl = &self.ctls[n];
            ctl.collect.set(true);
            // Closing the control channel makes the driver return.
            *ctl.control.borrow_mut() = None;
        }
        let ready = |w: &Self| live.iter().all(|n| w.ctls[n].histories.borrow().is_some());
        for _ in 0..VERIFY_STEPS {
            if ready(self) {
                break;
            }
            if let Err(v) = self.step(agents)? {
                return Ok(Err(v));
            }
        }
        for n in &live {
            let ctl = self.ctls[n].clone();
            let Some(histories) = ctl.histories.borrow_mut().take() else {
                let line = Line::new("verify").with("node", word(n)).with("result", word("host_did_not_stop"));
                self.trace.sim(self.now_ns, line);
                continue;
            };
            for (agent, (entries, records)) in histories {
                let kept: Vec<(String, Vec<u8>)> = entries
                    .into_iter()
                    .filter(|(_, b)| {
                        !ctl.corrupted.get()
                            || igor::checkpoint::Checkpoint::decode(b).is_ok_and(|c| c.verify_signature().is_ok())
                    })
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                // Files are named by tick: sorted by name is sorted by tick.
                let adopted = self.adopted.get(&(n.clone(), agent.clone()));
                let mut segments: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
                for entry in kept {
                    let starts = adopted.is_some_and(|a| a.contains(&Hash32::of(&entry.1)));
                    match segments.last_mut() {
                        Some(seg) if !starts => seg.push(entry),
                        _ => segments.push(vec![entry]),
                    }
                }
                let mut ranges = Vec::new();
                let mut recoveries = Vec::new();
                for seg in &segments {
                    match lineage::verify_lineage(seg, &records) {
                        Ok(s) => {
                            ranges.push(format!("{}..{}", s.first_tick, s.last_tick));
                            for (tick, anchor) in &s.recoveries {
                                recoveries.push(format!("{tick}:{}", trace::hash(anchor)));
                            }
                        }
                        Err(broken) => {
                            let agent_id = AgentId::new(agent.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
                            let line = Line::new("verify")
                                .with("agent", word(&agent))
                                .with("error", text(&broken.to_string()))
                                .with("node", word(n))
                                .with("result", word("invalid"));
                            self.trace.sim(self.now_ns, line);
                            return Ok(Err(Violation {
                                invariant: CHAIN,
                                at_ns: self.now_ns,
                                nodes: vec![ctl.name.clone()],
                                agent: agent_id,
                                message: format!("history of {agent} on {n} fails verify: {broken}"),
                            }));
                        }
                    }
                }
                let line = Line::new("verify")
                    .with("agent", word(&agent))
                    .with("node", word(n))
                    .with("recoveries", list(recoveries))
                    .with("result", word("valid"))
                    .with("ticks", list(ranges));
                self.trace.sim(self.now_ns, line);
            }
        }
        Ok(Ok(()))
    }
}
