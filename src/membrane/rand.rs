//! `rand_bytes` (capability `rand`).

use super::*;

pub(super) fn rand_bytes(cx: &mut Cx<'_>, ptr: i32, len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let n = len as u32 as usize;
    if cx.data().tick.is_none() {
        return Ok(-1);
    }
    let fits = in_bounds(cx, ptr, n);
    let t = tick_ctx(cx);
    let p = t.answer(Hostcall::RandBytes, |t| {
        if n > MAX_RAND_BYTES {
            i32_payload(-2, &[])
        } else if !fits {
            i32_payload(-4, &[])
        } else {
            let mut buf = vec![0u8; n];
            t.rng.fill_bytes(&mut buf);
            i32_payload(0, &buf)
        }
    })?;
    let bytes = match split_code(&p) {
        Some((0, bytes)) if bytes.len() == n => bytes,
        Some((code, [])) if code < 0 => return Ok(code),
        _ => return Err(t.inconsistent(Hostcall::RandBytes, &format!("recorded result does not answer {n} bytes"))),
    };
    burn_bytes(cx, n)?;
    if !write(cx, ptr, bytes) {
        return Err(tick_ctx(cx).inconsistent(Hostcall::RandBytes, "recorded bytes do not fit the guest buffer"));
    }
    Ok(0)
}
