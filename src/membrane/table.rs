//! The hostcall table (ids, names, capabilities, signatures), the import
//! check that refuses an undeclared import before instantiation, and the
//! linker that links exactly the granted hostcalls, each held to CM-4's one
//! log entry per call.

use super::*;

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

pub(super) fn sig_text(params: &[ValType], results: &[ValType]) -> String {
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

/// Run one hostcall body and hold it to CM-4's one entry per call: inside
/// a tick every call that returns leaves exactly one entry in the log, live
/// (recorded) and in replay (consumed), whatever its body does. This is the
/// check a body that forgets to record (or records twice) cannot pass: live,
/// the tick fails instead of committing a log that would not replay.
pub(super) fn one_entry<R>(
    cx: &mut Cx<'_>,
    call: Hostcall,
    body: impl FnOnce(&mut Cx<'_>) -> HResult<R>,
) -> HResult<R> {
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
