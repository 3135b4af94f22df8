//! The seam between the node (who may tick, when, and what gets committed)
//! and the sandbox (how a tick runs). The node is generic over
//! [`Executor`]; the wasmtime sandbox implements it for real, and protocol
//! tests implement it with a tiny deterministic fake. Everything a tick may
//! observe comes in through [`TickInputs`], so a tick is a pure function of
//! (module, state, inputs, event log) and can be replayed by any node.

use crate::checkpoint::Hash32;
use crate::units::{Microcents, TickNumber};

/// Everything the outside world contributes to one tick. Built by the node
/// from its environment traits; the executor never reads a clock or an RNG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickInputs {
    pub tick: TickNumber,
    /// Wall clock at the start of the tick (what `clock_now` reports).
    pub now_unix_ns: i64,
    /// Seed for every `rand_bytes` call in this tick (drawn from the node's
    /// entropy; the bytes handed out are recorded in the event log anyway).
    pub rand_seed: [u8; 32],
    /// Budget before the tick; the tick's charge is capped at this.
    pub budget: Microcents,
    pub price_per_second: Microcents,
    /// CM-5: side-effect hostcalls (http, wallet_pay, kv_put/delete) run
    /// only if the node is ACTIVE_OWNER; otherwise they return -3.
    pub side_effects_allowed: bool,
    /// Node-signed execution receipts the agent may read via `wallet_receipt*`.
    pub receipts: Vec<Vec<u8>>,
}

/// How a tick ended. Events carry it as is (snake_case in JSON), so no
/// reader ever parses its `Debug` text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// `agent_tick` returned; `more_work` is its non-zero fast-path hint.
    Completed { more_work: bool },
    /// The per-tick fuel limit was hit: the whole tick fuel is charged.
    OutOfFuel,
    /// The guest trapped (message from wasmtime).
    Trapped { message: String },
    /// The wall-clock safety net fired. Not deterministic: the node treats it
    /// as its own fault, never as a replicated state change.
    WallClockTimeout,
    /// The budget reached zero during this tick: charged exactly what was
    /// left; the node commits a final checkpoint and stops the agent.
    BudgetExhausted,
}

impl TickOutcome {
    /// Whether the agent may tick again after this outcome.
    pub fn is_live(&self) -> bool {
        matches!(self, TickOutcome::Completed { .. })
    }

    /// What the tick `tick` ending this way, with `left` in the budget,
    /// means for the agent: the one rule the node and `igord run` follow.
    /// A completed tick that spent the last microcent ends the agent like
    /// an exhausted one (spec §3: stop, commit a final checkpoint); a trap,
    /// running out of fuel or the wall-clock net is a fault: the tick is
    /// never committed and the agent stops.
    pub fn end(&self, tick: TickNumber, left: Microcents) -> TickEnd {
        match self {
            TickOutcome::Completed { more_work } if left > Microcents::ZERO => TickEnd::Go { more_work: *more_work },
            TickOutcome::Completed { .. } | TickOutcome::BudgetExhausted => TickEnd::Exhausted,
            TickOutcome::Trapped { message } => TickEnd::Fault(format!("trapped in tick {tick}: {message}")),
            TickOutcome::OutOfFuel => TickEnd::Fault(format!("ran out of fuel in tick {tick}")),
            // Not deterministic: the node's own fault, never committed.
            TickOutcome::WallClockTimeout => TickEnd::Fault("wall-clock safety net fired".to_string()),
        }
    }
}

/// What a tick's outcome means for the agent ([`TickOutcome::end`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TickEnd {
    /// Tick again (`more_work`: soon).
    Go { more_work: bool },
    /// The budget is spent: commit a final checkpoint (this tick included)
    /// and stop.
    Exhausted,
    /// The tick failed: it is not committed, and the agent stops.
    Fault(String),
}

/// The money one tick takes from its budget ([`settle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The executor's cost, clamped to `0..=budget`.
    pub cost: Microcents,
    /// Its payments, clamped to `0..=budget - cost`.
    pub paid: Microcents,
    /// What is left: `budget - cost - paid`.
    pub left: Microcents,
}

/// RE-3/RE-4: take a tick's `cost`, then its payments `paid`, from
/// `budget`, each clamped to what is left: a tick never drives the budget
/// negative and never gives money back, whatever the executor reports.
/// The one settlement the node and `igord run` use.
pub fn settle(budget: Microcents, cost: Microcents, paid: Microcents) -> Settled {
    // RE-3: a running budget is never negative (deploy refuses one, and
    // checkpoint decoding refuses one in a package or on disk).
    debug_assert!(!budget.is_negative(), "RE-3: running budget {budget} is negative");
    let cost = cost.clamp_to(budget);
    // 0 <= cost <= budget and 0 <= paid <= left: neither subtraction can
    // leave the range, so the fallback is never taken.
    let left = budget.checked_sub(cost).unwrap_or(Microcents::ZERO);
    let paid = paid.clamp_to(left);
    let left = left.checked_sub(paid).unwrap_or(Microcents::ZERO);
    // RE-4: nothing is given back.
    debug_assert!(left <= budget.max(Microcents::ZERO), "RE-4: {left} left of {budget}");
    Settled { cost, paid, left }
}

/// What one tick did. `cost + paid` never exceeds the budget it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickReport {
    pub outcome: TickOutcome,
    pub fuel_used: u64,
    /// Execution charge (fuel-derived, plus hostcall charges), microcents.
    pub cost: Microcents,
    /// Money sent out through `wallet_pay` in this tick.
    pub paid: Microcents,
    /// The per-tick event log, canonically encoded (replay input).
    pub event_log: Vec<u8>,
    /// Number of side-effect hostcalls attempted (for CM-5 accounting).
    pub side_effects: u32,
}

/// Why an agent could not be loaded, started or snapshotted. Messages name
/// the export, import, capability or field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("capability: {0}")]
    Capability(String),
    #[error("agent lifecycle: {0}")]
    Lifecycle(String),
    #[error("replay diverged: {0}")]
    Divergence(String),
}

/// What a tick replayed in a running instance did ([`Executor::replay_in`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedTick {
    pub outcome: TickOutcome,
    /// Execution charge, as the live tick computed it.
    pub cost: Microcents,
    /// Money the recorded `wallet_pay` results sent out.
    pub paid: Microcents,
}

/// Runs agents. One executor per node; instances are addressed by handle.
pub trait Executor {
    /// A live agent instance (wasm store + instance + host state).
    type Instance;

    /// Compile (or fetch from cache) a module and check its manifest and the
    /// capabilities it needs against what this node offers. Returns the
    /// module's SHA-256. Refusal here is how a target refuses a transfer.
    fn prepare(&mut self, wasm: &[u8], manifest: &[u8]) -> Result<Hash32, ExecError>;

    /// Instantiate a prepared module and run the lifecycle up to the first
    /// tick: `_initialize`, `agent_init`, then `agent_resume(state)` if
    /// `state` is non-empty. `kv` is the agent's key/value snapshot.
    fn start(
        &mut self,
        wasm_hash: &Hash32,
        manifest: &[u8],
        state: &[u8],
        kv: &[u8],
    ) -> Result<Self::Instance, ExecError>;

    /// Run one tick.
    fn tick(&mut self, instance: &mut Self::Instance, inputs: &TickInputs) -> TickReport;

    /// The agent's state bytes (`agent_checkpoint` / `agent_checkpoint_ptr`)
    /// and its kv snapshot, for a checkpoint.
    fn snapshot(&mut self, instance: &mut Self::Instance) -> Result<(Vec<u8>, Vec<u8>), ExecError>;

    /// Re-run one tick from `state`/`kv` with the recorded `event_log`,
    /// returning the resulting (state, kv) and the cost. Used by a target to
    /// check the last tick of a transfer and by anyone to verify metering.
    fn replay(
        &mut self,
        wasm_hash: &Hash32,
        manifest: &[u8],
        state: &[u8],
        kv: &[u8],
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, Microcents), ExecError>;

    /// Re-run one recorded tick *in* a running instance, which then holds
    /// the state after it (the audit's path: one instance for a whole
    /// chain, no instantiation per tick). Like the live [`Executor::tick`],
    /// a tick the budget cut leaves the instance at the state before it.
    /// This default goes through [`Executor::replay`] and a fresh instance;
    /// the sandbox overrides it with the fast path.
    fn replay_in(
        &mut self,
        wasm_hash: &Hash32,
        manifest: &[u8],
        instance: &mut Self::Instance,
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<ReplayedTick, ExecError> {
        let (state, kv) = self.snapshot(instance)?;
        let (state, kv, cost) = self.replay(wasm_hash, manifest, &state, &kv, inputs, event_log)?;
        *instance = self.start(wasm_hash, manifest, &state, &kv)?;
        let outcome = TickOutcome::Completed { more_work: false };
        Ok(ReplayedTick { outcome, cost, paid: Microcents::ZERO })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RE-3/RE-4: whatever the executor reports, a tick takes no more than
    /// the budget, gives nothing back, and what it takes is exactly the
    /// cost and payments it settles.
    #[test]
    fn settle_clamps_cost_then_payments_to_what_is_left() {
        let m = Microcents;
        let cases = [
            // (budget, reported cost, reported paid) -> (cost, paid, left)
            ((m(100), m(30), m(20)), (m(30), m(20), m(50))),
            ((m(100), m(130), m(20)), (m(100), m(0), m(0))),
            ((m(100), m(30), m(90)), (m(30), m(70), m(0))),
            ((m(100), m(-5), m(-7)), (m(0), m(0), m(100))),
            ((m(0), m(1), m(1)), (m(0), m(0), m(0))),
            ((m(i64::MAX), m(i64::MAX), m(i64::MAX)), (m(i64::MAX), m(0), m(0))),
        ];
        for ((budget, cost, paid), (want_cost, want_paid, want_left)) in cases {
            let s = settle(budget, cost, paid);
            assert_eq!((s.cost, s.paid, s.left), (want_cost, want_paid, want_left), "{budget} {cost} {paid}");
            assert_eq!(budget.checked_sub(s.left), s.cost.checked_add(s.paid), "RE-3 for {budget} {cost} {paid}");
        }
    }
}
