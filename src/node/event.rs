//! The node's structured, ordered event stream: everything the simulator's
//! trace and invariant checker need (EI-1/2/3/5/11, RE-1/3/4/8, CM-5), and
//! nothing that varies between runs (no addresses, no host wall clock; times
//! are the node's own simulated clock readings). Every event serialises with
//! serde and displays as one canonical line: `<at_ns> <node> <kind> k=v …`
//! with keys sorted.

use crate::authority::{AuthorityState, Reason, Role};
use crate::checkpoint::Hash32;
pub mod text;

use crate::executor::TickOutcome;
use crate::migration::Outcome;
use crate::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use crate::wire::MessageKind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Serde for hashes in events: full lowercase hex.
pub mod hex32 {
    use crate::checkpoint::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &Hash32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        let s = String::deserialize(d)?;
        Hash32::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not a 32-byte hex digest"))
    }
}

/// Serde for epochs in events: `"major.generation"`.
pub mod epoch_text {
    use crate::units::Epoch;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(e: &Epoch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Epoch, D::Error> {
        let s = String::deserialize(d)?;
        let (a, b) = s.split_once('.').ok_or_else(|| serde::de::Error::custom("epoch is major.generation"))?;
        let p = |x: &str| x.parse::<u64>().map_err(serde::de::Error::custom);
        Ok(Epoch::new(p(a)?, p(b)?))
    }
}

/// One event, stamped with the node and its own monotonic time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// The node's monotonic clock (simulated in the simulator), ns.
    pub at_ns: u64,
    pub node: NodeId,
    /// Per-node sequence number, from 0 at each (re)start.
    pub seq: u64,
    pub event: Event,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The node opened its disk. `restarted`: agents were found on it.
    NodeStarted {
        restarted: bool,
        agents: u32,
    },
    AgentDeployed {
        agent: AgentId,
        #[serde(with = "hex32")]
        wasm_hash: Hash32,
        budget: Microcents,
    },
    /// An agent found on disk at restart, with the state it was restored to.
    AgentLoaded {
        agent: AgentId,
        state: AuthorityState,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        head_tick: TickNumber,
        #[serde(with = "hex32")]
        head_hash: Hash32,
        budget: Microcents,
    },
    /// EI-1: the node is about to run `tick` under `epoch`.
    TickStarted {
        agent: AgentId,
        tick: TickNumber,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        budget: Microcents,
        /// Hash of the committed checkpoint this execution descends from
        /// (EI-2: execution resumes only from a committed checkpoint).
        #[serde(with = "hex32")]
        base: Hash32,
    },
    TickFinished {
        agent: AgentId,
        tick: TickNumber,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        cost: Microcents,
        paid: Microcents,
        /// Budget after the tick (RE-4: never rises).
        budget: Microcents,
        outcome: TickOutcome,
        /// CM-5: side-effect hostcalls attempted, and whether allowed.
        side_effects: u32,
        side_effects_allowed: bool,
    },
    /// RE-1/EI-3/RE-3: a checkpoint became durable. `charged` and `paid` are
    /// the sums over the ticks since `prev_hash`, so that
    /// `budget(prev) = budget + charged + paid` to the microcent.
    CheckpointCommitted {
        agent: AgentId,
        tick: TickNumber,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        #[serde(with = "hex32")]
        hash: Hash32,
        #[serde(with = "hex32")]
        prev_hash: Hash32,
        budget: Microcents,
        charged: Microcents,
        paid: Microcents,
        lease_expiry_ns: i64,
        handoff: bool,
    },
    /// A target stored a checkpoint received in a package (no new link).
    CheckpointAdopted {
        agent: AgentId,
        from: NodeId,
        tick: TickNumber,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        #[serde(with = "hex32")]
        hash: Hash32,
        #[serde(with = "hex32")]
        prev_hash: Hash32,
        budget: Microcents,
    },
    /// EI-5: authority moved. `from` is `None` when the node had no record.
    AuthorityChanged {
        agent: AgentId,
        from: Option<AuthorityState>,
        to: AuthorityState,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        reason: Reason,
    },
    LeaseRenewed {
        agent: AgentId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        expiry_ns: i64,
    },
    MessageSent {
        kind: MessageKind,
        peer: NodeId,
        agent: AgentId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        head_tick: TickNumber,
        #[serde(with = "hex32")]
        head_hash: Hash32,
        /// The request id for requests, `None` for replies.
        request: Option<u64>,
    },
    MessageReceived {
        kind: MessageKind,
        peer: NodeId,
        agent: AgentId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        head_tick: TickNumber,
        #[serde(with = "hex32")]
        head_hash: Hash32,
    },
    HandoffStarted {
        agent: AgentId,
        target: NodeId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
    },
    /// RE-3: `budget` is in flight from here on until the outcome is known.
    PackageSent {
        agent: AgentId,
        target: NodeId,
        attempt: u32,
        tick: TickNumber,
        #[serde(with = "hex32")]
        hash: Hash32,
        budget: Microcents,
        expiry_ns: i64,
    },
    RetryScheduled {
        agent: AgentId,
        attempt: u32,
        at_ns: u64,
    },
    /// The end of a handoff on either side. An ambiguous outcome is always
    /// followed by the agent being RECOVERY_REQUIRED on this node.
    MigrationFinished {
        agent: AgentId,
        peer: NodeId,
        role: Role,
        outcome: Outcome,
        budget: Microcents,
        tick: TickNumber,
        #[serde(with = "hex32")]
        hash: Hash32,
    },
    LocalCopyDeleted {
        agent: AgentId,
    },
    /// A message about an older epoch (or an old request) was ignored.
    StaleMessageIgnored {
        agent: AgentId,
        peer: NodeId,
        kind: MessageKind,
        #[serde(with = "epoch_text")]
        message_epoch: Epoch,
        #[serde(with = "epoch_text")]
        local_epoch: Epoch,
        total: u64,
    },
    /// EI-11: two heads, or two owners, for one epoch.
    DivergenceDetected {
        agent: AgentId,
        peer: NodeId,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        local_tick: TickNumber,
        #[serde(with = "hex32")]
        local_head: Hash32,
        remote_tick: TickNumber,
        #[serde(with = "hex32")]
        remote_head: Hash32,
    },
    FaultObserved {
        agent: Option<AgentId>,
        fault: String,
    },
    CommandRefused {
        command: String,
        agent: Option<AgentId>,
        reason: String,
    },
    /// The agent stopped ticking here for good (budget, trap, load error).
    AgentHalted {
        agent: AgentId,
        reason: String,
    },
    /// EI-6: a checkpoint of the agent could not be written; the agent
    /// pauses (no unpersisted ticks) and the write is retried every
    /// checkpoint interval. Emitted once per change, not per retry.
    PersistFailing {
        agent: AgentId,
        /// The node's wall clock at the first failure.
        since_unix_ns: i64,
        error: String,
    },
    /// A checkpoint was written again after [`Event::PersistFailing`]: the
    /// agent ticks again.
    PersistRestored {
        agent: AgentId,
    },
    /// Operator recovery from the named anchor checkpoint.
    Recovered {
        agent: AgentId,
        #[serde(with = "hex32")]
        anchor: Hash32,
        anchor_tick: TickNumber,
        #[serde(with = "epoch_text")]
        epoch: Epoch,
        budget: Microcents,
    },
    NodeShutdown,
    /// A defence did not believe a request (A2–A4): which defence, why.
    ClaimRejected {
        agent: AgentId,
        peer: NodeId,
        kind: MessageKind,
        defence: super::defence::Defence,
        reason: String,
    },
    /// This node departed from the protocol: a [`super::Conduct`] deed, or
    /// (emitted by the simulator's interposer) a message it rewrote,
    /// replayed or made up. Never emitted under [`super::Honest`].
    Misbehaved {
        agent: Option<AgentId>,
        act: String,
    },
}

impl Event {
    /// The agent the event is about, if any.
    pub fn agent(&self) -> Option<&AgentId> {
        use Event::*;
        match self {
            NodeStarted { .. } | NodeShutdown => None,
            FaultObserved { agent, .. } | CommandRefused { agent, .. } | Misbehaved { agent, .. } => agent.as_ref(),
            AgentDeployed { agent, .. }
            | AgentLoaded { agent, .. }
            | TickStarted { agent, .. }
            | TickFinished { agent, .. }
            | CheckpointCommitted { agent, .. }
            | CheckpointAdopted { agent, .. }
            | AuthorityChanged { agent, .. }
            | LeaseRenewed { agent, .. }
            | MessageSent { agent, .. }
            | MessageReceived { agent, .. }
            | HandoffStarted { agent, .. }
            | PackageSent { agent, .. }
            | RetryScheduled { agent, .. }
            | MigrationFinished { agent, .. }
            | LocalCopyDeleted { agent }
            | StaleMessageIgnored { agent, .. }
            | DivergenceDetected { agent, .. }
            | AgentHalted { agent, .. }
            | PersistFailing { agent, .. }
            | PersistRestored { agent }
            | ClaimRejected { agent, .. }
            | Recovered { agent, .. } => Some(agent),
        }
    }
}

impl fmt::Display for Event {
    /// The one text form (`text::event_line`): what traces and the node's
    /// event log print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", text::event_line(self))
    }
}

impl fmt::Display for NodeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} #{} {}", self.at_ns, self.node, self.seq, self.event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_display_as_one_sorted_line_and_roundtrip() {
        let e = NodeEvent {
            at_ns: 5,
            node: NodeId::new("a").unwrap(),
            seq: 3,
            event: Event::AuthorityChanged {
                agent: AgentId::new("counter").unwrap(),
                from: Some(AuthorityState::ActiveOwner),
                to: AuthorityState::HandoffInitiated,
                epoch: Epoch::new(1, 2),
                reason: Reason::HandoffStarted,
            },
        };
        assert_eq!(
            e.to_string(),
            "5 a #3 authority_changed agent=counter epoch=1.2 from=ACTIVE_OWNER reason=handoff_started to=HANDOFF_INITIATED"
        );
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<NodeEvent>(&json).unwrap(), e);
        let f = Event::FaultObserved { agent: None, fault: "disk full".into() };
        assert_eq!(f.to_string(), "fault_observed agent=- fault=\"disk full\"");
    }
}
