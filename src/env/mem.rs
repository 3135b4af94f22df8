//! In-memory, deterministic twins of every environment piece, for unit and
//! property tests: a manual clock, a disk that models durability (unsynced
//! data is lost on [`MemDisk::crash`], writes can be interrupted at a chosen
//! step), a seeded ChaCha entropy source and an in-process network with
//! partitions. Nothing here reads the real clock or draws OS randomness.

use super::{Clock, Disk, DiskError, Entropy, Incoming, NetError, Network, TEMP_SUFFIX, check_path};
use crate::units::NodeId;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};

/// A clock that moves only when told to. Clones share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    mono_ns: Arc<AtomicU64>,
    unix_ns: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(unix_ns: i64) -> Self {
        ManualClock { mono_ns: Arc::new(AtomicU64::new(0)), unix_ns: Arc::new(AtomicI64::new(unix_ns)) }
    }
    /// Move both readings forward by `ns`.
    pub fn advance_ns(&self, ns: u64) {
        self.mono_ns.fetch_add(ns, Ordering::SeqCst);
        self.unix_ns.fetch_add(i64::try_from(ns).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
    /// Shift only the wall clock (clock skew); the monotonic clock is unaffected.
    pub fn skew_unix_ns(&self, delta_ns: i64) {
        self.unix_ns.fetch_add(delta_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn mono_ns(&self) -> u64 {
        self.mono_ns.load(Ordering::SeqCst)
    }
    fn unix_ns(&self) -> i64 {
        self.unix_ns.load(Ordering::SeqCst)
    }
}

/// Entropy from ChaCha20 seeded by the caller: the same seed gives the same
/// bytes on every machine.
pub struct SeededEntropy(ChaCha20Rng);

impl SeededEntropy {
    pub fn new(seed: [u8; 32]) -> Self {
        SeededEntropy(ChaCha20Rng::from_seed(seed))
    }
    /// Child stream for `label`, derived from `root` (see [`super::derive_seed`]).
    pub fn derived(root: u64, label: &str) -> Self {
        Self::new(super::derive_seed(root, label))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf)
    }
}

/// The steps of an atomic write, in order. A fault hook can stop a write
/// right before one of them, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteStep {
    WriteTemp,
    SyncTemp,
    Rename,
    SyncDir,
}

#[derive(Clone, Debug, Default)]
struct MemFile {
    /// What a reader sees now.
    visible: Option<Vec<u8>>,
    /// What survives a crash.
    durable: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct MemDiskState {
    files: BTreeMap<String, MemFile>,
    /// Interrupt the next write to a path ending with the given suffix right
    /// before the given step.
    fault: Option<(String, WriteStep)>,
    secret_paths: BTreeSet<String>,
}

/// A disk in memory that models what fsync promises. Clones share the same
/// disk, so a test can "restart" a node on the disk it left behind.
#[derive(Clone, Debug, Default)]
pub struct MemDisk(Arc<Mutex<MemDiskState>>);

impl MemDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, MemDiskState> {
        // A poisoned lock means a test thread panicked mid-operation; the
        // data is still the best evidence we have, so keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the next atomic write to a path ending with `suffix` fail right
    /// before `step`, leaving the disk as a crash at that moment would.
    pub fn interrupt_next_write(&self, suffix: &str, step: WriteStep) {
        self.state().fault = Some((suffix.to_string(), step));
    }

    /// Simulate a power loss: everything not yet durable is gone.
    pub fn crash(&self) {
        let mut st = self.state();
        for f in st.files.values_mut() {
            f.visible = f.durable.clone();
        }
        st.files.retain(|_, f| f.visible.is_some());
    }

    /// Flip one bit of a file in place (durably), as a disk fault would.
    pub fn flip_bit(&self, path: &str, byte: usize, bit: u8) -> Result<(), DiskError> {
        let mut st = self.state();
        let f = st.files.get_mut(path).and_then(|f| f.visible.as_mut().map(|v| (v, &mut f.durable)));
        let Some((bytes, durable)) = f else {
            return Err(DiskError::NotFound { op: "flip_bit", path: path.to_string() });
        };
        if byte >= bytes.len() {
            return Err(DiskError::Io {
                op: "flip_bit",
                path: path.to_string(),
                reason: format!("offset {byte} past end"),
            });
        }
        bytes[byte] ^= 1 << (bit % 8);
        *durable = Some(bytes.clone());
        Ok(())
    }

    /// Paths (in order) holding data right now, temp files included.
    pub fn paths(&self) -> Vec<String> {
        self.state().files.iter().filter(|(_, f)| f.visible.is_some()).map(|(p, _)| p.clone()).collect()
    }

    /// Whether `path` was written through [`Disk::write_secret`].
    pub fn is_secret(&self, path: &str) -> bool {
        self.state().secret_paths.contains(path)
    }

    fn take_fault(st: &mut MemDiskState, path: &str, step: WriteStep) -> Result<(), DiskError> {
        if let Some((suffix, at)) = &st.fault
            && *at == step
            && path.ends_with(suffix.as_str())
        {
            st.fault = None;
            return Err(DiskError::Io {
                op: "write",
                path: path.to_string(),
                reason: format!("injected fault before {step:?}"),
            });
        }
        Ok(())
    }
}

impl Disk for MemDisk {
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        check_path("read", path)?;
        self.state()
            .files
            .get(path)
            .and_then(|f| f.visible.clone())
            .ok_or(DiskError::NotFound { op: "read", path: path.to_string() })
    }

    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        check_path("write", path)?;
        let tmp = format!("{path}{TEMP_SUFFIX}");
        let mut st = self.state();
        Self::take_fault(&mut st, path, WriteStep::WriteTemp)?;
        st.files.entry(tmp.clone()).or_default().visible = Some(bytes.to_vec());
        Self::take_fault(&mut st, path, WriteStep::SyncTemp)?;
        let t = st.files.entry(tmp.clone()).or_default();
        t.durable = t.visible.clone();
        Self::take_fault(&mut st, path, WriteStep::Rename)?;
        // Rename: visible at once, durable only after the directory sync.
        let data = st.files.get_mut(&tmp).and_then(|t| t.visible.take());
        st.files.entry(path.to_string()).or_default().visible = data;
        Self::take_fault(&mut st, path, WriteStep::SyncDir)?;
        let f = st.files.entry(path.to_string()).or_default();
        f.durable = f.visible.clone();
        st.files.remove(&tmp);
        Ok(())
    }

    fn write_secret(&self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.write_atomic(path, bytes)?;
        self.state().secret_paths.insert(path.to_string());
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), DiskError> {
        check_path("remove", path)?;
        let mut st = self.state();
        match st.files.remove(path) {
            Some(f) if f.visible.is_some() => Ok(()),
            _ => Err(DiskError::NotFound { op: "remove", path: path.to_string() }),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        check_path("list", dir)?;
        let prefix = format!("{dir}/");
        let st = self.state();
        let mut names = BTreeSet::new();
        for (p, f) in st.files.range(prefix.clone()..) {
            let Some(rest) = p.strip_prefix(&prefix) else { break };
            if f.visible.is_none() {
                continue;
            }
            let name = rest.split('/').next().unwrap_or(rest);
            if !name.ends_with(TEMP_SUFFIX) {
                names.insert(name.to_string());
            }
        }
        Ok(names.into_iter().collect())
    }
}

#[derive(Default)]
struct MemNetState {
    inboxes: BTreeMap<NodeId, mpsc::UnboundedSender<Incoming>>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

/// An in-process network hub. Each node gets an endpoint with
/// [`MemNet::endpoint`]; links can be cut one way or both ways.
#[derive(Clone, Default)]
pub struct MemNet(Arc<Mutex<MemNetState>>);

impl MemNet {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, MemNetState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register `node` (replacing an earlier registration, as a restart does).
    pub fn endpoint(&self, node: NodeId) -> MemEndpoint {
        let (tx, rx) = mpsc::unbounded_channel();
        self.state().inboxes.insert(node.clone(), tx);
        MemEndpoint { net: self.clone(), node, inbox: Arc::new(AsyncMutex::new(rx)) }
    }

    /// Drop everything sent from `a` to `b` and from `b` to `a`.
    pub fn partition(&self, a: &NodeId, b: &NodeId) {
        let mut st = self.state();
        st.cut.insert((a.clone(), b.clone()));
        st.cut.insert((b.clone(), a.clone()));
    }

    /// Restore both directions between `a` and `b`.
    pub fn heal(&self, a: &NodeId, b: &NodeId) {
        let mut st = self.state();
        st.cut.remove(&(a.clone(), b.clone()));
        st.cut.remove(&(b.clone(), a.clone()));
    }
}

/// One node's view of a [`MemNet`].
#[derive(Clone)]
pub struct MemEndpoint {
    net: MemNet,
    node: NodeId,
    inbox: Arc<AsyncMutex<mpsc::UnboundedReceiver<Incoming>>>,
}

impl Network for MemEndpoint {
    async fn request(&self, to: &NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if body.len() > super::MAX_FRAME_BYTES {
            return Err(NetError::TooLarge { peer: to.clone(), len: body.len(), limit: super::MAX_FRAME_BYTES });
        }
        let (tx, rx) = oneshot::channel();
        {
            let st = self.net.state();
            if st.cut.contains(&(self.node.clone(), to.clone())) {
                return Err(NetError::Unreachable { peer: to.clone(), reason: "partitioned".into() });
            }
            let Some(inbox) = st.inboxes.get(to) else {
                return Err(NetError::Unreachable { peer: to.clone(), reason: "no such node".into() });
            };
            let msg = Incoming { from: self.node.clone(), body, reply: tx };
            if inbox.send(msg).is_err() {
                return Err(NetError::Unreachable { peer: to.clone(), reason: "node is down".into() });
            }
        }
        let reply = rx.await.map_err(|_| NetError::Lost { peer: to.clone(), reason: "stream closed".into() })?;
        if self.net.state().cut.contains(&(to.clone(), self.node.clone())) {
            return Err(NetError::Lost { peer: to.clone(), reason: "reply dropped by partition".into() });
        }
        Ok(reply)
    }

    async fn accept(&self) -> Option<Incoming> {
        self.inbox.lock().await.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupted_write_keeps_old_bytes_and_hides_temp() {
        for step in [WriteStep::WriteTemp, WriteStep::SyncTemp, WriteStep::Rename, WriteStep::SyncDir] {
            let disk = MemDisk::new();
            disk.write_atomic("a/x", b"old").unwrap();
            disk.interrupt_next_write("a/x", step);
            assert!(disk.write_atomic("a/x", b"new").is_err());
            disk.crash();
            assert_eq!(disk.read("a/x").unwrap(), b"old", "interrupted before {step:?}");
            assert_eq!(disk.list("a").unwrap(), vec!["x".to_string()]);
        }
    }

    #[test]
    fn completed_write_survives_crash() {
        let disk = MemDisk::new();
        disk.write_atomic("a/x", b"v1").unwrap();
        disk.crash();
        assert_eq!(disk.read("a/x").unwrap(), b"v1");
        assert!(disk.read("a/y").unwrap_err().is_not_found());
    }

    #[test]
    fn list_returns_sorted_direct_children() {
        let disk = MemDisk::new();
        for p in ["h/b/2", "h/a/1", "h/c", "hx/z"] {
            disk.write_atomic(p, b"").unwrap();
        }
        assert_eq!(disk.list("h").unwrap(), vec!["a", "b", "c"]);
        assert!(disk.list("nothing").unwrap().is_empty());
    }

    #[test]
    fn seeded_entropy_is_reproducible() {
        let (mut a, mut b) = (SeededEntropy::derived(3, "n"), SeededEntropy::derived(3, "n"));
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn mem_disk_meets_the_disk_contract() {
        super::super::conformance::disk_contract(&MemDisk::new());
        let disk = MemDisk::new();
        super::super::conformance::disk_survives_crash(&disk, || {
            disk.crash();
            disk.clone()
        });
    }

    #[tokio::test]
    async fn mem_net_meets_the_network_contract() {
        use super::super::conformance::{network_contract, serve};
        let net = MemNet::new();
        let (a, b, nobody) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap(), NodeId::new("nobody").unwrap());
        let (ea, eb) = (net.endpoint(a.clone()), net.endpoint(b.clone()));
        tokio::select! {
            () = serve(&eb) => panic!("the server stopped"),
            () = network_contract(&ea, &a, &b, Some(&nobody)) => {}
        }
    }

    #[tokio::test]
    async fn partition_makes_peer_unreachable() {
        let net = MemNet::new();
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        let ea = net.endpoint(a.clone());
        let eb = net.endpoint(b.clone());
        #[allow(clippy::disallowed_methods)] // a test: the server side runs as its own task
        let server = tokio::spawn(async move {
            let inc = eb.accept().await.unwrap();
            inc.reply.send(inc.body.iter().rev().copied().collect()).unwrap();
        });
        assert_eq!(ea.request(&b, vec![1, 2]).await.unwrap(), vec![2, 1]);
        server.await.unwrap();
        net.partition(&a, &b);
        assert!(matches!(ea.request(&b, vec![]).await, Err(NetError::Unreachable { .. })));
    }
}
