//! The agent's own key-value store (capability `kv`): get, put, delete,
//! each undoable if the tick does not complete.

use super::*;

/// What the agent's own kv answers to a `kv_get` (code ++ bytes).
pub(super) fn kv_lookup(cx: &Cx<'_>, key: &Result<Vec<u8>, i32>, val_ptr: i32, val_cap: i32) -> Vec<u8> {
    let Ok(key) = key else { return i32_payload(-1, &[]) };
    match cx.data().kv.get(key) {
        None => i32_payload(-5, &[]),
        Some(v) if v.len() > val_cap as u32 as usize || v.len() > room(cx, val_ptr) => {
            i32_payload(-4, &(v.len() as u32).to_le_bytes())
        }
        Some(v) => i32_payload(v.len() as i32, v),
    }
}

pub(super) fn kv_get(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_cap: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let max_key = cx.data().kv.limits().max_key_bytes as usize;
    let key = read_input(cx, key_ptr, key_len, max_key, -1);
    burn_bytes(cx, key_len.max(0) as usize)?;
    let own = kv_lookup(cx, &key, val_ptr, val_cap);
    let payload = match cx.data_mut().tick.as_mut() {
        // Outside a tick kv_get reads the agent's own state, unrecorded.
        None => own,
        Some(t) => {
            let p = t.answer(Hostcall::KvGet, |_| own.clone())?;
            // The kv is the agent's own state, replayed alongside it: a
            // recorded answer it contradicts is a forged entry (CM-4).
            if p != own {
                return Err(t.inconsistent(Hostcall::KvGet, "recorded result contradicts the agent's own kv"));
            }
            p
        }
    };
    let (code, bytes) = split_code(&payload).expect("kv_lookup payloads start with a code");
    burn_bytes(cx, bytes.len())?;
    if code >= 0 || (code == -4 && val_cap as u32 >= 4) {
        write(cx, val_ptr, bytes);
    }
    Ok(code)
}

/// A recorded kv_put/kv_delete code: one of the codes those calls return.
pub(super) fn kv_code(t: &mut TickCtx, call: Hostcall, p: Vec<u8>) -> HResult<i32> {
    match <[u8; 4]>::try_from(p.as_slice()).map(i32::from_le_bytes) {
        Ok(code @ (0 | -1 | -2 | -3 | -6)) => Ok(code),
        _ => Err(t.inconsistent(call, "recorded code is not a kv result")),
    }
}

pub(super) fn kv_put(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let limits = cx.data().kv.limits();
    let key = read_input(cx, key_ptr, key_len, limits.max_key_bytes as usize, -1);
    let value = read_input(cx, val_ptr, val_len, limits.max_value_bytes as usize, -1);
    burn_bytes(cx, key.as_ref().map_or(0, Vec::len) + value.as_ref().map_or(0, Vec::len))?;
    let HostState { tick, kv, .. } = cx.data_mut();
    let Some(t) = tick.as_mut() else { return Ok(-3) };
    let put = |kv: &mut Kv, t: &mut TickCtx, k: &[u8], v: &[u8]| {
        let old = kv.get(k).map(<[u8]>::to_vec);
        kv.put(k, v).map(|()| t.kv_undo.push((k.to_vec(), old)))
    };
    let p = t.answer(Hostcall::KvPut, |t| {
        let code: i32 = match (&key, &value) {
            (Err(c), _) | (_, Err(c)) => *c,
            _ if !permitted => -3,
            (Ok(k), Ok(v)) => match put(kv, t, k, v) {
                Ok(()) => 0,
                Err(PutError::TooLarge) => -2,
                Err(PutError::Quota) => -6,
            },
        };
        code.to_le_bytes().to_vec()
    })?;
    let code = kv_code(t, Hostcall::KvPut, p)?;
    // Replay: the write is the agent's own state, so a recorded success is
    // applied (and must be possible); a recorded refusal changes nothing.
    if t.is_replay() && code == 0 {
        let applied = match (&key, &value) {
            (Ok(k), Ok(v)) => put(kv, t, k, v).is_ok(),
            _ => false,
        };
        if !applied {
            return Err(t.inconsistent(Hostcall::KvPut, "recorded success, but the write does not apply"));
        }
    }
    Ok(code)
}

pub(super) fn kv_delete(cx: &mut Cx<'_>, key_ptr: i32, key_len: i32) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let max_key = cx.data().kv.limits().max_key_bytes as usize;
    let key = read_input(cx, key_ptr, key_len, max_key, -1);
    burn_bytes(cx, key.as_ref().map_or(0, Vec::len))?;
    let HostState { tick, kv, .. } = cx.data_mut();
    let Some(t) = tick.as_mut() else { return Ok(-3) };
    let delete = |kv: &mut Kv, t: &mut TickCtx, k: &[u8]| {
        if let Some(old) = kv.get(k).map(<[u8]>::to_vec) {
            kv.delete(k);
            t.kv_undo.push((k.to_vec(), Some(old)));
        }
    };
    let p = t.answer(Hostcall::KvDelete, |t| {
        let code: i32 = match &key {
            Err(_) => -1,
            Ok(_) if !permitted => -3,
            Ok(k) => {
                delete(kv, t, k);
                0
            }
        };
        code.to_le_bytes().to_vec()
    })?;
    let code = kv_code(t, Hostcall::KvDelete, p)?;
    if t.is_replay() && code == 0 {
        let Ok(k) = &key else {
            return Err(t.inconsistent(Hostcall::KvDelete, "recorded success for an unreadable key"));
        };
        delete(kv, t, k);
    }
    Ok(code)
}

/// Undo the kv writes of a tick that did not complete (ticks are atomic
/// for the agent's own state).
pub fn roll_back_kv(kv: &mut Kv, undo: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
    for (key, old) in undo.into_iter().rev() {
        match old {
            // Restoring an old value only frees space: it cannot fail.
            Some(v) => {
                kv.delete(&key);
                let _ = kv.put(&key, &v);
            }
            None => kv.delete(&key),
        }
    }
}
