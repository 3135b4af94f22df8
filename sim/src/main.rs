//! `igor-sim`: run fault scenarios deterministically, sweep seeds, check
//! determinism. Every failure prints the command that reproduces it.
#![allow(clippy::disallowed_methods)] // a CLI: reads scenario files and times its own progress

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use igor_sim::runner::{self, RunReport};
use igor_sim::scenario::Scenario;
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
    },
    /// Run each seed twice in fresh simulations and compare trace hashes.
    ///
    /// Example: igor-sim check-determinism scenarios/a1/migrate-basic.ron --seeds 0..20
    CheckDeterminism {
        path: PathBuf,
        #[arg(long, value_parser = parse_seeds)]
        seeds: (u64, u64),
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
        Command::Run { scenario, seed, trace } => run(&scenario, seed, trace.as_deref()),
        Command::Sweep { path, seeds, jobs, shard } => sweep(&path, seeds, jobs, shard),
        Command::CheckDeterminism { path, seeds } => check_determinism(&path, seeds),
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

fn load(path: &Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn run(path: &Path, seed: Option<u64>, trace_out: Option<&Path>) -> anyhow::Result<bool> {
    let scenario = load(path)?;
    let report = runner::run(&scenario, &Scenario::base_dir(path), seed)?;
    if let Some(out) = trace_out {
        std::fs::write(out, report.trace.text()).with_context(|| format!("writing {}", out.display()))?;
    }
    print!("{}", report.summary(&path.display().to_string()));
    Ok(report.matches_expectation())
}

/// Scenario files under `path` (recursively), sorted.
fn scenario_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "ron") {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no .ron scenarios under {}", path.display());
    }
    Ok(out)
}

/// (scenario index, seed, report or the error that stopped the run).
type SweepResult = (usize, u64, Result<RunReport, String>);

struct Row {
    scenario: String,
    seeds: u64,
    passed: u64,
    failed: u64,
    first_failure: Option<(u64, String)>,
}

fn sweep(path: &Path, (a, b): (u64, u64), jobs: usize, shard: Option<(u64, u64)>) -> anyhow::Result<bool> {
    let files = scenario_files(path)?;
    let scenarios: Vec<(PathBuf, Scenario)> =
        files.iter().map(|f| Ok((f.clone(), load(f)?))).collect::<anyhow::Result<_>>()?;
    let seeds: Vec<u64> = (a..b).filter(|s| shard.is_none_or(|(i, n)| s % n == i)).collect();
    let work: Vec<(usize, u64)> = (0..scenarios.len()).flat_map(|i| seeds.iter().map(move |s| (i, *s))).collect();
    let total = work.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<SweepResult>> = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(i, seed)) = work.get(k) else { break };
                    let (file, scenario) = &scenarios[i];
                    let r = runner::run(scenario, &Scenario::base_dir(file), Some(seed)).map_err(|e| e.to_string());
                    results.lock().unwrap_or_else(|e| e.into_inner()).push((i, seed, r));
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
    results.sort_by_key(|(i, s, _)| (*i, *s));
    let mut rows: Vec<Row> = scenarios
        .iter()
        .map(|(f, _)| Row { scenario: f.display().to_string(), seeds: 0, passed: 0, failed: 0, first_failure: None })
        .collect();
    for (i, seed, r) in results {
        let row = &mut rows[i];
        row.seeds += 1;
        let ok = matches!(&r, Ok(rep) if rep.matches_expectation());
        if ok {
            row.passed += 1;
        } else {
            row.failed += 1;
            if row.first_failure.is_none() {
                let why = match r {
                    Ok(rep) => rep.mismatch_reason(),
                    Err(e) => e,
                };
                row.first_failure = Some((seed, why));
            }
        }
    }
    println!("| scenario | seeds | passed | failed | first failing seed |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let first = match &r.first_failure {
            Some((seed, why)) => format!("{seed}: {why} — `igor-sim run {} --seed {seed}`", r.scenario),
            None => "-".to_string(),
        };
        println!("| {} | {} | {} | {} | {} |", r.scenario, r.seeds, r.passed, r.failed, first);
    }
    Ok(rows.iter().all(|r| r.failed == 0))
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
