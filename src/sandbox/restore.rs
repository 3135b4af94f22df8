//! Bringing an instance back from checkpointed state: the lifecycle calls
//! (`malloc`, `agent_resume`) with their own fuel, and the igor-agent SDK's
//! state header, so a resume that fails on state from another schema is
//! named as such.

use super::*;
/// Call a lifecycle export with fresh, uncharged fuel; errors name it.
pub(super) fn lifecycle_call<R>(
    store: &mut Store<HostState>,
    fuel: u64,
    name: &str,
    f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
) -> Result<R, ExecError> {
    store.set_fuel(fuel).map_err(|e| ExecError::Lifecycle(e.to_string()))?;
    f(store).map_err(|e| {
        let why = match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => format!("ran out of its {fuel} lifecycle fuel"),
            Some(t) => format!("trapped: {t}"),
            None => format!("failed: {}", e.root_cause()),
        };
        ExecError::Lifecycle(format!("{name} {why}"))
    })
}

/// `malloc(len)`, copy the state in, `agent_resume(ptr, len)`.
pub(super) fn restore(
    store: &mut Store<HostState>,
    instance: &wasmtime::Instance,
    fuel: u64,
    state: &[u8],
) -> Result<(), ExecError> {
    let len = i32::try_from(state.len())
        .map_err(|_| ExecError::Lifecycle(format!("state of {} bytes is too large", state.len())))?;
    let malloc = instance
        .get_typed_func::<i32, i32>(&mut *store, "malloc")
        .map_err(|_| invalid("missing export `malloc` (i32) -> i32, needed to resume from non-empty state"))?;
    let resume = instance
        .get_typed_func::<(i32, i32), ()>(&mut *store, "agent_resume")
        .map_err(|e| invalid(format!("export `agent_resume`: {e}")))?;
    let ptr = lifecycle_call(store, fuel, "malloc", |s| malloc.call(s, len))?;
    let mem =
        store.data().memory.ok_or_else(|| invalid("missing export `memory`, needed to resume from non-empty state"))?;
    let start = ptr as u32 as usize;
    let dst = mem.data_mut(&mut *store).get_mut(start..start.saturating_add(state.len())).ok_or_else(|| {
        ExecError::Lifecycle(format!("malloc returned {start:#x}, no room for {} bytes of state", state.len()))
    })?;
    dst.copy_from_slice(state);
    lifecycle_call(store, fuel, "agent_resume", |s| resume.call(s, (ptr, len)))
        .map_err(|e| version_mismatch(store, instance, fuel, state).unwrap_or(e))
}

/// The igor-agent SDK's state header: magic, format, version (u32 LE),
/// shape fingerprint (u64 LE).
const SDK_STATE_MAGIC: &[u8; 4] = b"IGAS";
const SDK_STATE_HEADER: usize = 17;

/// A resume that failed on state from another schema, named: when the
/// state carries the SDK's header and the agent exports the version and
/// shape it expects (`igor_state_version`, `igor_state_shape`), and they
/// differ, say so instead of "unreachable".
fn version_mismatch(
    store: &mut Store<HostState>,
    instance: &wasmtime::Instance,
    fuel: u64,
    state: &[u8],
) -> Option<ExecError> {
    let header = state.get(..SDK_STATE_HEADER).filter(|h| h.starts_with(SDK_STATE_MAGIC))?;
    let found_version = u32::from_le_bytes(header[5..9].try_into().ok()?);
    let found_shape = u64::from_le_bytes(header[9..17].try_into().ok()?);
    let version = instance.get_typed_func::<(), i32>(&mut *store, "igor_state_version").ok()?;
    let shape = instance.get_typed_func::<(), i64>(&mut *store, "igor_state_shape").ok()?;
    let want_version = lifecycle_call(store, fuel, "igor_state_version", |s| version.call(s, ())).ok()? as u32;
    let want_shape = lifecycle_call(store, fuel, "igor_state_shape", |s| shape.call(s, ())).ok()? as u64;
    if (found_version, found_shape) == (want_version, want_shape) {
        return None;
    }
    Some(ExecError::Lifecycle(format!(
        "agent_resume refused the state: state version mismatch (the checkpoint holds version {found_version} \
         shape {found_shape:016x}, this agent expects version {want_version} shape {want_shape:016x}): its state \
         type changed"
    )))
}
