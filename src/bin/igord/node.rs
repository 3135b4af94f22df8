//! `igord node`: the real deployment of one [`Node`]: libp2p network
//! ([`P2pNetwork`]), filesystem disk rooted in `--data-dir`, system clock, OS
//! entropy and the wasmtime sandbox, run by the one adapter loop
//! ([`driver::run`]). Around it: the persisted libp2p key (so the peer id
//! survives restarts), a lock on the data dir, structured logs, the local
//! control socket (`docs/control-api.md`) and the signals (SIGINT/SIGTERM:
//! final checkpoint of every agent, then exit). Every decision stays in the
//! node; this file wires and forwards.
//!
//! Data dir layout added here: `node/libp2p.key` (mode 0600), `node.lock`,
//! `control.sock`; the rest (agents/, history/, kv/) belongs to the node.

use crate::fault::{FaultNet, FaultPoint};
use anyhow::{Context, bail};
use clap::Args;
use igor::checkpoint::{Checkpoint, Hash32};
use igor::control::{self, Reply, Request, StatusBoard};
use igor::driver::{self, Ask, Control};
use igor::env::Disk;
use igor::env::real::{FsDisk, OsEntropy, SystemClock};
use igor::identity::{self, Keypair};
use igor::lease::LeaseConfig;
use igor::lineage;
use igor::node::{Command, Event, Node, NodeConfig, NodeEvent};
use igor::p2p::P2pNetwork;
use igor::sandbox::{Sandbox, SandboxConfig, WallClockNet};
use igor::units::{AgentId, Microcents, NodeId};
use libp2p::Multiaddr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot, watch};

/// Where the libp2p identity lives in the data dir.
pub const P2P_KEY_PATH: &str = "node/libp2p.key";
/// Held (flock) while a node runs on the data dir: two nodes on one disk
/// would both believe they own its agents.
pub const LOCK_FILE: &str = "node.lock";
/// Control connections served at once (a local operator needs one or two).
const MAX_CONTROL_CONNECTIONS: usize = 8;
/// How long a stopping node waits for its control connections to write
/// their last answers.
const CONTROL_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// A control client must send its request line within this time.
const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Events buffered for control requests waiting on their answer; a waiter
/// that falls further behind is told so instead of blocking the node.
const EVENT_FANOUT_CAPACITY: usize = 4096;

#[derive(Args)]
pub struct NodeArgs {
    /// Address to listen on; the full address with /p2p/<peer id> is printed on stdout.
    /// Port 0 (the default) picks a new port on every start while the peer id
    /// stays: give a fixed port (e.g. /ip4/127.0.0.1/tcp/4001) to a node that
    /// others dial, or they lose it after a restart.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    pub listen: Multiaddr,
    /// A known peer, as a multiaddr ending in /p2p/<peer id> (repeatable).
    #[arg(long = "peer")]
    pub peers: Vec<Multiaddr>,
    /// Data directory: node key, agents/, history/, kv/, control socket.
    #[arg(long, default_value = "igor-data")]
    pub data_dir: PathBuf,
    /// Control socket path (default: <data-dir>/control.sock).
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// This node's price, microcents per second (written into checkpoints).
    #[arg(long, default_value_t = 1_000)]
    pub price: i64,
    /// Lease duration, milliseconds (spec: 60 s).
    #[arg(long, default_value_t = 60_000)]
    pub lease_ms: u64,
    /// Renew this long before expiry, milliseconds (default: half the duration).
    #[arg(long)]
    pub lease_renew_ms: Option<u64>,
    /// Grace after expiry before RECOVERY_REQUIRED, milliseconds (spec: 10 s).
    #[arg(long, default_value_t = 10_000)]
    pub lease_grace_ms: u64,
    /// Milliseconds between ticks when the agent has no more work (spec: 1 Hz).
    #[arg(long, default_value_t = 1_000)]
    pub tick_ms: u64,
    /// Milliseconds between ticks when the agent reports more work (spec: 10 ms).
    #[arg(long, default_value_t = 10)]
    pub fast_tick_ms: u64,
    /// Milliseconds between periodic checkpoints (spec: 5 s).
    #[arg(long, default_value_t = 5_000)]
    pub checkpoint_ms: u64,
    /// How long a sent package stays acceptable, milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub package_ttl_ms: u64,
    /// Print every node event as one JSON line on stdout (after the address).
    #[arg(long)]
    pub events: bool,
    /// TEST ONLY: exit abruptly at a named point of a migration (see docs/control-api.md).
    #[arg(long, hide = true, value_enum)]
    pub fault: Option<FaultPoint>,
}

impl NodeArgs {
    fn config(&self, node_id: NodeId, peers: Vec<NodeId>) -> anyhow::Result<NodeConfig> {
        if self.price < 0 {
            bail!("--price must not be negative (got {})", self.price);
        }
        let ms = |v: u64, flag: &str| {
            if v == 0 { Err(anyhow::anyhow!("{flag} must be positive")) } else { Ok(v.saturating_mul(1_000_000)) }
        };
        let mut cfg = NodeConfig::new(node_id);
        cfg.price_per_second = Microcents(self.price);
        cfg.tick_idle_ns = ms(self.tick_ms, "--tick-ms")?;
        cfg.tick_fast_ns = ms(self.fast_tick_ms, "--fast-tick-ms")?;
        cfg.checkpoint_interval_ns = ms(self.checkpoint_ms, "--checkpoint-ms")?;
        let duration_ns = ms(self.lease_ms, "--lease-ms")?;
        let renew_before_ns = match self.lease_renew_ms {
            Some(r) if r >= self.lease_ms => bail!("--lease-renew-ms {r} must be below --lease-ms {}", self.lease_ms),
            Some(r) => ms(r, "--lease-renew-ms")?,
            None => duration_ns / 2,
        };
        cfg.lease =
            LeaseConfig { duration_ns, renew_before_ns, grace_ns: self.lease_grace_ms.saturating_mul(1_000_000) };
        cfg.migration.package_ttl_ns = ms(self.package_ttl_ms, "--package-ttl-ms")?;
        cfg.peers = peers;
        // The clock bound (skew below grace) and the rest of the rules.
        cfg.validate().map_err(|e| anyhow::anyhow!("node configuration: {e} (see --lease-grace-ms)"))?;
        Ok(cfg)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Err = a subscriber is already set (never in this binary): keep it.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Load the libp2p key, or create and persist it (mode 0600) on first start.
fn p2p_key(disk: &FsDisk) -> anyhow::Result<libp2p::identity::Keypair> {
    match disk.read(P2P_KEY_PATH) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes).with_context(|| {
            format!("{}: not a libp2p key (protobuf encoding)", disk.root().join(P2P_KEY_PATH).display())
        }),
        Err(e) if e.is_not_found() => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().context("encoding the new libp2p key")?;
            disk.write_secret(P2P_KEY_PATH, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(e.into()),
    }
}

/// Take the data dir's lock, or say which node holds it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!("data dir {} is in use by another igord node ({} is locked)", dir.display(), path.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

pub fn node(args: NodeArgs) -> anyhow::Result<i32> {
    init_tracing();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: NodeArgs) -> anyhow::Result<i32> {
    let _lock = lock_data_dir(&args.data_dir)?;
    let disk = FsDisk::new(&args.data_dir);
    let key = p2p_key(&disk)?;
    let net = Arc::new(P2pNetwork::start(key, args.listen.clone(), &args.peers).await?);
    let mut peers = Vec::new();
    for addr in &args.peers {
        peers.push(net.add_peer(addr.clone()).with_context(|| format!("--peer {addr}"))?);
    }
    let listen: Vec<String> = net.listen_addrs.iter().map(|a| a.to_string()).collect();
    let node_id = net.local_id().clone();
    let cfg = args.config(node_id.clone(), peers)?;
    // The real http backend: `http_request` reaches the network (the simulator keeps scripted responses).
    let http = Arc::new(igor::http::UreqGateway::new());
    let sandbox = Sandbox::new(SandboxConfig { http, ..SandboxConfig::default() })?;
    let _wall_clock = WallClockNet::start(sandbox.engine().clone());
    tracing::info!(node = %node_id, data_dir = %args.data_dir.display(), listen = ?listen, "node starting");
    let mut node = Node::open(cfg, disk.clone(), SystemClock::default(), OsEntropy, sandbox);

    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (fanout, _) = broadcast::channel(EVENT_FANOUT_CAPACITY);
    let board = Arc::new(Mutex::new(StatusBoard::default()));
    let consumer = tokio::spawn(consume_events(events_rx, board.clone(), fanout.clone(), disk, args.events));
    let socket = args.control.clone().unwrap_or_else(|| args.data_dir.join(control::SOCKET_FILE));
    let listener = bind_control(&socket)?;
    let (stopped_tx, stopped) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let ctx = Arc::new(ControlCtx {
        control: control_tx.clone(),
        stopped,
        slots: slots.clone(),
        fanout,
        board,
        net: net.clone(),
        node_id,
        listen: listen.clone(),
    });
    tokio::spawn(control_server(listener, ctx));
    tokio::spawn(on_signals(control_tx));
    // The address goes out last: once it is printed, the node (and its
    // control socket) is ready.
    {
        let mut out = std::io::stdout().lock();
        for a in &listen {
            writeln!(out, "{a}")?;
        }
        out.flush()?;
    }

    let fault_net = FaultNet::new(&*net, args.fault);
    driver::run(&mut node, &fault_net, &mut control_rx, &events_tx).await;
    drop(events_tx);
    let _ = consumer.await;
    // Answer every control request still waiting, then give their
    // connections a moment to write it (the accept loop holds one slot).
    let _ = stopped_tx.send(true);
    let others = u32::try_from(MAX_CONTROL_CONNECTIONS - 1).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(CONTROL_DRAIN_TIMEOUT, slots.acquire_many(others)).await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("node stopped");
    Ok(0)
}

/// SIGINT or SIGTERM: a graceful stop (final checkpoints). A second one
/// leaves at once.
async fn on_signals(control: mpsc::UnboundedSender<Control>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the node with `igord stop`");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: final checkpoint of every agent, then exit");
    let _ = control.send(Control::Command(Command::Shutdown));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(130);
}

/// Lines a peer's misbehaviour may put in the log: a burst, then a steady
/// rate. Found by an outside tester: an unsigned flood of 140k requests
/// grew the log by 45 MB, one WARN line each. Events still reach the board,
/// `--events` and control waiters in full; only the log is thinned, and it
/// says how many lines it left out.
const PEER_NOISE_BURST: u64 = 200;
const PEER_NOISE_PER_S: u64 = 20;

/// A token bucket over the log lines peers cause (`fault_observed`,
/// `claim_rejected`).
#[derive(Debug)]
struct NoiseLimit {
    tokens: u64,
    at: Duration,
    suppressed: u64,
}

impl NoiseLimit {
    fn new() -> Self {
        NoiseLimit { tokens: PEER_NOISE_BURST, at: Duration::ZERO, suppressed: 0 }
    }

    /// May a line be logged at `now` (time since the node started)? `Some(n)`:
    /// yes, and `n` lines were left out before it; `None`: leave it out.
    fn allow(&mut self, now: Duration) -> Option<u64> {
        let tick = Duration::from_secs(1) / u32::try_from(PEER_NOISE_PER_S).unwrap_or(1);
        let earned = u64::try_from(now.saturating_sub(self.at).as_nanos() / tick.as_nanos().max(1)).unwrap_or(u64::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(PEER_NOISE_BURST);
            self.at = now;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Log an event; lines peers cause go through `noise`.
fn log_event_limited(e: &NodeEvent, noise: &mut NoiseLimit, now: Duration) {
    if matches!(e.event, Event::FaultObserved { .. } | Event::ClaimRejected { .. }) {
        match noise.allow(now) {
            None => return,
            Some(0) => {}
            Some(n) => tracing::warn!("{n} fault_observed/claim_rejected log lines left out (log rate limit)"),
        }
    }
    log_event(e);
}

/// How loud an event is in the log.
fn log_event(e: &NodeEvent) {
    match &e.event {
        Event::FaultObserved { .. }
        | Event::CommandRefused { .. }
        | Event::DivergenceDetected { .. }
        | Event::AgentHalted { .. } => tracing::warn!(seq = e.seq, "{}", e.event),
        Event::TickStarted { .. }
        | Event::TickFinished { .. }
        | Event::MessageSent { .. }
        | Event::MessageReceived { .. }
        | Event::StaleMessageIgnored { .. } => tracing::debug!(seq = e.seq, "{}", e.event),
        _ => tracing::info!(seq = e.seq, "{}", e.event),
    }
}

/// The agent's DID, read from one of its checkpoints on disk.
fn did_from_disk(disk: &FsDisk, agent: &AgentId, tick: igor::units::TickNumber) -> Option<String> {
    let bytes = disk.read(&lineage::history_path(agent, tick)).ok()?;
    Checkpoint::decode(&bytes).ok()?.agent_key().map(|k| k.did())
}

/// Log every event, keep the status board, print JSON lines if asked, and
/// hand each event to the control requests waiting for their answer.
async fn consume_events(
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    board: Arc<Mutex<StatusBoard>>,
    fanout: broadcast::Sender<NodeEvent>,
    disk: FsDisk,
    print: bool,
) {
    let started = tokio::time::Instant::now();
    let mut noise = NoiseLimit::new();
    while let Some(e) = events.recv().await {
        log_event_limited(&e, &mut noise, started.elapsed());
        let head = match &e.event {
            Event::CheckpointCommitted { agent, tick, .. } | Event::CheckpointAdopted { agent, tick, .. } => {
                Some((agent.clone(), *tick))
            }
            Event::AgentLoaded { agent, head_tick, .. } => Some((agent.clone(), *head_tick)),
            _ => None,
        };
        {
            let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
            b.apply(&e);
            if let Some((agent, tick)) = head.filter(|(a, _)| b.get(a).is_some_and(|s| s.did.is_none()))
                && let Some(did) = did_from_disk(&disk, &agent, tick)
            {
                b.set_did(&agent, did);
            }
        }
        if print && let Ok(line) = serde_json::to_string(&e) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        // Only completions: a waiter must not lag behind ticks.
        // Err = nobody is waiting.
        if control::is_completion(&e.event) {
            let _ = fanout.send(e);
        }
    }
}

struct ControlCtx {
    control: mpsc::UnboundedSender<Control>,
    /// Becomes `true` once the node has stopped: a request still waiting
    /// for its answer is answered "node stopped" (found by an outside
    /// tester: `migrate --wait` beside `stop` got an empty reply, the
    /// process exiting under it).
    stopped: watch::Receiver<bool>,
    /// Control connections being served ([`MAX_CONTROL_CONNECTIONS`]).
    slots: Arc<Semaphore>,
    fanout: broadcast::Sender<NodeEvent>,
    board: Arc<Mutex<StatusBoard>>,
    net: Arc<P2pNetwork>,
    node_id: NodeId,
    listen: Vec<String>,
}

/// Bind the control socket. A socket file left by a killed node is
/// replaced (the data dir lock proves no node is using it).
fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale control socket {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The socket commands the node: owner only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(listener)
}

async fn control_server(listener: UnixListener, ctx: Arc<ControlCtx>) {
    loop {
        let Ok(permit) = ctx.slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &ctx).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(stream: UnixStream, ctx: &ControlCtx) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let limit = u64::try_from(control::MAX_REQUEST_BYTES + 1).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(read.take(limit));
    let read = tokio::time::timeout(CONTROL_READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await;
    let reply = match read {
        Err(_) => Reply::error(format!("no request line within {CONTROL_READ_TIMEOUT:?}")),
        Ok(Err(e)) => Reply::error(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() > control::MAX_REQUEST_BYTES => {
            Reply::error(format!("request over {} bytes", control::MAX_REQUEST_BYTES))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<Request>(&line) {
            Ok(req) => handle(req, ctx).await,
            // Bounded: serde's message may quote the offending value.
            Err(e) => Reply::error(format!("bad request: {e}")),
        },
    };
    // Serialising a reply (plain data) cannot fail.
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Resolve `--to`: a multiaddr (learned and dialed) or a bare peer id.
fn resolve_target(ctx: &ControlCtx, to: &str) -> Result<NodeId, String> {
    if to.starts_with('/') {
        let addr: Multiaddr = to.parse().map_err(|e| format!("target {to:?}: not a multiaddr: {e}"))?;
        return ctx.net.add_peer(addr).map_err(|e| format!("target {to:?}: {e}"));
    }
    to.parse::<libp2p::PeerId>().map_err(|e| format!("target {to:?}: not a peer id or multiaddr: {e}"))?;
    NodeId::new(to).map_err(|e| format!("target {to:?}: {e}"))
}

/// A request as the node is asked it: a tagged deploy gets its key and
/// self-certifying id here (the reply names the id), and an agent named by
/// its label alone is resolved to its id (`control::resolve_agent`).
fn resolved(req: Request, ctx: &ControlCtx) -> Result<(Request, Option<Box<Keypair>>), String> {
    let known: Vec<AgentId> = {
        let board = ctx.board.lock().unwrap_or_else(|p| p.into_inner());
        board.listed(true).into_iter().map(|s| s.agent).collect()
    };
    let resolve = |agent: &AgentId| control::resolve_agent(agent, &known);
    Ok(match req {
        Request::Deploy { agent, tag: true, wasm, manifest, budget } => {
            let key = Keypair::generate(&mut OsEntropy);
            let id = identity::tagged_agent_id(agent.as_str(), &key.public()).map_err(|e| e.to_string())?;
            (Request::Deploy { agent: id, tag: false, wasm, manifest, budget }, Some(Box::new(key)))
        }
        Request::Migrate { agent, to, wait } => (Request::Migrate { agent: resolve(&agent)?, to, wait }, None),
        Request::Recover { agent, anchor, force } => {
            (Request::Recover { agent: resolve(&agent)?, anchor, force }, None)
        }
        Request::Retire { agent } => (Request::Retire { agent: resolve(&agent)? }, None),
        other => (other, None),
    })
}

async fn handle(req: Request, ctx: &ControlCtx) -> Reply {
    let (req, key) = match resolved(req, ctx) {
        Ok(r) => r,
        Err(error) => return Reply::error(error),
    };
    let ask = match &req {
        Request::Agents { all } => {
            let agents = ctx.board.lock().unwrap_or_else(|p| p.into_inner()).listed(*all);
            return Reply::Agents { node: ctx.node_id.clone(), listen: ctx.listen.clone(), agents };
        }
        Request::Stop {} => {
            let _ = ctx.control.send(Control::Command(Command::Shutdown));
            return Reply::Stopping;
        }
        Request::Deploy { agent, wasm, manifest, budget, .. } => {
            Ask::Deploy { agent: agent.clone(), key, wasm: wasm.clone(), manifest: manifest.clone(), budget: *budget }
        }
        Request::Migrate { agent, to, .. } => match resolve_target(ctx, to) {
            Ok(to) => Ask::Command(Command::Migrate { agent: agent.clone(), to }),
            Err(error) => return Reply::error(error),
        },
        Request::Recover { agent, anchor, force } => match Hash32::from_hex(anchor) {
            Some(anchor) => Ask::Command(Command::Recover { agent: agent.clone(), anchor, force: *force }),
            None => return Reply::error(format!("anchor {anchor:?}: not a 64-digit hex hash")),
        },
        Request::Retire { agent } => Ask::Command(Command::Retire { agent: agent.clone() }),
    };
    let timeout_ms = match req {
        Request::Migrate { wait: true, .. } => control::MIGRATION_WAIT_TIMEOUT_MS,
        _ => control::COMMAND_TIMEOUT_MS,
    };
    let timeout = Duration::from_millis(timeout_ms);
    let late = || Reply::error(format!("no answer from the node within {timeout_ms} ms; see `igord agents`"));
    // Subscribe before asking: a completion emitted right after the call
    // cannot slip past. The node's own answer comes back on `reply`.
    let mut events = ctx.fanout.subscribe();
    let (reply, answer) = oneshot::channel();
    if ctx.control.send(Control::Ask { ask, reply }).is_err() {
        return Reply::error("node is stopping");
    }
    let stopped_before = || Reply::error("node stopped before the answer came; see `igord agents` once it runs again");
    let mut stopped = ctx.stopped.clone();
    let answer = tokio::select! {
        a = tokio::time::timeout(timeout, answer) => match a {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => return stopped_before(),
            Err(_) => return late(),
        },
        _ = stopped.wait_for(|s| *s) => return stopped_before(),
    };
    let completion = match control::first_reply(&req, &answer) {
        Ok(reply) => return reply,
        Err(c) => c,
    };
    let wait = async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(reply) = control::completes(&completion, &e) {
                        return reply;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Reply::error(format!("lost {n} events waiting for the answer; see `igord agents`"));
                }
                Err(broadcast::error::RecvError::Closed) => return Reply::error("node stopped"),
            }
        }
    };
    let mut stopped = ctx.stopped.clone();
    tokio::select! {
        r = tokio::time::timeout(timeout, wait) => r.unwrap_or_else(|_| late()),
        _ = stopped.wait_for(|s| *s) => stopped_before(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_noise_is_logged_in_a_burst_then_at_a_steady_rate_and_counts_what_it_left_out() {
        let mut n = NoiseLimit::new();
        let t0 = Duration::from_secs(5);
        for _ in 0..PEER_NOISE_BURST {
            assert_eq!(n.allow(t0), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(n.allow(t0), None, "a flood beyond the burst is left out");
        }
        // One second later the steady rate allows 20 more; the first says
        // how many were left out.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(n.allow(t1), Some(1000));
        for _ in 1..PEER_NOISE_PER_S {
            assert_eq!(n.allow(t1), Some(0));
        }
        assert_eq!(n.allow(t1), None);
        // A quiet minute refills the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(n.allow(t2), Some(1));
        for _ in 1..PEER_NOISE_BURST {
            assert!(n.allow(t2).is_some());
        }
        assert_eq!(n.allow(t2), None);
    }
}
