//! The agent's key/value store (spec §2 `kv_*`): an in-memory ordered map
//! owned by one instance, its limits, its canonical snapshot encoding, and
//! the sealed file that binds a snapshot to a checkpoint on disk and in
//! migration packages. The store itself never touches a disk: the node
//! persists snapshots through [`seal`]/[`open`] and [`Disk`].
//!
//! Tampering: a sealed snapshot is signed by the agent key over
//! `("igor-kv-v1", agent id, tick, SHA-256(checkpoint state), SHA-256(kv))`.
//! At rest, a flipped byte breaks the hash or the signature; in transit, a
//! snapshot swapped for another agent's, another tick's or another fork's
//! fails the agent/tick/state-hash binding. A node that holds the agent key
//! can still sign anything: that is the checkpoint's trust model too.

use crate::checkpoint::Hash32;
use crate::env::{Disk, DiskError};
use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{AgentId, TickNumber};
use std::collections::BTreeMap;

/// Longest key: keys are names, not data.
pub const MAX_KEY_BYTES: u32 = 256;
/// Longest value: one value moves through one hostcall and is charged per byte.
pub const MAX_VALUE_BYTES: u32 = 64 * 1024;
/// Default per-agent quota over all keys and values: the store travels
/// with every migration package and is rewritten with every checkpoint.
pub const DEFAULT_QUOTA_BYTES: u64 = 4 * 1024 * 1024;

const MAGIC: &[u8; 4] = b"IGKV";
const SEAL_MAGIC: &[u8; 4] = b"IGKS";
const VERSION: u8 = 1;
const SIGN_DOMAIN: &[u8] = b"igor-kv-v1\0";

/// Effective limits of one agent's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLimits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u32,
    pub quota_bytes: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits { max_key_bytes: MAX_KEY_BYTES, max_value_bytes: MAX_VALUE_BYTES, quota_bytes: DEFAULT_QUOTA_BYTES }
    }
}

impl KvLimits {
    /// The node's limits lowered by the manifest's options (never raised).
    pub fn lowered_by(self, opts: &crate::manifest::KvOptions) -> KvLimits {
        KvLimits {
            max_key_bytes: opts.max_key_bytes.map_or(self.max_key_bytes, |v| v.min(self.max_key_bytes)),
            max_value_bytes: opts.max_value_bytes.map_or(self.max_value_bytes, |v| v.min(self.max_value_bytes)),
            quota_bytes: opts.quota_bytes.map_or(self.quota_bytes, |v| v.min(self.quota_bytes)),
        }
    }
}

/// Why a put was refused (maps onto the `kv_put` return codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutError {
    /// -2: key or value over its limit.
    TooLarge,
    /// -6: the store would exceed its quota.
    Quota,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("kv snapshot: {0}")]
    Malformed(String),
    #[error("kv snapshot violates limits: {0}")]
    OverLimit(String),
    #[error("sealed kv {path}: {reason}")]
    Seal { path: String, reason: String },
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// One agent's store. Size = sum of key and value lengths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    used_bytes: u64,
    limits: KvLimits,
}

impl Kv {
    pub fn new(limits: KvLimits) -> Self {
        Kv { map: BTreeMap::new(), used_bytes: 0, limits }
    }

    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Check a put without doing it.
    pub fn check_put(&self, key_len: usize, value_len: usize, key: Option<&[u8]>) -> Result<(), PutError> {
        if key_len > self.limits.max_key_bytes as usize || value_len > self.limits.max_value_bytes as usize {
            return Err(PutError::TooLarge);
        }
        let old = key.and_then(|k| self.map.get(k)).map_or(0, |v| (key_len + v.len()) as u64);
        let new_used = self.used_bytes - old + (key_len + value_len) as u64;
        if new_used > self.limits.quota_bytes {
            return Err(PutError::Quota);
        }
        Ok(())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), PutError> {
        self.check_put(key.len(), value.len(), Some(key))?;
        if let Some(old) = self.map.insert(key.to_vec(), value.to_vec()) {
            self.used_bytes -= (key.len() + old.len()) as u64;
        }
        self.used_bytes += (key.len() + value.len()) as u64;
        Ok(())
    }

    /// Remove `key`; absent keys are fine.
    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.used_bytes -= (key.len() + old.len()) as u64;
        }
    }

    /// Canonical snapshot: `"IGKV"`, version, count `u32`, then per entry in
    /// key order: key length `u32`, key, value length `u32`, value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.used_bytes as usize + 8 * self.map.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(self.map.len() as u32).to_le_bytes());
        for (k, v) in &self.map {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Decode a snapshot under `limits`. Empty bytes are an empty store (a
    /// new agent). Keys must be strictly increasing (one store, one encoding).
    pub fn decode(bytes: &[u8], limits: KvLimits) -> Result<Kv, KvError> {
        let mut kv = Kv::new(limits);
        if bytes.is_empty() {
            return Ok(kv);
        }
        let bad = |m: String| KvError::Malformed(m);
        if bytes.len() < 9 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(bad("bad magic or version".into()));
        }
        let count = u32::from_le_bytes(bytes[5..9].try_into().expect("length checked"));
        let mut at = 9;
        let mut take = |what: &str| -> Result<&[u8], KvError> {
            let len_end = at + 4;
            let len = bytes.get(at..len_end).ok_or_else(|| bad(format!("truncated {what} length at byte {at}")))?;
            let len = u32::from_le_bytes(len.try_into().expect("slice of 4")) as usize;
            let item =
                bytes.get(len_end..len_end + len).ok_or_else(|| bad(format!("truncated {what} at byte {len_end}")))?;
            at = len_end + len;
            Ok(item)
        };
        let mut prev: Option<Vec<u8>> = None;
        for i in 0..count {
            let key = take("key")?.to_vec();
            let value = take("value")?;
            if prev.as_ref().is_some_and(|p| *p >= key) {
                return Err(bad(format!("entry {i}: keys not strictly increasing")));
            }
            kv.put(&key, value).map_err(|e| KvError::OverLimit(format!("entry {i}: {e:?}")))?;
            prev = Some(key);
        }
        if at != bytes.len() {
            return Err(bad(format!("{} trailing bytes", bytes.len() - at)));
        }
        Ok(kv)
    }
}

/// Where the sealed kv snapshot of `agent` at `tick` lives.
pub fn kv_path(agent: &AgentId, tick: TickNumber) -> String {
    format!("agents/{agent}/kv/{:010}.kv", tick.0)
}

/// Where `igord run` kept kv snapshots before it shared the node's layout
/// (read by `igord resume` when [`kv_path`] has none).
pub fn legacy_kv_path(agent: &AgentId, tick: TickNumber) -> String {
    format!("kv/{agent}/{:010}.kv", tick.0)
}

fn signed_message(agent: &AgentId, tick: TickNumber, state_hash: &Hash32, kv_hash: &Hash32) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGN_DOMAIN.len() + 1 + agent.as_str().len() + 8 + 64);
    m.extend_from_slice(SIGN_DOMAIN);
    m.push(agent.as_str().len() as u8);
    m.extend_from_slice(agent.as_str().as_bytes());
    m.extend_from_slice(&tick.0.to_le_bytes());
    m.extend_from_slice(&state_hash.0);
    m.extend_from_slice(&kv_hash.0);
    m
}

/// Seal a kv snapshot for the checkpoint of `agent` at `tick` whose state
/// bytes hash to `state_hash`. Layout: `"IGKS"`, version, tick `u64`,
/// state hash, kv hash, agent public key, signature (64), kv bytes.
pub fn seal(agent: &AgentId, tick: TickNumber, state_hash: &Hash32, kv: &[u8], key: &Keypair) -> Vec<u8> {
    let kv_hash = Hash32::of(kv);
    let sig = key.sign(&signed_message(agent, tick, state_hash, &kv_hash));
    let mut out = Vec::with_capacity(5 + 8 + 32 * 3 + 64 + kv.len());
    out.extend_from_slice(SEAL_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&tick.0.to_le_bytes());
    out.extend_from_slice(&state_hash.0);
    out.extend_from_slice(&kv_hash.0);
    out.extend_from_slice(key.public().as_bytes());
    out.extend_from_slice(&sig.0);
    out.extend_from_slice(kv);
    out
}

const SEAL_HEADER: usize = 5 + 8 + 32 + 32 + 32 + 64;

/// Check a sealed snapshot against the checkpoint it must belong to and
/// return the kv bytes. `name` is used in error messages (path or package).
pub fn open(
    name: &str,
    sealed: &[u8],
    agent: &AgentId,
    tick: TickNumber,
    state_hash: &Hash32,
    agent_key: &PublicKey,
) -> Result<Vec<u8>, KvError> {
    let bad = |reason: String| KvError::Seal { path: name.to_string(), reason };
    if sealed.len() < SEAL_HEADER || &sealed[..4] != SEAL_MAGIC || sealed[4] != VERSION {
        return Err(bad("not a sealed kv snapshot (magic, version or length)".into()));
    }
    let arr = |at: usize| -> [u8; 32] { sealed[at..at + 32].try_into().expect("header length checked") };
    let sealed_tick = TickNumber(u64::from_le_bytes(sealed[5..13].try_into().expect("header length checked")));
    let (s_hash, k_hash, pk) = (Hash32(arr(13)), Hash32(arr(45)), arr(77));
    let sig = Signature(sealed[109..173].try_into().expect("header length checked"));
    let kv = &sealed[SEAL_HEADER..];
    if sealed_tick != tick {
        return Err(bad(format!("sealed for tick {sealed_tick}, checkpoint is tick {tick}")));
    }
    if s_hash != *state_hash {
        return Err(bad(format!("bound to state {}…, checkpoint state is {}…", s_hash.short(), state_hash.short())));
    }
    if pk != *agent_key.as_bytes() {
        return Err(bad("sealed by a different agent key".into()));
    }
    let actual = Hash32::of(kv);
    if actual != k_hash {
        return Err(bad(format!("kv bytes hash to {}…, seal says {}…", actual.short(), k_hash.short())));
    }
    if !agent_key.verify(&signed_message(agent, tick, state_hash, &k_hash), &sig) {
        return Err(bad(format!("bad signature for agent {agent} at tick {tick}")));
    }
    Ok(kv.to_vec())
}

/// Seal and write the snapshot beside the checkpoint (atomically).
pub fn persist(
    disk: &impl Disk,
    agent: &AgentId,
    tick: TickNumber,
    state_hash: &Hash32,
    kv: &[u8],
    key: &Keypair,
) -> Result<(), KvError> {
    disk.write_atomic(&kv_path(agent, tick), &seal(agent, tick, state_hash, kv, key))?;
    Ok(())
}

/// Read and verify the snapshot of the checkpoint at `tick` (at
/// [`kv_path`], or for a history `igord run` wrote before it shared the
/// node's layout, at [`legacy_kv_path`]).
pub fn load(
    disk: &impl Disk,
    agent: &AgentId,
    tick: TickNumber,
    state_hash: &Hash32,
    agent_key: &PublicKey,
) -> Result<Vec<u8>, KvError> {
    let mut path = kv_path(agent, tick);
    let sealed = match disk.read(&path) {
        Err(DiskError::NotFound { .. }) if disk.read(&legacy_kv_path(agent, tick)).is_ok() => {
            path = legacy_kv_path(agent, tick);
            disk.read(&path)?
        }
        r => r?,
    };
    open(&path, &sealed, agent, tick, state_hash, agent_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem::{MemDisk, SeededEntropy};

    fn small() -> KvLimits {
        KvLimits { max_key_bytes: 4, max_value_bytes: 8, quota_bytes: 20 }
    }

    #[test]
    fn limits_and_quota_are_enforced_and_accounted() {
        let mut kv = Kv::new(small());
        assert_eq!(kv.put(b"abcde", b"x"), Err(PutError::TooLarge));
        assert_eq!(kv.put(b"a", &[0; 9]), Err(PutError::TooLarge));
        kv.put(b"a", &[1; 8]).unwrap();
        kv.put(b"b", &[2; 8]).unwrap();
        assert_eq!(kv.used_bytes(), 18);
        assert_eq!(kv.put(b"c", b"12"), Err(PutError::Quota));
        kv.put(b"a", b"1").unwrap(); // overwrite shrinks
        assert_eq!(kv.used_bytes(), 11);
        kv.delete(b"b");
        kv.delete(b"zz");
        assert_eq!(kv.used_bytes(), 2);
    }

    #[test]
    fn snapshot_roundtrips_and_is_strict() {
        let mut kv = Kv::new(KvLimits::default());
        kv.put(b"b", b"2").unwrap();
        kv.put(b"a", b"").unwrap();
        let bytes = kv.encode();
        assert_eq!(Kv::decode(&bytes, KvLimits::default()).unwrap(), kv);
        assert!(Kv::decode(&bytes[..bytes.len() - 1], KvLimits::default()).is_err());
        assert!(matches!(
            Kv::decode(&bytes, KvLimits { quota_bytes: 1, ..KvLimits::default() }),
            Err(KvError::OverLimit(_))
        ));
        assert!(Kv::decode(&[], KvLimits::default()).unwrap().is_empty());
    }

    #[test]
    fn sealed_snapshot_detects_tampering_and_swaps() {
        let disk = MemDisk::new();
        let key = Keypair::generate(&mut SeededEntropy::derived(3, "kv"));
        let agent = AgentId::new("kv-user").unwrap();
        let state = Hash32::of(b"state");
        let mut kv = Kv::new(KvLimits::default());
        kv.put(b"n", b"7").unwrap();
        let bytes = kv.encode();
        persist(&disk, &agent, TickNumber(5), &state, &bytes, &key).unwrap();
        assert_eq!(load(&disk, &agent, TickNumber(5), &state, &key.public()).unwrap(), bytes);
        // A snapshot for another state (a fork or another checkpoint) is refused.
        assert!(load(&disk, &agent, TickNumber(5), &Hash32::of(b"other"), &key.public()).is_err());
        // Another agent's key is refused.
        let other = Keypair::generate(&mut SeededEntropy::derived(4, "kv"));
        assert!(load(&disk, &agent, TickNumber(5), &state, &other.public()).is_err());
        // Any flipped bit at rest is refused.
        let path = kv_path(&agent, TickNumber(5));
        let len = disk.read(&path).unwrap().len();
        for byte in [0, 6, 20, 50, 90, 120, len - 1] {
            let d2 = MemDisk::new();
            let mut b = disk.read(&path).unwrap();
            b[byte] ^= 1;
            d2.write_atomic(&path, &b).unwrap();
            assert!(load(&d2, &agent, TickNumber(5), &state, &key.public()).is_err(), "flip at {byte} accepted");
        }
        // A sealed file renamed to another tick is refused.
        let sealed = disk.read(&path).unwrap();
        assert!(open("x", &sealed, &agent, TickNumber(6), &state, &key.public()).is_err());
    }
}
