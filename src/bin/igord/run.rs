//! `igord run` and `igord resume`: run one agent locally on the real
//! backend (filesystem, system clock, OS entropy, wall-clock net), commit a
//! checkpoint every `--checkpoint-ms`, on budget exhaustion, on an agent
//! fault and on Ctrl-C. The sandbox, lineage and kv sealing live in the
//! library; this file only wires them to the world and prints.
//!
//! Exit codes: 0 the run ended normally (tick limit, Ctrl-C, budget
//! exhausted), 1 the agent could not be loaded or faulted, 2 I/O error.

use anyhow::{Context, bail};
use clap::Args;
use igor::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use igor::env::real::{FsDisk, OsEntropy, SystemClock};
use igor::env::{Clock, Entropy};
use igor::executor::{Executor, TickEnd, TickInputs, settle};
use igor::identity::Keypair;
use igor::kv;
use igor::lineage::{self, Lineage};
use igor::manifest::{Capability, Manifest};
use igor::receipt::ReceiptBody;
use igor::replay::LoggedTick;
use igor::sandbox::{Instance, Sandbox, SandboxConfig, WallClockNet, wasm_binary};
use igor::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Receipts an agent holds at once (oldest dropped first): they are handed
/// to every tick, so the list stays short.
const MAX_HELD_RECEIPTS: usize = 16;
/// How often the wait between ticks looks at the Ctrl-C flag.
const POLL: Duration = Duration::from_millis(10);

/// Options shared by run and resume: pacing, limits, output.
#[derive(Args, Clone)]
pub struct LoopArgs {
    /// Stop after this many ticks (default: until Ctrl-C or budget exhausted).
    #[arg(long)]
    pub ticks: Option<u64>,
    /// Manifest file (default: `<agent>.manifest.json` beside the module, if present).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Print every tick's outcome, fuel and cost, and the agent's log lines.
    #[arg(short, long)]
    pub verbose: bool,
    /// Milliseconds between ticks (spec: 1 Hz).
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// Milliseconds to the next tick when `agent_tick` reports more work.
    #[arg(long, default_value_t = 10)]
    pub fast_tick_ms: u64,
    /// Milliseconds between periodic checkpoints.
    #[arg(long, default_value_t = 5000)]
    pub checkpoint_ms: u64,
    /// Fuel limit of one tick.
    #[arg(long, default_value_t = igor::meter::DEFAULT_TICK_FUEL)]
    pub tick_fuel: u64,
}

#[derive(Args)]
pub struct RunArgs {
    /// The agent module: a .wasm binary or .wat text.
    pub wasm: PathBuf,
    /// Starting budget in currency units (decimals allowed, 1 unit = 1,000,000 microcents).
    #[arg(long, default_value = "1")]
    pub budget: String,
    /// Price per second of reference-core time, in microcents.
    #[arg(long, default_value_t = 1_000_000)]
    pub price: i64,
    /// Data directory: history/, agents/ (keys), kv/.
    #[arg(long, default_value = "igor-data")]
    pub checkpoint_dir: PathBuf,
    /// Agent id (default: the module's file stem).
    #[arg(long)]
    pub agent: Option<String>,
    #[command(flatten)]
    pub opts: LoopArgs,
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The checkpoint to resume from; must be the head of the agent's history.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The agent module the checkpoint names (its SHA-256 is checked).
    #[arg(long)]
    pub wasm: PathBuf,
    /// Data directory (default: derived from `<dir>/history/<agent>/<tick>.ckpt`).
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    #[command(flatten)]
    pub opts: LoopArgs,
}

/// Parse "1", "0.25" or "12.000001" units into microcents, exactly.
pub(crate) fn parse_units(s: &str) -> anyhow::Result<Microcents> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let bad = || anyhow::anyhow!("--budget {s:?}: expected units with at most 6 decimals, e.g. 1 or 0.5");
    if whole.is_empty() && frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let frac: i64 = if frac.is_empty() { 0 } else { format!("{frac:0<6}").parse().map_err(|_| bad())? };
    let m = Microcents::from_units(whole).map_err(|e| anyhow::anyhow!("--budget: {e}"))?;
    let total = m.checked_add(Microcents(frac)).map_err(|e| anyhow::anyhow!("--budget: {e}"))?;
    if total.0 <= 0 {
        bail!("--budget must be positive");
    }
    Ok(total)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The manifest bytes: `--manifest`, else `<stem>.manifest.json` beside
/// the module, else none (deny by default). Parse errors stop the run.
pub(crate) fn manifest_bytes(wasm: &Path, explicit: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    let beside = wasm.with_extension("manifest.json");
    let bytes = match explicit {
        Some(p) => read(p)?,
        None if beside.exists() => read(&beside)?,
        None => return Ok(Vec::new()),
    };
    Ok(bytes)
}

/// One agent running on this machine.
struct Session {
    disk: FsDisk,
    agent: AgentId,
    key: Keypair,
    node: NodeId,
    node_key: Keypair,
    sandbox: Sandbox,
    _net: WallClockNet,
    wasm_hash: Hash32,
    inst: Instance,
    lineage: Lineage,
    epoch: Epoch,
    price: Microcents,
    budget: Microcents,
    tick: TickNumber,
    /// State and kv after the last completed tick (what a checkpoint saves).
    good: (Vec<u8>, Vec<u8>),
    receipts: Vec<Vec<u8>>,
    /// Ticks and cost since the last checkpoint (for its receipt).
    since: Option<TickNumber>,
    since_cost: Microcents,
    /// The ticks since the head, for the next link's observation log.
    ticks: Vec<LoggedTick>,
    ticks_run: u64,
    total_cost: Microcents,
    total_paid: Microcents,
    start_budget: Microcents,
    verbose: bool,
}

enum Stop {
    TickLimit,
    Interrupted,
    BudgetExhausted,
    Fault(String),
}

/// Where a session starts in the agent's life: genesis for `run`, the head
/// checkpoint for `resume`. Everything else a session holds is the same.
struct Position {
    epoch: Epoch,
    price: Microcents,
    budget: Microcents,
    tick: TickNumber,
    /// State and kv at that position.
    good: (Vec<u8>, Vec<u8>),
}

/// The pieces of a session that `run` and `resume` build differently.
struct Parts {
    disk: FsDisk,
    agent: AgentId,
    key: Keypair,
    sandbox: Sandbox,
    inst: Instance,
    lineage: Lineage,
    wasm_hash: Hash32,
    verbose: bool,
}

impl Session {
    /// Load the node identity, start the wall-clock net and assemble a
    /// session with zeroed counters at `at`.
    fn open(parts: Parts, at: Position) -> anyhow::Result<Session> {
        let (node, node_key) = node_identity(&parts.disk)?;
        let net = WallClockNet::start(parts.sandbox.engine().clone());
        Ok(Session {
            disk: parts.disk,
            agent: parts.agent,
            key: parts.key,
            node,
            node_key,
            sandbox: parts.sandbox,
            _net: net,
            wasm_hash: parts.wasm_hash,
            inst: parts.inst,
            lineage: parts.lineage,
            epoch: at.epoch,
            price: at.price,
            budget: at.budget,
            tick: at.tick,
            good: at.good,
            receipts: Vec::new(),
            since: None,
            since_cost: Microcents::ZERO,
            ticks: Vec::new(),
            ticks_run: 0,
            total_cost: Microcents::ZERO,
            total_paid: Microcents::ZERO,
            start_budget: at.budget,
            verbose: parts.verbose,
        })
    }
}

impl Session {
    /// Sign and archive a checkpoint of the last good state at the current
    /// tick (kv sealed first, so a checkpoint never lacks its kv), then
    /// issue a receipt for the ticks it covers.
    fn commit(&mut self) -> anyhow::Result<()> {
        if self.lineage.head().is_some_and(|h| h.tick >= self.tick) {
            return Ok(());
        }
        let (state, kv_bytes) = self.good.clone();
        let body = CheckpointBody {
            budget: self.budget,
            price_per_second: self.price,
            tick: self.tick,
            wasm_hash: self.wasm_hash,
            epoch: self.epoch,
            lease_expiry_ns: 0,
            prev_hash: Hash32::ZERO,
            state,
        };
        // The node's commit path: kv sealed, the observation log of the
        // ticks since the head, then the checkpoint (so `igord audit`
        // replays a local run like a node's history).
        self.lineage.commit_link(&self.disk, body, &kv_bytes, &self.ticks, &self.key)?;
        self.ticks.clear();
        if let Some(first) = self.since.take() {
            let receipt = ReceiptBody {
                agent: self.agent.clone(),
                node: self.node.clone(),
                epoch: self.epoch,
                first_tick: first,
                last_tick: self.tick,
                cost: self.since_cost,
                budget_after: self.budget,
                meter_id: self.sandbox.meter_id(),
            }
            .sign(&self.node_key);
            self.receipts.push(receipt.encode());
            if self.receipts.len() > MAX_HELD_RECEIPTS {
                self.receipts.remove(0);
            }
            self.since_cost = Microcents::ZERO;
        }
        if self.verbose {
            println!("checkpoint: tick {} committed ({})", self.tick, lineage::history_path(&self.agent, self.tick));
        }
        Ok(())
    }

    /// Run one tick; `Ok(Some(stop))` ends the loop.
    fn step(&mut self, clock: &SystemClock) -> anyhow::Result<(Option<Stop>, bool)> {
        let tick = TickNumber(self.tick.0 + 1);
        let mut seed = [0u8; 32];
        OsEntropy.fill(&mut seed);
        let inputs = TickInputs {
            tick,
            now_unix_ns: clock.unix_ns(),
            rand_seed: seed,
            budget: self.budget,
            price_per_second: self.price,
            side_effects_allowed: true,
            receipts: self.receipts.clone(),
        };
        let r = self.sandbox.tick(&mut self.inst, &inputs);
        // The node's rules: one settlement (RE-3/RE-4) and one meaning per
        // outcome. A failed tick is never committed: budget, tick and log
        // stay at the last completed tick, which the final commit keeps.
        let settled = settle(self.budget, r.cost, r.paid);
        let end = r.outcome.end(tick, settled.left);
        if self.verbose {
            println!(
                "tick {tick}: {:?}, fuel {}, cost {}, paid {}, budget {}",
                r.outcome, r.fuel_used, settled.cost, settled.paid, settled.left
            );
            let (lines, dropped) = self.inst.take_logs();
            for l in lines {
                println!("  log: {l}");
            }
            if dropped > 0 {
                println!("  log: {dropped} messages dropped (per-tick cap)");
            }
        }
        let more_work = match end {
            TickEnd::Fault(why) => return Ok((Some(Stop::Fault(why)), false)),
            TickEnd::Go { more_work } => more_work,
            TickEnd::Exhausted => false,
        };
        // The tick counts only once its state is taken (an exhausted tick
        // restarts from the state before it, so its instance can be
        // snapshotted too): a state that cannot be taken makes the tick a
        // fault, and nothing of it (tick, budget, log) is committed.
        let good = match self.sandbox.snapshot(&mut self.inst) {
            Ok(s) => s,
            Err(e) => return Ok((Some(Stop::Fault(format!("tick {tick}: {e}"))), false)),
        };
        self.good = good;
        self.tick = tick;
        self.ticks_run += 1;
        self.since.get_or_insert(tick);
        self.budget = settled.left;
        self.since_cost = self.since_cost.checked_add(settled.cost)?;
        self.total_cost = self.total_cost.checked_add(settled.cost)?;
        self.total_paid = self.total_paid.checked_add(settled.paid)?;
        self.ticks.push(LoggedTick { inputs, event_log: r.event_log });
        if end == TickEnd::Exhausted {
            return Ok((Some(Stop::BudgetExhausted), false));
        }
        Ok((None, more_work))
    }

    fn run_loop(&mut self, opts: &LoopArgs, stop_flag: &AtomicBool) -> anyhow::Result<Stop> {
        let clock = SystemClock::default();
        let mut last_ckpt = clock.mono_ns();
        let mut delay_ms = 0;
        loop {
            let wake = clock.mono_ns() + delay_ms * 1_000_000;
            while clock.mono_ns() < wake && !stop_flag.load(Ordering::SeqCst) {
                std::thread::sleep(POLL.min(Duration::from_nanos(wake.saturating_sub(clock.mono_ns()))));
            }
            if stop_flag.load(Ordering::SeqCst) {
                return Ok(Stop::Interrupted);
            }
            if opts.ticks.is_some_and(|n| self.ticks_run >= n) {
                return Ok(Stop::TickLimit);
            }
            let (stop, more_work) = self.step(&clock)?;
            if let Some(stop) = stop {
                return Ok(stop);
            }
            // Like the node: a link holds at most MAX_TICKS_PER_CHECKPOINT
            // ticks (the observation log's bound, which the audit enforces),
            // whatever the interval.
            let full = self.ticks.len() as u64 >= igor::node::MAX_TICKS_PER_CHECKPOINT;
            if full || clock.mono_ns() - last_ckpt >= opts.checkpoint_ms * 1_000_000 {
                self.commit()?;
                last_ckpt = clock.mono_ns();
            }
            delay_ms = if more_work { opts.fast_tick_ms } else { opts.tick_ms };
        }
    }

    fn finish(mut self, opts: &LoopArgs, stop_flag: &AtomicBool) -> anyhow::Result<i32> {
        let stop = self.run_loop(opts, stop_flag)?;
        // Every way out commits a final checkpoint (spec §3, issue 3 §7).
        self.commit()?;
        let (reason, code) = match &stop {
            Stop::TickLimit => ("tick limit reached".to_string(), 0),
            Stop::Interrupted => ("interrupted (Ctrl-C)".to_string(), 0),
            Stop::BudgetExhausted => ("budget exhausted".to_string(), 0),
            Stop::Fault(m) => (format!("agent fault: {m}"), 1),
        };
        let head = self.lineage.head().map_or(0, |h| h.tick.0);
        println!("stopped: {reason}");
        println!(
            "summary: {} ticks run, last committed tick {head}, cost {}, paid {}, budget left {} (start {} = left + cost + paid)",
            self.ticks_run, self.total_cost, self.total_paid, self.budget, self.start_budget
        );
        debug_assert_eq!(
            self.start_budget.0,
            self.budget.0 + self.total_cost.0 + self.total_paid.0,
            "RE-3: budget conserved"
        );
        if code != 0 {
            eprintln!("igord: {reason}");
        }
        Ok(code)
    }
}

/// Ctrl-C sets a flag; the tick loop commits and exits at its next look.
fn ctrl_c_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || f.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    Ok(flag)
}

fn sandbox(opts: &LoopArgs) -> anyhow::Result<Sandbox> {
    // The real http backend: `http_request` reaches the network (the simulator keeps scripted responses).
    let http = Arc::new(igor::http::UreqGateway::new());
    let cfg = SandboxConfig { tick_fuel: opts.tick_fuel, pooling_instances: Some(4), http, ..SandboxConfig::default() };
    Ok(Sandbox::new(cfg)?)
}

fn node_identity(disk: &FsDisk) -> anyhow::Result<(NodeId, Keypair)> {
    let key = Keypair::load_or_create(disk, "node/node.key", &mut OsEntropy)?;
    Ok((NodeId::new("local")?, key))
}

/// A module as a wasm binary, its manifest bytes and the parsed manifest.
type Loaded = (Vec<u8>, Vec<u8>, Manifest);

/// Load the module and manifest, or report why not (exit 1).
fn load(opts: &LoopArgs, wasm_path: &Path) -> anyhow::Result<Result<Loaded, String>> {
    let wasm = read(wasm_path)?;
    let manifest_bytes = manifest_bytes(wasm_path, opts.manifest.as_deref())?;
    let manifest = if manifest_bytes.is_empty() {
        Manifest::none()
    } else {
        match Manifest::parse(&manifest_bytes) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("manifest: {e}"))),
        }
    };
    match wasm_binary(&wasm) {
        Ok(binary) => Ok(Ok((binary, manifest_bytes, manifest))),
        Err(e) => Ok(Err(format!("{}: {e}", wasm_path.display()))),
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let budget = parse_units(&args.budget)?;
    if args.price < 0 {
        bail!("--price must not be negative");
    }
    let (wasm, manifest_bytes, _) = match load(&args.opts, &args.wasm)? {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let stem = args.wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("agent").to_string();
    let agent = AgentId::new(args.agent.clone().unwrap_or(stem))?;
    let disk = FsDisk::new(&args.checkpoint_dir);
    let lineage = Lineage::open(&disk, &agent)?;
    if let Some(head) = lineage.head() {
        bail!(
            "agent {agent} already has history up to tick {} in {}; use `igord resume --checkpoint {} --wasm {}`",
            head.tick,
            args.checkpoint_dir.display(),
            args.checkpoint_dir.join(lineage::history_path(&agent, head.tick)).display(),
            args.wasm.display()
        );
    }
    let key = Keypair::load_or_create(&disk, &lineage::agent_key_path(&agent), &mut OsEntropy)?;
    let mut sandbox = sandbox(&args.opts)?;
    let hash = match sandbox.prepare(&wasm, &manifest_bytes) {
        Ok(h) => h,
        Err(e) => return fail(&format!("{}: {e}", args.wasm.display())),
    };
    let mut inst = match sandbox.start(&hash, &manifest_bytes, &[], &[]) {
        Ok(i) => i,
        Err(e) => return fail(&format!("{}: {e}", args.wasm.display())),
    };
    let good = match sandbox.snapshot(&mut inst) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{}: {e}", args.wasm.display())),
    };
    println!("agent {agent} {}", key.did());
    println!("wasm sha256 {hash}, budget {budget}, price {} per second", Microcents(args.price));
    let parts = Parts { disk, agent, key, sandbox, inst, lineage, wasm_hash: hash, verbose: args.opts.verbose };
    let at = Position { epoch: Epoch::new(1, 0), price: Microcents(args.price), budget, tick: TickNumber(0), good };
    let mut session = Session::open(parts, at)?;
    // Genesis: tick 0 is the state right after agent_init.
    session.commit()?;
    let flag = ctrl_c_flag()?;
    session.finish(&args.opts, &flag)
}

fn fail(msg: &str) -> anyhow::Result<i32> {
    eprintln!("igord: {msg}");
    Ok(1)
}

/// `<dir>/history/<agent>/<tick>.ckpt` -> (`<dir>`, agent).
fn layout(ckpt: &Path) -> anyhow::Result<(PathBuf, String)> {
    let agent_dir = ckpt.parent().context("checkpoint path has no parent directory")?;
    let agent = agent_dir.file_name().and_then(|s| s.to_str()).context("checkpoint path has no agent directory")?;
    let history = agent_dir.parent().context("checkpoint is not under <dir>/history/<agent>/")?;
    if history.file_name().and_then(|s| s.to_str()) != Some("history") {
        bail!("{}: not under <dir>/history/<agent>/; pass --checkpoint-dir", ckpt.display());
    }
    let dir = history.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    Ok((if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir }, agent.to_string()))
}

pub fn resume(args: ResumeArgs) -> anyhow::Result<i32> {
    let (wasm, manifest_bytes, manifest) = match load(&args.opts, &args.wasm)? {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let hash = Hash32::of(&wasm);
    let bytes = read(&args.checkpoint)?;
    let ckpt = match Checkpoint::parse(&bytes, Some(&hash)) {
        Ok(c) if c.seal.is_some() => c,
        Ok(c) => {
            return fail(&format!(
                "{}: unsigned v{} checkpoint cannot be resumed",
                args.checkpoint.display(),
                c.version
            ));
        }
        Err(e) => return fail(&format!("{}: {e}", args.checkpoint.display())),
    };
    let (derived_dir, agent) = layout(&args.checkpoint)?;
    let dir = args.checkpoint_dir.clone().unwrap_or(derived_dir);
    let agent = AgentId::new(agent)?;
    let disk = FsDisk::new(&dir);
    let key = Keypair::load(&disk, &lineage::agent_key_path(&agent))?;
    if Some(&key.public()) != ckpt.agent_key() {
        return fail(&format!("{}: signed by another key than agent {agent}'s", args.checkpoint.display()));
    }
    let lineage = Lineage::open(&disk, &agent)?;
    // EI-2/EI-3: resume only from the committed head, never from an older link.
    if lineage.head_hash() != Hash32::of(&bytes) {
        let head = lineage.head().map_or("none".to_string(), |h| h.tick.to_string());
        return fail(&format!(
            "{} (tick {}) is not the head of agent {agent}'s history (head: tick {head}); resuming it would fork the chain",
            args.checkpoint.display(),
            ckpt.tick
        ));
    }
    let kv_bytes = if manifest.has(Capability::Kv) {
        kv::load(&disk, &agent, ckpt.tick, &Hash32::of(&ckpt.state), &key.public())?
    } else {
        Vec::new()
    };
    let mut sandbox = sandbox(&args.opts)?;
    if let Err(e) = sandbox.prepare(&wasm, &manifest_bytes) {
        return fail(&format!("{}: {e}", args.wasm.display()));
    }
    let inst = match sandbox.start(&hash, &manifest_bytes, &ckpt.state, &kv_bytes) {
        Ok(i) => i,
        Err(e) => return fail(&format!("{}: {e}", args.wasm.display())),
    };
    println!("agent {agent} {} resumed at tick {}", key.did(), ckpt.tick);
    println!("wasm sha256 {hash}, budget {}, price {} per second", ckpt.budget, ckpt.price_per_second);
    let parts = Parts { disk, agent, key, sandbox, inst, lineage, wasm_hash: hash, verbose: args.opts.verbose };
    let at = Position {
        epoch: ckpt.epoch,
        price: ckpt.price_per_second,
        budget: ckpt.budget,
        tick: ckpt.tick,
        good: (ckpt.state.clone(), kv_bytes),
    };
    let session = Session::open(parts, at)?;
    let flag = ctrl_c_flag()?;
    session.finish(&args.opts, &flag)
}
