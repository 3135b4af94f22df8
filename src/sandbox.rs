//! The wasmtime sandbox: one engine configuration (fuel, epoch interruption
//! as a wall-clock safety net only, NaN canonicalization, no threads, no
//! relaxed SIMD, a fixed wasm stack), a compiled-module cache keyed by the
//! wasm's SHA-256, the agent lifecycle of spec §1 and the metered tick of
//! spec §3. Implements [`Executor`]: the node drives it through that trait.
//!
//! Boundary: the sandbox never reads a clock, a disk or OS entropy; a tick
//! sees only its `TickInputs` and the instance's own state. The one
//! exception is [`WallClockNet`], a thread that advances the engine epoch,
//! which a real backend may start and a simulator never does.
//!
//! Tick atomicity: a tick that does not complete (trap, out of fuel, budget
//! crossed mid-run, wall clock) rolls back its kv writes and *poisons* the
//! instance: its linear memory may be half-updated, so `snapshot` refuses
//! and the node keeps the last committed state (the charge still stands).

use crate::checkpoint::{Hash32, MAX_STATE_BYTES};
use crate::eventlog::EventLog;
use crate::executor::{ExecError, Executor, ReplayedTick, TickInputs, TickOutcome, TickReport};
use crate::http::{HttpGateway, NoHttp};
use crate::kv::{Kv, KvLimits};
use crate::manifest::{CapabilitySet, Manifest};
use crate::membrane::{self, Diverged, Grants, HostState, LedgerPayments, PaymentGateway, TickCtx};
use crate::meter::{self, DEFAULT_LIFECYCLE_FUEL, DEFAULT_TICK_FUEL, MIN_TICK_FUEL};
use crate::units::Microcents;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Module, PoolingAllocationConfig, Store,
    StoreLimitsBuilder, Trap, TypedFunc,
};

mod replay;
mod restore;

use replay::unconsumed;
use restore::{lifecycle_call, restore};

/// Default per-agent memory cap (spec §3: 64 MiB = 1024 pages).
pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Fixed wasm stack: stack-overflow depth must not depend on the host's
/// defaults (it still depends on the architecture: see `meter::meter_id`).
pub const MAX_WASM_STACK: usize = 512 * 1024;
/// Default concurrent instances reserved by the pooling allocator.
pub const DEFAULT_MAX_INSTANCES: u32 = 64;
/// Period of the wall-clock net's epoch increments.
pub const WALL_CLOCK_PERIOD: Duration = Duration::from_millis(100);
/// Default wall-clock bound of one call, in epoch periods (15 s, the
/// original's timeout). Generous on purpose: fuel is the real bound.
pub const DEFAULT_WALL_CLOCK_EPOCHS: u64 = 150;
/// Required exports (spec §1). `malloc` is required only to resume from
/// non-empty state; `_initialize` is optional.
pub const REQUIRED_EXPORTS: [&str; 5] =
    ["agent_init", "agent_tick", "agent_checkpoint", "agent_checkpoint_ptr", "agent_resume"];

/// Node-level sandbox configuration.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Fuel limit of one tick.
    pub tick_fuel: u64,
    /// Fuel of instantiation and of each lifecycle export (never charged).
    pub lifecycle_fuel: u64,
    /// Memory cap per agent; a manifest may only lower it.
    pub max_memory_bytes: u64,
    /// `Some(n)`: pooling allocator with `n` instance slots; `None`: on demand.
    pub pooling_instances: Option<u32>,
    /// Wall-clock bound per call in [`WALL_CLOCK_PERIOD`]s (only if a
    /// [`WallClockNet`] runs).
    pub wall_clock_epochs: u64,
    pub kv_limits: KvLimits,
    /// Capabilities this node offers; a manifest asking for more is refused.
    pub offered: CapabilitySet,
    pub http: Arc<dyn HttpGateway>,
    pub payments: Arc<dyn PaymentGateway>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            tick_fuel: DEFAULT_TICK_FUEL,
            lifecycle_fuel: DEFAULT_LIFECYCLE_FUEL,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            pooling_instances: Some(DEFAULT_MAX_INSTANCES),
            wall_clock_epochs: DEFAULT_WALL_CLOCK_EPOCHS,
            kv_limits: KvLimits::default(),
            offered: CapabilitySet::all(),
            http: Arc::new(NoHttp),
            payments: Arc::new(LedgerPayments::default()),
        }
    }
}

/// The one wasmtime configuration, used for compiling and running alike
/// (a cached module always matches the engine that runs it).
pub fn engine_config(cfg: &SandboxConfig) -> Config {
    let mut c = Config::new();
    c.consume_fuel(true);
    // Safety net only: a Trap::Interrupt is a node fault, never billed.
    c.epoch_interruption(true);
    c.cranelift_nan_canonicalization(true);
    c.wasm_relaxed_simd(false);
    c.shared_memory(false);
    c.max_wasm_stack(MAX_WASM_STACK);
    if let Some(n) = cfg.pooling_instances {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(n);
        pool.total_memories(n);
        pool.total_tables(n);
        pool.max_memory_size(cfg.max_memory_bytes as usize);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

fn invalid(e: impl std::fmt::Display) -> ExecError {
    ExecError::InvalidModule(e.to_string())
}

/// Turn `.wat` text into a wasm binary; binaries pass through.
pub fn wasm_binary(bytes: &[u8]) -> Result<Vec<u8>, ExecError> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes.to_vec());
    }
    wat::parse_bytes(bytes).map(|b| b.into_owned()).map_err(|e| invalid(format!("not wasm, and not valid wat: {e}")))
}

fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ExecError> {
    // No manifest at all grants nothing (deny by default); a manifest that
    // is present must parse.
    if bytes.is_empty() {
        Ok(Manifest::none())
    } else {
        Manifest::parse(bytes).map_err(|e| ExecError::Manifest(e.to_string()))
    }
}

/// Which `agent_tick` shape the module exports.
#[derive(Clone)]
enum TickFn {
    Hint(TypedFunc<(), i32>),
    Plain(TypedFunc<(), ()>),
}

/// A live agent: store, instance exports, and whether a failed tick left
/// its memory unusable.
pub struct Instance {
    store: Store<HostState>,
    tick_fn: TickFn,
    checkpoint_fn: TypedFunc<(), i32>,
    checkpoint_ptr_fn: TypedFunc<(), i32>,
    wasm_hash: Hash32,
    /// The manifest it was started with (to restart it from a snapshot).
    manifest: Vec<u8>,
    poisoned: Option<String>,
    logs: Vec<String>,
    logs_dropped: u64,
}

impl Instance {
    pub fn wasm_hash(&self) -> Hash32 {
        self.wasm_hash
    }
    /// Why this instance may no longer tick or be snapshotted, if it may not.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }
    /// Current linear memory size in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.map_or(0, |m| m.data_size(&self.store))
    }
    /// Log lines of the last tick (and how many were dropped over the cap).
    pub fn take_logs(&mut self) -> (Vec<String>, u64) {
        (std::mem::take(&mut self.logs), std::mem::take(&mut self.logs_dropped))
    }
    pub fn kv(&self) -> &Kv {
        &self.store.data().kv
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("wasm_hash", &self.wasm_hash)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

/// The full result of a tick, including what a replay needs to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayResult {
    pub outcome: TickOutcome,
    pub fuel_used: u64,
    pub cost: Microcents,
    pub paid: Microcents,
    pub state: Vec<u8>,
    pub kv: Vec<u8>,
}

/// The wasmtime sandbox. One per node.
pub struct Sandbox {
    engine: Engine,
    cfg: SandboxConfig,
    modules: BTreeMap<Hash32, Module>,
    linkers: BTreeMap<CapabilitySet, wasmtime::Linker<HostState>>,
    pres: BTreeMap<(Hash32, CapabilitySet), InstancePre<HostState>>,
}

impl Sandbox {
    pub fn new(cfg: SandboxConfig) -> Result<Sandbox, ExecError> {
        let engine =
            Engine::new(&engine_config(&cfg)).map_err(|e| ExecError::Lifecycle(format!("wasmtime engine: {e}")))?;
        Ok(Sandbox { engine, cfg, modules: BTreeMap::new(), linkers: BTreeMap::new(), pres: BTreeMap::new() })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    /// `meter::meter_id` of this sandbox (goes into receipts).
    pub fn meter_id(&self) -> [u8; 32] {
        meter::meter_id(MAX_WASM_STACK)
    }

    /// Compile (once per hash) and check exports; returns the module.
    fn compile(&mut self, wasm: &[u8]) -> Result<(Hash32, Module), ExecError> {
        let binary = wasm_binary(wasm)?;
        let hash = Hash32::of(&binary);
        if let Some(m) = self.modules.get(&hash) {
            return Ok((hash, m.clone()));
        }
        let module = Module::new(&self.engine, &binary).map_err(|e| invalid(format!("compile: {e}")))?;
        check_exports(&module)?;
        self.modules.insert(hash, module.clone());
        Ok((hash, module))
    }

    fn instance_pre(&mut self, hash: &Hash32, manifest: &Manifest) -> Result<InstancePre<HostState>, ExecError> {
        let caps = manifest.capability_set();
        if let Some(pre) = self.pres.get(&(*hash, caps)) {
            return Ok(pre.clone());
        }
        let module = self
            .modules
            .get(hash)
            .ok_or_else(|| ExecError::Lifecycle(format!("module {} is not prepared", hash.short())))?;
        membrane::check_imports(module, caps, self.cfg.offered).map_err(|e| ExecError::Capability(e.to_string()))?;
        if !self.linkers.contains_key(&caps) {
            let l = membrane::linker(&self.engine, caps).map_err(|e| ExecError::Lifecycle(format!("linker: {e}")))?;
            self.linkers.insert(caps, l);
        }
        let pre = self.linkers[&caps].instantiate_pre(module).map_err(|e| ExecError::Capability(format!("{e:#}")))?;
        self.pres.insert((*hash, caps), pre.clone());
        Ok(pre)
    }

    fn memory_cap(&self, manifest: &Manifest) -> Result<u64, ExecError> {
        match manifest.max_memory_bytes {
            Some(m) if m > self.cfg.max_memory_bytes => Err(ExecError::Manifest(format!(
                "resource_limits.max_memory_bytes {m} exceeds this node's cap {}",
                self.cfg.max_memory_bytes
            ))),
            Some(m) => Ok(m),
            None => Ok(self.cfg.max_memory_bytes),
        }
    }

    fn new_store(&self, manifest: Manifest, kv: Kv, cap: u64) -> Result<Store<HostState>, ExecError> {
        let limits = StoreLimitsBuilder::new().memory_size(cap as usize).instances(1).memories(1).tables(4).build();
        let grants = Arc::new(Grants { manifest, http: self.cfg.http.clone(), payments: self.cfg.payments.clone() });
        let mut store = Store::new(&self.engine, HostState { limits, grants, kv, memory: None, tick: None });
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.cfg.wall_clock_epochs);
        store.set_fuel(self.cfg.lifecycle_fuel).map_err(|e| ExecError::Lifecycle(e.to_string()))?;
        Ok(store)
    }

    /// Instantiate and run the lifecycle up to the first tick (spec §1).
    pub fn start_instance(
        &mut self,
        hash: &Hash32,
        manifest_bytes: &[u8],
        state: &[u8],
        kv: &[u8],
    ) -> Result<Instance, ExecError> {
        let manifest = parse_manifest(manifest_bytes)?;
        let cap = self.memory_cap(&manifest)?;
        let limits = manifest.kv.as_ref().map_or(self.cfg.kv_limits, |o| self.cfg.kv_limits.lowered_by(o));
        let kv = Kv::decode(kv, limits).map_err(|e| ExecError::Lifecycle(e.to_string()))?;
        let pre = self.instance_pre(hash, &manifest)?;
        let mut store = self.new_store(manifest, kv, cap)?;
        // Instantiation fuel is platform dependent (wasmtime #14331): given
        // generously here and discarded by the fuel reset of each call.
        let instance = pre.instantiate(&mut store).map_err(|e| {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                // The node is full: its fault, not the agent's.
                ExecError::Lifecycle(format!("instantiate: node at capacity: {e}"))
            } else {
                invalid(format!("instantiate: {e:#}"))
            }
        })?;
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let typed = |store: &mut Store<HostState>, name: &str| {
            instance.get_typed_func::<(), i32>(store, name).map_err(|e| invalid(format!("export `{name}`: {e}")))
        };
        let checkpoint_fn = typed(&mut store, "agent_checkpoint")?;
        let checkpoint_ptr_fn = typed(&mut store, "agent_checkpoint_ptr")?;
        let tick_fn = match instance.get_typed_func::<(), i32>(&mut store, "agent_tick") {
            Ok(f) => TickFn::Hint(f),
            Err(_) => TickFn::Plain(
                instance
                    .get_typed_func::<(), ()>(&mut store, "agent_tick")
                    .map_err(|e| invalid(format!("export `agent_tick`: {e}")))?,
            ),
        };
        let fuel = self.cfg.lifecycle_fuel;
        if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            lifecycle_call(&mut store, fuel, "_initialize", |s| f.call(s, ()))?;
        }
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "agent_init")
            .map_err(|e| invalid(format!("export `agent_init`: {e}")))?;
        lifecycle_call(&mut store, fuel, "agent_init", |s| init.call(s, ()))?;
        if !state.is_empty() {
            restore(&mut store, &instance, fuel, state)?;
        }
        Ok(Instance {
            store,
            tick_fn,
            checkpoint_fn,
            checkpoint_ptr_fn,
            wasm_hash: *hash,
            manifest: manifest_bytes.to_vec(),
            poisoned: None,
            logs: Vec::new(),
            logs_dropped: 0,
        })
    }

    /// One live tick; invalid inputs (negative budget or price, the only
    /// errors a live tick can have) end it as a trap that charges nothing.
    fn tick_once(&self, instance: &mut Instance, inputs: &TickInputs) -> TickReport {
        match self.run_tick(instance, inputs, None) {
            Ok(r) => r,
            Err(e) => TickReport {
                outcome: TickOutcome::Trapped { message: e.to_string() },
                fuel_used: 0,
                cost: Microcents::ZERO,
                paid: Microcents::ZERO,
                event_log: EventLog::new(inputs.tick).encode(),
                side_effects: 0,
            },
        }
    }

    /// Run one tick, live (`recorded = None`) or against a recorded log
    /// (its encoded bytes). The replayed guest must consume the log
    /// exactly: a missing, extra or reordered entry is a divergence naming
    /// the tick and the entry index.
    fn run_tick(
        &self,
        inst: &mut Instance,
        inputs: &TickInputs,
        recorded: Option<&[u8]>,
    ) -> Result<TickReport, ExecError> {
        let report = |outcome, fuel_used, cost, paid, event_log: Vec<u8>, side_effects| TickReport {
            outcome,
            fuel_used,
            cost,
            paid,
            event_log,
            side_effects,
        };
        if let Some(why) = &inst.poisoned {
            let msg = format!("instance unusable after an earlier tick: {why}");
            return Ok(report(
                TickOutcome::Trapped { message: msg },
                0,
                Microcents::ZERO,
                Microcents::ZERO,
                Vec::new(),
                0,
            ));
        }
        let bad_inputs = |e: meter::MeterError| ExecError::Lifecycle(format!("tick {}: {e}", inputs.tick));
        if inputs.budget.0 == 0 {
            let log = EventLog::new(inputs.tick).encode();
            return Ok(report(TickOutcome::BudgetExhausted, 0, Microcents::ZERO, Microcents::ZERO, log, 0));
        }
        let affordable = meter::affordable_fuel(inputs.budget, inputs.price_per_second).map_err(bad_inputs)?;
        let fuel_limit = self.cfg.tick_fuel.min(affordable);
        let budget_bound = fuel_limit < self.cfg.tick_fuel;
        let store = &mut inst.store;
        store.set_fuel(fuel_limit).map_err(|e| ExecError::Lifecycle(e.to_string()))?;
        store.set_epoch_deadline(self.cfg.wall_clock_epochs);
        let entries = match recorded {
            None => None,
            Some(bytes) => {
                let r =
                    EventLog::decode(bytes).map_err(|e| ExecError::Divergence(format!("tick {}: {e}", inputs.tick)))?;
                if r.tick != inputs.tick {
                    let msg = format!("log is for tick {}, replaying tick {}", r.tick, inputs.tick);
                    return Err(ExecError::Divergence(msg));
                }
                Some(r.entries)
            }
        };
        store.data_mut().tick = Some(TickCtx::new(inputs, fuel_limit, entries));
        let result = match &inst.tick_fn {
            TickFn::Hint(f) => f.call(&mut *store, ()).map(|v| v != 0),
            TickFn::Plain(f) => f.call(&mut *store, ()).map(|()| false),
        };
        let fuel_used = fuel_limit - store.get_fuel().unwrap_or(0);
        let ctx = store.data_mut().tick.take().expect("tick context set above");
        if let Some(d) = ctx.divergence {
            return Err(ExecError::Divergence(d));
        }
        if let Err(e) = &result
            && let Some(d) = e.downcast_ref::<Diverged>()
        {
            return Err(ExecError::Divergence(d.0.clone()));
        }
        if let Some(bytes) = recorded
            && ctx.unconsumed() > 0
        {
            return Err(unconsumed(inputs, bytes, ctx.log.entries.len()));
        }
        let completed = result.is_ok();
        let mut outcome = match result {
            Ok(more_work) => TickOutcome::Completed { more_work },
            Err(e) => match e.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => TickOutcome::OutOfFuel,
                Some(Trap::Interrupt) => TickOutcome::WallClockTimeout,
                Some(t) => TickOutcome::Trapped { message: t.to_string() },
                None => TickOutcome::Trapped { message: e.root_cause().to_string() },
            },
        };
        // OutOfFuel bills the whole tick fuel; everything else what it burnt
        // (at least the minimum). A wall-clock interrupt is the node's fault.
        let billable = match outcome {
            TickOutcome::OutOfFuel => fuel_limit,
            TickOutcome::WallClockTimeout => 0,
            _ => fuel_used.max(MIN_TICK_FUEL),
        };
        let bill = meter::bill(billable, inputs.price_per_second, inputs.budget, ctx.paid).map_err(bad_inputs)?;
        // Spec §3: a tick cut by the budget is charged exactly what is left,
        // even when that is less than one fuel's worth or the fuel it could
        // buy rounds below the remainder (nothing may be stranded).
        let cut_by_budget = matches!(outcome, TickOutcome::OutOfFuel) && (budget_bound || bill.exhausted);
        let remainder = Microcents(inputs.budget.0.saturating_sub(ctx.paid.0).max(0));
        let cost = if cut_by_budget {
            remainder
        } else if billable == 0 {
            Microcents::ZERO
        } else {
            bill.cost
        };
        match outcome {
            TickOutcome::OutOfFuel if cut_by_budget => outcome = TickOutcome::BudgetExhausted,
            TickOutcome::Completed { .. } if bill.exhausted => outcome = TickOutcome::BudgetExhausted,
            _ => {}
        }
        // A tick that did not run to its end leaves no trace in the agent's
        // own state: kv writes are undone and the instance is poisoned.
        if !completed {
            membrane::roll_back_kv(&mut store.data_mut().kv, ctx.kv_undo);
            inst.poisoned = Some(format!("tick {} ended {:?}", inputs.tick, outcome));
        }
        inst.logs = ctx.logs;
        inst.logs_dropped = ctx.logs_dropped;
        debug_assert!(cost.0 + ctx.paid.0 <= inputs.budget.0, "cost + paid never exceed the budget");
        Ok(report(outcome, fuel_used, cost, ctx.paid, ctx.log.encode(), ctx.side_effects))
    }
}

impl Executor for Sandbox {
    type Instance = Instance;

    fn prepare(&mut self, wasm: &[u8], manifest: &[u8]) -> Result<Hash32, ExecError> {
        let m = parse_manifest(manifest)?;
        self.memory_cap(&m)?;
        let (hash, _) = self.compile(wasm)?;
        self.instance_pre(&hash, &m)?;
        Ok(hash)
    }

    fn start(&mut self, wasm_hash: &Hash32, manifest: &[u8], state: &[u8], kv: &[u8]) -> Result<Instance, ExecError> {
        self.start_instance(wasm_hash, manifest, state, kv)
    }

    fn tick(&mut self, instance: &mut Instance, inputs: &TickInputs) -> TickReport {
        // A tick the budget may cut (it cannot buy a whole tick's fuel)
        // starts from a snapshot: a cut tick leaves no trace in the agent's
        // state (its replay keeps the state too, see `replay_tick`), so the
        // instance restarts from the state before it and the final
        // checkpoint of spec §3 can be written. At most a few ticks per
        // agent life are budget-bound.
        let before = if self.may_be_cut(instance, inputs) { self.snapshot_instance(instance).ok() } else { None };
        let report = self.tick_once(instance, inputs);
        if report.outcome == TickOutcome::BudgetExhausted
            && instance.poisoned.is_some()
            && let Some((state, kv)) = before
        {
            // On failure the instance stays poisoned: the node then halts
            // without a final checkpoint and says why.
            if let Ok(fresh) = self.start_instance(&instance.wasm_hash, &instance.manifest, &state, &kv) {
                *instance = fresh;
            }
        }
        report
    }

    fn snapshot(&mut self, instance: &mut Instance) -> Result<(Vec<u8>, Vec<u8>), ExecError> {
        self.snapshot_instance(instance)
    }

    fn replay(
        &mut self,
        wasm_hash: &Hash32,
        manifest: &[u8],
        state: &[u8],
        kv: &[u8],
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>, Microcents), ExecError> {
        let r = self.replay_tick(wasm_hash, manifest, state, kv, inputs, event_log)?;
        Ok((r.state, r.kv, r.cost))
    }

    fn replay_in(
        &mut self,
        _wasm_hash: &Hash32,
        _manifest: &[u8],
        instance: &mut Instance,
        inputs: &TickInputs,
        event_log: &[u8],
    ) -> Result<ReplayedTick, ExecError> {
        self.replay_in_instance(instance, inputs, event_log)
    }
}

/// Every required export present (spec §1: a missing export is a load error naming it).
fn check_exports(module: &Module) -> Result<(), ExecError> {
    for name in REQUIRED_EXPORTS {
        match module.get_export(name) {
            Some(wasmtime::ExternType::Func(_)) => {}
            Some(_) => return Err(invalid(format!("export `{name}` is not a function"))),
            None => return Err(invalid(format!("missing export `{name}`"))),
        }
    }
    Ok(())
}

/// The wall-clock safety net lives with the other world-touching backends.
pub use crate::env::real::WallClockNet;
