//! The wall-clock safety net of the sandbox, moved here with the other
//! pieces that touch the world: a thread that sleeps in real time. The
//! simulator never starts one (an interrupt is not deterministic).

use crate::sandbox::WALL_CLOCK_PERIOD;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use wasmtime::Engine;

/// The wall-clock safety net: a thread that advances the engine epoch every
/// [`WALL_CLOCK_PERIOD`], so a call running longer than
/// `wall_clock_epochs` periods ends in `WallClockTimeout`. Real backends
/// start one; the simulator never does (an interrupt is not deterministic).
/// Stops when dropped.
pub struct WallClockNet {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl WallClockNet {
    pub fn start(engine: Engine) -> WallClockNet {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A backend: a real thread on real time is the point (clippy.toml
        // bans both everywhere else).
        #[allow(clippy::disallowed_methods)]
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(WALL_CLOCK_PERIOD);
                engine.increment_epoch();
            }
        });
        WallClockNet { stop, handle: Some(handle) }
    }
}

impl Drop for WallClockNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
