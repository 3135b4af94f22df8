//! Sweeps that span machines: `sweep --shard i/n --json out.jsonl` writes
//! one JSON line per run ([`RunLine`]); `igor-sim merge` reads the shard
//! files back into the sweep's summary table and failure list, and says
//! which shards are missing. The table is the same function for both, so
//! merged shards print exactly what one unsharded sweep prints.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One run of a sweep, as a JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLine {
    pub scenario: String,
    pub seed: u64,
    /// The sweep's seed range `[start, end)` and shard `(i, n)` (`None`:
    /// unsharded), so `merge` can tell which shards are missing.
    pub seeds: (u64, u64),
    pub shard: Option<(u64, u64)>,
    /// Did the run match its scenario's `expect`?
    pub passed: bool,
    /// `PASS`, the violated invariant's name, or `error`.
    pub verdict: String,
    /// Why it did not match (first line, at most [`MAX_REASON`] bytes);
    /// empty when it passed.
    pub reason: String,
    /// SHA-256 of the canonical trace (empty when the run did not start).
    pub trace_sha256: String,
    pub wall_ms: u64,
    pub repro: String,
}

/// A reason is cut to this many bytes (one table cell).
pub const MAX_REASON: usize = 400;

/// The first line of `why`, at most [`MAX_REASON`] bytes (on a char boundary).
pub fn reason_line(why: &str) -> String {
    let line = why.lines().next().unwrap_or_default();
    let mut end = line.len().min(MAX_REASON);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

/// One scenario's row of the summary table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub scenario: String,
    pub seeds: u64,
    pub passed: u64,
    pub failed: u64,
    /// Smallest failing seed and its reason line.
    pub first_failure: Option<(u64, String)>,
}

impl Row {
    pub fn new(scenario: &str) -> Self {
        Row { scenario: scenario.to_string(), ..Row::default() }
    }

    /// Count one run; keeps the smallest failing seed.
    pub fn add(&mut self, seed: u64, passed: bool, reason: &str) {
        self.seeds += 1;
        if passed {
            self.passed += 1;
            return;
        }
        self.failed += 1;
        if self.first_failure.as_ref().is_none_or(|(s, _)| seed < *s) {
            self.first_failure = Some((seed, reason_line(reason)));
        }
    }
}

/// The summary table (markdown), one row per scenario in the given order.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| scenario | seeds | passed | failed | first failing seed |\n|---|---|---|---|---|\n");
    for r in rows {
        let first = match &r.first_failure {
            Some((seed, why)) => format!("{seed}: {why} — `igor-sim run {} --seed {seed}`", r.scenario),
            None => "-".to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(s, "| {} | {} | {} | {} | {} |", r.scenario, r.seeds, r.passed, r.failed, first);
    }
    s
}

/// What `merge` found in a set of shard files.
#[derive(Debug, Default)]
pub struct Merged {
    pub rows: Vec<Row>,
    /// Every failing run: (scenario, seed, reason, repro).
    pub failures: Vec<(String, u64, String, String)>,
    /// Shards of an `n`-way split that no file holds, as `i/n`.
    pub missing: Vec<String>,
    /// The same (scenario, seed) seen twice (overlapping shard files).
    pub duplicates: Vec<(String, u64)>,
}

/// Parse and combine JSON lines from several files: `(file name, text)`.
/// Errors name the file and line.
pub fn merge(files: &[(String, String)]) -> Result<Merged, String> {
    let mut runs: BTreeMap<(String, u64), RunLine> = BTreeMap::new();
    let mut duplicates = Vec::new();
    let mut splits: BTreeMap<((u64, u64), u64), BTreeSet<u64>> = BTreeMap::new();
    for (name, text) in files {
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let run: RunLine = serde_json::from_str(line).map_err(|e| format!("{name}:{}: {e}", i + 1))?;
            if let Some((k, n)) = run.shard {
                splits.entry((run.seeds, n)).or_default().insert(k);
            }
            let key = (run.scenario.clone(), run.seed);
            if runs.insert(key.clone(), run).is_some() {
                duplicates.push(key);
            }
        }
    }
    let mut missing = Vec::new();
    for (((a, b), n), have) in &splits {
        for k in (0..*n).filter(|k| !have.contains(k)) {
            missing.push(format!("{k}/{n} of seeds {a}..{b}"));
        }
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut failures = Vec::new();
    for ((scenario, seed), run) in &runs {
        rows.entry(scenario.clone()).or_insert_with(|| Row::new(scenario)).add(*seed, run.passed, &run.reason);
        if !run.passed {
            failures.push((scenario.clone(), *seed, run.reason.clone(), run.repro.clone()));
        }
    }
    Ok(Merged { rows: rows.into_values().collect(), failures, missing, duplicates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(scenario: &str, seed: u64, shard: Option<(u64, u64)>, passed: bool) -> String {
        let run = RunLine {
            scenario: scenario.into(),
            seed,
            seeds: (0, 4),
            shard,
            passed,
            verdict: if passed { "PASS".into() } else { "EI-1".into() },
            reason: if passed { String::new() } else { format!("EI-1 violated at seed {seed}") },
            trace_sha256: "ab".into(),
            wall_ms: 1,
            repro: format!("igor-sim run {scenario} --seed {seed}"),
        };
        serde_json::to_string(&run).unwrap()
    }

    #[test]
    fn shards_merge_into_the_unsharded_table_and_missing_shards_are_named() {
        let all: Vec<String> = (0..4).map(|s| line("x.ron", s, None, s != 3)).collect();
        let whole = merge(&[("all".into(), all.join("\n"))]).unwrap();
        let even: Vec<String> = [0, 2].iter().map(|s| line("x.ron", *s, Some((0, 2)), true)).collect();
        let odd: Vec<String> = [1, 3].iter().map(|s| line("x.ron", *s, Some((1, 2)), *s != 3)).collect();
        let parts = merge(&[("0".into(), even.join("\n")), ("1".into(), odd.join("\n"))]).unwrap();
        assert_eq!(table(&whole.rows), table(&parts.rows));
        assert!(parts.missing.is_empty() && parts.duplicates.is_empty());
        assert_eq!(parts.failures.len(), 1);
        let half = merge(&[("0".into(), even.join("\n"))]).unwrap();
        assert_eq!(half.missing, vec!["1/2 of seeds 0..4".to_string()]);
        let twice = merge(&[("0".into(), even.join("\n")), ("0 again".into(), even.join("\n"))]).unwrap();
        assert_eq!(twice.duplicates.len(), 2);
        let err = merge(&[("bad.jsonl".into(), format!("{}\n{{\"nope\":1}}", even[0]))]).unwrap_err();
        assert!(err.starts_with("bad.jsonl:2:"), "{err}");
    }

    #[test]
    fn a_reason_is_one_bounded_line() {
        let long = format!("{}\nsecond line", "é".repeat(1000));
        let r = reason_line(&long);
        assert!(r.len() <= MAX_REASON && !r.contains('\n'), "{}", r.len());
    }
}
