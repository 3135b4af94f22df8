//! docs/agents.md runs as written (issue 14: "every command in it runs in
//! CI"): each ```sh block is one bash script (`set -euo pipefail`), run
//! from the repository root with `igor-sim` and `igord` first on the PATH
//! and a separate cargo target dir for the cargo commands it contains.
//!
//! `igord` is the binary built beside `igor-sim` (`cargo test --workspace`
//! builds both; with `-p igor-sim` alone, build it first with
//! `cargo build -p igor --bin igord`): a nested build in the same target
//! dir would wait for the lock the outer `cargo test` holds.
#![allow(clippy::disallowed_methods)] // test: reads the doc, runs processes

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ```sh blocks of a markdown text, in order.
fn sh_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "unclosed ```sh block");
    blocks
}

#[test]
fn sh_blocks_are_found() {
    let md = "a\n```sh\necho 1\necho 2\n```\n```rust\nx\n```\n```sh\nls\n```\n";
    assert_eq!(sh_blocks(md), ["echo 1\necho 2\n", "ls\n"]);
}

#[test]
fn every_command_in_docs_agents_md_runs() {
    let md = std::fs::read_to_string(root().join("docs/agents.md")).expect("docs/agents.md");
    let blocks = sh_blocks(&md);
    assert!(blocks.len() >= 5, "docs/agents.md has {} sh blocks", blocks.len());
    let sim = PathBuf::from(env!("CARGO_BIN_EXE_igor-sim"));
    let bin_dir = sim.parent().expect("bin dir").to_path_buf();
    assert!(
        bin_dir.join("igord").exists(),
        "{} missing: build it first (`cargo build -p igor --bin igord`, or run `cargo test --workspace`)",
        bin_dir.join("igord").display()
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("agent-builds");
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    for (i, block) in blocks.iter().enumerate() {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -euo pipefail\n{block}"))
            .current_dir(root())
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "docs/agents.md sh block {} failed ({}):\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            i + 1,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
