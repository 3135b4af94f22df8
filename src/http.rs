//! The http gateway behind `http_request` (spec §2): a trait the membrane
//! calls, the redirect rule every implementation shares (each hop is
//! re-checked against `allowed_hosts`; the original did not), and a
//! scripted implementation for tests and the simulator, and [`UreqGateway`],
//! the real client that `igord` plugs in. The sandbox core only ever sees
//! the trait; the real gateway is a backend (it touches the network and the
//! wall clock) and the simulator never uses it.

use crate::manifest::HttpPolicy;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// Longest URL accepted from a guest.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// Longest method name accepted from a guest.
pub const MAX_METHOD_BYTES: usize = 16;
/// Largest header block (`Name: value` lines) accepted from a guest.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body accepted from a guest.
pub const MAX_REQUEST_BODY_BYTES: usize = 1024 * 1024;

/// A request as the guest made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// `Name: value` lines separated by `\n`.
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// Parsed `Name: value` header lines (malformed lines are skipped).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        String::from_utf8_lossy(&self.headers)
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .filter(|(n, _)| !n.is_empty())
            .collect()
    }
}

/// The final response handed to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Failures, mapped onto `http_request`'s return codes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// -1
    #[error("network error: {0}")]
    Network(String),
    /// -3 (also for a redirect that leaves `allowed_hosts`)
    #[error("host not allowed: {0}")]
    HostNotAllowed(String),
    /// -4
    #[error("timed out")]
    Timeout,
    /// -5 with the needed length
    #[error("response too large: {needed} bytes")]
    TooLarge { needed: u64 },
}

/// One hop's raw answer: a final response or a redirect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    Response(HttpResponse),
    Redirect { status: u16, location: String },
}

/// Performs http requests for agents. Implementations must apply
/// [`follow_redirects`] (or the same rule) so that no hop leaves
/// `policy.allowed_hosts`, and must not return bodies larger than
/// `policy.max_response_bytes`.
pub trait HttpGateway: Send + Sync {
    fn request(&self, req: &HttpRequest, policy: &HttpPolicy) -> Result<HttpResponse, HttpError>;
}

/// The shared redirect rule: perform `hop` for the request, and for each
/// redirect re-check the target against `allowed_hosts` before following it
/// (303 turns into GET without a body). Relative locations resolve against
/// the current URL's origin.
pub fn follow_redirects(
    req: &HttpRequest,
    policy: &HttpPolicy,
    mut hop: impl FnMut(&HttpRequest) -> Result<Hop, HttpError>,
) -> Result<HttpResponse, HttpError> {
    let mut current = req.clone();
    for _ in 0..=MAX_REDIRECTS {
        if !policy.allows(&current.url) {
            return Err(HttpError::HostNotAllowed(current.url));
        }
        match hop(&current)? {
            Hop::Response(r) => {
                if r.body.len() as u64 > policy.max_response_bytes {
                    return Err(HttpError::TooLarge { needed: r.body.len() as u64 });
                }
                return Ok(r);
            }
            Hop::Redirect { status, location } => {
                current.url = resolve(&current.url, &location);
                if status == 303 {
                    current.method = "GET".into();
                    current.body.clear();
                }
            }
        }
    }
    Err(HttpError::Network(format!("more than {MAX_REDIRECTS} redirects")))
}

fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        format!("{}/{location}", &base[..origin_end])
    }
}

type Routes = BTreeMap<(String, String), Result<Hop, HttpError>>;

/// Most hops a [`ScriptedHttp`] remembers for [`ScriptedHttp::calls`]; later
/// ones are answered but not recorded, so a simulator run of any length
/// keeps its memory bounded.
pub const MAX_RECORDED_CALLS: usize = 10_000;

/// A scripted gateway: fixed answers per (method, url), every call
/// recorded. Clones share the script and the call record.
#[derive(Clone, Default)]
pub struct ScriptedHttp {
    routes: Arc<Mutex<Routes>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl ScriptedHttp {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer `method url` with `answer` from now on.
    pub fn route(&self, method: &str, url: &str, answer: Result<Hop, HttpError>) -> &Self {
        self.routes.lock().expect("script lock poisoned").insert((method.to_string(), url.to_string()), answer);
        self
    }

    /// The http world of the simulator: every simulated node gets this
    /// script, so an agent's http calls are deterministic and the same on
    /// every host (replay and metering checks compare real responses).
    /// `GET http://api.example/data` answers 200 `igor-sim data`;
    /// `GET http://api.example/moved` redirects there; anything else is a
    /// network error (-1 to the guest).
    pub fn simulated_world() -> Self {
        let http = Self::new();
        http.route(
            "GET",
            "http://api.example/data",
            Ok(Hop::Response(HttpResponse { status: 200, body: b"igor-sim data".to_vec() })),
        );
        http.route(
            "GET",
            "http://api.example/moved",
            Ok(Hop::Redirect { status: 302, location: "http://api.example/data".into() }),
        );
        http
    }

    /// Every hop performed, as `METHOD url`, in order (the first
    /// [`MAX_RECORDED_CALLS`]).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("script lock poisoned").clone()
    }
}

impl HttpGateway for ScriptedHttp {
    fn request(&self, req: &HttpRequest, policy: &HttpPolicy) -> Result<HttpResponse, HttpError> {
        follow_redirects(req, policy, |r| {
            let mut calls = self.calls.lock().expect("script lock poisoned");
            if calls.len() < MAX_RECORDED_CALLS {
                calls.push(format!("{} {}", r.method, r.url));
            }
            drop(calls);
            let routes = self.routes.lock().expect("script lock poisoned");
            routes
                .get(&(r.method.clone(), r.url.clone()))
                .cloned()
                .unwrap_or(Err(HttpError::Network(format!("no route for {} {}", r.method, r.url))))
        })
    }
}

/// A gateway that refuses everything with a network error (nodes without
/// an http backend).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHttp;

impl HttpGateway for NoHttp {
    fn request(&self, req: &HttpRequest, _policy: &HttpPolicy) -> Result<HttpResponse, HttpError> {
        Err(HttpError::Network(format!("no http backend on this node ({})", req.url)))
    }
}

/// The real gateway: a blocking [`ureq`] client (plain http, and https via
/// rustls with the webpki roots) used by `igord run` and `igord node`.
///
/// - ureq's own redirect handling is off (`max_redirects(0)`): each hop is a
///   single exchange and [`follow_redirects`] re-checks every `Location`
///   against `allowed_hosts` before it is contacted, at most
///   [`MAX_REDIRECTS`] hops.
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

    fn policy() -> HttpPolicy {
        HttpPolicy { allowed_hosts: vec!["api.example".into()], timeout_ms: 1000, max_response_bytes: 16 }
    }

    fn get(url: &str) -> HttpRequest {
        HttpRequest { method: "GET".into(), url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    #[test]
    fn redirect_to_a_forbidden_host_is_refused_before_it_is_followed() {
        let http = ScriptedHttp::new();
        http.route("GET", "http://api.example/a", Ok(Hop::Redirect { status: 302, location: "/b".into() }));
        http.route(
            "GET",
            "http://api.example/b",
            Ok(Hop::Redirect { status: 302, location: "http://evil.example/x".into() }),
        );
        let err = http.request(&get("http://api.example/a"), &policy()).unwrap_err();
        assert_eq!(err, HttpError::HostNotAllowed("http://evil.example/x".into()));
        assert_eq!(http.calls(), vec!["GET http://api.example/a", "GET http://api.example/b"]);
    }

    #[test]
    fn responses_over_the_limit_and_redirect_loops_fail() {
        let http = ScriptedHttp::new();
        http.route("GET", "http://api.example/big", Ok(Hop::Response(HttpResponse { status: 200, body: vec![0; 17] })));
        http.route("GET", "http://api.example/loop", Ok(Hop::Redirect { status: 301, location: "/loop".into() }));
        assert_eq!(http.request(&get("http://api.example/big"), &policy()), Err(HttpError::TooLarge { needed: 17 }));
        assert!(matches!(http.request(&get("http://api.example/loop"), &policy()), Err(HttpError::Network(_))));
    }

    #[test]
    fn the_real_gateway_refuses_urls_whose_parsed_host_differs() {
        let ok = |u: &str| same_authority(u, &u.parse().unwrap());
        assert!(ok("http://API.example/x"));
        assert!(ok("https://api.example:8443/x?q"));
        assert!(!ok("ftp://api.example/x"));
        assert!(!ok("http://api.example:99999/x"));
    }
}
