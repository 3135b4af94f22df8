//! The node's typed faults: every operation that can fail names its culprit
//! (a peer, the guest agent, the disk, this node's own invariant, or the
//! operator's request), so a caller can tell them apart by type instead of
//! by reading a string.
//!
//! The Display text of each error is the message the node has always
//! reported: it reaches traces (`fault_observed`, `command_refused`,
//! `migration_finished`) and the wire (`AgentStarted.Error`), and the
//! simulator's snapshots pin it byte for byte.

use super::defence::Defence;
use crate::env::DiskError;
use crate::identity::IdentityError;
use crate::kv::KvError;
use crate::lineage::LineageError;
use crate::migration::Refusal;
use crate::units::{AgentId, NodeId};
use store::StoreError;

use super::store;

/// A node operation that failed, by culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// A peer sent something this node does not accept: a package that
    /// fails the judgement, a defence or the executor's checks.
    #[error("{fault}")]
    Peer { peer: NodeId, agent: AgentId, fault: Box<PeerFault> },
    /// The agent's module or manifest: the executor could not prepare,
    /// start or snapshot it, or it is not the module its checkpoint names.
    #[error("{detail}")]
    Guest { agent: AgentId, detail: String },
    /// Storage failed: `context` names what was being written or read when
    /// the message names more than the path.
    #[error("{}{source}", context.as_ref().map(|c| format!("{c}: ")).unwrap_or_default())]
    Disk { agent: Option<AgentId>, context: Option<String>, source: Box<DiskFault> },
    /// This node's own invariant does not hold (a forbidden transition, a
    /// state an operation's caller should have ruled out): a bug, or a
    /// state a fault left behind; the agent is stopped, never guessed on.
    #[error("{detail}")]
    Violation { agent: Option<AgentId>, detail: String },
    /// What the operator asked for cannot be done now (unknown agent, wrong
    /// state, a setting out of range).
    #[error("{detail}")]
    Operator { agent: Option<AgentId>, detail: String },
}

/// What was wrong with what a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerFault {
    /// The judgement of the package refused it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A defence did not believe the claim (`metering_check` included).
    #[error("{defence}: {reason}")]
    Defence { defence: Defence, reason: String },
    /// Any other check of the package (decoding, kv seal, price policy,
    /// capabilities, the replay's chain).
    #[error("{0}")]
    Package(String),
}

/// The storage error under a [`NodeError::Disk`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskFault {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lineage(#[from] LineageError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A sealed kv snapshot on disk does not open.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A file that must be there is missing or unreadable.
    #[error("{0}")]
    Missing(&'static str),
}

impl NodeError {
    pub fn peer(peer: &NodeId, agent: &AgentId, fault: impl Into<PeerFault>) -> Self {
        NodeError::Peer { peer: peer.clone(), agent: agent.clone(), fault: Box::new(fault.into()) }
    }

    pub fn guest(agent: &AgentId, detail: impl ToString) -> Self {
        NodeError::Guest { agent: agent.clone(), detail: detail.to_string() }
    }

    pub fn disk(agent: &AgentId, source: impl Into<DiskFault>) -> Self {
        NodeError::Disk { agent: Some(agent.clone()), context: None, source: Box::new(source.into()) }
    }

    /// A disk error whose message names what was being done.
    pub fn disk_in(agent: &AgentId, context: impl Into<String>, source: impl Into<DiskFault>) -> Self {
        NodeError::Disk { agent: Some(agent.clone()), context: Some(context.into()), source: Box::new(source.into()) }
    }

    pub fn violation(agent: &AgentId, detail: impl Into<String>) -> Self {
        NodeError::Violation { agent: Some(agent.clone()), detail: detail.into() }
    }

    pub fn operator(agent: Option<&AgentId>, detail: impl Into<String>) -> Self {
        NodeError::Operator { agent: agent.cloned(), detail: detail.into() }
    }

    /// A lineage error: a link the chain rejects is this node's own
    /// violation (EI-3), anything else is the disk's.
    pub fn lineage(agent: &AgentId, e: LineageError) -> Self {
        match e {
            LineageError::Rejected { .. } => NodeError::violation(agent, e.to_string()),
            e => NodeError::disk(agent, e),
        }
    }

    /// The same fault, its message prefixed with `what` was being done
    /// (`what: message`); the culprit stays.
    pub fn context(self, what: &str) -> Self {
        match self {
            NodeError::Peer { peer, agent, fault } => {
                NodeError::Peer { peer, agent, fault: Box::new(PeerFault::Package(format!("{what}: {fault}"))) }
            }
            NodeError::Guest { agent, detail } => NodeError::Guest { agent, detail: format!("{what}: {detail}") },
            NodeError::Disk { agent, context, source } => {
                let context = Some(context.map_or_else(|| what.to_string(), |c| format!("{what}: {c}")));
                NodeError::Disk { agent, context, source }
            }
            NodeError::Violation { agent, detail } => {
                NodeError::Violation { agent, detail: format!("{what}: {detail}") }
            }
            NodeError::Operator { agent, detail } => NodeError::Operator { agent, detail: format!("{what}: {detail}") },
        }
    }

    /// The agent this error concerns, if it names one.
    pub fn agent(&self) -> Option<&AgentId> {
        match self {
            NodeError::Peer { agent, .. } | NodeError::Guest { agent, .. } => Some(agent),
            NodeError::Disk { agent, .. } | NodeError::Violation { agent, .. } | NodeError::Operator { agent, .. } => {
                agent.as_ref()
            }
        }
    }
}

impl From<String> for PeerFault {
    fn from(s: String) -> Self {
        PeerFault::Package(s)
    }
}

impl From<&str> for PeerFault {
    fn from(s: &str) -> Self {
        PeerFault::Package(s.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::DiskError;

    fn agent() -> AgentId {
        AgentId::new("a").unwrap()
    }

    /// The Display of a typed fault is the string the node reported before
    /// it was typed (traces and the wire carry it): the culprit is in the
    /// type, never in the text.
    #[test]
    fn display_is_the_former_message_and_context_keeps_the_culprit() {
        let io = DiskError::Io { op: "write", path: "agents/a/authority.json".into(), reason: "disk full".into() };
        let e = NodeError::disk(&agent(), io.clone());
        assert_eq!(e.to_string(), "write agents/a/authority.json: disk full");
        let e = NodeError::disk_in(&agent(), "recovery record r", io.clone());
        assert_eq!(e.to_string(), "recovery record r: write agents/a/authority.json: disk full");
        let e = e.context("target could not store the agent");
        assert_eq!(
            e.to_string(),
            "target could not store the agent: recovery record r: write agents/a/authority.json: disk full"
        );
        assert!(matches!(&e, NodeError::Disk { source, .. } if **source == DiskFault::Disk(io.clone())), "{e:?}");
        let v = NodeError::violation(&agent(), "no running instance").context("final checkpoint");
        assert_eq!(v.to_string(), "final checkpoint: no running instance");
        assert!(matches!(v, NodeError::Violation { .. }));
        let peer = NodeId::new("n1").unwrap();
        let d = NodeError::peer(
            &peer,
            &agent(),
            PeerFault::Defence { defence: Defence::MeteringCheck, reason: "x".into() },
        );
        assert_eq!(d.to_string(), "metering_check: x");
        assert_eq!(d.agent(), Some(&agent()));
    }
}
