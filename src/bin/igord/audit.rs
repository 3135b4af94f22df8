//! `igord audit`: re-execute an agent's lineage from its genesis (or
//! `--from <tick>`) through every recorded tick and check each checkpoint's
//! state, budget and every tick's charge against the replay. The audit
//! itself lives in the library (`igor::audit`); this file reads the files,
//! prints, and keeps the progress line.
//!
//! Exit codes: 0 the replay agrees with the history (links without a log
//! are listed), 1 a divergence or tampering (the first one is named), 2
//! usage or unreadable input.

use anyhow::{Context, bail};
use clap::Args;
use igor::audit::{self, AuditInput, HistoryFile, Progress};
use igor::lineage::{CHECKPOINT_EXT, RECOVERY_EXT};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, TickNumber};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Links without a log listed one by one; beyond, only counted.
const LIST_UNLOGGED: usize = 10;
/// Redraw period of the progress line.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[derive(Args)]
pub struct AuditArgs {
    /// History directories (`<data-dir>/history/<agent>`) of one agent, on
    /// one or several nodes; joined by prev-hash like `igord verify`.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Replay from the checkpoint at this tick (default: the first link,
    /// the genesis when the history has it). Needs that checkpoint's
    /// sealed kv snapshot (`<data-dir>/agents/<agent>/kv/`).
    #[arg(long)]
    from: Option<u64>,
    /// The agent module (default: `<data-dir>/agents/<agent>/agent.wasm`).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// The agent manifest (default: `<data-dir>/agents/<agent>/manifest.json`, if present).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Agent id (default: the name of the first history directory).
    #[arg(long)]
    agent: Option<String>,
    /// Fuel limit of one tick the history was run with.
    #[arg(long, default_value_t = igor::meter::DEFAULT_TICK_FUEL)]
    tick_fuel: u64,
    /// Print a progress line on stderr even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

/// `<data-dir>` of a history directory `<data-dir>/history/<agent>`.
fn data_dir(history: &Path) -> Option<PathBuf> {
    history.parent()?.parent().map(Path::to_path_buf)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The files of `dir` whose names end with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str], source: usize) -> anyhow::Result<Vec<HistoryFile>> {
    let listing = std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?;
    let mut paths = Vec::new();
    for e in listing {
        let path = e.with_context(|| format!("reading directory {}", dir.display()))?.path();
        let name = path.to_string_lossy().to_string();
        if path.is_file() && exts.iter().any(|x| name.ends_with(x)) {
            paths.push(path);
        }
    }
    paths.sort();
    paths.into_iter().map(|p| Ok(HistoryFile { source, name: p.display().to_string(), bytes: read(&p)? })).collect()
}

/// The first file named `rel` under any node's data dir.
fn beside(dirs: &[PathBuf], rel: &str) -> Option<PathBuf> {
    dirs.iter().filter_map(|d| data_dir(d)).map(|d| d.join(rel)).find(|p| p.is_file())
}

fn input(args: &AuditArgs) -> anyhow::Result<AuditInput> {
    let name = match &args.agent {
        Some(a) => a.clone(),
        None => args.dirs[0].file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
    };
    let agent = AgentId::new(name).context("agent id (give --agent)")?;
    let mut history = Vec::new();
    let mut kv = Vec::new();
    for (source, dir) in args.dirs.iter().enumerate() {
        history.extend(files(dir, &[CHECKPOINT_EXT, RECOVERY_EXT, audit::ticklog::TICKS_EXT], source)?);
        if let Some(kv_dir) = data_dir(dir).map(|d| d.join(format!("agents/{agent}/kv"))).filter(|d| d.is_dir()) {
            kv.extend(files(&kv_dir, &[".kv"], source)?);
        }
    }
    let module = format!("agents/{agent}/agent.wasm");
    let wasm = match args.wasm.clone().or_else(|| beside(&args.dirs, &module)) {
        Some(p) => read(&p)?,
        None => bail!("no agent module: give --wasm (looked for {module} beside each history)"),
    };
    let manifest = match args.manifest.clone().or_else(|| beside(&args.dirs, &format!("agents/{agent}/manifest.json")))
    {
        Some(p) => read(&p)?,
        None => Vec::new(),
    };
    Ok(AuditInput { agent, files: history, kv, wasm, manifest, from: args.from.map(TickNumber) })
}

pub fn audit(args: &AuditArgs) -> anyhow::Result<u8> {
    let input = input(args)?;
    let cfg = SandboxConfig { tick_fuel: args.tick_fuel, pooling_instances: Some(4), ..SandboxConfig::default() };
    let mut sandbox = Sandbox::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let show = args.progress || std::io::stderr().is_terminal();
    let mut last: Option<Instant> = None;
    let mut progress = |p: &Progress| {
        if show && last.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
            last = Some(Instant::now());
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\raudit: link {}/{}, tick {}, {} ticks replayed",
                p.links_done, p.links_total, p.tick, p.ticks_replayed
            );
            let _ = err.flush();
        }
    };
    let report = audit::audit(&mut sandbox, &input, &mut progress);
    if last.is_some() {
        eprintln!();
    }
    let report = report?;
    for (parent, tick) in report.unlogged.iter().take(LIST_UNLOGGED) {
        println!("no log: ticks {}..={} (link not replayed)", parent.0 + 1, tick);
    }
    if report.unlogged.len() > LIST_UNLOGGED {
        println!("no log: {} more links not replayed", report.unlogged.len() - LIST_UNLOGGED);
    }
    if let Some(f) = &report.finding {
        println!("DIVERGENCE at {f}");
        if let Some(dir) = f.source.and_then(|s| args.dirs.get(s)) {
            println!("  from history {}", dir.display());
        }
        println!(
            "  {} links audited and consistent before it, {} ticks replayed",
            report.audited, report.ticks_replayed
        );
        return Ok(1);
    }
    println!(
        "clean: {} links audited of {}, ticks {}..{} ({}), {} ticks replayed, budget {} -> {} microcents, head {}",
        report.audited,
        report.links.saturating_sub(1),
        report.anchor_tick,
        report.head_tick,
        if report.from_genesis { "from genesis" } else { "from an anchor" },
        report.ticks_replayed,
        report.budget_start.0,
        report.budget_end.0,
        report.head
    );
    Ok(0)
}
