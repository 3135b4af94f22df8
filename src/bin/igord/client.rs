//! The control clients: `igord agents`, `deploy`, `migrate`, `recover`,
//! `retire` and `stop` send one JSON request to a running `igord node` over its control
//! socket (`<data-dir>/control.sock`, or `--control`) and print the reply.
//! The request and reply types are `igor::control`; the API is documented
//! in `docs/control-api.md`.
//!
//! Exit codes: 0 the request completed, 1 the node refused it or it failed
//! (the reason is printed; `migrate --wait` exits 1 on every outcome but
//! `completed`), 2 usage or I/O error (e.g. no node on that socket).

use crate::run::{manifest_bytes, parse_units};
use anyhow::{Context, bail};
use clap::Args;
use igor::control::{self, AgentStatus, Reply, Request};
use igor::sandbox::wasm_binary;
use igor::units::AgentId;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a client waits for the node's reply: the node answers within
/// its own command timeouts, plus margin.
const REPLY_TIMEOUT: Duration = Duration::from_millis(control::MIGRATION_WAIT_TIMEOUT_MS + 10_000);

/// Where to find the node.
#[derive(Args, Clone)]
pub struct Target {
    /// The node's data directory (its control socket is <data-dir>/control.sock).
    #[arg(long, default_value = "igor-data")]
    pub data_dir: PathBuf,
    /// The node's control socket (overrides --data-dir).
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Print the node's JSON reply as is.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    fn socket(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| self.data_dir.join(control::SOCKET_FILE))
    }
}

#[derive(Args)]
pub struct AgentsArgs {
    /// Also list RETIRED agents (migrated away or retired here).
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub node: Target,
}

#[derive(Args)]
pub struct DeployArgs {
    /// The agent module: a .wasm binary or .wat text (sent as a wasm binary).
    pub wasm: PathBuf,
    /// Starting budget in currency units (decimals allowed, 1 unit = 1,000,000 microcents).
    #[arg(long)]
    pub budget: String,
    /// Manifest file (default: <stem>.manifest.json beside the module, else `{}`: no capabilities).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Agent label (default: the module's file stem). The agent's id is
    /// `<label>.<tag>`, the tag naming its fresh key (a self-certifying id:
    /// peers refuse any other key for it); `migrate`, `recover` and `retire`
    /// accept the label alone while it names one agent on the node.
    #[arg(long)]
    pub name: Option<String>,
    /// Use `--name` as the id as is, without a tag (a legacy id: peers
    /// trust the first key they hear for it).
    #[arg(long)]
    pub untagged: bool,
    #[command(flatten)]
    pub node: Target,
}

#[derive(Args)]
pub struct MigrateArgs {
    pub agent: String,
    /// The target: a multiaddr ending in /p2p/<peer id>, or a known peer id.
    #[arg(long)]
    pub to: String,
    /// Wait until the handoff has ended and print its outcome.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub node: Target,
}

#[derive(Args)]
pub struct RecoverArgs {
    pub agent: String,
    /// Hex hash of the checkpoint to resume from; must be the node's newest
    /// (default: the newest the node reports, printed before recovering).
    #[arg(long)]
    pub anchor: Option<String>,
    /// Recover even though a peer proved it holds the agent under a newer
    /// epoch; only after checking that peer no longer does (logged).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub node: Target,
}

#[derive(Args)]
pub struct RetireArgs {
    pub agent: String,
    #[command(flatten)]
    pub node: Target,
}

#[derive(Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub node: Target,
}

/// Send one request, read one reply line.
pub fn call(socket: &Path, req: &Request) -> anyhow::Result<Reply> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {} (is `igord node` running there?)", socket.display()))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let mut line = serde_json::to_vec(req).context("encoding the request")?;
    line.push(b'\n');
    stream.write_all(&line).with_context(|| format!("writing to {}", socket.display()))?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let limit = u64::try_from(control::MAX_REPLY_BYTES).unwrap_or(u64::MAX);
    let mut reply = Vec::new();
    BufReader::new(stream.take(limit))
        .read_until(b'\n', &mut reply)
        .with_context(|| format!("reading the reply from {}", socket.display()))?;
    if reply.is_empty() {
        bail!("{}: the node closed the connection without a reply", socket.display());
    }
    serde_json::from_slice(&reply).with_context(|| format!("{}: malformed reply", socket.display()))
}

/// Print the reply; exit 1 unless the request completed as asked.
fn finish(target: &Target, reply: &Reply) -> anyhow::Result<i32> {
    let code = if reply.succeeded() { 0 } else { 1 };
    if target.json {
        println!("{}", serde_json::to_string(reply)?);
        return Ok(code);
    }
    match reply {
        Reply::Agents { node, listen, agents } => {
            println!("node {node}");
            for a in listen {
                println!("listen {a}");
            }
            for a in agents {
                println!("{}", agent_line(a));
            }
        }
        Reply::Deployed { agent, wasm_hash, budget } => {
            println!("deployed {agent}: wasm sha256 {wasm_hash}, budget {budget}")
        }
        Reply::MigrationStarted { agent, to } => println!("migrating {agent} to {to}"),
        Reply::MigrationFinished { agent, to, outcome } if reply.succeeded() => {
            println!("migration of {agent} to {to}: {outcome}")
        }
        Reply::MigrationFinished { agent, to, outcome } => eprintln!("igord: migration of {agent} to {to}: {outcome}"),
        Reply::Recovered { agent, epoch, anchor_tick } => {
            println!("recovered {agent} at epoch {epoch} from tick {anchor_tick}")
        }
        Reply::Retired { agent } => println!("retired {agent}"),
        Reply::Stopping => println!("stopping: final checkpoint of every agent"),
        Reply::Error { error } => {
            eprintln!("igord: {error}");
            return Ok(1);
        }
    }
    Ok(code)
}

fn agent_line(a: &AgentStatus) -> String {
    let head = a.head_tick.map_or("-".to_string(), |t| t.to_string());
    let mut line = format!(
        "{} {} epoch {} tick {} head {} budget {} {}",
        a.agent,
        a.state,
        a.epoch,
        a.tick,
        head,
        a.budget,
        a.did.as_deref().unwrap_or("-")
    );
    if let Some(t) = &a.handoff_to {
        line.push_str(&format!(" handoff-to {t}"));
    }
    if let Some(h) = &a.halted {
        line.push_str(&format!(" halted ({h})"));
    }
    if let Some(d) = &a.degraded {
        line.push_str(&format!(" degraded: {d}"));
    }
    line
}

pub fn agents(args: AgentsArgs) -> anyhow::Result<i32> {
    let reply = call(&args.node.socket(), &Request::Agents { all: args.all })?;
    finish(&args.node, &reply)
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<i32> {
    let budget = parse_units(&args.budget)?;
    let bytes = std::fs::read(&args.wasm).with_context(|| format!("reading {}", args.wasm.display()))?;
    let wasm = match wasm_binary(&bytes) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("igord: {}: {e}", args.wasm.display());
            return Ok(1);
        }
    };
    let mut manifest = manifest_bytes(&args.wasm, args.manifest.as_deref())?;
    if manifest.is_empty() {
        // No manifest grants nothing; `{}` says the same as JSON, which the
        // node's migration-policy check requires.
        manifest = b"{}".to_vec();
    }
    let stem = args.wasm.file_stem().and_then(|s| s.to_str()).unwrap_or("agent").to_string();
    let agent = AgentId::new(args.name.clone().unwrap_or(stem))?;
    let reply = call(&args.node.socket(), &Request::Deploy { agent, tag: !args.untagged, wasm, manifest, budget })?;
    finish(&args.node, &reply)
}

pub fn migrate(args: MigrateArgs) -> anyhow::Result<i32> {
    let agent = AgentId::new(args.agent.clone())?;
    let reply = call(&args.node.socket(), &Request::Migrate { agent, to: args.to.clone(), wait: args.wait })?;
    finish(&args.node, &reply)
}

pub fn recover(args: RecoverArgs) -> anyhow::Result<i32> {
    let agent = AgentId::new(args.agent.clone())?;
    let socket = args.node.socket();
    let anchor = match &args.anchor {
        Some(a) => a.clone(),
        None => {
            let Reply::Agents { agents, .. } = call(&socket, &Request::Agents { all: true })? else {
                bail!("{}: unexpected reply to agents", socket.display());
            };
            let Some(a) = agents.iter().find(|a| a.agent == agent) else {
                eprintln!("igord: the node does not know agent {agent}");
                return Ok(1);
            };
            let head = a.head_tick.map_or("-".to_string(), |t| t.to_string());
            eprintln!("recovering {agent} from the node's newest checkpoint: tick {head}, {}", a.head_hash);
            a.head_hash.to_hex()
        }
    };
    let reply = call(&socket, &Request::Recover { agent, anchor, force: args.force })?;
    finish(&args.node, &reply)
}

pub fn stop(args: StopArgs) -> anyhow::Result<i32> {
    let reply = call(&args.node.socket(), &Request::Stop {})?;
    finish(&args.node, &reply)
}

pub fn retire(args: RetireArgs) -> anyhow::Result<i32> {
    let agent = AgentId::new(args.agent.clone())?;
    let reply = call(&args.node.socket(), &Request::Retire { agent })?;
    finish(&args.node, &reply)
}
