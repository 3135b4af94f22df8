//! Two nodes in one process over the in-memory network, each run by the
//! shared driver loop, migrate an agent end to end. Time is tokio's paused
//! clock (auto-advancing when every task is idle), which the nodes read
//! through a small `Clock` adapter: the same arrangement turmoil gives the
//! simulator.

use igor::authority::AuthorityState;
use igor::driver::{self, Control};
use igor::env::Clock;
use igor::env::mem::{MemDisk, MemNet, SeededEntropy};
use igor::migration::Outcome;
use igor::node::fake::CounterExecutor;
use igor::node::{Command, Event, Node, NodeConfig, NodeEvent};
use igor::units::{AgentId, Microcents, NodeId};
use std::time::Duration;
use tokio::sync::mpsc;

/// Reads tokio's (paused, virtual) time.
#[derive(Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn mono_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    fn unix_ns(&self) -> i64 {
        1_700_000_000_000_000_000 + self.mono_ns() as i64
    }
}

type TestNode = Node<CounterExecutor, MemDisk, TokioClock, SeededEntropy>;

fn node(id: &NodeId, peers: &[NodeId], clock: &TokioClock) -> TestNode {
    let mut cfg = NodeConfig::new(id.clone());
    cfg.peers = peers.to_vec();
    cfg.checkpoint_interval_ns = 2_000_000_000;
    let entropy = SeededEntropy::derived(42, id.as_str());
    Node::open(cfg, MemDisk::new(), clock.clone(), entropy, CounterExecutor::new(Microcents(1_000)))
}

async fn wait_for(
    events: &mut mpsc::UnboundedReceiver<NodeEvent>,
    log: &mut Vec<NodeEvent>,
    f: impl Fn(&NodeEvent) -> bool,
) {
    loop {
        let e = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .expect("event within 120 s of simulated time")
            .expect("event stream open");
        let done = f(&e);
        log.push(e);
        if done {
            return;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn two_nodes_migrate_an_agent_end_to_end_over_memnet() {
    let clock = TokioClock { origin: tokio::time::Instant::now() };
    let (a, b) = (NodeId::new("alpha").unwrap(), NodeId::new("beta").unwrap());
    let peers = [a.clone(), b.clone()];
    let net = MemNet::new();
    let (ea, eb) = (net.endpoint(a.clone()), net.endpoint(b.clone()));
    let (mut na, mut nb) = (node(&a, &peers, &clock), node(&b, &peers, &clock));
    let (ctl_a, mut rx_a) = mpsc::unbounded_channel();
    let (ctl_b, mut rx_b) = mpsc::unbounded_channel();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let agent = AgentId::new("counter").unwrap();

    let script = async {
        let mut log = Vec::new();
        let manifest = br#"{"migration_policy":{"enabled":true}}"#.to_vec();
        ctl_a
            .send(Control::Deploy {
                agent: agent.clone(),
                key: None,
                wasm: b"counter".to_vec(),
                manifest,
                budget: Microcents(1_000_000),
            })
            .unwrap();
        // Let alpha tick and checkpoint for a while.
        wait_for(&mut ev_rx, &mut log, |e| {
            e.node == a && matches!(&e.event, Event::CheckpointCommitted { tick, .. } if tick.0 >= 3)
        })
        .await;
        ctl_a.send(Control::Command(Command::Migrate { agent: agent.clone(), to: b.clone() })).unwrap();
        wait_for(&mut ev_rx, &mut log, |e| {
            e.node == a && matches!(&e.event, Event::MigrationFinished { outcome: Outcome::Completed, .. })
        })
        .await;
        // Beta ticks the agent under the new epoch.
        wait_for(&mut ev_rx, &mut log, |e| e.node == b && matches!(&e.event, Event::TickFinished { .. })).await;
        #[allow(clippy::disallowed_methods)] // a test: paused tokio time stands in for the clock
        tokio::time::sleep(Duration::from_secs(5)).await;
        ctl_a.send(Control::Stop).unwrap();
        ctl_b.send(Control::Stop).unwrap();
        log
    };
    let (_, _, mut log) = tokio::join!(
        driver::run(&mut na, &ea, &mut rx_a, &ev_tx),
        driver::run(&mut nb, &eb, &mut rx_b, &ev_tx),
        script
    );
    while let Ok(e) = ev_rx.try_recv() {
        log.push(e);
    }

    let va = na.agent(&agent).unwrap();
    let vb = nb.agent(&agent).unwrap();
    assert_eq!(va.state, AuthorityState::Retired);
    assert_eq!(vb.state, AuthorityState::ActiveOwner);
    assert_eq!(vb.epoch.major, 2);
    assert!(!na.may_tick(&agent) && nb.may_tick(&agent));
    // Every tick on alpha happened before its handoff; none after.
    let handoff_at = log.iter().position(|e| e.node == a && matches!(e.event, Event::HandoffStarted { .. })).unwrap();
    assert!(!log[handoff_at..].iter().any(|e| e.node == a && matches!(e.event, Event::TickStarted { .. })));
    // Budget: the package carried exactly the handoff checkpoint's budget.
    let sent = log.iter().find_map(|e| match &e.event {
        Event::PackageSent { budget, tick, .. } => Some((*budget, *tick)),
        _ => None,
    });
    let adopted = log.iter().find_map(|e| match &e.event {
        Event::CheckpointAdopted { budget, tick, .. } => Some((*budget, *tick)),
        _ => None,
    });
    assert_eq!(sent, adopted);
    assert!(vb.budget < sent.unwrap().0, "beta kept charging");
    for line in log.iter().map(|e| e.to_string()) {
        assert!(!line.contains('\n'), "one line per event: {line}");
    }
}
