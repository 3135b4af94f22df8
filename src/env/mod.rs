//! The environment layer: the only way the runtime core sees the world.
//!
//! The core is generic over four traits: [`Clock`], [`Disk`], [`Entropy`] and
//! [`Network`]. Backends implement them: [`real`] (system clock, filesystem,
//! OS entropy; libp2p lives in its own adapter), [`mem`] (in-memory and
//! deterministic, for unit tests) and, in the `igor-sim` crate, turmoil.
//! Nothing outside the backends may read a clock, touch a file or socket, or
//! draw OS randomness: `clippy.toml` enforces it.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod mem;
pub mod real;

use crate::units::NodeId;
use sha2::{Digest, Sha256};
use std::future::Future;

/// A point in time as the core sees it: a monotonic reading for timers and a
/// wall-clock reading for lease expiries and `clock_now`. Both come from the
/// backend; in the simulator both are simulated (and may be skewed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    /// Nanoseconds since an arbitrary origin; never goes backwards.
    pub mono_ns: u64,
    /// Unix time in nanoseconds; may jump (skew) in the simulator.
    pub unix_ns: i64,
}

/// Time. Monotonic for timers, wall clock for leases and the guest's clock.
pub trait Clock {
    fn mono_ns(&self) -> u64;
    fn unix_ns(&self) -> i64;
    fn now(&self) -> Now {
        Now { mono_ns: self.mono_ns(), unix_ns: self.unix_ns() }
    }
}

/// What went wrong on a disk operation, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("{op} {path}: not found")]
    NotFound { op: &'static str, path: String },
    #[error("{op} {path}: invalid path: {reason}")]
    InvalidPath { op: &'static str, path: String, reason: &'static str },
    #[error("{op} {path}: {reason}")]
    Io { op: &'static str, path: String, reason: String },
}

impl DiskError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, DiskError::NotFound { .. })
    }
}

/// Storage rooted at a node's data directory. Paths are relative, use `/`
/// and never contain `..`: see [`check_path`].
///
/// Durability contract: `write_atomic` returns `Ok` only after the new bytes
/// are durable under `path` (temp file, fsync, rename, fsync of the
/// directory). If it fails or the process crashes at any point, `path` holds
/// either the old bytes or the new bytes, never a mix (RE-1).
pub trait Disk {
    /// The whole file.
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError>;
    /// Replace `path` atomically and durably; parent directories are created.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// As [`Disk::write_atomic`], readable only by the owner (mode 0600 on
    /// real filesystems). Used for private keys.
    fn write_secret(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.write_atomic(path, bytes)
    }
    /// Remove a file; `NotFound` if it was absent.
    fn remove(&self, path: &str) -> Result<(), DiskError>;
    /// Names of the entries directly under `dir`, sorted; empty if `dir`
    /// does not exist. Temp files of in-progress writes are not listed.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
    fn exists(&self, path: &str) -> bool {
        self.read(path).is_ok()
    }
}

/// Suffix of the temporary file an atomic write goes through. `list` hides
/// such files, so a crash between write and rename leaves no visible trace.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Reject absolute paths, `..`, empty components and backslashes, so that a
/// path built from input can never leave the data directory.
pub fn check_path(op: &'static str, path: &str) -> Result<(), DiskError> {
    let bad = |reason| Err(DiskError::InvalidPath { op, path: path.to_string(), reason });
    if path.is_empty() {
        return bad("empty");
    }
    if path.starts_with('/') || path.contains('\\') {
        return bad("must be relative and use '/'");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("empty, '.' or '..' component");
    }
    Ok(())
}

/// Randomness. Every draw the core makes goes through this trait, so the
/// simulator can make it a seeded, reproducible stream.
pub trait Entropy {
    fn fill(&mut self, buf: &mut [u8]);
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }
}

/// Derive a child seed from a root seed and a label (node name, purpose), so
/// every RNG in a run descends from the one root seed and adding a consumer
/// does not reshuffle the others.
pub fn derive_seed(root: u64, label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"igor-seed-v1\0");
    h.update(root.to_le_bytes());
    h.update(label.as_bytes());
    h.finalize().into()
}

/// What went wrong on a request. The split matters to the migration
/// protocol: only `Unreachable` proves the peer never saw the request, so
/// only it may be retried; `Lost` is an *ambiguous* outcome (spec §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("peer {peer} unreachable (request not delivered): {reason}")]
    Unreachable { peer: NodeId, reason: String },
    #[error("request to {peer} may have been delivered but no reply came: {reason}")]
    Lost { peer: NodeId, reason: String },
    #[error("message to {peer} too large: {len} bytes (limit {limit})")]
    TooLarge { peer: NodeId, len: usize, limit: usize },
}

/// A request from a peer, waiting for its one reply. Dropping `reply`
/// without sending closes the stream: the requester sees `NetError::Lost`.
#[derive(Debug)]
pub struct Incoming {
    /// The sender as authenticated by the transport (turmoil host name,
    /// libp2p peer id). Protocol messages carry their own signed claims.
    pub from: NodeId,
    pub body: Vec<u8>,
    pub reply: tokio::sync::oneshot::Sender<Vec<u8>>,
}

/// Largest request or reply body any [`Network`] carries: the largest wire
/// message (`wire::MAX_MESSAGE_BYTES`, checked again when parsing). Part of
/// the contract, so a package the real node accepts is never `TooLarge` in
/// a twin: every implementation refuses a larger body with
/// [`NetError::TooLarge`] before sending it, and a larger incoming frame
/// before reading it ([`conformance`] checks this on every twin).
pub const MAX_FRAME_BYTES: usize = crate::wire::MAX_MESSAGE_BYTES;

/// Request/response messaging between nodes: one request, one reply per
/// stream, bodies are opaque bytes (the core's wire messages). Deadlines
/// belong to the protocol state machines, not to the transport. Bodies are
/// at most [`MAX_FRAME_BYTES`].
pub trait Network {
    /// Send `body` to `to` and wait for its reply.
    fn request(&self, to: &NodeId, body: Vec<u8>) -> impl Future<Output = Result<Vec<u8>, NetError>>;
    /// The next incoming request; `None` once the network is shut down.
    fn accept(&self) -> impl Future<Output = Option<Incoming>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_data_dir() {
        assert!(check_path("read", "history/a/0000000001.ckpt").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a\\b", "./a"] {
            assert!(check_path("read", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn derived_seeds_differ_by_label_and_root() {
        assert_ne!(derive_seed(1, "a"), derive_seed(1, "b"));
        assert_ne!(derive_seed(1, "a"), derive_seed(2, "a"));
        assert_eq!(derive_seed(7, "node-a"), derive_seed(7, "node-a"));
    }
}
