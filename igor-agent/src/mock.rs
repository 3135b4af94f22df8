//! A host for native unit tests: [`MockHost`] answers every hostcall with
//! the membrane's codes (spec §2; src/membrane.rs is the reference), and
//! [`Harness`] drives an [`Agent`] through the same path the wasm exports
//! take (init, tick, versioned checkpoint, resume), so a test that passes
//! here exercises the state encoding the node will see.
//!
//! Deterministic: the clock advances by a fixed step per call, randomness
//! is a seeded SplitMix64, http answers come from a script.

use crate::host::Host;
use crate::state::{self, StateError};
use crate::{Agent, Ctx, Tick};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Largest `rand_bytes` request (node: 64 KiB).
const MAX_RAND: usize = 64 * 1024;
/// Node limits mirrored here (src/membrane.rs).
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 * 1024;
const MAX_RECIPIENT: usize = 253;
const MAX_MEMO: usize = 256;
const RECEIPT_NEEDS: usize = 256;
const DEFAULT_QUOTA: usize = 4 * 1024 * 1024;

/// One payment the mock made.
///
/// ```
/// let mut h = igor_agent::mock::MockHost::new().with_balance(10).allow_recipient("bob");
/// igor_agent::Ctx::new(&mut h).pay(3, "bob", "m").unwrap();
/// assert_eq!(h.payments()[0], igor_agent::mock::Payment { amount: 3, recipient: "bob".into(), memo: "m".into() });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// Microcents.
    pub amount: i64,
    /// Recipient.
    pub recipient: String,
    /// Memo.
    pub memo: String,
}

/// A scripted http answer: (status, body) or a failure code.
type Scripted = Result<(u16, Vec<u8>), i32>;

/// A scripted, deterministic host.
///
/// ```
/// use igor_agent::mock::MockHost;
/// let host = MockHost::new()
///     .with_clock(1_700_000_000_000_000_000, 1_000_000_000)
///     .with_balance(5_000_000)
///     .allow_host("api.example")
///     .route("GET", "http://api.example/price", 200, b"101.5");
/// assert_eq!(host.kv().len(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct MockHost {
    clock: i64,
    clock_step: i64,
    rng: u64,
    logs: Vec<String>,
    balance: i64,
    price: i64,
    receipts: Vec<Vec<u8>>,
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    kv_quota: usize,
    owner: bool,
    allowed_hosts: Vec<String>,
    routes: BTreeMap<(String, String), Scripted>,
    http_calls: Vec<String>,
    allowed_recipients: Vec<String>,
    max_payment: i64,
    payments: Vec<Payment>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

impl MockHost {
    /// Clock at 0 advancing 1 s per call, seed 0, zero balance and price,
    /// nothing allowed for http or payments, active owner, kv empty.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new();
    /// ```
    pub fn new() -> Self {
        MockHost {
            clock: 0,
            clock_step: 1_000_000_000,
            rng: 0,
            logs: Vec::new(),
            balance: 0,
            price: 0,
            receipts: Vec::new(),
            kv: BTreeMap::new(),
            kv_quota: DEFAULT_QUOTA,
            owner: true,
            allowed_hosts: Vec::new(),
            routes: BTreeMap::new(),
            http_calls: Vec::new(),
            allowed_recipients: Vec::new(),
            max_payment: 0,
            payments: Vec::new(),
        }
    }
    /// `clock_now` starts at `start_ns` and advances `step_ns` per call.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_clock(0, 0);
    /// ```
    pub fn with_clock(mut self, start_ns: i64, step_ns: i64) -> Self {
        self.clock = start_ns;
        self.clock_step = step_ns;
        self
    }
    /// Seed of `rand_bytes`.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_seed(7);
    /// ```
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = seed;
        self
    }
    /// Budget, microcents (payments lower it).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_balance(1);
    /// ```
    pub fn with_balance(mut self, microcents: i64) -> Self {
        self.balance = microcents;
        self
    }
    /// `node_price`.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_price(1);
    /// ```
    pub fn with_price(mut self, microcents_per_s: i64) -> Self {
        self.price = microcents_per_s;
        self
    }
    /// Hand the agent one more receipt.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_receipt(b"IGRC".to_vec());
    /// ```
    pub fn with_receipt(mut self, bytes: Vec<u8>) -> Self {
        self.receipts.push(bytes);
        self
    }
    /// Per-agent kv quota in bytes (keys plus values).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_kv_quota(16);
    /// ```
    pub fn with_kv_quota(mut self, bytes: usize) -> Self {
        self.kv_quota = bytes;
        self
    }
    /// Add a host to the http allow-list (the manifest's `allowed_hosts`).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().allow_host("api.example");
    /// ```
    pub fn allow_host(mut self, host: &str) -> Self {
        self.allowed_hosts.push(host.to_string());
        self
    }
    /// Script an http answer (status and body) for `METHOD url`.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().route("GET", "http://a.example/", 200, b"ok");
    /// ```
    pub fn route(mut self, method: &str, url: &str, status: u16, body: &[u8]) -> Self {
        self.routes.insert((method.into(), url.into()), Ok((status, body.to_vec())));
        self
    }
    /// Script an http failure code (-1 network, -4 timeout) for `METHOD url`.
    /// Unscripted requests to allowed hosts are -1.
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().route_error("GET", "http://a.example/", -4);
    /// ```
    pub fn route_error(mut self, method: &str, url: &str, code: i32) -> Self {
        self.routes.insert((method.into(), url.into()), Err(code));
        self
    }
    /// Add a payment recipient (the manifest's `allowed_recipients`).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().allow_recipient("alice");
    /// ```
    pub fn allow_recipient(mut self, who: &str) -> Self {
        self.allowed_recipients.push(who.to_string());
        self
    }
    /// `max_payment_microcents` (0 = no cap).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().with_max_payment(100);
    /// ```
    pub fn with_max_payment(mut self, microcents: i64) -> Self {
        self.max_payment = microcents;
        self
    }
    /// This node is not the active owner: side effects return -3 (CM-5).
    ///
    /// ```
    /// let _ = igor_agent::mock::MockHost::new().not_owner();
    /// ```
    pub fn not_owner(mut self) -> Self {
        self.owner = false;
        self
    }
    /// Change ownership between ticks.
    ///
    /// ```
    /// let mut h = igor_agent::mock::MockHost::new();
    /// h.set_owner(false);
    /// ```
    pub fn set_owner(&mut self, owner: bool) {
        self.owner = owner;
    }
    /// Log lines emitted so far.
    ///
    /// ```
    /// assert!(igor_agent::mock::MockHost::new().logs().is_empty());
    /// ```
    pub fn logs(&self) -> &[String] {
        &self.logs
    }
    /// Payments made so far.
    ///
    /// ```
    /// assert!(igor_agent::mock::MockHost::new().payments().is_empty());
    /// ```
    pub fn payments(&self) -> &[Payment] {
        &self.payments
    }
    /// Every http request that reached the script (`METHOD url`), refused ones excluded.
    ///
    /// ```
    /// assert!(igor_agent::mock::MockHost::new().http_calls().is_empty());
    /// ```
    pub fn http_calls(&self) -> &[String] {
        &self.http_calls
    }
    /// The agent's kv store.
    ///
    /// ```
    /// assert!(igor_agent::mock::MockHost::new().kv().is_empty());
    /// ```
    pub fn kv(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.kv
    }
    /// Replace the kv store (what a migration package carries).
    ///
    /// ```
    /// let mut h = igor_agent::mock::MockHost::new();
    /// h.set_kv(Default::default());
    /// ```
    pub fn set_kv(&mut self, kv: BTreeMap<Vec<u8>, Vec<u8>>) {
        self.kv = kv;
    }

    fn kv_used_with(&self, key: &[u8], val: &[u8]) -> usize {
        let others: usize = self.kv.iter().filter(|(k, _)| k.as_slice() != key).map(|(k, v)| k.len() + v.len()).sum();
        others + key.len() + val.len()
    }
}

/// The host part of a URL (`scheme://[user@]host[:port]/...`).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    let host = auth.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hint(buf: &mut [u8], needed: usize) {
    if buf.len() >= 4 {
        buf[..4].copy_from_slice(&(needed as u32).to_le_bytes());
    }
}

impl Host for MockHost {
    fn clock_now(&mut self) -> i64 {
        let now = self.clock;
        self.clock = self.clock.saturating_add(self.clock_step);
        now
    }
    fn rand_bytes(&mut self, buf: &mut [u8]) -> i32 {
        if buf.len() > MAX_RAND {
            return -2;
        }
        for chunk in buf.chunks_mut(8) {
            let v = splitmix(&mut self.rng).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        0
    }
    fn log_emit(&mut self, msg: &[u8]) {
        self.logs.push(String::from_utf8_lossy(msg).into_owned());
    }
    fn wallet_balance(&mut self) -> i64 {
        self.balance
    }
    fn wallet_receipt_count(&mut self) -> i32 {
        self.receipts.len() as i32
    }
    fn wallet_receipt(&mut self, index: i32, buf: &mut [u8]) -> i32 {
        let Some(r) = usize::try_from(index).ok().and_then(|i| self.receipts.get(i)) else { return -1 };
        if r.len() > buf.len() {
            return -4;
        }
        buf[..r.len()].copy_from_slice(r);
        r.len() as i32
    }
    fn node_price(&mut self) -> i64 {
        self.price
    }
    fn http_request(&mut self, method: &[u8], url: &[u8], _headers: &[u8], _body: &[u8], resp: &mut [u8]) -> i32 {
        let (Ok(method), Ok(url)) = (core::str::from_utf8(method), core::str::from_utf8(url)) else { return -1 };
        if !self.owner || !url_host(url).is_some_and(|h| self.allowed_hosts.iter().any(|a| a == h)) {
            return -3;
        }
        self.http_calls.push(format!("{method} {url}"));
        match self.routes.get(&(method.to_string(), url.to_string())) {
            Some(Ok((status, body))) if body.len() > resp.len() => {
                let _ = status;
                hint(resp, body.len());
                -5
            }
            Some(Ok((status, body))) => {
                resp[..body.len()].copy_from_slice(body);
                i32::from(*status)
            }
            Some(Err(code)) => *code,
            None => -1,
        }
    }
    fn wallet_pay(&mut self, amount: i64, recipient: &[u8], memo: &[u8], receipt: &mut [u8]) -> i32 {
        if !self.owner {
            return -3;
        }
        if recipient.len() > MAX_RECIPIENT || memo.len() > MAX_MEMO {
            return -2;
        }
        let (Ok(recipient), Ok(memo)) = (core::str::from_utf8(recipient), core::str::from_utf8(memo)) else {
            return -6;
        };
        if !self.allowed_recipients.iter().any(|r| r == recipient) {
            return -3;
        }
        if amount <= 0 {
            return -6;
        }
        if self.max_payment > 0 && amount > self.max_payment {
            return -4;
        }
        if receipt.len() < RECEIPT_NEEDS {
            hint(receipt, RECEIPT_NEEDS);
            return -5;
        }
        if amount > self.balance {
            return -1;
        }
        self.balance -= amount;
        self.payments.push(Payment { amount, recipient: recipient.into(), memo: memo.into() });
        let r = format!("mock-receipt #{} {amount} to {recipient}", self.payments.len());
        receipt[..r.len()].copy_from_slice(r.as_bytes());
        r.len() as i32
    }
    fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> i32 {
        let Some(v) = self.kv.get(key) else { return -5 };
        if v.len() > buf.len() {
            hint(buf, v.len());
            return -4;
        }
        buf[..v.len()].copy_from_slice(v);
        v.len() as i32
    }
    fn kv_put(&mut self, key: &[u8], val: &[u8]) -> i32 {
        if !self.owner {
            return -3;
        }
        if key.len() > MAX_KEY || val.len() > MAX_VALUE {
            return -2;
        }
        if self.kv_used_with(key, val) > self.kv_quota {
            return -6;
        }
        self.kv.insert(key.to_vec(), val.to_vec());
        0
    }
    fn kv_delete(&mut self, key: &[u8]) -> i32 {
        if !self.owner {
            return -3;
        }
        self.kv.remove(key);
        0
    }
}

/// Drives an [`Agent`] like the node does, against a [`MockHost`].
///
/// ```
/// use igor_agent::{Agent, Ctx, Tick, mock::{Harness, MockHost}};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Beat { n: u64 }
/// impl Agent for Beat {
///     fn init() -> Self { Beat { n: 0 } }
///     fn tick(&mut self, _: &mut Ctx<'_>) -> Tick { self.n += 1; Tick::Idle }
/// }
/// let mut a = Harness::<Beat>::new(MockHost::new());
/// a.ticks(3);
/// let mut b = a.migrate(MockHost::new()).unwrap(); // state and kv travel
/// b.tick();
/// assert_eq!(b.agent().n, 4);
/// ```
pub struct Harness<A> {
    host: MockHost,
    agent: A,
}

impl<A: Agent> Harness<A> {
    /// A fresh agent (`agent_init`) on `host`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let _ = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new());
    /// ```
    pub fn new(host: MockHost) -> Self {
        Harness { host, agent: A::init() }
    }
    /// One `agent_tick`.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let mut h = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new());
    /// assert_eq!(h.tick(), igor_agent::Tick::Idle);
    /// ```
    pub fn tick(&mut self) -> Tick {
        self.agent.tick(&mut Ctx::new(&mut self.host))
    }
    /// `n` ticks.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new()).ticks(2);
    /// ```
    pub fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }
    /// `agent_checkpoint`: the versioned state bytes.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let h = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new());
    /// assert_eq!(&h.checkpoint().unwrap()[..4], b"IGAS");
    /// ```
    pub fn checkpoint(&self) -> Result<Vec<u8>, StateError> {
        state::encode(&self.agent, A::VERSION)
    }
    /// `agent_resume`: replace the agent with decoded state (the wasm build
    /// traps where this returns `Err`).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let mut h = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new());
    /// assert!(h.resume(b"garbage").is_err());
    /// ```
    pub fn resume(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.agent = state::decode(bytes, A::VERSION)?;
        Ok(())
    }
    /// Checkpoint here, carry state and kv to `host`, resume there: what a
    /// migration does to the agent.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let h = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new());
    /// let _moved = h.migrate(igor_agent::mock::MockHost::new()).unwrap();
    /// ```
    pub fn migrate(self, mut host: MockHost) -> Result<Harness<A>, StateError> {
        let bytes = self.checkpoint()?;
        host.set_kv(self.host.kv);
        let mut next = Harness::new(host);
        next.resume(&bytes)?;
        Ok(next)
    }
    /// The agent.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let _ = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new()).agent();
    /// ```
    pub fn agent(&self) -> &A {
        &self.agent
    }
    /// The agent, mutable.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// let _ = igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new()).agent_mut();
    /// ```
    pub fn agent_mut(&mut self) -> &mut A {
        &mut self.agent
    }
    /// The host.
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// assert!(igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new()).host().logs().is_empty());
    /// ```
    pub fn host(&self) -> &MockHost {
        &self.host
    }
    /// The host, mutable (script more answers between ticks).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Q;
    /// # impl igor_agent::Agent for Q { fn init() -> Self { Q } fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle } }
    /// igor_agent::mock::Harness::<Q>::new(igor_agent::mock::MockHost::new()).host_mut().set_owner(false);
    /// ```
    pub fn host_mut(&mut self) -> &mut MockHost {
        &mut self.host
    }
}
