//! The glue behind [`crate::export!`] (not a public API): the agent's
//! storage, the ABI entry points, and on wasm32 the allocator and panic
//! handler. Wasm is single-threaded, so the slot is a plain cell.
//!
//! A resume that fails (another schema, corrupt bytes) traps inside
//! `agent_resume`: the node refuses to load the agent (spec §1: a lifecycle
//! failure), and nothing ever runs on misread state.

#[cfg(target_arch = "wasm32")]
use crate::{Agent, state};
use alloc::vec::Vec;
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
    saved: Vec<u8>,
    fingerprint: Option<u64>,
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
        Slot { inner: UnsafeCell::new(Inner { agent: None, saved: Vec::new(), fingerprint: None }) }
    }
}

#[cfg(target_arch = "wasm32")]
impl<A: Agent> Slot<A> {
    #[allow(clippy::mut_from_ref)]
    fn inner(&self) -> &mut Inner<A> {
        // SAFETY: single-threaded, and no entry point re-enters another.
        unsafe { &mut *self.inner.get() }
    }

    fn fingerprint(&self) -> u64 {
        *self.inner().fingerprint.get_or_insert_with(state::fingerprint::<A>)
    }

    /// `agent_init`.
    pub fn init(&self) {
        self.inner().agent = Some(A::init());
    }

    /// `agent_tick`.
    pub fn tick(&self) -> i32 {
        let agent = self.inner().agent.get_or_insert_with(A::init);
        let mut host = crate::host::WasmHost;
        agent.tick(&mut crate::Ctx::new(&mut host)).code()
    }

    /// `agent_checkpoint`: encode into the slot's buffer, return its length.
    pub fn checkpoint(&self) -> i32 {
        let fp = self.fingerprint();
        let inner = self.inner();
        let agent = inner.agent.get_or_insert_with(A::init);
        match state::encode_with(agent, A::VERSION, fp) {
            Ok(bytes) => {
                inner.saved = bytes;
                inner.saved.len() as i32
            }
            Err(_) => core::arch::wasm32::unreachable(),
        }
    }

    /// `agent_checkpoint_ptr`.
    pub fn checkpoint_ptr(&self) -> i32 {
        self.inner().saved.as_ptr() as i32
    }

    /// `agent_resume`.
    ///
    /// # Safety
    /// `(ptr, len)` must come from [`malloc`] and hold `len` initialized bytes.
    pub unsafe fn resume(&self, ptr: i32, len: i32) {
        let fp = self.fingerprint();
        let len = len.max(0) as usize;
        // SAFETY: the caller's contract.
        let bytes = unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, len) };
        match state::decode_with::<A>(bytes, A::VERSION, fp) {
            Ok(agent) => self.inner().agent = Some(agent),
            // Refuse loudly: never tick on state from another schema.
            Err(_) => core::arch::wasm32::unreachable(),
        }
        // SAFETY: allocated by `malloc` with this layout.
        unsafe { alloc::alloc::dealloc(ptr as usize as *mut u8, buffer_layout(len)) }
    }
}

#[cfg(target_arch = "wasm32")]
fn buffer_layout(len: usize) -> core::alloc::Layout {
    core::alloc::Layout::from_size_align(len.max(1), 8).unwrap_or(core::alloc::Layout::new::<u64>())
}

/// `malloc`: a buffer for the node to place state in before `agent_resume`.
#[cfg(target_arch = "wasm32")]
pub fn malloc(len: i32) -> i32 {
    let len = len.max(0) as usize;
    // SAFETY: non-zero size layout.
    unsafe { alloc::alloc::alloc(buffer_layout(len)) as i32 }
}

#[cfg(all(target_arch = "wasm32", feature = "wasm-runtime"))]
mod wasm_runtime {
    use core::alloc::{GlobalAlloc, Layout};
    use core::cell::UnsafeCell;

    const PAGE: usize = 65536;
    /// Blocks are carved aligned to their size, up to this.
    const MAX_ALIGN: usize = 4096;

    /// Power-of-two size classes with a free list each, carved from the end
    /// of linear memory: small, deterministic, reuses freed blocks (a
    /// long-running agent does not grow forever), never returns memory.
    struct Pow2 {
        st: UnsafeCell<St>,
    }
    struct St {
        next: usize,
        end: usize,
        free: [usize; 32],
    }
    // SAFETY: wasm32 is single-threaded.
    unsafe impl Sync for Pow2 {}

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
            // SAFETY: single-threaded; no re-entrance.
            let st = unsafe { &mut *self.st.get() };
            if st.free[c] != 0 {
                let p = st.free[c];
                // SAFETY: a freed block stores the next free block in its first word.
                st.free[c] = unsafe { *(p as *const usize) };
                return p as *mut u8;
            }
            if st.end == 0 {
                st.next = core::arch::wasm32::memory_size(0) * PAGE;
                st.end = st.next;
            }
            let align = size.min(MAX_ALIGN);
            let Some(start) = st.next.checked_add(align - 1).map(|v| v & !(align - 1)) else {
                return core::ptr::null_mut();
            };
            let Some(stop) = start.checked_add(size) else { return core::ptr::null_mut() };
            if stop > st.end {
                let pages = (stop - st.end).div_ceil(PAGE);
                let prev = core::arch::wasm32::memory_grow(0, pages);
                if prev == usize::MAX {
                    return core::ptr::null_mut();
                }
                if prev * PAGE != st.end {
                    // Someone else grew memory: start over in the new pages.
                    st.next = prev * PAGE;
                    st.end = (prev + pages) * PAGE;
                    // SAFETY: same layout, retried on fresh pages.
                    return unsafe { self.alloc(layout) };
                }
                st.end += pages * PAGE;
            }
            st.next = stop;
            start as *mut u8
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some((_, c)) = class(layout) else { return };
            // SAFETY: single-threaded; the block is ours again.
            let st = unsafe { &mut *self.st.get() };
            unsafe { *(ptr as *mut usize) = st.free[c] };
            st.free[c] = ptr as usize;
        }
    }

    #[global_allocator]
    static ALLOC: Pow2 = Pow2 { st: UnsafeCell::new(St { next: 0, end: 0, free: [0; 32] }) };

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // A panic traps the tick; the node keeps the last committed state.
        core::arch::wasm32::unreachable()
    }
}
