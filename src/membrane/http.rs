//! `http_request` (capability `http`): the request goes through the
//! node's gateway only when the agent may act (CM-5), and its outcome is
//! recorded so replay never reaches the network.

use super::*;

// http_request event payload: kind 0 = refused before the effect (i32
// code); 1 = response (u16 status, body); 2 = gateway error (i32 code,
// u64 needed length for -5).
#[allow(clippy::too_many_arguments)]
pub(super) fn http_request(
    cx: &mut Cx<'_>,
    method_ptr: i32,
    method_len: i32,
    url_ptr: i32,
    url_len: i32,
    hdr_ptr: i32,
    hdr_len: i32,
    body_ptr: i32,
    body_len: i32,
    resp_ptr: i32,
    resp_cap: i32,
) -> HResult<i32> {
    burn(cx, HOSTCALL_FUEL)?;
    let permitted = side_effect_permitted(cx);
    let inputs = (|| {
        let method = read_input(cx, method_ptr, method_len, MAX_METHOD_BYTES, -1)?;
        let url = read_input(cx, url_ptr, url_len, MAX_URL_BYTES, -1)?;
        let headers = read_input(cx, hdr_ptr, hdr_len, MAX_HEADER_BYTES, -1)?;
        let body = read_input(cx, body_ptr, body_len, MAX_REQUEST_BODY_BYTES, -1)?;
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| -1);
        Ok::<_, i32>(HttpRequest { method: text(method)?, url: text(url)?, headers, body })
    })();
    let grants = cx.data().grants.clone();
    let policy = grants.manifest.http.clone().unwrap_or_else(|| crate::manifest::HttpPolicy {
        allowed_hosts: Vec::new(),
        timeout_ms: 0,
        max_response_bytes: 0,
    });
    if let Ok(req) = &inputs {
        burn_bytes(cx, req.method.len() + req.url.len() + req.headers.len() + req.body.len())?;
    }
    let Some(t) = cx.data_mut().tick.as_mut() else { return Ok(-3) };
    // Live only: replay takes the outcome from the log and never contacts
    // the gateway (spec §2: every hostcall is replayable).
    let payload = t.answer(Hostcall::HttpRequest, |_| {
        let req = match &inputs {
            Err(code) => return refusal(*code),
            Ok(_) if !permitted => return refusal(-3),
            Ok(req) if !policy.allows(&req.url) => return refusal(-3),
            Ok(req) => req,
        };
        match grants.http.request(req, &policy) {
            Ok(resp) => {
                let mut p = vec![1u8];
                p.extend_from_slice(&resp.status.to_le_bytes());
                p.extend_from_slice(&resp.body);
                p
            }
            Err(e) => {
                let (code, needed) = match e {
                    HttpError::Network(_) => (-1i32, 0u64),
                    HttpError::HostNotAllowed(_) => (-3, 0),
                    HttpError::Timeout => (-4, 0),
                    HttpError::TooLarge { needed } => (-5, needed),
                };
                let mut p = vec![2u8];
                p.extend_from_slice(&code.to_le_bytes());
                p.extend_from_slice(&needed.to_le_bytes());
                p
            }
        }
    })?;
    deliver_http(cx, &payload, resp_ptr, resp_cap, policy.max_response_bytes)
}

/// Turn a recorded http outcome into what the guest sees (same code path
/// live and in replay, so both write the same bytes).
pub(super) fn deliver_http(
    cx: &mut Cx<'_>,
    payload: &[u8],
    resp_ptr: i32,
    resp_cap: i32,
    max_response: u64,
) -> HResult<i32> {
    let needed_hint = |cx: &mut Cx<'_>, needed: u64| -> HResult<i32> {
        if resp_cap as u32 >= 4 {
            write(cx, resp_ptr, &(needed.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        }
        Ok(-5)
    };
    match payload.split_first() {
        Some((0, rest)) if refusal_code(rest).is_some() => Ok(refusal_code(rest).expect("checked by the guard")),
        Some((1, rest)) if rest.len() >= 2 => {
            let status = u16::from_le_bytes([rest[0], rest[1]]);
            let body = &rest[2..];
            if body.len() as u64 > max_response || body.len() > resp_cap as u32 as usize {
                return needed_hint(cx, body.len() as u64);
            }
            burn_bytes(cx, body.len())?;
            Ok(if write(cx, resp_ptr, body) { i32::from(status) } else { -1 })
        }
        Some((2, rest)) if rest.len() == 12 && refusal_code(&rest[..4]).is_some() => {
            let code = refusal_code(&rest[..4]).expect("checked by the guard");
            let needed = u64::from_le_bytes(rest[4..].try_into().expect("length checked"));
            if code == -5 { needed_hint(cx, needed) } else { Ok(code) }
        }
        _ => Err(tick_ctx(cx).inconsistent(Hostcall::HttpRequest, "recorded outcome is malformed")),
    }
}
