//! Schema glue: from the scenario's node and agent specs to what a host
//! boots with (a validated `NodeConfig`, the agents' wasm and manifest
//! bytes). Reads the scenario's agent files, nothing else.

use super::RunError;
use crate::scenario::{NodeSpec, Scenario};
use igor::node::NodeConfig;
use igor::units::{AgentId, Microcents, NodeId};
use std::path::Path;

/// An agent's bytes, read before the simulation starts.
#[derive(Clone)]
pub(super) struct AgentBytes {
    pub(super) id: AgentId,
    pub(super) wasm: Vec<u8>,
    pub(super) manifest: Vec<u8>,
    pub(super) budget: Microcents,
    pub(super) node: String,
}

pub(super) fn load_agents(scenario: &Scenario, base: &Path) -> Result<Vec<AgentBytes>, RunError> {
    #[allow(clippy::disallowed_methods)] // the runner is a backend: it reads the scenario's files
    let read = |agent: &str, rel: &str| {
        let path = base.join(rel);
        std::fs::read(&path).map_err(|e| RunError::AgentFile {
            scenario: scenario.name.clone(),
            agent: agent.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    scenario
        .agents
        .iter()
        .map(|a| {
            Ok(AgentBytes {
                // Validated by Scenario::validate.
                id: AgentId::new(a.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?,
                // Agents travel as wasm binaries: WAT is compiled to binary
                // once here, so every node hashes the same bytes.
                wasm: igor::sandbox::wasm_binary(&read(&a.name, &a.wasm)?).map_err(|e| RunError::AgentFile {
                    scenario: scenario.name.clone(),
                    agent: a.name.clone(),
                    path: base.join(&a.wasm).display().to_string(),
                    reason: e.to_string(),
                })?,
                manifest: match &a.manifest {
                    Some(m) => read(&a.name, m)?,
                    // No manifest file: an agent with no capabilities.
                    None => br#"{"capabilities": {}}"#.to_vec(),
                },
                budget: Microcents(a.budget_microcents),
                node: a.node.clone(),
            })
        })
        .collect()
}

pub(super) fn node_config(spec: &NodeSpec, all: &[NodeSpec]) -> Result<NodeConfig, RunError> {
    let id = NodeId::new(spec.name.clone()).map_err(|e| RunError::Sim(e.to_string()))?;
    let mut cfg = NodeConfig::new(id);
    cfg.price_per_second = Microcents(spec.price_microcents);
    let ms = |v: u64| v.saturating_mul(1_000_000);
    if let Some(d) = spec.lease_duration_ms {
        cfg.lease.duration_ns = ms(d);
        cfg.lease.renew_before_ns = ms(d) / 2;
    }
    if let Some(g) = spec.lease_grace_ms {
        cfg.lease.grace_ns = ms(g);
    }
    if let Some(t) = spec.tick_interval_ms {
        cfg.tick_idle_ns = ms(t);
    }
    if let Some(c) = spec.checkpoint_interval_ms {
        cfg.checkpoint_interval_ns = ms(c);
    }
    cfg.unsafe_self_recover_on_lease_expiry = spec.unsafe_self_recover;
    crate::adversary::configure(&mut cfg, spec, all);
    cfg.peers = all.iter().filter(|n| n.name != spec.name).filter_map(|n| NodeId::new(n.name.clone()).ok()).collect();
    cfg.validate().map_err(|e| RunError::Sim(format!("node {}: {e}", spec.name)))?;
    Ok(cfg)
}
