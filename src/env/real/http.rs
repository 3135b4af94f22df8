//! The real http gateway behind `http_request` (spec §2), moved here with
//! the other pieces that touch the world: it opens connections and reads
//! the wall clock for its deadline. The trait, the redirect rule and the
//! scripted twin stay in [`crate::http`]; the simulator never uses this.

use crate::http::{Hop, HttpError, HttpGateway, HttpRequest, HttpResponse, follow_redirects};
use crate::manifest::HttpPolicy;
use std::io::Read;
use std::time::{Duration, Instant};

/// The real gateway: a blocking [`ureq`] client (plain http, and https via
/// rustls with the webpki roots) used by `igord run` and `igord node`.
///
/// - ureq's own redirect handling is off (`max_redirects(0)`): each hop is a
///   single exchange and [`crate::http::follow_redirects`] re-checks every `Location`
///   against `allowed_hosts` before it is contacted, at most
///   [`crate::http::MAX_REDIRECTS`] hops.
/// - `timeout_ms` bounds the whole request (every hop, connect, headers and
///   body): each hop gets what is left of one deadline.
/// - The body is read through a `take(max_response_bytes + 1)` reader, so at
///   most `max_response_bytes + 1` bytes are ever buffered. A
///   `Content-Length` above the cap is refused before any of the body is
///   read, with that length as the needed size; a body without a length
///   (chunked or close-delimited) that passes the cap yields
///   `TooLarge { needed: max_response_bytes + 1 }`, a lower bound.
/// - No proxy from the environment, no compression, 3xx/4xx/5xx statuses are
///   responses (the guest sees the status).
/// - A URL whose host as ureq parses it differs from the host
///   [`HttpPolicy::allows`] checked is refused (-3): no parser differential
///   can reach an unlisted host.
#[derive(Clone)]
pub struct UreqGateway {
    agent: ureq::Agent,
}

impl Default for UreqGateway {
    fn default() -> Self {
        Self::new()
    }
}

impl UreqGateway {
    pub fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .proxy(None)
            .user_agent(concat!("igor/", env!("CARGO_PKG_VERSION")))
            .build();
        Self { agent: config.into() }
    }

    /// One exchange: no redirect following, `timeout` for all of it.
    fn hop(&self, req: &HttpRequest, policy: &HttpPolicy, timeout: Duration) -> Result<Hop, HttpError> {
        use ureq::http;
        if timeout.is_zero() {
            return Err(HttpError::Timeout);
        }
        let uri: http::Uri =
            req.url.parse().map_err(|e| HttpError::Network(format!("invalid url {}: {e}", req.url)))?;
        if !same_authority(&req.url, &uri) {
            return Err(HttpError::HostNotAllowed(req.url.clone()));
        }
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| HttpError::Network(format!("invalid method {}: {e}", req.method)))?;
        let mut builder = http::Request::builder().method(method).uri(uri);
        for (name, value) in req.header_pairs() {
            builder = builder.header(name, value);
        }
        let response = if req.body.is_empty() {
            let r = builder.body(()).map_err(|e| HttpError::Network(format!("invalid request: {e}")))?;
            self.agent.run(self.agent.configure_request(r).timeout_global(Some(timeout)).build())
        } else {
            let r = builder.body(req.body.clone()).map_err(|e| HttpError::Network(format!("invalid request: {e}")))?;
            self.agent.run(self.agent.configure_request(r).timeout_global(Some(timeout)).build())
        };
        let mut response = response.map_err(map_ureq)?;
        let status = response.status().as_u16();
        if matches!(status, 301 | 302 | 303 | 307 | 308)
            && let Some(location) = response.headers().get(http::header::LOCATION)
        {
            let location =
                location.to_str().map_err(|_| HttpError::Network("redirect location is not ascii".into()))?;
            return Ok(Hop::Redirect { status, location: location.to_string() });
        }
        let max = policy.max_response_bytes;
        if let Some(len) = response.body().content_length()
            && len > max
        {
            return Err(HttpError::TooLarge { needed: len });
        }
        let mut body = Vec::new();
        response.body_mut().as_reader().take(max.saturating_add(1)).read_to_end(&mut body).map_err(map_io)?;
        if body.len() as u64 > max {
            return Err(HttpError::TooLarge { needed: max.saturating_add(1) });
        }
        Ok(Hop::Response(HttpResponse { status, body }))
    }
}

impl HttpGateway for UreqGateway {
    fn request(&self, req: &HttpRequest, policy: &HttpPolicy) -> Result<HttpResponse, HttpError> {
        // A backend, not the deterministic core: the deadline is real time.
        // The outcome is recorded in the event log and replay never calls
        // the gateway.
        #[allow(clippy::disallowed_methods)]
        let now = || Instant::now();
        let deadline = now() + Duration::from_millis(policy.timeout_ms);
        follow_redirects(req, policy, |r| self.hop(r, policy, deadline.saturating_duration_since(now())))
    }
}

/// Whether ureq's parse of `url` names the same host and port as
/// [`crate::manifest::url_host`] (which `allowed_hosts` is checked against).
fn same_authority(url: &str, uri: &ureq::http::Uri) -> bool {
    let Some((host, port)) = crate::manifest::url_host(url) else { return false };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| h.eq_ignore_ascii_case(&host));
    let port_ok = match (port, uri.port_u16()) {
        (None, None) => true,
        (Some(p), Some(q)) => p.parse::<u16>() == Ok(q),
        _ => false,
    };
    scheme_ok && host_ok && port_ok
}

fn map_ureq(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::Io(e) => map_io(e),
        e => HttpError::Network(e.to_string()),
    }
}

fn map_io(e: std::io::Error) -> HttpError {
    use std::io::ErrorKind;
    if e.get_ref().is_some_and(|inner| inner.is::<ureq::Error>()) {
        let inner = e.into_inner().expect("checked above").downcast::<ureq::Error>().expect("checked above");
        return map_ureq(*inner);
    }
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => HttpError::Timeout,
        _ => HttpError::Network(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_gateway_refuses_urls_whose_parsed_host_differs() {
        let ok = |u: &str| same_authority(u, &u.parse().unwrap());
        assert!(ok("http://API.example/x"));
        assert!(ok("https://api.example:8443/x?q"));
        assert!(!ok("ftp://api.example/x"));
        assert!(!ok("http://api.example:99999/x"));
    }
}
