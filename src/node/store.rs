//! What a node keeps on disk per agent, next to the lineage's history:
//! `agents/<agent>/authority.json` (state, role, epoch, lease, last committed
//! head), `agent.wasm`, `manifest.json`, `agent.key` (0600) and sealed kv
//! snapshots `kv/<tick:010>.kv`; beside the lineage's checkpoints, the
//! observation log of each link (`history/<agent>/<tick:010>.ticks`,
//! [`crate::audit::ticklog`]). All writes are atomic ([`Disk`]). A kv
//! snapshot is sealed with the agent key over (agent, tick, sha256(kv)), so
//! it cannot be swapped or altered at rest or in transit unnoticed; so is
//! an observation log, over the link it belongs to.

use crate::audit::ticklog::{self, LinkBinding, LoggedTick, TickLog};
use crate::authority::{AuthorityState, Role};
use crate::checkpoint::{Checkpoint, Hash32};
use crate::env::{Disk, DiskError};
use crate::executor::TickInputs;
use crate::identity::{Keypair, PublicKey};
use crate::units::{AgentId, Epoch, Microcents, TickNumber};
use crate::wire::ReplayData;
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
pub use crate::kv::kv_path;

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

/// Seal the kv snapshot of the checkpoint of `agent` at `tick` whose
/// state bytes are `state`: the one sealed format, [`crate::kv::seal`],
/// which binds agent, tick, SHA-256 of the state and of the kv under the
/// agent key. A snapshot sealed for another state (a fork, another
/// checkpoint at the same tick) is refused by [`open_kv`].
pub fn seal_kv(key: &Keypair, agent: &AgentId, tick: TickNumber, state: &[u8], kv: &[u8]) -> Vec<u8> {
    crate::kv::seal(agent, tick, &Hash32::of(state), kv, key)
}

/// Check a sealed kv snapshot against the agent key and the checkpoint it
/// must belong to (tick and state), and return the kv bytes.
pub fn open_kv(
    key: &PublicKey,
    agent: &AgentId,
    ckpt: &Checkpoint,
    sealed: &[u8],
) -> Result<Vec<u8>, crate::kv::KvError> {
    let name = kv_path(agent, ckpt.tick);
    crate::kv::open(&name, sealed, agent, ckpt.tick, &Hash32::of(&ckpt.state), key)
}

/// The observation log a migration target keeps for the link that leads to
/// the checkpoint it adopted, from the package's replay data: the ticks ran
/// on the source, under the price its checkpoint names, as owner. `None`
/// when the data does not describe exactly that link (then the link has no
/// log on this node; the source's copy may still have one).
pub fn received_tick_log(agent: &AgentId, ckpt: &Checkpoint, r: &ReplayData) -> Option<TickLog> {
    let parent_tick = r.tick.checked_sub(1)?;
    if r.following.len() >= ticklog::MAX_LOGGED_TICKS {
        return None;
    }
    let mut ticks = Vec::with_capacity(r.following.len() + 1);
    for (i, t) in r.ticks().iter().enumerate() {
        if ticks.len() >= ticklog::MAX_LOGGED_TICKS || t.tick != parent_tick.checked_add(i as u64 + 1)? {
            return None;
        }
        let inputs = TickInputs {
            tick: TickNumber(t.tick),
            now_unix_ns: t.now_unix_ns,
            rand_seed: t.rand_seed.as_slice().try_into().ok()?,
            budget: Microcents(t.budget),
            price_per_second: ckpt.price_per_second,
            side_effects_allowed: true,
            receipts: Vec::new(),
        };
        ticks.push(LoggedTick { inputs, event_log: t.event_log.clone() });
    }
    if ticks.last().map(|t| t.inputs.tick) != Some(ckpt.tick) {
        return None;
    }
    let link = LinkBinding {
        agent: agent.clone(),
        parent_tick: TickNumber(parent_tick),
        parent_hash: ckpt.prev_hash(),
        tick: ckpt.tick,
        state_hash: Hash32::of(&ckpt.state),
        budget: ckpt.budget,
    };
    Some(TickLog { link, ticks })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::CheckpointBody;

    fn ckpt(key: &Keypair, tick: u64, state: &[u8]) -> Checkpoint {
        CheckpointBody {
            budget: Microcents(10),
            price_per_second: Microcents(1),
            tick: TickNumber(tick),
            wasm_hash: Hash32::of(b"wasm"),
            epoch: Epoch::new(1, 0),
            lease_expiry_ns: 0,
            prev_hash: Hash32::ZERO,
            state: state.to_vec(),
        }
        .sign(key)
    }

    /// The node's kv seal binds the checkpoint state: a snapshot sealed for
    /// one state is refused for another checkpoint at the same tick (a
    /// fork), as well as for another tick or another agent key.
    #[test]
    fn a_kv_snapshot_sealed_for_another_state_is_refused() {
        let key = Keypair::from_seed([3; 32]);
        let agent = AgentId::new("kv-user").unwrap();
        let sealed = seal_kv(&key, &agent, TickNumber(5), b"state A", b"kv bytes");
        let own = ckpt(&key, 5, b"state A");
        assert_eq!(open_kv(&key.public(), &agent, &own, &sealed).unwrap(), b"kv bytes");
        let fork = ckpt(&key, 5, b"state B");
        let e = open_kv(&key.public(), &agent, &fork, &sealed).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("bound to state") && e.contains("kv-user"), "{e}");
        assert!(open_kv(&key.public(), &agent, &ckpt(&key, 6, b"state A"), &sealed).is_err(), "another tick");
        let other = Keypair::from_seed([4; 32]).public();
        assert!(open_kv(&other, &agent, &own, &sealed).is_err(), "another agent key");
    }
}
