//! `igord inspect` and `igord verify` as a user runs them: real files, the
//! built binary, exit codes 0 (valid) / 1 (invalid, reason printed) / 2
//! (usage or I/O error).

#![allow(clippy::disallowed_methods)] // the test edits real files the way a user (or a disk fault) would

use igor::checkpoint::{CheckpointBody, Hash32};
use igor::env::mem::SeededEntropy;
use igor::env::real::FsDisk;
use igor::identity::Keypair;
use igor::lineage::{Lineage, history_dir};
use igor::units::{AgentId, Epoch, Microcents, TickNumber};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn igord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_igord")).args(args).output().expect("igord runs")
}

/// A 4-link chain for agent `counter` under `root`; returns its history dir.
fn chain(root: &Path) -> PathBuf {
    let disk = FsDisk::new(root);
    let agent = AgentId::new("counter").unwrap();
    let key = Keypair::generate(&mut SeededEntropy::derived(9, "agent"));
    let mut lineage = Lineage::new(agent.clone());
    for t in 1..=4u64 {
        let body = CheckpointBody {
            budget: Microcents(1_000_000 - 100 * t as i64),
            price_per_second: Microcents(1000),
            tick: TickNumber(t),
            wasm_hash: Hash32::of(b"counter.wasm"),
            epoch: Epoch::new(1, 0),
            lease_expiry_ns: 0,
            prev_hash: Hash32::ZERO,
            state: t.to_le_bytes().to_vec(),
        };
        lineage.commit(&disk, body, &key).unwrap();
    }
    root.join(history_dir(&agent))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn verify_accepts_a_valid_four_link_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chain(tmp.path());
    let out = igord(&["verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("valid: 4 links, ticks 1..4"), "{}", stdout(&out));
}

#[test]
fn verify_names_the_link_with_a_flipped_state_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chain(tmp.path());
    let file = dir.join("0000000003.ckpt");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let out = igord(&["verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("0000000003.ckpt") && text.contains("bad signature"), "{text}");
}

#[test]
fn verify_names_a_prev_hash_that_skips_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chain(tmp.path());
    std::fs::remove_file(dir.join("0000000002.ckpt")).unwrap();
    let out = igord(&["verify", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("0000000003.ckpt") && text.contains("prev-hash mismatch") && text.contains("tick 3"),
        "{text}"
    );
}

#[test]
fn inspect_json_has_every_documented_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = chain(tmp.path());
    let out = igord(&["inspect", dir.join("0000000002.ckpt").to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for key in [
        "version",
        "budget",
        "price_per_second",
        "tick",
        "wasm_sha256",
        "epoch_major",
        "lease_generation",
        "lease_expiry_ns",
        "prev_hash",
        "did",
        "state_len",
        "signature_valid",
    ] {
        assert!(v.get(key).is_some(), "missing key {key}: {v}");
    }
    assert_eq!(v["tick"], 2);
    assert_eq!(v["budget"], 999_800);
    assert_eq!(v["signature_valid"], true);
    assert!(v["did"].as_str().unwrap().starts_with("did:key:z6Mk"));
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(igord(&["verify"]).status.code(), Some(2));
    assert_eq!(igord(&["inspect", "/nonexistent/file.ckpt"]).status.code(), Some(2));
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("g.ckpt");
    std::fs::write(&garbage, b"\x07junk").unwrap();
    let out = igord(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported checkpoint version 0x07"));
}
