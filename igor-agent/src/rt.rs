//! The glue behind [`crate::export!`] (not a public API): the agent's
//! storage, the ABI entry points, and on wasm32 the allocator and panic
//! handler. Wasm is single-threaded, so the slot is a plain cell.
//!
//! **Canonical heap (RE-3, metering).** A node replays a tick on a fresh
//! instance resumed from the tick's starting state, and must get the same
//! fuel (cost) as the live tick. Fuel depends on the heap: which free list
//! an allocation hits, a `Vec`'s spare capacity, a map's node layout. So
//! the heap at the start of every tick is made a function of the state
//! bytes alone: after `agent_init`, after `agent_resume` and at the end of
//! every tick, the runtime encodes the agent, resets the allocator to
//! empty (the old heap is abandoned, nothing is dropped), copies the bytes
//! to the first block and decodes the agent after them. The live instance
//! and a replaying one then run each tick from the same heap, whatever ran
//! before (earlier ticks, checkpoints). `agent_checkpoint` returns those
//! bytes and allocates nothing. The cost: one encode and decode of the
//! state per tick, charged to the tick.
//!
//! A resume that fails (another schema, corrupt bytes) traps inside
//! `agent_resume`: the node refuses to load the agent (spec §1: a lifecycle
//! failure), and nothing ever runs on misread state.

#[cfg(target_arch = "wasm32")]
use crate::{Agent, state};
use core::cell::UnsafeCell;

/// Where the exported agent lives between calls (used on wasm32 only).
#[doc(hidden)]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub struct Slot<A> {
    inner: UnsafeCell<Inner<A>>,
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct Inner<A> {
    agent: Option<A>,
    /// The state bytes of `agent`: the first block of the canonical heap.
    saved: (usize, usize),
    fingerprint: u64,
}

// SAFETY: wasm32 guests are single-threaded; natively a Slot is never shared
// (the export macro is wasm-only).
unsafe impl<A> Sync for Slot<A> {}

impl<A> Default for Slot<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A> Slot<A> {
    /// An empty slot.
    pub const fn new() -> Self {
        Slot { inner: UnsafeCell::new(Inner { agent: None, saved: (0, 0), fingerprint: 0 }) }
    }
}

#[cfg(target_arch = "wasm32")]
impl<A: Agent> Slot<A> {
    #[allow(clippy::mut_from_ref)]
    fn inner(&self) -> &mut Inner<A> {
        // SAFETY: single-threaded, and no entry point re-enters another.
        unsafe { &mut *self.inner.get() }
    }

    /// Rebuild the heap from `len` state bytes at `src` (anywhere in the
    /// old heap): reset the allocator, move the bytes to the first block,
    /// decode the agent after them. Traps if they do not decode.
    fn rebuild(&self, src: usize, len: usize) {
        let inner = self.inner();
        // Abandon the old heap: dropping would run history-dependent code.
        if let Some(old) = inner.agent.take() {
            core::mem::forget(old);
        }
        wasm_runtime::reset();
        let layout = bytes_layout(len);
        // SAFETY: non-zero size; the allocator is empty, so this is the first block.
        let dst = unsafe { alloc::alloc::alloc(layout) } as usize;
        if dst == 0 {
            core::arch::wasm32::unreachable()
        }
        // SAFETY: `src` holds `len` bytes; the ranges may overlap (memmove).
        unsafe { core::ptr::copy(src as *const u8, dst as *mut u8, len) };
        // SAFETY: just written.
        let bytes = unsafe { core::slice::from_raw_parts(dst as *const u8, len) };
        match state::decode_with::<A>(bytes, A::VERSION, inner.fingerprint) {
            Ok(agent) => inner.agent = Some(agent),
            // Refuse loudly: never tick on state from another schema.
            Err(_) => core::arch::wasm32::unreachable(),
        }
        inner.saved = (dst, len);
    }

    /// Encode the agent and rebuild the heap from the bytes.
    fn canonicalize(&self) {
        let inner = self.inner();
        let Some(agent) = inner.agent.as_ref() else { core::arch::wasm32::unreachable() };
        let Ok(bytes) = state::encode_with(agent, A::VERSION, inner.fingerprint) else {
            core::arch::wasm32::unreachable()
        };
        let (src, len) = (bytes.as_ptr() as usize, bytes.len());
        core::mem::forget(bytes);
        self.rebuild(src, len);
    }

    /// `agent_init`.
    pub fn init(&self) {
        let inner = self.inner();
        inner.fingerprint = state::fingerprint::<A>();
        inner.agent = Some(A::init());
        self.canonicalize();
    }

    /// `agent_tick`: the agent's tick, then the canonical heap for the next.
    pub fn tick(&self) -> i32 {
        let Some(agent) = self.inner().agent.as_mut() else { core::arch::wasm32::unreachable() };
        let mut host = crate::host::WasmHost;
        let code = agent.tick(&mut crate::Ctx::new(&mut host)).code();
        self.canonicalize();
        code
    }

    /// `agent_checkpoint`: the length of the current state bytes.
    pub fn checkpoint(&self) -> i32 {
        self.inner().saved.1 as i32
    }

    /// `agent_checkpoint_ptr`.
    pub fn checkpoint_ptr(&self) -> i32 {
        self.inner().saved.0 as i32
    }

    /// `agent_resume`.
    ///
    /// # Safety
    /// `(ptr, len)` must hold `len` initialized bytes (the node's `malloc` buffer).
    pub unsafe fn resume(&self, ptr: i32, len: i32) {
        self.rebuild(ptr as u32 as usize, len.max(0) as usize);
    }
}

#[cfg(target_arch = "wasm32")]
fn bytes_layout(len: usize) -> core::alloc::Layout {
    core::alloc::Layout::from_size_align(len.max(1), 8).unwrap_or(core::alloc::Layout::new::<u64>())
}

/// `malloc`: a buffer for the node to place state in before `agent_resume`
/// (in the heap that `agent_resume` then abandons).
#[cfg(target_arch = "wasm32")]
pub fn malloc(len: i32) -> i32 {
    // SAFETY: non-zero size layout.
    unsafe { alloc::alloc::alloc(bytes_layout(len.max(0) as usize)) as i32 }
}

#[cfg(target_arch = "wasm32")]
mod wasm_runtime {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const PAGE: usize = 65536;
    /// Blocks are carved aligned to their size, up to this.
    const MAX_ALIGN: usize = 4096;

    /// Power-of-two size classes with a free list each, carved upwards from
    /// the heap base; resettable (see the module docs). The carving limit
    /// is logical (`end`, reset with the heap) so that the instructions run
    /// never depend on how far linear memory grew before: when `end` moves,
    /// memory grows by what is missing, possibly zero pages, always with
    /// the same instructions.
    struct Pow2 {
        st: UnsafeCell<St>,
    }
    struct St {
        base: usize,
        next: usize,
        end: usize,
        free: [usize; 32],
    }
    // SAFETY: wasm32 is single-threaded.
    unsafe impl Sync for Pow2 {}

    #[global_allocator]
    static ALLOC: Pow2 = Pow2 { st: UnsafeCell::new(St { base: 0, next: 0, end: 0, free: [0; 32] }) };

    fn st() -> &'static mut St {
        // SAFETY: single-threaded; callers do not hold two at once.
        let st = unsafe { &mut *ALLOC.st.get() };
        if st.base == 0 {
            st.base = core::arch::wasm32::memory_size(0) * PAGE;
            st.next = st.base;
            st.end = st.base;
        }
        st
    }

    /// Forget every allocation: the heap starts empty at its base.
    pub(super) fn reset() {
        let st = st();
        st.next = st.base;
        st.end = st.base;
        st.free = [0; 32];
    }

    fn class(layout: Layout) -> Option<(usize, usize)> {
        if layout.align() > MAX_ALIGN {
            return None;
        }
        let size = layout.size().max(layout.align()).max(8).checked_next_power_of_two()?;
        Some((size, size.trailing_zeros() as usize))
    }

    unsafe impl GlobalAlloc for Pow2 {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let Some((size, c)) = class(layout) else { return core::ptr::null_mut() };
            let st = st();
            if st.free[c] != 0 {
                let p = st.free[c];
                // SAFETY: a freed block stores the next free block in its first word.
                st.free[c] = unsafe { *(p as *const usize) };
                return p as *mut u8;
            }
            let align = size.min(MAX_ALIGN);
            let Some(start) = st.next.checked_add(align - 1).map(|v| v & !(align - 1)) else {
                return core::ptr::null_mut();
            };
            let Some(stop) = start.checked_add(size) else { return core::ptr::null_mut() };
            if stop > st.end {
                let Some(new_end) = stop.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1)) else {
                    return core::ptr::null_mut();
                };
                let missing = (new_end / PAGE).saturating_sub(core::arch::wasm32::memory_size(0));
                if core::arch::wasm32::memory_grow(0, missing) == usize::MAX {
                    return core::ptr::null_mut();
                }
                st.end = new_end;
            }
            st.next = stop;
            start as *mut u8
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some((_, c)) = class(layout) else { return };
            let st = st();
            // SAFETY: the block is ours again; its first word links the list.
            unsafe { *(ptr as *mut usize) = st.free[c] };
            st.free[c] = ptr as usize;
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // A panic traps the tick; the node keeps the last committed state.
        core::arch::wasm32::unreachable()
    }
}
