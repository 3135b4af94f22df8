//! The sandbox's replay side: snapshots of a running instance and the
//! re-run of a recorded tick, on a fresh instance ([`Sandbox::replay_tick`])
//! or in a running one ([`Sandbox::replay_in_instance`], the audit's path).
//! A replayed tick answers every hostcall from the recorded event log and
//! fails as a divergence when the guest asks for anything else (CM-4).

use super::*;
impl Sandbox {
    /// State bytes (`agent_checkpoint` / `agent_checkpoint_ptr`) and kv
    /// snapshot. A lying size or pointer is a lifecycle error, never a panic
    /// or a huge allocation.
    pub fn snapshot_instance(&self, inst: &mut Instance) -> Result<(Vec<u8>, Vec<u8>), ExecError> {
        if let Some(why) = &inst.poisoned {
            return Err(ExecError::Lifecycle(format!("cannot snapshot: instance unusable after {why}")));
        }
        let fuel = self.cfg.lifecycle_fuel;
        let (size_fn, ptr_fn) = (inst.checkpoint_fn.clone(), inst.checkpoint_ptr_fn.clone());
        let size = lifecycle_call(&mut inst.store, fuel, "agent_checkpoint", |s| size_fn.call(s, ()))?;
        let ptr = lifecycle_call(&mut inst.store, fuel, "agent_checkpoint_ptr", |s| ptr_fn.call(s, ()))?;
        let mem_len = inst.memory_bytes();
        let lie = |why: String| ExecError::Lifecycle(format!("agent_checkpoint: {why}"));
        let size = usize::try_from(size).map_err(|_| lie(format!("negative size {size}")))?;
        if size > MAX_STATE_BYTES {
            return Err(lie(format!("claims {size} bytes of state (limit {MAX_STATE_BYTES})")));
        }
        let start = ptr as u32 as usize;
        let state = match inst.store.data().memory {
            Some(m) => m.data(&inst.store).get(start..start + size).map(<[u8]>::to_vec),
            None if size == 0 => Some(Vec::new()),
            None => None,
        };
        let state = state.ok_or_else(|| {
            lie(format!("claims {size} bytes at {start:#x}, beyond linear memory of {mem_len} bytes"))
        })?;
        Ok((state, inst.store.data().kv.encode()))
    }

    /// Re-run one tick from (`state`, `kv`) against its recorded event log.
    /// Every hostcall result (clock, rand, log, wallet, price, http, pay,
    /// kv) comes from the log alone, in order; `inputs` only bound the fuel
    /// and price the bill (CM-4: a replay against a host that would answer
    /// differently reproduces the tick). The replayed guest must consume
    /// the log exactly: a missing, extra or reordered entry is a divergence
    /// naming the tick and the entry index. A tick that did not complete
    /// leaves (`state`, `kv`) as they were.
    pub fn replay_tick(
        &mut self,
        wasm_hash: &Hash32,
        manifest: &[u8],
        state: &[u8],
        kv: &[u8],
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<ReplayResult, ExecError> {
        EventLog::decode(event_log).map_err(|e| ExecError::Divergence(format!("tick {}: {e}", inputs.tick)))?;
        let mut inst = self.start_instance(wasm_hash, manifest, state, kv)?;
        let report = self.run_tick(&mut inst, inputs, Some(event_log))?;
        let (state, kv) = match inst.poisoned {
            Some(_) => (state.to_vec(), kv.to_vec()),
            None => self.snapshot_instance(&mut inst)?,
        };
        Ok(ReplayResult {
            outcome: report.outcome,
            fuel_used: report.fuel_used,
            cost: report.cost,
            paid: report.paid,
            state,
            kv,
        })
    }
}

impl Sandbox {
    /// [`Executor::replay_in`] on a running instance: the recorded tick
    /// runs in `inst` itself (no instantiation, no state copy), so a chain
    /// replays at about the live cost per tick. A tick the budget may cut
    /// starts from a snapshot, exactly as the live [`Executor::tick`] does,
    /// so the instance ends where the live one did.
    pub fn replay_in_instance(
        &mut self,
        inst: &mut Instance,
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<ReplayedTick, ExecError> {
        let before = if self.may_be_cut(inst, inputs) { Some(self.snapshot_instance(inst)?) } else { None };
        let report = self.run_tick(inst, inputs, Some(event_log))?;
        if report.outcome == TickOutcome::BudgetExhausted
            && inst.poisoned.is_some()
            && let Some((state, kv)) = before
        {
            let (hash, manifest) = (inst.wasm_hash, inst.manifest.clone());
            *inst = self.start_instance(&hash, &manifest, &state, &kv)?;
        }
        Ok(ReplayedTick { outcome: report.outcome, cost: report.cost, paid: report.paid })
    }

    /// A tick the budget may cut: it cannot buy a whole tick's fuel.
    pub(super) fn may_be_cut(&self, inst: &Instance, inputs: &TickInputs) -> bool {
        inst.poisoned.is_none()
            && meter::affordable_fuel(inputs.budget, inputs.price_per_second).is_ok_and(|f| f < self.cfg.tick_fuel)
    }
}

/// The divergence of a replayed guest that made fewer hostcalls than its
/// log records: names the tick and the first entry it left unread.
pub(super) fn unconsumed(inputs: &TickInputs, recorded: &[u8], used: usize) -> ExecError {
    let entries = EventLog::decode(recorded).map(|l| l.entries).unwrap_or_default();
    let name = entries.get(used).and_then(|e| membrane::Hostcall::from_id(e.id)).map_or("?", membrane::Hostcall::name);
    ExecError::Divergence(format!(
        "tick {}: entry {used} ({name}): recorded, but the guest made only {used} of the log's {} hostcalls",
        inputs.tick,
        entries.len()
    ))
}
