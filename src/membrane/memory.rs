//! Guest memory and fuel: bounds-checked reads and writes of guest
//! pointers (never a trap), fuel burnt per call and per byte, and the
//! payload encodings shared by the hostcall families.

use super::*;

/// Burn hostcall fuel from the store; running out is an ordinary
/// `OutOfFuel` trap, exactly as if the guest had burnt it.
pub(super) fn burn(cx: &mut Cx<'_>, fuel: u64) -> HResult<()> {
    let have = cx.get_fuel()?;
    if have < fuel {
        cx.set_fuel(0)?;
        return Err(Trap::OutOfFuel.into());
    }
    cx.set_fuel(have - fuel)
}

pub(super) fn burn_bytes(cx: &mut Cx<'_>, n: usize) -> HResult<()> {
    burn(cx, (n as u64).saturating_mul(FUEL_PER_BYTE))
}

/// Guest bytes `[ptr, ptr+len)`, or `None` if out of bounds (never traps).
pub(super) fn read(cx: &Cx<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = cx.data().memory?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(cx).get(ptr..ptr.checked_add(len)?).map(<[u8]>::to_vec)
}

/// Copy `bytes` to guest `ptr`; false if out of bounds (nothing written).
pub(super) fn write(cx: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = cx.data().memory else { return false };
    let ptr = ptr as u32 as usize;
    let Some(end) = ptr.checked_add(bytes.len()) else { return false };
    match mem.data_mut(cx).get_mut(ptr..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Whether `[ptr, ptr+len)` lies in guest memory.
pub(super) fn in_bounds(cx: &Cx<'_>, ptr: i32, len: usize) -> bool {
    let Some(mem) = cx.data().memory else { return false };
    (ptr as u32 as usize).checked_add(len).is_some_and(|end| end <= mem.data_size(cx))
}

pub(super) fn i32_payload(v: i32, extra: &[u8]) -> Vec<u8> {
    let mut p = v.to_le_bytes().to_vec();
    p.extend_from_slice(extra);
    p
}

/// The running tick's context; callers checked that a tick runs.
pub(super) fn tick_ctx<'c>(cx: &'c mut Cx<'_>) -> &'c mut TickCtx {
    cx.data_mut().tick.as_mut().expect("inside a tick: checked by the caller")
}

/// Guest memory available from `ptr` to the end (0 if beyond it).
pub(super) fn room(cx: &Cx<'_>, ptr: i32) -> usize {
    cx.data().memory.map_or(0, |m| m.data_size(cx).saturating_sub(ptr as u32 as usize))
}

/// Split a recorded `i32 code ++ rest` payload.
pub(super) fn split_code(p: &[u8]) -> Option<(i32, &[u8])> {
    let (code, rest) = p.split_at_checked(4)?;
    Some((i32::from_le_bytes(code.try_into().ok()?), rest))
}

/// A recorded `[kind] ++ i32 code` payload with a negative code.
pub(super) fn refusal_code(rest: &[u8]) -> Option<i32> {
    let code = i32::from_le_bytes(rest.try_into().ok()?);
    (code < 0).then_some(code)
}

pub(super) fn refusal(code: i32) -> Vec<u8> {
    [&[0u8][..], &code.to_le_bytes()].concat()
}

/// A hostcall whose whole result is one i64 or i32 taken from the tick.
pub(super) fn scalar_answer<const N: usize>(
    t: &mut TickCtx,
    call: Hostcall,
    live: impl FnOnce(&TickCtx) -> [u8; N],
) -> HResult<[u8; N]> {
    let p = t.answer(call, |t| live(t).to_vec())?;
    <[u8; N]>::try_from(p.as_slice()).map_err(|_| t.inconsistent(call, &format!("recorded result is not {N} bytes")))
}

/// Read an input field with its length limit: Err(-2) too long, Err(bad) out of bounds.
pub(super) fn read_input(cx: &Cx<'_>, ptr: i32, len: i32, limit: usize, bad: i32) -> Result<Vec<u8>, i32> {
    if len as u32 as usize > limit {
        return Err(-2);
    }
    read(cx, ptr, len).ok_or(bad)
}
