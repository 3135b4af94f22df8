//! The raw hostcall surface: one method per `igor.*` import of spec §2,
//! with slices instead of pointer/length pairs and the membrane's integer
//! codes unchanged. On wasm32 it is [`WasmHost`], the imports themselves;
//! natively it is [`crate::mock::MockHost`]. [`crate::Ctx`] turns the codes
//! into typed results.

/// The `igor.*` imports as safe methods (codes as in spec §2).
///
/// Implemented by the wasm import shim and by [`crate::mock::MockHost`];
/// agents use the typed [`crate::Ctx`] instead.
///
/// ```
/// use igor_agent::Host;
/// let mut h = igor_agent::mock::MockHost::new();
/// assert_eq!(h.kv_get(b"absent", &mut [0u8; 8]), -5);
/// ```
pub trait Host {
    /// `clock_now`: unix nanoseconds.
    ///
    /// ```
    /// use igor_agent::Host;
    /// let mut h = igor_agent::mock::MockHost::new().with_clock(7, 0);
    /// assert_eq!(h.clock_now(), 7);
    /// ```
    fn clock_now(&mut self) -> i64;
    /// `rand_bytes`: 0 ok, -1 error, -2 too large, -4 out of bounds.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().rand_bytes(&mut [0u8; 4]), 0);
    /// ```
    fn rand_bytes(&mut self, buf: &mut [u8]) -> i32;
    /// `log_emit`.
    ///
    /// ```
    /// use igor_agent::Host;
    /// let mut h = igor_agent::mock::MockHost::new();
    /// h.log_emit(b"hi");
    /// assert_eq!(h.logs(), ["hi"]);
    /// ```
    fn log_emit(&mut self, msg: &[u8]);
    /// `wallet_balance`: budget in microcents.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().with_balance(5).wallet_balance(), 5);
    /// ```
    fn wallet_balance(&mut self) -> i64;
    /// `wallet_receipt_count`.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().wallet_receipt_count(), 0);
    /// ```
    fn wallet_receipt_count(&mut self) -> i32;
    /// `wallet_receipt`: bytes written, -1 bad index, -4 buffer small.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().wallet_receipt(0, &mut [0u8; 8]), -1);
    /// ```
    fn wallet_receipt(&mut self, index: i32, buf: &mut [u8]) -> i32;
    /// `node_price`: microcents per second.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().with_price(9).node_price(), 9);
    /// ```
    fn node_price(&mut self) -> i64;
    /// `http_request`: status, or -1 network, -2 input too long, -3 refused,
    /// -4 timeout, -5 too large (first 4 bytes of `resp` = needed length).
    ///
    /// ```
    /// use igor_agent::Host;
    /// let mut h = igor_agent::mock::MockHost::new();
    /// assert_eq!(h.http_request(b"GET", b"http://x.example/", b"", b"", &mut [0u8; 8]), -3);
    /// ```
    fn http_request(&mut self, method: &[u8], url: &[u8], headers: &[u8], body: &[u8], resp: &mut [u8]) -> i32;
    /// `wallet_pay`: receipt bytes written, or -1..-6.
    ///
    /// ```
    /// use igor_agent::Host;
    /// let mut h = igor_agent::mock::MockHost::new();
    /// assert_eq!(h.wallet_pay(1, b"bob", b"", &mut [0u8; 256]), -3);
    /// ```
    fn wallet_pay(&mut self, amount: i64, recipient: &[u8], memo: &[u8], receipt: &mut [u8]) -> i32;
    /// `kv_get`: bytes written, -5 not found, -4 buffer small (needed length
    /// in the first 4 bytes), -1 error.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().kv_get(b"k", &mut [0u8; 4]), -5);
    /// ```
    fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> i32;
    /// `kv_put`: 0 ok, -2 too large, -3 not the active owner, -6 quota.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().kv_put(b"k", b"v"), 0);
    /// ```
    fn kv_put(&mut self, key: &[u8], val: &[u8]) -> i32;
    /// `kv_delete`: 0 ok (also when absent), -3 not the active owner.
    ///
    /// ```
    /// use igor_agent::Host;
    /// assert_eq!(igor_agent::mock::MockHost::new().kv_delete(b"k"), 0);
    /// ```
    fn kv_delete(&mut self, key: &[u8]) -> i32;
}

/// The real imports. Only the ones an agent actually calls survive linking,
/// so an agent imports (and its manifest must declare) just what it uses.
#[cfg(target_arch = "wasm32")]
pub(crate) mod sys {
    #[link(wasm_import_module = "igor")]
    unsafe extern "C" {
        pub fn clock_now() -> i64;
        pub fn rand_bytes(ptr: i32, len: i32) -> i32;
        pub fn log_emit(ptr: i32, len: i32);
        pub fn wallet_balance() -> i64;
        pub fn wallet_receipt_count() -> i32;
        pub fn wallet_receipt(index: i32, buf: i32, cap: i32) -> i32;
        pub fn node_price() -> i64;
        #[allow(clippy::too_many_arguments)]
        pub fn http_request(
            method: i32,
            method_len: i32,
            url: i32,
            url_len: i32,
            headers: i32,
            headers_len: i32,
            body: i32,
            body_len: i32,
            resp: i32,
            resp_cap: i32,
        ) -> i32;
        #[allow(clippy::too_many_arguments)]
        pub fn wallet_pay(
            amount: i64,
            recipient: i32,
            recipient_len: i32,
            memo: i32,
            memo_len: i32,
            receipt: i32,
            receipt_cap: i32,
        ) -> i32;
        pub fn kv_get(key: i32, key_len: i32, val: i32, val_cap: i32) -> i32;
        pub fn kv_put(key: i32, key_len: i32, val: i32, val_len: i32) -> i32;
        pub fn kv_delete(key: i32, key_len: i32) -> i32;
    }
}

/// The wasm32 host: each method is one import call.
#[cfg(target_arch = "wasm32")]
pub struct WasmHost;

#[cfg(target_arch = "wasm32")]
fn p(s: &[u8]) -> i32 {
    s.as_ptr() as i32
}

#[cfg(target_arch = "wasm32")]
fn n(s: &[u8]) -> i32 {
    s.len() as i32
}

#[cfg(target_arch = "wasm32")]
impl Host for WasmHost {
    fn clock_now(&mut self) -> i64 {
        // SAFETY: imports take plain integers; slices are valid guest memory.
        unsafe { sys::clock_now() }
    }
    fn rand_bytes(&mut self, buf: &mut [u8]) -> i32 {
        unsafe { sys::rand_bytes(buf.as_mut_ptr() as i32, n(buf)) }
    }
    fn log_emit(&mut self, msg: &[u8]) {
        unsafe { sys::log_emit(p(msg), n(msg)) }
    }
    fn wallet_balance(&mut self) -> i64 {
        unsafe { sys::wallet_balance() }
    }
    fn wallet_receipt_count(&mut self) -> i32 {
        unsafe { sys::wallet_receipt_count() }
    }
    fn wallet_receipt(&mut self, index: i32, buf: &mut [u8]) -> i32 {
        unsafe { sys::wallet_receipt(index, buf.as_mut_ptr() as i32, n(buf)) }
    }
    fn node_price(&mut self) -> i64 {
        unsafe { sys::node_price() }
    }
    fn http_request(&mut self, method: &[u8], url: &[u8], headers: &[u8], body: &[u8], resp: &mut [u8]) -> i32 {
        unsafe {
            sys::http_request(
                p(method),
                n(method),
                p(url),
                n(url),
                p(headers),
                n(headers),
                p(body),
                n(body),
                resp.as_mut_ptr() as i32,
                n(resp),
            )
        }
    }
    fn wallet_pay(&mut self, amount: i64, recipient: &[u8], memo: &[u8], receipt: &mut [u8]) -> i32 {
        unsafe {
            sys::wallet_pay(
                amount,
                p(recipient),
                n(recipient),
                p(memo),
                n(memo),
                receipt.as_mut_ptr() as i32,
                n(receipt),
            )
        }
    }
    fn kv_get(&mut self, key: &[u8], buf: &mut [u8]) -> i32 {
        unsafe { sys::kv_get(p(key), n(key), buf.as_mut_ptr() as i32, n(buf)) }
    }
    fn kv_put(&mut self, key: &[u8], val: &[u8]) -> i32 {
        unsafe { sys::kv_put(p(key), n(key), p(val), n(val)) }
    }
    fn kv_delete(&mut self, key: &[u8]) -> i32 {
        unsafe { sys::kv_delete(p(key), n(key)) }
    }
}
