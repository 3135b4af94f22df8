//! Audit by replay (spec §2, CM-4, RE-3, RE-4): re-execute a lineage from
//! its genesis (or a named anchor) through every recorded tick and check
//! each checkpoint's state, budget and the charge of every tick against the
//! replay. The observation logs it reads are [`ticklog`] files kept beside
//! the checkpoints; histories of several nodes join by prev-hash, as
//! [`crate::lineage::verify_lineage`] joins them.
//!
//! One instance replays the whole chain ([`Executor::replay_in`]): the
//! state a checkpoint holds is compared with the instance's own snapshot,
//! never re-loaded, so a replayed tick costs about what the live one did.
//! A link without a log (a history older than the logs, a package that
//! carried no replay data) is reported as unaudited and the replay resumes
//! from the checkpoint at its end.
//!
//! Boundary: no world access. Files come in as bytes ([`HistoryFile`], or
//! [`load_history`] through a [`Disk`]); the executor is any [`Executor`].

pub mod ticklog;

use crate::checkpoint::{Checkpoint, Hash32};
use crate::env::{Disk, DiskError};
use crate::executor::{ExecError, Executor};
use crate::lineage::{self, BrokenLink, CHECKPOINT_EXT, RECOVERY_EXT};
use crate::membrane::first_difference;
use crate::node::store;
use crate::replay::{self, DivergenceKind};
use crate::units::{AgentId, Epoch, Microcents, TickNumber};
use std::collections::BTreeMap;
use std::fmt;
use ticklog::{SignedTickLog, TICKS_EXT, TickLog};

/// One file of the histories under audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryFile {
    /// Which history it came from (index into the histories given).
    pub source: usize,
    /// Its name or path, for messages.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Everything an audit reads.
#[derive(Clone, Debug)]
pub struct AuditInput {
    /// The agent the histories belong to (kv seals and logs name it).
    pub agent: AgentId,
    /// Checkpoints (`.ckpt`), recovery records (`.recovery`) and
    /// observation logs (`.ticks`) of every history, in any order.
    pub files: Vec<HistoryFile>,
    /// Sealed kv snapshots (`<tick:010>.kv`), where the node kept them:
    /// needed to start from an anchor other than genesis, and checked
    /// against the replayed kv where present.
    pub kv: Vec<HistoryFile>,
    pub wasm: Vec<u8>,
    pub manifest: Vec<u8>,
    /// Replay from the checkpoint at this tick instead of the first link.
    pub from: Option<TickNumber>,
}

/// Why an audit could not run at all (usage, unreadable input: exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("no checkpoints to audit")]
    NoCheckpoints,
    #[error("--from {0}: no checkpoint at that tick in the chain")]
    AnchorNotInChain(TickNumber),
    #[error("module: {0}")]
    Module(String),
    #[error("anchor at tick {tick}: {why}")]
    Anchor { tick: TickNumber, why: String },
}

/// What the replay found different from the history (exit 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindingKind {
    /// The chain itself is broken (signature, prev-hash, fork, budget rise).
    Chain(BrokenLink),
    /// An observation log that is unreadable, signed by another key, or
    /// bound to this link's parent but to another state or budget.
    Log(String),
    /// The replay check ([`replay::check_link`]) found the link different
    /// from its recorded ticks: the one typed divergence.
    Replay(DivergenceKind),
    /// A checkpoint names another module than the anchor.
    Module { expected: Hash32, found: Hash32 },
}

/// The first place where history and replay part ways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub tick: TickNumber,
    /// The file it was found in (checkpoint or log).
    pub file: String,
    /// The history that file came from.
    pub source: Option<usize>,
    /// Epoch of the checkpoint concerned (who owned the agent then).
    pub epoch: Option<Epoch>,
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tick {}: ", self.tick)?;
        match &self.kind {
            FindingKind::Chain(b) => write!(f, "chain broken: {b}")?,
            FindingKind::Log(why) | FindingKind::Replay(DivergenceKind::Shape(why)) => {
                write!(f, "observation log rejected: {why}")?
            }
            FindingKind::Replay(DivergenceKind::Log(why) | DivergenceKind::Exec(why)) => {
                write!(f, "replay diverged: {why}")?
            }
            FindingKind::Replay(d) => write!(f, "{d}")?,
            FindingKind::Module { expected, found } => {
                write!(f, "checkpoint names module {}…, the chain runs {}…", found.short(), expected.short())?
            }
        }
        write!(f, " [{}", self.file)?;
        if let Some(e) = self.epoch {
            write!(f, ", epoch {e}")?;
        }
        write!(f, "]")
    }
}

/// What an audit did and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Links in the chain (checkpoints, the anchor included).
    pub links: usize,
    /// Links replayed and found consistent.
    pub audited: usize,
    pub ticks_replayed: u64,
    pub anchor_tick: TickNumber,
    /// The anchor is the genesis checkpoint (no parent).
    pub from_genesis: bool,
    pub head_tick: TickNumber,
    pub head: Hash32,
    /// Links with no observation log: (parent tick, tick). Not replayed.
    pub unlogged: Vec<(TickNumber, TickNumber)>,
    pub budget_start: Microcents,
    pub budget_end: Microcents,
    /// The first divergence or tampering, if any (then the audit stopped).
    pub finding: Option<Finding>,
}

/// Progress of a long audit, for a status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub links_done: usize,
    pub links_total: usize,
    pub ticks_replayed: u64,
    pub tick: TickNumber,
}

/// A link of the chain: its checkpoint, its bytes' hash and where it lives.
struct Link {
    ckpt: Checkpoint,
    hash: Hash32,
    name: String,
    source: usize,
}

/// Read one node's history of `agent` through a [`Disk`]: its checkpoints,
/// recovery records and observation logs, and its sealed kv snapshots.
pub fn load_history(
    disk: &impl Disk,
    agent: &AgentId,
    source: usize,
) -> Result<(Vec<HistoryFile>, Vec<HistoryFile>), DiskError> {
    let read_dir = |dir: String, wanted: &dyn Fn(&str) -> bool| -> Result<Vec<HistoryFile>, DiskError> {
        let mut out = Vec::new();
        let names = match disk.list(&dir) {
            Err(e) if e.is_not_found() => return Ok(out),
            other => other?,
        };
        for name in names.into_iter().filter(|n| wanted(n)) {
            let path = format!("{dir}/{name}");
            out.push(HistoryFile { source, bytes: disk.read(&path)?, name: path });
        }
        Ok(out)
    };
    let history = read_dir(lineage::history_dir(agent), &|n: &str| {
        n.ends_with(CHECKPOINT_EXT) || n.ends_with(RECOVERY_EXT) || n.ends_with(TICKS_EXT)
    })?;
    let kv = read_dir(store::kv_dir(agent), &|n: &str| n.ends_with(".kv"))?;
    Ok((history, kv))
}

/// The tick a `<tick:010>.kv` name stands for.
fn kv_tick(name: &str) -> Option<TickNumber> {
    let name = name.rsplit('/').next().unwrap_or(name);
    name.strip_suffix(".kv").and_then(|t| t.parse().ok()).map(TickNumber)
}

fn has_ext(f: &HistoryFile, ext: &str) -> bool {
    f.name.ends_with(ext)
}

/// The chain as verified: links from the first to the head, or the broken
/// link named as a finding.
fn chain(input: &AuditInput) -> Result<Result<Vec<Link>, Finding>, AuditError> {
    let pairs = |ext: &str| -> Vec<(String, Vec<u8>)> {
        input.files.iter().filter(|f| has_ext(f, ext)).map(|f| (f.name.clone(), f.bytes.clone())).collect()
    };
    let (entries, records) = (pairs(CHECKPOINT_EXT), pairs(RECOVERY_EXT));
    if entries.is_empty() {
        return Err(AuditError::NoCheckpoints);
    }
    let summary = match lineage::verify_lineage(&entries, &records) {
        Ok(s) => s,
        Err(b) => {
            let source = input.files.iter().find(|f| f.name == b.name).map(|f| f.source);
            let tick = b.tick.unwrap_or_default();
            let file = b.name.clone();
            return Ok(Err(Finding { tick, file, source, epoch: None, kind: FindingKind::Chain(b) }));
        }
    };
    // Every checkpoint decodes and verifies (verify_lineage said so); index
    // them by hash and walk back from the head to the first link.
    let mut by_hash: BTreeMap<Hash32, Link> = BTreeMap::new();
    for f in input.files.iter().filter(|f| has_ext(f, CHECKPOINT_EXT)) {
        let hash = Hash32::of(&f.bytes);
        if let (false, Ok(ckpt)) = (by_hash.contains_key(&hash), Checkpoint::decode(&f.bytes)) {
            by_hash.insert(hash, Link { ckpt, hash, name: f.name.clone(), source: f.source });
        }
    }
    let mut links = Vec::with_capacity(summary.links);
    let mut at = summary.head;
    while let Some(link) = by_hash.remove(&at) {
        at = link.ckpt.prev_hash();
        let first = link.ckpt.tick == summary.first_tick;
        links.push(link);
        if first {
            break;
        }
    }
    links.reverse();
    debug_assert_eq!(links.len(), summary.links, "the verified chain walks back to its first link");
    Ok(Ok(links))
}

/// The observation log of the link `parent -> link`, if one binds it.
/// A log that cannot be read, is signed by another key, or is bound to
/// this parent but another state or budget is a finding (an edit after the
/// fact); a log bound to another parent is a leftover of another branch
/// (a crash between log and checkpoint) and is skipped.
fn log_for(logs: &[&HistoryFile], parent: &Link, link: &Link) -> Result<Option<TickLog>, Box<Finding>> {
    let first_tick = TickNumber(parent.ckpt.tick.0 + 1);
    for f in logs {
        let bad = |why: String| {
            Box::new(Finding {
                tick: first_tick,
                file: f.name.clone(),
                source: Some(f.source),
                epoch: Some(link.ckpt.epoch),
                kind: FindingKind::Log(why),
            })
        };
        let opened = SignedTickLog::open(&f.bytes).map_err(|e| bad(e.to_string()))?;
        if Some(&opened.key) != link.ckpt.agent_key() {
            return Err(bad(format!("signed by {}, not by the agent key", opened.key.did())));
        }
        let b = &opened.log.link;
        if b.parent_hash != parent.hash || b.parent_tick != parent.ckpt.tick || b.tick != link.ckpt.tick {
            continue;
        }
        let state_hash = Hash32::of(&link.ckpt.state);
        if b.state_hash != state_hash || b.budget != link.ckpt.budget {
            return Err(bad(format!(
                "it binds state {}… and budget {} to tick {}; the checkpoint {} holds state {}… and budget {}",
                b.state_hash.short(),
                b.budget,
                b.tick,
                link.name,
                state_hash.short(),
                link.ckpt.budget
            )));
        }
        return Ok(Some(opened.log));
    }
    Ok(None)
}

/// The sealed kv snapshot of `link`, opened, if one is given.
fn kv_of(input: &AuditInput, agent: &AgentId, link: &Link) -> Option<Result<Vec<u8>, String>> {
    let key = link.ckpt.agent_key()?;
    let mut found = input.kv.iter().filter(|f| kv_tick(&f.name) == Some(link.ckpt.tick));
    let opened = found
        .by_ref()
        .map(|f| store::open_kv(key, agent, &link.ckpt, &f.bytes).map_err(|e| e.to_string()))
        .collect::<Vec<_>>();
    // Several nodes may hold a snapshot of the same tick: any that opens
    // for this checkpoint (the seal binds its state) is the one.
    opened.iter().find(|r| r.is_ok()).cloned().or_else(|| opened.into_iter().next())
}

/// The replayed state must be the checkpoint's.
fn check_state(link: &Link, state: &[u8]) -> Result<(), Box<Finding>> {
    if state == link.ckpt.state.as_slice() {
        return Ok(());
    }
    let kind = FindingKind::Replay(DivergenceKind::State {
        expected: Hash32::of(&link.ckpt.state),
        actual: Hash32::of(state),
        first_byte: first_difference(&link.ckpt.state, state),
    });
    Err(finding(link, link.ckpt.tick, kind))
}

/// A finding at `tick` in the link ending at `link`'s checkpoint.
fn finding(link: &Link, tick: TickNumber, kind: FindingKind) -> Box<Finding> {
    let (file, source, epoch) = (link.name.clone(), Some(link.source), Some(link.ckpt.epoch));
    Box::new(Finding { tick, file, source, epoch, kind })
}

/// Where the replay stands between links.
struct Replayer<'a, E: Executor> {
    exec: &'a mut E,
    input: &'a AuditInput,
    agent: AgentId,
    wasm_hash: Hash32,
    instance: Option<E::Instance>,
    /// The replay must restart from this link's checkpoint (after a link
    /// without a log).
    restart: bool,
    /// The kv as last replayed (used after an unlogged link when the node's
    /// snapshot of the restart point is not given).
    kv: Vec<u8>,
}

impl<E: Executor> Replayer<'_, E> {
    /// Start the one instance at `link`. At the genesis it starts as the
    /// deploying node's did (no state, no kv: `agent_init` only) and must
    /// reproduce the genesis state; elsewhere it resumes from the
    /// checkpoint, as a node restarting or adopting it does.
    fn start_at(&mut self, link: &Link) -> Result<(), Box<Finding>> {
        let genesis = link.ckpt.prev_hash() == Hash32::ZERO;
        let kv = match kv_of(self.input, &self.agent, link) {
            _ if genesis => Vec::new(),
            Some(Ok(kv)) => kv,
            _ => std::mem::take(&mut self.kv),
        };
        let state: &[u8] = if genesis { &[] } else { &link.ckpt.state };
        let failed =
            |e: ExecError| finding(link, link.ckpt.tick, FindingKind::Replay(DivergenceKind::Exec(e.to_string())));
        let mut inst = self.exec.start(&self.wasm_hash, &self.input.manifest, state, &kv).map_err(failed)?;
        if genesis {
            let (state, _) = self.exec.snapshot(&mut inst).map_err(failed)?;
            check_state(link, &state)?;
        }
        self.instance = Some(inst);
        self.restart = false;
        Ok(())
    }

    /// Replay the ticks of `log` from `parent` and check them against `link`.
    /// Returns the number of ticks replayed.
    fn replay_link(&mut self, parent: &Link, link: &Link, log: &TickLog) -> Result<u64, Box<Finding>> {
        if self.restart || self.instance.is_none() {
            self.start_at(parent)?;
        }
        let sealed = match kv_of(self.input, &self.agent, link) {
            Some(Ok(sealed)) => Some(sealed),
            _ => None,
        };
        let checked = replay::Link {
            parent_tick: parent.ckpt.tick,
            parent_budget: parent.ckpt.budget,
            ticks: &log.ticks,
            tick: link.ckpt.tick,
            budget: link.ckpt.budget,
            state: &link.ckpt.state,
            kv: sealed.as_deref(),
        };
        // Invariant: start_at above either set the instance or returned.
        let instance = self.instance.as_mut().expect("started above");
        let replayed = replay::check_link(
            self.exec,
            &self.wasm_hash,
            &self.input.manifest,
            instance,
            &checked,
            replay::Charge::Exact,
        )
        .map_err(|d| finding(link, d.tick, FindingKind::Replay(d.kind)))?;
        self.kv = replayed.kv;
        Ok(replayed.ticks)
    }
}

/// Audit the chain in `input`: verify it, then replay every logged link
/// from the anchor with one instance. Stops at the first finding.
pub fn audit<E: Executor>(
    exec: &mut E,
    input: &AuditInput,
    progress: &mut dyn FnMut(&Progress),
) -> Result<AuditReport, AuditError> {
    let mut report = AuditReport::default();
    let links = match chain(input)? {
        Ok(links) => links,
        Err(finding) => {
            report.finding = Some(finding);
            return Ok(report);
        }
    };
    let start = match input.from {
        None => 0,
        Some(t) => links.iter().position(|l| l.ckpt.tick == t).ok_or(AuditError::AnchorNotInChain(t))?,
    };
    let (anchor, head) = (&links[start], &links[links.len() - 1]);
    report.links = links.len();
    report.anchor_tick = anchor.ckpt.tick;
    report.from_genesis = anchor.ckpt.prev_hash() == Hash32::ZERO;
    report.head_tick = head.ckpt.tick;
    report.head = head.hash;
    report.budget_start = anchor.ckpt.budget;
    report.budget_end = head.ckpt.budget;
    let agent = input.agent.clone();
    let wasm_hash = exec.prepare(&input.wasm, &input.manifest).map_err(|e| AuditError::Module(e.to_string()))?;
    if wasm_hash != anchor.ckpt.wasm_hash {
        return Err(AuditError::Module(format!(
            "the module given has sha256 {wasm_hash}, the checkpoint at tick {} names {}",
            anchor.ckpt.tick, anchor.ckpt.wasm_hash
        )));
    }
    // The anchor's kv: its sealed snapshot, or empty at genesis (deploy
    // starts every agent with no kv).
    let kv = match kv_of(input, &agent, anchor) {
        Some(Ok(kv)) => kv,
        Some(Err(why)) => return Err(AuditError::Anchor { tick: anchor.ckpt.tick, why }),
        None if report.from_genesis => Vec::new(),
        None => {
            let why = "no sealed kv snapshot of it was given (agents/<agent>/kv/)".to_string();
            return Err(AuditError::Anchor { tick: anchor.ckpt.tick, why });
        }
    };
    let mut r = Replayer { exec, input, agent, wasm_hash, instance: None, restart: true, kv };
    let mut logs: BTreeMap<TickNumber, Vec<&HistoryFile>> = BTreeMap::new();
    for f in input.files.iter().filter(|f| has_ext(f, TICKS_EXT)) {
        if let Some(t) = ticklog::ticks_file_tick(&f.name) {
            logs.entry(t).or_default().push(f);
        }
    }
    for (i, pair) in links[start..].windows(2).enumerate() {
        let (parent, link) = (&pair[0], &pair[1]);
        progress(&Progress {
            links_done: i,
            links_total: links.len() - start - 1,
            ticks_replayed: report.ticks_replayed,
            tick: parent.ckpt.tick,
        });
        if link.ckpt.wasm_hash != wasm_hash {
            let kind = FindingKind::Module { expected: wasm_hash, found: link.ckpt.wasm_hash };
            report.finding = Some(*finding(link, link.ckpt.tick, kind));
            break;
        }
        let candidates = logs.get(&link.ckpt.tick).map(Vec::as_slice).unwrap_or_default();
        let log = match log_for(candidates, parent, link) {
            Ok(Some(log)) => log,
            Ok(None) => {
                report.unlogged.push((parent.ckpt.tick, link.ckpt.tick));
                r.restart = true;
                continue;
            }
            Err(f) => {
                report.finding = Some(*f);
                break;
            }
        };
        match r.replay_link(parent, link, &log) {
            Ok(n) => {
                report.ticks_replayed += n;
                report.audited += 1;
            }
            Err(f) => {
                report.finding = Some(*f);
                break;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
