//! Price watcher: polls one URL through the manifest's `allowed_hosts`
//! every tick and keeps what it saw.
//!
//! A body that is a decimal number (`"101.25"`) is a price, kept in
//! thousandths; any other body is counted as unparsable (the simulator's
//! scripted world answers `GET http://api.example/data` with
//! `igor-sim data`). Every outcome lands in the state (status, body hash,
//! the error code), so a replay that was handed a different answer is a
//! different state: the node's metering check and `igord verify` catch it.
//! A host outside the allow-list is refused (-3) before any request is
//! made; the watcher counts refusals and keeps polling.
//!
//! Capabilities: `http` (allowed_hosts), `clock`, `log`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use igor_agent::{Agent, Ctx, HttpError, Request, Tick};
use serde::{Deserialize, Serialize};

/// The URL polled.
pub const URL: &str = "http://api.example/data";
/// Alert when the price moves by more than this many thousandths (1%).
pub const ALERT_PER_MILLE: i64 = 10;

/// The watcher's state.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct PriceWatcher {
    /// Polls made.
    pub polls: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Refused (-3): host not allowed or not the active owner.
    pub refused: u64,
    /// Other failures (network, timeout, too large).
    pub failed: u64,
    /// 2xx bodies that were not a number.
    pub unparsable: u64,
    /// Last price, thousandths.
    pub last_price: Option<i64>,
    /// Price moves over [`ALERT_PER_MILLE`].
    pub alerts: u64,
    /// Last HTTP status, or the negative error code.
    pub last_code: i32,
    /// FNV-1a of the last body.
    pub last_body_hash: u64,
    /// Node clock at the last poll, unix ns.
    pub last_poll_ns: i64,
}

/// `"101.25"` → 101250 (thousandths); at most 3 decimals, no sign.
pub fn parse_price(body: &[u8]) -> Option<i64> {
    let text = core::str::from_utf8(body).ok()?.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || frac.len() > 3 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = int.parse().ok()?;
    for i in 0..3 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        v = v.checked_mul(10)?.checked_add(d)?;
    }
    Some(v)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Agent for PriceWatcher {
    fn init() -> Self {
        PriceWatcher::default()
    }

    fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick {
        self.polls += 1;
        self.last_poll_ns = cx.now_ns();
        match cx.http(&Request::get(URL).max_response(4096)) {
            Ok(resp) => {
                self.last_code = i32::from(resp.status);
                self.last_body_hash = fnv1a(&resp.body);
                if !resp.is_success() {
                    self.failed += 1;
                    return Tick::Idle;
                }
                self.ok += 1;
                match parse_price(&resp.body) {
                    Some(p) => {
                        if let Some(prev) = self.last_price {
                            let moved = (p - prev).abs().saturating_mul(1000) / prev.max(1);
                            if moved > ALERT_PER_MILLE {
                                self.alerts += 1;
                                cx.log(&format!("price-watcher: {prev} -> {p} (thousandths)"));
                            }
                        }
                        self.last_price = Some(p);
                    }
                    None => self.unparsable += 1,
                }
            }
            Err(e) => {
                self.last_code = e.code();
                match e {
                    HttpError::Refused => self.refused += 1,
                    _ => self.failed += 1,
                }
            }
        }
        Tick::Idle
    }
}

igor_agent::export!(PriceWatcher);

#[cfg(test)]
mod tests {
    use super::*;
    use igor_agent::mock::{Harness, MockHost};

    #[test]
    fn parses_prices() {
        assert_eq!(parse_price(b"101.25"), Some(101_250));
        assert_eq!(parse_price(b" 7\n"), Some(7_000));
        assert_eq!(parse_price(b"0.001"), Some(1));
        for bad in [&b"igor-sim data"[..], b"-1", b"1.2345", b".5", b"", b"1e3"] {
            assert_eq!(parse_price(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tracks_prices_and_alerts_on_a_move() {
        let host = MockHost::new().allow_host("api.example").route("GET", URL, 200, b"100.0");
        let mut h = Harness::<PriceWatcher>::new(host);
        h.tick();
        *h.host_mut() = h.host().clone().route("GET", URL, 200, b"105.5");
        h.tick();
        let s = h.agent();
        assert_eq!((s.polls, s.ok, s.alerts, s.last_price), (2, 2, 1, Some(105_500)));
        assert_eq!(h.host().http_calls().len(), 2);
    }

    #[test]
    fn a_host_outside_the_allow_list_is_refused_and_never_contacted() {
        let host = MockHost::new().allow_host("prices.example").route("GET", URL, 200, b"1");
        let mut h = Harness::<PriceWatcher>::new(host);
        h.ticks(3);
        assert_eq!((h.agent().refused, h.agent().ok, h.agent().last_code), (3, 0, -3));
        assert!(h.host().http_calls().is_empty());
    }

    #[test]
    fn failures_are_counted_not_fatal() {
        let host = MockHost::new().allow_host("api.example").route_error("GET", URL, -4);
        let mut h = Harness::<PriceWatcher>::new(host);
        h.tick();
        assert_eq!((h.agent().failed, h.agent().last_code), (1, -4));
        *h.host_mut() = MockHost::new().allow_host("api.example").route("GET", URL, 503, b"busy");
        h.tick();
        assert_eq!((h.agent().failed, h.agent().last_code), (2, 503));
    }
}
