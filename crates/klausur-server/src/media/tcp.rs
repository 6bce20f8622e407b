//! ICE-TCP (RFC 6544): the media worker's TCP listener and its connections, for browsers on
//! networks that drop UDP.
//!
//! The worker announces a passive TCP host candidate beside the UDP one (same IP, same port
//! number); the browser connects to it and sends the packets it would send as UDP datagrams,
//! each behind a 2-byte big-endian length (RFC 4571). This file does the framing and keeps
//! the connections; the worker routes whole frames exactly as datagrams: a connection's first
//! routable frame is a STUN binding request whose USERNAME starts with a peer's local ufrag,
//! and the connection belongs to that peer once such a request verifies with the peer's ICE
//! password. Frames of a connection that belongs to no peer yet and are not such a request
//! are dropped.
//!
//! Bounds, since anyone can connect:
//! - a frame longer than [`MAX_FRAME`] (a datagram the UDP path would drop too) or of length 0
//!   closes the connection;
//! - each connection holds at most one partial frame in ([`MAX_FRAME`] + 2 bytes) and at most
//!   [`MAX_OUT`] bytes out; what does not fit is dropped like a lost datagram (late media
//!   is useless), never buffered without end;
//! - at most [`MAX_CONNECTIONS`] connections, of which at most [`MAX_PENDING`] not yet
//!   belonging to a peer: a new connection beyond that closes the oldest pending one; a peer
//!   keeps at most [`MAX_PER_PEER`] connections (its oldest goes);
//! - a connection that belongs to no peer [`PENDING_TIMEOUT`] after it was accepted, or that
//!   received nothing for [`IDLE_TIMEOUT`] (browsers send a consent check every few
//!   seconds), is closed; so is every connection of a peer that leaves.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use klausur_room::PeerId;

use super::cmd::RoomKey;

/// Longest frame accepted (the payload after the length): the UDP path's receive slot.
pub const MAX_FRAME: usize = super::socket::SLOT;
/// Bytes queued for sending per connection, at most.
pub const MAX_OUT: usize = 128 * 1024;
/// Open connections, at most.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections not (yet) belonging to a peer, at most.
pub const MAX_PENDING: usize = 64;
/// Connections per peer, at most.
pub const MAX_PER_PEER: usize = 4;
/// A connection must belong to a peer this soon after it was accepted.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that received nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections accepted per turn of the worker loop, at most.
const ACCEPTS_PER_TURN: usize = 16;
/// Reads per connection per turn, at most (each up to the free space of its buffer).
const READS_PER_TURN: usize = 8;

/// Why a connection's input is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix of 0.
    Empty,
    /// A length prefix over [`MAX_FRAME`].
    TooLong(usize),
}

/// RFC 4571 deframing of one connection's input: at most one frame plus its length buffered.
pub struct Deframer {
    buf: Box<[u8; MAX_FRAME + 2]>,
    len: usize,
    /// Bytes of the frame returned last, removed on the next call.
    consumed: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer {
            buf: Box::new([0; MAX_FRAME + 2]),
            len: 0,
            consumed: 0,
        }
    }
}

impl Deframer {
    /// Space to read into (empty only when a whole frame is waiting: take it first).
    pub fn space(&mut self) -> &mut [u8] {
        self.compact();
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into [`Deframer::space`].
    pub fn filled(&mut self, n: usize) {
        self.len = (self.len + n).min(self.buf.len());
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.len, 0);
            self.len -= self.consumed;
            self.consumed = 0;
        }
    }

    /// The next whole frame, if one is buffered; an error for a length no frame may have.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        self.compact();
        if self.len < 2 {
            return Ok(None);
        }
        let n = u16::from_be_bytes([self.buf[0], self.buf[1]]) as usize;
        if n == 0 {
            return Err(FrameError::Empty);
        }
        if n > MAX_FRAME {
            return Err(FrameError::TooLong(n));
        }
        if self.len < 2 + n {
            return Ok(None);
        }
        self.consumed = 2 + n;
        Ok(Some(&self.buf[2..2 + n]))
    }
}

/// One accepted connection.
pub struct Conn {
    pub stream: TcpStream,
    pub input: Deframer,
    /// Framed packets waiting to be written, from `out_at` on.
    out: Vec<u8>,
    out_at: usize,
    /// The peer the connection belongs to, once a binding request over it verified.
    pub route: Option<(RoomKey, PeerId)>,
    accepted: Instant,
    /// Order of acceptance (instants of one turn are equal).
    seq: u64,
    pub last_receive: Instant,
}

impl Conn {
    pub fn wants_write(&self) -> bool {
        self.out_at < self.out.len()
    }

    /// Queues one packet, framed, and writes what the socket takes. False if the packet was
    /// dropped (too long to frame, or no room in the queue); an error closes the connection.
    pub fn send(&mut self, packet: &[u8]) -> std::io::Result<bool> {
        let Ok(len) = u16::try_from(packet.len()) else {
            return Ok(false);
        };
        if self.out.len() - self.out_at + 2 + packet.len() > MAX_OUT {
            // Try to make room first.
            self.write_out()?;
            if self.out.len() - self.out_at + 2 + packet.len() > MAX_OUT {
                return Ok(false);
            }
        }
        if self.out_at > 0 && self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(packet);
        self.write_out()?;
        Ok(true)
    }

    /// Writes queued bytes until the socket takes no more.
    pub fn write_out(&mut self) -> std::io::Result<()> {
        while self.out_at < self.out.len() {
            match self.stream.write(&self.out[self.out_at..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
            // A burst's buffer is not kept for the rest of the connection.
            if self.out.capacity() > 16 * 1024 {
                self.out.shrink_to(16 * 1024);
            }
        } else if self.out_at > MAX_OUT / 2 {
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
        Ok(())
    }
}

/// The listener and its connections, keyed by remote address (unique per connection).
pub struct Tcp {
    pub listener: TcpListener,
    pub conns: HashMap<SocketAddr, Conn>,
    /// Connections closed because of bad framing, and packets dropped for lack of room.
    pub refused_frames: u64,
    pub dropped_packets: u64,
    accepted: u64,
}

impl Tcp {
    pub fn new(listener: TcpListener) -> Self {
        Tcp {
            listener,
            conns: HashMap::new(),
            refused_frames: 0,
            dropped_packets: 0,
            accepted: 0,
        }
    }

    /// Accepts waiting connections (a bounded number per turn).
    pub fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, remote) = match self.listener.accept() {
                Ok((stream, remote)) => (stream, super::socket::canonical(remote)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. out of file descriptors: try again on the next turn.
                    tracing::debug!("tcp accept failed: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let pending = self.conns.values().filter(|c| c.route.is_none()).count();
            if pending >= MAX_PENDING || self.conns.len() >= MAX_CONNECTIONS {
                // Make room by closing the oldest connection that belongs to no peer; with
                // none (all belong to peers), the new one is refused.
                let oldest = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.route.is_none())
                    .min_by_key(|(_, c)| c.seq)
                    .map(|(a, _)| *a);
                match oldest {
                    Some(a) => {
                        self.conns.remove(&a);
                    }
                    None => continue,
                }
            }
            self.accepted += 1;
            self.conns.insert(
                remote,
                Conn {
                    stream,
                    input: Deframer::default(),
                    out: Vec::new(),
                    out_at: 0,
                    route: None,
                    accepted: now,
                    seq: self.accepted,
                    last_receive: now,
                },
            );
        }
    }

    /// Reads what `remote`'s connection has (bounded) and hands each whole frame to `frame`
    /// with the connection's route; `frame` returns the peer the connection now belongs to,
    /// if a frame proved it. Returns false when the connection is to be closed (closed by the
    /// browser, an error, or bad framing); then it is gone.
    pub fn read(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        frame: impl FnMut(Option<(RoomKey, PeerId)>, &[u8]) -> Option<(RoomKey, PeerId)>,
    ) -> bool {
        let (alive, learned) = self.read_frames(now, remote, frame);
        if !alive {
            self.conns.remove(&remote);
        } else if let Some(owner) = learned {
            self.assign(remote, owner);
        }
        alive
    }

    fn read_frames(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        mut frame: impl FnMut(Option<(RoomKey, PeerId)>, &[u8]) -> Option<(RoomKey, PeerId)>,
    ) -> (bool, Option<(RoomKey, PeerId)>) {
        let mut learned = None;
        let Some(conn) = self.conns.get_mut(&remote) else {
            return (false, None);
        };
        let mut scratch = [0u8; MAX_FRAME];
        for _ in 0..READS_PER_TURN {
            let space = conn.input.space();
            let n = match conn.stream.read(space) {
                Ok(0) => return (false, learned),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return (true, learned),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return (false, learned),
            };
            conn.input.filled(n);
            conn.last_receive = now;
            loop {
                let len = match conn.input.next_frame() {
                    Ok(Some(f)) => {
                        scratch[..f.len()].copy_from_slice(f);
                        f.len()
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(%remote, "tcp framing refused: {e:?}");
                        self.refused_frames += 1;
                        return (false, learned);
                    }
                };
                if let Some(owner) = frame(conn.route, &scratch[..len]) {
                    if conn.route != Some(owner) {
                        conn.route = Some(owner);
                        learned = Some(owner);
                    }
                }
            }
        }
        (true, learned)
    }

    /// Sends a packet to `remote`'s connection if it belongs to `owner`.
    pub fn send(&mut self, remote: SocketAddr, owner: (RoomKey, PeerId), packet: &[u8]) {
        let Some(conn) = self.conns.get_mut(&remote) else {
            return;
        };
        if conn.route != Some(owner) {
            return;
        }
        match conn.send(packet) {
            Ok(true) => {}
            Ok(false) => self.dropped_packets += 1,
            Err(_) => {
                self.conns.remove(&remote);
            }
        }
    }

    /// Makes `remote`'s connection belong to `owner`; closes the owner's oldest beyond
    /// [`MAX_PER_PEER`].
    pub fn assign(&mut self, remote: SocketAddr, owner: (RoomKey, PeerId)) {
        let Some(conn) = self.conns.get_mut(&remote) else {
            return;
        };
        conn.route = Some(owner);
        let mut own: Vec<(u64, SocketAddr)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.route == Some(owner))
            .map(|(a, c)| (c.seq, *a))
            .collect();
        if own.len() > MAX_PER_PEER {
            own.sort();
            for (_, a) in &own[..own.len() - MAX_PER_PEER] {
                self.conns.remove(a);
            }
        }
    }

    /// Closes the connections for which `f` holds on their route.
    pub fn close_where(&mut self, f: impl Fn(RoomKey, PeerId) -> bool) {
        self.conns
            .retain(|_, c| !c.route.is_some_and(|(k, p)| f(k, p)));
    }

    /// Closes connections pending or idle too long.
    pub fn expire(&mut self, now: Instant) {
        self.conns.retain(|_, c| {
            let pending_too_long =
                c.route.is_none() && now.saturating_duration_since(c.accepted) >= PENDING_TIMEOUT;
            let idle = now.saturating_duration_since(c.last_receive) >= IDLE_TIMEOUT;
            !(pending_too_long || idle)
        });
    }

    /// When [`Tcp::expire`] has something to do next.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.conns
            .values()
            .map(|c| {
                let idle = c.last_receive + IDLE_TIMEOUT;
                match c.route {
                    None => idle.min(c.accepted + PENDING_TIMEOUT),
                    Some(_) => idle,
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Deframer, bytes: &[u8]) {
        let space = d.space();
        space[..bytes.len()].copy_from_slice(bytes);
        d.filled(bytes.len());
    }

    #[test]
    fn deframes_whole_frames_from_pieces() {
        let mut d = Deframer::default();
        feed(&mut d, &[0]);
        assert_eq!(d.next_frame(), Ok(None));
        feed(&mut d, &[3, b'a', b'b']);
        assert_eq!(d.next_frame(), Ok(None));
        feed(&mut d, &[b'c', 0, 1, b'x', 0]);
        assert_eq!(d.next_frame(), Ok(Some(&b"abc"[..])));
        assert_eq!(d.next_frame(), Ok(Some(&b"x"[..])));
        assert_eq!(d.next_frame(), Ok(None));
        feed(&mut d, &[2, 1, 2]);
        assert_eq!(d.next_frame(), Ok(Some(&[1u8, 2][..])));
    }

    #[test]
    fn refuses_empty_and_oversized_frames() {
        let mut d = Deframer::default();
        feed(&mut d, &[0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = Deframer::default();
        let n = (MAX_FRAME + 1) as u16;
        feed(&mut d, &n.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(MAX_FRAME + 1)));
        let mut d = Deframer::default();
        feed(&mut d, &[0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLong(0xffff)));
    }

    #[test]
    fn a_longest_frame_fits_the_buffer() {
        let mut d = Deframer::default();
        let mut bytes = (MAX_FRAME as u16).to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(7u8, MAX_FRAME));
        // Arrives in two reads; the buffer never needs more than one frame and its length.
        feed(&mut d, &bytes[..1000]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.space().len(), MAX_FRAME + 2 - 1000);
        feed(&mut d, &bytes[1000..]);
        assert_eq!(d.space().len(), 0);
        assert_eq!(
            d.next_frame().map(|f| f.map(|f| f.len())),
            Ok(Some(MAX_FRAME))
        );
        assert_eq!(d.space().len(), MAX_FRAME + 2);
    }
}
