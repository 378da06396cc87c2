//! Request smuggling and malformed HTTP/1, end to end with raw sockets: what a gateway must
//! not forward is answered 400 (501 for a transfer coding it does not implement, 431 for
//! a head past the limits) and the connection is closed, and a backend that records every
//! request it reads sees none of it. What is forwarded is forwarded with one framing, in
//! the backend's own terms: the requests it counts are the requests the client sent.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// One request as the backend read it: its head, and its body decoded of any chunking.
#[derive(Clone)]
struct Seen {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} + {:?}",
            self.head(),
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Seen {
    fn head(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
    /// Whether the body is framed one way, truthfully: a Content-Length that is its
    /// length, or chunked, never both.
    fn framed_once(&self) -> bool {
        let lengths = self.header_lines("content-length");
        let codings = self.header_lines("transfer-encoding");
        match (lengths.as_slice(), codings.as_slice()) {
            ([length], []) => *length == format!("content-length: {}", self.body.len()),
            ([], [coding]) => coding == "transfer-encoding: chunked",
            ([], []) => self.body.is_empty(),
            _ => false,
        }
    }

    fn header_lines(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.head()
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }
}

/// A backend that reads whole requests as a strict HTTP/1.1 server would (CRLF lines,
/// Content-Length or chunked bodies), records each, and answers 200 with the request's
/// path as the body.
struct RecordingBackend {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn read_line(r: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    (r.read_until(b'\n', &mut line).ok()? > 0).then_some(line)
}

fn read_request(r: &mut impl BufRead) -> Option<Seen> {
    let mut head = Vec::new();
    loop {
        let line = read_line(r)?;
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let mut body = Vec::new();
    if text.contains("\r\ntransfer-encoding: chunked\r\n") {
        loop {
            let size_line = read_line(r)?;
            let size = std::str::from_utf8(&size_line).ok()?.trim_end();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                while read_line(r)? != b"\r\n" {}
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).ok()?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(line) = text
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
    {
        body = vec![0; line.trim().parse().ok()?];
        r.read_exact(&mut body).ok()?;
    }
    Some(Seen { head, body })
}

fn recording_backend() -> RecordingBackend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some(request) = read_request(&mut reader) {
                    let path = request
                        .head()
                        .split(' ')
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    log.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                        path.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    RecordingBackend { port, seen }
}

/// A response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// The whole responses at the start of `buf`.
fn answers(buf: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let length: usize = head
            .to_ascii_lowercase()
            .split("\r\n")
            .find_map(|l| {
                l.strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_start = end + 4;
        if rest.len() < body_start + length {
            break;
        }
        out.push(Answer {
            status,
            head,
            body: rest[body_start..body_start + length].to_vec(),
        });
        rest = &rest[body_start + length..];
    }
    out
}

/// Sends `bytes` on a new connection and reads until `want` whole responses arrived or
/// the gateway closed: the responses, and whether it closed.
fn exchange(port: u16, bytes: &[u8], want: usize) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // A gateway that answers before reading all may reset the rest of a large write.
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (answers(&buf), true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (answers(&buf), true);
            }
            Err(_) => {}
        }
        if want > 0 && answers(&buf).len() >= want {
            // Whether the gateway closes after them.
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let closed = match s.read(&mut chunk) {
                Ok(0) => true,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    false
                }
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            };
            return (answers(&buf), closed);
        }
    }
    (answers(&buf), false)
}

const HOST: &[u8] = b"Host: app.example.test\r\n";

fn post(extra: &[u8], body: &[u8]) -> Vec<u8> {
    [b"POST /p HTTP/1.1\r\n", HOST, extra, b"\r\n", body].concat()
}

fn get(extra: &[u8]) -> Vec<u8> {
    [b"GET /g HTTP/1.1\r\n", HOST, extra, b"\r\n"].concat()
}

fn gateway(label: &str) -> (Mesh, u16, RecordingBackend) {
    let mut mesh = Mesh::new(label);
    let http = free_port();
    let backend = recording_backend();
    app_on_port_80(
        &mesh,
        http,
        &[backend.port],
        "[app.example.test]",
        "  - route: [{destination: {host: app}}]\n",
    );
    mesh.up(&[]);
    (mesh, http, backend)
}

/// What the backend read since `from`.
fn seen_since(backend: &RecordingBackend, from: usize) -> Vec<Seen> {
    backend.seen.lock().unwrap()[from..].to_vec()
}

#[test]
fn malformed_and_ambiguous_requests_are_refused_closed_and_never_forwarded() {
    let (_mesh, http, backend) = gateway("smuggling");
    let chunked = b"Transfer-Encoding: chunked\r\n";
    let many_headers: Vec<u8> = (0..101)
        .flat_map(|i| format!("x-h{i}: v\r\n").into_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Lengths.
        (
            "two different Content-Lengths",
            post(b"Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
            400,
        ),
        (
            "a Content-Length list",
            post(b"Content-Length: 3, 4\r\n", b"abcd"),
            400,
        ),
        (
            "a signed Content-Length",
            post(b"Content-Length: +3\r\n", b"abc"),
            400,
        ),
        (
            "a hex Content-Length",
            post(b"Content-Length: 0x3\r\n", b"abc"),
            400,
        ),
        (
            "a negative Content-Length",
            post(b"Content-Length: -3\r\n", b"abc"),
            400,
        ),
        (
            "a Content-Length with a space",
            post(b"Content-Length: 1 2\r\n", b"abc"),
            400,
        ),
        // Transfer codings.
        (
            "chunked ,x",
            post(b"Transfer-Encoding: chunked ,x\r\n", b"0\r\n\r\n"),
            400,
        ),
        (
            "xchunked",
            post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
            400,
        ),
        (
            "chunkedx",
            post(b"Transfer-Encoding: chunkedx\r\n", b"0\r\n\r\n"),
            400,
        ),
        (
            "identity",
            post(b"Transfer-Encoding: identity\r\n", b""),
            400,
        ),
        (
            "a space before the colon",
            post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
            400,
        ),
        (
            "chunked, then identity",
            post(
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
                b"0\r\n\r\n",
            ),
            400,
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            [
                &b"POST /p HTTP/1.0\r\n"[..],
                HOST,
                chunked,
                b"\r\n0\r\n\r\n",
            ]
            .concat(),
            400,
        ),
        (
            "gzip, chunked",
            post(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
            501,
        ),
        (
            "chunked twice",
            post(
                b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                b"0\r\n\r\n",
            ),
            501,
        ),
        // Line folding and line ends.
        ("an obs-fold line", get(b"X-A: 1\r\n folded\r\n"), 400),
        (
            "a folded Transfer-Encoding",
            post(b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
            400,
        ),
        (
            "a bare CR ending the request line",
            [&b"GET / HTTP/1.1\r"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        ("a bare CR in a value", get(b"X-A: a\rb\r\n"), 400),
        // Chunks.
        (
            "a chunk size that is not hex",
            post(chunked, b"zz\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a chunk size past 64 bits",
            post(chunked, b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a negative chunk size",
            post(chunked, b"-3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a chunk size after a space",
            post(chunked, b" 3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a 0x chunk size",
            post(chunked, b"0x3\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a bare LF in a chunk extension",
            post(chunked, b"3;a\nb\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "a bare CR in a chunk extension",
            post(chunked, b"3;a\rb\r\nabc\r\n0\r\n\r\n"),
            400,
        ),
        (
            "chunk lines ended by LF",
            post(chunked, b"3\nabc\n0\n\n"),
            400,
        ),
        (
            "chunk data longer than its size",
            post(chunked, b"3\r\nabcX0\r\n\r\n"),
            400,
        ),
        // Names and values.
        ("a NUL in a name", get(b"X-\x00A: 1\r\n"), 400),
        ("a NUL in a value", get(b"X-A: a\x00b\r\n"), 400),
        ("a control byte in a value", get(b"X-A: a\x01b\r\n"), 400),
        ("DEL in a value", get(b"X-A: a\x7fb\r\n"), 400),
        ("a control byte in a name", get(b"X-\x01A: 1\r\n"), 400),
        ("a space in a name", get(b"X A: 1\r\n"), 400),
        ("a line without a colon", get(b"X-A\r\n"), 400),
        ("an empty name", get(b": 1\r\n"), 400),
        // Host.
        (
            "a space before Host's colon",
            b"GET / HTTP/1.1\r\nHost : app.example.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a Host with a path",
            b"GET / HTTP/1.1\r\nHost: app.example.test/x\r\n\r\n".to_vec(),
            400,
        ),
        (
            "a Host with user info",
            b"GET / HTTP/1.1\r\nHost: evil@app.example.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "an absolute-form target without a Host",
            b"GET http://app.example.test/abs HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "HTTP/1.0 without a Host",
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            400,
        ),
        // Request lines.
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), 400),
        (
            "HTTP/1.2",
            [&b"GET / HTTP/1.2\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "HTTP/2.0 in a request line",
            [&b"GET / HTTP/2.0\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "a lower-case version",
            [&b"GET / http/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "a method with a delimiter",
            [&b"G(T / HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "a space in the target",
            [&b"GET /a b HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "two spaces after the method",
            [&b"GET  / HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "a NUL in the target",
            [&b"GET /a\x00b HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        (
            "a tab in the target",
            [&b"GET /a\tb HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
            400,
        ),
        // Limits.
        (
            "a 70 KiB target",
            [
                &b"GET /"[..],
                &b"a".repeat(70 * 1024),
                b" HTTP/1.1\r\n",
                HOST,
                b"\r\n",
            ]
            .concat(),
            431,
        ),
        ("101 headers", get(&many_headers), 431),
    ];
    let mut failures = Vec::new();
    for (i, (what, bytes, status)) in cases.iter().enumerate() {
        let from = backend.seen.lock().unwrap().len();
        let (got, closed) = exchange(http, bytes, 0);
        let first = got.first().map(|a| a.status);
        if first != Some(*status) || !closed || got.len() != 1 {
            failures.push(format!(
                "{what}: answered {:?}, closed: {closed}",
                got.iter().map(|a| a.status).collect::<Vec<_>>()
            ));
        }
        // A good request now is the first the backend reads since the case: the bad one
        // reached it neither before nor after its answer.
        let marker = format!("/marker-{i}");
        let (good, _) = exchange(
            http,
            format!("GET {marker} HTTP/1.1\r\nHost: app.example.test\r\n\r\n").as_bytes(),
            1,
        );
        assert_eq!(good.first().map(|a| a.status), Some(200), "after {what}");
        let seen = seen_since(&backend, from);
        if seen.len() != 1 || !seen[0].head().starts_with(&format!("GET {marker} ")) {
            failures.push(format!(
                "{what}: the backend read {:?}",
                seen.iter().map(Seen::head).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn what_is_forwarded_has_one_framing_and_the_backend_counts_what_the_client_sent() {
    let (_mesh, http, backend) = gateway("framing");
    let chunked = b"Transfer-Encoding: chunked\r\n";
    let one = |bytes: &[u8], status: u16| -> (Vec<Seen>, bool) {
        let from = backend.seen.lock().unwrap().len();
        let (got, closed) = exchange(http, bytes, 1);
        assert_eq!(
            got.iter().map(|a| a.status).collect::<Vec<_>>(),
            [status],
            "{}",
            String::from_utf8_lossy(bytes)
        );
        (seen_since(&backend, from), closed)
    };

    // Both lengths: the chunked framing alone is taken (RFC 9112 6.1), the backend gets
    // the body framed once, and the connection is closed after the answer. A Content-Length
    // of 0 hides nothing: the chunk `GET /` is a body, not a second request.
    for head in [
        &b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"[..],
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    ] {
        let (seen, closed) = one(&post(head, b"5\r\nGET /\r\n0\r\n\r\n"), 200);
        assert_eq!(seen.len(), 1, "one request: {seen:?}");
        assert_eq!(seen[0].body, b"GET /");
        assert!(seen[0].framed_once(), "{seen:?}");
        assert!(closed, "the connection is closed after a request with both");
    }
    // The same Content-Length twice is one Content-Length (RFC 9112 6.3).
    let (seen, _) = one(
        &post(b"Content-Length: 3\r\nContent-Length: 3\r\n", b"abc"),
        200,
    );
    assert_eq!(
        seen[0].header_lines("content-length"),
        ["content-length: 3"]
    );
    assert_eq!(seen[0].body, b"abc");
    // `chunked` in any case, or after a tab, is chunked.
    for head in [
        &b"Transfer-Encoding: CHUNKED\r\n"[..],
        b"transfer-ENCODING: chunked\r\n",
        b"Transfer-Encoding:\tchunked\r\n",
    ] {
        let (seen, _) = one(&post(head, b"3\r\nabc\r\n0\r\n\r\n"), 200);
        assert_eq!(seen[0].body, b"abc", "{}", String::from_utf8_lossy(head));
        assert!(seen[0].framed_once(), "{seen:?}");
    }
    // Chunk extensions and trailers stay with the gateway: a trailer cannot reach the
    // backend as a header (here a Content-Length).
    let (seen, _) = one(&post(chunked, b"3;name=value\r\nabc\r\n0\r\n\r\n"), 200);
    assert_eq!(seen[0].body, b"abc");
    let (seen, _) = one(
        &post(chunked, b"3\r\nabc\r\n0\r\nContent-Length: 50\r\n\r\n"),
        200,
    );
    assert_eq!(seen[0].body, b"abc");
    assert!(seen[0].framed_once(), "{seen:?}");
    // Bare LF ends lines, as nginx takes it (RFC 9112 2.2); what is forwarded ends every
    // line with CRLF, and a value keeps its obs-text bytes.
    let (seen, _) = one(
        b"GET /lf HTTP/1.1\nHost: app.example.test\nX-A: caf\xe9\r\n\r\n",
        200,
    );
    let head = &seen[0].head;
    assert!(
        head.iter()
            .enumerate()
            .all(|(i, b)| *b != b'\n' || (i > 0 && head[i - 1] == b'\r')),
        "{:?}",
        seen[0].head()
    );
    assert!(
        head.windows(10).any(|w| w == b"x-a: caf\xe9\r"),
        "{:?}",
        seen[0].head()
    );
    // An empty line before the request line is skipped (RFC 9112 2.2).
    let (seen, _) = one(&[&b"\r\n"[..], &get(b"")].concat(), 200);
    assert!(seen[0].head().starts_with("GET /g HTTP/1.1\r\n"));
    // An absolute-form target is routed by its authority and sent in origin form.
    let (seen, _) = one(
        b"GET http://app.example.test/abs?q=1 HTTP/1.1\r\nHost: other.example.test\r\n\r\n",
        200,
    );
    assert!(
        seen[0].head().starts_with("GET /abs?q=1 HTTP/1.1\r\n"),
        "{seen:?}"
    );
    assert_eq!(seen[0].header_lines("host"), ["host: app.example.test"]);
    // A fragment never leaves the gateway (nor decides a route).
    let (seen, _) = one(
        &[&b"GET /a#frag HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
        200,
    );
    assert!(
        seen[0].head().starts_with("GET /a HTTP/1.1\r\n"),
        "{seen:?}"
    );
    // HTTP/1.0 with a Host is served, and closed.
    let (seen, closed) = one(
        &[&b"GET /ten HTTP/1.0\r\n"[..], HOST, b"\r\n"].concat(),
        200,
    );
    assert_eq!(seen.len(), 1);
    assert!(closed, "HTTP/1.0 without keep-alive is closed");

    // Pipelined requests, with and without a body, are answered in order.
    let from = backend.seen.lock().unwrap().len();
    let pipelined = [
        post(b"Content-Length: 3\r\n", b"abc"),
        get(b"X-Second: 1\r\n"),
        [&b"GET /third HTTP/1.1\r\n"[..], HOST, b"\r\n"].concat(),
    ]
    .concat();
    let (got, closed) = exchange(http, &pipelined, 3);
    assert!(!closed, "pipelined requests keep the connection");
    assert_eq!(
        got.iter()
            .map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()))
            .collect::<Vec<_>>(),
        [
            (200, "/p".to_string()),
            (200, "/g".to_string()),
            (200, "/third".to_string())
        ]
    );
    let seen = seen_since(&backend, from);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].body, b"abc");
    assert!(got.iter().all(|a| a.head.contains("server: meshwork")));
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_mesh, http, backend) = gateway("expect");
    let from = backend.seen.lock().unwrap().len();
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        &[
            &b"POST /upload HTTP/1.1\r\n"[..],
            HOST,
            b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        ]
        .concat(),
    )
    .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    s.write_all(b"hello").unwrap();
    let mut out = Vec::new();
    while answers(&out).is_empty() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(answers(&out)[0].status, 200);
    let seen = seen_since(&backend, from);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"hello");
}
