//! `log_emit` (capability `log`).

use super::*;

pub(super) fn log_emit(cx: &mut Cx<'_>, ptr: i32, len: i32) -> HResult<()> {
    burn(cx, HOSTCALL_FUEL)?;
    let n = (len as u32 as usize).min(MAX_LOG_MESSAGE_BYTES);
    let msg = read(cx, ptr, n as i32);
    let kept = msg.as_ref().map_or(0, Vec::len);
    let Some(t) = cx.data_mut().tick.as_mut() else { return burn_bytes(cx, kept) };
    let recorded = scalar_answer(t, Hostcall::LogEmit, |_| (kept as u32).to_le_bytes())?;
    if u32::from_le_bytes(recorded) as usize != kept {
        return Err(
            t.inconsistent(Hostcall::LogEmit, &format!("recorded length differs from the guest's {kept} bytes"))
        );
    }
    burn_bytes(cx, kept)?;
    if let Some(m) = msg {
        tick_ctx(cx).keep_log(&m);
    }
    Ok(())
}
