//! The one async adapter loop shared by every backend (in-memory network,
//! turmoil, libp2p): it feeds a [`Node`] incoming requests, replies and
//! timer wake-ups, and performs what the node asks (send requests, answer
//! requests). All protocol decisions stay in the node; this file only moves
//! bytes and waits.
//!
//! Time: the loop sleeps with `tokio::time` until the node's next deadline.
//! The node's [`Clock`] must advance with tokio's time: turmoil virtualises
//! tokio time (its simulated clock is what the simulator's `Clock` reads),
//! and tests use a paused tokio runtime with a clock that reads
//! `tokio::time::Instant`. With the real backend both are the system clock.
//! Wake-ups are polled in a fixed order (control, replies in request order,
//! incoming, timer) so a run is deterministic under a deterministic runtime.

use crate::env::{Clock, Disk, Entropy, Incoming, NetError, Network};
use crate::executor::Executor;
use crate::identity::Keypair;
use crate::node::{Command, Node, NodeEvent, Refused, RequestId};
use crate::units::{AgentId, Microcents};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Requests allowed in flight at once. Beyond it a new request fails at once
/// as `Unreachable` (it was never handed to the transport): a node cannot
/// be made to hold unbounded transport state.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 256;

/// Longest the loop sleeps when the node has nothing scheduled (it still
/// wakes on any message or control input).
pub const IDLE_SLEEP: Duration = Duration::from_secs(3600);

/// What the outside (operator, simulator) asks of a running node.
#[derive(Debug)]
pub enum Control {
    /// `key`: the agent key, required for a self-certifying id (it names
    /// its key); `None` draws a fresh one from the node's entropy. (Boxed:
    /// a key is large beside the other messages.)
    Deploy {
        agent: AgentId,
        key: Option<Box<Keypair>>,
        wasm: Vec<u8>,
        manifest: Vec<u8>,
        budget: Microcents,
    },
    Command(Command),
    /// A deploy or command whose caller wants the node's own answer: the
    /// `Result` of that very call and the events it emitted go back on
    /// `reply` (and the events also to the event stream, as always). The
    /// control socket uses this, so concurrent requests about one agent are
    /// each answered with their own outcome, never matched up afterwards by
    /// (command, agent) from the shared event stream.
    Ask {
        ask: Ask,
        reply: oneshot::Sender<Answer>,
    },
    /// Leave the loop (the node value stays usable, e.g. for inspection).
    Stop,
}

/// The synchronous part of an operator request ([`Control::Ask`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    Deploy { agent: AgentId, key: Option<Box<Keypair>>, wasm: Vec<u8>, manifest: Vec<u8>, budget: Microcents },
    Command(Command),
}

/// The node's answer to one [`Ask`]: what the call returned and the events
/// it emitted (in order; their `seq` orders them against later events, so a
/// caller waiting for an asynchronous completion skips anything older).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub result: Result<(), Refused>,
    pub events: Vec<NodeEvent>,
    /// Every event with `seq >= from_seq` was emitted by this call or later.
    pub from_seq: u64,
}

/// Forward events in order and remember the next sequence number.
fn forward(batch: Vec<NodeEvent>, events: &mpsc::UnboundedSender<NodeEvent>, next_seq: &mut u64) {
    for e in batch {
        *next_seq = (*next_seq).max(e.seq.saturating_add(1));
        let _ = events.send(e);
    }
}

type RequestFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, NetError>> + 'a>>;

enum Wake {
    Control(Option<Control>),
    Reply(usize, Result<Vec<u8>, NetError>),
    Incoming(Option<Incoming>),
    Timer,
}

/// Run `node` on `net` until [`Control::Stop`], the control channel closes,
/// the network shuts down or the node is shut down ([`Command::Shutdown`]).
/// Every event the node emits is forwarded to `events` in order (a closed
/// receiver is ignored). Refused commands are reported as events.
pub async fn run<X, D, C, R, N>(
    node: &mut Node<X, D, C, R>,
    net: &N,
    control: &mut mpsc::UnboundedReceiver<Control>,
    events: &mpsc::UnboundedSender<NodeEvent>,
) where
    X: Executor,
    D: Disk,
    C: Clock,
    R: Entropy,
    N: Network,
{
    run_observed(node, net, control, events, &|_| {}).await;
}

/// [`run`], telling `waits` before every wait the node's monotonic time
/// (ns) at which the loop wakes by itself (its timer) if nothing else wakes
/// it first. The simulator uses it to skip simulated time in which no node
/// has anything to do; it changes nothing in the loop.
pub async fn run_observed<X, D, C, R, N>(
    node: &mut Node<X, D, C, R>,
    net: &N,
    control: &mut mpsc::UnboundedReceiver<Control>,
    events: &mpsc::UnboundedSender<NodeEvent>,
    waits: &dyn Fn(u64),
) where
    X: Executor,
    D: Disk,
    C: Clock,
    R: Entropy,
    N: Network,
{
    let mut requests: Vec<(RequestId, RequestFuture<'_>)> = Vec::new();
    let mut accept: Pin<Box<dyn Future<Output = Option<Incoming>> + '_>> = Box::pin(net.accept());
    let mut next_seq = 0u64;
    loop {
        let deadline = node.advance();
        flush(node, net, &mut requests);
        forward(node.drain_events(), events, &mut next_seq);
        if node.is_stopped() {
            return;
        }
        let now = node.now().mono_ns;
        let wait = deadline.map_or(IDLE_SLEEP, |d| Duration::from_nanos(d.saturating_sub(now)));
        waits(now.saturating_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX)));
        // The one adapter loop: it waits (tokio time) for the node's deadline.
        #[allow(clippy::disallowed_methods)]
        let mut sleep = Box::pin(tokio::time::sleep(wait));
        let wake = poll_fn(|cx| {
            if let Poll::Ready(c) = control.poll_recv(cx) {
                return Poll::Ready(Wake::Control(c));
            }
            for (i, (_, f)) in requests.iter_mut().enumerate() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Reply(i, r));
                }
            }
            if let Poll::Ready(inc) = accept.as_mut().poll(cx) {
                return Poll::Ready(Wake::Incoming(inc));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Control(None) | Wake::Control(Some(Control::Stop)) => {
                forward(node.drain_events(), events, &mut next_seq);
                return;
            }
            Wake::Control(Some(Control::Deploy { agent, key, wasm, manifest, budget })) => {
                let _ = match key {
                    Some(key) => node.deploy_with_key(agent, *key, wasm, manifest, budget),
                    None => node.deploy(agent, wasm, manifest, budget),
                };
            }
            Wake::Control(Some(Control::Command(cmd))) => {
                let _ = node.command(cmd);
            }
            Wake::Control(Some(Control::Ask { ask, reply })) => {
                // Whatever is queued was caused by something else: out first.
                forward(node.drain_events(), events, &mut next_seq);
                let from_seq = next_seq;
                let result = match ask {
                    Ask::Deploy { agent, key: Some(key), wasm, manifest, budget } => {
                        node.deploy_with_key(agent, *key, wasm, manifest, budget)
                    }
                    Ask::Deploy { agent, key: None, wasm, manifest, budget } => {
                        node.deploy(agent, wasm, manifest, budget)
                    }
                    Ask::Command(cmd) => node.command(cmd),
                };
                let caused = node.drain_events();
                forward(caused.clone(), events, &mut next_seq);
                // Err = the asker gave up (timeout, closed socket).
                let _ = reply.send(Answer { result, events: caused, from_seq });
            }
            Wake::Reply(i, result) => {
                let (id, _) = requests.remove(i);
                node.handle_reply(id, result);
            }
            Wake::Incoming(None) => return,
            Wake::Incoming(Some(inc)) => {
                accept = Box::pin(net.accept());
                let reply = node.handle_request(&inc.from, &inc.body);
                // An empty reply means "no answer": close the stream, the
                // requester sees `Lost`.
                if !reply.is_empty() {
                    let _ = inc.reply.send(reply);
                }
            }
            Wake::Timer => {}
        }
    }
}

/// Hand every queued request to the transport (or fail it at once when too
/// many are in flight; that may queue more, hence the loop).
fn flush<'a, X, D, C, R, N>(node: &mut Node<X, D, C, R>, net: &'a N, requests: &mut Vec<(RequestId, RequestFuture<'a>)>)
where
    X: Executor,
    D: Disk,
    C: Clock,
    R: Entropy,
    N: Network,
{
    loop {
        let out = node.take_outbox();
        if out.is_empty() {
            return;
        }
        for o in out {
            if requests.len() >= MAX_IN_FLIGHT_REQUESTS {
                let reason = format!("{MAX_IN_FLIGHT_REQUESTS} requests already in flight");
                node.handle_reply(o.id, Err(NetError::Unreachable { peer: o.to, reason }));
            } else {
                let to = o.to;
                let body = o.body;
                requests.push((o.id, Box::pin(async move { net.request(&to, body).await })));
            }
        }
    }
}
