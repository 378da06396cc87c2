//! Reading what a client sends first, without consuming it: the TLS ClientHello (SNI and
//! ALPN, parsed by rustls), and PostgreSQL's plaintext SSLRequest that libpq sends before
//! TLS. What was read is replayed to whoever handles the connection next ([`Rewind`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a client may take to say what it wants (Envoy's TLS inspector waits 15 s).
pub const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest ClientHello accepted (several records of 16 KiB).
const MAX_HELLO: usize = 64 * 1024;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
pub const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How long a client on a port of undeclared protocol may take to show whether it speaks
/// HTTP before it is taken for other bytes (a server-first protocol says nothing).
pub const HTTP_DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// The request methods that start an HTTP/1 request line, and HTTP/2's preface.
const HTTP_STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP/2.0",
];

/// Whether `first` (the first bytes a client sent) starts HTTP/1 or HTTP/2: `None` while
/// they are a prefix of a start and more are needed.
pub fn looks_like_http(first: &[u8]) -> Option<bool> {
    if first.is_empty() {
        return None;
    }
    let mut undecided = false;
    for start in HTTP_STARTS {
        let n = first.len().min(start.len());
        if first[..n] == start[..n] {
            if n == start.len() {
                return Some(true);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(false) }
}

/// Whether the client on `stream` speaks HTTP, from what it sends first (without
/// consuming it); false when it sends nothing within [`HTTP_DETECTION_TIMEOUT`].
pub async fn detect_http(stream: &mut tokio::net::TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + HTTP_DETECTION_TIMEOUT;
    let mut buf = [0u8; 16];
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) => n,
            _ => return false,
        };
        if n == 0 {
            return false;
        }
        if let Some(http) = looks_like_http(&buf[..n]) {
            return http;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// Server name indication.
    pub sni: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
}

/// Why a connection was closed before it was routed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The client sent nothing in time.
    #[error("no ClientHello within {0:?}")]
    Timeout(Duration),
    /// The client closed before a whole ClientHello arrived.
    #[error("the client closed before a whole ClientHello arrived")]
    Closed,
    /// The bytes are not TLS.
    #[error("not a TLS ClientHello: {0}")]
    NotTls(String),
    /// A PostgreSQL client that did not ask for TLS cannot be routed by SNI.
    #[error("the PostgreSQL client did not request TLS (use sslmode=require or stronger)")]
    PostgresWithoutTls,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a whole ClientHello from `stream`, keeping every byte read in `buf`.
pub async fn read_client_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<ClientHello, InspectError> {
    tokio::time::timeout(INSPECT_TIMEOUT, async {
        loop {
            if let Some(hello) = parse_client_hello(buf)? {
                return Ok(hello);
            }
            if buf.len() >= MAX_HELLO {
                return Err(InspectError::NotTls("ClientHello too large".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(InspectError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| InspectError::Timeout(INSPECT_TIMEOUT))?
}

/// Parses a ClientHello from the bytes so far: `Ok(None)` when more bytes are needed.
pub fn parse_client_hello(data: &[u8]) -> Result<Option<ClientHello>, InspectError> {
    if let Some(first) = data.first()
        && *first != 0x16
    {
        return Err(InspectError::NotTls(format!(
            "first byte {first:#04x} is not a TLS handshake record"
        )));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(InspectError::NotTls(e.to_string())),
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            Ok(Some(ClientHello {
                sni: hello.server_name().map(str::to_string),
                alpn: hello
                    .alpn()
                    .map(|protos| {
                        protos
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect()
                    })
                    .unwrap_or_default(),
            }))
        }
        Ok(None) => Ok(None),
        Err((e, _)) => Err(InspectError::NotTls(e.to_string())),
    }
}

/// What the first bytes on a PostgreSQL port are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresPreamble {
    /// Too few bytes to tell.
    More,
    /// libpq's SSLRequest: TLS follows once it is answered with `S`.
    SslRequest,
    /// A TLS record at once (PostgreSQL 17's direct TLS).
    Tls,
    /// Anything else: a client that does not ask for TLS.
    Plain,
}

/// Classifies the first bytes a client sent on a PostgreSQL port.
pub fn postgres_preamble(first: &[u8]) -> PostgresPreamble {
    match first.first() {
        None => PostgresPreamble::More,
        Some(0x16) => PostgresPreamble::Tls,
        Some(_) if first.len() >= PG_SSL_REQUEST.len() => {
            if first[..PG_SSL_REQUEST.len()] == PG_SSL_REQUEST {
                PostgresPreamble::SslRequest
            } else {
                PostgresPreamble::Plain
            }
        }
        Some(_) if PG_SSL_REQUEST.starts_with(first) => PostgresPreamble::More,
        Some(_) => PostgresPreamble::Plain,
    }
}

/// On a PostgreSQL port: answers libpq's plaintext SSLRequest with `S` so the ClientHello
/// follows. Returns true when the client sent one (it must then be replayed upstream); a
/// client that starts with TLS at once (PostgreSQL 17's direct TLS) is left as it is.
pub async fn accept_postgres_ssl_request<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<bool, InspectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(INSPECT_TIMEOUT, async {
        loop {
            match postgres_preamble(buf) {
                PostgresPreamble::More => {}
                PostgresPreamble::Tls => return Ok(false),
                PostgresPreamble::Plain => return Err(InspectError::PostgresWithoutTls),
                PostgresPreamble::SslRequest => {
                    buf.drain(..PG_SSL_REQUEST.len());
                    stream.write_all(b"S").await?;
                    return Ok(true);
                }
            }
            // Never past the SSLRequest: what follows is the ClientHello, read later.
            let mut chunk = [0u8; 8];
            let want = PG_SSL_REQUEST.len() - buf.len();
            let n = stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(InspectError::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| InspectError::Timeout(INSPECT_TIMEOUT))?
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix` is read before `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix: Bytes::from(prefix),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.remaining());
            out.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn http_is_told_from_other_bytes_by_its_first_ones() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x",
            b"OPTIONS * HTTP/1.1",
            b"PRI * HTTP/2.0\r\n\r\nSM",
        ] {
            assert_eq!(looks_like_http(http), Some(true), "{http:?}");
        }
        for other in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"\0\0\0\x08\x04\xd2\x16\x2f",
            b"GETX",
            b"get / HTTP/1.1",
            b"SSH-2.0-OpenSSH",
            b"PRI * HTTP/1.1",
            b"\xff",
        ] {
            assert_eq!(looks_like_http(other), Some(false), "{other:?}");
        }
        for partial in [&b""[..], b"G", b"GE", b"GET", b"P", b"PRI * H", b"DELE"] {
            assert_eq!(looks_like_http(partial), None, "{partial:?}");
        }
        // Every prefix of every byte string decides at most once, and never flips.
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = (rng % 20) as usize;
            let pick = (rng >> 8) % 3;
            let bytes: Vec<u8> = (0..len)
                .map(|i| match pick {
                    0 => HTTP_STARTS[(rng as usize >> 3) % HTTP_STARTS.len()]
                        .get(i)
                        .copied()
                        .unwrap_or(b'x'),
                    _ => (rng.rotate_left(i as u32 * 5) & 0xff) as u8,
                })
                .collect();
            let mut decided = None;
            for n in 0..=bytes.len() {
                match (decided, looks_like_http(&bytes[..n])) {
                    (None, d) => decided = d,
                    (Some(was), Some(now)) => assert_eq!(was, now, "{bytes:?}"),
                    (Some(_), None) => panic!("undecided again: {bytes:?}"),
                }
            }
        }
    }

    #[test]
    fn the_postgres_preamble_is_told_by_its_first_bytes() {
        use PostgresPreamble::*;
        for (bytes, what) in [
            (&b""[..], More),
            (&PG_SSL_REQUEST[..3], More),
            (&PG_SSL_REQUEST[..], SslRequest),
            (b"\0\0\0\x08\x04\xd2\x16\x2f\x16\x03", SslRequest),
            (b"\x16", Tls),
            (b"\x16\x03\x01", Tls),
            // A plaintext StartupMessage: length 84, protocol 3.0.
            (b"\0\0\0\x54\0\x03\0\0user", Plain),
            (b"\0\0\0\x54", Plain),
            (b"GET / HTTP/1.1", Plain),
        ] {
            assert_eq!(postgres_preamble(bytes), what, "{bytes:?}");
        }
    }

    /// A real ClientHello, as rustls' client writes it.
    fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let mut conn =
            rustls::ClientConnection::new(Arc::new(config), sni.to_string().try_into().unwrap())
                .unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_and_alpn_even_when_split_into_pieces() {
        let hello = client_hello("db1.example.test", &["postgresql"]);
        for cut in [1, 5, 6, 40, hello.len() - 1] {
            assert_eq!(
                parse_client_hello(&hello[..cut]).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let parsed = parse_client_hello(&hello).unwrap().unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("db1.example.test"));
        assert_eq!(parsed.alpn, ["postgresql"]);
    }

    #[test]
    fn garbage_is_not_tls() {
        assert!(matches!(
            parse_client_hello(b"GET / HTTP/1.1\r\n"),
            Err(InspectError::NotTls(_))
        ));
        assert!(matches!(
            parse_client_hello(&[0x16, 3, 1, 0, 2, 99, 99]),
            Ok(None) | Err(_)
        ));
    }

    #[tokio::test]
    async fn answers_the_postgres_ssl_request_then_reads_the_hello_across_segments() {
        let hello = client_hello("db2.example.test", &[]);
        let (mut client, mut server) = tokio::io::duplex(64);
        let h2 = hello.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&PG_SSL_REQUEST).await.unwrap();
            let mut s = [0u8; 1];
            client.read_exact(&mut s).await.unwrap();
            assert_eq!(&s, b"S");
            for piece in h2.chunks(7) {
                client.write_all(piece).await.unwrap();
            }
            client
        });
        let mut buf = Vec::new();
        assert!(
            accept_postgres_ssl_request(&mut server, &mut buf)
                .await
                .unwrap()
        );
        let parsed = read_client_hello(&mut server, &mut buf).await.unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("db2.example.test"));
        assert_eq!(buf, hello, "every byte is kept for replay");
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_given_up_on_after_the_bounded_wait() {
        let (_client, mut server) = tokio::io::duplex(64);
        let mut buf = Vec::new();
        let started = tokio::time::Instant::now();
        let r = read_client_hello(&mut server, &mut buf).await;
        assert!(matches!(r, Err(InspectError::Timeout(_))), "{r:?}");
        assert_eq!(started.elapsed(), INSPECT_TIMEOUT);
    }

    #[tokio::test]
    async fn a_plaintext_postgres_startup_is_refused() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0, 0, 0, 40, 0, 3, 0, 0]).await.unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            accept_postgres_ssl_request(&mut server, &mut buf).await,
            Err(InspectError::PostgresWithoutTls)
        ));
    }
}
