//! `igord inspect` and `igord verify`: read checkpoint files from the real
//! filesystem and report on them. Decoding and verification live in the
//! library (`checkpoint`, `lineage`); this file only does I/O and printing.

use anyhow::Context;
use clap::Args;
use igor::checkpoint::Checkpoint;
use igor::lineage::{CHECKPOINT_EXT, RECOVERY_EXT, verify_lineage};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// The checkpoint file.
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Directories holding `<tick:010>.ckpt` files of one agent.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<u8> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let c = match Checkpoint::decode(&bytes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return Ok(1);
        }
    };
    let signature_valid = c.seal.as_ref().map(|_| c.verify_signature().is_ok());
    let did = c.agent_key().map(|k| k.did());
    if args.json {
        let mut o = json!({
            "version": c.version,
            "budget": c.budget.0,
            "price_per_second": c.price_per_second.0,
            "tick": c.tick.0,
            "wasm_sha256": c.wasm_hash.to_hex(),
            "epoch_major": c.epoch.major,
            "lease_generation": c.epoch.generation,
            "lease_expiry_ns": c.lease_expiry_ns,
            "state_len": c.state.len(),
        });
        if c.version >= 4 {
            o["prev_hash"] = json!(c.prev_hash().to_hex());
            o["did"] = json!(did);
            o["signature_valid"] = json!(signature_valid);
        }
        println!("{o}");
    } else {
        println!("file:             {}", args.file.display());
        println!("version:          {}", c.version);
        println!("budget:           {} microcents", c.budget.0);
        println!("price per second: {} microcents", c.price_per_second.0);
        println!("tick:             {}", c.tick);
        println!("wasm sha256:      {}", c.wasm_hash);
        println!("epoch:            {} (major.generation)", c.epoch);
        println!("lease expiry:     {} unix ns", c.lease_expiry_ns);
        if c.version >= 4 {
            println!("prev hash:        {}", c.prev_hash());
            println!("did:              {}", did.unwrap_or_default());
            println!("signature:        {}", if signature_valid == Some(true) { "valid" } else { "INVALID" });
        }
        println!("state:            {} bytes", c.state.len());
    }
    Ok(if signature_valid == Some(false) { 1 } else { 0 })
}

pub fn verify(args: &VerifyArgs) -> anyhow::Result<u8> {
    let mut entries = Vec::new();
    let mut records = Vec::new();
    for dir in &args.dirs {
        let listing = std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?;
        let mut paths = Vec::new();
        for e in listing {
            let path = e.with_context(|| format!("reading directory {}", dir.display()))?.path();
            let name = path.to_string_lossy();
            if path.is_file() && (name.ends_with(CHECKPOINT_EXT) || name.ends_with(RECOVERY_EXT)) {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            if path.to_string_lossy().ends_with(RECOVERY_EXT) {
                records.push((path.display().to_string(), bytes));
            } else {
                entries.push((path.display().to_string(), bytes));
            }
        }
    }
    if entries.is_empty() {
        anyhow::bail!(
            "no {CHECKPOINT_EXT} files in {}",
            args.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    match verify_lineage(&entries, &records) {
        Ok(s) => {
            for (tick, anchor) in &s.recoveries {
                println!("recovered at tick {tick} from anchor {anchor}");
            }
            if s.abandoned > 0 {
                println!("abandoned by recovery: {} checkpoint(s) on other branches", s.abandoned);
            }
            println!(
                "valid: {} links, ticks {}..{}, {}, budget {} -> {} microcents, head {}",
                s.links, s.first_tick, s.last_tick, s.did, s.first_budget.0, s.last_budget.0, s.head
            );
            Ok(0)
        }
        Err(broken) => {
            println!("invalid: {broken}");
            Ok(1)
        }
    }
}
