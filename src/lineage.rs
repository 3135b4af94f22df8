//! The signed lineage of an agent: the chain of checkpoints linked by
//! prev-hash, its on-disk history archive (`history/<agent>/<tick:010>.ckpt`)
//! and the verifier that names the first broken link. Owns the commit point:
//! a checkpoint exists once its history file is durably written, and the
//! head advances only after that (spec §4; the original advanced it first).
//! Talks to storage only through [`Disk`].

use crate::checkpoint::{Checkpoint, CheckpointBody, CheckpointError, Hash32};
use crate::env::{Disk, DiskError};
use crate::identity::{Keypair, PublicKey, Signature};
use crate::units::{AgentId, Epoch, Microcents, TickNumber};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// File extension of archived checkpoints.
pub const CHECKPOINT_EXT: &str = ".ckpt";

/// File extension of recovery records (see [`RecoveryRecord`]).
pub const RECOVERY_EXT: &str = ".recovery";

/// Suffix given to a damaged checkpoint moved aside by a recovery: no longer
/// part of the history (`verify` skips it), kept for the operator.
pub const ABANDONED_SUFFIX: &str = ".abandoned";

/// Where the recovery that resumed from `anchor_tick` under epoch major
/// `major` leaves its record.
pub fn recovery_path(agent: &AgentId, anchor_tick: TickNumber, major: u64) -> String {
    format!("history/{agent}/{:010}-e{major}{RECOVERY_EXT}", anchor_tick.0)
}

mod link;
pub use link::CommitError;

pub fn history_dir(agent: &AgentId) -> String {
    format!("history/{agent}")
}

pub fn history_path(agent: &AgentId, tick: TickNumber) -> String {
    format!("history/{agent}/{:010}{CHECKPOINT_EXT}", tick.0)
}

/// The tick an archived checkpoint's path names (the inverse of
/// [`history_path`]); `None` for any other file.
pub fn history_tick(path: &str) -> Option<TickNumber> {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(CHECKPOINT_EXT).and_then(|t| t.parse::<u64>().ok()).map(TickNumber)
}

pub fn agent_key_path(agent: &AgentId) -> String {
    format!("agents/{agent}/agent.key")
}

/// Why a link of a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkFault {
    Unreadable(CheckpointError),
    /// v2/v3 checkpoints carry no signature and cannot be part of a lineage.
    NotSealed {
        version: u8,
    },
    PrevHashMismatch {
        expected: Hash32,
        found: Hash32,
    },
    IdentityChanged {
        expected: String,
        found: String,
    },
    TickNotIncreasing {
        previous: TickNumber,
        this: TickNumber,
    },
    /// RE-4: budget never rises along a lineage.
    BudgetIncreased {
        previous: Microcents,
        this: Microcents,
    },
    /// EI-3: two different checkpoints claim the same place in the chain.
    Fork {
        other: Hash32,
        this: Hash32,
    },
    /// A recovery record that does not decode or is not signed by the
    /// agent's key.
    BadRecoveryRecord(String),
}

impl fmt::Display for LinkFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkFault::Unreadable(e) => write!(f, "{e}"),
            LinkFault::NotSealed { version } => write!(f, "unsigned v{version} checkpoint in a lineage"),
            LinkFault::PrevHashMismatch { expected, found } => {
                write!(f, "prev-hash mismatch (expected {}…, found {}…)", expected.short(), found.short())
            }
            LinkFault::IdentityChanged { expected, found } => write!(f, "identity change ({expected} -> {found})"),
            LinkFault::TickNotIncreasing { previous, this } => write!(f, "tick not increasing ({previous} -> {this})"),
            LinkFault::BudgetIncreased { previous, this } => write!(f, "budget increased ({previous} -> {this})"),
            LinkFault::Fork { other, this } => {
                write!(f, "fork: two checkpoints for one link ({}… and {}…)", other.short(), this.short())
            }
            LinkFault::BadRecoveryRecord(why) => write!(f, "recovery record: {why}"),
        }
    }
}

/// The first broken link of a chain: which file, at which tick, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checkpoint {name}: {fault}{}", tick.map(|t| format!(" at tick {t}")).unwrap_or_default())]
pub struct BrokenLink {
    pub name: String,
    pub tick: Option<TickNumber>,
    pub fault: LinkFault,
}

/// What a valid chain contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub links: usize,
    pub first_tick: TickNumber,
    pub last_tick: TickNumber,
    pub did: String,
    pub head: Hash32,
    pub first_budget: Microcents,
    pub last_budget: Microcents,
    /// Operator recoveries the chain went through, oldest first: the
    /// lineage was re-anchored at (tick, hash) under a new epoch.
    pub recoveries: Vec<(TickNumber, Hash32)>,
    /// Checkpoints on branches a recovery abandoned (not part of the chain).
    pub abandoned: usize,
}

/// The signed note an operator recovery leaves in the history (spec §5
/// clarifications): from `anchor` on the lineage continues under `epoch`;
/// any other branch that grew from the anchor (up to `abandoned`, the
/// newest head the node had known) is abandoned. It is written durably
/// *before* the recovered node may commit, so no crash can leave a
/// re-anchored chain without its record. Signed by the agent's key, so a
/// host cannot invent one to hide a fork.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryRecord {
    pub agent: AgentId,
    pub anchor_tick: TickNumber,
    #[serde(with = "hex_hash")]
    pub anchor: Hash32,
    pub epoch: Epoch,
    /// The newest checkpoint known before recovery, if newer than the anchor.
    pub abandoned: Option<(TickNumber, String)>,
    /// Ed25519 signature (hex) by the agent key over [`RecoveryRecord::signing_bytes`].
    #[serde(default)]
    pub signature: String,
}

mod hex_hash {
    use crate::checkpoint::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(h: &Hash32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_hex())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        let s = String::deserialize(d)?;
        Hash32::from_hex(&s).ok_or_else(|| serde::de::Error::custom(format!("not a 64-hex hash: {s:?}")))
    }
}

impl RecoveryRecord {
    /// The bytes the signature covers: a domain tag and the record with an
    /// empty signature.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let unsigned = RecoveryRecord { signature: String::new(), ..self.clone() };
        // A plain struct with string keys: serialisation cannot fail.
        let json = serde_json::to_vec(&unsigned).expect("record serialisation is infallible");
        [b"igor/recovery/v1\0".as_slice(), &json].concat()
    }

    pub fn sign(mut self, key: &Keypair) -> Self {
        self.signature = hex::encode(key.sign(&self.signing_bytes()).0);
        self
    }

    pub fn verify(&self, key: &PublicKey) -> bool {
        let Some(sig) = hex::decode(&self.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
            return false;
        };
        key.verify(&self.signing_bytes(), &Signature(sig))
    }

    pub fn encode(&self) -> Vec<u8> {
        // As above: cannot fail.
        serde_json::to_vec_pretty(self).expect("record serialisation is infallible")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Verify a chain given as (name, bytes) pairs in any order. Files are
/// ordered by tick; identical copies (the same checkpoint archived by two
/// nodes) count once; the first link's prev-hash is taken as given (history
/// may start after genesis), every later one must match the one before.
pub fn verify_chain(entries: &[(String, Vec<u8>)]) -> Result<ChainSummary, BrokenLink> {
    verify_lineage(entries, &[])
}

/// [`verify_chain`] across operator recoveries: `records` are recovery
/// records as (name, bytes). Each must be signed by the agent key; the
/// branches it abandoned are set aside (counted in the summary), the
/// recovery is named, and every *other* fork is still a broken link (EI-3).
pub fn verify_lineage(
    entries: &[(String, Vec<u8>)],
    records: &[(String, Vec<u8>)],
) -> Result<ChainSummary, BrokenLink> {
    let mut decoded = Vec::with_capacity(entries.len());
    for (name, bytes) in entries {
        let broken = |tick, fault| BrokenLink { name: name.clone(), tick, fault };
        let c = Checkpoint::decode(bytes).map_err(|e| broken(None, LinkFault::Unreadable(e)))?;
        if c.seal.is_none() {
            return Err(broken(Some(c.tick), LinkFault::NotSealed { version: c.version }));
        }
        c.verify_signature().map_err(|e| broken(Some(c.tick), LinkFault::Unreadable(e)))?;
        decoded.push((name.clone(), c, Hash32::of(bytes)));
    }
    let key = decoded.first().and_then(|(_, c, _)| c.agent_key().copied());
    let mut recoveries = Vec::new();
    for (name, bytes) in records {
        let bad = |why: String| BrokenLink { name: name.clone(), tick: None, fault: LinkFault::BadRecoveryRecord(why) };
        let r = RecoveryRecord::decode(bytes).map_err(bad)?;
        if !key.is_some_and(|k| r.verify(&k)) {
            return Err(bad("not signed by the agent key".into()));
        }
        recoveries.push(r);
    }
    recoveries.sort_by_key(|r| (r.anchor_tick, r.epoch));
    let abandoned = abandoned_by(&decoded, &recoveries);
    let mut by_tick: BTreeMap<TickNumber, (String, Checkpoint, Hash32)> = BTreeMap::new();
    for (name, c, hash) in decoded.into_iter().filter(|(_, _, h)| !abandoned.contains(h)) {
        let broken = |tick, fault| BrokenLink { name: name.clone(), tick, fault };
        if let Some((_, _, other)) = by_tick.get(&c.tick) {
            if *other != hash {
                return Err(broken(Some(c.tick), LinkFault::Fork { other: *other, this: hash }));
            }
            continue;
        }
        by_tick.insert(c.tick, (name, c, hash));
    }
    let mut links = by_tick.into_values();
    let Some((_, first, first_hash)) = links.next() else {
        return Err(BrokenLink {
            name: "(none)".into(),
            tick: None,
            fault: LinkFault::Unreadable(CheckpointError::Empty),
        });
    };
    let did = first.agent_key().map(|k| k.did()).unwrap_or_default();
    let mut summary = ChainSummary {
        links: 1,
        first_tick: first.tick,
        last_tick: first.tick,
        did,
        head: first_hash,
        first_budget: first.budget,
        last_budget: first.budget,
        recoveries: recoveries.iter().map(|r| (r.anchor_tick, r.anchor)).collect(),
        abandoned: abandoned.len(),
    };
    let mut prev = first;
    for (name, c, hash) in links {
        check_link(&prev, &summary.head, &c).map_err(|fault| BrokenLink { name, tick: Some(c.tick), fault })?;
        summary.links += 1;
        summary.last_tick = c.tick;
        summary.last_budget = c.budget;
        summary.head = hash;
        prev = c;
    }
    Ok(summary)
}

/// Hashes of the checkpoints on branches the recoveries abandoned: every
/// child of a recovery's anchor from an epoch major older than the
/// recovery's, and everything that descends from one.
fn abandoned_by(links: &[(String, Checkpoint, Hash32)], recoveries: &[RecoveryRecord]) -> BTreeSet<Hash32> {
    let mut out = BTreeSet::new();
    for r in recoveries {
        for (_, c, h) in links {
            if c.prev_hash() == r.anchor && c.epoch.major < r.epoch.major {
                out.insert(*h);
            }
        }
    }
    // Descendants, to a fixed point (a chain is at most `links` long).
    loop {
        let more: Vec<Hash32> = links
            .iter()
            .filter(|(_, c, h)| !out.contains(h) && out.contains(&c.prev_hash()))
            .map(|(_, _, h)| *h)
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// The rules one link must satisfy relative to the link before it.
fn check_link(prev: &Checkpoint, prev_hash: &Hash32, c: &Checkpoint) -> Result<(), LinkFault> {
    if c.tick <= prev.tick {
        return Err(LinkFault::TickNotIncreasing { previous: prev.tick, this: c.tick });
    }
    if c.prev_hash() != *prev_hash {
        return Err(LinkFault::PrevHashMismatch { expected: *prev_hash, found: c.prev_hash() });
    }
    if c.agent_key() != prev.agent_key() {
        let did = |c: &Checkpoint| c.agent_key().map(|k| k.did()).unwrap_or_default();
        return Err(LinkFault::IdentityChanged { expected: did(prev), found: did(c) });
    }
    if c.budget > prev.budget {
        return Err(LinkFault::BudgetIncreased { previous: prev.budget, this: c.budget });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    #[error("agent {agent}: {source}")]
    Disk { agent: AgentId, source: DiskError },
    #[error("agent {agent}: cannot commit tick {tick}: {fault}")]
    Rejected { agent: AgentId, tick: TickNumber, fault: LinkFault },
    #[error("agent {agent}: {source}")]
    Checkpoint { agent: AgentId, source: CheckpointError },
}

/// The local view of one agent's chain: its head (newest committed
/// checkpoint) and the archive on disk. Files that fail to decode are kept
/// aside in `damaged` so the node can decide (a damaged newest file means
/// the head may be stale: the node must not tick on a guess).
#[derive(Debug, Clone)]
pub struct Lineage {
    agent: AgentId,
    head: Option<(Checkpoint, Hash32)>,
    damaged: Vec<(String, CheckpointError)>,
}

impl Lineage {
    /// An agent with no history yet (genesis on the first commit).
    pub fn new(agent: AgentId) -> Self {
        Lineage { agent, head: None, damaged: Vec::new() }
    }

    /// Read `history/<agent>/`: the head is the newest file that decodes
    /// and carries a valid signature; unreadable files are listed in
    /// [`Lineage::damaged`] (newest first).
    pub fn open(disk: &impl Disk, agent: &AgentId) -> Result<Self, LineageError> {
        let dir = history_dir(agent);
        let disk_err = |source| LineageError::Disk { agent: agent.clone(), source };
        let names = disk.list(&dir).map_err(disk_err)?;
        let mut lineage = Lineage::new(agent.clone());
        for name in names.iter().rev().filter(|n| n.ends_with(CHECKPOINT_EXT)) {
            let path = format!("{dir}/{name}");
            let bytes = disk.read(&path).map_err(disk_err)?;
            match Checkpoint::decode(&bytes).and_then(|c| c.verify_signature().map(|_| c)) {
                Ok(c) if c.seal.is_some() => {
                    lineage.head = Some((c, Hash32::of(&bytes)));
                    break;
                }
                Ok(c) => lineage.damaged.push((path, CheckpointError::UnsupportedVersion(c.version))),
                Err(e) => lineage.damaged.push((path, e)),
            }
        }
        Ok(lineage)
    }

    pub fn agent(&self) -> &AgentId {
        &self.agent
    }

    pub fn head(&self) -> Option<&Checkpoint> {
        self.head.as_ref().map(|(c, _)| c)
    }

    /// SHA-256 of the head checkpoint's bytes; zeros before genesis.
    pub fn head_hash(&self) -> Hash32 {
        self.head.as_ref().map(|(_, h)| *h).unwrap_or(Hash32::ZERO)
    }

    /// Files newer than the head that could not be read.
    pub fn damaged(&self) -> &[(String, CheckpointError)] {
        &self.damaged
    }

    /// The damaged files were moved aside (operator recovery).
    pub fn forget_damaged(&mut self) {
        self.damaged.clear();
    }

    fn rejected(&self, tick: TickNumber, fault: LinkFault) -> LineageError {
        LineageError::Rejected { agent: self.agent.clone(), tick, fault }
    }

    /// Sign `body` as the next link (prev-hash filled in here), archive it
    /// atomically, then advance the head. On error the head is unchanged.
    pub fn commit(
        &mut self,
        disk: &impl Disk,
        mut body: CheckpointBody,
        key: &Keypair,
    ) -> Result<Checkpoint, LineageError> {
        body.prev_hash = self.head_hash();
        let c = body.sign(key);
        self.append(disk, c)
    }

    /// Append a checkpoint signed elsewhere (received in a migration). It
    /// must be sealed, validly signed and extend the local head, if any.
    pub fn adopt(&mut self, disk: &impl Disk, c: Checkpoint) -> Result<Checkpoint, LineageError> {
        if c.seal.is_none() {
            return Err(self.rejected(c.tick, LinkFault::NotSealed { version: c.version }));
        }
        c.verify_signature().map_err(|source| LineageError::Checkpoint { agent: self.agent.clone(), source })?;
        self.append(disk, c)
    }

    fn append(&mut self, disk: &impl Disk, c: Checkpoint) -> Result<Checkpoint, LineageError> {
        if let Some((prev, prev_hash)) = &self.head {
            // Adopted checkpoints come from another node's chain whose
            // prev-hash points at a checkpoint we may never have seen; our
            // own commits always link to our head.
            let linked = c.prev_hash() == *prev_hash;
            if linked {
                check_link(prev, prev_hash, &c).map_err(|f| self.rejected(c.tick, f))?;
            } else if c.tick <= prev.tick {
                return Err(self.rejected(c.tick, LinkFault::TickNotIncreasing { previous: prev.tick, this: c.tick }));
            }
        }
        let bytes = c.encode();
        let path = history_path(&self.agent, c.tick);
        disk.write_atomic(&path, &bytes).map_err(|source| LineageError::Disk { agent: self.agent.clone(), source })?;
        // Commit point passed: only now does the head move.
        self.head = Some((c.clone(), Hash32::of(&bytes)));
        Ok(c)
    }

    /// Read every archived checkpoint of this agent as (path, bytes).
    pub fn archive(disk: &impl Disk, agent: &AgentId) -> Result<Vec<(String, Vec<u8>)>, DiskError> {
        Self::archived(disk, agent, CHECKPOINT_EXT)
    }

    /// Read every recovery record of this agent as (path, bytes).
    pub fn recovery_records(disk: &impl Disk, agent: &AgentId) -> Result<Vec<(String, Vec<u8>)>, DiskError> {
        Self::archived(disk, agent, RECOVERY_EXT)
    }

    fn archived(disk: &impl Disk, agent: &AgentId, ext: &str) -> Result<Vec<(String, Vec<u8>)>, DiskError> {
        let dir = history_dir(agent);
        let mut out = Vec::new();
        for name in disk.list(&dir)?.into_iter().filter(|n| n.ends_with(ext)) {
            let path = format!("{dir}/{name}");
            let bytes = disk.read(&path)?;
            out.push((path, bytes));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::mem::{MemDisk, SeededEntropy, WriteStep};
    use crate::units::Epoch;

    fn body(tick: u64, budget: i64) -> CheckpointBody {
        CheckpointBody {
            budget: Microcents(budget),
            price_per_second: Microcents(10),
            tick: TickNumber(tick),
            wasm_hash: Hash32::of(b"wasm"),
            epoch: Epoch::new(1, 0),
            lease_expiry_ns: 0,
            prev_hash: Hash32([9; 32]),
            state: tick.to_le_bytes().to_vec(),
        }
    }

    fn setup(n: u64) -> (MemDisk, AgentId, Keypair, Lineage) {
        let disk = MemDisk::new();
        let agent = AgentId::new("counter").unwrap();
        let key = Keypair::generate(&mut SeededEntropy::derived(1, "agent"));
        let mut l = Lineage::new(agent.clone());
        for t in 1..=n {
            l.commit(&disk, body(t, 1000 - t as i64), &key).unwrap();
        }
        (disk, agent, key, l)
    }

    #[test]
    fn commits_chain_and_reopen_finds_head() {
        let (disk, agent, _, l) = setup(4);
        let reopened = Lineage::open(&disk, &agent).unwrap();
        assert_eq!(reopened.head().unwrap().tick, TickNumber(4));
        assert_eq!(reopened.head_hash(), l.head_hash());
        let archive = Lineage::archive(&disk, &agent).unwrap();
        assert_eq!(archive[0].0, "history/counter/0000000001.ckpt");
        let s = verify_chain(&archive).unwrap();
        assert_eq!((s.links, s.first_tick, s.last_tick), (4, TickNumber(1), TickNumber(4)));
        let genesis = Checkpoint::decode(&archive[0].1).unwrap();
        assert_eq!(genesis.prev_hash(), Hash32::ZERO, "the lineage fills prev-hash, not the caller");
    }

    #[test]
    fn interrupted_commit_keeps_head_and_previous_checkpoint() {
        let (disk, agent, key, mut l) = setup(2);
        let before = l.head_hash();
        disk.interrupt_next_write("0000000003.ckpt", WriteStep::Rename);
        assert!(l.commit(&disk, body(3, 990), &key).is_err());
        assert_eq!(l.head_hash(), before, "head must not advance on a failed write");
        disk.crash();
        let reopened = Lineage::open(&disk, &agent).unwrap();
        assert_eq!(reopened.head().unwrap().tick, TickNumber(2));
        assert!(reopened.damaged().is_empty());
    }

    #[test]
    fn verify_names_flipped_state_byte() {
        let (disk, agent, _, _) = setup(4);
        let mut archive = Lineage::archive(&disk, &agent).unwrap();
        let last = archive[2].1.len() - 1;
        archive[2].1[last] ^= 1;
        let err = verify_chain(&archive).unwrap_err();
        assert_eq!(err.name, "history/counter/0000000003.ckpt");
        assert!(matches!(err.fault, LinkFault::Unreadable(CheckpointError::BadSignature { tick: 3, .. })), "{err}");
    }

    #[test]
    fn verify_names_prev_hash_that_skips_a_link() {
        let (disk, agent, _, _) = setup(4);
        let mut archive = Lineage::archive(&disk, &agent).unwrap();
        archive.remove(1);
        let err = verify_chain(&archive).unwrap_err();
        assert_eq!(err.tick, Some(TickNumber(3)));
        assert!(matches!(err.fault, LinkFault::PrevHashMismatch { .. }), "{err}");
    }

    #[test]
    fn verify_rejects_identity_change_budget_rise_and_forks() {
        let (disk, agent, key, mut l) = setup(2);
        let other = Keypair::generate(&mut SeededEntropy::derived(2, "agent"));
        let mut archive = Lineage::archive(&disk, &agent).unwrap();
        let mut b = body(3, 900);
        b.prev_hash = l.head_hash();
        archive.push(("x".into(), b.clone().sign(&other).encode()));
        assert!(matches!(verify_chain(&archive).unwrap_err().fault, LinkFault::IdentityChanged { .. }));
        archive.pop();
        let mut rich = b.clone();
        rich.budget = Microcents(5000);
        archive.push(("x".into(), rich.sign(&key).encode()));
        assert!(matches!(verify_chain(&archive).unwrap_err().fault, LinkFault::BudgetIncreased { .. }));
        archive.pop();
        let mut fork = body(2, 1);
        fork.prev_hash = Hash32::ZERO;
        archive.push(("fork".into(), fork.sign(&key).encode()));
        assert!(matches!(verify_chain(&archive).unwrap_err().fault, LinkFault::Fork { .. }));
        // And the lineage itself refuses a budget rise.
        let mut rich = body(3, 5000);
        rich.prev_hash = Hash32::ZERO;
        assert!(matches!(l.commit(&disk, rich, &key), Err(LineageError::Rejected { .. })));
    }

    #[test]
    fn damaged_newest_file_is_reported_not_silently_skipped() {
        let (disk, agent, _, _) = setup(3);
        disk.flip_bit("history/counter/0000000003.ckpt", 20, 0).unwrap();
        let l = Lineage::open(&disk, &agent).unwrap();
        assert_eq!(l.head().unwrap().tick, TickNumber(2));
        assert_eq!(l.damaged().len(), 1);
        assert_eq!(l.damaged()[0].0, "history/counter/0000000003.ckpt");
    }
}
