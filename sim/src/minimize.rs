//! Minimal failing timeline: delta debugging (Zeller's ddmin) over a failing
//! scenario's timeline, then a pass that simplifies what is left (idle nodes
//! dropped, network back to defaults, fault intensities halved), keeping a
//! change only while the run still violates the *same* invariant at the same
//! seed. The result is an ordinary scenario that expects that violation.

use crate::runner::{self, RunError};
use crate::scenario::{Action, NetworkSpec, Scenario, Step, Verdict};
use std::path::Path;

/// Upper bound on simulation runs in one minimization: ddmin is quadratic in
/// the worst case, and a minimizer that runs for hours helps nobody.
pub const MAX_RUNS: u64 = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum MinimizeError {
    #[error("{scenario} seed {seed}: the run violates no invariant, nothing to minimize")]
    NotFailing { scenario: String, seed: u64 },
    #[error(transparent)]
    Run(#[from] RunError),
}

/// The smallest scenario found.
pub struct Minimized {
    pub scenario: Scenario,
    pub invariant: String,
    pub runs: u64,
}

struct Oracle<'a, L: FnMut(String)> {
    base: &'a Path,
    invariant: String,
    runs: u64,
    log: L,
}

impl<L: FnMut(String)> Oracle<'_, L> {
    /// Does `s` still violate the invariant? Errors and budget exhaustion
    /// count as "no": the minimizer keeps what it has.
    fn fails(&mut self, s: &Scenario) -> bool {
        if self.runs >= MAX_RUNS {
            return false;
        }
        self.runs += 1;
        let ok = runner::run(s, self.base, None)
            .ok()
            .and_then(|r| r.violation)
            .is_some_and(|v| v.invariant == self.invariant);
        if ok {
            (self.log)(format!("run {}: {} actions still fail {}", self.runs, s.timeline.len(), self.invariant));
        }
        ok
    }
}

/// Minimize `scenario` at `seed` (or its own). `log` receives progress lines.
pub fn minimize(
    scenario: &Scenario,
    base: &Path,
    seed: Option<u64>,
    log: impl FnMut(String),
) -> Result<Minimized, MinimizeError> {
    let mut s = scenario.clone();
    s.seed = seed.unwrap_or(scenario.seed);
    let first = runner::run(&s, base, None)?;
    let Some(v) = first.violation else {
        return Err(MinimizeError::NotFailing { scenario: scenario.name.clone(), seed: s.seed });
    };
    let mut oracle = Oracle { base, invariant: v.invariant.to_string(), runs: 1, log };
    s.name = format!("{}-min", scenario.name);
    s.expect.verdict = Verdict::Violation(oracle.invariant.clone());
    s.expect.authority.clear();
    s.expect.ticks.clear();
    s.timeline = ddmin(&s, &mut oracle);
    simplify(&mut s, &mut oracle);
    s.description = format!(
        "minimized from {} ({} actions) at seed {}: still violates {}",
        scenario.name,
        scenario.timeline.len(),
        s.seed,
        oracle.invariant
    );
    Ok(Minimized { scenario: s, invariant: oracle.invariant, runs: oracle.runs })
}

fn with_timeline(s: &Scenario, timeline: Vec<Step>) -> Scenario {
    let mut c = s.clone();
    c.timeline = timeline;
    c
}

/// ddmin over timeline steps: try removing chunks at doubling granularity,
/// then a final one-at-a-time pass so the result is 1-minimal.
fn ddmin<L: FnMut(String)>(s: &Scenario, oracle: &mut Oracle<'_, L>) -> Vec<Step> {
    let mut current = s.timeline.clone();
    let mut n = 2usize;
    while current.len() >= 2 {
        let chunk = current.len().div_ceil(n);
        let mut reduced = false;
        for start in (0..current.len()).step_by(chunk) {
            let complement: Vec<Step> = current
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= start + chunk)
                .map(|(_, st)| st.clone())
                .collect();
            if oracle.fails(&with_timeline(s, complement.clone())) {
                current = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    let mut i = 0;
    while i < current.len() {
        let mut without = current.clone();
        without.remove(i);
        if oracle.fails(&with_timeline(s, without.clone())) {
            current = without;
        } else {
            i += 1;
        }
    }
    current
}

/// Simplify what is left: drop nodes nothing refers to any more, default
/// network, then each action's intensity halved (repeatedly) while the
/// failure holds.
fn simplify<L: FnMut(String)>(s: &mut Scenario, oracle: &mut Oracle<'_, L>) {
    let idle: Vec<String> = s
        .nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| {
            !s.agents.iter().any(|a| a.node == *n)
                && !s.timeline.iter().any(|st| st.action.nodes().contains(&n.as_str()))
                && !s.expect.authority.contains_key(n)
        })
        .collect();
    for name in idle {
        let mut c = s.clone();
        c.nodes.retain(|n| n.name != name);
        if oracle.fails(&c) {
            *s = c;
        }
    }
    if s.network != NetworkSpec::default() {
        let mut c = s.clone();
        c.network = NetworkSpec::default();
        if oracle.fails(&c) {
            *s = c;
        }
    }
    for i in 0..s.timeline.len() {
        for _ in 0..4 {
            let Some(smaller) = halve(&s.timeline[i].action) else { break };
            let mut c = s.clone();
            c.timeline[i].action = smaller;
            if !oracle.fails(&c) {
                break;
            }
            *s = c;
        }
    }
}

/// The same action at half its intensity, if it has one to halve.
fn halve(a: &Action) -> Option<Action> {
    let mut a = a.clone();
    match &mut a {
        Action::Duplicate { probability, .. } | Action::Corrupt { probability, .. } if *probability > 0.01 => {
            *probability = (*probability * 500.0).round() / 1000.0
        }
        Action::Reorder { max_delay_ms: v, .. } | Action::Pause { ms: v, .. } | Action::Latency { ms: v, .. }
            if *v > 1 =>
        {
            *v /= 2
        }
        Action::Skew { ms, .. } if ms.abs() > 1 => *ms /= 2,
        Action::Drift { ppm, .. } if ppm.abs() > 1 => *ppm /= 2,
        _ => return None,
    }
    Some(a)
}
