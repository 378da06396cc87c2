//! `meshwork echo`: a test backend for examples, tests and benchmarks, as Istio's echo app
//! and fortio serve Istio. It answers HTTP/1.1 and HTTP/2 (cleartext, prior knowledge) with
//! its name and the request it saw, as JSON, and echoes gRPC messages back (streaming, with
//! trailers). Misbehaviour on request: `?delay=200ms`, `?status=503`, `?size=1024`, and
//! `?fail_every=3` (every third such request answers 503).
//!
//! With `--call URL` it is one service of an application, as Bookinfo's are: for each
//! request it calls each URL in turn (through `--via`, its sidecar's egress listener, with
//! the URL's host as `Host`), passes on the headers Bookinfo propagates (`end-user`,
//! `x-request-id`, the trace headers), and answers with `x-echo-chain`: its name and, in
//! parentheses, the chains of the services it called (`productpage(details,reviews-v2(ratings))`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type EchoBody = UnsyncBoxBody<Bytes, BoxError>;

/// Arguments of `meshwork echo`.
#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on.
    #[arg(long)]
    port: u16,
    /// Name to answer with (default: `echo-PORT`).
    #[arg(long)]
    name: Option<String>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Print one JSON line per request (method, path, host) on stdout.
    #[arg(long)]
    log: bool,
    /// Raw TCP instead of HTTP: send the name and a newline, then echo every byte back;
    /// when the client closes its side, close ours.
    #[arg(long)]
    tcp: bool,
    /// Call this URL for every request (repeatable), as an application calls the services
    /// it depends on.
    #[arg(long = "call", value_name = "URL")]
    calls: Vec<String>,
    /// Send the calls to this address (the sidecar's egress listener) instead of the URL's
    /// host.
    #[arg(long, value_name = "ADDR")]
    via: Option<String>,
}

/// The services an echo app calls for each request, and how it reaches them.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// `http://reviews:9080/reviews`.
    pub urls: Vec<http::Uri>,
    /// `127.0.11.1:9080`: where the calls are sent, whatever their host.
    pub via: Option<String>,
}

/// The headers Bookinfo's services pass on to the services they call.
const PROPAGATED: [&str; 12] = [
    "end-user",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
];

/// One call: its status and the chain of the service that answered (`!503` when it gave
/// none, `!connect` when it could not be reached).
async fn call(uri: &http::Uri, via: Option<&str>, headers: &HeaderMap) -> (u16, String) {
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
    let target = via.map_or_else(
        || {
            if authority.contains(':') {
                authority.to_string()
            } else {
                format!("{authority}:80")
            }
        },
        str::to_string,
    );
    let Ok(stream) = tokio::net::TcpStream::connect(&target).await else {
        return (0, "!connect".into());
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return (0, "!connect".into());
    };
    tokio::spawn(conn);
    let mut request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a valid request");
    for name in PROPAGATED {
        if let Some(v) = headers.get(name) {
            request.headers_mut().insert(name, v.clone());
        }
    }
    match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let h = response.headers();
            let chain = h
                .get("x-echo-chain")
                .or_else(|| h.get("x-echo-name"))
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| format!("!{status}"), str::to_string);
            let _ = response.into_body().collect().await;
            (status, chain)
        }
        Err(_) => (0, "!reset".into()),
    }
}

/// Runs the echo server until the process is stopped.
pub fn run(args: Args) -> std::process::ExitCode {
    let name = args.name.unwrap_or_else(|| format!("echo-{}", args.port));
    let addr = SocketAddr::new(args.bind, args.port);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let urls = match args
        .calls
        .iter()
        .map(|u| {
            u.parse::<http::Uri>()
                .map_err(|e| format!("--call {u}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(urls) => urls,
        Err(e) => {
            eprintln!("meshwork echo: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let calls = Calls {
        urls,
        via: args.via,
    };
    let served = if args.tcp {
        runtime.block_on(serve_tcp(addr, name))
    } else {
        runtime.block_on(serve(addr, name, args.log, calls))
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshwork echo: cannot listen on {addr}: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Serves on `addr` forever, making `calls` for every request.
pub async fn serve(addr: SocketAddr, name: String, log: bool, calls: Calls) -> std::io::Result<()> {
    let calls = Arc::new(calls);
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "meshwork echo {name} listening on {}",
        listener.local_addr()?
    );
    let name: Arc<str> = name.into();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let counter = counter.clone();
        let calls = calls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                if log {
                    let host = req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("");
                    println!(
                        "{}",
                        serde_json::json!({"method": req.method().as_str(), "path": req.uri().to_string(), "host": host})
                    );
                }
                respond(req, name.clone(), peer, counter.clone(), calls.clone())
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The raw TCP echo.
pub async fn serve_tcp(addr: SocketAddr, name: String) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "meshwork echo {name} (tcp) listening on {}",
        listener.local_addr()?
    );
    let greeting: Arc<str> = format!("{name}\n").into();
    loop {
        let (stream, _) = listener.accept().await?;
        let greeting = greeting.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            if w.write_all(greeting.as_bytes()).await.is_ok() {
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        });
    }
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn parse_delay(text: &str) -> Option<Duration> {
    if let Some(ms) = text.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    text.strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

async fn respond(
    req: Request<Incoming>,
    name: Arc<str>,
    peer: SocketAddr,
    counter: Arc<std::sync::atomic::AtomicU64>,
    calls: Arc<Calls>,
) -> Result<Response<EchoBody>, Infallible> {
    if let Some(delay) = query_param(&req, "delay").and_then(parse_delay) {
        tokio::time::sleep(delay).await;
    }
    if req.headers().contains_key(http::header::UPGRADE) {
        return Ok(upgrade_echo(req, &name));
    }
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if is_grpc {
        return Ok(grpc_echo(req, &name));
    }
    let mut status = query_param(&req, "status")
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(every) = query_param(&req, "fail_every").and_then(|s| s.parse::<u64>().ok())
        && every > 0
        && (counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1).is_multiple_of(every)
    {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    let size = query_param(&req, "size").and_then(|s| s.parse::<usize>().ok());
    let mut made = Vec::new();
    for uri in &calls.urls {
        made.push((uri, call(uri, calls.via.as_deref(), req.headers()).await));
    }
    let chain = if made.is_empty() {
        name.to_string()
    } else {
        let inner: Vec<&str> = made.iter().map(|(_, (_, c))| c.as_str()).collect();
        format!("{name}({})", inner.join(","))
    };
    let (parts, body) = req.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let body = match size {
        Some(n) => Bytes::from(vec![b'x'; n]),
        None => {
            let host = parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or(parts.uri.authority().map(|a| a.as_str()))
                .unwrap_or("");
            let headers: serde_json::Map<String, serde_json::Value> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
                .collect();
            let mut text = serde_json::to_string(&serde_json::json!({
                "name": &*name,
                "method": parts.method.as_str(),
                "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
                "host": host,
                "authority": parts.uri.authority().map(|a| a.as_str()),
                "protocol": format!("{:?}", parts.version),
                "remote": peer.to_string(),
                "body_bytes": received,
                "headers": headers,
                "calls": made.iter().map(|(uri, (status, chain))| serde_json::json!({
                    "url": uri.to_string(),
                    "status": status,
                    "chain": chain,
                })).collect::<Vec<_>>(),
            }))
            .unwrap_or_default();
            text.push('\n');
            Bytes::from(text)
        }
    };
    let content_type = if size.is_some() {
        "text/plain"
    } else {
        "application/json"
    };
    let mut resp = Response::new(
        http_body_util::Full::new(body)
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert("x-echo-name", v);
    }
    if let Ok(v) = HeaderValue::from_str(&chain) {
        h.insert("x-echo-chain", v);
    }
    Ok(resp)
}

/// An HTTP/1.1 upgrade (WebSocket or any other protocol): answer 101, then send back every
/// byte received on the upgraded connection.
fn upgrade_echo(mut req: Request<Incoming>, name: &str) -> Response<EchoBody> {
    let protocol = req.headers()[http::header::UPGRADE].clone();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|n| match n {})
            .boxed_unsync(),
    );
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    h.insert(http::header::UPGRADE, protocol);
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-echo-name", v);
    }
    resp
}

/// gRPC: every message the client streams is sent back as it arrives, then the
/// `grpc-status` trailer: 0, or the request's `x-grpc-status`.
fn grpc_echo(req: Request<Incoming>, name: &str) -> Response<EchoBody> {
    let status = req
        .headers()
        .get("x-grpc-status")
        .cloned()
        .unwrap_or(HeaderValue::from_static("0"));
    let mut resp = Response::new(
        GrpcEcho {
            inner: req.into_body(),
            done: false,
            status,
        }
        .boxed_unsync(),
    );
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert("x-echo-name", v);
    }
    resp
}

struct GrpcEcho {
    inner: Incoming,
    done: bool,
    status: HeaderValue,
}

impl Body for GrpcEcho {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Err(_trailers) => continue,
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    self.done = true;
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", self.status.clone());
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
