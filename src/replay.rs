//! Verification by replay (spec §2, CM-4): re-run recorded ticks through any
//! [`Executor`] and compare the resulting state, kv and cost with what the
//! live run reported. This is what makes metering verifiable: cost is a
//! function of (module, state, inputs, event log), so any node holding them
//! recomputes it and either agrees to the microcent or names the divergence:
//! the tick, both state hashes and the first differing byte.

use crate::checkpoint::Hash32;
use crate::executor::{ExecError, Executor, TickInputs};
use crate::membrane::first_difference;
use crate::units::{Microcents, TickNumber};
use std::fmt;

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

/// What differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DivergenceKind {
    /// The guest's hostcalls did not match the log (message from the executor).
    Log(String),
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
    Cost {
        expected: Microcents,
        actual: Microcents,
    },
    /// The executor could not run the tick at all.
    Exec(String),
}

/// A replayed tick that did not reproduce the live run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Divergence {
    pub tick: TickNumber,
    pub kind: DivergenceKind,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replay diverged at tick {}: ", self.tick)?;
        match &self.kind {
            DivergenceKind::Log(m) => write!(f, "event log: {m}"),
            DivergenceKind::State { expected, actual, first_byte } => write!(
                f,
                "state hash {}… expected, {}… replayed, first differing byte {first_byte}",
                expected.short(),
                actual.short()
            ),
            DivergenceKind::Kv { expected, actual, first_byte } => write!(
                f,
                "kv hash {}… expected, {}… replayed, first differing byte {first_byte}",
                expected.short(),
                actual.short()
            ),
            DivergenceKind::Cost { expected, actual } => write!(f, "cost {expected} expected, {actual} replayed"),
            DivergenceKind::Exec(m) => write!(f, "{m}"),
        }
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

/// Replay one tick from (`state`, `kv`) and check it against `record`.
pub fn verify_tick<E: Executor>(
    exec: &mut E,
    wasm_hash: &Hash32,
    manifest: &[u8],
    state: &[u8],
    kv: &[u8],
    record: &TickRecord,
) -> Result<(), Divergence> {
    let tick = record.inputs.tick;
    let (s, k, cost) = exec.replay(wasm_hash, manifest, state, kv, &record.inputs, &record.event_log).map_err(|e| {
        let kind = match e {
            ExecError::Divergence(m) => DivergenceKind::Log(m),
            other => DivergenceKind::Exec(other.to_string()),
        };
        Divergence { tick, kind }
    })?;
    compare(tick, &record.state_after, &s, false)?;
    compare(tick, &record.kv_after, &k, true)?;
    if cost != record.cost {
        return Err(Divergence { tick, kind: DivergenceKind::Cost { expected: record.cost, actual: cost } });
    }
    Ok(())
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
