//! The checker's vocabulary: the invariant names beyond the spec's, the
//! authority [`State`]s, the observations ([`Obs`]) the runner feeds in,
//! the [`Violation`] it reports, and its own copy of the spec §5 transition
//! table ([`transition_allowed`]). No state: the machine is the parent.

use igor::authority::Reason;
use igor::checkpoint::Hash32;
use igor::units::{AgentId, Epoch, NodeId};
use std::fmt;

/// A forbidden authority transition (spec §5 table, [`transition_allowed`]).
pub const AUTH_TRANSITION: &str = "AUTH-TRANSITION";
/// A restarted node loaded a record that does not match what it last
/// reported, or any record from a disk the simulator wiped.
pub const AUTH_RELOAD: &str = "AUTH-RELOAD";
/// Spec §3: a tick cut for budget bills exactly the remainder; no tick
/// bills more than the budget it started with.
pub const BUDGET_CUT: &str = "BUDGET-CUT";
/// Spec §3: an agent halted for budget leaves a final checkpoint, budget 0,
/// at its last tick (nothing stranded).
pub const BUDGET_FINAL: &str = "BUDGET-FINAL";
/// Spec §6: the source seals its last finished tick, the target adopts
/// exactly the sealed tick: no finished tick is lost across a handoff.
pub const HANDOFF_LOST_TICKS: &str = "HANDOFF-LOST-TICKS";
/// EI-3 at rest: a node's history on disk fails `verify` at the end of a run.
pub const CHAIN: &str = "CHAIN";

/// Authority state as the checker models it (spec §5 names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    ActiveOwner,
    HandoffInitiated,
    HandoffPending,
    Retired,
    RecoveryRequired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::ActiveOwner => "ACTIVE_OWNER",
            State::HandoffInitiated => "HANDOFF_INITIATED",
            State::HandoffPending => "HANDOFF_PENDING",
            State::Retired => "RETIRED",
            State::RecoveryRequired => "RECOVERY_REQUIRED",
        }
    }
}

/// What the checker needs to know about one node event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Obs {
    /// An agent was deployed with its initial budget (genesis).
    Deployed { agent: AgentId, budget: i64 },
    /// The node (re)started: it runs again and reloads its agents.
    Booted,
    /// A restarted node restored `agent` from its disk (`agent_loaded`).
    Loaded { agent: AgentId, state: State, epoch: Epoch, head_tick: u64, head: Hash32 },
    /// A tick is about to run under `epoch` with `budget` left, descending
    /// from the committed checkpoint `base`.
    TickStarted { agent: AgentId, tick: u64, epoch: Epoch, budget: i64, base: Hash32 },
    /// A tick ran to `tick` (ticks completed) and charged `cost` + `paid`.
    /// `exhausted`: its outcome was `BudgetExhausted` (the tick was cut).
    Ticked { agent: AgentId, tick: u64, epoch: Epoch, cost: i64, paid: i64, side_effects: u32, exhausted: bool },
    /// A checkpoint became durable (or was adopted from a transfer).
    /// `charged`: what the node says the ticks since `prev` cost (with
    /// payments); `None` for an adopted checkpoint (no new link), then
    /// `source` is the node the package came from. `handoff`: the source's
    /// sealed handoff checkpoint.
    Committed {
        agent: AgentId,
        tick: u64,
        hash: Hash32,
        prev: Hash32,
        budget: i64,
        charged: Option<i64>,
        handoff: bool,
        source: Option<NodeId>,
    },
    /// Authority moved `from` → `to` (`from` = None for a new record), now
    /// at `epoch`, for `reason`.
    Authority { agent: AgentId, from: Option<State>, to: State, epoch: Epoch, reason: Reason },
    /// The node detected divergent heads for one epoch (EI-11).
    Divergence { agent: AgentId },
    /// The agent stopped for good on this node; `budget`: for budget exhaustion.
    Halted { agent: AgentId, budget: bool },
    /// The node reported a local fault about `agent` (a write may have failed).
    Fault { agent: AgentId },
    /// An operator recovery on this node re-anchored the lineage at
    /// `anchor` under `epoch` (`recovered`): its next commit may be a second
    /// child of the anchor; the branch it replaces is abandoned.
    Recovered { agent: AgentId, anchor: Hash32, epoch: Epoch },
    /// The node's process died (injected by the simulator).
    Crashed,
    /// The node misbehaved (A2–A4): the adversary filter keeps its later
    /// authority changes out, so its last record here is stale. It no
    /// longer counts as a second holder or ticker (EI-5, EI-1) beside an
    /// honest node; ticks it ran, released when an honest node adopts
    /// them, are still judged against that record.
    Distrusted,
    /// The node's records of `agent` were lost with its disk (`Wipe`).
    Forgot { agent: AgentId },
    /// The node deleted its copy of the agent (checkpoints, key) after a
    /// confirmed handoff; a record that failed to persist may still reload.
    CopyDeleted { agent: AgentId },
}

/// A detected violation: which invariant, when, where, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at_ns: u64,
    pub nodes: Vec<NodeId>,
    pub agent: AgentId,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.as_str()).collect();
        write!(
            f,
            "{} violated at t={} on [{}] for agent {}: {}",
            self.invariant,
            crate::trace::fmt_time(self.at_ns),
            nodes.join(", "),
            self.agent,
            self.message
        )
    }
}

/// The spec §5 transition table, written from the spec (with its binding
/// clarifications), not from the code. `from` is the record the checker
/// last saw on that node (`None`: no record), `target`: that record was
/// created by an incoming package. Besides the spec's arrows it allows the
/// abort arrows a handoff needs so that "a failed or refused transfer
/// leaves the agent on the source" (§6): HANDOFF_INITIATED → ACTIVE_OWNER
/// and, for the source, HANDOFF_PENDING → ACTIVE_OWNER, both only with
/// reason `handoff_aborted`. A new record at HANDOFF_PENDING replaces a
/// RETIRED one only at a higher epoch major (returning agent: "the old
/// record is archived, not transitioned"); RECOVERY_REQUIRED never accepts
/// a handoff.
pub fn transition_allowed(
    from: Option<(State, Epoch)>,
    target: bool,
    to: State,
    epoch: Epoch,
    reason: &Reason,
) -> bool {
    use State::*;
    match (from, to) {
        // any → RECOVERY_REQUIRED (also a node that never had a record).
        (_, RecoveryRequired) => true,
        (None, ActiveOwner) => *reason == Reason::Deployed,
        (None, HandoffPending) => *reason == Reason::PackageReceived,
        (Some((Retired, old)), HandoffPending) => *reason == Reason::PackageReceived && epoch.major > old.major,
        (None, _) => false,
        (Some((from, _)), to) => match (from, to) {
            (ActiveOwner, HandoffInitiated) => *reason == Reason::HandoffStarted,
            (HandoffInitiated, HandoffPending) => *reason == Reason::Relinquished,
            (HandoffInitiated, ActiveOwner) => *reason == Reason::HandoffAborted,
            (HandoffPending, ActiveOwner) if target => *reason == Reason::Assumed,
            (HandoffPending, ActiveOwner) => *reason == Reason::HandoffAborted,
            (HandoffPending, Retired) => !target && *reason == Reason::Confirmed,
            (ActiveOwner, Retired) => *reason == Reason::Shutdown,
            // Only explicit recovery (or the deliberately unsafe mode that
            // scenario unsafe-self-recover shows failing EI-5).
            (RecoveryRequired, ActiveOwner) => matches!(reason, Reason::Recovery | Reason::UnsafeSelfRecovery),
            _ => false,
        },
    }
}
