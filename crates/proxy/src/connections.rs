//! The registry of downstream connections: how many are open, and the drain signal they
//! all watch. Draining (on SIGTERM) stops every listener from accepting, asks HTTP
//! connections to finish their requests in flight and close, and waits for the
//! connections to end, up to a deadline (Istio's `terminationDrainDuration`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Open connections and the drain signal.
#[derive(Debug)]
pub struct Registry {
    open: AtomicUsize,
    closed: Notify,
    draining: watch::Sender<bool>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            draining: watch::channel(false).0,
        }
    }
}

/// One open connection; dropping it unregisters the connection.
#[derive(Debug)]
pub struct Registered {
    registry: Arc<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.registry.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.registry.closed.notify_waiters();
        }
    }
}

impl Registry {
    /// Registers a connection for as long as the guard lives.
    pub fn register(self: &Arc<Self>) -> Registered {
        self.open.fetch_add(1, Ordering::AcqRel);
        Registered {
            registry: self.clone(),
        }
    }

    /// How many connections are open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A receiver that changes to `true` when draining starts.
    pub fn drain_signal(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Tells every listener and connection to drain.
    pub fn start_drain(&self) {
        self.draining.send_replace(true);
    }

    /// Starts draining and waits until every connection has closed or `deadline` passed.
    /// Returns the connections still open.
    pub async fn drain(&self, deadline: Duration) -> usize {
        self.start_drain();
        let wait = async {
            loop {
                let closed = self.closed.notified();
                if self.open() == 0 {
                    return;
                }
                closed.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_open_connections_up_to_the_deadline() {
        let registry = Arc::new(Registry::default());
        let guard = registry.register();
        let mut signal = registry.drain_signal();
        let r = registry.clone();
        let drained = tokio::spawn(async move { r.drain(Duration::from_secs(10)).await });
        signal.changed().await.unwrap();
        assert!(*signal.borrow(), "connections are told to drain");
        drop(guard);
        assert_eq!(drained.await.unwrap(), 0);

        let _stuck = registry.register();
        assert_eq!(registry.drain(Duration::from_millis(20)).await, 1);
    }
}

/// The time of a connection's last read or write, for its idle timeout.
#[derive(Debug, Clone)]
pub struct Activity {
    epoch: std::time::Instant,
    last_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            epoch: std::time::Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Completes once nothing was read or written for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let since = self.epoch.elapsed().saturating_sub(last);
            if since >= limit {
                return;
            }
            tokio::time::sleep(limit - since).await;
        }
    }
}

/// A stream that notes every read and write in its [`Activity`].
pub struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Activity) -> Tracked<S> {
        activity.touch();
        Tracked { inner, activity }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
