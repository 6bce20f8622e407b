//! A connection has to send its first request head in time: [`FirstRequest`] wraps an
//! axum-server acceptor, and its stream ([`Guarded`]) fails reads with `TimedOut` when the blank
//! line that ends the first request head has not arrived within the timeout of the connection's
//! acceptance (the TLS handshake included). Later requests on the connection are hyper's to
//! time (`header_read_timeout`), and an upgraded connection (a WebSocket) is not limited at all.
//! A connection that opens with the HTTP/2 preface is closed at once: the server speaks
//! HTTP/1.1 only (and offers only that by ALPN).
//!
//! Why by hand: hyper's `header_read_timeout` starts only once an HTTP/1 connection reads its
//! head, and axum-server serves through hyper-util's version detection (also with
//! `http1_only`, which does nothing for connections with upgrades), which waits for a
//! connection's first bytes without any limit: a connection that sends nothing, or a few bytes
//! of the HTTP/2 preface, stayed open for ever. No option of these crates bounds that wait. The
//! check itself is small: it watches the bytes as they are read for the end of the head (a line
//! feed, an optional carriage return, a line feed), see [`HeadScan`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What [`HeadScan::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head goes on.
    More,
    /// The blank line that ends the head was read.
    Complete,
    /// The connection opened with the HTTP/2 preface (`PRI * HTTP/2.0`).
    Http2,
}

/// Watches the first bytes of a connection for the end of the first request head. Sans-IO.
#[derive(Debug, Clone, Default)]
pub struct HeadScan {
    read: usize,
    /// The last byte other than a carriage return was a line feed.
    after_newline: bool,
}

/// How an HTTP/2 connection begins.
const H2_START: &[u8] = b"PRI ";

impl HeadScan {
    /// Takes the next bytes read.
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        for &b in bytes {
            if self.read < H2_START.len() {
                let same_so_far = H2_START.get(self.read) == Some(&b);
                self.read += 1;
                if same_so_far && self.read == H2_START.len() {
                    return Scan::Http2;
                }
                if !same_so_far {
                    // Not the preface: never look again.
                    self.read = usize::MAX;
                }
            }
            match b {
                b'\n' if self.after_newline => return Scan::Complete,
                b'\n' => self.after_newline = true,
                b'\r' => {}
                _ => self.after_newline = false,
            }
        }
        Scan::More
    }
}

/// An acceptor whose streams must deliver their first request head within `timeout` of being
/// accepted (see the module documentation).
#[derive(Debug, Clone)]
pub struct FirstRequest<A> {
    inner: A,
    timeout: Duration,
}

impl<A> FirstRequest<A> {
    /// Wraps `inner` (axum-server's default acceptor, or its rustls acceptor).
    pub fn new(inner: A, timeout: Duration) -> Self {
        FirstRequest { inner, timeout }
    }
}

impl<A, I, S> Accept<I, S> for FirstRequest<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Guarded<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let deadline = Instant::now() + self.timeout;
        let accepted = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = accepted.await?;
            Ok((Guarded::new(stream, deadline), service))
        })
    }
}

/// A stream that must deliver its first request head by a deadline.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    /// Until the first head is complete: the scan and the deadline.
    head: Option<(HeadScan, Pin<Box<Sleep>>)>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, deadline: Instant) -> Self {
        Guarded {
            inner,
            head: Some((
                HeadScan::default(),
                Box::pin(tokio::time::sleep_until(deadline)),
            )),
        }
    }
}

fn too_slow() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the first request head did not arrive in time",
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some((scan, deadline)) = &mut this.head else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let new = buf.filled().get(before..).unwrap_or_default();
                match scan.feed(new) {
                    Scan::Complete => this.head = None,
                    Scan::Http2 => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "HTTP/2 is not served",
                        )))
                    }
                    // Bytes that trickle in do not extend the deadline.
                    Scan::More if Instant::now() >= deadline.deadline() => {
                        return Poll::Ready(Err(too_slow()))
                    }
                    Scan::More => {}
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(too_slow())),
                Poll::Pending => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn scan_all(chunks: &[&[u8]]) -> Vec<Scan> {
        let mut s = HeadScan::default();
        chunks.iter().map(|c| s.feed(c)).collect()
    }

    #[test]
    fn the_head_ends_at_its_blank_line() {
        use Scan::*;
        assert_eq!(
            scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"]),
            [Complete]
        );
        assert_eq!(
            scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n", b"\r", b"\n"]),
            [More, More, More, Complete]
        );
        assert_eq!(scan_all(&[b"GET / HTTP/1.1\nHost: x\n\n"]), [Complete]);
        assert_eq!(
            scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "]),
            [More]
        );
        assert_eq!(scan_all(&[b"POST / HTTP/1.1\r\n"]), [More]);
        assert_eq!(scan_all(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), [Http2]);
        assert_eq!(scan_all(&[b"PR", b"I", b" *"]), [More, More, Http2]);
        assert_eq!(scan_all(&[b"PRIX / HTTP/1.1\r\n\r\n"]), [Complete]);
        assert_eq!(scan_all(&[b""]), [More]);
    }

    async fn read_some(stream: &mut Guarded<tokio::io::DuplexStream>) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        stream.read(&mut buf).await
    }

    #[tokio::test]
    async fn silence_and_a_half_head_time_out_a_whole_head_does_not() {
        // Real time, short: each wait below ends well after the deadline it tests.
        let timeout = Duration::from_millis(100);
        // Silence.
        let (_client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Instant::now() + timeout);
        let err = read_some(&mut g).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // Half a head, then more bytes after the deadline.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Instant::now() + timeout);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        assert_eq!(read_some(&mut g).await.expect("read"), 16);
        tokio::time::sleep(timeout * 2).await;
        client.write_all(b"X: y\r\n").await.expect("write");
        let err = read_some(&mut g).await.expect_err("too late");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // A whole head: no deadline afterwards (a WebSocket may be quiet).
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Instant::now() + timeout);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_some(&mut g).await.expect("read"), 27);
        tokio::time::sleep(timeout * 3).await;
        client.write_all(b"later").await.expect("write");
        assert_eq!(read_some(&mut g).await.expect("read"), 5);

        // The HTTP/2 preface.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut g = Guarded::new(server, Instant::now() + timeout);
        client
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        let err = read_some(&mut g).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
