//! The scenario file: a RON document that is its own schema. Every struct
//! denies unknown fields, so a typo is an error with line and column, never
//! a silently ignored fault. Paths in a scenario are relative to its file.
//! Documented field by field in `docs/scenarios.md`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub attack: Option<crate::adversary::AttackSpec>,
    /// Explore templates only: the families `igor-sim explore` draws and
    /// the pools it draws from (see `explore::ExploreSpec`). Resolved
    /// scenarios drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explore: Option<crate::explore::ExploreSpec>,
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

/// Serde default `true` (also for `explore::ExploreSpec`).
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

impl Scenario {
    /// Parse RON text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        // `implicit_some`: optional fields are written as plain values
        // (`lease_duration_ms: 8000`), not `Some(8000)`.
        let options = ron::Options::default().with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        let s: Scenario = options.from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_string(),
            line: e.span.start.line,
            col: e.span.start.col,
            message: e.code.to_string(),
        })?;
        s.check().map_err(|e| {
            let (line, col) = locate(text, &e.field);
            ScenarioError::Invalid { path: path.to_string(), line, col, message: e.to_string() }
        })?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|err| ScenarioError::Io { path: path.display().to_string(), err })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Canonical RON text of this scenario (for resolved scenarios).
    pub fn to_ron(&self) -> String {
        // Depth 2: one line per node, agent and timeline step.
        let cfg = ron::ser::PrettyConfig::new()
            .struct_names(true)
            .depth_limit(2)
            .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
        // Serializing plain data with string keys cannot fail.
        ron::ser::to_string_pretty(self, cfg).expect("scenario serializes")
    }

    /// Cross-field checks: names resolve, ranges make sense. The message
    /// starts with the offending field's path (`timeline[3].at_ms: ...`).
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }

    /// [`Scenario::validate`] with the field path kept apart, so that
    /// [`Scenario::parse`] can point at the value in the file.
    pub fn check(&self) -> Result<(), FieldError> {
        let err = |field: String, message: String| Err(FieldError { field, message });
        if self.duration_s == 0 || self.duration_s > MAX_DURATION_S {
            return err("duration_s".into(), format!("{} is outside 1..={MAX_DURATION_S}", self.duration_s));
        }
        if self.step_ms == 0 || self.step_ms > 1000 {
            return err("step_ms".into(), format!("{} is outside 1..=1000", self.step_ms));
        }
        if self.timeline.len() > MAX_TIMELINE_STEPS {
            return err("timeline".into(), format!("{} steps (limit {MAX_TIMELINE_STEPS})", self.timeline.len()));
        }
        let (lo, hi) = self.network.latency_ms;
        if lo > hi {
            return err("network.latency_ms".into(), format!("({lo}, {hi}) is not a range"));
        }
        if !(0.0..=1.0).contains(&self.network.loss) {
            return err("network.loss".into(), format!("{} is not a probability", self.network.loss));
        }
        let mut nodes = std::collections::BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Err(e) = igor::units::NodeId::new(n.name.clone()) {
                return err(format!("nodes[{i}].name"), e.to_string());
            }
            if !nodes.insert(n.name.as_str()) {
                return err(format!("nodes[{i}].name"), format!("duplicate node {:?}", n.name));
            }
            if n.price_microcents < 0 {
                return err(format!("nodes[{i}].price_microcents"), format!("{} is negative", n.price_microcents));
            }
            // Zero would make the node due again at the same instant
            // forever (a livelock outside testing found with a zero lease).
            for (field, v) in [
                ("lease_duration_ms", n.lease_duration_ms),
                ("tick_interval_ms", n.tick_interval_ms),
                ("checkpoint_interval_ms", n.checkpoint_interval_ms),
            ] {
                if v == Some(0) {
                    return err(format!("nodes[{i}].{field}"), "must be at least 1 ms".into());
                }
            }
            // Spec §5 clock bound: the lease grace must exceed S.
            let skew_ms = igor::migration::MigrationConfig::default().max_clock_skew_ns / 1_000_000;
            if let Some(g) = n.lease_grace_ms.filter(|g| *g <= skew_ms) {
                return err(
                    format!("nodes[{i}].lease_grace_ms"),
                    format!("{g} must exceed the clock bound S = {skew_ms} ms (spec §5: S < grace)"),
                );
            }
        }
        let node = |field: String, name: &str| {
            if nodes.contains(name) { Ok(()) } else { err(field, format!("unknown node {name:?}")) }
        };
        let mut agents = std::collections::BTreeSet::new();
        for (i, a) in self.agents.iter().enumerate() {
            let id = match igor::units::AgentId::new(a.name.clone()) {
                Ok(id) => id,
                Err(e) => return err(format!("agents[{i}].name"), e.to_string()),
            };
            if let Some(key) = agent_key(&id)
                && igor::identity::check_agent_key(&id, &key.public()).is_err()
            {
                let label = igor::identity::agent_label(&id);
                let right = igor::identity::tagged_agent_id(label, &key.public())
                    .map(|i| i.to_string())
                    .unwrap_or_else(|e| e.to_string());
                return err(
                    format!("agents[{i}].name"),
                    format!("the tag is not the simulator's key for label {label:?}: the id is {right:?}"),
                );
            }
            if !agents.insert(a.name.as_str()) {
                return err(format!("agents[{i}].name"), format!("duplicate agent {:?}", a.name));
            }
            node(format!("agents[{i}].node"), &a.node)?;
            if a.budget_microcents < 0 {
                return err(format!("agents[{i}].budget_microcents"), format!("{} is negative", a.budget_microcents));
            }
        }
        let agent = |field: String, name: &str| {
            if agents.contains(name) { Ok(()) } else { err(field, format!("unknown agent {name:?}")) }
        };
        for (i, step) in self.timeline.iter().enumerate() {
            let f = format!("timeline[{i}]");
            if step.at_ms > self.duration_s * 1000 {
                return err(format!("{f}.at_ms"), format!("{} is after the end of the run", step.at_ms));
            }
            for (field, n) in step.action.node_fields() {
                node(format!("{f}.action.{field}"), n)?;
            }
            if let Some(a) = step.action.agent() {
                let field = if matches!(step.action, Action::Restart { .. }) { "storage.agent" } else { "agent" };
                agent(format!("{f}.action.{field}"), a)?;
            }
            match &step.action {
                Action::Duplicate { probability, .. } | Action::Corrupt { probability, .. }
                    if !(0.0..=1.0).contains(probability) =>
                {
                    return err(format!("{f}.action.probability"), format!("{probability} is not a probability"));
                }
                Action::Drift { ppm, .. } if ppm.unsigned_abs() > MAX_DRIFT_PPM => {
                    return err(format!("{f}.action.ppm"), format!("{ppm} is outside ±{MAX_DRIFT_PPM}"));
                }
                Action::Swizzle { nodes, .. } if nodes.is_empty() => {
                    return err(format!("{f}.action.nodes"), "empty".into());
                }
                Action::DiskFault { for_ms: 0, .. } => {
                    return err(format!("{f}.action.for_ms"), "0 (a disk fault lasts at least 1 ms)".into());
                }
                _ => {}
            }
        }
        for (n, per_agent) in &self.expect.authority {
            node(format!("expect.authority.{n}"), n)?;
            for a in per_agent.keys() {
                agent(format!("expect.authority.{n}.{a}"), a)?;
            }
        }
        for a in self.expect.ticks.keys() {
            agent(format!("expect.ticks.{a}"), a)?;
        }
        if let Some(l) = &self.expect.liveness
            && (l.within_ms == 0 || l.within_ms > MAX_LIVENESS_MS)
        {
            return err(
                "expect.liveness.within_ms".into(),
                format!("{} is outside 1..={MAX_LIVENESS_MS}", l.within_ms),
            );
        }
        if let Some(e) = &self.explore {
            // explore's messages start with their field path.
            e.validate(&nodes, &agents).map_err(|m| match m.split_once(": ") {
                Some((field, message)) => FieldError { field: field.to_string(), message: message.to_string() },
                None => FieldError { field: "explore".into(), message: m },
            })?;
        }
        Ok(())
    }

    /// Directory that relative paths in this scenario are resolved against.
    pub fn base_dir(path: &Path) -> PathBuf {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Scenario files (`*.ron`) at `path`: the file itself, or every one under
/// the directory, recursively, sorted (the order every command reports in).
#[allow(clippy::disallowed_methods)] // the scenario tree is the simulator's input, read before any run
pub fn files(path: &Path) -> Result<Vec<PathBuf>, ScenarioError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let io = |dir: &Path, err| ScenarioError::Io { path: dir.display().to_string(), err };
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let p = entry.map_err(|e| io(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ron") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// 1-based (line, column) of the value of `field` (a path as
/// [`FieldError::field`] writes it) in RON `text`; the nearest enclosing
/// value that is written out when the field itself is not (a default), and
/// (1, 1) when nothing matches.
pub fn locate(text: &str, field: &str) -> (usize, usize) {
    let positions = value_positions(text);
    let mut path = field.to_string();
    loop {
        if let Some(p) = positions.get(&path) {
            return *p;
        }
        match path.rfind(['.', '[']) {
            Some(i) => path.truncate(i),
            None => return (1, 1),
        }
    }
}

/// Where each value starts in RON text, by field path: a small scanner
/// (strings, comments, nesting, `key:` and list positions), enough to point
/// a user at a value; the parser proper is `ron`.
fn value_positions(text: &str) -> BTreeMap<String, (usize, usize)> {
    struct Frame {
        path: String,
        index: usize,
        key: Option<String>,
    }
    let join = |f: &Frame| -> String {
        match &f.key {
            Some(k) if f.path.is_empty() => k.clone(),
            Some(k) => format!("{}.{k}", f.path),
            None => format!("{}[{}]", f.path, f.index),
        }
    };
    let mut out = BTreeMap::new();
    let mut stack = vec![Frame { path: String::new(), index: 0, key: None }];
    let mut expect_value = true;
    let mut word: Option<String> = None;
    let chars: Vec<char> = text.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, c: char| {
        *i += 1;
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, c);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while let Some(&c) = chars.get(i) {
                if c == '\n' {
                    break;
                }
                advance(&mut i, &mut line, &mut col, c);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            while let Some(&c) = chars.get(i) {
                let end = c == '*' && chars.get(i + 1) == Some(&'/');
                advance(&mut i, &mut line, &mut col, c);
                if end {
                    advance(&mut i, &mut line, &mut col, '/');
                    break;
                }
            }
            continue;
        }
        // A token starts here.
        let root = stack.len() == 1;
        let top = stack.last_mut().expect("the root frame is never popped");
        if expect_value && !matches!(c, ')' | ']' | '}' | ',' | ':') {
            let at = if root { String::new() } else { join(top) };
            out.entry(at).or_insert((line, col));
            expect_value = false;
        }
        let top = stack.last_mut().expect("the root frame is never popped");
        match c {
            ':' => {
                top.key = word.take();
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            ',' => {
                top.index += 1;
                top.key = None;
                word = None;
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            '(' | '[' | '{' => {
                let path = if root { String::new() } else { join(top) };
                stack.push(Frame { path, index: 0, key: None });
                word = None;
                expect_value = true;
                advance(&mut i, &mut line, &mut col, c);
            }
            ')' | ']' | '}' => {
                if stack.len() > 1 {
                    stack.pop();
                }
                word = None;
                expect_value = false;
                advance(&mut i, &mut line, &mut col, c);
            }
            '"' => {
                let mut s = String::new();
                advance(&mut i, &mut line, &mut col, c);
                while let Some(&c) = chars.get(i) {
                    advance(&mut i, &mut line, &mut col, c);
                    match c {
                        '\\' => {
                            if let Some(&n) = chars.get(i) {
                                s.push(n);
                                advance(&mut i, &mut line, &mut col, n);
                            }
                        }
                        '"' => break,
                        _ => s.push(c),
                    }
                }
                word = Some(s);
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.get(i) {
                    if c.is_whitespace() || "()[]{},:\"".contains(c) || (c == '/' && chars.get(i + 1) == Some(&'/')) {
                        break;
                    }
                    s.push(c);
                    advance(&mut i, &mut line, &mut col, c);
                }
                word = Some(s);
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"Scenario(
        name: "minimal",
        seed: 1,
        duration_s: 10,
        nodes: [(name: "a")],
        agents: [(name: "counter", wasm: "counter.wat", budget_microcents: 1000, node: "a")],
        timeline: [(at_ms: 100, action: Crash(node: "a"))],
        expect: (verdict: Pass),
    )"#;

    #[test]
    fn minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(MINIMAL, "m.ron").unwrap();
        assert_eq!(s.step_ms, 10);
        assert_eq!(s.network.latency_ms, (1, 5));
        assert_eq!(s.nodes[0].price_microcents, 1000);
        let again = Scenario::parse(&s.to_ron(), "again.ron").unwrap();
        assert_eq!(again, s, "to_ron round-trips");
    }

    #[test]
    fn typo_is_an_error_with_line_and_column() {
        let text = MINIMAL.replace("duration_s: 10", "duraton_s: 10");
        let err = Scenario::parse(&text, "typo.ron").unwrap_err().to_string();
        assert!(err.starts_with("typo.ron:4:"), "{err}");
        assert!(err.contains("duraton_s"), "{err}");
    }

    #[test]
    fn unknown_names_are_rejected_at_the_value() {
        let text = MINIMAL.replace("Crash(node: \"a\")", "Crash(node: \"zz\")");
        let err = Scenario::parse(&text, "x.ron").unwrap_err().to_string();
        // Line 7 of MINIMAL, column of the "zz" string.
        let col = text.lines().nth(6).unwrap().find("\"zz\"").unwrap() + 1;
        assert_eq!(err, format!("x.ron:7:{col}: timeline[0].action.node: unknown node \"zz\""));
    }

    /// Every validation error names its field and points at the value's
    /// line and column in the file (the value's first character).
    #[test]
    fn every_validation_error_points_at_its_value() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("duration_s: 10", "duration_s: 0", "duration_s", "0,"),
            ("seed: 1,", "seed: 1, step_ms: 0,", "step_ms", "0,"),
            ("seed: 1,", "seed: 1, network: (latency_ms: (9, 2)),", "network.latency_ms", "(9, 2)"),
            ("seed: 1,", "seed: 1, network: (loss: 1.5),", "network.loss", "1.5"),
            ("[(name: \"a\")]", "[(name: \"a\"), (name: \"a\")]", "nodes[1].name", "\"a\")]"),
            ("[(name: \"a\")]", "[(name: \"a\", price_microcents: -1)]", "nodes[0].price_microcents", "-1)"),
            ("[(name: \"a\")]", "[(name: \"a\", lease_duration_ms: 0)]", "nodes[0].lease_duration_ms", "0)"),
            ("[(name: \"a\")]", "[(name: \"a\", tick_interval_ms: 0)]", "nodes[0].tick_interval_ms", "0)"),
            ("[(name: \"a\")]", "[(name: \"a\", lease_grace_ms: 500)]", "nodes[0].lease_grace_ms", "500)"),
            ("node: \"a\")]", "node: \"q\")]", "agents[0].node", "\"q\")]"),
            ("budget_microcents: 1000", "budget_microcents: -5", "agents[0].budget_microcents", "-5,"),
            ("at_ms: 100", "at_ms: 99999999", "timeline[0].at_ms", "99999999"),
            (
                "Crash(node: \"a\")",
                "Migrate(agent: \"nope\", from: \"a\", to: \"a\")",
                "timeline[0].action.agent",
                "\"nope\"",
            ),
            (
                "Crash(node: \"a\")",
                "Migrate(agent: \"counter\", from: \"a\", to: \"b\")",
                "timeline[0].action.to",
                "\"b\")",
            ),
            ("Crash(node: \"a\")", "Corrupt(node: \"a\", probability: 2.0)", "timeline[0].action.probability", "2.0)"),
            ("Crash(node: \"a\")", "Drift(node: \"a\", ppm: 900000)", "timeline[0].action.ppm", "900000)"),
            ("Crash(node: \"a\")", "Swizzle(nodes: [], step_ms: 5)", "timeline[0].action.nodes", "[],"),
            (
                "Crash(node: \"a\")",
                "Restart(node: \"a\", storage: CorruptNewest(agent: \"x\"))",
                "timeline[0].action.storage.agent",
                "\"x\")",
            ),
            ("(verdict: Pass)", "(verdict: Pass, authority: {\"zz\": {}})", "expect.authority.zz", "{}}"),
            (
                "(verdict: Pass)",
                "(verdict: Pass, authority: {\"a\": {\"ghost\": \"RETIRED\"}})",
                "expect.authority.a.ghost",
                "\"RETIRED\"",
            ),
            ("(verdict: Pass)", "(verdict: Pass, ticks: {\"ghost\": (1, 2)})", "expect.ticks.ghost", "(1, 2)"),
            ("(verdict: Pass)", "(verdict: Pass, liveness: (within_ms: 0))", "expect.liveness.within_ms", "0))"),
        ];
        for (from, to, field, value) in cases {
            assert!(MINIMAL.contains(from), "{from}");
            let text = MINIMAL.replacen(from, to, 1);
            let err = Scenario::parse(&text, "v.ron").unwrap_err();
            let ScenarioError::Invalid { line, col, message, .. } = &err else { panic!("{field}: {err}") };
            assert!(message.starts_with(&format!("{field}: ")), "{field}: {message}");
            let at = &text.lines().nth(line - 1).unwrap()[col - 1..];
            assert!(at.starts_with(value), "{field}: {err} points at {at:?}, not {value:?}");
        }
    }

    #[test]
    fn the_locator_skips_comments_and_strings_and_falls_back_to_the_parent() {
        let text = "// a: (\n(name: \"x: [\", /* b: 1 */ seed: 7, nodes: [(name: \"a\"), (name: \"b\")])";
        assert_eq!(locate(text, "seed"), (2, 33));
        assert_eq!(locate(text, "nodes[1].name"), (2, 64));
        // A field left at its default is not written: its parent is.
        assert_eq!(locate(text, "nodes[1].price_microcents"), (2, 57));
        assert_eq!(locate(text, "expect.liveness.within_ms"), (1, 1));
    }
}
