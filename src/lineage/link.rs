//! The one way a link is committed, by the node and by `igord run` alike:
//! the sealed kv snapshot first, then the observation log of the ticks
//! since the parent, then the signed checkpoint (the commit point). Each
//! file is written whole through [`Disk::write_atomic`] (RE-1), and the
//! checkpoint last, so a committed checkpoint never lacks its kv or its
//! log after a crash; a kv or log left by a crash before the checkpoint
//! binds a state no chain holds and is ignored.

use super::{Lineage, LineageError};
use crate::audit::ticklog::{self, LinkBinding};
use crate::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use crate::env::{Disk, DiskError};
use crate::identity::Keypair;
use crate::replay::LoggedTick;

/// What could not be written; the head is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("kv snapshot {path}: {source}")]
    Kv { path: String, source: DiskError },
    #[error("observation log {path}: {source}")]
    Log { path: String, source: DiskError },
    #[error(transparent)]
    Lineage(#[from] LineageError),
}

impl Lineage {
    /// Commit `body` (its `prev_hash` is set to the head) as the next link:
    /// seal `kv` under the agent key bound to the new state (`kv::seal`),
    /// write the observation log of `ticks` (the ticks since the head; none
    /// for a genesis, which has no parent), then sign and append the
    /// checkpoint.
    pub fn commit_link(
        &mut self,
        disk: &impl Disk,
        body: CheckpointBody,
        kv: &[u8],
        ticks: &[LoggedTick],
        key: &Keypair,
    ) -> Result<Checkpoint, CommitError> {
        let agent = self.agent.clone();
        let state_hash = Hash32::of(&body.state);
        let path = crate::kv::kv_path(&agent, body.tick);
        let sealed = crate::kv::seal(&agent, body.tick, &state_hash, kv, key);
        disk.write_atomic(&path, &sealed).map_err(|source| CommitError::Kv { path, source })?;
        if let Some(parent) = self.head() {
            let link = LinkBinding {
                agent: agent.clone(),
                parent_tick: parent.tick,
                parent_hash: self.head_hash(),
                tick: body.tick,
                state_hash,
                budget: body.budget,
            };
            let path = ticklog::ticks_path(&agent, body.tick);
            let bytes = ticklog::seal(&link, ticks, key);
            disk.write_atomic(&path, &bytes).map_err(|source| CommitError::Log { path, source })?;
        }
        Ok(self.commit(disk, body, key)?)
    }
}
