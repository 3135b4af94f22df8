//! Guest SDK for Igor agents (spec `IGOR.md` §1 ABI, §2 hostcalls).
//!
//! An agent is a Rust type that implements [`Agent`] and is serde
//! (de)serializable; [`export!`] turns it into a wasm module with the whole
//! ABI (`agent_init`, `agent_tick`, `agent_checkpoint`,
//! `agent_checkpoint_ptr`, `agent_resume`, `malloc`). Its state is the value
//! itself, encoded by [`state`] with a version header: a checkpoint written
//! by a different state struct is refused with
//! [`StateError::VersionMismatch`], never misread. Hostcalls go through
//! [`Ctx`], one typed method per `igor.*` import, each returning a `Result`
//! with a named error. [`intent`] keeps side effects that must not be
//! lost or repeated unnoticed. [`mock`] runs the same agent natively for
//! `cargo test`.
//!
//! Deterministic by construction: the crate is `no_std`; time and
//! randomness exist only through [`Ctx::now_ns`] and [`Ctx::random`],
//! whose answers the node records in the tick's event log (replay, RE-3).
//!
//! ```
//! use igor_agent::{Agent, Ctx, Tick};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Default)]
//! pub struct Counter { n: u64 }
//!
//! impl Agent for Counter {
//!     fn init() -> Self { Counter::default() }
//!     fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick {
//!         self.n += 1;
//!         cx.log("tick");
//!         Tick::Idle
//!     }
//! }
//! igor_agent::export!(Counter);
//!
//! // Natively, the mock host runs it through the same ABI path:
//! let mut h = igor_agent::mock::Harness::<Counter>::new(igor_agent::mock::MockHost::new());
//! h.tick();
//! let saved = h.checkpoint().unwrap();
//! let mut again = igor_agent::mock::Harness::<Counter>::new(igor_agent::mock::MockHost::new());
//! again.resume(&saved).unwrap();
//! assert_eq!(again.agent().n, 1);
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(not(target_arch = "wasm32"))]
extern crate std;

mod ctx;
mod host;
pub mod intent;
#[cfg(not(target_arch = "wasm32"))]
pub mod mock;
#[doc(hidden)]
pub mod rt;
mod shape;
pub mod state;

pub use ctx::{Ctx, HttpError, KvError, PayError, RandError, ReceiptError, Request, Response};
pub use host::Host;
pub use state::StateError;

/// Re-exported so agents need no direct serde dependency for the derives.
///
/// ```
/// #[derive(igor_agent::serde::Serialize, igor_agent::serde::Deserialize)]
/// #[serde(crate = "igor_agent::serde")]
/// struct S { n: u32 }
/// ```
pub use serde;

/// What a tick tells the node about pacing (spec §1: `agent_tick` returns
/// non-zero when more work is pending, and the node ticks again sooner).
///
/// ```
/// use igor_agent::Tick;
/// assert_eq!(Tick::Idle.code(), 0);
/// assert_eq!(Tick::MoreWork.code(), 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing pending: tick again at the normal cadence.
    Idle,
    /// More work pending: tick again on the fast path.
    MoreWork,
}

impl Tick {
    /// The `agent_tick` return value.
    ///
    /// ```
    /// assert_eq!(igor_agent::Tick::MoreWork.code(), 1);
    /// ```
    pub fn code(self) -> i32 {
        match self {
            Tick::Idle => 0,
            Tick::MoreWork => 1,
        }
    }
}

/// An agent: its value is its state, checkpointed through serde.
///
/// * [`Agent::init`] builds the state of a brand-new agent (`agent_init`;
///   the world is invisible there, so it takes no context).
/// * [`Agent::tick`] does one step (`agent_tick`).
/// * Checkpoint and resume are the versioned [`state`] encoding of `Self`;
///   [`Agent::VERSION`] names the schema. Change the struct's fields and the
///   fingerprint changes by itself; change only the *meaning* of a field and
///   bump `VERSION`. Either way an old checkpoint is refused on resume.
///
/// ```
/// use igor_agent::{Agent, Ctx, Tick};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Pinger { pings: u32 }
///
/// impl Agent for Pinger {
///     const VERSION: u32 = 2; // pings now counts ticks, not seconds
///     fn init() -> Self { Pinger { pings: 0 } }
///     fn tick(&mut self, _cx: &mut Ctx<'_>) -> Tick {
///         self.pings += 1;
///         if self.pings % 10 == 0 { Tick::MoreWork } else { Tick::Idle }
///     }
/// }
/// ```
pub trait Agent: serde::Serialize + serde::de::DeserializeOwned {
    /// Schema version written into every checkpoint (default 1).
    const VERSION: u32 = 1;

    /// The state of a new agent (called by `agent_init`, before any resume).
    fn init() -> Self;

    /// One step. Hostcalls go through `cx`; panicking traps the tick (the
    /// node keeps the last committed state).
    fn tick(&mut self, cx: &mut Ctx<'_>) -> Tick;
}

/// Export an [`Agent`] type as the wasm ABI of spec §1.
///
/// On `wasm32` this defines `agent_init`, `agent_tick`, `agent_checkpoint`,
/// `agent_checkpoint_ptr`, `agent_resume` and `malloc`; natively it defines
/// nothing (a native `malloc` would replace the C allocator), and the agent
/// is driven by [`mock::Harness`] instead. Use it once per crate.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Quiet;
/// impl igor_agent::Agent for Quiet {
///     fn init() -> Self { Quiet }
///     fn tick(&mut self, _: &mut igor_agent::Ctx<'_>) -> igor_agent::Tick { igor_agent::Tick::Idle }
/// }
/// igor_agent::export!(Quiet);
/// ```
#[macro_export]
macro_rules! export {
    ($agent:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        pub mod __igor_agent_exports {
            #[allow(unused_imports)]
            use super::*;

            static SLOT: $crate::rt::Slot<$agent> = $crate::rt::Slot::new();

            #[unsafe(no_mangle)]
            pub extern "C" fn agent_init() {
                SLOT.init()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn agent_tick() -> i32 {
                SLOT.tick()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn agent_checkpoint() -> i32 {
                SLOT.checkpoint()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn agent_checkpoint_ptr() -> i32 {
                SLOT.checkpoint_ptr()
            }

            /// # Safety
            /// Called by the node with a buffer it obtained from `malloc`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn agent_resume(ptr: i32, len: i32) {
                // SAFETY: the node passes the (ptr, len) it got from `malloc`.
                unsafe { SLOT.resume(ptr, len) }
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn malloc(len: i32) -> i32 {
                $crate::rt::malloc(len)
            }
        }
    };
}
