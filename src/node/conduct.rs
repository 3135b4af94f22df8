//! The one hook through which a node's own conduct can depart from the
//! protocol: [`Conduct`]. The library compiles exactly one implementation,
//! [`Honest`], and every default method is the honest answer. Deviations
//! exist to test the defences of *other* nodes (spec §8, A2–A4): the
//! simulator's deviating implementations live in `igor-sim`
//! (`sim/src/adversary.rs`), next to its network interposer, which rewrites,
//! replays and forges a node's messages on the wire. Only what needs the
//! node's own state (its metering, what it does once a handoff is
//! confirmed, taking ownership of a checkpoint it holds, starting a
//! handoff) passes through this trait; the node performs each [`Deed`] with
//! its ordinary operations and reports it as [`Event::Misbehaved`], so the
//! trace names every departure where it happens.

use super::{AgentView, Node, NodeError};
use crate::authority::{Authority, AuthorityState, Role};
use crate::checkpoint::Checkpoint;
use crate::env::{Clock, Disk, Entropy};
use crate::executor::Executor;
use crate::lease::Lease;
use crate::lineage::Lineage;
use crate::node::event::Event;
use crate::units::{AgentId, Epoch, Microcents, NodeId};

/// What the node does once the target confirmed a handoff (EI-4: honestly,
/// the source retires and deletes its copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterConfirm {
    /// Retire and delete the local copy (the protocol).
    Retire,
    /// Retire, but keep the agent's files on disk.
    RetireKeepingFiles,
    /// Stay the agent's owner at `epoch`: a [`Deed::Own`] of the current head.
    StayOwner { epoch: Epoch, act: String },
}

/// A departure from the protocol the node performs with its own operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deed {
    /// Start a handoff of `agent` to `to` (the operator's `migrate`).
    Migrate { agent: AgentId, to: NodeId, act: String },
    /// Make this node `agent`'s ACTIVE_OWNER at `epoch` with a fresh lease,
    /// from `from` (a checkpoint the node holds; `None`: its current head).
    Own { agent: AgentId, from: Option<Box<Checkpoint>>, epoch: Epoch, act: String },
}

/// What a [`Conduct`] sees of the node when it acts.
#[derive(Clone, Debug)]
pub struct ConductView {
    /// Every agent the node knows, with the highest epoch major it saw
    /// claimed for it (its own, recorded, or announced by a peer).
    pub agents: Vec<(AgentView, u64)>,
}

/// The node's conduct at the few points where a deviating node would act
/// on its own state. Every method's default is the protocol.
pub trait Conduct {
    /// Microcents to take for one tick of `agent` beyond its fuel-derived
    /// `cost` (RE-3: honestly none), and the act to report when it starts.
    fn surcharge(&mut self, _agent: &AgentId, _cost: Microcents) -> (Microcents, Option<String>) {
        (Microcents::ZERO, None)
    }

    /// What to do once the target confirmed the handoff of `agent`, owned
    /// here at `epoch`.
    fn on_confirmed(&mut self, _agent: &AgentId, _epoch: Epoch) -> AfterConfirm {
        AfterConfirm::Retire
    }

    /// Whether a peer's claim about an agent held here (a newer epoch, a
    /// divergent head) is acted on (EI-11, superseded).
    fn heeds_peer_claims(&self) -> bool {
        true
    }

    /// When [`Conduct::act`] wants to run next (node monotonic ns).
    fn next_ns(&self) -> Option<u64> {
        None
    }

    /// Deeds due at `now_ns`.
    fn act(&mut self, _now_ns: u64, _view: &ConductView) -> Vec<Deed> {
        Vec::new()
    }
}

/// The protocol, and the only [`Conduct`] in the library.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Honest;

impl Conduct for Honest {}

impl<X: Executor, D: Disk, C: Clock, R: Entropy> Node<X, D, C, R> {
    /// Replace the node's conduct (the simulator's adversaries only).
    pub fn set_conduct(&mut self, conduct: Box<dyn Conduct + Send>) {
        self.conduct = conduct;
    }

    /// Perform the deeds the conduct has due at `now_ns`.
    pub(super) fn act_out(&mut self, now_ns: u64) {
        match self.conduct.next_ns() {
            Some(due) if due <= now_ns => {}
            _ => return,
        }
        let agents = self
            .agent_ids()
            .into_iter()
            .filter_map(|a| {
                let view = self.agent(&a)?;
                let s = self.agents.get(&a)?;
                let announced = self.guard.views.get(&a).map(|v| v.highest.major).unwrap_or(0);
                Some((view, announced.max(s.highest_major_seen).max(s.authority.epoch().major)))
            })
            .collect();
        for deed in self.conduct.act(now_ns, &ConductView { agents }) {
            self.perform(deed);
        }
    }

    pub(super) fn perform(&mut self, deed: Deed) {
        match deed {
            Deed::Migrate { agent, to, act } => {
                self.emit(Event::Misbehaved { agent: Some(agent.clone()), act });
                // A refusal is already in the trace (`refused`).
                let _ = self.start_handoff(agent, to);
            }
            Deed::Own { agent, from, epoch, act } => {
                self.emit(Event::Misbehaved { agent: Some(agent.clone()), act });
                if let Err(e) = self.own(&agent, from, epoch) {
                    self.fault(Some(&agent), format!("conduct: {e}"));
                }
            }
        }
    }

    /// ACTIVE_OWNER of `agent` at `epoch`, ticking `from` (or the head).
    fn own(&mut self, agent: &AgentId, from: Option<Box<Checkpoint>>, epoch: Epoch) -> Result<(), NodeError> {
        let now = self.clock.now();
        let restart = from.is_some();
        if let Some(c) = from {
            let mut lineage = Lineage::new(agent.clone());
            lineage.adopt(&self.disk, *c).map_err(|e| NodeError::lineage(agent, e))?;
            let unknown = || NodeError::violation(agent, format!("{agent} not known here"));
            self.agents.get_mut(agent).ok_or_else(unknown)?.lineage = lineage;
        }
        let unknown = || NodeError::violation(agent, format!("{agent} not known here"));
        let s = self.agents.get_mut(agent).ok_or_else(unknown)?;
        s.authority = Authority::restore(AuthorityState::ActiveOwner, Role::Source, epoch);
        s.lease = Lease::grant(&self.cfg.lease, now.unix_ns);
        if restart {
            self.start_instance(agent)?;
        } else {
            s.ticking = s.halted.is_none() && s.instance.is_some();
            s.next_tick_ns = now.mono_ns;
        }
        let persisted = self.persist(agent);
        if restart {
            persisted?;
        } else if let Err(e) = persisted {
            self.fault(Some(agent), format!("persist authority: {e}"));
        }
        self.announce(agent);
        Ok(())
    }
}
