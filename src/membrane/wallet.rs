//! The wallet family (capability `wallet`): balance, receipts and
//! `wallet_pay`, and the payment gateway the node settles through.

use super::*;
use crate::manifest::PaymentPolicy;

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

pub(super) fn wallet_balance(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    // Budget at tick start minus what this tick paid out so far.
    scalar_answer(t, Hostcall::WalletBalance, |t| t.budget.0.saturating_sub(t.paid.0).to_le_bytes())
        .map(i64::from_le_bytes)
}

pub(super) fn wallet_receipt_count(cx: &mut Cx<'_>) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::WalletReceiptCount, |t| {
        i32::try_from(t.receipts.len()).unwrap_or(i32::MAX).to_le_bytes()
    })
    .map(i32::from_le_bytes)
}

pub(super) fn wallet_receipt(cx: &mut Cx<'_>, index: i32, buf: i32, cap: i32) -> HResult<i32> {
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

// wallet_pay event payload: kind 0 = refused before paying (i32 code);
// 1 = paid (receipt bytes); 2 = gateway failure (-6).
#[allow(clippy::too_many_arguments)]
pub(super) fn wallet_pay(
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
            let p = policy.as_ref().ok_or(-3)?;
            if !recipient_allowed(p, &recipient) {
                return Err(-3);
            }
            if !within_cap(p, amount) {
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
        // A payment the guest could not have asked for, that the manifest
        // forbids (no x402 policy, a recipient off its list, more than its
        // per-payment cap), or that the tick's budget cannot cover, is a
        // forged entry: the live call would have refused it before paying,
        // so a log that says it paid lies (RE-3), whatever it says. (Whether
        // side effects were allowed is an input, not the manifest: replay
        // takes that outcome from the log, CM-4.)
        Some((1, receipt))
            if receipt.len() <= MAX_PAY_RECEIPT_BYTES
                && buf_ok
                && amount > 0
                && memo.is_ok()
                && recipient.as_ref().is_ok_and(|r| policy_allows(policy.as_ref(), r, amount))
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

/// The manifest lists the recipient (compared in lowercase).
fn recipient_allowed(policy: &PaymentPolicy, recipient: &str) -> bool {
    policy.allowed_recipients.iter().any(|r| *r == recipient.to_ascii_lowercase())
}

/// The amount is within the manifest's per-payment cap (0: no cap).
fn within_cap(policy: &PaymentPolicy, amount: i64) -> bool {
    policy.max_payment_microcents <= 0 || amount <= policy.max_payment_microcents
}

/// What the manifest alone decides about a payment: one rule for the live
/// call and for a recorded payment on replay.
fn policy_allows(policy: Option<&PaymentPolicy>, recipient: &str, amount: i64) -> bool {
    policy.is_some_and(|p| recipient_allowed(p, recipient) && within_cap(p, amount))
}
