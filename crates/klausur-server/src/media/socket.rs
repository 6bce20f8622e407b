//! The socket layer of a media worker: its UDP socket (and ICE-TCP listener) with their
//! options, batched receive (`recvmmsg`, with the kernel's receive time of each datagram) and
//! batched send (`sendmmsg`, with UDP GSO). Knows nothing of rooms or peers: the worker hands
//! it datagrams to send and takes the ones received.
//!
//! UDP GSO: a room drains one subscriber at a time, so a frame's packets to one subscriber
//! are consecutive transmits, all equally long but the last. Such a run (`gso_run`) goes to
//! the kernel as one message with a `UDP_SEGMENT` control message, and the kernel (or the
//! NIC) cuts it into the same datagrams again: receivers see ordinary datagrams, only the
//! send cost per datagram drops. If the kernel or device refuses GSO, the sender switches it
//! off for good and sends the same datagrams one by one.
//!
//! Per packet there is no allocation here: receive buffers and `mmsghdr`s are preallocated (a
//! `sendmmsg` call allocates its short lists of `IoSlice`s).

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;

/// When a datagram arrived: the kernel's receive time (`SO_TIMESTAMPNS`, wall clock) carried
/// over to the monotonic clock by the batch's `now` and `wall`, and never before `floor` (the
/// latest time already given to the rooms) or after `now`. Without it every datagram of a batch
/// would count as arriving when the worker got to it: a worker held up for 50 ms would make the
/// senders' congestion control (TWCC feedback carries these times) see a queue that was never on
/// the network, and lower their bitrate.
pub(super) fn arrival(
    now: Instant,
    wall: SystemTime,
    kernel: Option<TimeSpec>,
    floor: Instant,
) -> Instant {
    let Some(ts) = kernel else {
        return now.max(floor);
    };
    let (Ok(secs), Ok(nanos)) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec())) else {
        return now.max(floor);
    };
    let received = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999));
    // Waiting longer than a second in the socket is not plausible: the wall clock jumped.
    let waited = wall
        .duration_since(received)
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(1));
    now.checked_sub(waited).unwrap_or(now).max(floor)
}

/// Datagrams per `recvmmsg` / `sendmmsg`.
pub const BATCH: usize = 32;
/// Receive slot size: larger datagrams are truncated and dropped (the MTU is ~1200-1500).
pub(super) const SLOT: usize = 2048;
/// Socket buffer sizes asked for: room for bursts (a keyframe to every subscriber), but not
/// for seconds of backlog when the worker is starved of CPU (late media is useless).
const SOCKET_BUFFER: usize = 1 << 20;

/// A worker's sockets, bound and set up.
pub(super) struct Bound {
    pub socket: UdpSocket,
    /// The ICE-TCP listener on the same port number, when TCP is on.
    pub listener: Option<TcpListener>,
    /// Whether the kernel knows UDP GSO (see [`gso_supported`]).
    pub gso: bool,
    /// The socket is IPv6 (on `[::]` also taking IPv4, see [`canonical`]).
    pub v6: bool,
}

/// Binds a worker's UDP socket on `listen` (and with `tcp`, a TCP listener on the same port
/// number; with port 0, one free for both is chosen), non-blocking, with large buffers and
/// kernel receive times where the kernel allows.
pub(super) fn open(listen: SocketAddr, tcp: bool) -> std::io::Result<Bound> {
    let (socket, listener) = bind_pair(listen, tcp)?;
    socket.set_nonblocking(true)?;
    // Bigger socket buffers ride out bursts (a keyframe to every subscriber); best effort.
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    // The kernel's receive time of each datagram (see `arrival`); best effort.
    if setsockopt(&socket, sockopt::ReceiveTimestampns, &true).is_err() {
        tracing::info!("media worker: no kernel receive timestamps, datagrams timed on arrival");
    }
    let gso = gso_supported(&socket);
    if !gso {
        tracing::info!("media worker: the kernel has no UDP GSO, sending datagrams one by one");
    }
    Ok(Bound {
        socket,
        listener,
        gso,
        v6: listen.is_ipv6(),
    })
}

/// On `[::]` a worker takes IPv4 as well (dual stack), which the system may have switched off
/// for IPv6 sockets (`net.ipv6.bindv6only = 1`): then say so rather than never hear IPv4.
fn check_dual_stack(listen: SocketAddr, fd: BorrowedFd<'_>) -> std::io::Result<()> {
    if listen.ip() != std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        return Ok(());
    }
    match nix::sys::socket::getsockopt(&fd, sockopt::Ipv6V6Only) {
        Ok(false) => Ok(()),
        Ok(true) => Err(std::io::Error::other(format!(
            "{listen} takes no IPv4 here: the system makes IPv6 sockets IPv6-only \
             (sysctl net.ipv6.bindv6only = 1); set it to 0, or listen on an IPv4 address"
        ))),
        Err(e) => Err(std::io::Error::other(format!(
            "cannot tell whether {listen} takes IPv4 as well: {e}"
        ))),
    }
}

/// The UDP socket and, with `tcp`, a non-blocking TCP listener on the same port number.
fn bind_pair(
    listen: SocketAddr,
    tcp: bool,
) -> std::io::Result<(UdpSocket, Option<std::net::TcpListener>)> {
    let mut tries = 0;
    loop {
        let socket = UdpSocket::bind(listen)?;
        check_dual_stack(listen, socket.as_fd())?;
        if !tcp {
            return Ok((socket, None));
        }
        let at = SocketAddr::new(listen.ip(), socket.local_addr()?.port());
        match std::net::TcpListener::bind(at) {
            Ok(listener) => {
                check_dual_stack(listen, listener.as_fd())?;
                listener.set_nonblocking(true)?;
                return Ok((socket, Some(listener)));
            }
            // A port chosen by the kernel for UDP may be taken for TCP: choose again.
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && listen.port() == 0
                    && tries < 20 =>
            {
                tries += 1;
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for ICE-TCP on {at}: {e}"),
                ))
            }
        }
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*a).into()));
    }
    addr.as_sockaddr_in6()
        .map(|a| canonical(SocketAddr::V6((*a).into())))
}

/// An IPv4 peer as the rest of the worker knows it: a dual-stack socket (bound on `[::]`) gives
/// an IPv4 sender's address as IPv4-mapped IPv6 (`::ffff:192.0.2.7`), which is `192.0.2.7` for
/// ICE (its candidates), routing and the logs.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// The address to hand the kernel for `to` on a socket of the family `v6`: an IPv4 peer of a
/// dual-stack socket is written IPv4-mapped (the reverse of [`canonical`]).
pub(super) fn on_wire(to: SocketAddr, v6: bool) -> SocketAddr {
    match to {
        SocketAddr::V4(a) if v6 => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        other => other,
    }
}

/// A datagram to send.
pub(super) struct Outgoing {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// The receiving side: [`BATCH`] preallocated slots and `mmsghdr`s for `recvmmsg`.
///
/// Holds `mmsghdr`s with raw pointers (not `Send`): build it on the thread that uses it.
pub(super) struct Receiver {
    bufs: Box<[[u8; SLOT]; BATCH]>,
    headers: MultiHeaders<SockaddrStorage>,
}

/// What one [`Receiver::receive`] took from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Received {
    /// Datagrams taken (including truncated ones): [`BATCH`] means more may be waiting.
    pub datagrams: usize,
    /// Datagrams longer than a slot, dropped.
    pub truncated: usize,
    /// The latest arrival time given out (never before the `floor` passed in).
    pub latest: Instant,
}

impl Receiver {
    pub(super) fn new() -> Self {
        Receiver {
            bufs: vec![[0u8; SLOT]; BATCH]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("BATCH slots")),
            headers: MultiHeaders::preallocate(
                BATCH,
                Some(nix::cmsg_space!(nix::sys::time::TimeSpec)),
            ),
        }
    }

    /// One `recvmmsg` on `socket` (without waiting): calls `on` with each datagram's arrival
    /// time (see [`arrival`]; never before `floor` nor an earlier datagram's), its source and
    /// its contents.
    pub(super) fn receive(
        &mut self,
        socket: RawFd,
        floor: Instant,
        mut on: impl FnMut(Instant, SocketAddr, &[u8]),
    ) -> Received {
        let mut got = Received {
            datagrams: 0,
            truncated: 0,
            latest: floor,
        };
        let mut iovs = self.bufs.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
        match recvmmsg(
            socket,
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => {
                let now = Instant::now();
                let wall = SystemTime::now();
                for msg in results {
                    got.datagrams += 1;
                    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                        got.truncated += 1;
                        continue;
                    }
                    let Some(source) = msg.address.as_ref().and_then(to_std) else {
                        continue;
                    };
                    let Some(contents) = msg.iovs().next() else {
                        continue;
                    };
                    let contents = &contents[..msg.bytes.min(contents.len())];
                    let kernel = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmTimestampns(ts) => Some(ts),
                            _ => None,
                        })
                    });
                    let at = arrival(now, wall, kernel, got.latest);
                    got.latest = at;
                    on(at, source, contents);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(e) => {
                // E.g. an ICMP error queued for an earlier send: not fatal.
                tracing::debug!("udp receive error: {e}");
            }
        }
        got
    }
}

/// Most datagrams the kernel cuts one GSO message into (`UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes of one GSO message: below UDP's limit (65,507 bytes over IPv4).
const GSO_MAX_BYTES: usize = 65_000;
/// Longest datagram sent as a GSO segment: one that fits a 1500-byte MTU over IPv6. The kernel
/// refuses (EINVAL) a segment longer than the path MTU allows, where a plain send would be
/// fragmented, and EINVAL switches GSO off; WebRTC keeps its datagrams near 1200 bytes.
const GSO_MAX_SEGMENT: usize = 1452;

/// Whether the kernel knows UDP GSO (Linux 4.18). An older one would ignore the
/// `UDP_SEGMENT` control message and send a GSO message as one big datagram.
fn gso_supported(socket: &impl AsFd) -> bool {
    nix::sys::socket::getsockopt(socket, sockopt::UdpGsoSegment).is_ok()
}

/// The number of datagrams at the start of `queue` that can go out as one GSO message: they
/// go to the same destination and are all as long as the first, except the last of them,
/// which may be shorter (and then ends the run); at most [`GSO_MAX_SEGMENTS`] datagrams and
/// [`GSO_MAX_BYTES`] bytes. A first datagram that is empty or longer than
/// [`GSO_MAX_SEGMENT`] is a run of 1, and so is every datagram without `gso`. 0 only for
/// an empty queue.
fn gso_run(queue: &[Outgoing], gso: bool) -> usize {
    let Some(first) = queue.first() else {
        return 0;
    };
    let segment = first.contents.len();
    if !gso || segment == 0 || segment > GSO_MAX_SEGMENT {
        return 1;
    }
    let mut run = 1;
    let mut bytes = segment;
    for o in &queue[1..] {
        let len = o.contents.len();
        // An empty datagram cannot be a segment: it would vanish from the message.
        if run == GSO_MAX_SEGMENTS
            || o.destination != first.destination
            || len == 0
            || len > segment
            || bytes + len > GSO_MAX_BYTES
        {
            break;
        }
        run += 1;
        bytes += len;
        if len < segment {
            break;
        }
    }
    run
}

/// Plans the next `sendmmsg` call at the start of `queue`: up to [`BATCH`] messages, each a
/// run ([`gso_run`]), whose lengths go to `runs`. nix gives all messages of one call the same
/// control messages, so a call's runs of more than one datagram (GSO messages) share one
/// segment size (`Some(size)`, returned; `None`: the call holds single datagrams only). A
/// single datagram no longer than that size rides in the same call: the kernel cuts only
/// messages longer than the segment size, so it goes out as the plain datagram it is. The
/// call ends at the first run that does not fit, so the queue's order is kept, and a room's
/// audio, video and RTCP to its subscribers mostly go out in one system call.
fn plan_chunk(queue: &[Outgoing], gso: bool, runs: &mut Vec<usize>) -> Option<u16> {
    runs.clear();
    // The segment size of the call's GSO messages, once one is in it.
    let mut segment: Option<usize> = None;
    // The longest single datagram so far, and whether one of them could not ride in a GSO
    // call (empty, or longer than a segment may be).
    let mut longest = 0;
    let mut plain_only = false;
    let mut at = 0;
    while runs.len() < BATCH && at < queue.len() {
        let rest = &queue[at..];
        let run = gso_run(rest, gso);
        let len = rest[0].contents.len();
        if run > 1 {
            match segment {
                None if !plain_only && longest <= len => segment = Some(len),
                Some(s) if s == len => {}
                _ => break,
            }
        } else {
            let rides = len > 0 && len <= GSO_MAX_SEGMENT;
            match segment {
                None => {
                    longest = longest.max(len);
                    plain_only |= !rides;
                }
                Some(s) if rides && len <= s => {}
                _ => break,
            }
        }
        runs.push(run);
        at += run;
    }
    segment.map(|s| s as u16)
}

/// The worker's sending side: `sendmmsg` with UDP GSO, and its counters.
///
/// Holds `mmsghdr`s with raw pointers (not `Send`): build it on the thread that uses it.
pub(super) struct Sender {
    /// Headers for plain datagrams (no control message buffer).
    plain: MultiHeaders<SockaddrStorage>,
    /// Headers for GSO messages: each with room for one `UDP_SEGMENT` control message. Only
    /// for them: a header with a control buffer but no message in it sends a bogus length.
    gso_headers: MultiHeaders<SockaddrStorage>,
    /// GSO in use; switched off for good when the kernel or device refuses it.
    gso: bool,
    /// The socket is IPv6: IPv4 destinations are written IPv4-mapped (see [`on_wire`]).
    v6: bool,
    /// The runs of the current `sendmmsg` call (see [`plan_chunk`]).
    runs: Vec<usize>,
    pub(super) sent_datagrams: u64,
    pub(super) send_batches: u64,
    pub(super) gso_datagrams: u64,
    /// Test hook: GSO calls that start with a GSO message fail with this error instead of
    /// reaching the kernel.
    #[cfg(test)]
    fail_gso: Option<Errno>,
}

impl Sender {
    /// A sender for a socket that knows GSO (`gso`) and is IPv6 (`v6`).
    pub(super) fn new(gso: bool, v6: bool) -> Self {
        Sender {
            plain: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            gso,
            v6,
            runs: Vec::with_capacity(BATCH),
            sent_datagrams: 0,
            send_batches: 0,
            gso_datagrams: 0,
            #[cfg(test)]
            fail_gso: None,
        }
    }

    /// Whether GSO is still in use.
    pub(super) fn gso(&self) -> bool {
        self.gso
    }

    /// Whether the socket is IPv6.
    pub(super) fn v6(&self) -> bool {
        self.v6
    }

    /// Sends `queue` in order: runs of datagrams as GSO messages (see [`gso_run`]), up to
    /// [`BATCH`] messages of one kind per `sendmmsg` (see [`plan_chunk`]).
    pub(super) fn send_all(&mut self, socket: BorrowedFd<'_>, queue: &[Outgoing]) {
        let mut start = 0;
        let mut stalls = 0;
        while start < queue.len() {
            let rest = &queue[start..];
            let segment = plan_chunk(rest, self.gso, &mut self.runs);
            let len = self.runs.iter().sum();
            match self.send_chunk(socket, &rest[..len], segment) {
                Ok(sent) => {
                    let datagrams: usize = self.runs[..sent].iter().sum();
                    self.send_batches += 1;
                    self.sent_datagrams += datagrams as u64;
                    // Datagrams in GSO messages (runs of more than one).
                    self.gso_datagrams +=
                        self.runs[..sent].iter().filter(|&&r| r > 1).sum::<usize>() as u64;
                    // sendmmsg reports an error of a later message as a short count: the
                    // failed message is retried as the first one and, if bad, fails alone.
                    start += self.runs[..sent.clamp(1, self.runs.len())]
                        .iter()
                        .sum::<usize>();
                    stalls = 0;
                }
                Err(Errno::EAGAIN) if stalls < 3 => {
                    // Socket buffer full: wait a moment for room, then retry.
                    stalls += 1;
                    let mut fds = [PollFd::new(socket, PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, PollTimeout::from(5u8));
                }
                Err(Errno::EINTR) => {}
                Err(e @ (Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP))
                    if segment.is_some() =>
                {
                    // The kernel or the device cannot do GSO (nothing of the call was sent):
                    // send the same datagrams one by one, from now on.
                    tracing::info!("media worker: UDP GSO failed ({e}), switched off");
                    self.gso = false;
                }
                Err(e) => {
                    if let Some(o) = rest.first() {
                        tracing::debug!("udp send to {} failed: {e}", o.destination);
                    }
                    start += self.runs[0];
                    stalls = 0;
                }
            }
        }
    }

    /// One `sendmmsg` of `chunk`, cut into the messages `self.runs`: GSO messages with
    /// `segment` as segment size, or plain datagrams. Returns the number of messages sent.
    fn send_chunk(
        &mut self,
        socket: BorrowedFd<'_>,
        chunk: &[Outgoing],
        segment: Option<u16>,
    ) -> nix::Result<usize> {
        // As the kernel does, an error is about the call's first message.
        #[cfg(test)]
        if let (Some(e), Some(_), Some(2..)) = (self.fail_gso, segment, self.runs.first()) {
            return Err(e);
        }
        let slices: Vec<IoSlice<'_>> = chunk.iter().map(|o| IoSlice::new(&o.contents)).collect();
        let mut messages: Vec<&[IoSlice<'_>]> = Vec::with_capacity(self.runs.len());
        let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        let mut at = 0;
        for (run, addr) in self.runs.iter().zip(addrs.iter_mut()) {
            messages.push(&slices[at..at + run]);
            *addr = Some(SockaddrStorage::from(on_wire(
                chunk[at].destination,
                self.v6,
            )));
            at += run;
        }
        let addrs = &addrs[..messages.len()];
        let fd = socket.as_raw_fd();
        let flags = MsgFlags::MSG_DONTWAIT;
        // The count of messages sent (sendmmsg may stop early, e.g. when the buffer is full).
        let sent = match segment {
            None => {
                let cmsgs: [ControlMessage<'_>; 0] = [];
                sendmmsg(fd, &mut self.plain, &messages, addrs, cmsgs, flags)?.count()
            }
            Some(segment) => {
                let cmsgs = [ControlMessage::UdpGsoSegments(&segment)];
                sendmmsg(fd, &mut self.gso_headers, &messages, addrs, cmsgs, flags)?.count()
            }
        };
        Ok(sent)
    }
}

/// Test builds only (`test-hooks`): installs the RTP payload recorder on a new room if
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_peer_of_a_dual_stack_socket_is_ipv4_inside_and_mapped_on_the_wire() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:5000".parse().expect("addr");
        let v4: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let v6: SocketAddr = "[2001:db8::7]:5000".parse().expect("addr");
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(on_wire(v4, true), mapped);
        assert_eq!(on_wire(v4, false), v4);
        assert_eq!(on_wire(v6, true), v6);
        // As the kernel hands it over: an IPv4-mapped sockaddr_in6.
        assert_eq!(to_std(&SockaddrStorage::from(mapped)), Some(v4));
    }

    #[test]
    fn a_dual_stack_worker_socket_sends_to_ipv4_and_ipv6_peers() {
        let bound = open("[::]:0".parse().expect("addr"), false).expect("a socket on [::]");
        assert!(bound.v6);
        let port = bound.socket.local_addr().expect("addr").port();
        let v4_peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("v4 peer");
        let v6_peer = std::net::UdpSocket::bind("[::1]:0").expect("v6 peer");
        let mut sender = Sender::new(false, true);
        let queue = vec![
            Outgoing {
                destination: v4_peer.local_addr().expect("addr"),
                contents: b"to v4".to_vec(),
            },
            Outgoing {
                destination: v6_peer.local_addr().expect("addr"),
                contents: b"to v6".to_vec(),
            },
        ];
        sender.send_all(bound.socket.as_fd(), &queue);
        for (peer, what, from) in [
            (
                &v4_peer,
                &b"to v4"[..],
                SocketAddr::from(([127, 0, 0, 1], port)),
            ),
            (
                &v6_peer,
                &b"to v6"[..],
                SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port),
            ),
        ] {
            peer.set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut buf = [0u8; 64];
            let (n, src) = peer.recv_from(&mut buf).expect("datagram");
            assert_eq!(&buf[..n], what);
            assert_eq!(src, from);
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Datagrams of the given lengths to `port`.
    fn queue(items: &[(u16, usize)]) -> Vec<Outgoing> {
        items
            .iter()
            .map(|&(port, len)| Outgoing {
                destination: addr(port),
                contents: vec![0; len],
            })
            .collect()
    }

    #[test]
    fn a_datagram_counts_as_arrived_when_the_kernel_received_it() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let ms = Duration::from_millis;
        let spec = |t: SystemTime| {
            let d = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970");
            TimeSpec::new(d.as_secs() as _, d.subsec_nanos() as _)
        };
        let floor = now - ms(100);
        // Received 30 ms before the worker got to it.
        assert_eq!(
            arrival(now, wall, Some(spec(wall - ms(30))), floor),
            now - ms(30)
        );
        // Never before what the rooms were already given, never after now.
        assert_eq!(arrival(now, wall, Some(spec(wall - ms(300))), floor), floor);
        assert_eq!(arrival(now, wall, Some(spec(wall + ms(5))), floor), now);
        // No timestamp, or a wall clock that jumped: now.
        assert_eq!(arrival(now, wall, None, floor), now);
        assert_eq!(
            arrival(now, wall, Some(spec(wall - ms(5_000))), now - ms(2_000)),
            now - ms(1_000)
        );
        assert_eq!(arrival(now, wall, Some(TimeSpec::new(-5, 0)), floor), now);
    }

    #[test]
    fn gso_run_takes_equal_sizes_and_a_shorter_last() {
        let q = queue(&[(1, 1040), (1, 1040), (1, 640), (1, 1040)]);
        assert_eq!(gso_run(&q, true), 3);
        assert_eq!(gso_run(&q[3..], true), 1);
        assert_eq!(gso_run(&q[..0], true), 0);
        // Equal sizes only: the run goes on to the end of the queue.
        assert_eq!(gso_run(&queue(&[(1, 500); 5]), true), 5);
    }

    #[test]
    fn gso_run_ends_before_a_longer_datagram() {
        let q = queue(&[(1, 1000), (1, 1000), (1, 1001), (1, 1000)]);
        assert_eq!(gso_run(&q, true), 2);
        assert_eq!(gso_run(&queue(&[(1, 1000), (1, 1200)]), true), 1);
    }

    #[test]
    fn gso_run_ends_at_another_destination() {
        let q = queue(&[(1, 1000), (1, 1000), (2, 1000), (1, 1000)]);
        assert_eq!(gso_run(&q, true), 2);
        assert_eq!(gso_run(&q[1..], true), 1);
        assert_eq!(gso_run(&q[2..], true), 1);
    }

    #[test]
    fn gso_run_keeps_to_the_kernel_limits() {
        // 64 segments at most.
        let q = queue(&[(1, 100); 70]);
        assert_eq!(gso_run(&q, true), GSO_MAX_SEGMENTS);
        assert_eq!(gso_run(&q[64..], true), 6);
        // 65,000 bytes at most.
        let q = queue(&[(1, 1300); 60]);
        assert_eq!(gso_run(&q, true), 50); // 50 x 1300 = 65,000
        let mut q = queue(&[(1, 1300); 50]);
        q.push(Outgoing {
            destination: addr(1),
            contents: vec![0; 1],
        });
        assert_eq!(gso_run(&q, true), 50, "a shorter last one over the limit");
        // A first datagram longer than a 1500-byte MTU allows a segment to be goes alone.
        assert_eq!(gso_run(&queue(&[(1, 1452), (1, 1452)]), true), 2);
        assert_eq!(gso_run(&queue(&[(1, 1453), (1, 1453)]), true), 1);
    }

    #[test]
    fn gso_run_is_one_without_gso_or_for_empty_datagrams() {
        let q = queue(&[(1, 1000), (1, 1000), (1, 400)]);
        assert_eq!(gso_run(&q, false), 1);
        assert_eq!(gso_run(&queue(&[(1, 0), (1, 0)]), true), 1);
        // An empty datagram cannot be the shorter last segment.
        assert_eq!(gso_run(&queue(&[(1, 1000), (1, 0)]), true), 1);
    }

    #[test]
    fn plan_chunk_puts_single_datagrams_into_gso_calls() {
        let mut runs = Vec::new();
        // GSO runs of 1000 to two destinations, then single datagrams: one call.
        let q = queue(&[(1, 1000), (1, 400), (2, 1000), (2, 1000), (3, 50), (4, 60)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2, 2, 1, 1]);
        // Single datagrams only: plain.
        assert_eq!(plan_chunk(&q[4..], true, &mut runs), None);
        assert_eq!(runs, [1, 1]);
        // Another segment size ends the call.
        let q = queue(&[(1, 1000), (1, 1000), (2, 900), (2, 900)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2]);
        // A single datagram before a GSO run rides with it when it is no longer than a segment.
        let q = queue(&[(1, 100), (2, 1000), (2, 1000)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [1, 2]);
        let q = queue(&[(1, 1200), (2, 1000), (2, 1000)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), None);
        assert_eq!(runs, [1]);
        // A single datagram longer than the segment ends the call (the kernel would cut it).
        let q = queue(&[(1, 1000), (1, 1000), (2, 1001), (1, 10)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2]);
        // An empty datagram, or one longer than a segment may be, never rides in a GSO call.
        let q = queue(&[(1, 0), (2, 1000), (2, 1000)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), None);
        assert_eq!(runs, [1]);
        let q = queue(&[(1, 1000), (1, 1000), (2, 0)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2]);
        let q = queue(&[(1, 1453), (2, 500), (2, 500)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), None);
        assert_eq!(runs, [1]);
        // BATCH messages at most; without GSO every datagram is a message.
        let q = queue(&[(1, 1000); 2 * BATCH]);
        assert_eq!(plan_chunk(&q, false, &mut runs), None);
        assert_eq!(runs, [1; BATCH]);
        let q: Vec<Outgoing> = (0..2 * BATCH)
            .map(|i| Outgoing {
                destination: addr(i as u16 + 1),
                contents: vec![0; 100],
            })
            .flat_map(|o| {
                let twin = Outgoing {
                    destination: o.destination,
                    contents: o.contents.clone(),
                };
                [o, twin]
            })
            .collect();
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(100));
        assert_eq!(runs, [2; BATCH]);
        assert_eq!(plan_chunk(&q[..0], true, &mut runs), None);
        assert!(runs.is_empty());
    }

    /// Receives datagrams on `socket` until `count` have come, then waits briefly for any
    /// more (bounded; the socket is non-blocking).
    fn receive(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; SLOT];
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut quiet_until = None;
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    got.push(buf[..n].to_vec());
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("receive failed: {e}"),
            }
            let now = Instant::now();
            if got.len() >= count {
                let until = *quiet_until.get_or_insert(now + Duration::from_millis(50));
                if now >= until {
                    return got;
                }
            } else if now >= deadline {
                return got;
            }
            let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(10u8));
        }
    }

    fn udp() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("non-blocking");
        socket
    }

    /// The mixed queue: each datagram starts with its index and has its own bytes.
    fn mixed_queue(a: SocketAddr, b: SocketAddr) -> Vec<Outgoing> {
        let plan = [
            (a, 1000),
            (a, 1000),
            (a, 400),
            (b, 120),
            (a, 1000),
            (b, 1000),
            (b, 1000),
            (b, 1000),
            (a, 77),
        ];
        plan.iter()
            .enumerate()
            .map(|(i, &(destination, len))| Outgoing {
                destination,
                contents: (0..len)
                    .map(|j| if j == 0 { i as u8 } else { (i * 31 + j) as u8 })
                    .collect(),
            })
            .collect()
    }

    /// Sends the mixed queue with `sender` and checks that each receiver got exactly its
    /// datagrams, intact and in order.
    fn send_mixed(sender: &mut Sender) {
        let (from, a, b) = (udp(), udp(), udp());
        let (a_addr, b_addr) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let q = mixed_queue(a_addr, b_addr);
        sender.send_all(from.as_fd(), &q);
        let expected = |to: SocketAddr| -> Vec<Vec<u8>> {
            q.iter()
                .filter(|o| o.destination == to)
                .map(|o| o.contents.clone())
                .collect()
        };
        let (want_a, want_b) = (expected(a_addr), expected(b_addr));
        assert_eq!(receive(&a, want_a.len()), want_a, "receiver A");
        assert_eq!(receive(&b, want_b.len()), want_b, "receiver B");
        assert_eq!(sender.sent_datagrams, q.len() as u64);
    }

    #[test]
    fn gso_is_known_to_this_kernel() {
        assert!(gso_supported(&udp()));
    }

    #[test]
    fn sends_runs_as_gso_messages_and_receivers_see_datagrams() {
        let mut sender = Sender::new(true, false);
        send_mixed(&mut sender);
        // In runs > 1: A 1000, 1000, 400 and B 1000, 1000, 1000.
        assert_eq!(sender.gso_datagrams, 6);
        // One call: GSO (A), single (B 120, A 1000), GSO (B), single (A 77).
        assert_eq!(sender.send_batches, 1);
        assert!(sender.gso);
    }

    #[test]
    fn sends_the_same_datagrams_without_gso() {
        let mut sender = Sender::new(false, false);
        send_mixed(&mut sender);
        assert_eq!(sender.gso_datagrams, 0);
        assert_eq!(sender.send_batches, 1);
    }

    #[test]
    fn refused_gso_is_switched_off_and_nothing_is_lost() {
        for errno in [
            Errno::EIO,
            Errno::EINVAL,
            Errno::ENOPROTOOPT,
            Errno::EOPNOTSUPP,
        ] {
            let mut sender = Sender::new(true, false);
            sender.fail_gso = Some(errno);
            send_mixed(&mut sender);
            assert!(!sender.gso, "{errno}");
            assert_eq!(sender.gso_datagrams, 0);
            assert_eq!(
                sender.send_batches, 1,
                "all plain in one call after the fallback"
            );
        }
    }

    #[test]
    fn other_gso_errors_skip_the_run_and_keep_gso() {
        let (from, a, b) = (udp(), udp(), udp());
        let (a_addr, b_addr) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let q = mixed_queue(a_addr, b_addr);
        let mut sender = Sender::new(true, false);
        sender.fail_gso = Some(Errno::EPERM);
        sender.send_all(from.as_fd(), &q);
        assert!(sender.gso);
        // The failed message (the GSO run to A) is dropped; the rest goes out in the next call.
        assert_eq!(
            receive(&a, 2),
            [q[4].contents.clone(), q[8].contents.clone()]
        );
        assert_eq!(receive(&b, 4), [3, 5, 6, 7].map(|i| q[i].contents.clone()));
        assert_eq!(sender.sent_datagrams, 6);
        assert_eq!(sender.send_batches, 1);
    }
}
