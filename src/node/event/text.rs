//! The one text form of a node event: `<kind> key=value ...`, keys
//! sorted, values in one dialect (integers, bare words, JSON-quoted text,
//! hashes as their first 12 hex digits, `-` for none; no Rust `Debug`, no
//! JSON, no `null`). The simulator's traces and `igord`'s event log both
//! write it ([`Event`]'s `Display`); the simulator adds its own lines
//! (actions, verdicts) with the same value functions.

use super::Event;
use crate::authority::Role;
use crate::checkpoint::Hash32;
use crate::executor::TickOutcome;
use crate::migration::Outcome;
use crate::units::Epoch;
use std::collections::BTreeMap;

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
/// `\u001b`; every control character, DEL and C1 included, and the
/// Unicode line and paragraph separators: a peer's text never splits a
/// line or reaches a terminal raw). The one quoting rule of the trace.
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
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
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

/// A tick outcome flattened: the variant as a snake_case word under
/// `outcome`, its field under `more_work` / `detail` ([`NONE`] when the
/// variant has none).
pub fn tick_outcome(line: Line, o: &TickOutcome) -> Line {
    let none = || NONE.to_string();
    let (outcome, more_work, detail) = match o {
        TickOutcome::Completed { more_work } => ("completed", flag(*more_work), none()),
        TickOutcome::OutOfFuel => ("out_of_fuel", none(), none()),
        TickOutcome::Trapped { message } => ("trapped", none(), text(message)),
        TickOutcome::WallClockTimeout => ("wall_clock_timeout", none(), none()),
        TickOutcome::BudgetExhausted => ("budget_exhausted", none(), none()),
    };
    line.with("outcome", word(outcome)).with("more_work", more_work).with("detail", detail)
}

/// A node event as `<kind> key=value ...`: the kind and keys are the
/// node's own (its serde names, as `igor::node::Event`'s `Display` has
/// them), the values in this file's dialect. Every field is named, so a
/// field added to an event fails to compile here until it has a form.
pub fn event_line(e: &Event) -> Line {
    let ag = |a: &crate::units::AgentId| word(a.as_str());
    let node = |n: &crate::units::NodeId| word(n.as_str());
    match e {
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
    }
}
