//! Per-source connection caps: the accepted TCP connections, counted by the peer's IP address.
//! A source at its cap has its next connection closed at once, before any TLS work, so one host
//! cannot take every file descriptor and handshake slot of a server. The count goes down when
//! the connection is dropped, and the table holds only sources with open connections.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use shardsign_metrics::Metrics;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The default cap: far above what one honest client opens (one HTTP/2 connection carries
/// many calls), far below a server's file descriptors.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: u32 = 256;

const REFUSED_METRIC: &str = "shardsign_connections_refused_total";

type OpenBySource = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// Wraps a stream of accepted connections (tonic's `TcpIncoming`) with the cap.
pub struct PerSourceIncoming<S> {
    inner: S,
    open: OpenBySource,
    cap: u32,
    metrics: Option<Metrics>,
}

impl<S> PerSourceIncoming<S> {
    pub fn new(inner: S, cap: u32, metrics: Option<Metrics>) -> Self {
        if let Some(metrics) = &metrics {
            metrics.describe_counter(
                REFUSED_METRIC,
                "Connections closed at once because their source had too many open",
            );
        }
        PerSourceIncoming {
            inner,
            open: Arc::default(),
            cap: cap.max(1),
            metrics,
        }
    }

    /// Takes a slot for `ip`, or `None` if it has `cap` connections open.
    fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl<S> Stream for PerSourceIncoming<S>
where
    S: Stream<Item = io::Result<TcpStream>> + Unpin,
{
    type Item = io::Result<CountedStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let tcp = match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None => return Poll::Ready(None),
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                Some(Ok(tcp)) => tcp,
            };
            // A connection whose peer is already gone has nothing to serve.
            let Ok(peer) = tcp.peer_addr() else { continue };
            match self.admit(peer.ip()) {
                Some(slot) => {
                    return Poll::Ready(Some(Ok(CountedStream {
                        inner: tcp,
                        _slot: slot,
                    })));
                }
                None => {
                    tracing::debug!(source = %peer.ip(), cap = self.cap, "connection refused: too many open from this source");
                    if let Some(metrics) = &self.metrics {
                        metrics.inc(REFUSED_METRIC, "", &[("reason", "per_source_cap")]);
                    }
                    drop(tcp);
                }
            }
        }
    }
}

/// One source's claim on a connection; given back on drop.
struct Slot {
    ip: IpAddr,
    open: OpenBySource,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection that holds its source's slot while it lives.
pub struct CountedStream {
    inner: TcpStream,
    _slot: Slot,
}

impl Connected for CountedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_stream::StreamExt;
    use tokio_stream::wrappers::TcpListenerStream;

    #[tokio::test]
    async fn a_source_at_its_cap_is_closed_at_once_and_its_slots_come_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let mut incoming =
            PerSourceIncoming::new(TcpListenerStream::new(listener), 2, Some(metrics.clone()));
        let _a = TcpStream::connect(address).await.unwrap();
        let first = incoming.next().await.unwrap().unwrap();
        let _b = TcpStream::connect(address).await.unwrap();
        let second = incoming.next().await.unwrap().unwrap();
        // The third from the same source is closed at once (its reader sees the end)...
        let mut third = TcpStream::connect(address).await.unwrap();
        let waiting = tokio::spawn(async move {
            let next = incoming.next().await;
            (incoming, next)
        });
        let mut byte = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut third, &mut byte)
                .await
                .unwrap(),
            0
        );
        // ...and the fourth, after a slot was given back, is admitted.
        drop(first);
        let _d = TcpStream::connect(address).await.unwrap();
        let (incoming, fourth) = waiting.await.unwrap();
        let fourth = fourth.unwrap().unwrap();
        assert!(
            metrics
                .render()
                .contains("shardsign_connections_refused_total{reason=\"per_source_cap\"} 1"),
            "{}",
            metrics.render()
        );
        drop((second, fourth));
        assert!(
            incoming.open.lock().unwrap().is_empty(),
            "no entry for a source with nothing open"
        );
    }
}
