//! Shared by the end-to-end tests: `igord node` child processes on
//! 127.0.0.1 with their event streams (`--events` JSON lines on stdout)
//! collected in the background, the control clients run as processes, and
//! bounded waits. Every child is killed when its handle drops; on a failing
//! test the tail of each node's log is printed.
#![allow(dead_code, clippy::disallowed_methods)] // test harness: drives real processes and files

use igor::control::AgentStatus;
use igor::node::{Event, NodeEvent};
use igor::units::AgentId;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub const IGORD: &str = env!("CARGO_BIN_EXE_igord");

/// The binary under test: `IGORD_BIN` if set (e.g. to run these tests
/// against an older build and watch them fail), else this build's `igord`.
pub fn igord_bin() -> String {
    std::env::var("IGORD_BIN").unwrap_or_else(|_| IGORD.to_string())
}

/// Fast cadence so a test sees many ticks and checkpoints in little time.
pub const FAST: &[&str] = &["--tick-ms", "40", "--checkpoint-ms", "300", "--package-ttl-ms", "3000"];

pub fn counter_wat() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agents/counter.wat")
}

pub fn agent() -> AgentId {
    AgentId::new("counter").expect("valid id")
}

/// A running `igord node`.
pub struct NodeProc {
    pub name: String,
    pub dir: PathBuf,
    pub addr: String,
    child: Child,
    events: Arc<Mutex<Vec<NodeEvent>>>,
    log: PathBuf,
}

impl NodeProc {
    /// Start a node on `dir` (created if absent) and wait for its address.
    pub fn start(name: &str, dir: &Path, peers: &[&str], extra: &[&str]) -> NodeProc {
        let log = dir.with_extension(format!("{}.log", start_count(dir)));
        let log_file = std::fs::File::create(&log).expect("create node log");
        let mut cmd = Command::new(igord_bin());
        cmd.args(["node", "--events", "--data-dir"]).arg(dir);
        // FAST's defaults, unless `extra` sets the same flag.
        for pair in FAST.chunks(2) {
            if !extra.contains(&pair[0]) {
                cmd.args(pair);
            }
        }
        cmd.args(extra);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.env("RUST_LOG", "info,libp2p=warn").stdout(Stdio::piped()).stderr(log_file).stdin(Stdio::null());
        let mut child = cmd.spawn().expect("spawn igord node");
        let stdout = child.stdout.take().expect("piped stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let sink = events.clone();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(addr)) = lines.next() {
                let _ = addr_tx.send(addr);
            }
            for line in lines.map_while(Result::ok) {
                match serde_json::from_str::<NodeEvent>(&line) {
                    Ok(e) => sink.lock().unwrap().push(e),
                    Err(e) => eprintln!("unparsable event line {line:?}: {e}"),
                }
            }
        });
        let mut node =
            NodeProc { name: name.to_string(), dir: dir.to_path_buf(), addr: String::new(), child, events, log };
        match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => node.addr = addr,
            Err(_) => panic!("node {name} printed no address within 30 s"),
        }
        assert!(node.addr.contains("/p2p/"), "address {:?} lacks /p2p/", node.addr);
        node
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's peak resident set (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    /// The node's log (stderr) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn peer_id(&self) -> &str {
        self.addr.rsplit('/').next().unwrap_or_default()
    }

    pub fn events(&self) -> Vec<NodeEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Wait until an event satisfies `f`; return it.
    pub fn wait_event(&self, what: &str, timeout: Duration, f: impl Fn(&Event) -> bool) -> NodeEvent {
        wait_until(what, timeout, || self.events().into_iter().find(|e| f(&e.event)))
    }

    pub fn status(&self) -> Vec<AgentStatus> {
        // --all: tests look at RETIRED sources too.
        let out = igord(&["agents", "--all", "--json", "--data-dir", path(&self.dir)], Duration::from_secs(20));
        assert!(out.0.success(), "igord agents on {}: {}", self.name, out.2);
        let reply: igor::control::Reply = serde_json::from_str(out.1.trim()).expect("agents reply is JSON");
        match reply {
            igor::control::Reply::Agents { agents, .. } => agents,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn agent_status(&self) -> Option<AgentStatus> {
        self.status().into_iter().find(|a| a.agent == agent())
    }

    /// SIGKILL and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal (e.g. "TERM", "INT") with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status();
        assert!(st.is_ok_and(|s| s.success()), "kill -{sig} {}", self.name);
    }

    /// Wait for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let name = self.name.clone();
        wait_until(&format!("node {name} to exit"), timeout, || self.child.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last log lines of node {} ----", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn start_count(dir: &Path) -> usize {
    (0..).find(|i| !dir.with_extension(format!("{i}.log")).exists()).unwrap_or(0)
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Run `igord <args>` with a deadline: (status, stdout, stderr).
pub fn igord(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(igord_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn igord");
    let start = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("igord {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("collect output");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Poll `f` every 20 ms until it yields a value, or panic after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deploy the counter agent on `node` with `budget` units.
pub fn deploy_counter(node: &NodeProc, budget: &str) {
    let out = igord(
        // A legacy id: these tests name the agent and its files `counter`.
        &["deploy", path(&counter_wat()), "--budget", budget, "--untagged", "--data-dir", path(&node.dir)],
        Duration::from_secs(40),
    );
    assert!(out.0.success(), "deploy: {} {}", out.1, out.2);
    assert!(out.1.contains("deployed counter"), "{}", out.1);
}

/// Ticks (number, cost+paid) run by a node, in order.
pub fn ticks(events: &[NodeEvent]) -> Vec<(u64, i64)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::TickFinished { tick, cost, paid, .. } => Some((tick.0, cost.0 + paid.0)),
            _ => None,
        })
        .collect()
}

/// The (name, bytes) of every checkpoint in `dir/history/counter`.
pub fn history(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let h = dir.join("history/counter");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&h).expect("history dir") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".ckpt") {
            out.push((format!("{}/{name}", h.display()), std::fs::read(entry.path()).expect("read checkpoint")));
        }
    }
    out.sort();
    out
}

/// Assert `ticks` is exactly `from..=to` with no gap or repeat.
pub fn assert_consecutive(what: &str, ticks: &[u64], from: u64) {
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(*t, from + i as u64, "{what}: tick sequence {ticks:?} should run from {from} without gap or repeat");
    }
}
