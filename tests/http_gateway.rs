//! The real http gateway (`UreqGateway`) against tiny HTTP servers on
//! 127.0.0.1 started by each test: every server thread stops within a few
//! seconds, every request has a short manifest timeout.

// A backend test: real sockets, real sleeps and real time are the point.
#![allow(clippy::disallowed_methods)]

use igor::http::{HttpError, HttpGateway, HttpRequest, HttpResponse, MAX_REDIRECTS, UreqGateway};
use igor::manifest::HttpPolicy;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a test server accepts connections at most.
const SERVER_LIFETIME: Duration = Duration::from_secs(10);

/// A one-request-per-connection server. `reply` gets the request head
/// (request line and headers) and the stream to answer on.
struct Server {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(reply: impl Fn(&str, &mut TcpStream) + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heads.clone(), stop.clone());
        thread::spawn(move || {
            let until = Instant::now() + SERVER_LIFETIME;
            while Instant::now() < until && !s.load(Ordering::SeqCst) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                stream.set_nonblocking(false).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let head = read_head(&mut stream);
                h.lock().unwrap().push(head.clone());
                reply(&head, &mut stream);
            }
        });
        Server { addr, heads, stop }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `host:port`, as `allowed_hosts` lists it.
    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The request lines received so far.
    fn request_lines(&self) -> Vec<String> {
        self.heads.lock().unwrap().iter().map(|h| h.lines().next().unwrap_or("").to_string()).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    // The client may hang up early (oversized, timeout): that is fine.
    let _ = stream.write_all(bytes);
    let _ = stream.flush();
}

fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]) {
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n", body.len());
    send(stream, head.as_bytes());
    send(stream, body);
}

fn policy(allowed: &[&Server], timeout_ms: u64, max_response_bytes: u64) -> HttpPolicy {
    HttpPolicy { allowed_hosts: allowed.iter().map(|s| s.host()).collect(), timeout_ms, max_response_bytes }
}

fn get(url: &str) -> HttpRequest {
    HttpRequest { method: "GET".into(), url: url.into(), headers: Vec::new(), body: Vec::new() }
}

#[test]
fn a_200_with_its_body_and_the_guest_headers() {
    let server = Server::start(|_, s| respond(s, "200 OK", "", b"hello"));
    let mut req = get(&server.url("/data"));
    req.headers = b"X-Igor: 1\nAccept: text/plain".to_vec();
    let resp = UreqGateway::new().request(&req, &policy(&[&server], 2000, 1024)).unwrap();
    assert_eq!(resp, HttpResponse { status: 200, body: b"hello".to_vec() });
    let heads = server.heads.lock().unwrap().clone();
    assert!(heads[0].starts_with("GET /data HTTP/1.1\r\n"), "{heads:?}");
    assert!(heads[0].to_ascii_lowercase().contains("x-igor: 1\r\n"), "{heads:?}");
}

#[test]
fn error_statuses_are_responses_for_the_guest() {
    let server = Server::start(|_, s| respond(s, "404 Not Found", "", b"nope"));
    let resp = UreqGateway::new().request(&get(&server.url("/missing")), &policy(&[&server], 2000, 1024)).unwrap();
    assert_eq!(resp, HttpResponse { status: 404, body: b"nope".to_vec() });
}

#[test]
fn post_sends_the_body() {
    let server = Server::start(|head, s| {
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        respond(s, "201 Created", "", &body);
    });
    let mut req = get(&server.url("/echo"));
    req.method = "POST".into();
    req.body = b"payload".to_vec();
    let resp = UreqGateway::new().request(&req, &policy(&[&server], 2000, 1024)).unwrap();
    assert_eq!(resp, HttpResponse { status: 201, body: b"payload".to_vec() });
}

#[test]
fn a_redirect_within_allowed_hosts_is_followed() {
    let server = Server::start(|head, s| {
        if head.starts_with("GET /a ") {
            respond(s, "302 Found", "Location: /b\r\n", b"");
        } else {
            respond(s, "200 OK", "", b"landed");
        }
    });
    let resp = UreqGateway::new().request(&get(&server.url("/a")), &policy(&[&server], 2000, 1024)).unwrap();
    assert_eq!(resp, HttpResponse { status: 200, body: b"landed".to_vec() });
    assert_eq!(server.request_lines(), vec!["GET /a HTTP/1.1", "GET /b HTTP/1.1"]);
}

#[test]
fn a_redirect_to_a_host_outside_allowed_hosts_is_refused_and_never_contacted() {
    let evil = Server::start(|_, s| respond(s, "200 OK", "", b"stolen"));
    let evil_url = evil.url("/steal");
    let location = format!("Location: {evil_url}\r\n");
    let server = Server::start(move |_, s| respond(s, "307 Temporary Redirect", &location, b""));
    let err = UreqGateway::new().request(&get(&server.url("/a")), &policy(&[&server], 2000, 1024)).unwrap_err();
    assert_eq!(err, HttpError::HostNotAllowed(evil_url));
    assert_eq!(server.request_lines(), vec!["GET /a HTTP/1.1"]);
    thread::sleep(Duration::from_millis(50));
    assert!(evil.request_lines().is_empty(), "the disallowed host was contacted");
}

#[test]
fn redirect_loops_stop_after_max_redirects() {
    let server = Server::start(|_, s| respond(s, "301 Moved Permanently", "Location: /loop\r\n", b""));
    let err = UreqGateway::new().request(&get(&server.url("/loop")), &policy(&[&server], 3000, 1024)).unwrap_err();
    assert!(matches!(err, HttpError::Network(ref m) if m.contains("redirects")), "{err:?}");
    assert_eq!(server.request_lines().len(), MAX_REDIRECTS + 1);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start(|_, _| thread::sleep(Duration::from_millis(1500)));
    let start = Instant::now();
    let err = UreqGateway::new().request(&get(&server.url("/slow")), &policy(&[&server], 300, 1024)).unwrap_err();
    assert_eq!(err, HttpError::Timeout);
    assert!(start.elapsed() < Duration::from_millis(1200), "took {:?}", start.elapsed());
}

#[test]
fn a_body_that_stalls_times_out() {
    let server = Server::start(|_, s| {
        send(s, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nab");
        thread::sleep(Duration::from_millis(1500));
    });
    let start = Instant::now();
    let err = UreqGateway::new().request(&get(&server.url("/stall")), &policy(&[&server], 300, 1024)).unwrap_err();
    assert_eq!(err, HttpError::Timeout);
    assert!(start.elapsed() < Duration::from_millis(1200), "took {:?}", start.elapsed());
}

#[test]
fn a_declared_length_over_the_cap_is_refused_with_that_length() {
    let server = Server::start(|_, s| respond(s, "200 OK", "", &[b'x'; 2000]));
    let err = UreqGateway::new().request(&get(&server.url("/big")), &policy(&[&server], 2000, 1024)).unwrap_err();
    assert_eq!(err, HttpError::TooLarge { needed: 2000 });
}

#[test]
fn a_body_exactly_at_the_cap_is_delivered() {
    let server = Server::start(|_, s| respond(s, "200 OK", "", &[b'x'; 1024]));
    let resp = UreqGateway::new().request(&get(&server.url("/full")), &policy(&[&server], 2000, 1024)).unwrap();
    assert_eq!(resp.body.len(), 1024);
}

#[test]
fn an_undeclared_length_over_the_cap_stops_reading_at_cap_plus_one() {
    let server = Server::start(|_, s| {
        send(s, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        for _ in 0..3 {
            send(s, format!("{:x}\r\n{}\r\n", 500, "y".repeat(500)).as_bytes());
        }
        send(s, b"0\r\n\r\n");
    });
    let err = UreqGateway::new().request(&get(&server.url("/chunked")), &policy(&[&server], 2000, 1024)).unwrap_err();
    assert_eq!(err, HttpError::TooLarge { needed: 1025 });
}

#[test]
fn a_refused_connection_is_a_network_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let host = format!("127.0.0.1:{port}");
    let p = HttpPolicy { allowed_hosts: vec![host.clone()], timeout_ms: 2000, max_response_bytes: 1024 };
    let err = UreqGateway::new().request(&get(&format!("http://{host}/")), &p).unwrap_err();
    assert!(matches!(err, HttpError::Network(_)), "{err:?}");
}

#[test]
fn a_first_url_outside_allowed_hosts_is_refused_without_a_connection() {
    let server = Server::start(|_, s| respond(s, "200 OK", "", b"hi"));
    let p = HttpPolicy { allowed_hosts: vec!["api.example".into()], timeout_ms: 2000, max_response_bytes: 1024 };
    let err = UreqGateway::new().request(&get(&server.url("/")), &p).unwrap_err();
    assert_eq!(err, HttpError::HostNotAllowed(server.url("/")));
    thread::sleep(Duration::from_millis(50));
    assert!(server.request_lines().is_empty());
}
