//! The simulator's Byzantine nodes (spec §8, A2–A4): every attack the
//! scenarios can give a node, kept out of the `igor` library. A Byzantine
//! node runs the real `Node` with two things around it:
//! - [`ByzantineConduct`], its [`Conduct`]: the deviations that need the
//!   node's own state (a metering lie, keeping or restoring a copy it handed
//!   off, churning handoffs). The node performs them with its ordinary
//!   operations and reports each as `misbehaved`.
//! - [`Interposer`], a [`Network`] wrapped around its network twin: the
//!   deviations on the wire. It rewrites the node's outgoing packages,
//!   swallows its confirmations, records and replays its messages and
//!   forges new ones, with only what the node legitimately holds: its own
//!   node key, the agent keys inside its packages, the files on its disk.
//!
//! Honest nodes get the pass-through interposer and the library's
//! [`igor::node::Honest`] conduct: nothing here draws randomness or spawns
//! a task for them.

use crate::clock::{SimClock, sim_now_ns};
use crate::disk::SimDisk;
use crate::net::SimNet;
use igor::authority::AuthorityState;
use igor::checkpoint::{Checkpoint, CheckpointBody, Hash32};
use igor::env::{Clock, Incoming, NetError, Network, derive_seed};
use igor::identity::Keypair;
use igor::lineage::Lineage;
use igor::node::conduct::{AfterConfirm, Conduct, ConductView, Deed};
use igor::node::{Event, NodeConfig, NodeEvent, store};
use igor::units::{AgentId, Epoch, Microcents, NodeId, TickNumber};
use igor::wire::{AgentPackage, AgentTransfer, Body, Envelope, HeadAnnounce, Header};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Node key seed of a simulated node: fixed per name, so every node can
/// know every peer's key (the key directory a real deployment configures).
pub fn node_key_seed(name: &str) -> [u8; 32] {
    derive_seed(0, &format!("igor-sim/node-key/{name}"))
}

/// How a `BounceAgent` griefer's `misbehaved` act begins. Its handoffs
/// are real ones, by the protocol's rules: a simulator keeps judging its
/// authority claims like an honest host's (only its intent is hostile).
pub const CHURN_ACT_PREFIX: &str = "bounces ";

/// A named misbehaviour (scenarios only): the real node with a
/// [`ByzantineConduct`] (what needs its state) behind an [`Interposer`]
/// (what happens to its bytes on the wire). Times are the node's monotonic
/// clock in ms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Misbehaviour {
    /// A2 fork: on the target's confirmation keep the agent and resume
    /// ticking the copy; with `claim_target_epoch`, also claim the epoch
    /// the target took (a forged epoch for the forked head).
    KeepCopyAfterHandoff {
        #[serde(default)]
        claim_target_epoch: bool,
    },
    /// A2 metering lie: deduct `factor` times the fuel-derived cost of each
    /// tick from the budget (the surplus goes to the host).
    Overcharge { factor: u32 },
    /// A2 tamper: add `budget_delta` to the handoff checkpoint's budget
    /// before sending it; `resign` re-signs it with the agent key (which the
    /// host holds), else the old signature stays (and no longer verifies).
    TamperPackage { budget_delta: i64, resign: bool },
    /// A2: take over an incoming agent but never confirm (no reply).
    RefuseConfirm,
    /// A2/A4: send the last transfer package again, byte for byte,
    /// `after_ms` after it was first sent.
    ReplayOwnPackage { after_ms: u64 },
    /// A4 (A3 when repeated): a package for `agent` built from this node's
    /// own agent `from_agent`, re-signed with a fresh agent key, sent to
    /// `to` at `at_ms` and every `every_ms` after (0: once), issued as
    /// `as_node` if set (impersonation).
    ForgeTransfer {
        agent: String,
        from_agent: String,
        to: String,
        at_ms: u64,
        #[serde(default)]
        every_ms: u64,
        #[serde(default)]
        as_node: Option<String>,
    },
    /// A4 (A3 when repeated): announce `agent` as ACTIVE_OWNER at epoch
    /// (`epoch_major`, 0) to `to` at `at_ms` and every `every_ms` after,
    /// issued as `as_node` if set (impersonation).
    ForgeAnnounce {
        agent: String,
        to: String,
        epoch_major: u64,
        at_ms: u64,
        #[serde(default)]
        every_ms: u64,
        #[serde(default)]
        as_node: Option<String>,
    },
    /// A4 poisoned view: at `at_ms` announce `agent` to `to` as
    /// ACTIVE_OWNER at epoch (`epoch_major`, 0), in this node's own name,
    /// offering a key of its own as the agent key and signing the claim
    /// with it (so it looks proven to a node that trusts the first key it
    /// hears); `forge_after_ms` later send `to` a package for `agent` at
    /// that epoch, built from its own agent `from_agent` and signed by the
    /// same key. Aimed at a node that has not yet heard the real owner.
    PoisonView { agent: String, from_agent: String, to: String, epoch_major: u64, at_ms: u64, forge_after_ms: u64 },
    /// A4 replayed announcement: record the first genuine, signed
    /// `HeadAnnounce` this node sends to `to`, byte for byte, and send it
    /// again `after_ms` later (by then the epoch it claims has moved on).
    /// An announcement is bound to its audience (signed, checked before any
    /// defence), so only a copy addressed to the victim can be replayed to
    /// it: the issuer's own, or one a relay on the path kept.
    ReplayAnnounce { to: String, after_ms: u64 },
    /// A2 fork from an old checkpoint: keep the agent's files after handing
    /// it off (honestly otherwise), and at `at_ms` restore the newest
    /// archived checkpoint at least `ticks_back` ticks before the local
    /// head, resume ticking it as owner under the highest epoch announced
    /// for the agent, and announce the forked head.
    RestoreOldCheckpoint { agent: String, at_ms: u64, ticks_back: u64 },
    /// A3 migration churn: every `every_ms` (at least 10), hand every agent
    /// this node owns and is not already handing off on to `to`. Two
    /// griefers configured towards each other bounce an agent between them.
    BounceAgent { to: String, every_ms: u64 },
}

impl Misbehaviour {
    /// The behaviour's name (its variant), as coverage marks and reports
    /// name it.
    pub fn name(&self) -> &'static str {
        match self {
            Misbehaviour::KeepCopyAfterHandoff { .. } => "KeepCopyAfterHandoff",
            Misbehaviour::Overcharge { .. } => "Overcharge",
            Misbehaviour::TamperPackage { .. } => "TamperPackage",
            Misbehaviour::RefuseConfirm => "RefuseConfirm",
            Misbehaviour::ReplayOwnPackage { .. } => "ReplayOwnPackage",
            Misbehaviour::ForgeTransfer { .. } => "ForgeTransfer",
            Misbehaviour::ForgeAnnounce { .. } => "ForgeAnnounce",
            Misbehaviour::PoisonView { .. } => "PoisonView",
            Misbehaviour::ReplayAnnounce { .. } => "ReplayAnnounce",
            Misbehaviour::RestoreOldCheckpoint { .. } => "RestoreOldCheckpoint",
            Misbehaviour::BounceAgent { .. } => "BounceAgent",
        }
    }
}

const MS: u64 = 1_000_000;

/// The deviations of a [`Misbehaviour`] that need the node's state.
#[derive(Debug)]
pub struct ByzantineConduct {
    m: Misbehaviour,
    /// Next firing of a timed deed (mono ns); `None`: not yet scheduled.
    next_ns: Option<u64>,
    done: bool,
    overcharging: bool,
}

impl ByzantineConduct {
    /// The conduct for `m`, or `None` when `m` acts on the wire only.
    pub fn new(m: &Misbehaviour) -> Option<Self> {
        use Misbehaviour::*;
        match m {
            KeepCopyAfterHandoff { .. } | Overcharge { .. } | RestoreOldCheckpoint { .. } | BounceAgent { .. } => {
                Some(ByzantineConduct { m: m.clone(), next_ns: None, done: false, overcharging: false })
            }
            _ => None,
        }
    }
}

impl Conduct for ByzantineConduct {
    fn surcharge(&mut self, _agent: &AgentId, cost: Microcents) -> (Microcents, Option<String>) {
        let Misbehaviour::Overcharge { factor } = self.m else { return (Microcents::ZERO, None) };
        let lie = cost.0.saturating_mul(i64::from(factor.saturating_sub(1))).max(0);
        let act = (lie > 0 && !self.overcharging).then(|| {
            self.overcharging = true;
            format!("overcharge: {lie} above the fuel-derived cost")
        });
        (Microcents(lie), act)
    }

    fn on_confirmed(&mut self, _agent: &AgentId, epoch: Epoch) -> AfterConfirm {
        match self.m {
            Misbehaviour::KeepCopyAfterHandoff { claim_target_epoch } => {
                let epoch = if claim_target_epoch { Epoch::new(epoch.major.saturating_add(1), 0) } else { epoch };
                let act = format!("keeps ticking a copy after handing it off, at epoch {epoch}");
                AfterConfirm::StayOwner { epoch, act }
            }
            // A node that will fork from an old checkpoint retires
            // honestly but keeps the agent's files.
            Misbehaviour::RestoreOldCheckpoint { .. } => AfterConfirm::RetireKeepingFiles,
            _ => AfterConfirm::Retire,
        }
    }

    fn heeds_peer_claims(&self) -> bool {
        // A forking node ignores every sign that it no longer holds the agent.
        !matches!(self.m, Misbehaviour::KeepCopyAfterHandoff { .. } | Misbehaviour::RestoreOldCheckpoint { .. })
    }

    fn next_ns(&self) -> Option<u64> {
        match &self.m {
            Misbehaviour::RestoreOldCheckpoint { at_ms, .. } if !self.done => Some(at_ms.saturating_mul(MS)),
            Misbehaviour::BounceAgent { .. } => Some(self.next_ns.unwrap_or(0)),
            _ => None,
        }
    }

    fn act(&mut self, now_ns: u64, view: &ConductView) -> Vec<Deed> {
        match self.m.clone() {
            Misbehaviour::RestoreOldCheckpoint { agent, ticks_back, .. } => {
                self.done = true;
                restore_old_checkpoint(&agent, ticks_back, view).into_iter().collect()
            }
            Misbehaviour::BounceAgent { to, every_ms } => {
                self.next_ns = Some(now_ns.saturating_add(every_ms.max(10).saturating_mul(MS)));
                let Ok(to) = NodeId::new(to) else { return Vec::new() };
                view.agents
                    .iter()
                    .filter(|(a, _)| {
                        a.state == AuthorityState::ActiveOwner
                            && a.running
                            && a.halted.is_none()
                            && !a.handoff_in_flight
                    })
                    .map(|(a, _)| Deed::Migrate {
                        agent: a.agent.clone(),
                        to: to.clone(),
                        act: format!("{CHURN_ACT_PREFIX}{} on to {to}", a.agent),
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A2 fork from an old checkpoint: the newest archived checkpoint at least
/// `ticks_back` ticks before the head, owned at the highest epoch seen.
fn restore_old_checkpoint(agent: &str, ticks_back: u64, view: &ConductView) -> Option<Deed> {
    let agent = AgentId::new(agent).ok()?;
    let (a, major) = view.agents.iter().find(|(a, _)| a.agent == agent)?;
    let want = a.head_tick?.0.saturating_sub(ticks_back);
    // The node's own disk (this host's filesystem): it kept the files.
    let archive = Lineage::archive(&SimDisk::default(), &agent).ok()?;
    let old = archive
        .iter()
        .filter_map(|(_, b)| Checkpoint::decode(b).ok())
        .filter(|c| c.tick.0 <= want && c.seal.is_some())
        .max_by_key(|c| c.tick)?;
    let epoch = Epoch::new(*major, 0);
    let act = format!("restores its old checkpoint of {agent} at tick {} and ticks it at epoch {epoch}", old.tick);
    Some(Deed::Own { agent, from: Some(Box::new(old)), epoch, act })
}

/// What a wire attack remembers between messages.
struct WireState {
    m: Misbehaviour,
    node: NodeId,
    cfg: NodeConfig,
    key: Keypair,
    clock: SimClock,
    rng: ChaCha20Rng,
    events: mpsc::UnboundedSender<NodeEvent>,
    /// `ReplayOwnPackage`: packages sent so far, and whether the newest was replayed.
    packages: u64,
    replayed: bool,
    /// `ReplayAnnounce`: an announcement was recorded.
    recorded: bool,
    /// `RefuseConfirm`: takeovers left unconfirmed, (agent, epoch).
    unconfirmed: BTreeSet<(AgentId, Epoch)>,
}

impl WireState {
    fn report(&self, agent: Option<AgentId>, act: String) {
        let event = Event::Misbehaved { agent, act };
        let _ = self.events.send(NodeEvent { at_ns: sim_now_ns(), node: self.node.clone(), seq: 0, event });
    }
}

/// The network twin as a Byzantine node uses it (see the module docs).
#[derive(Clone)]
pub struct Interposer {
    inner: SimNet,
    wire: Option<Rc<RefCell<WireState>>>,
}

/// Sleep until the node's monotonic clock reads `at_ns`.
async fn sleep_until(at_ns: u64) {
    let now = sim_now_ns();
    if at_ns > now {
        // Simulated time (turmoil virtualises tokio's clock).
        #[allow(clippy::disallowed_methods)]
        tokio::time::sleep(Duration::from_nanos(at_ns - now)).await;
    }
}

/// Send bytes the node never queued; the reply is ignored.
fn send_detached(net: &SimNet, to: NodeId, body: Vec<u8>) {
    let net = net.clone();
    tokio::task::spawn_local(async move {
        let _ = net.request(&to, body).await;
    });
}

impl Interposer {
    /// Wrap `inner` for the node configured by `cfg`: a pass-through unless
    /// `m` acts on the wire. `events` is the node's event stream (the
    /// interposer reports its acts there, in order with the node's);
    /// `seed` and `boot` seed its randomness. Call inside the host.
    pub fn new(
        inner: SimNet,
        m: Option<&Misbehaviour>,
        cfg: &NodeConfig,
        clock: SimClock,
        events: mpsc::UnboundedSender<NodeEvent>,
        seed: u64,
        boot: u64,
    ) -> Interposer {
        use Misbehaviour::*;
        let Some(m) = m.filter(|m| ByzantineConduct::new(m).is_none()) else { return Interposer { inner, wire: None } };
        let key = Keypair::from_seed(node_key_seed(cfg.node_id.as_str()));
        let rng = ChaCha20Rng::from_seed(derive_seed(seed, &format!("adversary/{}/boot/{boot}", cfg.node_id)));
        let wire = Rc::new(RefCell::new(WireState {
            m: m.clone(),
            node: cfg.node_id.clone(),
            cfg: cfg.clone(),
            key,
            clock,
            rng,
            events,
            packages: 0,
            replayed: false,
            recorded: false,
            unconfirmed: BTreeSet::new(),
        }));
        if let ForgeTransfer { at_ms, every_ms, .. } | ForgeAnnounce { at_ms, every_ms, .. } = m {
            let (net, wire, (at_ms, every_ms)) = (inner.clone(), wire.clone(), (*at_ms, *every_ms));
            tokio::task::spawn_local(async move {
                let mut due = at_ms.saturating_mul(MS);
                loop {
                    sleep_until(due).await;
                    if let Some((to, bytes)) = forge(&mut wire.borrow_mut()) {
                        send_detached(&net, to, bytes);
                    }
                    if every_ms == 0 {
                        return;
                    }
                    due = sim_now_ns().saturating_add(every_ms.saturating_mul(MS));
                }
            });
        }
        if let PoisonView { at_ms, forge_after_ms, .. } = m {
            let (net, wire, at_ns) = (inner.clone(), wire.clone(), at_ms.saturating_mul(MS));
            let forge_ns = at_ns.saturating_add(forge_after_ms.saturating_mul(MS));
            tokio::task::spawn_local(async move {
                sleep_until(at_ns).await;
                if let Some((to, bytes)) = poison_announce(&mut wire.borrow_mut()) {
                    send_detached(&net, to, bytes);
                }
                sleep_until(forge_ns).await;
                if let Some((to, bytes)) = forge(&mut wire.borrow_mut()) {
                    send_detached(&net, to, bytes);
                }
            });
        }
        Interposer { inner, wire: Some(wire) }
    }

    /// What the node's outgoing request becomes on the wire (and what to
    /// replay later).
    fn outgoing(&self, wire: &Rc<RefCell<WireState>>, to: &NodeId, body: Vec<u8>) -> Vec<u8> {
        let Ok(mut env) = Envelope::decode(&body) else { return body };
        let mut w = wire.borrow_mut();
        match (w.m.clone(), &mut env.body) {
            (Misbehaviour::TamperPackage { budget_delta, resign }, Body::AgentTransfer(t)) => {
                let Some(act) = tamper(&mut env.header, &mut t.package, budget_delta, resign) else { return body };
                env.sign(&w.key);
                w.report(Some(env.header.agent.clone()), act);
                env.encode()
            }
            (Misbehaviour::ReplayOwnPackage { after_ms }, Body::AgentTransfer(_)) => {
                w.packages += 1;
                w.replayed = false;
                let (n, net, wire, to) = (w.packages, self.inner.clone(), wire.clone(), to.clone());
                let (agent, copy) = (env.header.agent.clone(), body.clone());
                let due = sim_now_ns().saturating_add(after_ms.saturating_mul(MS));
                tokio::task::spawn_local(async move {
                    sleep_until(due).await;
                    let mut w = wire.borrow_mut();
                    if w.packages != n || w.replayed {
                        return; // a newer package supersedes this one
                    }
                    w.replayed = true;
                    w.report(Some(agent), format!("replays its old transfer package to {to}"));
                    send_detached(&net, to, copy);
                });
                body
            }
            (Misbehaviour::ReplayAnnounce { to: victim, after_ms }, Body::HeadAnnounce(_))
                if !w.recorded && to.as_str() == victim =>
            {
                // Keep the first announcement addressed to the victim, byte
                // for byte, and send it again `after_ms` later.
                w.recorded = true;
                let (net, wire, to, copy) = (self.inner.clone(), wire.clone(), to.clone(), body.clone());
                let h = env.header.clone();
                let due = sim_now_ns().saturating_add(after_ms.saturating_mul(MS));
                tokio::task::spawn_local(async move {
                    sleep_until(due).await;
                    let act =
                        format!("replays {}'s announcement of {} at epoch {} to {to}", h.issuer, h.agent, h.epoch);
                    wire.borrow().report(Some(h.agent.clone()), act);
                    send_detached(&net, to, copy);
                });
                body
            }
            _ => body,
        }
    }
}

/// A2 tamper: add `budget_delta` to the package's checkpoint budget,
/// re-signed with the agent key the package carries (`resign`) or keeping
/// the now stale signature. Returns the act, `None` if the package does not
/// decode.
fn tamper(header: &mut Header, package: &mut AgentPackage, budget_delta: i64, resign: bool) -> Option<String> {
    let mut c = Checkpoint::decode(&package.checkpoint).ok()?;
    c.budget = Microcents(c.budget.0.saturating_add(budget_delta));
    if resign {
        let seed: [u8; 32] = package.agent_identity.as_deref()?.try_into().ok()?;
        c = c.body().sign(&Keypair::from_seed(seed));
    }
    let bytes = c.encode();
    header.head_hash = Hash32::of(&bytes);
    package.checkpoint = bytes;
    package.budget = c.budget.0;
    let how = if resign { "re-signed with the agent key" } else { "signature left stale" };
    Some(format!("tampers the package: budget {budget_delta:+} microcents, {how}"))
}

/// A header for a made-up message about `agent` to `to`, issued as
/// `as_node` if set (impersonation), else as this node.
fn forged_header(
    w: &mut WireState,
    agent: &AgentId,
    to: &NodeId,
    epoch: Epoch,
    as_node: Option<&str>,
) -> Option<Header> {
    let issuer = match as_node {
        Some(n) => NodeId::new(n).ok()?,
        None => w.node.clone(),
    };
    let ttl = i64::try_from(w.cfg.migration.package_ttl_ns).unwrap_or(i64::MAX);
    Some(Header {
        issuer,
        audience: to.clone(),
        agent: agent.clone(),
        epoch,
        head_tick: TickNumber(0),
        head_hash: Hash32::ZERO,
        nonce: w.rng.next_u64(),
        issued_unix_ns: w.clock.unix_ns(),
        expiry_unix_ns: w.clock.unix_ns().saturating_add(ttl),
    })
}

/// The next made-up message of a `ForgeTransfer` or `ForgeAnnounce`
/// node: (to, bytes), reported as an act.
fn forge(w: &mut WireState) -> Option<(NodeId, Vec<u8>)> {
    match w.m.clone() {
        Misbehaviour::ForgeTransfer { agent, from_agent, to, as_node, .. } => {
            let mut seed = [0u8; 32];
            w.rng.fill_bytes(&mut seed);
            forge_transfer(w, &agent, &from_agent, &to, as_node.as_deref(), seed, Epoch::new(1, 0))
        }
        Misbehaviour::PoisonView { agent, from_agent, to, epoch_major, .. } => {
            let seed = poison_seed(w);
            forge_transfer(w, &agent, &from_agent, &to, None, seed, Epoch::new(epoch_major, 0))
        }
        Misbehaviour::ForgeAnnounce { agent, to, epoch_major, as_node, .. } => {
            let (agent, to) = (AgentId::new(agent).ok()?, NodeId::new(to).ok()?);
            let mut header = forged_header(w, &agent, &to, Epoch::new(epoch_major, 0), as_node.as_deref())?;
            header.head_hash = Hash32::of(b"forged head");
            let body = Body::HeadAnnounce(HeadAnnounce {
                state: AuthorityState::ActiveOwner,
                agent_key: None,
                agent_signature: None,
            });
            let mut env = Envelope::new(header, body);
            env.sign(&w.key);
            let act = format!("announces {agent} at epoch {epoch_major}.0 to {to}, as {}", env.header.issuer);
            w.report(Some(agent), act);
            Some((to, env.encode()))
        }
        _ => None,
    }
}

/// The one key a `PoisonView` node passes off as the agent's.
fn poison_seed(w: &WireState) -> [u8; 32] {
    derive_seed(0, &format!("poisoner/{}", w.node))
}

/// A4 poisoned view: an announcement of the agent, at an inflated epoch,
/// offering this node's poison key as the agent key and signed with it.
fn poison_announce(w: &mut WireState) -> Option<(NodeId, Vec<u8>)> {
    let Misbehaviour::PoisonView { agent, to, epoch_major, .. } = w.m.clone() else { return None };
    let (agent, to) = (AgentId::new(agent).ok()?, NodeId::new(to).ok()?);
    let mut header = forged_header(w, &agent, &to, Epoch::new(epoch_major, 0), None)?;
    header.head_hash = Hash32::of(b"poisoned head");
    let key = Keypair::from_seed(poison_seed(w));
    let state = AuthorityState::ActiveOwner;
    let agent_signature = Some(key.sign(&igor::wire::agent_claim_bytes(&header, Some(state))).0.to_vec());
    let agent_key = Some(key.public().as_bytes().to_vec());
    let mut env = Envelope::new(header, Body::HeadAnnounce(HeadAnnounce { state, agent_key, agent_signature }));
    env.sign(&w.key);
    let act = format!("announces {agent} at epoch {epoch_major}.0 to {to} with its own key {}", key.did());
    w.report(Some(agent), act);
    Some((to, env.encode()))
}

/// A4: a package for `agent` at `epoch` made of this node's own agent
/// `from_agent` (read from its disk), signed by the key of `seed`: the
/// wrong agent key.
fn forge_transfer(
    w: &mut WireState,
    agent: &str,
    from_agent: &str,
    to: &str,
    as_node: Option<&str>,
    seed: [u8; 32],
    epoch: Epoch,
) -> Option<(NodeId, Vec<u8>)> {
    let (agent, from_agent, to) = (AgentId::new(agent).ok()?, AgentId::new(from_agent).ok()?, NodeId::new(to).ok()?);
    let disk = SimDisk::default();
    let lineage = Lineage::open(&disk, &from_agent).ok()?;
    let head = lineage.head()?.clone();
    let wasm = igor::env::Disk::read(&disk, &store::wasm_path(&from_agent)).ok()?;
    let manifest = igor::env::Disk::read(&disk, &store::manifest_path(&from_agent)).ok()?;
    let key = Keypair::from_seed(seed);
    let tick = TickNumber(head.tick.0.saturating_add(1));
    let price = w.cfg.price_per_second;
    let body = CheckpointBody {
        budget: head.budget,
        price_per_second: price,
        tick,
        wasm_hash: head.wasm_hash,
        epoch,
        lease_expiry_ns: 0,
        prev_hash: Hash32::ZERO,
        state: head.state.clone(),
    };
    let bytes = body.sign(&key).encode();
    let package = AgentPackage {
        agent_id: agent.clone(),
        wasm_hash: head.wasm_hash.0.to_vec(),
        wasm_binary: wasm,
        checkpoint: bytes.clone(),
        manifest_data: manifest,
        budget: head.budget.0,
        price_per_second: price.0,
        replay_data: None,
        agent_identity: Some(seed.to_vec()),
        receipts: None,
        kv: Some(store::seal_kv(&key, &agent, tick, &head.state, &[])),
    };
    let mut header = forged_header(w, &agent, &to, epoch, as_node)?;
    (header.head_tick, header.head_hash) = (tick, Hash32::of(&bytes));
    let source_node_id = header.issuer.clone();
    let mut env = Envelope::new(header, Body::AgentTransfer(Box::new(AgentTransfer { package, source_node_id })));
    env.sign(&w.key);
    let act = match w.m {
        Misbehaviour::PoisonView { .. } => {
            format!("sends {to} a package for {agent} at epoch {epoch} signed by its own key {}", key.did())
        }
        _ => format!("sends {to} a package for {agent} signed by a fresh key, as {}", env.header.issuer),
    };
    w.report(Some(agent), act);
    Some((to, env.encode()))
}

impl Network for Interposer {
    async fn request(&self, to: &NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        let body = match &self.wire {
            Some(wire) => self.outgoing(wire, to, body),
            None => body,
        };
        self.inner.request(to, body).await
    }

    async fn accept(&self) -> Option<Incoming> {
        let inc = self.inner.accept().await?;
        let Some(wire) = self.wire.as_ref().filter(|w| w.borrow().m == Misbehaviour::RefuseConfirm) else {
            return Some(inc);
        };
        // A2: take an incoming agent over but never confirm: the first
        // successful `AgentStarted` per takeover is swallowed (the stream
        // closes, the source sees a lost reply); duplicates are answered.
        let (tx, rx) = oneshot::channel::<Vec<u8>>();
        let (from, reply, wire) = (inc.from.clone(), inc.reply, wire.clone());
        tokio::task::spawn_local(async move {
            let Ok(bytes) = rx.await else { return };
            if let Ok(env) = Envelope::decode(&bytes)
                && let Body::AgentStarted(s) = &env.body
                && s.success
                && wire.borrow_mut().unconfirmed.insert((env.header.agent.clone(), env.header.epoch))
            {
                let agent = env.header.agent;
                wire.borrow().report(Some(agent.clone()), format!("took {agent} over, never confirms to {from}"));
                return;
            }
            let _ = reply.send(bytes);
        });
        Some(Incoming { from: inc.from, body: inc.body, reply: tx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(seed: [u8; 32]) -> (Header, AgentPackage) {
        let agent = AgentId::new("counter").unwrap();
        let body = CheckpointBody {
            budget: Microcents(1_000),
            price_per_second: Microcents(1),
            tick: TickNumber(7),
            wasm_hash: Hash32::of(b"wasm"),
            epoch: Epoch::new(1, 0),
            lease_expiry_ns: 0,
            prev_hash: Hash32::of(b"prev"),
            state: b"state".to_vec(),
        };
        let bytes = body.sign(&Keypair::from_seed(seed)).encode();
        let header = Header {
            issuer: NodeId::new("a").unwrap(),
            audience: NodeId::new("b").unwrap(),
            agent: agent.clone(),
            epoch: Epoch::new(1, 0),
            head_tick: TickNumber(7),
            head_hash: Hash32::of(&bytes),
            nonce: 1,
            issued_unix_ns: 0,
            expiry_unix_ns: 1,
        };
        let package = AgentPackage {
            agent_id: agent,
            wasm_hash: Hash32::of(b"wasm").0.to_vec(),
            wasm_binary: Vec::new(),
            checkpoint: bytes,
            manifest_data: Vec::new(),
            budget: 1_000,
            price_per_second: 1,
            replay_data: None,
            agent_identity: Some(seed.to_vec()),
            receipts: None,
            kv: None,
        };
        (header, package)
    }

    #[test]
    fn tamper_resigns_with_the_carried_agent_key_or_leaves_the_signature_stale() {
        for resign in [true, false] {
            let (mut header, mut package) = package([7; 32]);
            let act = tamper(&mut header, &mut package, 500, resign).unwrap();
            let c = Checkpoint::decode(&package.checkpoint).unwrap();
            assert_eq!((c.budget, package.budget), (Microcents(1_500), 1_500), "{act}");
            assert_eq!(header.head_hash, Hash32::of(&package.checkpoint), "the header names the bytes sent");
            assert_eq!(c.verify_signature().is_ok(), resign, "{act}");
            assert_eq!(c.agent_key(), Some(&Keypair::from_seed([7; 32]).public()));
        }
    }

    #[test]
    fn only_state_attacks_get_a_conduct() {
        let on_wire = [
            Misbehaviour::RefuseConfirm,
            Misbehaviour::TamperPackage { budget_delta: 1, resign: true },
            Misbehaviour::ReplayOwnPackage { after_ms: 1 },
            Misbehaviour::ReplayAnnounce { to: "b".into(), after_ms: 1 },
            Misbehaviour::PoisonView {
                agent: "a".into(),
                from_agent: "d".into(),
                to: "b".into(),
                epoch_major: 9,
                at_ms: 1,
                forge_after_ms: 1,
            },
        ];
        assert!(on_wire.iter().all(|m| ByzantineConduct::new(m).is_none()));
        let mut c = ByzantineConduct::new(&Misbehaviour::Overcharge { factor: 3 }).unwrap();
        let agent = AgentId::new("x").unwrap();
        let (lie, act) = c.surcharge(&agent, Microcents(5));
        assert_eq!((lie, act.is_some()), (Microcents(10), true));
        assert_eq!(c.surcharge(&agent, Microcents(5)), (Microcents(10), None), "the act is reported once");
    }
}
