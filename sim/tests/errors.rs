//! Scenario errors a user can act on: a validation error points at the
//! value (file:line:col, field named), a missing wasm names the scenario
//! file and the path tried, and a sweep over a directory with a bad file
//! reports it, still runs the others and exits non-zero.
#![allow(clippy::disallowed_methods)] // a CLI test: writes scenario files for the binary to read

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_igor-sim"))
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("igor-sim-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn counter() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agents/counter.wat").canonicalize().unwrap().display().to_string()
}

fn scenario(wasm: &str, node: &str) -> String {
    format!(
        r#"Scenario(
    name: "small",
    seed: 1,
    duration_s: 3,
    nodes: [(name: "a")],
    agents: [(name: "counter", wasm: "{wasm}", budget_microcents: 1_000_000, node: "{node}")],
    expect: (verdict: Pass, liveness: None),
)
"#
    )
}

#[test]
fn a_validation_error_names_file_line_column_and_field() {
    let dir = scratch("validate");
    let file = dir.join("bad-node.ron");
    std::fs::write(&file, scenario(&counter(), "nowhere")).unwrap();
    let out = bin().arg("run").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let col = scenario(&counter(), "nowhere").lines().nth(5).unwrap().find("\"nowhere\"").unwrap() + 1;
    let want = format!("{}:6:{col}: agents[0].node: unknown node \"nowhere\"", file.display());
    assert!(err.contains(&want), "{err}\nwanted: {want}");
}

#[test]
fn a_missing_wasm_names_the_scenario_file_and_the_path_tried() {
    let dir = scratch("wasm");
    let file = dir.join("no-wasm.ron");
    std::fs::write(&file, scenario("missing/nope.wat", "a")).unwrap();
    let out = bin().arg("run").arg(&file).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&file.display().to_string()), "names the scenario file: {err}");
    assert!(err.contains(&dir.join("missing/nope.wat").display().to_string()), "names the path tried: {err}");
    assert!(err.contains("agent counter"), "names the agent: {err}");
}

#[test]
fn sweep_reports_a_bad_file_runs_the_others_and_fails_at_the_end() {
    let dir = scratch("sweep");
    std::fs::write(dir.join("good.ron"), scenario(&counter(), "a")).unwrap();
    let typo = scenario(&counter(), "a").replace("duration_s", "duraton_s");
    std::fs::write(dir.join("typo.ron"), typo).unwrap();
    let out = bin().arg("sweep").arg(&dir).args(["--seeds", "0..2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stdout}{stderr}");
    let good = dir.join("good.ron").display().to_string();
    assert!(stdout.contains(&format!("| {good} | 2 | 2 | 0 | - |")), "the good file still ran: {stdout}");
    let typo_at = format!("{}:4:", dir.join("typo.ron").display());
    assert!(stdout.contains(&format!("not run: {typo_at}")), "the bad file is reported: {stdout}");
    assert!(stderr.contains(&typo_at), "{stderr}");
}
