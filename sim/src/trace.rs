//! The canonical trace: one line per event, simulated time only (no wall
//! clock, no ports, no addresses), so the same seed gives the same bytes on
//! every machine. Its SHA-256 is the run's fingerprint for determinism
//! checks.
//!
//! This file is the ONE place that formats trace lines (dialect v3,
//! `docs/trace-format.md`): every line is `<time> <host> <kind> key=value
//! ...` with keys sorted, and every value is written by one function per
//! value type below ([`int`], [`flag`], [`word`], [`text`], [`hash`],
//! [`epoch`], [`list`], [`opt`], ...). Node events ([`event`]), simulator
//! actions ([`action`]) and the simulator's own lines ([`Line`]) all go
//! through them, and [`parse`] reads a line back for every tool that reads
//! traces (the adversary audit, coverage, the HTML timeline).

use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Boundary, BuggifyFault, Storage};
use igor::authority::Role;
use igor::checkpoint::Hash32;
use igor::migration::Outcome;
use igor::node::Event;
use igor::units::Epoch;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Version of the trace format; bump when the header or line shape changes.
pub const TRACE_FORMAT: u32 = 3;

/// Git revision of the simulator build: `IGOR_GIT_REV` at build time, else
/// `git rev-parse` in the source tree at run time, else "unknown". Only the
/// `# build` header line carries it, so snapshots can mask that one line.
pub fn git_revision() -> &'static str {
    static REV: OnceLock<String> = OnceLock::new();
    REV.get_or_init(|| {
        if let Some(rev) = option_env!("IGOR_GIT_REV") {
            return rev.to_string();
        }
        #[allow(clippy::disallowed_methods)] // build metadata for the header, never part of a decision
        let out = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short=12", "HEAD"])
            .stderr(std::process::Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => "unknown".to_string(),
        }
    })
}

/// The `# build` header line: crate version, git revision, wasmtime version.
pub fn build_line() -> String {
    format!(
        "# build igor-sim {} git {} wasmtime {}",
        env!("CARGO_PKG_VERSION"),
        git_revision(),
        igor::meter::WASMTIME_VERSION
    )
}

/// `SSSSSS.mmm` seconds of simulated time, fixed width so traces align.
pub fn fmt_time(ns: u64) -> String {
    format!("{:06}.{:03}", ns / 1_000_000_000, (ns / 1_000_000) % 1000)
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    lines: Vec<String>,
}

impl Trace {
    pub fn new() -> Self {
        Self::default()
    }

    /// A line without a node (header, simulator actions, verdict).
    pub fn note(&mut self, text: impl Into<String>) {
        self.lines.push(text.into());
    }

    /// A line of host `host` (a node's name, or [`SIM`]): `text` is the
    /// `<kind> key=value ...` part, from [`event`], [`action`] or [`Line`].
    pub fn event(&mut self, at_ns: u64, host: &str, text: &str) {
        self.lines.push(format!("{} {host} {text}", fmt_time(at_ns)));
    }

    /// A line of the simulator itself (host [`SIM`]).
    pub fn sim(&mut self, at_ns: u64, line: Line) {
        self.event(at_ns, SIM, &line.to_string());
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The last `n` lines (context for a violation report).
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }

    /// First line where two traces differ: (1-based line, left, right).
    pub fn first_difference(&self, other: &Trace) -> Option<(usize, String, String)> {
        let n = self.lines.len().max(other.lines.len());
        (0..n).find_map(|i| {
            let (a, b) = (self.lines.get(i), other.lines.get(i));
            (a != b).then(|| (i + 1, a.cloned().unwrap_or_default(), b.cloned().unwrap_or_default()))
        })
    }
}

/// The host name of the simulator's own lines (actions, verify, verdict).
/// Scenario validation keeps nodes from being called this.
pub const SIM: &str = crate::scenario::RESERVED_NODE;

/// The value written for "none" (an absent option, an empty list).
pub const NONE: &str = "-";

/// Hex digits a hash keeps in a trace: 48 bits, enough to tell apart every
/// checkpoint of a run (a collision among a few thousand needs ~2^24), and
/// short enough that a hash change does not rewrap every line.
pub const HASH_HEX: usize = 12;

// ---- values: one function per value type ----

/// An integer (ticks, budgets, counts, nanoseconds).
pub fn int(v: impl Into<i128>) -> String {
    v.into().to_string()
}

/// A decimal (probabilities), Rust's shortest round-trip form (`0.5`, `1`).
pub fn float(v: f64) -> String {
    v.to_string()
}

/// `true` or `false`.
pub fn flag(v: bool) -> String {
    v.to_string()
}

/// Whether `s` can be written without quotes: non-empty, only
/// `[A-Za-z0-9_.:/-]`, and not the none marker `-` itself.
fn is_bare(s: &str) -> bool {
    !s.is_empty() && s != NONE && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.:/-".contains(c))
}

/// A name from a closed set or an id (node, agent, state, reason, kind).
/// Written like [`text`]: an id that is not a bare word gets quotes.
pub fn word(s: &str) -> String {
    text(s)
}

/// Free text: bare if it is a bare word, else in double quotes with `"`,
/// `\` and control characters escaped as in JSON (`\"`, `\\`, `\n`,
/// `\u001b`). The one quoting rule of the trace.
pub fn text(s: &str) -> String {
    if is_bare(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A checkpoint or content hash: its first [`HASH_HEX`] hex digits.
pub fn hash(h: &Hash32) -> String {
    hex_digest(&h.to_hex())
}

/// A hex digest given as text (a SHA-256 fingerprint): its first
/// [`HASH_HEX`] digits.
pub fn hex_digest(hex: &str) -> String {
    hex.chars().take(HASH_HEX).collect()
}

/// An epoch, `major.generation`.
pub fn epoch(e: Epoch) -> String {
    e.to_string()
}

/// A list: items joined by `,` (items are bare words), [`NONE`] if empty.
pub fn list(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    if items.is_empty() { NONE.to_string() } else { items.join(",") }
}

/// An option: the value, or [`NONE`].
pub fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| NONE.to_string(), f)
}

/// A name in PascalCase (a Rust variant name) as a snake_case word.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

// ---- lines ----

/// One line's `<kind> key=value ...` part. Keys are kept sorted (a map),
/// so the order never depends on the emitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    kind: String,
    fields: BTreeMap<&'static str, String>,
}

impl Line {
    pub fn new(kind: &str) -> Self {
        Line { kind: kind.to_string(), fields: BTreeMap::new() }
    }

    /// Add `key=value`; `value` comes from one of the value functions.
    pub fn with(mut self, key: &'static str, value: String) -> Self {
        let before = self.fields.insert(key, value);
        debug_assert!(before.is_none(), "key {key} written twice on a {} line", self.kind);
        self
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kind)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

/// One trace line read back: time (ns, ms precision), host, kind, and the
/// fields with quoted values unquoted (`None`: the value was [`NONE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub at_ns: u64,
    pub host: String,
    pub kind: String,
    pub fields: BTreeMap<String, Option<String>>,
}

impl Parsed {
    /// The value of `key`, if present and not [`NONE`].
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key)?.as_deref()
    }

    /// The value of `key` as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key)?.parse().ok()
    }
}

/// Read a trace line (`None` for header lines and anything else that is
/// not `<time> <host> <kind> ...`). A quoted value is unescaped; a bare `-`
/// is `None` (a quoted `"-"` is the text `-`).
pub fn parse(line: &str) -> Option<Parsed> {
    let (t, rest) = line.split_once(' ')?;
    let (s, ms) = t.split_once('.')?;
    let at_ns = s.parse::<u64>().ok()?.checked_mul(1_000_000_000)?.checked_add(ms.parse::<u64>().ok()? * 1_000_000)?;
    let (host, rest) = rest.split_once(' ')?;
    let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, after) = unquote(quoted)?;
            (Some(v), after)
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let v = &after[..end];
            ((v != NONE).then(|| v.to_string()), &after[end..])
        };
        fields.insert(key.to_string(), value);
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    Some(Parsed { at_ns, host: host.to_string(), kind: kind.to_string(), fields })
}

/// The inverse of [`text`]'s escaping: `s` starts after the opening quote;
/// returns the value and what follows the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

// ---- node events ----

fn role(r: Role) -> String {
    match r {
        Role::Source => "source",
        Role::Target => "target",
    }
    .to_string()
}

/// A migration outcome flattened: the variant under `outcome`, its text
/// under `detail` ([`NONE`] for `completed`).
fn migration_outcome(line: Line, o: &Outcome) -> Line {
    let (kind, detail) = match o {
        Outcome::Completed => ("completed", None),
        Outcome::Refused(d) => ("refused", Some(d)),
        Outcome::FailedBeforeSend(d) => ("failed_before_send", Some(d)),
        Outcome::Aborted(d) => ("aborted", Some(d)),
        Outcome::Ambiguous(d) => ("ambiguous", Some(d)),
    };
    line.with("outcome", word(kind)).with("detail", opt(detail, |d| text(d)))
}

/// A tick outcome flattened: the node reports the executor's outcome as
/// its Rust `Debug` text (`Completed { more_work: false }`, `Trapped {
/// message: "..." }`); the trace writes the variant as a snake_case word
/// under `outcome` and its field under `more_work` / `detail` ([`NONE`]
/// when the variant has none). Text this does not recognise is kept,
/// quoted, under `outcome` (a library change to a structured outcome
/// would remove this translation).
fn tick_outcome(line: Line, debug: &str) -> Line {
    let (outcome, more_work, detail) = if let Some(rest) = debug.strip_prefix("Completed { more_work: ") {
        match rest.strip_suffix(" }") {
            Some(b @ ("true" | "false")) => (word("completed"), b.to_string(), NONE.to_string()),
            _ => (text(debug), NONE.to_string(), NONE.to_string()),
        }
    } else if let Some(msg) = debug.strip_prefix("Trapped { message: \"").and_then(|m| m.strip_suffix("\" }")) {
        (word("trapped"), NONE.to_string(), text(&unescape_debug(msg)))
    } else if !debug.is_empty() && debug.chars().all(|c| c.is_ascii_alphanumeric()) {
        (word(&snake(debug)), NONE.to_string(), NONE.to_string())
    } else {
        (text(debug), NONE.to_string(), NONE.to_string())
    };
    line.with("outcome", outcome).with("more_work", more_work).with("detail", detail)
}

/// Undo Rust's `Debug` escaping of a string (`\"`, `\\`, `\n`, `\u{..}`).
fn unescape_debug(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let code: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                if let Some(c) = u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// A node event as `<kind> key=value ...`: the kind and keys are the
/// node's own (its serde names, as `igor::node::Event`'s `Display` has
/// them), the values in this file's dialect. Every field is named, so a
/// field added to an event fails to compile here until it has a form.
pub fn event(e: &Event) -> String {
    let ag = |a: &igor::units::AgentId| word(a.as_str());
    let node = |n: &igor::units::NodeId| word(n.as_str());
    let line = match e {
        Event::NodeStarted { restarted, agents } => {
            Line::new("node_started").with("agents", int(*agents)).with("restarted", flag(*restarted))
        }
        Event::AgentDeployed { agent, wasm_hash, budget } => Line::new("agent_deployed")
            .with("agent", ag(agent))
            .with("budget", int(budget.0))
            .with("wasm_hash", hash(wasm_hash)),
        Event::AgentLoaded { agent, state, epoch: ep, head_tick, head_hash, budget } => Line::new("agent_loaded")
            .with("agent", ag(agent))
            .with("budget", int(budget.0))
            .with("epoch", epoch(*ep))
            .with("head_hash", hash(head_hash))
            .with("head_tick", int(head_tick.0))
            .with("state", word(&state.to_string())),
        Event::TickStarted { agent, tick, epoch: ep, budget, base } => Line::new("tick_started")
            .with("agent", ag(agent))
            .with("base", hash(base))
            .with("budget", int(budget.0))
            .with("epoch", epoch(*ep))
            .with("tick", int(tick.0)),
        Event::TickFinished {
            agent,
            tick,
            epoch: ep,
            cost,
            paid,
            budget,
            outcome,
            side_effects,
            side_effects_allowed,
        } => tick_outcome(
            Line::new("tick_finished")
                .with("agent", ag(agent))
                .with("budget", int(budget.0))
                .with("cost", int(cost.0))
                .with("epoch", epoch(*ep))
                .with("paid", int(paid.0))
                .with("side_effects", int(*side_effects))
                .with("side_effects_allowed", flag(*side_effects_allowed))
                .with("tick", int(tick.0)),
            outcome,
        ),
        Event::CheckpointCommitted {
            agent,
            tick,
            epoch: ep,
            hash: h,
            prev_hash,
            budget,
            charged,
            paid,
            lease_expiry_ns,
            handoff,
        } => Line::new("checkpoint_committed")
            .with("agent", ag(agent))
            .with("budget", int(budget.0))
            .with("charged", int(charged.0))
            .with("epoch", epoch(*ep))
            .with("handoff", flag(*handoff))
            .with("hash", hash(h))
            .with("lease_expiry_ns", int(*lease_expiry_ns))
            .with("paid", int(paid.0))
            .with("prev_hash", hash(prev_hash))
            .with("tick", int(tick.0)),
        Event::CheckpointAdopted { agent, from, tick, epoch: ep, hash: h, prev_hash, budget } => {
            Line::new("checkpoint_adopted")
                .with("agent", ag(agent))
                .with("budget", int(budget.0))
                .with("epoch", epoch(*ep))
                .with("from", node(from))
                .with("hash", hash(h))
                .with("prev_hash", hash(prev_hash))
                .with("tick", int(tick.0))
        }
        Event::AuthorityChanged { agent, from, to, epoch: ep, reason } => Line::new("authority_changed")
            .with("agent", ag(agent))
            .with("epoch", epoch(*ep))
            .with("from", opt(from.as_ref(), |s| word(&s.to_string())))
            .with("reason", word(&reason.to_string()))
            .with("to", word(&to.to_string())),
        Event::LeaseRenewed { agent, epoch: ep, expiry_ns } => Line::new("lease_renewed")
            .with("agent", ag(agent))
            .with("epoch", epoch(*ep))
            .with("expiry_ns", int(*expiry_ns)),
        Event::MessageSent { kind, peer, agent, epoch: ep, head_tick, head_hash, request } => Line::new("message_sent")
            .with("agent", ag(agent))
            .with("epoch", epoch(*ep))
            .with("head_hash", hash(head_hash))
            .with("head_tick", int(head_tick.0))
            .with("kind", word(&kind.to_string()))
            .with("peer", node(peer))
            .with("request", opt(*request, int)),
        Event::MessageReceived { kind, peer, agent, epoch: ep, head_tick, head_hash } => Line::new("message_received")
            .with("agent", ag(agent))
            .with("epoch", epoch(*ep))
            .with("head_hash", hash(head_hash))
            .with("head_tick", int(head_tick.0))
            .with("kind", word(&kind.to_string()))
            .with("peer", node(peer)),
        Event::HandoffStarted { agent, target, epoch: ep } => {
            Line::new("handoff_started").with("agent", ag(agent)).with("epoch", epoch(*ep)).with("target", node(target))
        }
        Event::PackageSent { agent, target, attempt, tick, hash: h, budget, expiry_ns } => Line::new("package_sent")
            .with("agent", ag(agent))
            .with("attempt", int(*attempt))
            .with("budget", int(budget.0))
            .with("expiry_ns", int(*expiry_ns))
            .with("hash", hash(h))
            .with("target", node(target))
            .with("tick", int(tick.0)),
        Event::RetryScheduled { agent, attempt, at_ns } => Line::new("retry_scheduled")
            .with("agent", ag(agent))
            .with("at_ns", int(*at_ns))
            .with("attempt", int(*attempt)),
        Event::MigrationFinished { agent, peer, role: r, outcome, budget, tick, hash: h } => migration_outcome(
            Line::new("migration_finished")
                .with("agent", ag(agent))
                .with("budget", int(budget.0))
                .with("hash", hash(h))
                .with("peer", node(peer))
                .with("role", role(*r))
                .with("tick", int(tick.0)),
            outcome,
        ),
        Event::LocalCopyDeleted { agent } => Line::new("local_copy_deleted").with("agent", ag(agent)),
        Event::StaleMessageIgnored { agent, peer, kind, message_epoch, local_epoch, total } => {
            Line::new("stale_message_ignored")
                .with("agent", ag(agent))
                .with("kind", word(&kind.to_string()))
                .with("local_epoch", epoch(*local_epoch))
                .with("message_epoch", epoch(*message_epoch))
                .with("peer", node(peer))
                .with("total", int(*total))
        }
        Event::DivergenceDetected { agent, peer, epoch: ep, local_tick, local_head, remote_tick, remote_head } => {
            Line::new("divergence_detected")
                .with("agent", ag(agent))
                .with("epoch", epoch(*ep))
                .with("local_head", hash(local_head))
                .with("local_tick", int(local_tick.0))
                .with("peer", node(peer))
                .with("remote_head", hash(remote_head))
                .with("remote_tick", int(remote_tick.0))
        }
        Event::FaultObserved { agent, fault } => {
            Line::new("fault_observed").with("agent", opt(agent.as_ref(), ag)).with("fault", text(fault))
        }
        Event::CommandRefused { command, agent, reason } => Line::new("command_refused")
            .with("agent", opt(agent.as_ref(), ag))
            .with("command", word(command))
            .with("reason", text(reason)),
        Event::AgentHalted { agent, reason } => {
            Line::new("agent_halted").with("agent", ag(agent)).with("reason", text(reason))
        }
        Event::PersistFailing { agent, since_unix_ns, error } => Line::new("persist_failing")
            .with("agent", ag(agent))
            .with("error", text(error))
            .with("since_unix_ns", int(*since_unix_ns)),
        Event::PersistRestored { agent } => Line::new("persist_restored").with("agent", ag(agent)),
        Event::Recovered { agent, anchor, anchor_tick, epoch: ep, budget } => Line::new("recovered")
            .with("agent", ag(agent))
            .with("anchor", hash(anchor))
            .with("anchor_tick", int(anchor_tick.0))
            .with("budget", int(budget.0))
            .with("epoch", epoch(*ep)),
        Event::NodeShutdown => Line::new("node_shutdown"),
        Event::ClaimRejected { agent, peer, kind, defence, reason } => Line::new("claim_rejected")
            .with("agent", ag(agent))
            .with("defence", word(defence.name()))
            .with("kind", word(&kind.to_string()))
            .with("peer", node(peer))
            .with("reason", text(reason)),
        Event::Misbehaved { agent, act } => {
            Line::new("misbehaved").with("act", text(act)).with("agent", opt(agent.as_ref(), ag))
        }
    };
    line.to_string()
}

// ---- simulator actions ----

fn disk_kind(k: DiskFaultKind) -> String {
    word(match k {
        DiskFaultKind::Full => "full",
        DiskFaultKind::Io => "io",
    })
}

/// A BUGGIFY boundary as a snake_case word.
pub fn boundary(b: Boundary) -> String {
    word(match b {
        Boundary::PackageSent => "package_sent",
        Boundary::HandoffCheckpoint => "handoff_checkpoint",
        Boundary::CheckpointCommitted => "checkpoint_committed",
        Boundary::PackageAdopted => "package_adopted",
        Boundary::MigrationFinished => "migration_finished",
    })
}

/// A BUGGIFY fault as a snake_case word.
pub fn buggify_fault(f: BuggifyFault) -> String {
    word(match f {
        BuggifyFault::Crash => "crash",
        BuggifyFault::Isolate => "isolate",
        BuggifyFault::DiskFull => "disk_full",
        BuggifyFault::DiskIo => "disk_io",
    })
}

/// A timeline action as a [`Line`] of kind `kind_prefix` + the action's
/// snake_case name (`crash`, `partition_oneway`, ...); a restart's storage
/// flattens like an outcome (`storage=remove_newest agent=.. count=..`).
pub fn action_line(kind_prefix: &str, a: &Action) -> Line {
    let l = |name: &str| Line::new(&format!("{kind_prefix}{name}"));
    match a {
        Action::Migrate { agent, from, to } => {
            l("migrate").with("agent", word(agent)).with("from", word(from)).with("to", word(to))
        }
        Action::Crash { node } => l("crash").with("node", word(node)),
        Action::Restart { node, storage } => {
            let line = l("restart").with("node", word(node));
            match storage {
                Storage::Intact => line.with("storage", word("intact")),
                Storage::Wipe => line.with("storage", word("wipe")),
                Storage::RemoveNewest { agent, count } => line
                    .with("storage", word("remove_newest"))
                    .with("agent", word(agent))
                    .with("count", int(u64::try_from(*count).unwrap_or(u64::MAX))),
                Storage::CorruptNewest { agent } => {
                    line.with("storage", word("corrupt_newest")).with("agent", word(agent))
                }
            }
        }
        Action::Partition { a, b } => l("partition").with("a", word(a)).with("b", word(b)),
        Action::PartitionOneway { from, to } => l("partition_oneway").with("from", word(from)).with("to", word(to)),
        Action::Heal { a, b } => l("heal").with("a", word(a)).with("b", word(b)),
        Action::HealOneway { from, to } => l("heal_oneway").with("from", word(from)).with("to", word(to)),
        Action::Latency { a, b, ms } => l("latency").with("a", word(a)).with("b", word(b)).with("ms", int(*ms)),
        Action::Duplicate { node, probability } => {
            l("duplicate").with("node", word(node)).with("probability", float(*probability))
        }
        Action::Reorder { node, max_delay_ms } => {
            l("reorder").with("max_delay_ms", int(*max_delay_ms)).with("node", word(node))
        }
        Action::ClearFaults { node } => l("clear_faults").with("node", word(node)),
        Action::Skew { node, ms } => l("skew").with("ms", int(*ms)).with("node", word(node)),
        Action::Drift { node, ppm } => l("drift").with("node", word(node)).with("ppm", int(*ppm)),
        Action::Corrupt { node, probability } => {
            l("corrupt").with("node", word(node)).with("probability", float(*probability))
        }
        Action::Pause { node, ms } => l("pause").with("ms", int(*ms)).with("node", word(node)),
        Action::Swizzle { nodes, step_ms } => {
            l("swizzle").with("nodes", list(nodes.iter().map(|n| word(n)))).with("step_ms", int(*step_ms))
        }
        Action::Buggify { node, on, fault, for_ms } => l("buggify")
            .with("fault", buggify_fault(*fault))
            .with("for_ms", int(*for_ms))
            .with("node", word(node))
            .with("on", boundary(*on)),
        Action::Recover { agent, node, anchor_tick, force } => l("recover")
            .with("agent", word(agent))
            .with("anchor_tick", opt(*anchor_tick, int))
            .with("force", flag(*force))
            .with("node", word(node)),
        Action::Retire { agent, node } => l("retire").with("agent", word(agent)).with("node", word(node)),
        Action::DiskFault { node, kind, for_ms, under } => l("disk_fault")
            .with("for_ms", int(*for_ms))
            .with("kind", disk_kind(*kind))
            .with("node", word(node))
            .with("under", opt(under.as_deref(), text)),
    }
}

/// A timeline action as `<kind> key=value ...`.
pub fn action(a: &Action) -> String {
    action_line("", a).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use igor::authority::{AuthorityState, Reason};
    use igor::executor::TickOutcome;
    use igor::node::defence::Defence;
    use igor::units::{AgentId, Microcents, NodeId, TickNumber};
    use igor::wire::MessageKind;

    #[test]
    fn time_is_fixed_width_and_trace_diff_finds_first_line() {
        assert_eq!(fmt_time(12_345_678_901), "000012.345");
        let mut a = Trace::new();
        a.event(0, "a", "x");
        a.event(1_000_000, "a", "y");
        let mut b = a.clone();
        assert_eq!(a.first_difference(&b), None);
        b.note("extra");
        assert_eq!(a.first_difference(&b), Some((3, String::new(), "extra".into())));
        assert_ne!(a.hash(), b.hash());
    }

    /// One quoting rule: bare words stay bare; anything else (spaces, the
    /// none marker, the empty string, quotes, newlines) is quoted and
    /// escaped, and `parse` gives back exactly the original text.
    #[test]
    fn values_have_one_quoting_rule_and_parse_reads_them_back() {
        assert_eq!(text("ACTIVE_OWNER"), "ACTIVE_OWNER");
        assert_eq!(text("history/a.ckpt:1-2"), "history/a.ckpt:1-2");
        assert_eq!(text("budget exhausted"), "\"budget exhausted\"");
        assert_eq!(text("-"), "\"-\"", "a text that is the none marker is quoted");
        assert_eq!(text(""), "\"\"");
        assert_eq!(text("say \"hi\"\\\n\u{1}µ¢"), "\"say \\\"hi\\\"\\\\\\n\\u0001µ¢\"");
        assert_eq!(hash(&Hash32([0xab; 32])), "abababababab");
        assert_eq!(opt(None::<u64>, int), NONE);
        assert_eq!(list(Vec::new()), NONE);
        assert_eq!(list(["a".to_string(), "b".to_string()]), "a,b");
        let odd = ["budget exhausted", "-", "", "say \"hi\"\\\n\u{1}µ¢ k=v"];
        let mut line = Line::new("probe").with("n", int(-5)).with("none", opt(None::<u64>, int));
        for (k, v) in ["a", "b", "c", "d"].into_iter().zip(odd) {
            line = line.with(k, text(v));
        }
        let mut t = Trace::new();
        t.sim(1_500_000_000, line);
        let p = parse(&t.lines()[0]).expect("a trace line parses");
        assert_eq!((p.at_ns, p.host.as_str(), p.kind.as_str()), (1_500_000_000, SIM, "probe"));
        for (k, v) in ["a", "b", "c", "d"].into_iter().zip(odd) {
            assert_eq!(p.fields[k].as_deref(), Some(v), "{k}");
        }
        assert_eq!((p.int("n"), p.get("none"), p.get("b")), (Some(-5), None, Some("-")));
        assert!(parse("# igor-sim trace v3").is_none());
    }

    fn a() -> AgentId {
        AgentId::new("counter").unwrap()
    }
    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// One of every node event, with every optional field absent.
    fn every_event() -> Vec<Event> {
        let (h, e, m) = (Hash32([0x3f; 32]), Epoch::new(2, 1), Microcents(7));
        vec![
            Event::NodeStarted { restarted: true, agents: 1 },
            Event::AgentDeployed { agent: a(), wasm_hash: h, budget: m },
            Event::AgentLoaded {
                agent: a(),
                state: AuthorityState::RecoveryRequired,
                epoch: e,
                head_tick: TickNumber(3),
                head_hash: h,
                budget: m,
            },
            Event::TickStarted { agent: a(), tick: TickNumber(4), epoch: e, budget: m, base: h },
            Event::TickFinished {
                agent: a(),
                tick: TickNumber(4),
                epoch: e,
                cost: m,
                paid: m,
                budget: m,
                outcome: format!("{:?}", TickOutcome::Completed { more_work: true }),
                side_effects: 0,
                side_effects_allowed: true,
            },
            Event::CheckpointCommitted {
                agent: a(),
                tick: TickNumber(4),
                epoch: e,
                hash: h,
                prev_hash: Hash32::ZERO,
                budget: m,
                charged: m,
                paid: m,
                lease_expiry_ns: 9,
                handoff: false,
            },
            Event::CheckpointAdopted {
                agent: a(),
                from: n("a"),
                tick: TickNumber(4),
                epoch: e,
                hash: h,
                prev_hash: h,
                budget: m,
            },
            Event::AuthorityChanged {
                agent: a(),
                from: None,
                to: AuthorityState::ActiveOwner,
                epoch: e,
                reason: Reason::Deployed,
            },
            Event::LeaseRenewed { agent: a(), epoch: e, expiry_ns: 9 },
            Event::MessageSent {
                kind: MessageKind::HeadAck,
                peer: n("b"),
                agent: a(),
                epoch: e,
                head_tick: TickNumber(4),
                head_hash: h,
                request: None,
            },
            Event::MessageReceived {
                kind: MessageKind::HeadAnnounce,
                peer: n("b"),
                agent: a(),
                epoch: e,
                head_tick: TickNumber(4),
                head_hash: h,
            },
            Event::HandoffStarted { agent: a(), target: n("b"), epoch: e },
            Event::PackageSent {
                agent: a(),
                target: n("b"),
                attempt: 1,
                tick: TickNumber(4),
                hash: h,
                budget: m,
                expiry_ns: 9,
            },
            Event::RetryScheduled { agent: a(), attempt: 2, at_ns: 9 },
            Event::MigrationFinished {
                agent: a(),
                peer: n("b"),
                role: Role::Source,
                outcome: Outcome::Refused("rate_limit: too many".into()),
                budget: m,
                tick: TickNumber(4),
                hash: h,
            },
            Event::LocalCopyDeleted { agent: a() },
            Event::StaleMessageIgnored {
                agent: a(),
                peer: n("b"),
                kind: MessageKind::AgentTransfer,
                message_epoch: e,
                local_epoch: e,
                total: 1,
            },
            Event::DivergenceDetected {
                agent: a(),
                peer: n("b"),
                epoch: e,
                local_tick: TickNumber(4),
                local_head: h,
                remote_tick: TickNumber(5),
                remote_head: h,
            },
            Event::FaultObserved { agent: None, fault: "disk full".into() },
            Event::CommandRefused { command: "recover".into(), agent: None, reason: "no such agent".into() },
            Event::AgentHalted { agent: a(), reason: "budget exhausted".into() },
            Event::PersistFailing { agent: a(), since_unix_ns: 9, error: "write x: EIO".into() },
            Event::PersistRestored { agent: a() },
            Event::Recovered { agent: a(), anchor: h, anchor_tick: TickNumber(3), epoch: e, budget: m },
            Event::NodeShutdown,
            Event::ClaimRejected {
                agent: a(),
                peer: n("m"),
                kind: MessageKind::AgentTransfer,
                defence: Defence::RateLimit,
                reason: "above burst".into(),
            },
            Event::Misbehaved { agent: None, act: "bounces counter on to n".into() },
        ]
    }

    /// The trace keeps the node's own kind and keys for every event (the
    /// node's `Display` names them), adds only the documented flattening
    /// keys (`more_work`, `detail`), and writes no Rust `Debug`, JSON,
    /// `null` or full-length hash.
    #[test]
    fn every_event_keeps_the_nodes_kind_and_keys_in_the_v3_dialect() {
        let events = every_event();
        for e in &events {
            let ours = event(e);
            let theirs = e.to_string();
            let p = parse(&format!("000000.000 a {ours}")).expect("parses");
            assert_eq!(Some(p.kind.as_str()), theirs.split(' ').next(), "{ours}");
            let mut keys: Vec<&str> =
                theirs.split(' ').skip(1).filter_map(|kv| kv.split_once('=')).map(|(k, _)| k).collect();
            // The node's keys with a quoted value that holds `k=` would
            // confuse this split; none of the samples has one.
            if matches!(e, Event::TickFinished { .. }) {
                keys.extend(["more_work", "detail"]);
            }
            if matches!(e, Event::MigrationFinished { .. }) {
                keys.push("detail");
            }
            keys.sort_unstable();
            let mine: Vec<&str> = p.fields.keys().map(String::as_str).collect();
            assert_eq!(mine, keys, "{ours}");
            // Written back from the parsed map (sorted keys), the line is
            // the same: keys were sorted and every value reads back.
            let again: String = p.fields.iter().map(|(k, v)| format!(" {k}={}", opt(v.as_deref(), text))).collect();
            assert_eq!(format!("{}{again}", p.kind), ours);
            for bad in ["null", "Some(", "None", "{", "}", &"3f".repeat(32)] {
                assert!(!ours.contains(bad), "{bad} in {ours}");
            }
        }
        // One sample per variant: `event` matches every variant by name, so
        // a new one fails to compile there before it can miss this list.
        let kinds: std::collections::BTreeSet<String> =
            events.iter().map(|e| event(e).split(' ').next().unwrap_or_default().to_string()).collect();
        assert_eq!((kinds.len(), events.len()), (27, 27), "27 distinct event kinds");
    }

    /// Every executor outcome, as the node prints it (`{:?}`), flattens
    /// to a word and its field; a form this does not know is kept quoted.
    #[test]
    fn tick_outcomes_flatten_from_the_nodes_debug_text() {
        let cases = [
            (TickOutcome::Completed { more_work: false }, "completed", "false", "-"),
            (TickOutcome::Completed { more_work: true }, "completed", "true", "-"),
            (TickOutcome::OutOfFuel, "out_of_fuel", "-", "-"),
            (TickOutcome::WallClockTimeout, "wall_clock_timeout", "-", "-"),
            (TickOutcome::BudgetExhausted, "budget_exhausted", "-", "-"),
            (TickOutcome::Trapped { message: "wasm trap: \"x\"\n".into() }, "trapped", "-", "wasm trap: \"x\"\n"),
        ];
        for (o, outcome, more_work, detail) in cases {
            let line = tick_outcome(Line::new("t"), &format!("{o:?}")).to_string();
            let p = parse(&format!("000000.000 a {line}")).expect("parses");
            let get = |k: &str| p.fields[k].clone().unwrap_or_else(|| NONE.to_string());
            assert_eq!((get("outcome").as_str(), get("more_work").as_str()), (outcome, more_work), "{o:?}");
            assert_eq!(get("detail"), detail, "{o:?}");
        }
        let unknown = tick_outcome(Line::new("t"), "Frozen { why: 1 }").to_string();
        assert_eq!(unknown, "t detail=- more_work=- outcome=\"Frozen { why: 1 }\"");
    }

    #[test]
    fn actions_are_kind_and_sorted_keys_with_flattened_storage() {
        let restart =
            Action::Restart { node: "a".into(), storage: Storage::RemoveNewest { agent: "counter".into(), count: 2 } };
        assert_eq!(action(&restart), "restart agent=counter count=2 node=a storage=remove_newest");
        let fault = Action::DiskFault {
            node: "a".into(),
            kind: DiskFaultKind::Full,
            for_ms: 3000,
            under: Some("history/".into()),
        };
        assert_eq!(action(&fault), "disk_fault for_ms=3000 kind=full node=a under=history/");
        let recover = Action::Recover { agent: "counter".into(), node: "b".into(), anchor_tick: None, force: true };
        assert_eq!(
            action_line("liveness_", &recover).to_string(),
            "liveness_recover agent=counter anchor_tick=- force=true node=b"
        );
        let swizzle = Action::Swizzle { nodes: vec!["a".into(), "b".into()], step_ms: 700 };
        assert_eq!(action(&swizzle), "swizzle nodes=a,b step_ms=700");
    }
}
