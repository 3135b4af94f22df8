//! Node events and simulator actions as trace lines (`<kind> key=value
//! ...`), written only with the value functions of the parent module.

use super::{Line, NONE, epoch, flag, float, hash, int, list, opt, text, word};
use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Boundary, BuggifyFault, Storage};
use igor::authority::Role;
use igor::executor::TickOutcome;
use igor::migration::Outcome;
use igor::node::Event;

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
pub(super) fn tick_outcome(line: Line, o: &TickOutcome) -> Line {
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
