//! gRPC through the gateway end to end: an HTTP/2 (h2c) client streams messages to a
//! `grpc-` Service port; each message comes back through the gateway before the next is
//! sent (bidirectional streaming), and the `grpc-status` trailer arrives at the end.

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use support::*;
use tokio::sync::mpsc;

/// A request body fed from a channel, so the test decides when each message leaves.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b.freeze()
}

/// An HTTP/2 (h2c) connection to the gateway's `http` port.
async fn h2c<B>(http: u16) -> hyper::client::conn::http2::SendRequest<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", http))
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// A gateway on `http` routing `grpc.example.test` to the gRPC echo on `backend`.
fn grpc_config(http: u16, backend: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: [{{name: http2, port: 80, targetPort: {http}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: grpc, protocol: GRPC}}
    hosts: ["grpc.example.test"]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec:
  ports: [{{name: grpc-echo, port: 9000}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: echo, namespace: apps}}
subsets:
- addresses: [{{ip: 127.0.0.1}}]
  ports: [{{name: grpc-echo, port: {backend}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: apps}}
spec:
  hosts: [grpc.example.test]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: echo}}}}]
"#
    )
}

#[test]
fn grpc_streams_both_ways_with_trailers() {
    let mut mesh = Mesh::new("grpc");
    let http = free_port();
    let backend = mesh.echo("grpc-echo");
    mesh.config("config.yaml", &grpc_config(http, backend));
    mesh.up(&[]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut sender = h2c(http).await;
        let (tx, rx) = mpsc::channel(4);
        let req = http::Request::post("http://grpc.example.test/echo.Echo/Chat")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(ChannelBody(rx))
            .unwrap();
        let resp_fut = sender.send_request(req);
        tx.send(grpc_frame(b"first")).await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp_fut)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["x-echo-name"], "grpc-echo");
        let mut body = resp.into_body();
        let mut received = BytesMut::new();
        let next_message = |received: &mut BytesMut| -> Option<Vec<u8>> {
            if received.len() < 5 {
                return None;
            }
            let len = u32::from_be_bytes(received[1..5].try_into().unwrap()) as usize;
            if received.len() < 5 + len {
                return None;
            }
            received.advance(5);
            Some(received.split_to(len).to_vec())
        };
        for (i, msg) in [&b"first"[..], b"second", b"third"].iter().enumerate() {
            if i > 0 {
                tx.send(grpc_frame(msg)).await.unwrap();
            }
            // The echo of this message arrives while the request stream is still open.
            let got = loop {
                if let Some(m) = next_message(&mut received) {
                    break m;
                }
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .expect("an echoed message before the request ends")
                    .unwrap()
                    .unwrap();
                if let Ok(data) = frame.into_data() {
                    received.extend_from_slice(&data);
                }
            };
            assert_eq!(got, msg.to_vec());
        }
        drop(tx);
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            if let Ok(t) = frame.unwrap().into_trailers() {
                trailers = Some(t);
            }
        }
        assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    });
}

#[test]
fn the_grpc_status_of_trailers_is_a_metric_label() {
    let mut mesh = Mesh::new("grpc-status");
    let http = free_port();
    let backend = mesh.echo("grpc-echo");
    mesh.config("config.yaml", &grpc_config(http, backend));
    let metrics = free_port();
    mesh.up(&["--metrics", &format!("127.0.0.1:{metrics}")]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for status in ["0", "5", "5"] {
        runtime.block_on(async {
            let mut sender = h2c::<http_body_util::Full<Bytes>>(http).await;
            let req = http::Request::post("http://grpc.example.test/echo.Echo/Get")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("x-grpc-status", status)
                .body(http_body_util::Full::new(grpc_frame(b"one")))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let trailers = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .trailers()
                .cloned();
            assert_eq!(trailers.expect("trailers")["grpc-status"], status);
        });
    }
    let url = format!("http://127.0.0.1:{metrics}/stats/prometheus");
    let count = |status: &str| -> Option<String> {
        let text = String::from_utf8_lossy(&curl(&[&url]).stdout).into_owned();
        text.lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("request_protocol=\"grpc\"")
                    && l.contains(&format!("grpc_response_status=\"{status}\""))
            })
            .and_then(|l| l.rsplit(' ').next().map(str::to_string))
    };
    eventually(Duration::from_secs(5), "both statuses counted", || {
        count("0").as_deref() == Some("1") && count("5").as_deref() == Some("2")
    });
}
