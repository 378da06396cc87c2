//! The body type of the request path, and bodies that count what passes through them.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Errors carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type requests and responses use on the request path.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body from bytes (no bytes: [`empty`]).
pub fn full(data: impl Into<Bytes>) -> Body {
    let data = data.into();
    if data.is_empty() {
        return empty();
    }
    http_body_util::Full::new(data)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body. It has no size, so boxing it allocates nothing.
pub fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Any body, boxed.
pub fn boxed<B>(b: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end.
    Complete,
    /// Its source failed (an upstream that closed or reset mid-body).
    Failed,
    /// Dropped before its end (the reader went away).
    Abandoned,
}

/// A body that has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// How.
    pub end: BodyEnd,
    /// The `grpc-status` of its trailers, when they carry one.
    pub grpc_status: Option<u16>,
}

/// What runs once a body has ended.
pub type OnEnd = Box<dyn FnOnce(Ended) + Send>;

/// Counts the data bytes of a body, and runs `on_end` once when the body is done or dropped.
pub struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    on_end: Option<OnEnd>,
    grpc_status: Option<u16>,
}

impl Counted {
    /// Wraps `inner`, adding to `count`.
    pub fn new(inner: Body, count: Arc<AtomicU64>, on_end: Option<OnEnd>) -> Self {
        Self {
            inner,
            count,
            on_end,
            grpc_status: None,
        }
    }

    fn end(&mut self, end: BodyEnd) {
        if let Some(f) = self.on_end.take() {
            f(Ended {
                end,
                grpc_status: self.grpc_status,
            });
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                } else if let Some(trailers) = frame.trailers_ref() {
                    // A gRPC answer's status comes in its trailers.
                    this.grpc_status = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                }
            }
            Poll::Ready(None) => this.end(BodyEnd::Complete),
            Poll::Ready(Some(Err(_))) => this.end(BodyEnd::Failed),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // A reader may stop once the body says it has ended, without polling again.
        let end = if self.inner.is_end_stream() {
            BodyEnd::Complete
        } else {
            BodyEnd::Abandoned
        };
        self.end(end);
    }
}

/// Frames already read from a body, then the rest of it.
pub struct Prefixed {
    read: std::collections::VecDeque<Frame<Bytes>>,
    rest: Option<Body>,
}

impl Prefixed {
    /// `read` first, then whatever `rest` still yields (none when it ended).
    pub fn new(read: Vec<Frame<Bytes>>, rest: Option<Body>) -> Prefixed {
        Prefixed {
            read: read.into(),
            rest,
        }
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

/// A body that holds something (counter units) until it is done.
pub struct Holding<G> {
    inner: Body,
    _held: G,
}

impl<G> Holding<G> {
    /// `inner`, holding `held` until it is dropped.
    pub fn new(inner: Body, held: G) -> Holding<G> {
        Holding { inner, _held: held }
    }
}

impl<G: Unpin> HttpBody for Holding<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
