//! `igor-sim`: run fault scenarios deterministically, sweep seeds, check
//! determinism. Every failure prints the command that reproduces it.
#![allow(clippy::disallowed_methods)] // a CLI: reads scenario files and times its own progress

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use igor_sim::coverage::{self, Coverage};
use igor_sim::runner::{self, RunReport, Stepping};
use igor_sim::scenario::{Scenario, Verdict};
use igor_sim::{explore, html, minimize, shards};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deterministic simulator for Igor agents and nodes.
///
/// A scenario (RON, see docs/scenarios.md) describes nodes, agents, a
/// timeline of faults and the expected verdict. The same seed always gives
/// the same trace, byte for byte.
///
/// Exit codes: 0 every verdict matched `expect`; 1 some did not;
/// 2 usage, file or parse error.
#[derive(Parser)]
#[command(name = "igor-sim", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario and print its verdict and trace summary.
    ///
    /// Example: igor-sim run scenarios/a1/migrate-basic.ron --seed 7 --trace out.trace
    Run {
        scenario: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Write the full canonical trace to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Write a self-contained HTML timeline of the run to this file.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Step turmoil one `step_ms` at a time, idle or not (the reference
        /// stepping: the same trace, slower).
        #[arg(long)]
        fixed_stepping: bool,
    },
    /// Swarm mode: per seed, draw the fault families that are on and their
    /// intensities, print the resolved scenario, run it. Reports failing
    /// seeds (with their resolved RON) and coverage marks that never fired.
    ///
    /// Example: igor-sim explore scenarios/templates/a1-swarm.ron --seeds 0..500 --jobs 2
    /// Your agent: igor-sim explore scenarios/templates/a1-swarm.ron --seeds 0..50 --agent my.wasm --manifest my.json
    Explore {
        template: PathBuf,
        /// Seed range, end exclusive: A..B.
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Print every resolved scenario (failing ones are always printed).
        #[arg(long)]
        print: bool,
        /// Write each failing resolved scenario to DIR/<name>.ron.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Do not fail when a required coverage mark never fired.
        #[arg(long)]
        allow_gaps: bool,
        /// Run the template's agents on this module (.wasm or .wat) instead
        /// of their own: test your agent under the whole fault model.
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Manifest for --agent (default: <stem>.manifest.json beside it, if present).
        #[arg(long, requires = "agent")]
        manifest: Option<PathBuf>,
    },
    /// Shrink a failing run to a smallest scenario that fails the same
    /// invariant (delta debugging over timeline actions, then intensities).
    ///
    /// Example: igor-sim minimize noisy.ron --seed 13 --out small.ron
    Minimize {
        scenario: PathBuf,
        #[arg(long)]
        seed: Option<u64>,
        /// Where to write the minimal scenario (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run every scenario under a file or directory over a range of seeds.
    ///
    /// Example: igor-sim sweep scenarios/ --seeds 0..200 --jobs 2
    Sweep {
        path: PathBuf,
        /// Seed range, end exclusive: A..B.
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
        /// Worker threads (each simulation is single-threaded).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Run only shard i of n (0-based): seeds with seed % n == i.
        #[arg(long, value_parser = parse_shard)]
        shard: Option<(u64, u64)>,
        /// Also write one JSON line per run to this file (scenario, seed,
        /// verdict, trace hash, wall time, repro command), for `merge`.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Step turmoil one `step_ms` at a time, idle or not (the reference
        /// stepping: the same traces, slower).
        #[arg(long)]
        fixed_stepping: bool,
    },
    /// Combine the `--json` files of sweep shards (run anywhere) into the
    /// sweep's summary table and failure list; names missing shards.
    ///
    /// Example: igor-sim merge shard-0.jsonl shard-1.jsonl
    /// Exit: 0 all passed and no shard missing; 1 otherwise; 2 unreadable input.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run each seed twice in fresh simulations and compare trace hashes.
    ///
    /// Example: igor-sim check-determinism scenarios/a1/migrate-basic.ron --seeds 0..20
    CheckDeterminism {
        path: PathBuf,
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
    },
    /// Attack matrix: every adversary scenario (A2-A4) under a path, with
    /// its defence on and off, as a markdown table (docs/attack-matrix.md).
    ///
    /// Example: igor-sim matrix scenarios/ --seeds 0..100 --jobs 2 --out docs/attack-matrix.md
    Matrix {
        path: PathBuf,
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Write the table to this file (default: print it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or_else(|| format!("{s:?}: expected A..B, e.g. 0..200"))?;
    let a: u64 = a.parse().map_err(|e| format!("{s:?}: start: {e}"))?;
    let b: u64 = b.parse().map_err(|e| format!("{s:?}: end: {e}"))?;
    if a >= b {
        return Err(format!("{s:?}: empty range (end is exclusive)"));
    }
    Ok((a, b))
}

fn parse_shard(s: &str) -> Result<(u64, u64), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected i/n, e.g. 0/4"))?;
    let i: u64 = i.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let n: u64 = n.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == 0 || i >= n {
        return Err(format!("{s:?}: need 0 <= i < n"));
    }
    Ok((i, n))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { scenario, seed, trace, html, fixed_stepping } => {
            run(&scenario, seed, trace.as_deref(), html.as_deref(), stepping(fixed_stepping))
        }
        Command::Explore { template, seeds, jobs, print, out_dir, allow_gaps, agent, manifest } => {
            let agent = agent.as_deref().map(|w| (w, manifest.as_deref()));
            explore(&template, seeds, jobs, print, out_dir.as_deref(), allow_gaps, agent)
        }
        Command::Minimize { scenario, seed, out } => minimize(&scenario, seed, out.as_deref()),
        Command::Sweep { path, seeds, jobs, shard, json, fixed_stepping } => {
            sweep(&path, seeds, jobs, shard, json.as_deref(), stepping(fixed_stepping))
        }
        Command::Merge { files } => merge(&files),
        Command::CheckDeterminism { path, seeds } => check_determinism(&path, seeds),
        Command::Matrix { path, seeds, jobs, out } => igor_sim::matrix::command(&path, seeds, jobs, out.as_deref()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("igor-sim: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn stepping(fixed: bool) -> Stepping {
    if fixed { Stepping::Fixed } else { Stepping::Skip }
}

fn load(path: &Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn run(
    path: &Path,
    seed: Option<u64>,
    trace_out: Option<&Path>,
    html_out: Option<&Path>,
    stepping: Stepping,
) -> anyhow::Result<bool> {
    let scenario = load(path)?;
    let report = runner::run_stepping(&scenario, &Scenario::base_dir(path), seed, stepping)
        .with_context(|| format!("scenario file {}", path.display()))?;
    if let Some(out) = trace_out {
        std::fs::write(out, report.trace.text()).with_context(|| format!("writing {}", out.display()))?;
    }
    if let Some(out) = html_out {
        let page = html::render(&report.trace, &scenario.name);
        std::fs::write(out, page).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{}", report.summary(&path.display().to_string()));
    Ok(report.matches_expectation())
}

/// Scenario files under `path` (recursively), sorted; none is an error.
fn scenario_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = igor_sim::scenario::files(path)?;
    if out.is_empty() {
        bail!("no .ron scenarios under {}", path.display());
    }
    Ok(out)
}

/// (scenario index, seed, report or the error that stopped the run, wall ms).
type SweepResult = (usize, u64, Result<RunReport, String>, u64);

/// Run `f` over `work` on `jobs` threads with a progress line; results in
/// the order of `work` (each simulation is single-threaded and independent).
fn parallel<W: Sync, R: Send>(work: &[W], jobs: usize, f: impl Fn(&W) -> R + Sync) -> Vec<R> {
    let total = work.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(w) = work.get(k) else { break };
                    let r = f(w);
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((k, r));
                    let d = done.fetch_add(1, Ordering::SeqCst) + 1;
                    let secs = started.elapsed().as_secs_f64();
                    let eta = secs / d as f64 * (total - d) as f64;
                    eprint!("\r[{d}/{total}] {:.0}s elapsed, ~{eta:.0}s left   ", secs);
                }
            });
        }
    });
    eprintln!();
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(k, _)| *k);
    results.into_iter().map(|(_, r)| r).collect()
}

fn sweep(
    path: &Path,
    (a, b): (u64, u64),
    jobs: usize,
    shard: Option<(u64, u64)>,
    json: Option<&Path>,
    stepping: Stepping,
) -> anyhow::Result<bool> {
    let files = scenario_files(path)?;
    // A file that does not load is reported; the others still run, and
    // the sweep fails at the end.
    let mut bad: Vec<String> = Vec::new();
    let mut scenarios: Vec<(PathBuf, Scenario)> = Vec::new();
    for f in &files {
        match load(f) {
            Ok(s) => scenarios.push((f.clone(), s)),
            Err(e) => {
                eprintln!("igor-sim: error: {e:#}");
                bad.push(format!("{e:#}"));
            }
        }
    }
    let seeds: Vec<u64> = (a..b).filter(|s| shard.is_none_or(|(i, n)| s % n == i)).collect();
    let work: Vec<(usize, u64)> = (0..scenarios.len()).flat_map(|i| seeds.iter().map(move |s| (i, *s))).collect();
    let results: Vec<SweepResult> = parallel(&work, jobs, |&(i, seed)| {
        let (file, scenario) = &scenarios[i];
        let started = std::time::Instant::now();
        let r = runner::run_stepping(scenario, &Scenario::base_dir(file), Some(seed), stepping);
        let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        (i, seed, r.map_err(|e| format!("{}: {e}", file.display())), wall_ms)
    });
    let mut coverage = Coverage::default();
    let mut rows: Vec<shards::Row> =
        scenarios.iter().map(|(f, _)| shards::Row::new(&f.display().to_string())).collect();
    let mut lines = String::new();
    for (i, seed, r, wall_ms) in results {
        if let Ok(rep) = &r {
            coverage.merge(&rep.coverage);
        }
        let ok = matches!(&r, Ok(rep) if rep.matches_expectation());
        let (why, verdict, hash) = match &r {
            Ok(rep) => {
                let verdict = rep.violation.as_ref().map_or("PASS".to_string(), |v| v.invariant.to_string());
                (rep.mismatch_reason(), verdict, rep.trace.hash())
            }
            Err(e) => (e.clone(), "error".to_string(), String::new()),
        };
        // One table row: a multi-line reason (STUCK lists events) shows its first line.
        rows[i].add(seed, ok, &why);
        if json.is_some() {
            let scenario = scenarios[i].0.display().to_string();
            let line = shards::RunLine {
                repro: format!("igor-sim run {scenario} --seed {seed}"),
                scenario,
                seed,
                seeds: (a, b),
                shard,
                passed: ok,
                verdict,
                reason: shards::reason_line(&why),
                trace_sha256: hash,
                wall_ms,
            };
            lines += &serde_json::to_string(&line).context("encoding a JSON line")?;
            lines.push('\n');
        }
    }
    if let Some(out) = json {
        std::fs::write(out, &lines).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{}", shards::table(&rows));
    println!("\ncoverage:\n{}", coverage.report());
    // Every misbehaviour configured in the swept scenarios must have fired.
    let behaviours: BTreeSet<String> = scenarios
        .iter()
        .flat_map(|(_, s)| s.nodes.iter().filter_map(|n| n.adversary.as_ref()))
        .map(|m| m.name().to_string())
        .collect();
    let adversary = coverage::adversary_required(&behaviours);
    let mut required: Vec<&str> = coverage::a1_required().collect();
    required.extend(adversary.iter().map(String::as_str));
    let gaps = coverage.unfired(required);
    for m in &gaps {
        println!("coverage gap: mark {m} never fired");
    }
    for e in &bad {
        println!("not run: {e}");
    }
    Ok(bad.is_empty() && rows.iter().all(|r| r.failed == 0))
}

fn merge(files: &[PathBuf]) -> anyhow::Result<bool> {
    let mut texts = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.push((f.display().to_string(), text));
    }
    let m = shards::merge(&texts).map_err(anyhow::Error::msg)?;
    print!("{}", shards::table(&m.rows));
    if !m.failures.is_empty() {
        println!("\nfailures:");
        for (scenario, seed, why, repro) in &m.failures {
            println!("- {scenario} seed {seed}: {why} — `{repro}`");
        }
    }
    for (scenario, seed) in &m.duplicates {
        println!("duplicate: {scenario} seed {seed} appears in more than one file (overlapping shards?)");
    }
    for s in &m.missing {
        println!("missing shard: {s}");
    }
    let runs: u64 = m.rows.iter().map(|r| r.seeds).sum();
    println!(
        "\nmerged {} files: {runs} runs, {} failed, {} shards missing",
        files.len(),
        m.failures.len(),
        m.missing.len()
    );
    Ok(m.failures.is_empty() && m.missing.is_empty() && m.duplicates.is_empty())
}

fn explore(
    template_path: &Path,
    (a, b): (u64, u64),
    jobs: usize,
    print: bool,
    out_dir: Option<&Path>,
    allow_gaps: bool,
    agent: Option<(&Path, Option<&Path>)>,
) -> anyhow::Result<bool> {
    let mut template = load(template_path)?;
    if let Some((wasm, manifest)) = agent {
        with_agent(&mut template, wasm, manifest)?;
    }
    let base = Scenario::base_dir(template_path);
    let seeds: Vec<u64> = (a..b).collect();
    let started = std::time::Instant::now();
    let results = parallel(&seeds, jobs, |&seed| {
        let resolved = explore::resolve(&template, seed);
        let r = runner::run(&resolved, &base, None).map_err(|e| e.to_string());
        (seed, resolved, r)
    });
    let secs = started.elapsed().as_secs_f64();
    let mut coverage = Coverage::default();
    let mut failed = 0;
    let mut lost = Vec::new();
    for (seed, resolved, r) in &results {
        if print {
            println!("// seed {seed}\n{}", resolved.to_ron());
        }
        let why = match r {
            Ok(rep) => {
                coverage.merge(&rep.coverage);
                if rep.matches_expectation() {
                    continue;
                }
                // The drawn wipes destroyed every copy of an agent: the
                // fault model's doing, not the protocol's (runner::LOST).
                if rep.expect.verdict == Verdict::Pass
                    && rep.failures.is_empty()
                    && rep.violation.as_ref().is_some_and(|v| v.invariant == runner::LOST)
                {
                    lost.push(*seed);
                    continue;
                }
                rep.mismatch_reason()
            }
            Err(e) => e.clone(),
        };
        failed += 1;
        println!("FAIL seed {seed}: {why}");
        match out_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                let file = dir.join(format!("{}.ron", resolved.name));
                // Agent paths are made absolute so the file runs from anywhere.
                let mut portable = resolved.clone();
                for a in &mut portable.agents {
                    a.wasm = absolute(&base, &a.wasm);
                    a.manifest = a.manifest.as_deref().map(|m| absolute(&base, m));
                }
                let text = format!("// {} seed {seed}\n{}", template_path.display(), portable.to_ron());
                std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
                println!("  resolved scenario: {}", file.display());
            }
            None => println!("{}", resolved.to_ron()),
        }
        let with = agent.map_or(String::new(), |(w, m)| {
            format!(" --agent {}", w.display()) + &m.map_or(String::new(), |m| format!(" --manifest {}", m.display()))
        });
        println!("  reproduce: igor-sim explore {} --seeds {seed}..{}{with}", template_path.display(), seed + 1);
    }
    let n = seeds.len();
    println!(
        "explored {n} seeds of {} in {secs:.1}s ({:.0} seeds/minute): {} passed, {failed} failed, {} lost",
        template_path.display(),
        n as f64 / secs.max(1e-9) * 60.0,
        n - failed - lost.len(),
        lost.len()
    );
    if !lost.is_empty() {
        let shown: Vec<String> = lost.iter().take(10).map(u64::to_string).collect();
        println!(
            "lost: in {} seeds (e.g. {}) the drawn wipes destroyed every copy of an agent (verdict LOST): \
             Igor keeps one replica, so this is the fault model's doing, not a failure",
            lost.len(),
            shown.join(", ")
        );
    }
    println!("\ncoverage:\n{}", coverage.report());
    let required = explore::required_marks(&template);
    let gaps = coverage.unfired(required.iter().map(String::as_str));
    for m in &gaps {
        println!("coverage gap: mark {m} never fired in seeds {a}..{b}");
    }
    Ok(failed == 0 && (gaps.is_empty() || allow_gaps))
}

/// `rel` resolved against `base`, canonical if it exists.
/// `explore --agent W [--manifest M]`: every agent of the template runs
/// module W with manifest M (default: `<stem>.manifest.json` beside W if
/// present, else none). Paths are taken from the working directory.
fn with_agent(template: &mut Scenario, wasm: &Path, manifest: Option<&Path>) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("working directory")?;
    let wasm = cwd.join(wasm);
    if !wasm.is_file() {
        bail!("--agent {}: no such file", wasm.display());
    }
    let manifest = match manifest {
        Some(m) if !cwd.join(m).is_file() => bail!("--manifest {}: no such file", cwd.join(m).display()),
        Some(m) => Some(cwd.join(m)),
        None => Some(wasm.with_extension("manifest.json")).filter(|m| m.is_file()),
    };
    for a in &mut template.agents {
        a.wasm = wasm.display().to_string();
        a.manifest = manifest.as_ref().map(|m| m.display().to_string());
    }
    Ok(())
}

fn absolute(base: &Path, rel: &str) -> String {
    let p = base.join(rel);
    std::fs::canonicalize(&p).unwrap_or(p).display().to_string()
}

fn minimize(path: &Path, seed: Option<u64>, out: Option<&Path>) -> anyhow::Result<bool> {
    let scenario = load(path)?;
    let base = Scenario::base_dir(path);
    let result = minimize::minimize(&scenario, &base, seed, |line| eprintln!("{line}"))?;
    let text = format!(
        "// minimized from {} (seed {}): {} -> {} timeline actions, {} runs; fails {}\n{}",
        path.display(),
        result.scenario.seed,
        scenario.timeline.len(),
        result.scenario.timeline.len(),
        result.runs,
        result.invariant,
        result.scenario.to_ron()
    );
    match out {
        Some(f) => {
            std::fs::write(f, &text).with_context(|| format!("writing {}", f.display()))?;
            println!("wrote {} ({} timeline actions)", f.display(), result.scenario.timeline.len());
        }
        None => print!("{text}"),
    }
    Ok(true)
}

fn check_determinism(path: &Path, (a, b): (u64, u64)) -> anyhow::Result<bool> {
    let mut all_equal = true;
    for file in scenario_files(path)? {
        let scenario = load(&file)?;
        let base = Scenario::base_dir(&file);
        for seed in a..b {
            let first = runner::run(&scenario, &base, Some(seed))?;
            let second = runner::run(&scenario, &base, Some(seed))?;
            if first.trace.hash() == second.trace.hash() {
                println!("{} seed {seed}: {} (same)", file.display(), &first.trace.hash()[..16]);
            } else {
                all_equal = false;
                let (line, l, r) = first.trace.first_difference(&second.trace).unwrap_or_default();
                println!("{} seed {seed}: DIFFERENT at line {line}:\n  run 1: {l}\n  run 2: {r}", file.display());
            }
        }
    }
    Ok(all_equal)
}
