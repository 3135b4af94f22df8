//! Timeline actions applied to the world: crashes and restarts, partitions
//! and heals, link faults, clock faults, holds and swizzles, BUGGIFY arming,
//! operator commands (migrate, retire, recover) and disk faults.

use super::schema::AgentBytes;
use super::world::{Sched, World};
use crate::checker::Obs;
use crate::net::LinkFaults;
use crate::scenario::{Action, Storage};
use igor::checkpoint::Hash32;
use igor::driver::Control;
use igor::env::derive_seed;
use igor::node::Command;
use igor::units::{AgentId, NodeId};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::time::Duration;

impl World<'_> {
    /// The crash a `Restart` of a node that is up stands for, applied before
    /// the restart (docs/scenarios.md: a Restart of a running node is a crash
    /// followed by the restart). Timeline and BUGGIFY restarts are scheduled
    /// actions, which `apply_due` expands; the liveness phase restarts only
    /// nodes that are down.
    pub(super) fn implied_crash(&self, action: &Action) -> Option<Action> {
        match action {
            Action::Restart { node, .. } if !self.down.contains(node) => Some(Action::Crash { node: node.clone() }),
            _ => None,
        }
    }

    /// Apply one action; returns observations for the checker.
    pub(super) fn apply(&mut self, action: &Action, agents: &[AgentBytes]) -> Vec<(NodeId, Obs)> {
        self.poked = true;
        let ctl = |n: &str| self.ctls.get(n).expect("scenario validated: node names resolve").clone();
        let send = |n: &str, cmd: Command| {
            if let Some(tx) = ctl(n).control.borrow().as_ref() {
                let _ = tx.send(Control::Command(cmd));
            }
        };
        let agent_id = |a: &str| AgentId::new(a).expect("scenario validated: agent names are ids");
        let mut obs = Vec::new();
        match action {
            Action::Migrate { agent, from, to } => {
                let to = ctl(to).name.clone();
                send(from, Command::Migrate { agent: agent_id(agent), to });
            }
            Action::Crash { node } => {
                if self.down.insert(node.clone()) {
                    self.sim.crash(node.as_str());
                    *ctl(node).control.borrow_mut() = None;
                    self.coverage.crashed(node);
                    obs.push((ctl(node).name.clone(), Obs::Crashed));
                }
            }
            Action::Restart { node, storage } => {
                if matches!(storage, Storage::Wipe) {
                    for a in agents {
                        obs.push((ctl(node).name.clone(), Obs::Forgot { agent: a.id.clone() }));
                    }
                    self.reported.retain(|(_, n), _| n != node);
                }
                if !matches!(storage, Storage::Intact) {
                    self.coverage.mark("restart_with_damaged_disk");
                }
                self.down.remove(node);
                // The new boot reports its own deadline.
                ctl(node).wake_ns.set(0);
                *ctl(node).damage.borrow_mut() = storage.clone();
                self.sim.bounce(node.as_str());
            }
            Action::Partition { a, b } => {
                self.cut.insert((a.clone(), b.clone()));
                self.cut.insert((b.clone(), a.clone()));
                self.sim.partition(a.as_str(), b.as_str())
            }
            Action::PartitionOneway { from, to } => {
                self.cut.insert((from.clone(), to.clone()));
                self.sim.partition_oneway(from.as_str(), to.as_str())
            }
            Action::Heal { a, b } => {
                self.cut.remove(&(a.clone(), b.clone()));
                self.cut.remove(&(b.clone(), a.clone()));
                self.sim.repair(a.as_str(), b.as_str())
            }
            Action::HealOneway { from, to } => {
                self.cut.remove(&(from.clone(), to.clone()));
                self.sim.repair_oneway(from.as_str(), to.as_str())
            }
            Action::Latency { a, b, ms } => {
                self.sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*ms))
            }
            Action::Duplicate { node, probability } => ctl(node).faults.borrow_mut().faults.duplicate = *probability,
            Action::Reorder { node, max_delay_ms } => {
                ctl(node).faults.borrow_mut().faults.extra_delay_ms = (0, *max_delay_ms)
            }
            Action::Corrupt { node, probability } => ctl(node).faults.borrow_mut().faults.corrupt = *probability,
            Action::ClearFaults { node } => ctl(node).faults.borrow_mut().faults = LinkFaults::default(),
            Action::Skew { node, ms } => {
                let c = &ctl(node).clock;
                let mut f = c.get();
                f.skew(*ms);
                c.set(f);
            }
            Action::Drift { node, ppm } => {
                let c = &ctl(node).clock;
                let mut f = c.get();
                f.set_drift(self.now_ns, *ppm);
                c.set(f);
            }
            Action::Pause { node, ms } => {
                self.hold(node);
                self.schedule(self.now_ns.saturating_add(ms.saturating_mul(1_000_000)), Sched::Release(node.clone()));
            }
            Action::Swizzle { nodes, step_ms } => self.swizzle(nodes, *step_ms),
            Action::Buggify { node, on, fault, for_ms } => {
                self.armed.push((node.clone(), *on, *fault, for_ms.saturating_mul(1_000_000)));
            }
            Action::Retire { agent, node } => send(node, Command::Retire { agent: agent_id(agent) }),
            Action::Recover { agent, node, anchor_tick, force } => {
                let seen = self.heads.get(&(node.clone(), agent.clone()));
                let anchor = match anchor_tick {
                    Some(t) => seen.and_then(|m| m.get(t).copied()),
                    None => seen.and_then(|m| m.values().next_back().copied()),
                };
                // An unknown anchor is passed as zeros: the node refuses it,
                // and the refusal is in the trace.
                let anchor = anchor.unwrap_or(Hash32::ZERO);
                send(node, Command::Recover { agent: agent_id(agent), anchor, force: *force });
            }
            Action::DiskFault { node, kind, for_ms, under } => {
                let until = self.now_ns.saturating_add(for_ms.saturating_mul(1_000_000));
                ctl(node).disk.start(*kind, until);
                *ctl(node).disk.under.borrow_mut() = under.clone();
                self.schedule(until, Sched::DiskHeal(node.clone()));
            }
        }
        obs
    }

    /// Hold `nodes` one by one, then release them in a random order drawn
    /// from this swizzle's own child RNG.
    pub(super) fn swizzle(&mut self, nodes: &[String], step_ms: u64) {
        let mut rng = ChaCha20Rng::from_seed(derive_seed(self.seed, &format!("swizzle/{}", self.swizzles)));
        self.swizzles += 1;
        let step = step_ms.saturating_mul(1_000_000);
        let mut order: Vec<String> = nodes.to_vec();
        let mut at = self.now_ns;
        for n in &order {
            self.schedule(at, Sched::Hold(n.clone()));
            at = at.saturating_add(step);
        }
        // Fisher-Yates with the child RNG.
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for n in order {
            self.schedule(at, Sched::Release(n));
            at = at.saturating_add(step);
        }
    }
}
