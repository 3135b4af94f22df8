//! Simulated twin of the libp2p adapter: the [`Network`] trait over
//! `turmoil::net` TCP. One request per connection: a length-prefixed frame
//! out, one frame back. Faults turmoil lacks (duplication, extra delay for
//! reordering, bit corruption) are injected here from a seeded RNG, per
//! node; partitions, holds and latency come from turmoil itself. Every frame
//! carries a checksum of its body, the model of the real transport's AEAD
//! tag (noise): a corrupted frame is rejected here, never handed to a node.
//! Must run inside a turmoil host.

use igor::env::{Incoming, NetError, Network, derive_seed};
use igor::units::NodeId;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot};
use turmoil::net::{TcpListener, TcpStream};

/// The port every node serves on.
pub const PORT: u16 = 7000;
/// Largest frame accepted: the env contract's limit, the same as the real
/// transport's (a package the real node accepts is never `TooLarge` here).
pub use igor::env::MAX_FRAME_BYTES;

/// Message faults on a node's outgoing requests, changed by the scenario
/// timeline while the simulation runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Probability that a request is also sent a second time (reply dropped).
    pub duplicate: f64,
    /// Extra delay drawn uniformly from this range (ms) before a request
    /// leaves: with several requests in flight this reorders them.
    pub extra_delay_ms: (u64, u64),
    /// Probability that a frame this node sends has one bit flipped.
    pub corrupt: f64,
}

/// What the twin did and saw, for the trace and coverage marks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames this node sent with a flipped bit.
    pub corrupted: u64,
    /// Frames this node received whose checksum did not match (rejected).
    pub rejected: u64,
    /// Requests this node sent twice.
    pub duplicated: u64,
}

/// Shared, mutable fault settings of one node plus its fault RNG.
pub struct FaultState {
    pub faults: LinkFaults,
    pub counters: NetCounters,
    /// Simulated times (ns) at which the twin's reordering delays end, one
    /// per request now waiting in one: timers the runner must not skip
    /// past (they live in tokio, which the runner cannot see).
    pub timers: Vec<u64>,
    rng: ChaCha20Rng,
}

/// A reordering delay in progress: registered in [`FaultState::timers`]
/// until the request moves on or is dropped (a crash drops it).
struct DelayTimer {
    faults: Rc<RefCell<FaultState>>,
    until_ns: u64,
}

impl Drop for DelayTimer {
    fn drop(&mut self) {
        let mut f = self.faults.borrow_mut();
        if let Some(i) = f.timers.iter().position(|t| *t == self.until_ns) {
            f.timers.swap_remove(i);
        }
    }
}

impl FaultState {
    pub fn new(seed: u64, node: &str) -> Self {
        FaultState {
            faults: LinkFaults::default(),
            counters: NetCounters::default(),
            timers: Vec::new(),
            rng: ChaCha20Rng::from_seed(derive_seed(seed, &format!("net/{node}"))),
        }
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn draw(&mut self) -> (bool, Duration) {
        let dup = self.faults.duplicate > 0.0 && self.unit() < self.faults.duplicate;
        let (lo, hi) = self.faults.extra_delay_ms;
        // Draws nothing without a range (the fault stream of a run without
        // reordering stays what it was).
        let delay = if hi > lo { uniform_inclusive(self.rng.next_u64(), lo, hi) } else { lo };
        if dup {
            self.counters.duplicated += 1;
        }
        (dup, Duration::from_millis(delay))
    }

    /// The bit to flip in a frame of `len` bytes, if this frame is corrupted.
    /// Draws nothing while corruption is off.
    fn corruption(&mut self, len: usize) -> Option<usize> {
        if self.faults.corrupt <= 0.0 || len == 0 || self.unit() >= self.faults.corrupt {
            return None;
        }
        self.counters.corrupted += 1;
        Some((self.rng.next_u64() % (len as u64 * 8)) as usize)
    }
}

/// A draw `r` mapped into `lo..=hi` (just `lo` when `hi <= lo`). No pair of
/// u64 bounds may panic: `0..=u64::MAX` has 2^64 values, one more than a u64
/// holds, so `hi - lo + 1` would wrap to 0 and `%` divide by it; that range
/// takes `r` as it is (a scenario's `Reorder` may name any u64).
pub(crate) fn uniform_inclusive(r: u64, lo: u64, hi: u64) -> u64 {
    if hi <= lo {
        return lo;
    }
    match (hi - lo).checked_add(1) {
        // lo + (r % span) <= lo + (hi - lo) = hi: no overflow.
        Some(span) => lo + r % span,
        // hi - lo == u64::MAX only for lo == 0, hi == u64::MAX.
        None => r,
    }
}

/// Checksum of a frame body: the first 8 bytes of its SHA-256.
fn checksum(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

/// A node's endpoint on the simulated network.
#[derive(Clone)]
pub struct SimNet {
    faults: Rc<RefCell<FaultState>>,
    inbox: Rc<Mutex<mpsc::UnboundedReceiver<Incoming>>>,
}

/// Frame: `len: u32 LE | checksum: 8 bytes | body`. The sender's fault
/// state may flip one bit of the body after the checksum is taken.
async fn write_frame(s: &mut TcpStream, body: &[u8], faults: &RefCell<FaultState>) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    let sum = checksum(body);
    let flip = faults.borrow_mut().corruption(body.len());
    s.write_all(&len.to_le_bytes()).await?;
    s.write_all(&sum).await?;
    match flip {
        Some(bit) => {
            let mut bad = body.to_vec();
            bad[bit / 8] ^= 1 << (bit % 8);
            s.write_all(&bad).await?;
        }
        None => s.write_all(body).await?,
    }
    s.flush().await
}

async fn read_frame(s: &mut TcpStream, faults: &RefCell<FaultState>) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!("frame of {len} bytes exceeds {MAX_FRAME_BYTES}")));
    }
    let mut sum = [0u8; 8];
    s.read_exact(&mut sum).await?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    if checksum(&body) != sum {
        faults.borrow_mut().counters.rejected += 1;
        return Err(std::io::Error::other("corrupted frame: checksum mismatch"));
    }
    Ok(body)
}

/// Serve one connection: read the request, hand it to the node, write back
/// whatever it replies. A dropped reply or a corrupted request closes the
/// stream (the requester sees a lost message).
async fn serve(
    mut stream: TcpStream,
    from: NodeId,
    tx: mpsc::UnboundedSender<Incoming>,
    faults: Rc<RefCell<FaultState>>,
) {
    let Ok(body) = read_frame(&mut stream, &faults).await else { return };
    let (reply, rx) = oneshot::channel();
    if tx.send(Incoming { from, body, reply }).is_err() {
        return;
    }
    if let Ok(answer) = rx.await {
        let _ = write_frame(&mut stream, &answer, &faults).await;
    }
}

impl SimNet {
    /// Bind the node's port and start accepting. Call inside the host.
    pub async fn bind(faults: Rc<RefCell<FaultState>>) -> std::io::Result<SimNet> {
        let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let server_faults = faults.clone();
        tokio::task::spawn_local(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let name = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| "unknown".to_string());
                let Ok(from) = NodeId::new(name) else { continue };
                tokio::task::spawn_local(serve(stream, from, tx.clone(), server_faults.clone()));
            }
        });
        Ok(SimNet { faults, inbox: Rc::new(Mutex::new(rx)) })
    }

    async fn send_once(to: &NodeId, body: &[u8], faults: &RefCell<FaultState>) -> Result<Vec<u8>, NetError> {
        let mut stream = TcpStream::connect((to.as_str(), PORT))
            .await
            .map_err(|e| NetError::Unreachable { peer: to.clone(), reason: e.to_string() })?;
        let lost = |e: std::io::Error| NetError::Lost { peer: to.clone(), reason: e.to_string() };
        write_frame(&mut stream, body, faults).await.map_err(lost)?;
        read_frame(&mut stream, faults).await.map_err(lost)
    }
}

impl Network for SimNet {
    async fn request(&self, to: &NodeId, body: Vec<u8>) -> Result<Vec<u8>, NetError> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(NetError::TooLarge { peer: to.clone(), len: body.len(), limit: MAX_FRAME_BYTES });
        }
        let (duplicate, delay) = self.faults.borrow_mut().draw();
        if !delay.is_zero() {
            let until_ns =
                crate::clock::sim_now_ns().saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
            self.faults.borrow_mut().timers.push(until_ns);
            let _timer = DelayTimer { faults: self.faults.clone(), until_ns };
            // Simulated time (turmoil virtualises tokio's clock).
            #[allow(clippy::disallowed_methods)]
            tokio::time::sleep(delay).await;
        }
        if duplicate {
            let (to, body, faults) = (to.clone(), body.clone(), self.faults.clone());
            tokio::task::spawn_local(async move {
                let _ = SimNet::send_once(&to, &body, &faults).await;
            });
        }
        match SimNet::send_once(to, &body, &self.faults).await {
            // "Unreachable" promises that nothing was delivered; with a
            // duplicate copy in flight that promise cannot be made.
            Err(NetError::Unreachable { peer, reason }) if duplicate => {
                Err(NetError::Lost { peer, reason: format!("{reason} (a duplicate copy may have been delivered)") })
            }
            other => other,
        }
    }

    async fn accept(&self) -> Option<Incoming> {
        self.inbox.lock().await.recv().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Reorder` with any u64 bound draws a delay instead of panicking
    /// (the whole-u64 range used to divide by `hi - lo + 1 == 0`).
    #[test]
    fn draw_never_panics_on_extreme_delay_bounds() {
        let bounds = [(0, u64::MAX), (1, u64::MAX), (0, u64::MAX - 1), (u64::MAX, u64::MAX), (u64::MAX, 0), (5, 5)];
        for (lo, hi) in bounds {
            let mut f = FaultState::new(7, "a");
            f.faults.extra_delay_ms = (lo, hi);
            for _ in 0..64 {
                let (_, d) = f.draw();
                let ms = u64::try_from(d.as_millis()).expect("built from a u64 of millis");
                assert!(ms >= lo.min(hi) && ms <= hi.max(lo), "delay {ms} outside {lo}..={hi}");
            }
        }
    }

    #[test]
    fn uniform_inclusive_stays_in_range_and_reaches_both_ends() {
        assert_eq!(uniform_inclusive(u64::MAX, 0, u64::MAX), u64::MAX);
        assert_eq!(uniform_inclusive(0, 0, u64::MAX), 0);
        // 1..=u64::MAX spans u64::MAX values: r = u64::MAX - 1 reaches the top.
        assert_eq!(uniform_inclusive(u64::MAX - 1, 1, u64::MAX), u64::MAX);
        assert_eq!(uniform_inclusive(u64::MAX, 1, u64::MAX), 1);
        assert_eq!(uniform_inclusive(3, 10, 12), 10);
        assert_eq!(uniform_inclusive(5, 10, 12), 12);
        assert_eq!(uniform_inclusive(9, 4, 4), 4);
        assert_eq!(uniform_inclusive(9, 8, 2), 8);
    }
}
