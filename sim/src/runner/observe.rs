//! What the runner reads out of one node event: the checker's observation
//! (most events are trace-only), the heads it remembers for recovery
//! anchors, and whether an event is an armed BUGGIFY boundary.

use crate::checker::{Obs, State};
use crate::scenario::Boundary;
use igor::authority::AuthorityState;
use igor::checkpoint::Hash32;
use igor::executor::TickOutcome;
use igor::node::{Event, NodeEvent};
use std::collections::BTreeMap;

pub(super) fn state_of(s: AuthorityState) -> State {
    match s {
        AuthorityState::ActiveOwner => State::ActiveOwner,
        AuthorityState::HandoffInitiated => State::HandoffInitiated,
        AuthorityState::HandoffPending => State::HandoffPending,
        AuthorityState::Retired => State::Retired,
        AuthorityState::RecoveryRequired => State::RecoveryRequired,
    }
}

/// What the checker needs from one node event (most events are trace-only).
pub(super) fn observation(e: &Event) -> Option<Obs> {
    Some(match e {
        Event::NodeStarted { .. } => Obs::Booted,
        Event::AgentDeployed { agent, budget, .. } => Obs::Deployed { agent: agent.clone(), budget: budget.0 },
        Event::AgentLoaded { agent, state, epoch, head_tick, head_hash, .. } => Obs::Loaded {
            agent: agent.clone(),
            state: state_of(*state),
            epoch: *epoch,
            head_tick: head_tick.0,
            head: *head_hash,
        },
        Event::TickStarted { agent, tick, epoch, budget, base } => {
            Obs::TickStarted { agent: agent.clone(), tick: tick.0, epoch: *epoch, budget: budget.0, base: *base }
        }
        Event::TickFinished { agent, tick, epoch, cost, paid, side_effects, side_effects_allowed, outcome, .. } => {
            Obs::Ticked {
                agent: agent.clone(),
                tick: tick.0,
                epoch: *epoch,
                cost: cost.0,
                paid: paid.0,
                side_effects: if *side_effects_allowed { 0 } else { *side_effects },
                exhausted: *outcome == TickOutcome::BudgetExhausted,
            }
        }
        Event::CheckpointCommitted { agent, tick, hash, prev_hash, budget, charged, paid, handoff, .. } => {
            Obs::Committed {
                agent: agent.clone(),
                tick: tick.0,
                hash: *hash,
                prev: *prev_hash,
                budget: budget.0,
                charged: Some(charged.0.saturating_add(paid.0)),
                handoff: *handoff,
                source: None,
            }
        }
        Event::CheckpointAdopted { agent, from, tick, hash, prev_hash, budget, .. } => Obs::Committed {
            agent: agent.clone(),
            tick: tick.0,
            hash: *hash,
            prev: *prev_hash,
            budget: budget.0,
            charged: None,
            handoff: false,
            source: Some(from.clone()),
        },
        Event::AuthorityChanged { agent, from, to, epoch, reason } => Obs::Authority {
            agent: agent.clone(),
            from: from.map(state_of),
            to: state_of(*to),
            epoch: *epoch,
            reason: reason.clone(),
        },
        Event::DivergenceDetected { agent, .. } => Obs::Divergence { agent: agent.clone() },
        Event::Recovered { agent, anchor, epoch, .. } => {
            Obs::Recovered { agent: agent.clone(), anchor: *anchor, epoch: *epoch }
        }
        // The node halts with reason "budget exhausted" (src/node/mod.rs).
        Event::AgentHalted { agent, reason } => {
            Obs::Halted { agent: agent.clone(), budget: reason.starts_with("budget") }
        }
        Event::FaultObserved { agent: Some(agent), .. } => Obs::Fault { agent: agent.clone() },
        Event::LocalCopyDeleted { agent } => Obs::CopyDeleted { agent: agent.clone() },
        _ => return None,
    })
}

pub(super) fn boundary_hit(b: Boundary, e: &Event) -> bool {
    match (b, e) {
        (Boundary::PackageSent, Event::PackageSent { .. }) => true,
        (Boundary::HandoffCheckpoint, Event::CheckpointCommitted { handoff, .. }) => *handoff,
        (Boundary::CheckpointCommitted, Event::CheckpointCommitted { .. }) => true,
        (Boundary::PackageAdopted, Event::CheckpointAdopted { .. }) => true,
        (Boundary::MigrationFinished, Event::MigrationFinished { .. }) => true,
        _ => false,
    }
}

/// Checkpoints seen per (node, agent): tick → hash, to resolve recovery anchors.
pub(super) type Heads = BTreeMap<(String, String), BTreeMap<u64, Hash32>>;

pub(super) fn remember_head(heads: &mut Heads, e: &NodeEvent) {
    let (agent, tick, hash) = match &e.event {
        Event::CheckpointCommitted { agent, tick, hash, .. } | Event::CheckpointAdopted { agent, tick, hash, .. } => {
            (agent, tick, *hash)
        }
        Event::AgentLoaded { agent, head_tick, head_hash, .. } => (agent, head_tick, *head_hash),
        _ => return,
    };
    let seen = heads.entry((e.node.to_string(), agent.to_string())).or_default();
    if matches!(e.event, Event::AgentLoaded { .. }) {
        // What a restarted node loads is its disk's head: anything newer
        // was lost with the disk and cannot anchor a recovery.
        seen.retain(|t, _| *t <= tick.0);
    }
    seen.insert(tick.0, hash);
}
