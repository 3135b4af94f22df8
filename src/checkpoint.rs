//! The checkpoint file: byte layout, encoding (v4) and decoding (v2, v3, v4),
//! byte compatible with the original Igor (spec §4). Pure data: no disk, no
//! clock. Decoding never panics and names the field and value that was wrong.

use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{Epoch, Microcents, TickNumber};
use sha2::{Digest, Sha256};
use std::fmt;

/// A SHA-256 digest (wasm hash, checkpoint hash, prev-hash link).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub const ZERO: Hash32 = Hash32([0; 32]);

    pub fn of(bytes: &[u8]) -> Hash32 {
        Hash32(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex digits, for messages and traces.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Option<Hash32> {
        let bytes = hex::decode(s).ok()?;
        Some(Hash32(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.short())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Header sizes per version (spec §4).
pub const HEADER_V2: usize = 57;
pub const HEADER_V3: usize = 81;
pub const HEADER_V4: usize = 209;
/// Bytes covered by the v4 signature, before the state.
pub const SIGNED_PREFIX_V4: usize = 145;
/// Largest agent state accepted in a checkpoint. Agents are capped at 64 MiB
/// of linear memory, so their state cannot be larger.
pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// Why bytes are not a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint is empty")]
    Empty,
    #[error("unsupported checkpoint version {0:#04x} (supported: 0x02, 0x03, 0x04)")]
    UnsupportedVersion(u8),
    #[error("checkpoint too short: version {version} needs at least {needed} bytes, found {found}")]
    TooShort { version: u8, needed: usize, found: usize },
    #[error("checkpoint state too large: {len} bytes (limit {MAX_STATE_BYTES})")]
    StateTooLarge { len: usize },
    #[error("negative budget in checkpoint: {0} microcents")]
    NegativeBudget(i64),
    #[error("negative price per second in checkpoint: {0} microcents")]
    NegativePrice(i64),
    #[error("bad signature on checkpoint at tick {tick} (agent key {key})")]
    BadSignature { tick: u64, key: String },
    #[error("invalid agent public key in checkpoint at tick {tick}")]
    BadPublicKey { tick: u64 },
    #[error("wasm hash mismatch at tick {tick}: checkpoint names {in_checkpoint}, module is {actual}")]
    WasmHashMismatch { tick: u64, in_checkpoint: String, actual: String },
}

/// v4's signed lineage fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seal {
    pub prev_hash: Hash32,
    pub agent_key: PublicKey,
    pub signature: Signature,
}

/// A decoded checkpoint. v2 has no epoch or lease (zeros); v2 and v3 have no
/// seal. The node only ever writes v4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub version: u8,
    pub budget: Microcents,
    pub price_per_second: Microcents,
    pub tick: TickNumber,
    pub wasm_hash: Hash32,
    pub epoch: Epoch,
    /// Unix ns; 0 = no lease.
    pub lease_expiry_ns: i64,
    pub seal: Option<Seal>,
    pub state: Vec<u8>,
}

/// Everything a v4 checkpoint says, before it is signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointBody {
    pub budget: Microcents,
    pub price_per_second: Microcents,
    pub tick: TickNumber,
    pub wasm_hash: Hash32,
    pub epoch: Epoch,
    pub lease_expiry_ns: i64,
    pub prev_hash: Hash32,
    pub state: Vec<u8>,
}

impl CheckpointBody {
    fn signed_prefix(&self, key: &PublicKey) -> [u8; SIGNED_PREFIX_V4] {
        let mut h = [0u8; SIGNED_PREFIX_V4];
        h[0] = 4;
        h[1..9].copy_from_slice(&self.budget.0.to_le_bytes());
        h[9..17].copy_from_slice(&self.price_per_second.0.to_le_bytes());
        h[17..25].copy_from_slice(&self.tick.0.to_le_bytes());
        h[25..57].copy_from_slice(&self.wasm_hash.0);
        h[57..65].copy_from_slice(&self.epoch.major.to_le_bytes());
        h[65..73].copy_from_slice(&self.epoch.generation.to_le_bytes());
        h[73..81].copy_from_slice(&self.lease_expiry_ns.to_le_bytes());
        h[81..113].copy_from_slice(&self.prev_hash.0);
        h[113..145].copy_from_slice(key.as_bytes());
        h
    }

    /// Sign with the agent's key, giving a v4 checkpoint.
    pub fn sign(self, key: &Keypair) -> Checkpoint {
        let public = key.public();
        let prefix = self.signed_prefix(&public);
        let signature = key.sign_parts(&[&prefix, &self.state]);
        Checkpoint {
            version: 4,
            budget: self.budget,
            price_per_second: self.price_per_second,
            tick: self.tick,
            wasm_hash: self.wasm_hash,
            epoch: self.epoch,
            lease_expiry_ns: self.lease_expiry_ns,
            seal: Some(Seal { prev_hash: self.prev_hash, agent_key: public, signature }),
            state: self.state,
        }
    }
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    // Callers check the length first; a short slice is a bug, not input.
    u64::from_le_bytes(b[at..at + 8].try_into().expect("length checked before field read"))
}

fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("length checked before field read"))
}

fn arr32(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("length checked before field read")
}

impl Checkpoint {
    /// Parse bytes structurally (all versions). A v4 signature is not checked
    /// here: call [`Checkpoint::verify_signature`] or use [`Checkpoint::parse`].
    pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let version = *bytes.first().ok_or(CheckpointError::Empty)?;
        let header = match version {
            2 => HEADER_V2,
            3 => HEADER_V3,
            4 => HEADER_V4,
            v => return Err(CheckpointError::UnsupportedVersion(v)),
        };
        if bytes.len() < header {
            return Err(CheckpointError::TooShort { version, needed: header, found: bytes.len() });
        }
        let state_len = bytes.len() - header;
        if state_len > MAX_STATE_BYTES {
            return Err(CheckpointError::StateTooLarge { len: state_len });
        }
        let budget = le_i64(bytes, 1);
        if budget < 0 {
            return Err(CheckpointError::NegativeBudget(budget));
        }
        let price = le_i64(bytes, 9);
        if price < 0 {
            return Err(CheckpointError::NegativePrice(price));
        }
        let tick = TickNumber(le_u64(bytes, 17));
        let (epoch, lease_expiry_ns) = if version >= 3 {
            (Epoch::new(le_u64(bytes, 57), le_u64(bytes, 65)), le_i64(bytes, 73))
        } else {
            (Epoch::default(), 0)
        };
        let seal = if version >= 4 {
            let agent_key =
                PublicKey::from_bytes(arr32(bytes, 113)).map_err(|_| CheckpointError::BadPublicKey { tick: tick.0 })?;
            let signature = Signature(bytes[145..209].try_into().expect("length checked before field read"));
            Some(Seal { prev_hash: Hash32(arr32(bytes, 81)), agent_key, signature })
        } else {
            None
        };
        Ok(Checkpoint {
            version,
            budget: Microcents(budget),
            price_per_second: Microcents(price),
            tick,
            wasm_hash: Hash32(arr32(bytes, 25)),
            epoch,
            lease_expiry_ns,
            seal,
            state: bytes[header..].to_vec(),
        })
    }

    /// Decode, check the signature (v4) and, if given, the wasm hash.
    pub fn parse(bytes: &[u8], wasm_hash: Option<&Hash32>) -> Result<Checkpoint, CheckpointError> {
        let c = Self::decode(bytes)?;
        c.verify_signature()?;
        if let Some(expected) = wasm_hash {
            c.check_wasm(expected)?;
        }
        Ok(c)
    }

    /// The signed fields and state, to re-sign (an edited copy).
    pub fn body(&self) -> CheckpointBody {
        CheckpointBody {
            budget: self.budget,
            price_per_second: self.price_per_second,
            tick: self.tick,
            wasm_hash: self.wasm_hash,
            epoch: self.epoch,
            lease_expiry_ns: self.lease_expiry_ns,
            prev_hash: self.prev_hash(),
            state: self.state.clone(),
        }
    }

    /// Check the v4 signature. v2/v3 carry none and pass trivially; callers
    /// that require a seal (lineage, migration) check `seal.is_some()`.
    pub fn verify_signature(&self) -> Result<(), CheckpointError> {
        let Some(seal) = &self.seal else { return Ok(()) };
        let prefix = self.body().signed_prefix(&seal.agent_key);
        if seal.agent_key.verify_parts(&[&prefix, &self.state], &seal.signature) {
            Ok(())
        } else {
            Err(CheckpointError::BadSignature { tick: self.tick.0, key: seal.agent_key.did() })
        }
    }

    pub fn check_wasm(&self, actual: &Hash32) -> Result<(), CheckpointError> {
        if &self.wasm_hash == actual {
            Ok(())
        } else {
            Err(CheckpointError::WasmHashMismatch {
                tick: self.tick.0,
                in_checkpoint: self.wasm_hash.to_hex(),
                actual: actual.to_hex(),
            })
        }
    }

    /// Prev-hash link (zeros for genesis and for v2/v3).
    pub fn prev_hash(&self) -> Hash32 {
        self.seal.as_ref().map(|s| s.prev_hash).unwrap_or(Hash32::ZERO)
    }

    pub fn agent_key(&self) -> Option<&PublicKey> {
        self.seal.as_ref().map(|s| &s.agent_key)
    }

    /// Encode in this checkpoint's own version (v4 for everything the node
    /// writes; v2/v3 so that old files round-trip).
    pub fn encode(&self) -> Vec<u8> {
        let header = match self.version {
            2 => HEADER_V2,
            3 => HEADER_V3,
            _ => HEADER_V4,
        };
        let mut out = Vec::with_capacity(header + self.state.len());
        out.push(self.version);
        out.extend_from_slice(&self.budget.0.to_le_bytes());
        out.extend_from_slice(&self.price_per_second.0.to_le_bytes());
        out.extend_from_slice(&self.tick.0.to_le_bytes());
        out.extend_from_slice(&self.wasm_hash.0);
        if self.version >= 3 {
            out.extend_from_slice(&self.epoch.major.to_le_bytes());
            out.extend_from_slice(&self.epoch.generation.to_le_bytes());
            out.extend_from_slice(&self.lease_expiry_ns.to_le_bytes());
        }
        if self.version >= 4 {
            let zero_key = [0u8; 32];
            let zero_sig = [0u8; 64];
            let (prev, key, sig) = match &self.seal {
                Some(s) => (s.prev_hash.0, *s.agent_key.as_bytes(), s.signature.0),
                None => (Hash32::ZERO.0, zero_key, zero_sig),
            };
            out.extend_from_slice(&prev);
            out.extend_from_slice(&key);
            out.extend_from_slice(&sig);
        }
        debug_assert_eq!(out.len(), header);
        out.extend_from_slice(&self.state);
        out
    }

    /// SHA-256 of the complete encoded checkpoint: what the next one's
    /// prev-hash must equal.
    pub fn hash(&self) -> Hash32 {
        Hash32::of(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem::SeededEntropy;
    use proptest::prelude::*;

    fn key(seed: u64) -> Keypair {
        Keypair::generate(&mut SeededEntropy::derived(seed, "test-key"))
    }

    fn body(tick: u64, state: &[u8]) -> CheckpointBody {
        CheckpointBody {
            budget: Microcents(5_000_000),
            price_per_second: Microcents(1_000),
            tick: TickNumber(tick),
            wasm_hash: Hash32::of(b"wasm"),
            epoch: Epoch::new(2, 3),
            lease_expiry_ns: 1_700_000_000_000_000_000,
            prev_hash: Hash32::ZERO,
            state: state.to_vec(),
        }
    }

    #[test]
    fn golden_v2_parses_fields_from_the_spec_table() {
        let mut b = vec![0x02];
        b.extend_from_slice(&1_234_567i64.to_le_bytes());
        b.extend_from_slice(&890i64.to_le_bytes());
        b.extend_from_slice(&42u64.to_le_bytes());
        b.extend_from_slice(&[0xab; 32]);
        b.extend_from_slice(b"state!");
        assert_eq!(b.len(), HEADER_V2 + 6);
        let c = Checkpoint::parse(&b, None).unwrap();
        assert_eq!(
            (c.version, c.budget, c.price_per_second, c.tick),
            (2, Microcents(1_234_567), Microcents(890), TickNumber(42))
        );
        assert_eq!(c.wasm_hash, Hash32([0xab; 32]));
        assert_eq!((c.epoch, c.lease_expiry_ns, c.seal.is_none()), (Epoch::default(), 0, true));
        assert_eq!(c.state, b"state!");
        assert_eq!(c.encode(), b, "v2 round-trips byte for byte");
    }

    #[test]
    fn golden_v3_parses_epoch_and_lease() {
        let mut b = vec![0x03];
        b.extend_from_slice(&7i64.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&[1; 32]);
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(&11u64.to_le_bytes());
        b.extend_from_slice(&(-1i64).to_le_bytes());
        assert_eq!(b.len(), HEADER_V3);
        let c = Checkpoint::parse(&b, None).unwrap();
        assert_eq!((c.epoch, c.lease_expiry_ns, c.tick), (Epoch::new(5, 11), -1, TickNumber(9)));
        assert!(c.state.is_empty());
        assert_eq!(c.encode(), b);
    }

    #[test]
    fn v4_layout_puts_fields_at_spec_offsets() {
        let k = key(1);
        let c = body(7, b"xyz").sign(&k);
        let b = c.encode();
        assert_eq!(b.len(), HEADER_V4 + 3);
        assert_eq!(b[0], 4);
        assert_eq!(le_u64(&b, 17), 7);
        assert_eq!(&b[113..145], k.public().as_bytes());
        assert_eq!(&b[209..], b"xyz");
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(Checkpoint::decode(&[]), Err(CheckpointError::Empty));
        assert_eq!(Checkpoint::decode(&[9, 0]), Err(CheckpointError::UnsupportedVersion(9)));
        assert_eq!(
            Checkpoint::decode(&[4; 100]),
            Err(CheckpointError::TooShort { version: 4, needed: 209, found: 100 })
        );
        let mut b = body(1, b"").sign(&key(1)).encode();
        b[1..9].copy_from_slice(&(-5i64).to_le_bytes());
        assert_eq!(Checkpoint::decode(&b), Err(CheckpointError::NegativeBudget(-5)));
        let mut b = body(1, b"").sign(&key(1)).encode();
        b[9..17].copy_from_slice(&(-6i64).to_le_bytes());
        assert_eq!(Checkpoint::decode(&b), Err(CheckpointError::NegativePrice(-6)));
        let c = body(3, b"s").sign(&key(1));
        let err = Checkpoint::parse(&c.encode(), Some(&Hash32::of(b"other"))).unwrap_err();
        assert!(matches!(err, CheckpointError::WasmHashMismatch { tick: 3, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn v4_roundtrips(budget in 0i64.., price in 0i64.., tick: u64, major: u64, generation: u64,
                         lease: i64, wasm: [u8; 32], prev: [u8; 32], seed: u64,
                         state in proptest::collection::vec(any::<u8>(), 0..65536)) {
            let b = CheckpointBody {
                budget: Microcents(budget), price_per_second: Microcents(price), tick: TickNumber(tick),
                wasm_hash: Hash32(wasm), epoch: Epoch::new(major, generation), lease_expiry_ns: lease,
                prev_hash: Hash32(prev), state,
            };
            let c = b.clone().sign(&key(seed));
            let decoded = Checkpoint::parse(&c.encode(), Some(&Hash32(wasm))).unwrap();
            prop_assert_eq!(&decoded, &c);
            prop_assert_eq!(decoded.body(), b);
        }
    }

    #[test]
    fn every_single_bit_flip_of_a_signed_checkpoint_is_rejected() {
        let bytes = body(12, b"some agent state").sign(&key(4)).encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let res = Checkpoint::parse(&b, None);
                assert!(res.is_err(), "flip of byte {i} bit {bit} accepted: {res:?}");
            }
        }
    }
}
