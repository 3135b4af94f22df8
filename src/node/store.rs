//! What a node keeps on disk per agent, next to the lineage's history:
//! `agents/<agent>/authority.json` (state, role, epoch, lease, last committed
//! head), `agent.wasm`, `manifest.json`, `agent.key` (0600) and sealed kv
//! snapshots `kv/<tick:010>.kv`. All writes are atomic ([`Disk`]). A kv
//! snapshot is sealed with the agent key over (agent, tick, sha256(kv)), so
//! it cannot be swapped or altered at rest or in transit unnoticed.

use crate::authority::{AuthorityState, Role};
use crate::checkpoint::Hash32;
use crate::env::{Disk, DiskError};
use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{AgentId, Epoch, TickNumber};
use serde::{Deserialize, Serialize};

pub const AGENTS_DIR: &str = "agents";

pub fn agent_dir(agent: &AgentId) -> String {
    format!("{AGENTS_DIR}/{agent}")
}
pub fn authority_path(agent: &AgentId) -> String {
    format!("{AGENTS_DIR}/{agent}/authority.json")
}
pub fn wasm_path(agent: &AgentId) -> String {
    format!("{AGENTS_DIR}/{agent}/agent.wasm")
}
pub fn manifest_path(agent: &AgentId) -> String {
    format!("{AGENTS_DIR}/{agent}/manifest.json")
}
pub fn kv_dir(agent: &AgentId) -> String {
    format!("{AGENTS_DIR}/{agent}/kv")
}
pub fn kv_path(agent: &AgentId, tick: TickNumber) -> String {
    format!("{AGENTS_DIR}/{agent}/kv/{:010}.kv", tick.0)
}

/// The durable authority record of one agent on one node. `HANDOFF_INITIATED`
/// is never written: until the source relinquishes, the record says
/// `ACTIVE_OWNER`, so a crash before relinquishing keeps authority (§6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorityRecord {
    pub state: AuthorityState,
    pub role: Role,
    pub epoch: Epoch,
    pub lease_expiry_unix_ns: i64,
    /// The newest checkpoint this node committed or adopted; a restart that
    /// finds an older lineage head is restarting from a stale checkpoint.
    pub head_tick: Option<TickNumber>,
    pub head_hash: Option<String>,
    /// Highest epoch major seen for this agent in any message.
    pub highest_major_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
}

pub fn write_record(disk: &impl Disk, agent: &AgentId, rec: &AuthorityRecord) -> Result<(), StoreError> {
    // Plain struct of strings and integers: serialisation cannot fail.
    let bytes = serde_json::to_vec_pretty(rec).expect("authority record serialisation is infallible");
    disk.write_atomic(&authority_path(agent), &bytes)?;
    Ok(())
}

pub fn read_record(disk: &impl Disk, agent: &AgentId) -> Result<AuthorityRecord, StoreError> {
    let path = authority_path(agent);
    let bytes = disk.read(&path)?;
    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt { path, reason: e.to_string() })
}

fn kv_message(agent: &AgentId, tick: TickNumber, kv: &[u8]) -> Vec<u8> {
    let mut m = b"igor-kv-v1\0".to_vec();
    m.extend_from_slice(agent.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&tick.0.to_le_bytes());
    m.extend_from_slice(&Hash32::of(kv).0);
    m
}

/// `signature(64) ++ kv`.
pub fn seal_kv(key: &Keypair, agent: &AgentId, tick: TickNumber, kv: &[u8]) -> Vec<u8> {
    let sig = key.sign(&kv_message(agent, tick, kv));
    let mut out = sig.0.to_vec();
    out.extend_from_slice(kv);
    out
}

/// Check a sealed kv snapshot against the agent key and tick.
pub fn open_kv(key: &PublicKey, agent: &AgentId, tick: TickNumber, sealed: &[u8]) -> Result<Vec<u8>, String> {
    if sealed.len() < 64 {
        return Err(format!("sealed kv for tick {tick} too short ({} bytes)", sealed.len()));
    }
    let (sig, kv) = sealed.split_at(64);
    let sig = Signature(sig.try_into().map_err(|_| "kv signature length".to_string())?);
    if !key.verify(&kv_message(agent, tick, kv), &sig) {
        return Err(format!("kv seal for tick {tick} does not verify against the agent key"));
    }
    Ok(kv.to_vec())
}

/// Load the agent's key, if this node still holds it.
pub fn load_key(disk: &impl Disk, agent: &AgentId) -> Option<Keypair> {
    Keypair::load(disk, &crate::lineage::agent_key_path(agent)).ok()
}

/// Remove a file that may be absent.
pub fn remove_if_present(disk: &impl Disk, path: &str) -> Result<(), DiskError> {
    match disk.remove(path) {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// The agent's secret seed, for `AgentIdentity`. Reads the key file format
/// of [`crate::identity`] (`igor-ed25519-secret-v1\n<hex>\n`); a
/// `Keypair::seed()` accessor there would remove this coupling.
pub fn read_key_seed(disk: &impl Disk, agent: &AgentId) -> Option<[u8; 32]> {
    let bytes = disk.read(&crate::lineage::agent_key_path(agent)).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != "igor-ed25519-secret-v1" {
        return None;
    }
    hex::decode(lines.next()?.trim()).ok()?.try_into().ok()
}
