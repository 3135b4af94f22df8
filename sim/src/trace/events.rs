//! Node events and simulator actions as trace lines (`<kind> key=value
//! ...`), written only with the value functions of the parent module.

use super::{Line, flag, float, int, list, opt, text, word};
use crate::disk::DiskFaultKind;
use crate::scenario::{Action, Boundary, BuggifyFault, Storage};
use igor::node::Event;

/// A node event as its trace text (the library's one form).
pub fn event(e: &Event) -> String {
    e.to_string()
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
