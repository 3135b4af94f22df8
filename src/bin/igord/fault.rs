//! TEST ONLY: crash points for the kill tests of spec §6, reachable from
//! outside the process (`igord node --fault <point>`, a hidden flag, off by
//! default). [`FaultNet`] wraps the real network and, at the named point of
//! a migration, ends the process at once (exit code [`FAULT_EXIT_CODE`], no
//! final checkpoint, no reply): the same as a SIGKILL landing exactly there.
//! It never changes a message and makes no protocol decision; without a
//! fault point it forwards everything untouched.

use clap::ValueEnum;
use igor::env::{Incoming, NetError, Network};
use igor::units::NodeId;
use igor::wire::{Envelope, MessageKind};
use tokio::sync::oneshot;

/// Exit code of a process ended by an injected fault.
pub const FAULT_EXIT_CODE: i32 = 86;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FaultPoint {
    /// Target: a package arrives; exit before the node sees it.
    TargetExitOnPackage,
    /// Target: the node has judged, stored and assumed the package; exit
    /// before its confirmation leaves the process.
    TargetExitBeforeReply,
    /// Source: the package was sent and answered; exit before the node
    /// sees the answer (it stays HANDOFF_PENDING on disk).
    SourceExitAfterSend,
}

impl FaultPoint {
    fn name(self) -> &'static str {
        match self {
            FaultPoint::TargetExitOnPackage => "target-exit-on-package",
            FaultPoint::TargetExitBeforeReply => "target-exit-before-reply",
            FaultPoint::SourceExitAfterSend => "source-exit-after-send",
        }
    }
}

fn crash(point: FaultPoint) -> ! {
    eprintln!("igord: injected fault {}: exiting now", point.name());
    std::process::exit(FAULT_EXIT_CODE);
}

fn is_transfer(body: &[u8]) -> bool {
    Envelope::decode(body).is_ok_and(|e| e.kind() == MessageKind::AgentTransfer)
}

/// The real network, with an optional crash point.
pub struct FaultNet<'a, N> {
    inner: &'a N,
    fault: Option<FaultPoint>,
}

impl<'a, N: Network> FaultNet<'a, N> {
    pub fn new(inner: &'a N, fault: Option<FaultPoint>) -> Self {
        if let Some(f) = fault {
            tracing::warn!(fault = f.name(), "TEST ONLY fault point armed");
        }
        FaultNet { inner, fault }
    }
}

impl<N: Network> Network for FaultNet<'_, N> {
    async fn request(&self, to: &NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        let armed = self.fault == Some(FaultPoint::SourceExitAfterSend) && is_transfer(&body);
        let result = self.inner.request(to, body).await;
        if armed {
            crash(FaultPoint::SourceExitAfterSend);
        }
        result
    }

    async fn accept(&self) -> Option<Incoming> {
        let inc = self.inner.accept().await?;
        match self.fault {
            Some(p @ FaultPoint::TargetExitOnPackage) if is_transfer(&inc.body) => crash(p),
            Some(p @ FaultPoint::TargetExitBeforeReply) if is_transfer(&inc.body) => {
                // Hold the transport's reply channel; when the node answers
                // (or drops the answer), exit without passing it on.
                let (reply, answered) = oneshot::channel();
                let transport = inc.reply;
                tokio::spawn(async move {
                    let _ = answered.await;
                    let _keep_stream_open = transport;
                    crash(p);
                });
                Some(Incoming { from: inc.from, body: inc.body, reply })
            }
            _ => Some(inc),
        }
    }
}
