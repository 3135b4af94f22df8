//! Sweeps across machines (issue 15): two shards of a sweep, each written
//! with `--json`, merged by `igor-sim merge`, print the same summary table
//! as one unsharded sweep; a missing shard is named and fails the merge.
#![allow(clippy::disallowed_methods)] // test: runs the binary, reads its files in a temp dir

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sim(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_igor-sim")).current_dir(root()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The summary table: the lines from its header to the first blank line.
fn table(stdout: &str) -> String {
    let start = stdout.find("| scenario |").expect("a summary table");
    stdout[start..].split("\n\n").next().unwrap_or_default().to_string()
}

#[test]
fn two_shards_merged_give_the_unsharded_table_and_a_missing_shard_is_named() {
    let dir = std::env::temp_dir().join(format!("igor-shards-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (all, s0, s1) = (dir.join("all.jsonl"), dir.join("s0.jsonl"), dir.join("s1.jsonl"));
    let scenario = "scenarios/a1/migrate-basic.ron";
    let sweep = |extra: &[&str], json: &Path| {
        let mut args = vec!["sweep", scenario, "--seeds", "0..5", "--json", json.to_str().unwrap()];
        args.extend_from_slice(extra);
        let (ok, out) = sim(&args);
        assert!(ok, "{out}");
        out
    };
    let whole = sweep(&[], &all);
    sweep(&["--shard", "0/2"], &s0);
    sweep(&["--shard", "1/2"], &s1);
    let lines = std::fs::read_to_string(&all).unwrap();
    assert_eq!(lines.lines().count(), 5, "one JSON line per run:\n{lines}");
    assert!(
        lines.contains("\"trace_sha256\"") && lines.contains("igor-sim run scenarios/a1/migrate-basic.ron --seed 3")
    );

    let (ok, merged) = sim(&["merge", s0.to_str().unwrap(), s1.to_str().unwrap()]);
    assert!(ok, "{merged}");
    assert_eq!(table(&merged), table(&whole), "merged:\n{merged}\nunsharded:\n{whole}");

    let (ok, half) = sim(&["merge", s0.to_str().unwrap()]);
    assert!(!ok, "a missing shard fails the merge:\n{half}");
    assert!(half.contains("missing shard: 1/2 of seeds 0..5"), "{half}");
    let _ = std::fs::remove_dir_all(&dir);
}
