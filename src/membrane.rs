//! The capability membrane (spec §2): the `igor.*` host functions, which of
//! them an agent may import (deny by default: only the manifest's
//! capabilities are linked, and an undeclared import is refused before
//! instantiation, naming the import and the capability), and the per-tick
//! context every hostcall reads and records into the event log.
//!
//! Boundary: everything a hostcall needs comes from [`TickCtx`] (built from
//! `TickInputs`) or the instance's own state (memory, kv); no disk, clock or
//! OS randomness is reachable from here. Hostcalls never trap on bad guest
//! pointers (they return an error code); they trap only when the tick's fuel
//! runs out, or, in replay, when the guest's calls diverge from the log.
//!
//! Return codes beyond the spec's table (bad guest pointers): `rand_bytes`
//! -4, `wallet_receipt` -4, `http_request` -1, `wallet_pay` -6, `kv_*` -1.
//! Outside a tick (lifecycle exports) the world is invisible: `clock_now`,
//! `wallet_*`, `node_price` return 0, `rand_bytes` -1, side effects -3,
//! `kv_get` works (it reads the agent's own state).

use crate::eventlog::{Entry, EventLog};
use crate::executor::TickInputs;
use crate::http::{
    HttpError, HttpGateway, HttpRequest, MAX_HEADER_BYTES, MAX_METHOD_BYTES, MAX_REQUEST_BODY_BYTES, MAX_URL_BYTES,
};
use crate::kv::{Kv, PutError};
use crate::manifest::{Capability, CapabilitySet, MAX_NAME_LEN, Manifest};
use crate::meter::{FUEL_PER_BYTE, HOSTCALL_FUEL, cost_of_fuel};
use crate::units::{Microcents, TickNumber};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::fmt;
use std::sync::{Arc, Mutex};
use wasmtime::{Caller, ExternType, Linker, Memory, Module, StoreLimits, Trap, ValType};

/// Import module name of every hostcall.
pub const IMPORT_MODULE: &str = "igor";
/// Longest log message kept (spec §2: 1 MiB); longer ones are truncated.
pub const MAX_LOG_MESSAGE_BYTES: usize = 1024 * 1024;
/// Log bytes retained per tick; more are counted as dropped. Fuel bounds
/// what a guest can send, this bounds what the node keeps in memory.
pub const MAX_LOG_BYTES_PER_TICK: usize = 1024 * 1024;
/// Most bytes one `rand_bytes` call hands out (-2 above).
pub const MAX_RAND_BYTES: usize = 64 * 1024;
/// Longest payment memo.
pub const MAX_MEMO_BYTES: usize = 256;
/// Largest payment receipt a [`PaymentGateway`] may return; `wallet_pay`
/// needs a receipt buffer at least this large before it pays (-5 with this
/// hint otherwise), so a payment is never made whose receipt cannot be kept.
pub const MAX_PAY_RECEIPT_BYTES: usize = 256;

/// Every host function of spec §2, with its event-log id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hostcall {
    ClockNow = 1,
    RandBytes = 2,
    LogEmit = 3,
    WalletBalance = 4,
    WalletReceiptCount = 5,
    WalletReceipt = 6,
    NodePrice = 7,
    HttpRequest = 8,
    WalletPay = 9,
    KvGet = 10,
    KvPut = 11,
    KvDelete = 12,
}

impl Hostcall {
    pub const ALL: [Hostcall; 12] = [
        Hostcall::ClockNow,
        Hostcall::RandBytes,
        Hostcall::LogEmit,
        Hostcall::WalletBalance,
        Hostcall::WalletReceiptCount,
        Hostcall::WalletReceipt,
        Hostcall::NodePrice,
        Hostcall::HttpRequest,
        Hostcall::WalletPay,
        Hostcall::KvGet,
        Hostcall::KvPut,
        Hostcall::KvDelete,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u8) -> Option<Hostcall> {
        Hostcall::ALL.into_iter().find(|h| h.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Hostcall::ClockNow => "clock_now",
            Hostcall::RandBytes => "rand_bytes",
            Hostcall::LogEmit => "log_emit",
            Hostcall::WalletBalance => "wallet_balance",
            Hostcall::WalletReceiptCount => "wallet_receipt_count",
            Hostcall::WalletReceipt => "wallet_receipt",
            Hostcall::NodePrice => "node_price",
            Hostcall::HttpRequest => "http_request",
            Hostcall::WalletPay => "wallet_pay",
            Hostcall::KvGet => "kv_get",
            Hostcall::KvPut => "kv_put",
            Hostcall::KvDelete => "kv_delete",
        }
    }

    pub fn from_name(name: &str) -> Option<Hostcall> {
        Hostcall::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The capability that must be declared to import this hostcall.
    pub fn capability(self) -> Capability {
        match self {
            Hostcall::ClockNow => Capability::Clock,
            Hostcall::RandBytes => Capability::Rand,
            Hostcall::LogEmit => Capability::Log,
            Hostcall::WalletBalance | Hostcall::WalletReceiptCount | Hostcall::WalletReceipt => Capability::Wallet,
            Hostcall::NodePrice => Capability::Pricing,
            Hostcall::HttpRequest => Capability::Http,
            Hostcall::WalletPay => Capability::X402,
            Hostcall::KvGet | Hostcall::KvPut | Hostcall::KvDelete => Capability::Kv,
        }
    }

    /// Whether this call changes the world (CM-5: only as ACTIVE_OWNER).
    pub fn is_side_effect(self) -> bool {
        matches!(self, Hostcall::HttpRequest | Hostcall::WalletPay | Hostcall::KvPut | Hostcall::KvDelete)
    }

    /// (params, results) of the import.
    pub fn signature(self) -> (Vec<ValType>, Vec<ValType>) {
        use ValType::{I32, I64};
        match self {
            Hostcall::ClockNow | Hostcall::WalletBalance | Hostcall::NodePrice => (vec![], vec![I64]),
            Hostcall::RandBytes | Hostcall::KvDelete => (vec![I32; 2], vec![I32]),
            Hostcall::LogEmit => (vec![I32; 2], vec![]),
            Hostcall::WalletReceiptCount => (vec![], vec![I32]),
            Hostcall::WalletReceipt => (vec![I32; 3], vec![I32]),
            Hostcall::HttpRequest => (vec![I32; 10], vec![I32]),
            Hostcall::WalletPay => (vec![I64, I32, I32, I32, I32, I32, I32], vec![I32]),
            Hostcall::KvGet | Hostcall::KvPut => (vec![I32; 4], vec![I32]),
        }
    }
}

fn sig_text(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
    format!("({}) -> ({})", list(params), list(results))
}

/// Why a module's imports are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("import {module}.{name}: unknown import module (only `igor` host functions exist)")]
    UnknownModule { module: String, name: String },
    #[error("import igor.{name}: no such host function")]
    UnknownHostcall { name: String },
    #[error("import igor.{name} needs capability `{capability}`, which the manifest does not declare")]
    Undeclared { name: String, capability: Capability },
    #[error("import igor.{name}: capability `{capability}` is not offered by this node")]
    NotOffered { name: String, capability: Capability },
    #[error("import igor.{name}: wrong type, expected {expected}, found {found}")]
    WrongType { name: String, expected: String, found: String },
}

/// Walk `module.imports()` before instantiation: every import must be an
/// `igor` hostcall with the right type whose capability is both declared
/// by the manifest and offered by the node.
pub fn check_imports(module: &Module, declared: CapabilitySet, offered: CapabilitySet) -> Result<(), ImportError> {
    for import in module.imports() {
        let name = import.name().to_string();
        if import.module() != IMPORT_MODULE {
            return Err(ImportError::UnknownModule { module: import.module().to_string(), name });
        }
        let call = Hostcall::from_name(&name).ok_or_else(|| ImportError::UnknownHostcall { name: name.clone() })?;
        let capability = call.capability();
        if !declared.contains(capability) {
            return Err(ImportError::Undeclared { name, capability });
        }
        if !offered.contains(capability) {
            return Err(ImportError::NotOffered { name, capability });
        }
        let (params, results) = call.signature();
        let expected = sig_text(&params, &results);
        let found = match import.ty() {
            ExternType::Func(f) => sig_text(&f.params().collect::<Vec<_>>(), &f.results().collect::<Vec<_>>()),
            other => format!("{other:?}"),
        };
        if expected != found {
            return Err(ImportError::WrongType { name, expected, found });
        }
    }
    Ok(())
}

/// One payment request from `wallet_pay`, after every check passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub tick: TickNumber,
    pub amount: Microcents,
    pub recipient: String,
    pub memo: Vec<u8>,
}

/// Moves money out of an agent's budget to a recipient and returns a
/// receipt (at most [`MAX_PAY_RECEIPT_BYTES`]). The amount is deducted from
/// the budget by the sandbox (`TickReport::paid`); the gateway settles it.
pub trait PaymentGateway: Send + Sync {
    fn pay(&self, payment: &Payment) -> Result<Vec<u8>, String>;
}

/// A gateway that settles nothing and records every payment, returning a
/// deterministic receipt: `"IGPY"`, tick, amount, SHA-256(recipient ++ 0 ++ memo).
#[derive(Clone, Default)]
pub struct LedgerPayments {
    paid: Arc<Mutex<Vec<Payment>>>,
}

impl LedgerPayments {
    pub fn payments(&self) -> Vec<Payment> {
        self.paid.lock().expect("ledger lock poisoned").clone()
    }
}

impl PaymentGateway for LedgerPayments {
    fn pay(&self, p: &Payment) -> Result<Vec<u8>, String> {
        use sha2::{Digest, Sha256};
        self.paid.lock().expect("ledger lock poisoned").push(p.clone());
        let mut r = b"IGPY".to_vec();
        r.extend_from_slice(&p.tick.0.to_le_bytes());
        r.extend_from_slice(&p.amount.0.to_le_bytes());
        let mut h = Sha256::new();
        h.update(p.recipient.as_bytes());
        h.update([0]);
        h.update(&p.memo);
        r.extend_from_slice(&h.finalize());
        Ok(r)
    }
}

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
    rng: ChaCha20Rng,
    /// Fuel the tick started with (to price the fuel burnt so far).
    pub fuel_limit: u64,
    pub paid: Microcents,
    pub side_effects: u32,
    pub log: EventLog,
    /// Replay: the recorded entries and the next one to consume.
    replay: Option<(Vec<Entry>, usize)>,
    pub divergence: Option<String>,
    /// Undo journal of kv writes, applied if the tick does not complete.
    pub kv_undo: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub logs: Vec<String>,
    log_bytes: usize,
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

    fn diverge(&mut self, msg: String) -> wasmtime::Error {
        let msg = format!("tick {}: {msg}", self.tick);
        self.divergence.get_or_insert(msg.clone());
        wasmtime::Error::new(Diverged(msg))
    }

    /// A recorded entry that contradicts the call it answers (malformed, or
    /// inconsistent with the guest's own arguments or kv): CM-4 divergence
    /// naming the hostcall index.
    fn inconsistent(&mut self, call: Hostcall, why: &str) -> wasmtime::Error {
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
    fn answer(&mut self, call: Hostcall, live: impl FnOnce(&mut Self) -> Vec<u8>) -> HResult<Vec<u8>> {
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

    fn keep_log(&mut self, msg: &[u8]) {
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

type Cx<'a> = Caller<'a, HostState>;
type HResult<T> = Result<T, wasmtime::Error>;

/// Burn hostcall fuel from the store; running out is an ordinary
/// `OutOfFuel` trap, exactly as if the guest had burnt it.
fn burn(cx: &mut Cx<'_>, fuel: u64) -> HResult<()> {
    let have = cx.get_fuel()?;
    if have < fuel {
        cx.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    cx.set_fuel(have - fuel)
}

fn burn_bytes(cx: &mut Cx<'_>, n: usize) -> HResult<()> {
    burn(cx, (n as u64).saturating_mul(FUEL_PER_BYTE))
}

/// Guest bytes `[ptr, ptr+len)`, or `None` if out of bounds (never traps).
fn read(cx: &Cx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = cx.data().memory?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(cx).get(ptr..ptr.checked_add(len)?).map(<[u8]>::to_vec)
}

/// Copy `bytes` to guest `ptr`; false if out of bounds (nothing written).
fn write(cx: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = cx.data().memory else { return false };
    let ptr = ptr as u32 as usize;
    let Some(end) = ptr.checked_add(bytes.len()) else { return false };
    match mem.data_mut(cx).get_mut(ptr..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Whether `[ptr, ptr+len)` lies in guest memory.
fn in_bounds(cx: &Cx<'_>, ptr: i32, len: usize) -> bool {
    let Some(mem) = cx.data().memory else { return false };
    (ptr as u32 as usize).checked_add(len).is_some_and(|end| end <= mem.data_size(cx))
}

fn i32_payload(v: i32, extra: &[u8]) -> Vec<u8> {
    let mut p = v.to_le_bytes().to_vec();
    p.extend_from_slice(extra);
    p
}

/// The running tick's context; callers checked that a tick runs.
fn tick_ctx<'c>(cx: &'c mut Cx<'_>) -> &'c mut TickCtx {
    cx.data_mut().tick.as_mut().expect("inside a tick: checked by the caller")
}

/// Guest memory available from `ptr` to the end (0 if beyond it).
fn room(cx: &Cx<'_>, ptr: i32) -> usize {
    cx.data().memory.map_or(0, |m| m.data_size(cx).saturating_sub(ptr as u32 as usize))
}

/// Split a recorded `i32 code ++ rest` payload.
fn split_code(p: &[u8]) -> Option<(i32, &[u8])> {
    let (code, rest) = p.split_at_checked(4)?;
    Some((i32::from_le_bytes(code.try_into().ok()?), rest))
}

/// A recorded `[kind] ++ i32 code` payload with a negative code.
fn refusal_code(rest: &[u8]) -> Option<i32> {
    let code = i32::from_le_bytes(rest.try_into().ok()?);
    (code < 0).then_some(code)
}

fn refusal(code: i32) -> Vec<u8> {
    [&[0u8][..], &code.to_le_bytes()].concat()
}

/// A hostcall whose whole result is one i64 or i32 taken from the tick.
fn scalar_answer<const N: usize>(
    t: &mut TickCtx,
    call: Hostcall,
    live: impl FnOnce(&TickCtx) -> [u8; N],
) -> HResult<[u8; N]> {
    let p = t.answer(call, |t| live(t).to_vec())?;
    <[u8; N]>::try_from(p.as_slice()).map_err(|_| t.inconsistent(call, &format!("recorded result is not {N} bytes")))
}

fn clock_now(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::ClockNow, |t| t.now_unix_ns.to_le_bytes()).map(i64::from_le_bytes)
}

fn rand_bytes(cx: &mut Cx<'_>, ptr: i32, len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let n = len as u32 as usize;
    if cx.data().tick.is_none() {
        return Ok(-1);
    }
    let fits = in_bounds(cx, ptr, n);
    let t = tick_ctx(cx);
    let p = t.answer(Hostcall::RandBytes, |t| {
        if n > MAX_RAND_BYTES {
            i32_payload(-2, &[])
        } else if !fits {
            i32_payload(-4, &[])
        } else {
            let mut buf = vec![0u8; n];
            t.rng.fill_bytes(&mut buf);
            i32_payload(0, &buf)
        }
    })?;
    let bytes = match split_code(&p) {
        Some((0, bytes)) if bytes.len() == n => bytes,
        Some((code, [])) if code < 0 => return Ok(code),
        _ => return Err(t.inconsistent(Hostcall::RandBytes, &format!("recorded result does not answer {n} bytes"))),
    };
    burn_bytes(cx, n)?;
    if !write(cx, ptr, bytes) {
        return Err(tick_ctx(cx).inconsistent(Hostcall::RandBytes, "recorded bytes do not fit the guest buffer"));
    }
    Ok(0)
}

fn log_emit(cx: &mut Cx<'_>, ptr: i32, len: i32) -> HResult<()> {
    burn(cx, HOSTCALL_FUEL)?;
    let n = (len as u32 as usize).min(MAX_LOG_MESSAGE_BYTES);
    let msg = read(cx, ptr, n as i32);
    let kept = msg.as_ref().map_or(0, Vec::len);
    let Some(t) = cx.data_mut().tick.as_mut() else { return burn_bytes(cx, kept) };
    let recorded = scalar_answer(t, Hostcall::LogEmit, |_| (kept as u32).to_le_bytes())?;
    if u32::from_le_bytes(recorded) as usize != kept {
        return Err(
            t.inconsistent(Hostcall::LogEmit, &format!("recorded length differs from the guest's {kept} bytes"))
        );
    }
    burn_bytes(cx, kept)?;
    if let Some(m) = msg {
        tick_ctx(cx).keep_log(&m);
    }
    Ok(())
}

fn wallet_balance(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    // Budget at tick start minus what this tick paid out so far.
    scalar_answer(t, Hostcall::WalletBalance, |t| t.budget.0.saturating_sub(t.paid.0).to_le_bytes())
        .map(i64::from_le_bytes)
}

fn wallet_receipt_count(cx: &mut Cx<'_>) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::WalletReceiptCount, |t| {
        i32::try_from(t.receipts.len()).unwrap_or(i32::MAX).to_le_bytes()
    })
    .map(i32::from_le_bytes)
}

fn wallet_receipt(cx: &mut Cx<'_>, index: i32, buf: i32, cap: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    if cx.data().tick.is_none() {
        return Ok(-1);
    }
    let (cap, room) = (cap as u32 as usize, room(cx, buf));
    let t = tick_ctx(cx);
    let p =
        t.answer(Hostcall::WalletReceipt, |t| match usize::try_from(index).ok().and_then(|i| t.receipts.get(i)) {
            None => i32_payload(-1, &[]),
            Some(r) if r.len() > cap || r.len() > room => i32_payload(-4, &[]),
            Some(r) => i32_payload(r.len() as i32, r),
        })?;
    let receipt = match split_code(&p) {
        Some((code, r)) if code >= 0 && code as usize == r.len() && r.len() <= cap.min(room) => r,
        Some((code, [])) if code < 0 => return Ok(code),
        _ => return Err(t.inconsistent(Hostcall::WalletReceipt, "recorded receipt does not fit the guest buffer")),
    };
    burn_bytes(cx, receipt.len())?;
    write(cx, buf, receipt);
    Ok(receipt.len() as i32)
}

fn node_price(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::NodePrice, |t| t.price_per_second.0.to_le_bytes()).map(i64::from_le_bytes)
}

/// Count a side-effect attempt and check CM-5 (only ACTIVE_OWNER acts).
fn side_effect_permitted(cx: &mut Cx<'_>) -> bool {
    match cx.data_mut().tick.as_mut() {
        Some(t) => {
            t.side_effects = t.side_effects.saturating_add(1);
            t.side_effects_allowed
        }
        None => false,
    }
}

/// Read an input field with its length limit: Err(-2) too long, Err(bad) out of bounds.
fn read_input(cx: &Cx<'_>, ptr: i32, len: i32, limit: usize, bad: i32) -> Result<Vec<u8>, i32> {
    if len as u32 as usize > limit {
        return Err(-2);
    }
    read(cx, ptr, len).ok_or(bad)
}

// http_request event payload: kind 0 = refused before the effect (i32
// code); 1 = response (u16 status, body); 2 = gateway error (i32 code,
// u64 needed length for -5).
#[allow(clippy::too_many_arguments)]
fn http_request(
    cx: &mut Cx<'_>,
    method_ptr: i32,
    method_len: i32,
    url_ptr: i32,
    url_len: i32,
    hdr_ptr: i32,
    hdr_len: i32,
    body_ptr: i32,
    body_len: i32,
    resp_ptr: i32,
    resp_cap: i32,
) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let inputs = (|| {
        let method = read_input(cx, method_ptr, method_len, MAX_METHOD_BYTES, -1)?;
        let url = read_input(cx, url_ptr, url_len, MAX_URL_BYTES, -1)?;
        let headers = read_input(cx, hdr_ptr, hdr_len, MAX_HEADER_BYTES, -1)?;
        let body = read_input(cx, body_ptr, body_len, MAX_REQUEST_BODY_BYTES, -1)?;
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| -1);
        Ok::<_, i32>(HttpRequest { method: text(method)?, url: text(url)?, headers, body })
    })();
    let grants = cx.data().grants.clone();
    let policy = grants.manifest.http.clone().unwrap_or_else(|| crate::manifest::HttpPolicy {
        allowed_hosts: Vec::new(),
        timeout_ms: 0,
        max_response_bytes: 0,
    });
    if let Ok(req) = &inputs {
        burn_bytes(cx, req.method.len() + req.url.len() + req.headers.len() + req.body.len())?;
    }
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(-3) };
    // Live only: replay takes the outcome from the log and never contacts
    // the gateway (spec §2: every hostcall is replayable).
    let payload = t.answer(Hostcall::HttpRequest, |_| {
        let req = match &inputs {
            Err(code) => return refusal(*code),
            Ok(_) if !permitted => return refusal(-3),
            Ok(req) if !policy.allows(&req.url) => return refusal(-3),
            Ok(req) => req,
        };
        match grants.http.request(req, &policy) {
            Ok(resp) => {
                let mut p = vec![1u8];
                p.extend_from_slice(&resp.status.to_le_bytes());
                p.extend_from_slice(&resp.body);
                p
            }
            Err(e) => {
                let (code, needed) = match e {
                    HttpError::Network(_) => (-1i32, 0u64),
                    HttpError::HostNotAllowed(_) => (-3, 0),
                    HttpError::Timeout => (-4, 0),
                    HttpError::TooLarge { needed } => (-5, needed),
                };
                let mut p = vec![2u8];
                p.extend_from_slice(&code.to_le_bytes());
                p.extend_from_slice(&needed.to_le_bytes());
                p
            }
        }
    })?;
    deliver_http(cx, &payload, resp_ptr, resp_cap, policy.max_response_bytes)
}

/// Turn a recorded http outcome into what the guest sees (same code path
/// live and in replay, so both write the same bytes).
fn deliver_http(cx: &mut Cx<'_>, payload: &[u8], resp_ptr: i32, resp_cap: i32, max_response: u64) -> HResult<i32> {
    let needed_hint = |cx: &mut Cx<'_>, needed: u64| -> HResult<i32> {
        if resp_cap as u32 >= 4 {
            write(cx, resp_ptr, &(needed.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        }
        Ok(-5)
    };
    match payload.split_first() {
        Some((0, rest)) if refusal_code(rest).is_some() => Ok(refusal_code(rest).expect("checked by the guard")),
        Some((1, rest)) if rest.len() >= 2 => {
            let status = u16::from_le_bytes([rest[0], rest[1]]);
            let body = &rest[2..];
            if body.len() as u64 > max_response || body.len() > resp_cap as u32 as usize {
                return needed_hint(cx, body.len() as u64);
            }
            burn_bytes(cx, body.len())?;
            Ok(if write(cx, resp_ptr, body) { i32::from(status) } else { -1 })
        }
        Some((2, rest)) if rest.len() == 12 && refusal_code(&rest[..4]).is_some() => {
            let code = refusal_code(&rest[..4]).expect("checked by the guard");
            let needed = u64::from_le_bytes(rest[4..].try_into().expect("length checked"));
            if code == -5 { needed_hint(cx, needed) } else { Ok(code) }
        }
        _ => Err(tick_ctx(cx).inconsistent(Hostcall::HttpRequest, "recorded outcome is malformed")),
    }
}

// wallet_pay event payload: kind 0 = refused before paying (i32 code);
// 1 = paid (receipt bytes); 2 = gateway failure (-6).
#[allow(clippy::too_many_arguments)]
fn wallet_pay(
    cx: &mut Cx<'_>,
    amount: i64,
    rcpt_ptr: i32,
    rcpt_len: i32,
    memo_ptr: i32,
    memo_len: i32,
    buf: i32,
    cap: i32,
) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let recipient =
        read_input(cx, rcpt_ptr, rcpt_len, MAX_NAME_LEN, -6).and_then(|r| String::from_utf8(r).map_err(|_| -6));
    let memo = read_input(cx, memo_ptr, memo_len, MAX_MEMO_BYTES, -6);
    let moved = recipient.as_ref().map_or(0, String::len) + memo.as_ref().map_or(0, Vec::len);
    burn_bytes(cx, moved)?;
    let fuel_left = cx.get_fuel()?;
    let grants = cx.data().grants.clone();
    let buf_ok = cap as u32 as usize >= MAX_PAY_RECEIPT_BYTES && in_bounds(cx, buf, MAX_PAY_RECEIPT_BYTES);
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(-3) };
    let policy = grants.manifest.x402.clone();
    // Live only: replay takes the outcome from the log and never pays.
    let payload = t.answer(Hostcall::WalletPay, |t| {
        let checked = (|| -> Result<Payment, i32> {
            let recipient = recipient.clone()?;
            let memo = memo.clone()?;
            if amount <= 0 {
                return Err(-6);
            }
            if !permitted {
                return Err(-3);
            }
            let policy = policy.as_ref().ok_or(-3)?;
            if !policy.allowed_recipients.iter().any(|r| *r == recipient.to_ascii_lowercase()) {
                return Err(-3);
            }
            if policy.max_payment_microcents > 0 && amount > policy.max_payment_microcents {
                return Err(-4);
            }
            if !buf_ok {
                return Err(-5);
            }
            // Money left = budget - paid so far - the fuel burnt so far, priced.
            let burnt = cost_of_fuel(t.fuel_limit.saturating_sub(fuel_left), t.price_per_second).map_err(|_| -6)?;
            let left = t.budget.0.saturating_sub(t.paid.0).saturating_sub(burnt.0);
            if amount > left {
                return Err(-1);
            }
            Ok(Payment { tick: t.tick, amount: Microcents(amount), recipient, memo })
        })();
        match checked {
            Err(code) => refusal(code),
            Ok(payment) => match grants.payments.pay(&payment) {
                Ok(receipt) if receipt.len() <= MAX_PAY_RECEIPT_BYTES => [&[1u8][..], &receipt].concat(),
                _ => vec![2u8],
            },
        }
    })?;
    match payload.split_first() {
        Some((0, rest)) if refusal_code(rest).is_some() => {
            let code = refusal_code(rest).expect("checked by the guard");
            if code == -5 && cap as u32 >= 4 {
                write(cx, buf, &(MAX_PAY_RECEIPT_BYTES as u32).to_le_bytes());
            }
            Ok(code)
        }
        // A payment the guest could not have asked for, or that the tick's
        // budget cannot cover, is a forged entry: paid never exceeds the
        // budget (RE-3), whatever the log says.
        Some((1, receipt))
            if receipt.len() <= MAX_PAY_RECEIPT_BYTES
                && buf_ok
                && amount > 0
                && recipient.is_ok()
                && memo.is_ok()
                && amount <= t.budget.0.saturating_sub(t.paid.0) =>
        {
            t.paid = Microcents(t.paid.0.saturating_add(amount));
            burn_bytes(cx, receipt.len())?;
            write(cx, buf, receipt);
            Ok(receipt.len() as i32)
        }
        Some((2, [])) => Ok(-6),
        _ => Err(t.inconsistent(Hostcall::WalletPay, "recorded outcome is malformed or not payable")),
    }
}

/// What the agent's own kv answers to a `kv_get` (code ++ bytes).
fn kv_lookup(cx: &Cx<'_>, key: &Result<Vec<u8>, i32>, val_ptr: i32, val_cap: i32) -> Vec<u8> {
    let Ok(key) = key else { return i32_payload(-1, &[]) };
    match cx.data().kv.get(key) {
        None => i32_payload(-5, &[]),
        Some(v) if v.len() > val_cap as u32 as usize || v.len() > room(cx, val_ptr) => {
            i32_payload(-4, &(v.len() as u32).to_le_bytes())
        }
        Some(v) => i32_payload(v.len() as i32, v),
    }
}

fn kv_get(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_cap: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let max_key = cx.data().kv.limits().max_key_bytes as usize;
    let key = read_input(cx, key_ptr, key_len, max_key, -1);
    burn_bytes(cx, key_len.max(0) as usize)?;
    let own = kv_lookup(cx, &key, val_ptr, val_cap);
    let payload = match cx.data_mut().tick.as_mut() {
        // Outside a tick kv_get reads the agent's own state, unrecorded.
        None => own,
        Some(t) => {
            let p = t.answer(Hostcall::KvGet, |_| own.clone())?;
            // The kv is the agent's own state, replayed alongside it: a
            // recorded answer it contradicts is a forged entry (CM-4).
            if p != own {
                return Err(t.inconsistent(Hostcall::KvGet, "recorded result contradicts the agent's own kv"));
            }
            p
        }
    };
    let (code, bytes) = split_code(&payload).expect("kv_lookup payloads start with a code");
    burn_bytes(cx, bytes.len())?;
    if code >= 0 || (code == -4 && val_cap as u32 >= 4) {
        write(cx, val_ptr, bytes);
    }
    Ok(code)
}

/// A recorded kv_put/kv_delete code: one of the codes those calls return.
fn kv_code(t: &mut TickCtx, call: Hostcall, p: Vec<u8>) -> HResult<i32> {
    match <[u8; 4]>::try_from(p.as_slice()).map(i32::from_le_bytes) {
        Ok(code @ (0 | -1 | -2 | -3 | -6)) => Ok(code),
        _ => Err(t.inconsistent(call, "recorded code is not a kv result")),
    }
}

fn kv_put(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let limits = cx.data().kv.limits();
    let key = read_input(cx, key_ptr, key_len, limits.max_key_bytes as usize, -1);
    let value = read_input(cx, val_ptr, val_len, limits.max_value_bytes as usize, -1);
    burn_bytes(cx, key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len))?;
    let HostState { tick, kv, .. } = cx.data_mut();
    let Some(t) = tick.as_mut() else { return Ok(-3) };
    let put = |kv: &mut Kv, t: &mut TickCtx, k: &[u8], v: &[u8]| {
        let old = kv.get(k).map(<[u8]>::to_vec);
        kv.put(k, v).map(|()| t.kv_undo.push((k.to_vec(), old)))
    };
    let p = t.answer(Hostcall::KvPut, |t| {
        let code: i32 = match (&key, &value) {
            (Err(c), _) | (_, Err(c)) => *c,
            _ if !permitted => -3,
            (Ok(k), Ok(v)) => match put(kv, t, k, v) {
                Ok(()) => 0,
                Err(PutError::TooLarge) => -2,
                Err(PutError::Quota) => -6,
            },
        };
        code.to_le_bytes().to_vec()
    })?;
    let code = kv_code(t, Hostcall::KvPut, p)?;
    // Replay: the write is the agent's own state, so a recorded success is
    // applied (and must be possible); a recorded refusal changes nothing.
    if t.is_replay() && code == 0 {
        let applied = match (&key, &value) {
            (Ok(k), Ok(v)) => put(kv, t, k, v).is_ok(),
            _ => false,
        };
        if !applied {
            return Err(t.inconsistent(Hostcall::KvPut, "recorded success, but the write does not apply"));
        }
    }
    Ok(code)
}

fn kv_delete(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let max_key = cx.data().kv.limits().max_key_bytes as usize;
    let key = read_input(cx, key_ptr, key_len, max_key, -1);
    burn_bytes(cx, key.as_ref().map_or(0, Vec::len))?;
    let HostState { tick, kv, .. } = cx.data_mut();
    let Some(t) = tick.as_mut() else { return Ok(-3) };
    let delete = |kv: &mut Kv, t: &mut TickCtx, k: &[u8]| {
        if let Some(old) = kv.get(k).map(<[u8]>::to_vec) {
            kv.delete(k);
            t.kv_undo.push((k.to_vec(), Some(old)));
        }
    };
    let p = t.answer(Hostcall::KvDelete, |t| {
        let code: i32 = match &key {
            Err(_) => -1,
            Ok(_) if !permitted => -3,
            Ok(k) => {
                delete(kv, t, k);
                0
            }
        };
        code.to_le_bytes().to_vec()
    })?;
    let code = kv_code(t, Hostcall::KvDelete, p)?;
    if t.is_replay() && code == 0 {
        let Ok(k) = &key else {
            return Err(t.inconsistent(Hostcall::KvDelete, "recorded success for an unreadable key"));
        };
        delete(kv, t, k);
    }
    Ok(code)
}

/// Undo the kv writes of a tick that did not complete (ticks are atomic
/// for the agent's own state).
pub fn roll_back_kv(kv: &mut Kv, undo: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
    for (key, old) in undo.into_iter().rev() {
        match old {
            // Restoring an old value only frees space: it cannot fail.
            Some(v) => {
                kv.delete(&key);
                let _ = kv.put(&key, &v);
            }
            None => kv.delete(&key),
        }
    }
}

/// Run one hostcall body and hold it to CM-4's one entry per call: inside
/// a tick every call that returns leaves exactly one entry in the log, live
/// (recorded) and in replay (consumed), whatever its body does. This is the
/// check a body that forgets to record (or records twice) cannot pass: live,
/// the tick fails instead of committing a log that would not replay.
fn one_entry<R>(cx: &mut Cx<'_>, call: Hostcall, body: impl FnOnce(&mut Cx<'_>) -> HResult<R>) -> HResult<R> {
    let before = cx.data().tick.as_ref().map(|t| t.log.entries.len());
    let result = body(cx)?;
    if let (Some(before), Some(t)) = (before, cx.data_mut().tick.as_mut()) {
        let added = t.log.entries.len() - before;
        if added != 1 {
            return Err(t.diverge(format!("entry {before} ({call}): the call left {added} log entries, not one")));
        }
    }
    Ok(result)
}

/// A linker holding exactly the hostcalls of `caps` (deny by default),
/// each behind [`one_entry`].
pub fn linker(engine: &wasmtime::Engine, caps: CapabilitySet) -> Result<Linker<HostState>, wasmtime::Error> {
    use Hostcall as H;
    let mut l = Linker::new(engine);
    let m = IMPORT_MODULE;
    for call in Hostcall::ALL.into_iter().filter(|c| caps.contains(c.capability())) {
        let n = call.name();
        match call {
            H::ClockNow => l.func_wrap(m, n, move |mut cx: Cx<'_>| one_entry(&mut cx, call, clock_now))?,
            H::RandBytes => l.func_wrap(m, n, move |mut cx: Cx<'_>, p: i32, len: i32| {
                one_entry(&mut cx, call, |cx| rand_bytes(cx, p, len))
            })?,
            H::LogEmit => l.func_wrap(m, n, move |mut cx: Cx<'_>, p: i32, len: i32| {
                one_entry(&mut cx, call, |cx| log_emit(cx, p, len))
            })?,
            H::WalletBalance => l.func_wrap(m, n, move |mut cx: Cx<'_>| one_entry(&mut cx, call, wallet_balance))?,
            H::WalletReceiptCount => {
                l.func_wrap(m, n, move |mut cx: Cx<'_>| one_entry(&mut cx, call, wallet_receipt_count))?
            }
            H::WalletReceipt => l.func_wrap(m, n, move |mut cx: Cx<'_>, i: i32, buf: i32, cap: i32| {
                one_entry(&mut cx, call, |cx| wallet_receipt(cx, i, buf, cap))
            })?,
            H::NodePrice => l.func_wrap(m, n, move |mut cx: Cx<'_>| one_entry(&mut cx, call, node_price))?,
            H::HttpRequest => l.func_wrap(
                m,
                n,
                move |mut cx: Cx<'_>,
                      a: i32,
                      b: i32,
                      c: i32,
                      d: i32,
                      e: i32,
                      f: i32,
                      g: i32,
                      h: i32,
                      i: i32,
                      j: i32| {
                    one_entry(&mut cx, call, |cx| http_request(cx, a, b, c, d, e, f, g, h, i, j))
                },
            )?,
            H::WalletPay => l.func_wrap(
                m,
                n,
                move |mut cx: Cx<'_>, amount: i64, a: i32, b: i32, c: i32, d: i32, buf: i32, cap: i32| {
                    one_entry(&mut cx, call, |cx| wallet_pay(cx, amount, a, b, c, d, buf, cap))
                },
            )?,
            H::KvGet => l.func_wrap(m, n, move |mut cx: Cx<'_>, k: i32, kl: i32, v: i32, vc: i32| {
                one_entry(&mut cx, call, |cx| kv_get(cx, k, kl, v, vc))
            })?,
            H::KvPut => l.func_wrap(m, n, move |mut cx: Cx<'_>, k: i32, kl: i32, v: i32, vl: i32| {
                one_entry(&mut cx, call, |cx| kv_put(cx, k, kl, v, vl))
            })?,
            H::KvDelete => l.func_wrap(m, n, move |mut cx: Cx<'_>, k: i32, kl: i32| {
                one_entry(&mut cx, call, |cx| kv_delete(cx, k, kl))
            })?,
        };
    }
    Ok(l)
}

impl fmt::Display for Hostcall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
