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

mod clock;
mod ctx;
mod http;
mod kv;
mod log;
mod memory;
mod pricing;
mod rand;
mod table;
mod wallet;

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

pub use ctx::{Diverged, Grants, HostState, TickCtx, first_difference};
pub use kv::roll_back_kv;
pub use table::{Hostcall, ImportError, check_imports, linker};
pub use wallet::{LedgerPayments, Payment, PaymentGateway};

use clock::*;
use ctx::*;
use http::*;
use kv::*;
use log::*;
use memory::*;
use pricing::*;
use rand::*;
use wallet::*;

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

type Cx<'a> = Caller<'a, HostState>;
type HResult<T> = Result<T, wasmtime::Error>;
