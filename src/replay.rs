//! Verification by replay (spec §2, CM-4): the one check that re-runs
//! recorded ticks and holds a link of a lineage to them. Metering is
//! verifiable because cost is a function of (module, state, inputs, event
//! log): any node holding them recomputes it and either agrees or names
//! the divergence, typed ([`DivergenceKind`]): the tick, both hashes and
//! the first differing byte.
//!
//! [`check_link`] is the check; its callers differ only in where the ticks
//! come from: `igor::audit` (a whole lineage from its observation logs)
//! and a migration target's `metering_check` (the package's replay data)
//! both hold every tick to its replayed cost plus the payments its log
//! records ([`Charge::Exact`]); [`verify_tick`] / [`verify_chain`] (one
//! tick at a time, for tests of an executor, whose records leave payments
//! out) hold it to the cost alone. One instance replays a whole link
//! ([`Executor::replay_in`]).

use crate::checkpoint::Hash32;
use crate::executor::{ExecError, Executor, TickInputs, TickOutcome};
use crate::membrane::first_difference;
use crate::units::{Microcents, TickNumber};
use std::fmt;

/// One recorded tick: what went in and what the guest observed (an
/// observation log's entry, a migration's replay data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedTick {
    pub inputs: TickInputs,
    pub event_log: Vec<u8>,
}

/// One recorded tick: what went in, the log, and what the live run claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickRecord {
    pub inputs: TickInputs,
    pub event_log: Vec<u8>,
    pub cost: Microcents,
    /// State and kv after the tick (for a tick that did not complete: the
    /// state before it).
    pub state_after: Vec<u8>,
    pub kv_after: Vec<u8>,
}

/// How a link's charges are held to its replay (RE-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    /// Payments are replayed from the log's recorded results: every tick
    /// takes exactly its replayed cost plus payments.
    Exact,
    /// Payments are not in the data: a tick takes at least its replayed
    /// cost and at most this much more.
    UpTo(Microcents),
}

/// A link to check: the ticks from its parent checkpoint to its checkpoint
/// and what that checkpoint claims.
#[derive(Clone, Copy, Debug)]
pub struct Link<'a> {
    pub parent_tick: TickNumber,
    pub parent_budget: Microcents,
    pub ticks: &'a [LoggedTick],
    pub tick: TickNumber,
    /// The checkpoint's budget.
    pub budget: Microcents,
    /// The checkpoint's state.
    pub state: &'a [u8],
    /// The checkpoint's kv; `None` when none was given (not checked).
    pub kv: Option<&'a [u8]>,
}

/// What differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DivergenceKind {
    /// The ticks are not the link's: not consecutive from the parent, or
    /// not ending at the checkpoint.
    Shape(String),
    /// The first tick did not start from the parent's budget.
    BudgetStart {
        logged: Microcents,
        parent: Microcents,
    },
    /// The guest's hostcalls did not match the log (message from the executor).
    Log(String),
    /// The executor could not run the tick at all.
    Exec(String),
    /// The tick did not complete on replay, yet the history went on.
    Outcome(String),
    /// A tick's charge (what the next tick or the checkpoint starts from)
    /// is not its replayed cost (plus payments, within `allowance`).
    Charge {
        budget_before: Microcents,
        budget_after: Microcents,
        replayed: Microcents,
        allowance: Microcents,
    },
    State {
        expected: Hash32,
        actual: Hash32,
        first_byte: usize,
    },
    Kv {
        expected: Hash32,
        actual: Hash32,
        first_byte: usize,
    },
}

/// A replayed tick that did not reproduce the recorded run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Divergence {
    pub tick: TickNumber,
    pub kind: DivergenceKind,
}

impl fmt::Display for DivergenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DivergenceKind::Shape(m) | DivergenceKind::Exec(m) | DivergenceKind::Outcome(m) => write!(f, "{m}"),
            DivergenceKind::BudgetStart { logged, parent } => {
                write!(f, "starts from budget {logged}, its parent checkpoint holds {parent}")
            }
            DivergenceKind::Log(m) => write!(f, "event log: {m}"),
            DivergenceKind::Charge { budget_before, budget_after, replayed, allowance } => {
                let charged = budget_before.0.saturating_sub(budget_after.0);
                write!(
                    f,
                    "charged {} (budget {budget_before} -> {budget_after}), its replay costs {replayed}",
                    Microcents(charged)
                )?;
                if allowance.0 > 0 {
                    write!(f, " (allowance {allowance})")?;
                }
                Ok(())
            }
            DivergenceKind::State { expected, actual, first_byte } => write!(
                f,
                "state differs: checkpoint {}…, replay {}…, first differing byte {first_byte}",
                expected.short(),
                actual.short()
            ),
            DivergenceKind::Kv { expected, actual, first_byte } => write!(
                f,
                "kv differs: checkpoint {}…, replay {}…, first differing byte {first_byte}",
                expected.short(),
                actual.short()
            ),
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay diverged at tick {}: {}", self.tick, self.kind)
    }
}

fn compare(tick: TickNumber, expected: &[u8], actual: &[u8], kv: bool) -> Result<(), Divergence> {
    if expected == actual {
        return Ok(());
    }
    let (e, a, first_byte) = (Hash32::of(expected), Hash32::of(actual), first_difference(expected, actual));
    let kind = if kv {
        DivergenceKind::Kv { expected: e, actual: a, first_byte }
    } else {
        DivergenceKind::State { expected: e, actual: a, first_byte }
    };
    Err(Divergence { tick, kind })
}

/// What a link's replay ended with: the state and kv after its last tick
/// (the next link starts from them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub ticks: u64,
    pub state: Vec<u8>,
    pub kv: Vec<u8>,
}

/// The check: replay `link.ticks` in `instance` (which must hold the
/// parent's state and kv) and hold the link to them: the ticks are the
/// link's, the first starts from the parent's budget, each completes (the
/// last may exhaust the budget), each charge is its replayed cost as
/// `charge` says (RE-3), and the checkpoint's state (and kv, if given) is
/// the replay's. Stops at the first divergence.
pub fn check_link<E: Executor>(
    exec: &mut E,
    wasm_hash: &Hash32,
    manifest: &[u8],
    instance: &mut E::Instance,
    link: &Link<'_>,
    charge: Charge,
) -> Result<Replayed, Divergence> {
    let first = TickNumber(link.parent_tick.0.saturating_add(1));
    let span = link.tick.0.checked_sub(link.parent_tick.0);
    let consecutive = link
        .ticks
        .iter()
        .enumerate()
        .all(|(i, t)| link.parent_tick.0.checked_add(i as u64 + 1) == Some(t.inputs.tick.0));
    if span != Some(link.ticks.len() as u64) || !consecutive {
        let why = format!(
            "holds {} ticks for link {first}..={} (expected {} consecutive ticks)",
            link.ticks.len(),
            link.tick,
            span.map_or_else(|| "no".to_string(), |s| s.to_string())
        );
        return Err(Divergence { tick: first, kind: DivergenceKind::Shape(why) });
    }
    if let Some(t) = link.ticks.first()
        && t.inputs.budget != link.parent_budget
    {
        let kind = DivergenceKind::BudgetStart { logged: t.inputs.budget, parent: link.parent_budget };
        return Err(Divergence { tick: t.inputs.tick, kind });
    }
    let last = link.ticks.len().saturating_sub(1);
    for (i, t) in link.ticks.iter().enumerate() {
        let tick = t.inputs.tick;
        let r = exec.replay_in(wasm_hash, manifest, instance, &t.inputs, &t.event_log).map_err(|e| {
            let kind = match e {
                ExecError::Divergence(m) => DivergenceKind::Log(m),
                other => DivergenceKind::Exec(other.to_string()),
            };
            Divergence { tick, kind }
        })?;
        let fits = match r.outcome {
            TickOutcome::Completed { .. } => true,
            TickOutcome::BudgetExhausted => i == last,
            _ => false,
        };
        if !fits {
            let why = format!("replay ended {:?}, yet the history committed the tick and went on", r.outcome);
            return Err(Divergence { tick, kind: DivergenceKind::Outcome(why) });
        }
        // RE-3: the budget the next tick (or the checkpoint) starts from is
        // this tick's budget less its replayed charge.
        let after = link.ticks.get(i + 1).map_or(link.budget, |n| n.inputs.budget);
        let before = t.inputs.budget;
        let (replayed, allowance, ok) = match charge {
            Charge::Exact => {
                let replayed = Microcents(r.cost.0.saturating_add(r.paid.0));
                (replayed, Microcents::ZERO, before.0.checked_sub(replayed.0) == Some(after.0))
            }
            Charge::UpTo(allowance) => {
                let most = before.0.checked_sub(r.cost.0);
                let least = most.and_then(|m| m.checked_sub(allowance.0.max(0)));
                let ok = r.cost.0 >= 0 && matches!((least, most), (Some(l), Some(m)) if l <= after.0 && after.0 <= m);
                (r.cost, allowance, ok)
            }
        };
        if !ok {
            let kind = DivergenceKind::Charge { budget_before: before, budget_after: after, replayed, allowance };
            return Err(Divergence { tick, kind });
        }
    }
    let (state, kv) = exec
        .snapshot(instance)
        .map_err(|e| Divergence { tick: link.tick, kind: DivergenceKind::Exec(e.to_string()) })?;
    compare(link.tick, link.state, &state, false)?;
    if let Some(expected) = link.kv {
        compare(link.tick, expected, &kv, true)?;
    }
    Ok(Replayed { ticks: link.ticks.len() as u64, state, kv })
}

/// Replay one tick from (`state`, `kv`) and check it against `record`:
/// [`check_link`] over a link of that one tick, whose checkpoint holds the
/// record's state and kv and its budget less its cost (a record's cost
/// leaves payments out, so the charge is held to the cost alone:
/// `Charge::UpTo(0)`).
pub fn verify_tick<E: Executor>(
    exec: &mut E,
    wasm_hash: &Hash32,
    manifest: &[u8],
    state: &[u8],
    kv: &[u8],
    record: &TickRecord,
) -> Result<(), Divergence> {
    let tick = record.inputs.tick;
    let exec_err = |e: ExecError| Divergence { tick, kind: DivergenceKind::Exec(e.to_string()) };
    let mut instance = exec.start(wasm_hash, manifest, state, kv).map_err(exec_err)?;
    let ticks = [LoggedTick { inputs: record.inputs.clone(), event_log: record.event_log.clone() }];
    let link = Link {
        parent_tick: TickNumber(tick.0.wrapping_sub(1)),
        parent_budget: record.inputs.budget,
        ticks: &ticks,
        tick,
        budget: Microcents(record.inputs.budget.0.saturating_sub(record.cost.0)),
        state: &record.state_after,
        kv: Some(&record.kv_after),
    };
    check_link(exec, wasm_hash, manifest, &mut instance, &link, Charge::UpTo(Microcents::ZERO)).map(|_| ())
}

/// Replay a chain of ticks starting from (`state`, `kv`); each tick starts
/// from the state the previous record claims (so the first bad tick is the
/// one named). Returns the total cost verified.
pub fn verify_chain<E: Executor>(
    exec: &mut E,
    wasm_hash: &Hash32,
    manifest: &[u8],
    state: &[u8],
    kv: &[u8],
    records: &[TickRecord],
) -> Result<Microcents, Divergence> {
    let (mut state, mut kv) = (state, kv);
    let mut total = Microcents::ZERO;
    for r in records {
        verify_tick(exec, wasm_hash, manifest, state, kv, r)?;
        total = total
            .checked_add(r.cost)
            .map_err(|e| Divergence { tick: r.inputs.tick, kind: DivergenceKind::Exec(e.to_string()) })?;
        state = &r.state_after;
        kv = &r.kv_after;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::fake::CounterExecutor;

    /// A counter link from `parent_tick` (count `parent_tick`, budget
    /// `budget`) with one tick per entry of `budgets` (each tick's starting
    /// budget as recorded), closed by a checkpoint of `count` and `end`.
    struct Case {
        exec: CounterExecutor,
        hash: Hash32,
        ticks: Vec<LoggedTick>,
    }

    fn case(parent_tick: u64, budgets: &[i64]) -> Case {
        let mut exec = CounterExecutor::new(Microcents(3));
        let hash = exec.prepare(b"counter", b"{}").unwrap();
        let ticks = budgets
            .iter()
            .enumerate()
            .map(|(i, b)| LoggedTick {
                inputs: TickInputs {
                    tick: TickNumber(parent_tick + 1 + i as u64),
                    now_unix_ns: 0,
                    rand_seed: [0; 32],
                    budget: Microcents(*b),
                    price_per_second: Microcents(1),
                    side_effects_allowed: true,
                    receipts: Vec::new(),
                },
                event_log: Vec::new(),
            })
            .collect();
        Case { exec, hash, ticks }
    }

    fn check(c: &mut Case, parent: (u64, i64), end: (u64, i64), count: u64, charge: Charge) -> Result<u64, Divergence> {
        let mut inst = c.exec.start(&c.hash, b"{}", &parent.0.to_le_bytes(), &[]).unwrap();
        let state = count.to_le_bytes();
        let link = Link {
            parent_tick: TickNumber(parent.0),
            parent_budget: Microcents(parent.1),
            ticks: &c.ticks,
            tick: TickNumber(end.0),
            budget: Microcents(end.1),
            state: &state,
            kv: Some(&[]),
        };
        check_link(&mut c.exec, &c.hash, b"{}", &mut inst, &link, charge).map(|r| r.ticks)
    }

    #[test]
    fn an_honest_link_replays_and_every_lie_is_named_at_its_tick() {
        let mut c = case(4, &[100, 97, 94]);
        assert_eq!(check(&mut c, (4, 100), (7, 91), 7, Charge::Exact), Ok(3));
        assert_eq!(check(&mut c, (4, 100), (7, 91), 7, Charge::UpTo(Microcents(2))), Ok(3));

        // RE-3: the checkpoint took 1 more than the last tick's cost.
        let d = check(&mut c, (4, 100), (7, 90), 7, Charge::Exact).unwrap_err();
        let want = DivergenceKind::Charge {
            budget_before: Microcents(94),
            budget_after: Microcents(90),
            replayed: Microcents(3),
            allowance: Microcents::ZERO,
        };
        assert_eq!(
            d.to_string(),
            "replay diverged at tick 7: charged 4µ¢ (budget 94µ¢ -> 90µ¢), its replay costs 3µ¢",
            "an exact charge names no allowance"
        );
        assert_eq!((d.tick, d.kind), (TickNumber(7), want));
        // Within an allowance it stands; beyond it, it does not.
        assert_eq!(check(&mut c, (4, 100), (7, 89), 7, Charge::UpTo(Microcents(2))), Ok(3));
        let d = check(&mut c, (4, 100), (7, 88), 7, Charge::UpTo(Microcents(2))).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Charge { .. }) && d.tick == TickNumber(7), "{d}");
        assert!(d.to_string().ends_with("its replay costs 3µ¢ (allowance 2µ¢)"), "{d}");
        // Charging less than the replayed cost is a lie too (budget kept).
        let d = check(&mut c, (4, 100), (7, 92), 7, Charge::UpTo(Microcents(2))).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Charge { .. }), "{d}");

        // The state the checkpoint claims is not the replay's.
        let d = check(&mut c, (4, 100), (7, 91), 8, Charge::Exact).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::State { first_byte: 0, .. }) && d.tick == TickNumber(7), "{d}");
    }

    #[test]
    fn ticks_that_are_not_the_links_are_refused_before_any_replay() {
        // A middle tick's recorded budget is not what the one before left.
        let mut c = case(4, &[100, 96, 93]);
        let d = check(&mut c, (4, 100), (7, 90), 7, Charge::Exact).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Charge { .. }) && d.tick == TickNumber(5), "{d}");
        // The first tick does not start from the parent's budget.
        let mut c = case(4, &[99, 96]);
        let d = check(&mut c, (4, 100), (6, 93), 6, Charge::Exact).unwrap_err();
        let want = DivergenceKind::BudgetStart { logged: Microcents(99), parent: Microcents(100) };
        assert_eq!((d.tick, d.kind), (TickNumber(5), want));
        // Too few ticks for the span, or a parent after the checkpoint.
        let mut c = case(4, &[100, 97]);
        let d = check(&mut c, (4, 100), (7, 91), 7, Charge::Exact).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Shape(_)) && d.tick == TickNumber(5), "{d}");
        let d = check(&mut c, (9, 100), (7, 91), 7, Charge::Exact).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Shape(_)), "{d}");
        // Ticks that skip a number.
        let mut c = case(4, &[100, 97]);
        c.ticks[1].inputs.tick = TickNumber(7);
        let d = check(&mut c, (4, 100), (6, 94), 6, Charge::Exact).unwrap_err();
        assert!(matches!(d.kind, DivergenceKind::Shape(_)), "{d}");
    }
}
