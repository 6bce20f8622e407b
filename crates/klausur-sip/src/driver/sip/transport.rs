//! UDP, TCP and TLS transports that put [`inspect`] in front of the ezk endpoint.
//!
//! ezk's own transports hand every parseable message straight to the endpoint, which indexes
//! the first Via unchecked and keeps a task per message; so these take their place: each
//! message is inspected, then forwarded (`Endpoint::receive`), answered statelessly, or
//! dropped. Beyond that they limit messages per source address, stateless answers to strangers
//! (globally), and stream connections (per source and in total; strangers' connections are
//! closed at once; a message once begun, and the TLS handshake, must complete within
//! [`STREAM_MESSAGE_TIMEOUT`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use ezk_sip_core::transport::{Direction, ReceivedMessage, TpHandle, Transport};
use ezk_sip_core::Endpoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use super::inspect::{canonical_ip, inspect, stream_frame, InspectPolicy, Inspection, StreamFrame};
use super::state::EndpointState;

/// Time a stream peer has to complete a message (and the TLS handshake).
pub const STREAM_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Stream connections per source address.
const MAX_STREAMS_PER_SOURCE: usize = 32;
/// Stream connections in total.
const MAX_STREAMS: usize = 1024;
/// How long a write to a stream may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the receive paths share.
pub(crate) struct Receiver {
    pub(crate) endpoint: Endpoint,
    pub(crate) policy: InspectPolicy,
    pub(crate) state: Arc<EndpointState>,
}

impl Receiver {
    /// Handles one message from `source` that arrived on `handle`. Returns bytes to send back
    /// on the same transport, if any.
    fn dispatch(&self, bytes: &[u8], source: SocketAddr, handle: &TpHandle) -> Option<Bytes> {
        let stats = &self.state.stats;
        let allowed = self.policy.allows(source.ip());
        match inspect(bytes, source, &self.policy) {
            Inspection::KeepAlive => allowed.then(|| Bytes::from_static(b"\r\n")),
            Inspection::Drop(reason) => {
                if allowed {
                    stats.dropped.inc();
                    tracing::debug!(%source, ?reason, "dropped SIP message");
                } else {
                    stats.not_allowed.inc();
                }
                None
            }
            Inspection::Reply { status, response } => {
                let may = if allowed {
                    self.state.message_allowed(canonical_ip(source.ip()))
                } else {
                    stats.not_allowed.inc();
                    self.state.stranger_reply_allowed()
                };
                if !may {
                    stats.dropped.inc();
                    return None;
                }
                stats.stateless_replies.inc();
                tracing::debug!(%source, status, "answered without a transaction");
                Some(response)
            }
            Inspection::Forward(message) => {
                if !self.state.message_allowed(canonical_ip(source.ip())) {
                    stats.dropped.inc();
                    return None;
                }
                let message = *message;
                self.endpoint.receive(ReceivedMessage::new(
                    source,
                    message.buffer,
                    handle.clone(),
                    message.line,
                    message.headers,
                    message.body,
                ));
                None
            }
        }
    }
}

// ==== UDP

pub(crate) struct UdpTransport {
    socket: Arc<UdpSocket>,
    bound: SocketAddr,
}

impl UdpTransport {
    pub(crate) fn new(socket: Arc<UdpSocket>) -> io::Result<UdpTransport> {
        let bound = socket.local_addr()?;
        Ok(UdpTransport { socket, bound })
    }
}

impl fmt::Debug for UdpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UdpTransport({})", self.bound)
    }
}

impl fmt::Display for UdpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp:{}", self.bound)
    }
}

#[async_trait::async_trait]
impl Transport for UdpTransport {
    fn name(&self) -> &'static str {
        "UDP"
    }

    fn secure(&self) -> bool {
        false
    }

    fn reliable(&self) -> bool {
        false
    }

    fn bound(&self) -> SocketAddr {
        self.bound
    }

    fn sent_by(&self) -> SocketAddr {
        self.bound
    }

    fn direction(&self) -> Direction {
        Direction::None
    }

    async fn send(&self, message: &[u8], target: SocketAddr) -> io::Result<()> {
        self.socket.send_to(message, target).await.map(|_| ())
    }
}

/// Receives datagrams until the task is aborted.
pub(crate) async fn udp_loop(receiver: Arc<Receiver>, socket: Arc<UdpSocket>, handle: TpHandle) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, source) = match socket.recv_from(&mut buf).await {
            Ok(ok) => ok,
            Err(e) => {
                // ICMP errors surface here on some systems; do not spin.
                tracing::debug!(error = %e, "UDP receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let bytes = buf.get(..len).unwrap_or_default();
        if let Some(reply) = receiver.dispatch(bytes, source, &handle) {
            if let Err(e) = socket.send_to(&reply, source).await {
                tracing::debug!(error = %e, "UDP send error");
            }
        }
    }
}

// ==== TCP and TLS

type BoxedWriter = Box<dyn AsyncWrite + Send + Sync + Unpin>;

struct StreamTransport {
    name: &'static str,
    secure: bool,
    bound: SocketAddr,
    remote: SocketAddr,
    writer: Arc<tokio::sync::Mutex<BoxedWriter>>,
}

impl fmt::Debug for StreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({} <- {})", self.name, self.bound, self.remote)
    }
}

impl fmt::Display for StreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:remote={}",
            self.name.to_ascii_lowercase(),
            self.bound,
            self.remote
        )
    }
}

#[async_trait::async_trait]
impl Transport for StreamTransport {
    fn name(&self) -> &'static str {
        self.name
    }

    fn secure(&self) -> bool {
        self.secure
    }

    fn reliable(&self) -> bool {
        true
    }

    fn bound(&self) -> SocketAddr {
        self.bound
    }

    fn sent_by(&self) -> SocketAddr {
        self.bound
    }

    fn direction(&self) -> Direction {
        Direction::Incoming(self.remote)
    }

    async fn send(&self, message: &[u8], _target: SocketAddr) -> io::Result<()> {
        let mut writer = self.writer.lock().await;
        timeout(WRITE_TIMEOUT, async {
            writer.write_all(message).await?;
            writer.flush().await
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "stream write timed out"))?
    }
}

/// Counts stream connections per source and in total.
#[derive(Default)]
pub(crate) struct StreamCounter {
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

struct StreamGuard {
    counter: Arc<StreamCounter>,
    ip: IpAddr,
}

impl StreamCounter {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<StreamGuard> {
        let mut map = self.per_source.lock().ok()?;
        let total: usize = map.values().sum();
        let mine = map.entry(ip).or_insert(0);
        if *mine >= MAX_STREAMS_PER_SOURCE || total >= MAX_STREAMS {
            return None;
        }
        *mine += 1;
        Some(StreamGuard {
            counter: self.clone(),
            ip,
        })
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.counter.per_source.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

/// Accepts TCP (or, with `tls`, TLS) connections until the task is aborted. Connection tasks
/// are aborted with it.
pub(crate) async fn stream_accept_loop(
    receiver: Arc<Receiver>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    let counter = Arc::new(StreamCounter::default());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, remote) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = canonical_ip(remote.ip());
        if !receiver.policy.allows(ip) {
            receiver.state.stats.not_allowed.inc();
            continue;
        }
        let Some(guard) = counter.acquire(ip) else {
            receiver.state.stats.dropped.inc();
            continue;
        };
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let receiver = receiver.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _guard = guard;
            match tls {
                None => run_stream(receiver, stream, "TCP", false, local, remote).await,
                Some(acceptor) => {
                    match timeout(STREAM_MESSAGE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => run_stream(receiver, tls, "TLS", true, local, remote).await,
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn run_stream<S>(
    receiver: Arc<Receiver>,
    stream: S,
    name: &'static str,
    secure: bool,
    local: SocketAddr,
    remote: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    let (mut reader, writer): (_, WriteHalf<S>) = tokio::io::split(stream);
    let writer: Arc<tokio::sync::Mutex<BoxedWriter>> =
        Arc::new(tokio::sync::Mutex::new(Box::new(writer)));
    let handle = TpHandle::new(StreamTransport {
        name,
        secure,
        bound: local,
        remote,
        writer: writer.clone(),
    });
    let mut buf = BytesMut::with_capacity(8 * 1024);
    'read: loop {
        loop {
            match stream_frame(&buf) {
                StreamFrame::Incomplete => break,
                StreamFrame::Blank(n) => buf.advance(n),
                StreamFrame::KeepAlive(n) => {
                    buf.advance(n);
                    if handle.send(b"\r\n", remote).await.is_err() {
                        break 'read;
                    }
                }
                StreamFrame::Message(n) => {
                    let message = buf.split_to(n).freeze();
                    if let Some(reply) = receiver.dispatch(&message, remote, &handle) {
                        if handle.send(&reply, remote).await.is_err() {
                            break 'read;
                        }
                    }
                }
                StreamFrame::Invalid => {
                    receiver.state.stats.dropped.inc();
                    tracing::debug!(%remote, "unframeable SIP stream, closing");
                    break 'read;
                }
            }
        }
        // A message must complete in time; between messages the connection may idle.
        let read = if buf.is_empty() {
            reader.read_buf(&mut buf).await
        } else {
            match timeout(STREAM_MESSAGE_TIMEOUT, reader.read_buf(&mut buf)).await {
                Ok(read) => read,
                Err(_) => break,
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Close our side; dialogs that still hold the handle get send errors from now on.
    drop(handle);
    let locked = timeout(WRITE_TIMEOUT, writer.lock()).await;
    if let Ok(mut writer) = locked {
        let _ = timeout(WRITE_TIMEOUT, writer.shutdown()).await;
    }
}
