//! A tiny deterministic [`Executor`] for protocol tests and simulator
//! scenarios that do not need wasm: the "agent" is a counter whose state is
//! a little-endian `u64`, each tick adds one and costs a fixed amount. The
//! "module" is any byte string; a manifest mentioning a capability listed in
//! `unsupported` is refused by `prepare`, as a target lacking it would.
//! Not a second implementation of the sandbox: it only honours the trait's
//! contract (charge capped at the budget, replay reproduces the tick).

use crate::checkpoint::Hash32;
use crate::executor::{ExecError, Executor, TickInputs, TickOutcome, TickReport};
use crate::units::Microcents;
use std::collections::BTreeSet;

/// The counter executor.
#[derive(Clone, Debug)]
pub struct CounterExecutor {
    pub cost_per_tick: Microcents,
    /// Capability names this "node" cannot offer.
    pub unsupported: BTreeSet<String>,
    /// Every n-th tick reports more work pending (fast path); 0 = never.
    pub more_work_every: u64,
    prepared: BTreeSet<Hash32>,
}

/// A running counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counter {
    pub wasm_hash: Hash32,
    pub count: u64,
}

impl CounterExecutor {
    pub fn new(cost_per_tick: Microcents) -> Self {
        CounterExecutor { cost_per_tick, unsupported: BTreeSet::new(), more_work_every: 0, prepared: BTreeSet::new() }
    }

    fn parse_state(state: &[u8]) -> Result<u64, ExecError> {
        match state.len() {
            0 => Ok(0),
            8 => Ok(u64::from_le_bytes(state.try_into().map_err(|_| ExecError::Lifecycle("state".into()))?)),
            n => Err(ExecError::Lifecycle(format!("counter state must be 0 or 8 bytes, got {n}"))),
        }
    }

    fn step(&self, count: u64, budget: Microcents) -> (u64, Microcents, TickOutcome) {
        let cost = self.cost_per_tick.min(budget).max(Microcents::ZERO);
        let next = count.saturating_add(1);
        let outcome = if budget <= self.cost_per_tick {
            TickOutcome::BudgetExhausted
        } else {
            let more_work = self.more_work_every > 0 && next.is_multiple_of(self.more_work_every);
            TickOutcome::Completed { more_work }
        };
        (next, cost, outcome)
    }
}

impl Executor for CounterExecutor {
    type Instance = Counter;

    fn prepare(&mut self, wasm: &[u8], manifest: &[u8]) -> Result<Hash32, ExecError> {
        let text = std::str::from_utf8(manifest).map_err(|_| ExecError::Manifest("not UTF-8".into()))?;
        serde_json::from_str::<serde_json::Value>(text).map_err(|e| ExecError::Manifest(e.to_string()))?;
        if let Some(cap) = self.unsupported.iter().find(|c| text.contains(&format!("\"{c}\""))) {
            return Err(ExecError::Capability(format!("this node does not offer capability {cap:?}")));
        }
        let hash = Hash32::of(wasm);
        self.prepared.insert(hash);
        Ok(hash)
    }

    fn start(&mut self, wasm_hash: &Hash32, _manifest: &[u8], state: &[u8], _kv: &[u8]) -> Result<Counter, ExecError> {
        if !self.prepared.contains(wasm_hash) {
            return Err(ExecError::Lifecycle(format!("module {} not prepared", wasm_hash.short())));
        }
        Ok(Counter { wasm_hash: *wasm_hash, count: Self::parse_state(state)? })
    }

    fn tick(&mut self, instance: &mut Counter, inputs: &TickInputs) -> TickReport {
        let (next, cost, outcome) = self.step(instance.count, inputs.budget);
        instance.count = next;
        TickReport {
            outcome,
            fuel_used: 1,
            cost,
            paid: Microcents::ZERO,
            event_log: next.to_le_bytes().to_vec(),
            side_effects: 0,
        }
    }

    fn snapshot(&mut self, instance: &mut Counter) -> Result<(Vec<u8>, Vec<u8>), ExecError> {
        Ok((instance.count.to_le_bytes().to_vec(), Vec::new()))
    }

    fn replay(
        &mut self,
        _wasm_hash: &Hash32,
        _manifest: &[u8],
        state: &[u8],
        kv: &[u8],
        inputs: &TickInputs,
        _event_log: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, Microcents), ExecError> {
        let (next, cost, _) = self.step(Self::parse_state(state)?, inputs.budget);
        Ok((next.to_le_bytes().to_vec(), kv.to_vec(), cost))
    }
}
