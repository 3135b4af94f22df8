//! Sentinel: watches its budget and the node's price, and pays a fee to
//! `alice` every [`PERIOD`] ticks through the effect-intent log.
//!
//! Each payment is recorded as an intent in one tick and paid in a later
//! one (so the intent is checkpointed before money moves), with the
//! intent's key as the payment memo: a payment attempted again after a
//! crash carries the same memo and the recipient can deduplicate it. A
//! refusal before paying (`Refused`, `InsufficientBudget`, `OverCap`) puts
//! the intent back to `Recorded`; after [`MAX_ATTEMPTS`] it is
//! compensated (called off). An unexpected failure (`Other`) may have
//! paid: the intent becomes `Unresolved` and the sentinel stops paying
//! until it is reconciled. Each tick it checks its own books: the sum of
//! confirmed intents equals what it recorded as paid, and no intent is
//! both confirmed and compensated (the log's final states forbid it).
//!
//! Capabilities: `wallet`, `pricing`, `x402` (allowed_recipients alice), `log`.
#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use igor_agent::intent::{IntentLog, Status};
use igor_agent::{Agent, Ctx, PayError, Tick};
use serde::{Deserialize, Serialize};

/// Record a payment every PERIOD ticks.
pub const PERIOD: u64 = 3;
/// Microcents per payment.
pub const AMOUNT: i64 = 2;
/// The payee.
pub const PAYEE: &str = "alice";
/// Refusals before an intent is called off.
pub const MAX_ATTEMPTS: u32 = 3;

/// The sentinel's state.
#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// Ticks run.
    pub ticks: u64,
    /// Payment intents.
    pub intents: IntentLog,
    /// Payments confirmed.
    pub payments: u64,
    /// Microcents confirmed paid.
    pub paid: i64,
    /// Refusals seen.
    pub refused: u64,
    /// Intents called off.
    pub compensated: u64,
    /// Budget seen at the last tick.
    pub last_balance: i64,
    /// Node price seen at the last tick.
    pub last_price: i64,
}

impl Sentinel {
    fn pay_one(&mut self, cx: &mut Ctx<'_>) {
        if self.intents.with_status(Status::Unresolved).next().is_some() {
            return; // reconcile first: never risk paying twice
        }
        let Some(id) = self.intents.next_recorded() else { return };
        let key = match self.intents.begin(id) {
            Ok(i) => i.key(),
            Err(e) => panic!("sentinel: {e}"),
        };
        let settled = match cx.pay(AMOUNT, PAYEE, &key) {
            Ok(receipt) => {
                self.payments += 1;
                self.paid += AMOUNT;
                self.intents.confirm(id, receipt)
            }
            Err(PayError::Other(_)) => self.intents.unknown(id),
            Err(e) => {
                self.refused += 1;
                cx.log(&format!("sentinel: {key} refused: {e}"));
                self.intents.fail(id)
            }
        };
        if let Err(e) = settled {
            panic!("sentinel: {e}");
        }
        let attempts = self.intents.get(id).map_or(0, |i| i.attempts);
        if self.intents.get(id).is_some_and(|i| i.status == Status::Recorded) && attempts >= MAX_ATTEMPTS {
            match self.intents.compensate(id, b"refused".to_vec()) {
                Ok(()) => self.compensated += 1,
                Err(e) => panic!("sentinel: {e}"),
            }
        }
    }

    /// The books: confirmed intents account for every microcent paid.
    fn check(&self) {
        let confirmed = self.intents.with_status(Status::Confirmed).count() as u64;
        assert!(confirmed <= self.payments, "sentinel: {confirmed} confirmed intents, {} payments", self.payments);
        assert_eq!(
            self.paid,
            self.payments as i64 * AMOUNT,
            "sentinel: paid {} for {} payments",
            self.paid,
            self.payments
        );
    }
}

impl Agent for Sentinel {
    fn init() -> Self {
        Sentinel::default()
    }

    fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick {
        self.ticks += 1;
        // Nothing is ever left in flight between ticks by this agent.
        assert_eq!(self.intents.open_in_flight(), 0, "sentinel: an intent was left in flight");
        self.last_balance = cx.balance();
        self.last_price = cx.node_price();
        self.pay_one(cx);
        if self.ticks.is_multiple_of(PERIOD) {
            self.intents.record("pay", format!("{PAYEE}:{AMOUNT}").into_bytes());
        }
        // Confirmed ones are counted in `payments`; keep the state bounded.
        self.intents.prune(4);
        self.check();
        Tick::Idle
    }
}

igor_agent::export!(Sentinel);

#[cfg(test)]
mod tests {
    use super::*;
    use igor_agent::mock::{Harness, MockHost};

    fn host() -> MockHost {
        MockHost::new().with_balance(1_000).with_price(1_000).allow_recipient(PAYEE).with_max_payment(100)
    }

    #[test]
    fn records_then_pays_once_per_intent_with_its_key_as_memo() {
        let mut h = Harness::<Sentinel>::new(host());
        h.ticks(10);
        // Intents recorded at ticks 3, 6, 9; paid at ticks 4, 7, 10.
        let memos: Vec<&str> = h.host().payments().iter().map(|p| p.memo.as_str()).collect();
        assert_eq!(memos, ["intent-1", "intent-2", "intent-3"]);
        assert_eq!((h.agent().payments, h.agent().paid), (3, 3 * AMOUNT));
        assert_eq!(h.agent().last_balance, 1_000 - 2 * AMOUNT, "balance read before tick 10's payment");
    }

    #[test]
    fn refusals_retry_then_compensate() {
        let mut h = Harness::<Sentinel>::new(MockHost::new().with_balance(1_000)); // alice not allowed
        h.ticks(3 + MAX_ATTEMPTS as u64);
        assert_eq!((h.agent().refused, h.agent().compensated, h.agent().payments), (3, 1, 0));
        assert!(h.host().payments().is_empty());
    }

    #[test]
    fn a_crash_replays_the_paying_tick_with_the_same_memo() {
        // Tick 3 records intent-1; checkpoint; tick 4 pays; the node dies
        // before the next checkpoint; the redo of tick 4 pays intent-1 again:
        // at least once, deduplicable by the memo.
        let mut h = Harness::<Sentinel>::new(host());
        h.ticks(3);
        let saved = h.checkpoint().unwrap();
        h.tick();
        let mut again = Harness::<Sentinel>::new(h.host().clone());
        again.resume(&saved).unwrap();
        again.tick();
        let memos: Vec<&str> = again.host().payments().iter().map(|p| p.memo.as_str()).collect();
        assert_eq!(memos, ["intent-1", "intent-1"]);
        assert_eq!(again.agent().payments, 1, "the agent's own books count it once");
    }
}
