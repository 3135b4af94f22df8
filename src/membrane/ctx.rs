//! The per-tick context every hostcall reads and records into: the tick's
//! inputs, its RNG, the event log written (live) or consumed (replay), and
//! the one place a hostcall gets its result ([`TickCtx::answer`]).

use super::*;

/// What an instance may reach besides its own memory: its manifest and the
/// node's gateways. Shared, immutable for the instance's life (the
/// capability set never changes during a tick).
#[derive(Clone)]
pub struct Grants {
    pub manifest: Manifest,
    pub http: Arc<dyn HttpGateway>,
    pub payments: Arc<dyn PaymentGateway>,
}

/// A guest call sequence that does not match the recorded log (replay only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Diverged(pub String);

/// The per-tick context: the tick's inputs, its RNG, what it paid and the
/// event log being written (live) or checked (replay).
pub struct TickCtx {
    pub tick: TickNumber,
    pub now_unix_ns: i64,
    pub budget: Microcents,
    pub price_per_second: Microcents,
    pub side_effects_allowed: bool,
    pub receipts: Vec<Vec<u8>>,
    pub(super) rng: ChaCha20Rng,
    /// Fuel the tick started with (to price the fuel burnt so far).
    pub fuel_limit: u64,
    pub paid: Microcents,
    pub side_effects: u32,
    pub log: EventLog,
    /// Replay: the recorded entries and the next one to consume.
    pub(super) replay: Option<(Vec<Entry>, usize)>,
    pub divergence: Option<String>,
    /// Undo journal of kv writes, applied if the tick does not complete.
    pub kv_undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub logs: Vec<String>,
    pub(super) log_bytes: usize,
    pub logs_dropped: u64,
}

impl TickCtx {
    /// A live tick (`recorded = None`) or a replayed one.
    pub fn new(inputs: &TickInputs, fuel_limit: u64, recorded: Option<Vec<Entry>>) -> Self {
        TickCtx {
            tick: inputs.tick,
            now_unix_ns: inputs.now_unix_ns,
            budget: inputs.budget,
            price_per_second: inputs.price_per_second,
            side_effects_allowed: inputs.side_effects_allowed,
            receipts: inputs.receipts.clone(),
            rng: ChaCha20Rng::from_seed(inputs.rand_seed),
            fuel_limit,
            paid: Microcents::ZERO,
            side_effects: 0,
            log: EventLog::new(inputs.tick),
            replay: recorded.map(|e| (e, 0)),
            divergence: None,
            kv_undo: Vec::new(),
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
        }
    }

    /// Recorded entries the replayed guest did not ask for.
    pub fn unconsumed(&self) -> usize {
        self.replay.as_ref().map_or(0, |(e, pos)| e.len() - pos)
    }

    /// Whether this tick replays a recorded log (answers come from it).
    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    pub(super) fn diverge(&mut self, msg: String) -> wasmtime::Error {
        let msg = format!("tick {}: {msg}", self.tick);
        self.divergence.get_or_insert(msg.clone());
        wasmtime::Error::new(Diverged(msg))
    }

    /// A recorded entry that contradicts the call it answers (malformed, or
    /// inconsistent with the guest's own arguments or kv): CM-4 divergence
    /// naming the hostcall index.
    pub(super) fn inconsistent(&mut self, call: Hostcall, why: &str) -> wasmtime::Error {
        let idx = self.log.entries.len().saturating_sub(1);
        self.diverge(format!("entry {idx} ({call}): {why}"))
    }

    /// The one place a hostcall gets its result. Replay: the next recorded
    /// entry, which must be for this hostcall; the inputs and the world are
    /// never consulted (CM-4: a result missing from, added to or moved in
    /// the log is a divergence here, not a recomputation that agrees with
    /// itself). Live: `live()` computes it. Either way it is appended to
    /// this tick's log, so the log holds exactly one entry per call, in
    /// call order, and replay rebuilds the recorded log byte for byte.
    pub(super) fn answer(&mut self, call: Hostcall, live: impl FnOnce(&mut Self) -> Vec<u8>) -> HResult<Vec<u8>> {
        let payload = match &mut self.replay {
            None => live(self),
            Some((entries, pos)) => {
                let idx = *pos;
                match entries.get(idx) {
                    None => {
                        let n = entries.len();
                        return Err(
                            self.diverge(format!("entry {idx}: guest called {call} but the log has only {n} entries"))
                        );
                    }
                    Some(e) if e.id != call.id() => {
                        let (id, name) = (e.id, Hostcall::from_id(e.id).map_or("?", Hostcall::name));
                        return Err(self.diverge(format!(
                            "entry {idx}: guest called {call} but the log recorded id {id} ({name})"
                        )));
                    }
                    Some(e) => {
                        let payload = e.payload.clone();
                        *pos += 1;
                        payload
                    }
                }
            }
        };
        self.log.push(call.id(), payload.clone());
        Ok(payload)
    }

    pub(super) fn keep_log(&mut self, msg: &[u8]) {
        if self.log_bytes + msg.len() > MAX_LOG_BYTES_PER_TICK {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += msg.len();
        self.logs.push(String::from_utf8_lossy(msg).into_owned());
    }
}

/// First index at which two byte strings differ (or the shorter length).
pub fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
}

/// The data of a wasmtime store: everything reachable from a hostcall.
pub struct HostState {
    pub limits: StoreLimits,
    pub grants: Arc<Grants>,
    pub kv: Kv,
    pub memory: Option<Memory>,
    /// `Some` while a tick runs; `None` during lifecycle calls.
    pub tick: Option<TickCtx>,
}

/// Count a side-effect attempt and check CM-5 (only ACTIVE_OWNER acts).
pub(super) fn side_effect_permitted(cx: &mut Cx<'_>) -> bool {
    match cx.data_mut().tick.as_mut() {
        Some(t) => {
            t.side_effects = t.side_effects.saturating_add(1);
            t.side_effects_allowed
        }
        None => false,
    }
}
