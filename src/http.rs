//! The http gateway behind `http_request` (spec §2): a trait the membrane
//! calls, the redirect rule every implementation shares (each hop is
//! re-checked against `allowed_hosts`; the original did not), and a
//! scripted implementation for tests and the simulator, and [`UreqGateway`],
//! the real client that `igord` plugs in. The sandbox core only ever sees
//! the trait; the real gateway is a backend (it touches the network and the
//! wall clock) and the simulator never uses it.

use crate::manifest::HttpPolicy;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// The real gateway lives with the other world-touching backends.
pub use crate::env::real::UreqGateway;

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
}
