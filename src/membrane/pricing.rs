//! `node_price` (capability `pricing`).

use super::*;

pub(super) fn node_price(cx: &mut Cx<'_>) -> HResult<i64> {
    burn(cx, HOSTCALL_FUEL)?;
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(0) };
    scalar_answer(t, Hostcall::NodePrice, |t| t.price_per_second.0.to_le_bytes()).map(i64::from_le_bytes)
}
