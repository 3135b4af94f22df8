//! Per-IP connection limits, a libp2p behaviour of our own: libp2p's
//! `connection_limits` counts only globally and per peer id, so one host
//! could otherwise hold every pending and established slot.

use super::*;

/// Per-IP limits on incoming connections (libp2p's `connection_limits`
/// counts only globally and per peer id): pending ones before the
/// handshake, established ones after it.
#[derive(Default)]
pub struct IpLimits {
    pending: BTreeMap<IpAddr, u32>,
    established: BTreeMap<IpAddr, u32>,
    /// Which IP each counted connection came from, and whether it is
    /// counted as established (else pending).
    conns: BTreeMap<ConnectionId, (IpAddr, bool)>,
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        libp2p::multiaddr::Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Why a connection was refused by [`IpLimits`].
#[derive(Debug, thiserror::Error)]
#[error("{what} from {ip}: limit of {limit} reached")]
pub struct IpLimitExceeded {
    what: &'static str,
    ip: IpAddr,
    limit: u32,
}

impl IpLimits {
    pub(super) fn release(&mut self, id: ConnectionId) {
        let Some((ip, established)) = self.conns.remove(&id) else { return };
        let counts = if established { &mut self.established } else { &mut self.pending };
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    /// Pending incoming connections from `ip` counted now.
    pub fn pending_from(&self, ip: &IpAddr) -> u32 {
        self.pending.get(ip).copied().unwrap_or(0)
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = libp2p::swarm::dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        let n = self.pending.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_INCOMING_PER_IP {
            let limit = MAX_PENDING_INCOMING_PER_IP;
            return Err(ConnectionDenied::new(IpLimitExceeded { what: "pending incoming connections", ip, limit }));
        }
        *n += 1;
        self.conns.insert(id, (ip, false));
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(id);
        let Some(ip) = ip_of(remote) else { return Ok(libp2p::swarm::dummy::ConnectionHandler) };
        let n = self.established.entry(ip).or_insert(0);
        if *n >= MAX_ESTABLISHED_INCOMING_PER_IP {
            let limit = MAX_ESTABLISHED_INCOMING_PER_IP;
            return Err(ConnectionDenied::new(IpLimitExceeded { what: "established incoming connections", ip, limit }));
        }
        *n += 1;
        self.conns.insert(id, (ip, true));
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: libp2p::core::Endpoint,
        _port_use: libp2p::core::transport::PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(libp2p::swarm::dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => self.release(c.connection_id),
            FromSwarm::ListenFailure(f) => self.release(f.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        std::task::Poll::Pending
    }
}
