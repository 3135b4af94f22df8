//! The persisted observation log of one link of a lineage: every tick from
//! a checkpoint's parent to the checkpoint (inputs and recorded event log),
//! kept beside it as `history/<agent>/<tick:010>.ticks` so that any node can
//! re-run the history after the fact (spec §2, CM-4; `igord audit`).
//!
//! Binding: the file names the link it belongs to (agent, parent tick and
//! hash, its checkpoint's tick, state hash and budget) and is signed by the
//! agent key over a domain tag and every byte before the signature, so a
//! host cannot edit a log, move it to another link or splice two together
//! unnoticed. The 209-byte checkpoint header (spec §4) is unchanged: the
//! log is a separate file. It is written *before* its checkpoint (like the
//! sealed kv), so a committed checkpoint never lacks its log after a crash;
//! a log left by a crash before the checkpoint binds a state no chain holds
//! and is ignored.
//!
//! Encoding (little-endian): `"IGTL"`, version `1`, agent id (length `u8`,
//! bytes), parent tick `u64`, parent hash `[32]`, tick `u64`, state hash
//! `[32]`, budget `i64`, tick count `u32`, then per tick: tick `u64`,
//! now `i64`, rand seed `[32]`, budget `i64`, price per second `i64`,
//! side effects allowed `u8`, receipt count `u32` and each receipt (length
//! `u32`, bytes), event log (length `u32`, bytes); then the agent public key
//! `[32]` and the Ed25519 signature `[64]`. Decoding accepts exactly that.
//! Pure data: no disk, no clock.

use crate::checkpoint::Hash32;
use crate::executor::TickInputs;
use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{AgentId, Microcents, TickNumber};

/// File extension of observation logs.
pub const TICKS_EXT: &str = ".ticks";

const MAGIC: &[u8; 4] = b"IGTL";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"igor/ticks/v1\0";
const TRAILER: usize = 32 + 64;

/// Most ticks one log may hold: the node forces a checkpoint at
/// [`crate::node::MAX_TICKS_PER_CHECKPOINT`] ticks, so an honest link never
/// holds more; a file claiming more is refused before any work.
pub const MAX_LOGGED_TICKS: usize = crate::node::MAX_TICKS_PER_CHECKPOINT as usize;

/// Most receipts one tick may carry in a log (bounds decoding work).
pub const MAX_RECEIPTS_PER_TICK: usize = 1024;

/// Where the log of the link ending at `tick` lives.
pub fn ticks_path(agent: &AgentId, tick: TickNumber) -> String {
    format!("history/{agent}/{:010}{TICKS_EXT}", tick.0)
}

/// The tick a log's path names; `None` for any other file.
pub fn ticks_file_tick(path: &str) -> Option<TickNumber> {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(TICKS_EXT).and_then(|t| t.parse::<u64>().ok()).map(TickNumber)
}

/// One recorded tick (the one type, owned by [`crate::replay`]).
pub use crate::replay::LoggedTick;

/// Which link a log belongs to (what its signature binds it to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkBinding {
    pub agent: AgentId,
    pub parent_tick: TickNumber,
    /// SHA-256 of the parent checkpoint's bytes.
    pub parent_hash: Hash32,
    /// The checkpoint this log leads to.
    pub tick: TickNumber,
    /// SHA-256 of that checkpoint's state bytes.
    pub state_hash: Hash32,
    /// That checkpoint's budget.
    pub budget: Microcents,
}

/// The observation log of one link: its binding and its ticks, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickLog {
    pub link: LinkBinding,
    pub ticks: Vec<LoggedTick>,
}

/// A log as read from a file: its content and who signed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTickLog {
    pub log: TickLog,
    pub key: PublicKey,
}

/// Why bytes are not a valid observation log; names the field or offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickLogError {
    #[error("observation log: bad magic or version")]
    BadHeader,
    #[error("observation log: truncated at byte {at} reading {field}")]
    Truncated { at: usize, field: &'static str },
    #[error("observation log: {field} {value} exceeds its limit {limit}")]
    TooMany { field: &'static str, value: usize, limit: usize },
    #[error("observation log: invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("observation log: {0} trailing bytes")]
    Trailing(usize),
    #[error("observation log: signature does not verify under the agent key {0}")]
    BadSignature(String),
}

impl TickLog {
    /// Encode and sign with the agent key.
    pub fn seal(&self, key: &Keypair) -> Vec<u8> {
        seal(&self.link, &self.ticks, key)
    }
}

/// Encode `ticks` as the log of `link` and sign with the agent key (the
/// node's commit path: no copy of its tick records).
pub fn seal(link: &LinkBinding, ticks: &[LoggedTick], key: &Keypair) -> Vec<u8> {
    let mut out = body(link, ticks);
    out.extend_from_slice(key.public().as_bytes());
    let sig = key.sign_parts(&[DOMAIN, &out]);
    out.extend_from_slice(&sig.0);
    out
}

fn body(link: &LinkBinding, ticks: &[LoggedTick]) -> Vec<u8> {
    let logs: usize = ticks.iter().map(|t| t.event_log.len() + 100).sum();
    let mut out = Vec::with_capacity(128 + logs);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    // An AgentId is validated to at most 64 bytes: its length fits a u8.
    let id = link.agent.as_str().as_bytes();
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&link.parent_tick.0.to_le_bytes());
    out.extend_from_slice(&link.parent_hash.0);
    out.extend_from_slice(&link.tick.0.to_le_bytes());
    out.extend_from_slice(&link.state_hash.0);
    out.extend_from_slice(&link.budget.0.to_le_bytes());
    out.extend_from_slice(&(ticks.len() as u32).to_le_bytes());
    for t in ticks {
        let i = &t.inputs;
        out.extend_from_slice(&i.tick.0.to_le_bytes());
        out.extend_from_slice(&i.now_unix_ns.to_le_bytes());
        out.extend_from_slice(&i.rand_seed);
        out.extend_from_slice(&i.budget.0.to_le_bytes());
        out.extend_from_slice(&i.price_per_second.0.to_le_bytes());
        out.push(u8::from(i.side_effects_allowed));
        out.extend_from_slice(&(i.receipts.len() as u32).to_le_bytes());
        for r in &i.receipts {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
        out.extend_from_slice(&(t.event_log.len() as u32).to_le_bytes());
        out.extend_from_slice(&t.event_log);
    }
    out
}

/// A bounds-checked reader; every failure names the field.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TickLogError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(TickLogError::Truncated { at: self.at, field })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], TickLogError> {
        let s = self.take(N, field)?;
        Ok(s.try_into().expect("take returned exactly N bytes"))
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, TickLogError> {
        Ok(self.take(1, field)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<usize, TickLogError> {
        Ok(u32::from_le_bytes(self.arr(field)?) as usize)
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, TickLogError> {
        Ok(u64::from_le_bytes(self.arr(field)?))
    }
    fn i64(&mut self, field: &'static str) -> Result<i64, TickLogError> {
        Ok(i64::from_le_bytes(self.arr(field)?))
    }
    fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, TickLogError> {
        let n = self.u32(field)?;
        Ok(self.take(n, field)?.to_vec())
    }
}

fn limit(field: &'static str, value: usize, limit: usize) -> Result<usize, TickLogError> {
    if value > limit { Err(TickLogError::TooMany { field, value, limit }) } else { Ok(value) }
}

impl SignedTickLog {
    /// Decode and check the signature against the key the file carries.
    /// Whether that key is the agent's is the caller's question (the
    /// checkpoint the log binds holds it).
    pub fn open(bytes: &[u8]) -> Result<SignedTickLog, TickLogError> {
        if bytes.len() < TRAILER + MAGIC.len() + 1 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return Err(TickLogError::BadHeader);
        }
        let (signed, sig) = bytes.split_at(bytes.len() - 64);
        let key_bytes: [u8; 32] = signed[signed.len() - 32..].try_into().expect("length checked above");
        let key = PublicKey::from_bytes(key_bytes)
            .map_err(|e| TickLogError::Invalid { field: "agent key", why: e.to_string() })?;
        let sig = Signature(sig.try_into().expect("split at 64 from the end"));
        if !key.verify_parts(&[DOMAIN, signed], &sig) {
            return Err(TickLogError::BadSignature(key.did()));
        }
        let log = decode_body(&signed[..signed.len() - 32])?;
        Ok(SignedTickLog { log, key })
    }
}

fn decode_body(bytes: &[u8]) -> Result<TickLog, TickLogError> {
    let mut r = Reader { bytes, at: 5 };
    let id_len = r.u8("agent id length")? as usize;
    let id = std::str::from_utf8(r.take(id_len, "agent id")?)
        .map_err(|e| TickLogError::Invalid { field: "agent id", why: e.to_string() })?;
    let agent = AgentId::new(id).map_err(|e| TickLogError::Invalid { field: "agent id", why: e.to_string() })?;
    let parent_tick = TickNumber(r.u64("parent tick")?);
    let parent_hash = Hash32(r.arr("parent hash")?);
    let tick = TickNumber(r.u64("tick")?);
    let state_hash = Hash32(r.arr("state hash")?);
    let budget = Microcents(r.i64("budget")?);
    let count = limit("tick count", r.u32("tick count")?, MAX_LOGGED_TICKS)?;
    // No pre-allocation from the count beyond its limit.
    let mut ticks = Vec::with_capacity(count);
    for _ in 0..count {
        let tick = TickNumber(r.u64("tick number")?);
        let now_unix_ns = r.i64("now")?;
        let rand_seed = r.arr("rand seed")?;
        let budget = Microcents(r.i64("tick budget")?);
        let price_per_second = Microcents(r.i64("price per second")?);
        let side_effects_allowed = match r.u8("side effects allowed")? {
            0 => false,
            1 => true,
            v => return Err(TickLogError::Invalid { field: "side effects allowed", why: format!("{v}") }),
        };
        let n = limit("receipt count", r.u32("receipt count")?, MAX_RECEIPTS_PER_TICK)?;
        let mut receipts = Vec::new();
        for _ in 0..n {
            receipts.push(r.bytes("receipt")?);
        }
        let event_log = r.bytes("event log")?;
        let inputs =
            TickInputs { tick, now_unix_ns, rand_seed, budget, price_per_second, side_effects_allowed, receipts };
        ticks.push(LoggedTick { inputs, event_log });
    }
    if r.at != bytes.len() {
        return Err(TickLogError::Trailing(bytes.len() - r.at));
    }
    Ok(TickLog { link: LinkBinding { agent, parent_tick, parent_hash, tick, state_hash, budget }, ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TickLog {
        let inputs = |t: u64| TickInputs {
            tick: TickNumber(t),
            now_unix_ns: 1_700_000_000_000_000_000 + t as i64,
            rand_seed: [t as u8; 32],
            budget: Microcents(1_000 - t as i64),
            price_per_second: Microcents(7),
            side_effects_allowed: t.is_multiple_of(2),
            receipts: if t == 2 { vec![b"receipt".to_vec()] } else { Vec::new() },
        };
        TickLog {
            link: LinkBinding {
                agent: AgentId::new("counter").unwrap(),
                parent_tick: TickNumber(0),
                parent_hash: Hash32::of(b"parent"),
                tick: TickNumber(3),
                state_hash: Hash32::of(b"state"),
                budget: Microcents(997),
            },
            ticks: (1..=3).map(|t| LoggedTick { inputs: inputs(t), event_log: vec![t as u8; t as usize] }).collect(),
        }
    }

    #[test]
    fn a_sealed_log_round_trips_under_its_key() {
        let key = Keypair::from_seed([5; 32]);
        let bytes = sample().seal(&key);
        let opened = SignedTickLog::open(&bytes).unwrap();
        assert_eq!(opened.log, sample());
        assert_eq!(opened.key, key.public());
    }

    /// Any edited byte (an observation, an input, the binding) is caught by
    /// the signature; a truncated file too, naming what is wrong.
    #[test]
    fn every_edited_byte_is_refused() {
        let bytes = sample().seal(&Keypair::from_seed([5; 32]));
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x01;
            assert!(SignedTickLog::open(&b).is_err(), "flipped byte {at} accepted");
        }
        assert!(SignedTickLog::open(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(SignedTickLog::open(b"IGTL"), Err(TickLogError::BadHeader));
    }

    #[test]
    fn a_log_path_names_its_tick() {
        let a = AgentId::new("counter").unwrap();
        assert_eq!(ticks_path(&a, TickNumber(42)), "history/counter/0000000042.ticks");
        assert_eq!(ticks_file_tick("history/counter/0000000042.ticks"), Some(TickNumber(42)));
        assert_eq!(ticks_file_tick("history/counter/0000000042.ckpt"), None);
    }
}
