//! The scenario file: a RON document that is its own schema. Every struct
//! denies unknown fields, so a typo is an error with line and column, never
//! a silently ignored fault. Paths in a scenario are relative to its file.
//! Documented field by field in `docs/scenarios.md`.
//!
//! This file owns the schema: the types a scenario file deserializes into
//! (including the adversary's `AttackSpec`, which the runner, the attack
//! matrix and the audit all read) and small accessors on them. Reading,
//! validating and locating a field in the text is `validate`.

mod template;
mod validate;

pub use template::{EXTRA_FAMILIES, ExploreSpec, FAMILIES};
pub use validate::{files, locate};

use igor::node::defence::Defence;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The one name a node may not have: the trace writes the simulator's own
/// lines (actions, verify, the verdict) as host `sim` (`crate::trace::SIM`).
pub const RESERVED_NODE: &str = "sim";

/// Upper bound on simulated duration: keeps a typo (hours for seconds) from
/// turning a run into a day-long job.
pub const MAX_DURATION_S: u64 = 24 * 3600;
/// Upper bound on timeline length; scenarios are written (or minimized) by hand.
pub const MAX_TIMELINE_STEPS: usize = 10_000;
/// Upper bound on clock drift: 10% fast or slow is already far outside any
/// real oscillator; more is a typo.
pub const MAX_DRIFT_PPM: u64 = 100_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Root seed; `--seed` overrides it. Every RNG of the run derives from it.
    pub seed: u64,
    /// Simulated run length.
    pub duration_s: u64,
    /// Turmoil step: simulated time advanced per step (ms). Larger is faster.
    #[serde(default = "default_step_ms")]
    pub step_ms: u64,
    #[serde(default)]
    pub network: NetworkSpec,
    pub nodes: Vec<NodeSpec>,
    pub agents: Vec<AgentSpec>,
    #[serde(default)]
    pub timeline: Vec<Step>,
    pub expect: Expect,
    /// Adversary scenarios (A2–A4): the class, the defence under test and
    /// the verdict with it switched off (`igor-sim matrix`, `adversary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<AttackSpec>,
    /// Explore templates only: the families `igor-sim explore` draws and
    /// the pools it draws from (see [`ExploreSpec`]). Resolved
    /// scenarios drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<ExploreSpec>,
}

/// The agent key the simulator gives a self-certifying agent id
/// (`<label>.<tag>`, `igor::identity::tagged_agent_id`): derived from the
/// label alone, not from the run's seed, so a scenario can name the id and
/// it is the same under every seed. `None` for a legacy id: the node draws
/// a fresh key from its seeded entropy, as always. (A scenario naming a tag
/// that is not this key's is refused by `validate`, which names the id.)
pub fn agent_key(agent: &igor::units::AgentId) -> Option<igor::identity::Keypair> {
    igor::identity::agent_id_tag(agent)?;
    let label = igor::identity::agent_label(agent);
    Some(igor::identity::Keypair::from_seed(igor::env::derive_seed(0, &format!("sim-agent-key/{label}"))))
}

/// What an adversary scenario is about (the `attack` field of a scenario).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSpec {
    /// "A2" (Byzantine node), "A3" (economic griefer), "A4" (identity forger).
    pub class: String,
    /// The defence this scenario tests (a `Defences` field name, checked
    /// when the file is read); none when the protocol itself (not a
    /// switchable defence) beats the attack.
    #[serde(default)]
    pub defence: Option<Defence>,
    /// What must happen with that defence switched off on every node.
    #[serde(default)]
    pub off: Option<Expect>,
}

fn default_step_ms() -> u64 {
    10
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Message latency range (ms), drawn per message by turmoil.
    #[serde(default = "default_latency")]
    pub latency_ms: (u64, u64),
    /// Probability that a link fails (turmoil `fail_rate`): a failed link
    /// drops its in-flight messages until it is repaired.
    #[serde(default)]
    pub loss: f64,
}

fn default_latency() -> (u64, u64) {
    (1, 5)
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec { latency_ms: default_latency(), loss: 0.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// Price per second of execution, microcents.
    #[serde(default = "default_price")]
    pub price_microcents: i64,
    /// Lease duration (ms); renewal at half, `lease_grace_ms` of grace.
    #[serde(default)]
    pub lease_duration_ms: Option<u64>,
    #[serde(default)]
    pub lease_grace_ms: Option<u64>,
    /// Idle tick cadence (ms).
    #[serde(default)]
    pub tick_interval_ms: Option<u64>,
    /// Checkpoint cadence (ms).
    #[serde(default)]
    pub checkpoint_interval_ms: Option<u64>,
    /// DELIBERATELY UNSAFE: let this node take authority back by itself when
    /// its lease expires (the original's behaviour). For scenarios that show
    /// the checker catching a double ticker.
    #[serde(default)]
    pub unsafe_self_recover: bool,
    /// SCENARIOS ONLY: a named misbehaviour (A2–A4), see `crate::byzantine::Misbehaviour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversary: Option<crate::byzantine::Misbehaviour>,
    /// Defence switches (all on when absent), see `igor::node::Defences`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defences: Option<igor::node::Defences>,
}

fn default_price() -> i64 {
    1_000
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    /// `.wat` or `.wasm`, relative to the scenario file.
    pub wasm: String,
    /// Manifest JSON, relative to the scenario file; none = no capabilities.
    #[serde(default)]
    pub manifest: Option<String>,
    pub budget_microcents: i64,
    /// The node the agent is deployed on at t = 0.
    pub node: String,
}

/// One timeline entry: an action at a simulated time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Action {
    /// Operator asks `from` to hand `agent` to `to`.
    Migrate {
        agent: String,
        from: String,
        to: String,
    },
    /// The node's process dies; unsynced writes are lost.
    Crash {
        node: String,
    },
    /// Start a crashed node again, after applying `storage` damage.
    Restart {
        node: String,
        #[serde(default)]
        storage: Storage,
    },
    /// Cut both directions between two nodes.
    Partition {
        a: String,
        b: String,
    },
    /// Cut only `from` → `to`.
    PartitionOneway {
        from: String,
        to: String,
    },
    Heal {
        a: String,
        b: String,
    },
    HealOneway {
        from: String,
        to: String,
    },
    /// Set the latency of the link between two nodes (ms).
    Latency {
        a: String,
        b: String,
        ms: u64,
    },
    /// Requests sent by `node` are duplicated with this probability.
    Duplicate {
        node: String,
        probability: f64,
    },
    /// Requests sent by `node` wait an extra uniform 0..=max_delay_ms first,
    /// which reorders concurrent messages.
    Reorder {
        node: String,
        max_delay_ms: u64,
    },
    /// Remove message faults (duplication, reordering, corruption) from `node`.
    ClearFaults {
        node: String,
    },
    /// Shift `node`'s wall clock by `ms` (may be negative).
    Skew {
        node: String,
        ms: i64,
    },
    /// From now on `node`'s wall clock runs fast (positive) or slow
    /// (negative) by `ppm` parts per million; 0 stops the drift (the offset
    /// gathered so far stays, like a skew).
    Drift {
        node: String,
        ppm: i64,
    },
    /// Frames sent by `node` (requests and replies) get one bit flipped in
    /// transit with this probability. The network twin's frame checksum
    /// (the model of the transport's AEAD tag) must reject every one: the
    /// receiver drops it and the sender sees a lost message.
    Corrupt {
        node: String,
        probability: f64,
    },
    /// Freeze `node` for `ms`: every link to and from it is held (messages
    /// wait, none are lost), then released. Its clock and timers go on.
    Pause {
        node: String,
        ms: u64,
    },
    /// Swizzle-clogging (FoundationDB): hold the links of `nodes` one by one,
    /// `step_ms` apart, then release them in a random order (drawn from the
    /// run's seed), `step_ms` apart.
    Swizzle {
        nodes: Vec<String>,
        step_ms: u64,
    },
    /// BUGGIFY at a protocol boundary: from `at_ms` on, the first time
    /// `node` reports `on`, the `fault` hits it at once and lasts `for_ms`.
    Buggify {
        node: String,
        on: Boundary,
        fault: BuggifyFault,
        #[serde(default = "default_buggify_ms")]
        for_ms: u64,
    },
    /// Operator recovery of `agent` on `node` from its newest checkpoint
    /// there (or the one at `anchor_tick`).
    Recover {
        agent: String,
        node: String,
        #[serde(default)]
        anchor_tick: Option<u64>,
        /// Recover even though a peer proved it owns the agent (the
        /// liveness phase uses it: the simulator has checked that no live
        /// node holds the agent).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Operator retires `agent` on `node` (ACTIVE_OWNER -> RETIRED after a
    /// final checkpoint): the agent stops for good, so liveness no longer
    /// asks it to tick. A node that does not own it refuses.
    Retire {
        agent: String,
        node: String,
    },
    /// `node`'s disk refuses writes for `for_ms`: every write, sync and
    /// directory creation fails with the `kind`'s I/O error (as `FsDisk`
    /// reports ENOSPC or EIO), reads keep working. Survives a restart.
    DiskFault {
        node: String,
        kind: crate::disk::DiskFaultKind,
        for_ms: u64,
        /// Only paths under this prefix fail (e.g. `"history/"`: checkpoint
        /// archive writes fail while the kv and record writes succeed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        under: Option<String>,
    },
}

fn default_buggify_ms() -> u64 {
    1_000
}

/// What a [`Action::Buggify`] does to its node when the boundary is hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuggifyFault {
    /// Crash now; restart with the disk intact `for_ms` later.
    Crash,
    /// Cut every link to and from the node (messages in flight are lost)
    /// and repair them `for_ms` later: the classic ambiguous transfer.
    Isolate,
    /// The node's disk is full for `for_ms` (see [`Action::DiskFault`]).
    DiskFull,
    /// The node's disk fails writes with EIO for `for_ms`.
    DiskIo,
}

/// Protocol boundaries a [`Action::CrashOn`] can be armed at, by the node
/// event that marks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Boundary {
    /// The source sent the agent package (`package_sent`).
    PackageSent,
    /// The source made its handoff checkpoint durable
    /// (`checkpoint_committed handoff=true`).
    HandoffCheckpoint,
    /// Any checkpoint became durable (`checkpoint_committed`).
    CheckpointCommitted,
    /// The target stored a received checkpoint (`checkpoint_adopted`).
    PackageAdopted,
    /// Either side finished a handoff (`migration_finished`).
    MigrationFinished,
}

/// Damage applied to a node's disk before it restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Storage {
    #[default]
    Intact,
    /// Delete the newest `count` history checkpoints of `agent` (a stale
    /// checkpoint: the node restarts behind where it was). Stops short of
    /// the oldest checkpoint a recovery could resume from (its kv snapshot
    /// is on disk): losing every usable copy is `Wipe`.
    RemoveNewest { agent: String, count: usize },
    /// Flip a bit in the newest history checkpoint of `agent`, unless no
    /// older checkpoint could be recovered from.
    CorruptNewest { agent: String },
    /// Lose the whole data directory.
    Wipe,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub verdict: Verdict,
    /// Final authority state per node per agent, e.g.
    /// `{"a": {"counter": "RETIRED"}}`. Unlisted pairs are not checked.
    #[serde(default)]
    pub authority: BTreeMap<String, BTreeMap<String, String>>,
    /// Inclusive range of the agent's highest committed tick at the end.
    #[serde(default)]
    pub ticks: BTreeMap<String, (u64, u64)>,
    /// Safety, then liveness (STYLE 14b). The timeline is the fault window;
    /// at its end (`duration_s`) the runner heals everything (links,
    /// message faults, holds, crashed nodes) and then, within `within_ms`,
    /// every agent must tick again, using at most one operator recovery for
    /// an agent that only RECOVERY_REQUIRED copies hold. `None` switches the
    /// check off. `authority` and `ticks` above are checked at the heal.
    #[serde(default = "default_liveness")]
    pub liveness: Option<Liveness>,
}

/// The liveness bound after the heal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Liveness {
    pub within_ms: u64,
    /// Whether the liveness phase may use its one operator recovery. `false`
    /// asks for more: the system stays live by itself, no operator (e.g. a
    /// refused forgery must leave the agent running on its source).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub recovery: bool,
}

/// Serde default `true` (also for [`ExploreSpec`]).
pub(crate) fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Default heal window: long enough for a lease to run out and a handoff's
/// retries to finish at the default settings.
pub const DEFAULT_LIVENESS_MS: u64 = 30_000;
/// Upper bound on the heal window (same reason as [`MAX_DURATION_S`]).
pub const MAX_LIVENESS_MS: u64 = 3_600_000;

fn default_liveness() -> Option<Liveness> {
    Some(Liveness { within_ms: DEFAULT_LIVENESS_MS, recovery: true })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// No invariant is violated.
    Pass,
    /// The named invariant (e.g. "EI-1") must be violated and caught.
    Violation(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    // `err` is not a `#[source]`: it is already in the message, once.
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path}:{line}:{col}: {message}")]
    Parse { path: String, line: usize, col: usize, message: String },
    /// A value that parsed but makes no sense; `line:col` point at it.
    #[error("{path}:{line}:{col}: {message}")]
    Invalid { path: String, line: usize, col: usize, message: String },
}

/// A validation failure: the offending field's path (`timeline[3].at_ms`,
/// `agents[0].node`, `expect.authority.a.counter`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl Action {
    /// Node names this action refers to.
    pub fn nodes(&self) -> Vec<&str> {
        match self {
            Action::Migrate { from, to, .. } => vec![from, to],
            Action::Crash { node } | Action::Restart { node, .. } => vec![node],
            Action::Partition { a, b } | Action::Heal { a, b } | Action::Latency { a, b, .. } => vec![a, b],
            Action::PartitionOneway { from, to } | Action::HealOneway { from, to } => vec![from, to],
            Action::Swizzle { nodes, .. } => nodes.iter().map(String::as_str).collect(),
            Action::Duplicate { node, .. }
            | Action::Drift { node, .. }
            | Action::Corrupt { node, .. }
            | Action::Pause { node, .. }
            | Action::Buggify { node, .. }
            | Action::Reorder { node, .. }
            | Action::ClearFaults { node }
            | Action::Skew { node, .. }
            | Action::DiskFault { node, .. }
            | Action::Recover { node, .. }
            | Action::Retire { node, .. } => vec![node],
        }
    }

    /// Node names this action refers to, with the field that names each.
    pub fn node_fields(&self) -> Vec<(String, &str)> {
        match self {
            Action::Migrate { from, to, .. } => vec![("from".into(), from), ("to".into(), to)],
            Action::PartitionOneway { from, to } | Action::HealOneway { from, to } => {
                vec![("from".into(), from), ("to".into(), to)]
            }
            Action::Partition { a, b } | Action::Heal { a, b } | Action::Latency { a, b, .. } => {
                vec![("a".into(), a), ("b".into(), b)]
            }
            Action::Swizzle { nodes, .. } => {
                nodes.iter().enumerate().map(|(i, n)| (format!("nodes[{i}]"), n.as_str())).collect()
            }
            other => other.nodes().into_iter().map(|n| ("node".into(), n)).collect(),
        }
    }

    pub fn agent(&self) -> Option<&str> {
        match self {
            Action::Migrate { agent, .. } | Action::Recover { agent, .. } | Action::Retire { agent, .. } => Some(agent),
            Action::Restart {
                storage: Storage::RemoveNewest { agent, .. } | Storage::CorruptNewest { agent }, ..
            } => Some(agent),
            _ => None,
        }
    }
}
