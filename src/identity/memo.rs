//! A per-thread memo of signatures known to be valid: a pure cache in
//! front of Ed25519 verification, off unless a caller sizes it.
//!
//! Why: the simulator runs every node of a world on one thread, so most
//! signatures it verifies (peer envelopes, agent claims, a migrated
//! checkpoint, the end-of-run history check) were made on that same thread
//! moments before. Ed25519 signing is deterministic and a signature made
//! with a key verifies under that key, so a verification of a signature
//! this thread made (or already verified) over the same bytes is answered
//! from the memo instead of by a double scalar multiplication (~35 µs).
//!
//! Soundness: an entry maps (public key, signature) to SHA-256 of the
//! exact message; a lookup answers `true` only when the message's hash
//! matches, so a hit for other bytes needs a SHA-256 collision. Nothing is
//! ever answered `false` from the memo: a miss falls through to the real
//! verification. The memo changes speed only, never a result; the
//! simulator's traces are byte-identical with it on or off
//! (`sim/tests/stepping.rs`).
//!
//! Bounds: at most `capacity` entries per thread; when full it is emptied
//! (the order of entries never matters, only memory). Capacity 0, the
//! default, turns it off entirely: the real node verifies signatures made
//! by other processes, which a memo would never hit.
//!
//! Beside it, under the same switch, a memo of decoded public keys: turning
//! 32 bytes into a curve point is a square root (~5 µs) and the simulator
//! decodes the same few node and agent keys at every checkpoint read and
//! every message. Only keys that decoded are kept, so an invalid key is
//! refused by the real decoder every time; at most [`KEY_CAPACITY`] keys.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Public key bytes followed by signature bytes.
type Key = [u8; 96];

struct Memo {
    capacity: usize,
    entries: BTreeMap<Key, [u8; 32]>,
    hits: u64,
}

/// Decoded keys kept at most (a world has a few dozen node and agent keys;
/// an adversary minting keys only empties this small map more often).
pub const KEY_CAPACITY: usize = 256;

thread_local! {
    static MEMO: RefCell<Memo> = const { RefCell::new(Memo { capacity: 0, entries: BTreeMap::new(), hits: 0 }) };
    static KEYS: RefCell<BTreeMap<[u8; 32], VerifyingKey>> = const { RefCell::new(BTreeMap::new()) };
}

/// Size this thread's memo (0 turns it off and empties it). The simulator
/// sizes it for a run; nothing else needs to.
pub fn set_capacity(capacity: usize) {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        m.capacity = capacity;
        if m.entries.len() > capacity {
            m.entries.clear();
        }
    });
    if capacity == 0 {
        KEYS.with(|k| k.borrow_mut().clear());
    }
}

/// Decode a public key, from the memo when it is on and the key was decoded
/// on this thread before. Errors are never remembered.
pub(super) fn decode_key(bytes: &[u8; 32]) -> Result<VerifyingKey, ed25519_dalek::SignatureError> {
    if !enabled() {
        return VerifyingKey::from_bytes(bytes);
    }
    if let Some(key) = KEYS.with(|k| k.borrow().get(bytes).copied()) {
        return Ok(key);
    }
    let key = VerifyingKey::from_bytes(bytes)?;
    KEYS.with(|k| {
        let mut k = k.borrow_mut();
        if k.len() >= KEY_CAPACITY {
            k.clear();
        }
        k.insert(*bytes, key);
    });
    Ok(key)
}

/// Verifications this thread answered from the memo so far (for tests and
/// benchmarks).
pub fn hits() -> u64 {
    MEMO.with(|m| m.borrow().hits)
}

fn enabled() -> bool {
    MEMO.with(|m| m.borrow().capacity > 0)
}

fn key(public: &[u8; 32], sig: &[u8; 64]) -> Key {
    let mut k = [0u8; 96];
    k[..32].copy_from_slice(public);
    k[32..].copy_from_slice(sig);
    k
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Remember that `sig` is a valid signature of the concatenated `parts`
/// under `public` (just made, or just verified).
pub(super) fn remember(public: &[u8; 32], sig: &[u8; 64], parts: &[&[u8]]) {
    if !enabled() {
        return;
    }
    let d = digest(parts);
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.entries.len() >= m.capacity {
            m.entries.clear();
        }
        m.entries.insert(key(public, sig), d);
    });
}

/// `true` if this exact (key, signature, message) is known valid; `false`
/// means "not known", never "invalid".
pub(super) fn known_valid(public: &[u8; 32], sig: &[u8; 64], parts: &[&[u8]]) -> bool {
    if !enabled() {
        return false;
    }
    let k = key(public, sig);
    let Some(stored) = MEMO.with(|m| m.borrow().entries.get(&k).copied()) else { return false };
    let hit = stored == digest(parts);
    if hit {
        MEMO.with(|m| m.borrow_mut().hits += 1);
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Keypair, PublicKey, Signature};

    #[test]
    fn decoded_keys_are_remembered_bounded_and_a_bad_key_is_refused_every_time() {
        let a = Keypair::from_seed([5; 32]).public();
        // A y coordinate with no point on the curve (the decoder refuses it).
        let bad = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| VerifyingKey::from_bytes(k).is_err())
            .expect("some constant byte string is not a point");
        set_capacity(8);
        assert_eq!(PublicKey::from_bytes(*a.as_bytes()).expect("valid"), a);
        assert_eq!(PublicKey::from_bytes(*a.as_bytes()).expect("valid, from the memo"), a);
        assert!(KEYS.with(|k| k.borrow().contains_key(a.as_bytes())));
        for _ in 0..2 {
            assert!(PublicKey::from_bytes(bad).is_err(), "an invalid key is refused, never remembered");
        }
        assert!(!KEYS.with(|k| k.borrow().contains_key(&bad)));
        for i in 0..(KEY_CAPACITY as u32 + 10) {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let k = Keypair::from_seed(seed).public();
            assert_eq!(PublicKey::from_bytes(*k.as_bytes()).expect("valid"), k);
            assert!(KEYS.with(|k| k.borrow().len()) <= KEY_CAPACITY, "bounded");
        }
    }

    fn len() -> usize {
        MEMO.with(|m| m.borrow().entries.len())
    }

    #[test]
    fn off_by_default_and_a_hit_needs_the_same_key_signature_and_bytes() {
        // Each test runs on its own thread: the memo starts off here.
        let a = Keypair::from_seed([1; 32]);
        let b = Keypair::from_seed([2; 32]);
        let sig = a.sign(b"checkpoint 7");
        assert!(a.public().verify(b"checkpoint 7", &sig));
        assert_eq!((hits(), len()), (0, 0), "capacity 0 keeps nothing");

        set_capacity(8);
        let sig = a.sign(b"checkpoint 8");
        assert!(a.public().verify(b"checkpoint 8", &sig));
        assert_eq!(hits(), 1, "the signature this thread made is answered from the memo");
        // Other bytes, another key, a flipped signature bit: each is a
        // miss that falls through to the real check, which refuses it.
        assert!(!a.public().verify(b"checkpoint 9", &sig));
        assert!(!b.public().verify(b"checkpoint 8", &sig));
        let mut bad = sig.0;
        bad[3] ^= 1;
        assert!(!a.public().verify(b"checkpoint 8", &Signature(bad)));
        assert!(!a.public().verify_parts(&[b"checkpoint", b" 8 "], &sig));
        assert_eq!(hits(), 1, "no refusal came from the memo");
        // The same bytes split in other parts are the same message.
        assert!(a.public().verify_parts(&[b"check", b"point 8"], &sig));
        assert_eq!(hits(), 2);
    }

    #[test]
    fn a_verified_foreign_signature_is_remembered_and_the_memo_stays_bounded() {
        let a = Keypair::from_seed([3; 32]);
        // Made while the memo was off: the first check is a real one.
        let sig = a.sign(b"envelope");
        set_capacity(4);
        assert!(a.public().verify(b"envelope", &sig));
        assert_eq!(hits(), 0);
        assert!(a.public().verify(b"envelope", &sig));
        assert_eq!(hits(), 1, "a signature verified once is known valid");
        for i in 0..40u8 {
            let s = a.sign(&[i]);
            assert!(a.public().verify(&[i], &s));
            assert!(len() <= 4, "never more entries than the capacity");
        }
        set_capacity(0);
        assert_eq!(len(), 0, "turning it off empties it");
        assert_eq!(KEYS.with(|k| k.borrow().len()), 0, "and empties the decoded keys");
        assert!(a.public().verify(b"envelope", &sig), "off: the real check answers");
    }
}
