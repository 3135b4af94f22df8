//! `igord`: the Igor node binary. Subcommands inspect and verify checkpoint
//! files, run agents locally, and (later) run a libp2p node. This binary is a
//! backend: it may touch the filesystem and the clock directly.
#![allow(clippy::disallowed_methods)]

mod audit;
mod client;
mod fault;
mod inspect;
mod node;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Igor node: run, inspect and verify portable, checkpointed WASM agents.
///
/// Exit codes: 0 success / valid / completed, 1 invalid input, refused or
/// failed (the reason is printed), 2 usage or I/O error.
#[derive(Parser)]
#[command(name = "igord", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the fields of one checkpoint file (v2, v3 or v4).
    ///
    /// Example: igord inspect igor-data/history/counter/0000000004.ckpt --json
    Inspect(inspect::InspectArgs),
    /// Verify a checkpoint history: every signature and every prev-hash link.
    ///
    /// Give one or more directories of .ckpt files (e.g. the history of the
    /// same agent on two nodes); they are merged by tick and must form one
    /// chain. Prints the first broken link and exits 1 if they do not.
    ///
    /// Example: igord verify nodeA/history/counter nodeB/history/counter
    Verify(inspect::VerifyArgs),
    /// Audit a history by replay: re-run every recorded tick with the agent
    /// module and check each checkpoint's state and budget and every tick's
    /// charge. Exits 1 naming the first divergence or tampering.
    ///
    /// Example: igord audit nodeA/history/counter nodeB/history/counter
    Audit(audit::AuditArgs),
    /// Run an agent locally from scratch; Ctrl-C commits a final checkpoint.
    ///
    /// Example: igord run --budget 1 --ticks 10 -v agents/counter.wat
    Run(run::RunArgs),
    /// Continue an agent from the head checkpoint of its history.
    ///
    /// Example: igord resume --checkpoint igor-data/history/counter/0000000010.ckpt --wasm agents/counter.wat
    Resume(run::ResumeArgs),
    /// Run a node: libp2p on --listen, agents in --data-dir, a control socket for the commands below.
    ///
    /// Example: igord node --listen /ip4/127.0.0.1/tcp/4001 --peer /ip4/127.0.0.1/tcp/4002/p2p/12D3…
    Node(node::NodeArgs),
    /// List the agents of a running node (state, epoch, ticks, budget, DID).
    Agents(client::AgentsArgs),
    /// Deploy an agent on a running node.
    ///
    /// Example: igord deploy agents/counter.wat --budget 1 --data-dir igor-data
    Deploy(client::DeployArgs),
    /// Migrate an agent from a running node to another node.
    ///
    /// Example: igord migrate counter --to /ip4/127.0.0.1/tcp/4002/p2p/12D3… --wait
    Migrate(client::MigrateArgs),
    /// Recover a RECOVERY_REQUIRED agent on a running node from its newest checkpoint.
    Recover(client::RecoverArgs),
    /// Retire an agent on a running node: final checkpoint, then RETIRED (it ends there).
    ///
    /// Example: igord retire counter --data-dir igor-data
    Retire(client::RetireArgs),
    /// Stop a running node: final checkpoint of every agent, then exit.
    Stop(client::StopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Verify(args) => inspect::verify(&args),
        Command::Audit(args) => audit::audit(&args),
        Command::Run(args) => run::run(args).map(|c| c as u8),
        Command::Resume(args) => run::resume(args).map(|c| c as u8),
        Command::Node(args) => node::node(args).map(|c| c as u8),
        Command::Agents(args) => client::agents(args).map(|c| c as u8),
        Command::Deploy(args) => client::deploy(args).map(|c| c as u8),
        Command::Migrate(args) => client::migrate(args).map(|c| c as u8),
        Command::Recover(args) => client::recover(args).map(|c| c as u8),
        Command::Retire(args) => client::retire(args).map(|c| c as u8),
        Command::Stop(args) => client::stop(args).map(|c| c as u8),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("igord: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
