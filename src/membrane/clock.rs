//! `clock_now` (capability `clock`).

use super::*;

pub(super) fn clock_now(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::ClockNow, |t| t.now_unix_ns.to_le_bytes()).map(i64::from_le_bytes)
}
