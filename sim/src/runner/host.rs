//! The software of one simulated host: boots the same `Node` that `igord`
//! runs on the turmoil twins (disk, net, clock), applies the simulator's
//! disk damage at boot, runs the watchdog between the driver and the
//! runner, and reads the history archive at the end. `HostCtl` is what the
//! runner shares with a host across its restarts.

use super::RunError;
use super::schema::AgentBytes;
use crate::byzantine::{ByzantineConduct, Interposer, Misbehaviour};
use crate::clock::{ClockFault, SimClock};
use crate::disk::{DiskFaults, SimDisk};
use crate::net::{FaultState, SimNet};
use crate::scenario::Storage;
use crate::watchdog::{Stuck, Watchdog};
use igor::driver::{self, Control};
use igor::env::Disk;
use igor::env::mem::SeededEntropy;
use igor::lineage;
use igor::node::{Node, NodeConfig, NodeEvent, store};
use igor::sandbox::{Sandbox, SandboxConfig};
use igor::units::{AgentId, NodeId, TickNumber};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tokio::sync::mpsc;

/// What the runner shares with one host across its restarts.
pub(super) struct HostCtl {
    pub(super) name: NodeId,
    pub(super) clock: Rc<Cell<ClockFault>>,
    pub(super) faults: Rc<RefCell<FaultState>>,
    pub(super) control: RefCell<Option<mpsc::UnboundedSender<Control>>>,
    pub(super) boots: Cell<u32>,
    pub(super) damage: RefCell<Storage>,
    /// The simulator flipped bits in this node's history (CorruptNewest):
    /// unreadable files there are the fault, not a broken chain.
    pub(super) corrupted: Cell<bool>,
    /// Set by the watchdog inside the host when the node spun (STUCK).
    pub(super) stuck: RefCell<Option<Stuck>>,
    /// End of run: after the driver stops, read the history archive.
    pub(super) collect: Cell<bool>,
    /// The history archive read at the end: agent → (file, bytes).
    pub(super) histories: RefCell<Option<Histories>>,
    /// The node's disk write faults (`DiskFault`), shared with every boot.
    pub(super) disk: Rc<DiskFaults>,
    /// SCENARIOS ONLY: the node's attack (its conduct and its interposer).
    pub(super) adversary: Option<Misbehaviour>,
    /// When the node's driver wakes by itself next (simulated ns, what it
    /// last reported before waiting); 0 = not known yet (never skip).
    pub(super) wake_ns: Cell<u64>,
}

/// Every agent's history files on one node's disk: agent → (path, bytes).
/// Per agent directory: its archived checkpoints and its recovery records,
/// each as (path, bytes).
pub(super) type Histories = BTreeMap<String, (Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>)>;

/// Sandbox of a simulated node: on-demand allocation (no pooling: many
/// nodes share one process), no wall-clock net (it is not deterministic),
/// scripted http (`ScriptedHttp::simulated_world`).
pub(super) fn sandbox() -> Result<Sandbox, RunError> {
    // http answers from a fixed script (deterministic, the same on every node).
    let http = std::sync::Arc::new(igor::http::ScriptedHttp::simulated_world());
    let cfg = SandboxConfig { pooling_instances: None, http, ..SandboxConfig::default() };
    Sandbox::new(cfg).map_err(|e| RunError::Sim(format!("sandbox: {e}")))
}

pub(super) fn apply_damage(disk: &SimDisk, damage: &Storage) {
    // (path, recoverable) of an agent's history checkpoints, newest first.
    // Recoverable: its kv snapshot is still on disk, so a recovery could
    // resume from it (older ones are pruned once superseded).
    let newest = |agent: &str| -> Vec<(String, bool)> {
        let Ok(id) = AgentId::new(agent) else { return Vec::new() };
        let dir = lineage::history_dir(&id);
        let kv: BTreeSet<String> = disk.list(&store::kv_dir(&id)).unwrap_or_default().into_iter().collect();
        disk.list(&dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with(lineage::CHECKPOINT_EXT))
            .rev()
            .map(|n| {
                let tick = n.split('.').next().and_then(|t| t.parse::<u64>().ok());
                let ok = tick.is_some_and(|t| {
                    let p = store::kv_path(&id, TickNumber(t));
                    p.rsplit('/').next().is_some_and(|f| kv.contains(f))
                });
                (format!("{dir}/{n}"), ok)
            })
            .collect()
    };
    // Partial damage is a fault to recover from, not data loss (that is
    // `Wipe`): it stops short of the oldest checkpoint a recovery could
    // still resume from.
    let spare = |all: &[(String, bool)]| all.iter().rposition(|(_, ok)| *ok).unwrap_or(0);
    match damage {
        Storage::Intact => {}
        Storage::Wipe => disk.wipe(),
        Storage::RemoveNewest { agent, count } => {
            let all = newest(agent);
            for (p, _) in all.iter().take((*count).min(spare(&all))) {
                let _ = disk.remove(p);
            }
        }
        Storage::CorruptNewest { agent } => {
            let all = newest(agent);
            if spare(&all) > 0 {
                let _ = disk.flip_bit(&all[0].0, 40);
            }
        }
    }
}

/// The software of one simulated node: boots the same `Node` that `igord`
/// runs, on the turmoil twins, and drives it with the shared driver.
pub(super) async fn host_main(
    ctl: Rc<HostCtl>,
    cfg: NodeConfig,
    seed: u64,
    deploys: Vec<AgentBytes>,
    events: mpsc::UnboundedSender<NodeEvent>,
) -> turmoil::Result {
    let boot = ctl.boots.get();
    ctl.boots.set(boot + 1);
    ctl.wake_ns.set(0);
    let disk = SimDisk::with_faults(ctl.disk.clone());
    let damage = std::mem::take(&mut *ctl.damage.borrow_mut());
    if matches!(damage, Storage::CorruptNewest { .. }) {
        ctl.corrupted.set(true);
    }
    // The simulator's own damage bypasses the node's write faults.
    apply_damage(&SimDisk::default(), &damage);
    // The watchdog sits between the driver and the runner: a node that
    // spins never lets the step end, so only code inside the host can stop it.
    let (node_tx, mut node_rx) = mpsc::unbounded_channel::<NodeEvent>();
    let clock = SimClock::new(ctl.clock.clone());
    let net = SimNet::bind(ctl.faults.clone()).await?;
    let adversary = ctl.adversary.as_ref();
    let net = Interposer::new(net, adversary, &cfg, clock.clone(), node_tx.clone(), seed, u64::from(boot));
    let entropy = SeededEntropy::derived(seed, &format!("node/{}/boot/{boot}", ctl.name));
    let sandbox = sandbox().map_err(|e| e.to_string())?;
    let mut node = Node::open(cfg, disk.clone(), clock, entropy, sandbox);
    if let Some(conduct) = adversary.and_then(ByzantineConduct::new) {
        node.set_conduct(Box::new(conduct));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    if boot == 0 {
        for a in deploys {
            let key = crate::scenario::agent_key(&a.id).map(Box::new);
            let _ = tx.send(Control::Deploy { agent: a.id, key, wasm: a.wasm, manifest: a.manifest, budget: a.budget });
        }
    }
    *ctl.control.borrow_mut() = Some(tx);
    let mut watchdog = Watchdog::new();
    let stuck = {
        let waits = |at_ns: u64| ctl.wake_ns.set(at_ns);
        let drive = driver::run_observed(&mut node, &net, &mut rx, &node_tx, &waits);
        let forward = async {
            while let Some(e) = node_rx.recv().await {
                let stuck = watchdog.observe(&e);
                let _ = events.send(e);
                if stuck.is_some() {
                    return stuck;
                }
            }
            None
        };
        tokio::pin!(drive, forward);
        tokio::select! {
            biased;
            s = &mut forward => s,
            () = &mut drive => None,
        }
    };
    // The driver is gone: no timer of its own any more.
    ctl.wake_ns.set(u64::MAX);
    let stuck = stuck.or_else(|| {
        // The driver returned: forward what it emitted last.
        while let Ok(e) = node_rx.try_recv() {
            let stuck = watchdog.observe(&e);
            let _ = events.send(e);
            if stuck.is_some() {
                return stuck;
            }
        }
        None
    });
    if let Some(s) = stuck {
        // Stop the host's software: the step can end, the runner reports.
        *ctl.stuck.borrow_mut() = Some(s);
        return Ok(());
    }
    if ctl.collect.get() {
        *ctl.histories.borrow_mut() = Some(read_histories(&disk));
    }
    Ok(())
}

/// Every file under `history/` on `disk`, per agent directory.
pub(super) fn read_histories(disk: &SimDisk) -> Histories {
    let mut out = Histories::new();
    for agent in disk.list("history").unwrap_or_default() {
        let dir = format!("history/{agent}");
        let files = disk.list(&dir).unwrap_or_default();
        let read = |ext: &str| -> Vec<(String, Vec<u8>)> {
            files
                .iter()
                .filter(|f| f.ends_with(ext))
                .filter_map(|f| {
                    let path = format!("{dir}/{f}");
                    disk.read(&path).ok().map(|b| (path, b))
                })
                .collect()
        };
        out.insert(agent, (read(lineage::CHECKPOINT_EXT), read(lineage::RECOVERY_EXT)));
    }
    out
}
