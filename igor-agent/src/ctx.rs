//! [`Ctx`]: typed wrappers over the hostcalls of spec §2. Every fallible
//! call returns a `Result` whose error names the membrane's code; nothing
//! here retries a side effect (an http request or a payment answered with
//! "buffer too small" has already happened, so that is reported, not
//! repeated). Reads that are not side effects (`kv_get`, receipts) are
//! retried once with the buffer size the host asked for.

use crate::host::Host;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

#[cfg(target_arch = "wasm32")]
pub(crate) type HostImpl = crate::host::WasmHost;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type HostImpl = crate::mock::MockHost;

/// Receipt buffer `wallet_pay` requires before it pays (src/membrane.rs).
const RECEIPT_CAP: usize = 256;
/// Largest value `kv_get` will grow its buffer to (the node's value cap).
const KV_VALUE_MAX: usize = 64 * 1024;
/// First guess for a receipt's size.
const RECEIPT_GUESS: usize = 512;

/// The hostcalls, typed. An agent gets one per tick.
///
/// ```
/// use igor_agent::mock::MockHost;
/// let mut host = MockHost::new().with_clock(1_000, 10);
/// let mut cx = igor_agent::Ctx::new(&mut host);
/// assert_eq!(cx.now_ns(), 1_000);
/// assert_eq!(cx.now_ns(), 1_010);
/// ```
pub struct Ctx<'a> {
    host: &'a mut HostImpl,
}

/// `rand_bytes` failed.
///
/// ```
/// assert_eq!(igor_agent::RandError::from_code(-2).to_string(), "rand_bytes: request too large (-2)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandError {
    /// -1: no randomness now (e.g. outside a tick).
    Unavailable,
    /// -2: more than the node's per-call cap.
    TooLarge,
    /// -4: buffer outside guest memory.
    OutOfBounds,
    /// Any other code.
    Other(i32),
}

/// `wallet_receipt` failed.
///
/// ```
/// assert_eq!(igor_agent::ReceiptError::NoSuchReceipt(3).to_string(), "wallet_receipt: no receipt at index 3 (-1)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiptError {
    /// -1: no receipt at that index.
    NoSuchReceipt(u32),
    /// Another code (-4 after a retry with a larger buffer, or unknown).
    Other(i32),
}

/// `http_request` failed (spec §2 codes).
///
/// ```
/// assert_eq!(igor_agent::HttpError::from_code(-3, &[]).code(), -3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpError {
    /// -1: network error (refused connection, DNS, TLS, bad URL).
    Network,
    /// -2: method, url, headers or body too long.
    InputTooLong,
    /// -3: the host is not in the manifest's `allowed_hosts`, or the node is
    /// not the agent's active owner (side effects are gated, CM-5).
    Refused,
    /// -4: timed out.
    Timeout,
    /// -5: the response needs `needed` bytes; ask again with
    /// [`Request::max_response`] at least that large.
    TooLarge {
        /// Bytes the response needs (a lower bound when the host did not read it all).
        needed: u32,
    },
    /// Any other negative code.
    Other(i32),
}

/// `wallet_pay` failed (spec §2 codes).
///
/// ```
/// assert_eq!(igor_agent::PayError::from_code(-4).to_string(), "wallet_pay: amount over the manifest cap (-4)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayError {
    /// -1: the budget cannot cover it.
    InsufficientBudget,
    /// -2: recipient or memo too long.
    InputTooLong,
    /// -3: recipient not in `allowed_recipients`, or not the active owner.
    Refused,
    /// -4: over `max_payment_microcents`.
    OverCap,
    /// -5: receipt buffer too small (never with this SDK: it passes 256 bytes).
    BufferTooSmall,
    /// -6 or any other code.
    Other(i32),
}

/// A kv hostcall failed (spec §2 codes).
///
/// ```
/// assert_eq!(igor_agent::KvError::from_code(-6).to_string(), "kv: quota exceeded (-6)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvError {
    /// -2: key or value too large.
    TooLarge,
    /// -3: the node is not the active owner (writes are side effects).
    NotOwner,
    /// -6: the per-agent quota would be exceeded.
    QuotaExceeded,
    /// -1 or any other code.
    Other(i32),
}

macro_rules! code_display {
    ($t:ty, $prefix:literal, |$s:ident| $body:expr) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $s = self;
                let (what, code): (&str, i32) = $body;
                write!(f, concat!($prefix, ": {} ({})"), what, code)
            }
        }
        impl core::error::Error for $t {}
    };
}

impl RandError {
    /// The typed error for a `rand_bytes` code.
    ///
    /// ```
    /// assert_eq!(igor_agent::RandError::from_code(-1), igor_agent::RandError::Unavailable);
    /// ```
    pub fn from_code(code: i32) -> Self {
        match code {
            -1 => RandError::Unavailable,
            -2 => RandError::TooLarge,
            -4 => RandError::OutOfBounds,
            c => RandError::Other(c),
        }
    }
    /// The membrane's code.
    ///
    /// ```
    /// assert_eq!(igor_agent::RandError::TooLarge.code(), -2);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            RandError::Unavailable => -1,
            RandError::TooLarge => -2,
            RandError::OutOfBounds => -4,
            RandError::Other(c) => c,
        }
    }
}
code_display!(RandError, "rand_bytes", |e| (
    match e {
        RandError::Unavailable => "no randomness available",
        RandError::TooLarge => "request too large",
        RandError::OutOfBounds => "buffer out of bounds",
        RandError::Other(_) => "unexpected code",
    },
    e.code()
));

impl ReceiptError {
    /// The membrane's code.
    ///
    /// ```
    /// assert_eq!(igor_agent::ReceiptError::NoSuchReceipt(0).code(), -1);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            ReceiptError::NoSuchReceipt(_) => -1,
            ReceiptError::Other(c) => c,
        }
    }
}
impl fmt::Display for ReceiptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiptError::NoSuchReceipt(i) => write!(f, "wallet_receipt: no receipt at index {i} (-1)"),
            ReceiptError::Other(c) => write!(f, "wallet_receipt: unexpected code ({c})"),
        }
    }
}
impl core::error::Error for ReceiptError {}

impl HttpError {
    /// The typed error for an `http_request` code; `resp` is the response
    /// buffer (its first 4 bytes carry the needed length on -5).
    ///
    /// ```
    /// use igor_agent::HttpError;
    /// assert_eq!(HttpError::from_code(-5, &[9, 0, 0, 0]), HttpError::TooLarge { needed: 9 });
    /// ```
    pub fn from_code(code: i32, resp: &[u8]) -> Self {
        match code {
            -1 => HttpError::Network,
            -2 => HttpError::InputTooLong,
            -3 => HttpError::Refused,
            -4 => HttpError::Timeout,
            -5 => HttpError::TooLarge { needed: le_u32(resp) },
            c => HttpError::Other(c),
        }
    }
    /// The membrane's code.
    ///
    /// ```
    /// assert_eq!(igor_agent::HttpError::Timeout.code(), -4);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            HttpError::Network => -1,
            HttpError::InputTooLong => -2,
            HttpError::Refused => -3,
            HttpError::Timeout => -4,
            HttpError::TooLarge { .. } => -5,
            HttpError::Other(c) => c,
        }
    }
}
impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            HttpError::Network => "network error",
            HttpError::InputTooLong => "input too long",
            HttpError::Refused => "refused: host not in allowed_hosts or node not the active owner",
            HttpError::Timeout => "timed out",
            HttpError::TooLarge { needed } => return write!(f, "http_request: response needs {needed} bytes (-5)"),
            HttpError::Other(_) => "unexpected code",
        };
        write!(f, "http_request: {what} ({})", self.code())
    }
}
impl core::error::Error for HttpError {}

impl PayError {
    /// The typed error for a `wallet_pay` code.
    ///
    /// ```
    /// assert_eq!(igor_agent::PayError::from_code(-1), igor_agent::PayError::InsufficientBudget);
    /// ```
    pub fn from_code(code: i32) -> Self {
        match code {
            -1 => PayError::InsufficientBudget,
            -2 => PayError::InputTooLong,
            -3 => PayError::Refused,
            -4 => PayError::OverCap,
            -5 => PayError::BufferTooSmall,
            c => PayError::Other(c),
        }
    }
    /// The membrane's code.
    ///
    /// ```
    /// assert_eq!(igor_agent::PayError::Refused.code(), -3);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            PayError::InsufficientBudget => -1,
            PayError::InputTooLong => -2,
            PayError::Refused => -3,
            PayError::OverCap => -4,
            PayError::BufferTooSmall => -5,
            PayError::Other(c) => c,
        }
    }
}
code_display!(PayError, "wallet_pay", |e| (
    match e {
        PayError::InsufficientBudget => "insufficient budget",
        PayError::InputTooLong => "recipient or memo too long",
        PayError::Refused => "refused: recipient not allowed or node not the active owner",
        PayError::OverCap => "amount over the manifest cap",
        PayError::BufferTooSmall => "receipt buffer too small",
        PayError::Other(_) => "failed",
    },
    e.code()
));

impl KvError {
    /// The typed error for a `kv_*` code.
    ///
    /// ```
    /// assert_eq!(igor_agent::KvError::from_code(-3), igor_agent::KvError::NotOwner);
    /// ```
    pub fn from_code(code: i32) -> Self {
        match code {
            -2 => KvError::TooLarge,
            -3 => KvError::NotOwner,
            -6 => KvError::QuotaExceeded,
            c => KvError::Other(c),
        }
    }
    /// The membrane's code.
    ///
    /// ```
    /// assert_eq!(igor_agent::KvError::QuotaExceeded.code(), -6);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            KvError::TooLarge => -2,
            KvError::NotOwner => -3,
            KvError::QuotaExceeded => -6,
            KvError::Other(c) => c,
        }
    }
}
code_display!(KvError, "kv", |e| (
    match e {
        KvError::TooLarge => "key or value too large",
        KvError::NotOwner => "node is not the active owner",
        KvError::QuotaExceeded => "quota exceeded",
        KvError::Other(_) => "error",
    },
    e.code()
));

fn le_u32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// An HTTP request for [`Ctx::http`].
///
/// ```
/// let r = igor_agent::Request::get("http://api.example/data").header("Accept", "text/plain").max_response(128);
/// assert_eq!(r.url(), "http://api.example/data");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    method: String,
    url: String,
    headers: String,
    body: Vec<u8>,
    max_response: usize,
}

/// Default response buffer of a [`Request`] (16 KiB).
const DEFAULT_MAX_RESPONSE: usize = 16 * 1024;

impl Request {
    /// A request with any method.
    ///
    /// ```
    /// let r = igor_agent::Request::new("DELETE", "http://api.example/x");
    /// assert_eq!(r.url(), "http://api.example/x");
    /// ```
    pub fn new(method: &str, url: &str) -> Self {
        Request {
            method: method.into(),
            url: url.into(),
            headers: String::new(),
            body: Vec::new(),
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }
    /// `GET url`.
    ///
    /// ```
    /// let _ = igor_agent::Request::get("http://api.example/data");
    /// ```
    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }
    /// `POST url` with a body.
    ///
    /// ```
    /// let _ = igor_agent::Request::post("http://api.example/in", b"{}".to_vec());
    /// ```
    pub fn post(url: &str, body: Vec<u8>) -> Self {
        Request { body, ..Self::new("POST", url) }
    }
    /// Add a `Name: value` header line.
    ///
    /// ```
    /// let _ = igor_agent::Request::get("http://a.example/").header("X-Id", "7");
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if !self.headers.is_empty() {
            self.headers.push_str("\r\n");
        }
        self.headers.push_str(name);
        self.headers.push_str(": ");
        self.headers.push_str(value);
        self
    }
    /// Size of the response buffer (default 16 KiB). A larger response is
    /// [`HttpError::TooLarge`] with the size it needs.
    ///
    /// ```
    /// let _ = igor_agent::Request::get("http://a.example/").max_response(1 << 20);
    /// ```
    pub fn max_response(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }
    /// The URL.
    ///
    /// ```
    /// assert_eq!(igor_agent::Request::get("http://a.example/").url(), "http://a.example/");
    /// ```
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// An HTTP response (any status, including 4xx and 5xx).
///
/// ```
/// let r = igor_agent::Response { status: 200, body: b"ok".to_vec() };
/// assert!(r.is_success());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// 2xx.
    ///
    /// ```
    /// assert!(!igor_agent::Response { status: 404, body: vec![] }.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl<'a> Ctx<'a> {
    /// A context over a host (natively, the mock; the export macro builds
    /// the wasm one).
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new();
    /// let _cx = igor_agent::Ctx::new(&mut host);
    /// ```
    pub fn new(host: &'a mut HostImpl) -> Self {
        Ctx { host }
    }

    /// The host behind this context (the mock, natively).
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new();
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// cx.log("x");
    /// assert_eq!(cx.host().logs().len(), 1);
    /// ```
    pub fn host(&mut self) -> &mut HostImpl {
        self.host
    }

    /// `clock_now`: the node's wall clock, unix nanoseconds (recorded, so a
    /// replay sees the same value). Needs capability `clock`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_clock(5, 0);
    /// assert_eq!(igor_agent::Ctx::new(&mut host).now_ns(), 5);
    /// ```
    pub fn now_ns(&mut self) -> i64 {
        self.host.clock_now()
    }

    /// `rand_bytes`: fill `buf` (recorded). Needs capability `rand`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_seed(1);
    /// let mut b = [0u8; 8];
    /// igor_agent::Ctx::new(&mut host).random(&mut b).unwrap();
    /// assert_ne!(b, [0u8; 8]);
    /// ```
    pub fn random(&mut self, buf: &mut [u8]) -> Result<(), RandError> {
        match self.host.rand_bytes(buf) {
            0 => Ok(()),
            c => Err(RandError::from_code(c)),
        }
    }

    /// A random `u64` through [`Ctx::random`].
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_seed(2);
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// assert_ne!(cx.random_u64().unwrap(), cx.random_u64().unwrap());
    /// ```
    pub fn random_u64(&mut self) -> Result<u64, RandError> {
        let mut b = [0u8; 8];
        self.random(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// `log_emit`: one log line (capped by the node at 1 MiB). Needs `log`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new();
    /// igor_agent::Ctx::new(&mut host).log("hello");
    /// assert_eq!(host.logs(), ["hello"]);
    /// ```
    pub fn log(&mut self, msg: &str) {
        self.host.log_emit(msg.as_bytes())
    }

    /// `wallet_balance`: the budget left, microcents (this tick's payments
    /// already deducted). Needs `wallet`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_balance(1_000);
    /// assert_eq!(igor_agent::Ctx::new(&mut host).balance(), 1_000);
    /// ```
    pub fn balance(&mut self) -> i64 {
        self.host.wallet_balance()
    }

    /// `wallet_receipt_count`: receipts the node handed this tick. Needs `wallet`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_receipt(vec![1, 2]);
    /// assert_eq!(igor_agent::Ctx::new(&mut host).receipt_count(), 1);
    /// ```
    pub fn receipt_count(&mut self) -> u32 {
        u32::try_from(self.host.wallet_receipt_count()).unwrap_or(0)
    }

    /// `wallet_receipt`: the receipt at `index` (node-signed `IGRC` bytes).
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_receipt(vec![7; 600]);
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// assert_eq!(cx.receipt(0).unwrap().len(), 600);
    /// assert!(cx.receipt(1).is_err());
    /// ```
    pub fn receipt(&mut self, index: u32) -> Result<Vec<u8>, ReceiptError> {
        let i = i32::try_from(index).map_err(|_| ReceiptError::NoSuchReceipt(index))?;
        let mut cap = RECEIPT_GUESS;
        loop {
            let mut buf = vec![0u8; cap];
            match self.host.wallet_receipt(i, &mut buf) {
                n if n >= 0 => {
                    buf.truncate(n as usize);
                    return Ok(buf);
                }
                -1 => return Err(ReceiptError::NoSuchReceipt(index)),
                -4 if cap < KV_VALUE_MAX => cap *= 4,
                c => return Err(ReceiptError::Other(c)),
            }
        }
    }

    /// `node_price`: this node's price per second, microcents. Needs `pricing`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_price(1_000);
    /// assert_eq!(igor_agent::Ctx::new(&mut host).node_price(), 1_000);
    /// ```
    pub fn node_price(&mut self) -> i64 {
        self.host.node_price()
    }

    /// `http_request`: one request through the manifest's `allowed_hosts`
    /// (redirects re-checked by the node). Any status is `Ok`; transport
    /// failures and refusals are `Err`. A side effect: never retried here.
    /// The ABI does not return the body length, so trailing NUL bytes of a
    /// body are dropped (text bodies are exact). Needs `http`.
    ///
    /// ```
    /// use igor_agent::{Request, HttpError};
    /// let mut host = igor_agent::mock::MockHost::new()
    ///     .allow_host("api.example")
    ///     .route("GET", "http://api.example/data", 200, b"42");
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// assert_eq!(cx.http(&Request::get("http://api.example/data")).unwrap().body, b"42");
    /// assert_eq!(cx.http(&Request::get("http://evil.example/")), Err(HttpError::Refused));
    /// ```
    pub fn http(&mut self, req: &Request) -> Result<Response, HttpError> {
        // At least 4 bytes, so a -5 can carry its needed length.
        let mut resp = vec![0u8; req.max_response.max(4)];
        let code = self.host.http_request(
            req.method.as_bytes(),
            req.url.as_bytes(),
            req.headers.as_bytes(),
            &req.body,
            &mut resp,
        );
        if code < 0 {
            return Err(HttpError::from_code(code, &resp));
        }
        // ABI gap (spec §2): `http_request` returns the status, not the body
        // length. The buffer starts zeroed, so the body ends at its last
        // non-zero byte: exact for text, and a binary body loses trailing
        // NUL bytes.
        let len = resp.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        resp.truncate(len);
        Ok(Response { status: u16::try_from(code).unwrap_or(u16::MAX), body: resp })
    }

    /// `wallet_pay`: pay `amount` microcents to `recipient` (must be in the
    /// manifest's `allowed_recipients`, and under `max_payment_microcents`).
    /// Returns the payment receipt. A side effect: never retried here.
    /// Needs `x402`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().with_balance(100).allow_recipient("alice");
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// assert!(cx.pay(10, "alice", "tip").is_ok());
    /// assert_eq!(cx.pay(10, "mallory", "tip"), Err(igor_agent::PayError::Refused));
    /// assert_eq!(cx.balance(), 90);
    /// ```
    pub fn pay(&mut self, amount: i64, recipient: &str, memo: &str) -> Result<Vec<u8>, PayError> {
        let mut receipt = vec![0u8; RECEIPT_CAP];
        match self.host.wallet_pay(amount, recipient.as_bytes(), memo.as_bytes(), &mut receipt) {
            n if n >= 0 => {
                receipt.truncate(n as usize);
                Ok(receipt)
            }
            c => Err(PayError::from_code(c)),
        }
    }

    /// `kv_get`: the value under `key`, `None` if absent. Needs `kv`.
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new();
    /// let mut cx = igor_agent::Ctx::new(&mut host);
    /// assert_eq!(cx.kv_get(b"k").unwrap(), None);
    /// cx.kv_put(b"k", &[1; 100]).unwrap();
    /// assert_eq!(cx.kv_get(b"k").unwrap().unwrap().len(), 100);
    /// ```
    pub fn kv_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let mut cap = 64;
        loop {
            let mut buf = vec![0u8; cap];
            match self.host.kv_get(key, &mut buf) {
                n if n >= 0 => {
                    buf.truncate(n as usize);
                    return Ok(Some(buf));
                }
                -5 => return Ok(None),
                -4 if cap < KV_VALUE_MAX => cap = (le_u32(&buf) as usize).clamp(cap + 1, KV_VALUE_MAX),
                c => return Err(KvError::from_code(c)),
            }
        }
    }

    /// `kv_put`: store `val` under `key` (travels with the agent, sealed).
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new().not_owner();
    /// assert_eq!(igor_agent::Ctx::new(&mut host).kv_put(b"k", b"v"), Err(igor_agent::KvError::NotOwner));
    /// ```
    pub fn kv_put(&mut self, key: &[u8], val: &[u8]) -> Result<(), KvError> {
        match self.host.kv_put(key, val) {
            0 => Ok(()),
            c => Err(KvError::from_code(c)),
        }
    }

    /// `kv_delete`: remove `key` (Ok when absent too).
    ///
    /// ```
    /// let mut host = igor_agent::mock::MockHost::new();
    /// assert_eq!(igor_agent::Ctx::new(&mut host).kv_delete(b"gone"), Ok(()));
    /// ```
    pub fn kv_delete(&mut self, key: &[u8]) -> Result<(), KvError> {
        match self.host.kv_delete(key) {
            0 => Ok(()),
            c => Err(KvError::from_code(c)),
        }
    }
}
