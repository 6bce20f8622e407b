//! The media layer: the media worker, which owns the UDP socket and the room cores placed on
//! it, and [`MediaHandle`], the handle the rest of the server talks to it through.
//!
//! Imports nothing else of the crate: it sits below the meetings, which open rooms and place
//! peers through the handle.
//!
//! # The worker
//!
//! One OS thread (`klausur-media`, not a tokio task) runs the loop that DESIGN.md section 3
//! describes, as a plain blocking loop:
//!
//! 1. wait in `ppoll` for the UDP socket, the command eventfd or the earliest room timer;
//! 2. receive a batch of datagrams with one `recvmmsg` (up to [`BATCH`]), hand each to the
//!    room core that owns its peer ([`Room::handle_receive`]);
//! 3. drain each room touched by the batch once (so each subscriber's `Rtc` is ticked once
//!    per batch, see klausur-room's *Cost*) and send all transmits with `sendmmsg` (with
//!    UDP GSO, below);
//! 4. fire due room timers, run commands. The wait for a timer ends up to `TIMER_SLACK` (2 ms)
//!    after it is due, so most timers are handled on a wake-up a packet caused anyway.
//!
//! A packet never crosses a thread or a channel between arrival and forwarding, and the thread
//! is only woken by the kernel for its socket or timer, never by another runtime thread. The
//! signaling side talks to the worker through a command channel plus an eventfd, and the
//! worker reports room events back through one tokio channel per meeting.
//!
//! Per packet there is no allocation in this file: receive buffers and `mmsghdr`s are
//! preallocated (a `sendmmsg` call allocates its short lists of `IoSlice`s); str0m allocates
//! the encrypted datagram of each transmit (the one copy per subscriber).
//!
//! UDP GSO: a room drains one subscriber at a time, so a frame's packets to one subscriber
//! are consecutive transmits, all equally long but the last. Such a run (`gso_run`) goes to
//! the kernel as one message with a `UDP_SEGMENT` control message, and the kernel (or the
//! NIC) cuts it into the same datagrams again: receivers see ordinary datagrams, only the
//! send cost per datagram drops. If the kernel or device refuses GSO, the worker switches it
//! off for good and sends the same datagrams one by one.
//!
//! Demultiplexing: a new peer's first packet is a STUN binding request whose USERNAME starts
//! with the local ICE ufrag the room core handed out; after that the remote address is known.
//!
//! ICE-TCP ([`tcp`]): with TCP on, the worker also listens on TCP (same port number) and
//! announces a passive TCP host candidate beside the UDP one, for browsers whose network
//! drops UDP. Its connections are polled in the same `ppoll` and their frames routed the same
//! way, the connection taking the place of the remote address.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use klausur_proto::SendSource;
use klausur_room::{
    Answer, ParsedOffer, PeerId, Room, RoomConfig, RoomEvent, RoomOutput, Transport, VideoWant,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use tokio::sync::{mpsc, oneshot};

pub mod tcp;

/// When a datagram arrived: the kernel's receive time (`SO_TIMESTAMPNS`, wall clock) carried
/// over to the monotonic clock by the batch's `now` and `wall`, and never before `floor` (the
/// latest time already given to the rooms) or after `now`. Without it every datagram of a batch
/// would count as arriving when the worker got to it: a worker held up for 50 ms would make the
/// senders' congestion control (TWCC feedback carries these times) see a queue that was never on
/// the network, and lower their bitrate.
fn arrival(now: Instant, wall: SystemTime, kernel: Option<TimeSpec>, floor: Instant) -> Instant {
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
const SLOT: usize = 2048;
/// Socket buffer sizes asked for: room for bursts (a keyframe to every subscriber), but not
/// for seconds of backlog when the worker is starved of CPU (late media is useless).
const SOCKET_BUFFER: usize = 1 << 20;
/// How late the worker may handle a room timer. Timers (RTCP reports, NACK and TWCC feedback,
/// ICE keep-alives) tolerate milliseconds; a packet arrives about every millisecond in a busy
/// room, so with this slack most timers are handled on the wake-up a packet causes anyway
/// instead of on one of their own. Forwarding never waits for a timer.
const TIMER_SLACK: Duration = Duration::from_millis(2);
/// How long the worker may wait for a datagram or command when the earliest room timer is
/// `next_timer`: until [`TIMER_SLACK`] after it (at once when that has passed), or without end
/// when no room has a timer.
fn wait_for(next_timer: Option<Instant>, now: Instant) -> Option<Duration> {
    next_timer.map(|t| (t + TIMER_SLACK).saturating_duration_since(now))
}

/// Receive batches handled before timers and commands get a turn.
const MAX_BATCHES_PER_TURN: usize = 8;

/// Identifies a room on the worker (one per running meeting).
pub type RoomKey = u64;

/// Commands from the signaling side.
pub enum MediaCmd {
    OpenRoom {
        room: RoomKey,
        events: mpsc::UnboundedSender<RoomEvent>,
    },
    CloseRoom {
        room: RoomKey,
    },
    AddPeer {
        room: RoomKey,
        peer: PeerId,
        reply: oneshot::Sender<Result<(), String>>,
    },
    RemovePeer {
        room: RoomKey,
        peer: PeerId,
    },
    /// An offer, parsed by the signaling side ([`MediaHandle::offer`]).
    Offer {
        room: RoomKey,
        peer: PeerId,
        offer: ParsedOffer,
        sources: Vec<SendSource>,
        reply: oneshot::Sender<Result<Answer, String>>,
    },
    SetAudioForwarding {
        room: RoomKey,
        peer: PeerId,
        enabled: bool,
    },
    /// Whether others' video is forwarded to the peer (false for an audio-only participant,
    /// the dial-in gateway); sent right after `AddPeer`, before the peer's first offer.
    SetReceivesVideo {
        room: RoomKey,
        peer: PeerId,
        enabled: bool,
    },
    /// Which videos the peer shows, and how large (`Room::set_video_wants`).
    SetVideoWants {
        room: RoomKey,
        peer: PeerId,
        wants: Vec<VideoWant>,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
    },
    /// Test builds only: the room's next call panics, as a bug in the room core or str0m
    /// would (see [`Worker::with_room`]).
    #[cfg(feature = "test-hooks")]
    Panic {
        room: RoomKey,
    },
}

/// Counters over all rooms of the worker.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct MediaStats {
    pub rooms: usize,
    pub peers: usize,
    pub forwarded_packets: u64,
    pub received_datagrams: u64,
    pub unroutable_datagrams: u64,
    /// `recvmmsg` calls that returned datagrams.
    pub receive_batches: u64,
    /// Datagrams sent (each GSO segment counts), and `sendmmsg` calls used for them.
    pub sent_datagrams: u64,
    pub send_batches: u64,
    /// Datagrams of `sent_datagrams` that went out as segments of GSO messages.
    pub gso_datagrams: u64,
    /// `Input::Timeout` ticks of all peers' `Rtc`s (see klausur-room's *Cost*).
    pub rtc_ticks: u64,
    /// Times the worker woke from `ppoll`, and of those, because the wait for the next room
    /// timer ran out (no datagram, command or signal).
    pub wakeups: u64,
    pub timer_wakeups: u64,
    /// ICE-TCP: open connections, of them those belonging to a peer, frames received,
    /// connections closed for bad framing, packets dropped because a connection's send
    /// queue was full.
    pub tcp_connections: usize,
    pub tcp_peer_connections: usize,
    pub tcp_frames: u64,
    pub tcp_refused_frames: u64,
    pub tcp_dropped_packets: u64,
}

/// The signaling side's handle on the worker.
#[derive(Clone)]
pub struct MediaHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    /// Taken in `drop`, so the worker sees the channel closed when woken.
    tx: Option<std::sync::mpsc::Sender<MediaCmd>>,
    wake: Arc<EventFd>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        // The last handle is gone: wake the worker so it sees the closed channel and stops.
        drop(self.tx.take());
        let _ = self.wake.write(1);
    }
}

impl MediaHandle {
    pub fn send(&self, cmd: MediaCmd) {
        // The worker only stops at shutdown; a lost command then does not matter.
        if let Some(tx) = &self.inner.tx {
            if tx.send(cmd).is_ok() {
                let _ = self.inner.wake.write(1);
            }
        }
    }

    pub async fn add_peer(&self, room: RoomKey, peer: PeerId) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::AddPeer { room, peer, reply });
        rx.await.map_err(|_| "media worker stopped".to_string())?
    }

    /// Parses the offer on the blocking pool (most of an offer's cost, kept off the thread
    /// that forwards media), then has the worker accept it.
    pub async fn offer(
        &self,
        room: RoomKey,
        peer: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
    ) -> Result<Answer, String> {
        let offer = tokio::task::spawn_blocking(move || klausur_room::parse_offer(&sdp))
            .await
            .map_err(|_| "the offer could not be parsed".to_string())?
            .map_err(|e| e.to_string())?;
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::Offer {
            room,
            peer,
            offer,
            sources,
            reply,
        });
        rx.await.map_err(|_| "media worker stopped".to_string())?
    }

    pub async fn stats(&self) -> MediaStats {
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::Stats { reply });
        rx.await.unwrap_or_default()
    }
}

struct RoomSlot {
    room: Room,
    events: mpsc::UnboundedSender<RoomEvent>,
    /// Touched by the current receive batch (in `Worker::touched`).
    touched: bool,
}

/// A datagram to send.
struct Outgoing {
    destination: SocketAddr,
    contents: Vec<u8>,
}

struct Worker {
    /// Every room's configuration.
    room_config: RoomConfig,
    socket: UdpSocket,
    wake: Arc<EventFd>,
    /// The address announced as host candidate (the public IP with the socket's port).
    candidate: SocketAddr,
    /// ICE-TCP, when on: the listener and its connections, and the TCP candidate's address.
    tcp: Option<tcp::Tcp>,
    tcp_candidate: Option<SocketAddr>,
    rooms: HashMap<RoomKey, RoomSlot>,
    by_ufrag: HashMap<String, (RoomKey, PeerId)>,
    by_addr: HashMap<SocketAddr, (RoomKey, PeerId)>,
    ufrag_of: HashMap<(RoomKey, PeerId), String>,
    /// Rooms that got datagrams in the current batch.
    touched: Vec<RoomKey>,
    /// The latest time given to any room: time never goes backwards for them, also when a
    /// datagram's kernel receive time lies before a timer that fired meanwhile.
    latest: Instant,
    /// Rooms whose core panicked since the last check (reported and replaced by
    /// [`Worker::replace_failed_rooms`]).
    failed: Vec<RoomKey>,
    /// Transmits waiting for the next `sendmmsg`.
    outgoing: Vec<Outgoing>,
    sender: Sender,
    /// Counters of this file, except the sender's (see [`Worker::totals`]).
    stats: MediaStats,
}

/// Binds the UDP socket and starts the worker thread. With `tcp`, also listens for ICE-TCP
/// on the same port number (with port 0, one free for both is chosen).
pub async fn start(
    listen: SocketAddr,
    public_ip: std::net::IpAddr,
    tcp: bool,
) -> std::io::Result<(MediaHandle, SocketAddr)> {
    start_with(listen, public_ip, tcp, RoomConfig::default()).await
}

/// [`start`] with the rooms' configuration (`[media] bandwidth_estimation`).
pub async fn start_with(
    listen: SocketAddr,
    public_ip: std::net::IpAddr,
    tcp: bool,
    room_config: RoomConfig,
) -> std::io::Result<(MediaHandle, SocketAddr)> {
    let (socket, listener) = bind(listen, tcp)?;
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
    let local = socket.local_addr()?;
    let candidate = SocketAddr::new(public_ip, local.port());
    let tcp_candidate = listener.as_ref().map(|_| candidate);
    let gso = gso_supported(&socket);
    if !gso {
        tracing::info!("media worker: the kernel has no UDP GSO, sending datagrams one by one");
    }
    let wake = Arc::new(
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map_err(std::io::Error::from)?,
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let worker_wake = wake.clone();
    std::thread::Builder::new()
        .name("klausur-media".into())
        .spawn(move || {
            // Built on the worker thread: the preallocated `mmsghdr`s hold raw pointers.
            let worker = Worker {
                room_config,
                socket,
                wake: worker_wake,
                candidate,
                tcp: listener.map(tcp::Tcp::new),
                tcp_candidate,
                rooms: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                ufrag_of: HashMap::new(),
                touched: Vec::new(),
                latest: Instant::now(),
                failed: Vec::new(),
                outgoing: Vec::with_capacity(4 * BATCH),
                sender: Sender::new(gso),
                stats: MediaStats::default(),
            };
            worker.run(rx)
        })?;
    let handle = MediaHandle {
        inner: Arc::new(HandleInner { tx: Some(tx), wake }),
    };
    Ok((handle, local))
}

/// The UDP socket and, with `tcp`, a non-blocking TCP listener on the same port number.
fn bind(
    listen: SocketAddr,
    tcp: bool,
) -> std::io::Result<(UdpSocket, Option<std::net::TcpListener>)> {
    let mut tries = 0;
    loop {
        let socket = UdpSocket::bind(listen)?;
        if !tcp {
            return Ok((socket, None));
        }
        let at = SocketAddr::new(listen.ip(), socket.local_addr()?.port());
        match std::net::TcpListener::bind(at) {
            Ok(listener) => {
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
    addr.as_sockaddr_in6().map(|a| SocketAddr::V6((*a).into()))
}

impl Worker {
    fn run(mut self, rx: std::sync::mpsc::Receiver<MediaCmd>) {
        let mut bufs: Box<[[u8; SLOT]; BATCH]> = vec![[0u8; SLOT]; BATCH]
            .into_boxed_slice()
            .try_into()
            .unwrap_or_else(|_| unreachable!("BATCH slots"));
        let mut recv_headers: MultiHeaders<SockaddrStorage> =
            MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(nix::sys::time::TimeSpec)));
        let mut next_report = Instant::now();
        // ICE-TCP connections ready after a wait, and the poll order of their addresses.
        let mut tcp_ready: Vec<(SocketAddr, PollFlags)> = Vec::new();
        let mut tcp_addrs: Vec<SocketAddr> = Vec::new();
        let mut tcp_accept = false;
        loop {
            // Commands. An offer costs the most (milliseconds for a large meeting): after one,
            // the waiting datagrams get their turn before the next command.
            let mut more_commands = false;
            loop {
                match rx.try_recv() {
                    Ok(cmd) => {
                        let costly = matches!(cmd, MediaCmd::Offer { .. });
                        self.on_command(cmd);
                        if costly {
                            more_commands = true;
                            break;
                        }
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
            // Timers.
            self.fire_timers();
            self.replace_failed_rooms();
            self.flush();
            if tracing::enabled!(tracing::Level::DEBUG) && Instant::now() >= next_report {
                next_report = Instant::now() + Duration::from_secs(10);
                self.report();
            }

            // Wait for the socket, a command or the next timer.
            let timeout = if more_commands {
                Some(Duration::ZERO)
            } else {
                wait_for(self.next_timeout(), Instant::now())
            }
            .map(TimeSpec::from_duration);
            // (socket readable, command waiting, the wait ended at the timer)
            tcp_ready.clear();
            let (readable, woken, timed_out) = {
                let mut fds = vec![
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(tcp) = &self.tcp {
                    fds.push(PollFd::new(tcp.listener.as_fd(), PollFlags::POLLIN));
                    tcp_addrs.clear();
                    for (addr, conn) in &tcp.conns {
                        let mut flags = PollFlags::POLLIN;
                        if conn.wants_write() {
                            flags |= PollFlags::POLLOUT;
                        }
                        fds.push(PollFd::new(conn.stream.as_fd(), flags));
                        tcp_addrs.push(*addr);
                    }
                }
                match nix::poll::ppoll(&mut fds, timeout, None) {
                    Ok(ready) => {
                        if self.tcp.is_some() {
                            tcp_accept = fds[2].any().unwrap_or(false);
                            for (fd, addr) in fds[3..].iter().zip(&tcp_addrs) {
                                if let Some(ev) = fd.revents() {
                                    if !ev.is_empty() {
                                        tcp_ready.push((*addr, ev));
                                    }
                                }
                            }
                        }
                        (
                            fds[0].any().unwrap_or(false),
                            fds[1].any().unwrap_or(false),
                            ready == 0,
                        )
                    }
                    // A signal: not a timer's wake-up.
                    Err(Errno::EINTR) => (false, false, false),
                    Err(e) => {
                        tracing::warn!("media worker: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        (false, false, false)
                    }
                }
            };
            self.stats.wakeups += 1;
            if timed_out {
                self.stats.timer_wakeups += 1;
            }
            if woken {
                // Reset the counter; the commands are read at the top of the loop.
                let _ = self.wake.read();
            }
            if readable {
                for _ in 0..MAX_BATCHES_PER_TURN {
                    let n = self.receive_batch(&mut bufs, &mut recv_headers);
                    if n < BATCH {
                        break;
                    }
                }
            }
            if tcp_accept || !tcp_ready.is_empty() {
                self.tcp_turn(tcp_accept, &tcp_ready);
                tcp_accept = false;
            }
        }
    }

    /// Accepts new ICE-TCP connections, writes what connections can take, reads and routes
    /// their frames, then drains the touched rooms.
    fn tcp_turn(&mut self, accept: bool, ready: &[(SocketAddr, PollFlags)]) {
        let Some(mut tcp) = self.tcp.take() else {
            return;
        };
        let now = Instant::now();
        self.latest = now;
        if accept {
            tcp.accept(now);
        }
        for (remote, ev) in ready {
            if ev.contains(PollFlags::POLLOUT) {
                if let Some(conn) = tcp.conns.get_mut(remote) {
                    if conn.write_out().is_err() {
                        tcp.conns.remove(remote);
                        continue;
                    }
                }
            }
            if ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                tcp.read(now, *remote, |route, frame| {
                    self.stats.tcp_frames += 1;
                    self.on_packet(now, Transport::Tcp, *remote, frame, route)
                });
            }
        }
        self.tcp = Some(tcp);
        self.drain_touched();
        self.replace_failed_rooms();
        self.flush();
    }

    /// One `recvmmsg`: routes every datagram, then drains the touched rooms and sends.
    /// Returns the number of datagrams received.
    fn receive_batch(
        &mut self,
        bufs: &mut [[u8; SLOT]; BATCH],
        headers: &mut MultiHeaders<SockaddrStorage>,
    ) -> usize {
        let mut iovs = bufs.each_mut().map(|b| [IoSliceMut::new(&mut b[..])]);
        let fd = self.socket.as_raw_fd();
        let mut n = 0;
        match recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => {
                let now = Instant::now();
                let wall = SystemTime::now();
                for msg in results {
                    n += 1;
                    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
                        self.stats.unroutable_datagrams += 1;
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
                    let at = arrival(now, wall, kernel, self.latest);
                    self.latest = at;
                    self.on_datagram(at, source, contents);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => return 0,
            Err(e) => {
                // E.g. an ICMP error queued for an earlier send: not fatal.
                tracing::debug!("udp receive error: {e}");
                return 0;
            }
        }
        if n > 0 {
            self.stats.receive_batches += 1;
        }
        self.latest = self.latest.max(Instant::now());
        self.drain_touched();
        self.replace_failed_rooms();
        self.flush();
        n
    }

    fn next_timeout(&self) -> Option<Instant> {
        let rooms = self
            .rooms
            .values()
            .filter_map(|s| s.room.poll_timeout())
            .min();
        // Connections are closed up to a second late: not worth a wake-up of their own.
        let tcp = self
            .tcp
            .as_ref()
            .and_then(|t| t.next_expiry())
            .map(|t| t + Duration::from_secs(1));
        match (rooms, tcp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.stats.received_datagrams += 1;
        let known = self.by_addr.get(&source).copied();
        if let Some(owner) = self.on_packet(now, Transport::Udp, source, contents, known) {
            self.by_addr.insert(source, owner);
        }
    }

    /// Routes one packet (a UDP datagram, or a frame of an ICE-TCP connection) that came
    /// from `source`, whose route so far is `known`. Returns the peer `source` is now known
    /// to belong to, when this packet proved it.
    ///
    /// STUN binding requests route by ICE username (cheap to rule out for RTP: the first
    /// two bytes differ), everything else by the known route. The route is learned only from
    /// a request whose integrity verifies with the peer's ICE password: the ICE username
    /// travels in the clear, and a forged request must not make the worker hand that
    /// source's packets to the peer.
    fn on_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        contents: &[u8],
        known: Option<(RoomKey, PeerId)>,
    ) -> Option<(RoomKey, PeerId)> {
        let (target, learn) = match klausur_room::stun_local_ufrag(contents) {
            Some(ufrag) => match self.by_ufrag.get(&ufrag).copied() {
                Some(t) => (Some(t), known != Some(t)),
                None => (None, false),
            },
            None => (known, false),
        };
        let Some((key, peer)) = target else {
            self.stats.unroutable_datagrams += 1;
            return None;
        };
        let destination = match transport {
            Transport::Udp => self.candidate,
            Transport::Tcp => self.tcp_candidate.unwrap_or(self.candidate),
        };
        let result = self.with_room(key, |room| {
            let authentic = learn && room.stun_authentic(peer, contents);
            (
                room.handle_receive_on(now, peer, transport, source, destination, contents),
                authentic,
            )
        });
        let (result, authentic) = result?;
        if let Err(e) = result {
            tracing::debug!(room = key, peer, "packet rejected: {e}");
        }
        if let Some(slot) = self.rooms.get_mut(&key) {
            if !slot.touched {
                slot.touched = true;
                self.touched.push(key);
            }
        }
        authentic.then_some((key, peer))
    }

    /// Runs `f` on a room's core. A panic in it (a bug in the room core or in str0m) stays in
    /// that room: the room is marked failed, and [`Worker::replace_failed_rooms`] tells its
    /// meeting that every peer's media is gone and puts a new, empty core in its place, so the
    /// participants connect again while every other meeting carries on.
    fn with_room<R>(&mut self, key: RoomKey, f: impl FnOnce(&mut Room) -> R) -> Option<R> {
        let slot = self.rooms.get_mut(&key)?;
        match catch_unwind(AssertUnwindSafe(|| f(&mut slot.room))) {
            Ok(r) => Some(r),
            Err(_) => {
                if !self.failed.contains(&key) {
                    self.failed.push(key);
                }
                // Nothing more is asked of the broken core.
                slot.room = Room::new(self.room_config.clone());
                None
            }
        }
    }

    /// Reports the peers of rooms whose core panicked as disconnected and forgets their
    /// routes; the rooms keep a new core.
    fn replace_failed_rooms(&mut self) {
        for key in std::mem::take(&mut self.failed) {
            let peers: Vec<PeerId> = self
                .ufrag_of
                .keys()
                .filter(|(k, _)| *k == key)
                .map(|(_, p)| *p)
                .collect();
            tracing::error!(
                room = key,
                peers = peers.len(),
                "a meeting's media core failed; its participants connect again"
            );
            for peer in peers {
                self.forget_peer(key, peer);
                if let Some(slot) = self.rooms.get(&key) {
                    let _ = slot.events.send(RoomEvent::Disconnected(peer));
                }
            }
        }
    }

    fn drain_touched(&mut self) {
        while let Some(key) = self.touched.pop() {
            if let Some(slot) = self.rooms.get_mut(&key) {
                slot.touched = false;
            }
            self.drain(key);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        self.latest = now;
        if let Some(tcp) = &mut self.tcp {
            tcp.expire(now);
        }
        let mut due = std::mem::take(&mut self.touched);
        due.extend(
            self.rooms
                .iter()
                .filter(|(_, s)| s.room.poll_timeout().is_some_and(|t| t <= now))
                .map(|(k, _)| *k),
        );
        for key in due.drain(..) {
            if let Some(slot) = self.rooms.get_mut(&key) {
                slot.touched = false;
            }
            self.with_room(key, |room| room.handle_timeout(now));
            self.drain(key);
        }
        self.touched = due;
    }

    fn on_command(&mut self, cmd: MediaCmd) {
        let now = Instant::now();
        self.latest = now;
        match cmd {
            MediaCmd::OpenRoom { room, events } => {
                #[allow(unused_mut)] // mutated only in test-hooks builds
                let mut core = Room::new(self.room_config.clone());
                #[cfg(feature = "test-hooks")]
                install_payload_recorder(&mut core);
                self.rooms.insert(
                    room,
                    RoomSlot {
                        room: core,
                        events,
                        touched: false,
                    },
                );
            }
            MediaCmd::CloseRoom { room } => {
                if let Some(slot) = self.rooms.remove(&room) {
                    self.add_room_stats(&slot.room);
                }
                self.by_addr.retain(|_, (k, _)| *k != room);
                if let Some(tcp) = &mut self.tcp {
                    tcp.close_where(|k, _| k == room);
                }
                self.by_ufrag.retain(|_, (k, _)| *k != room);
                self.ufrag_of.retain(|(k, _), _| *k != room);
            }
            MediaCmd::AddPeer { room, peer, reply } => {
                let mut local = vec![(Transport::Udp, self.candidate)];
                if let Some(c) = self.tcp_candidate {
                    local.push((Transport::Tcp, c));
                }
                let result = match self.with_room(room, |r| r.add_peer_on(now, peer, &local)) {
                    Some(result) => result.map_err(|e| e.to_string()),
                    None => Err("room is not open".to_string()),
                };
                let result = result.map(|ufrag| {
                    self.by_ufrag.insert(ufrag.clone(), (room, peer));
                    self.ufrag_of.insert((room, peer), ufrag);
                });
                let _ = reply.send(result);
                self.drain(room);
            }
            MediaCmd::RemovePeer { room, peer } => {
                self.with_room(room, |r| r.remove_peer(now, peer));
                self.forget_peer(room, peer);
                self.drain(room);
            }
            MediaCmd::Offer {
                room,
                peer,
                offer,
                sources,
                reply,
            } => {
                let result = match self
                    .with_room(room, |r| r.handle_parsed_offer(now, peer, offer, &sources))
                {
                    Some(result) => result.map_err(|e| e.to_string()),
                    None => Err("room is not open".to_string()),
                };
                let _ = reply.send(result);
                self.drain(room);
            }
            MediaCmd::SetAudioForwarding {
                room,
                peer,
                enabled,
            } => {
                self.with_room(room, |r| r.set_audio_forwarding(peer, enabled));
            }
            MediaCmd::SetReceivesVideo {
                room,
                peer,
                enabled,
            } => {
                self.with_room(room, |r| r.set_receives_video(peer, enabled));
            }
            MediaCmd::SetVideoWants { room, peer, wants } => {
                self.with_room(room, |r| r.set_video_wants(now, peer, Some(wants)));
                self.drain(room);
            }
            MediaCmd::Stats { reply } => {
                let _ = reply.send(self.totals());
            }
            #[cfg(feature = "test-hooks")]
            MediaCmd::Panic { room } => {
                self.with_room(room, |_| panic!("test hook: a room core panics"));
            }
        }
        self.replace_failed_rooms();
    }

    /// The worker's counters with those of the sender and the open rooms added.
    fn totals(&self) -> MediaStats {
        let mut s = self.stats;
        s.sent_datagrams = self.sender.sent_datagrams;
        s.send_batches = self.sender.send_batches;
        s.gso_datagrams = self.sender.gso_datagrams;
        s.rooms = self.rooms.len();
        if let Some(tcp) = &self.tcp {
            s.tcp_connections = tcp.conns.len();
            s.tcp_peer_connections = tcp.conns.values().filter(|c| c.route.is_some()).count();
            s.tcp_refused_frames = tcp.refused_frames;
            s.tcp_dropped_packets = tcp.dropped_packets;
        }
        for r in self.rooms.values() {
            s.peers += r.room.peer_count();
            let rs = r.room.stats();
            s.forwarded_packets += rs.forwarded_packets;
            s.rtc_ticks += rs.rtc_ticks;
        }
        s
    }

    /// Logs the worker's counters (debug level, every 10 s while enabled).
    fn report(&self) {
        let s = self.totals();
        tracing::debug!(
            "media worker: {} wakeups ({} for timers only), {} datagrams in {} receive batches, {} sent ({} in GSO messages) in {} send batches, {} forwarded, {} rtc ticks",
            s.wakeups,
            s.timer_wakeups,
            s.received_datagrams,
            s.receive_batches,
            s.sent_datagrams,
            s.gso_datagrams,
            s.send_batches,
            s.forwarded_packets,
            s.rtc_ticks
        );
    }

    /// Keeps a closed room's counters in the worker's totals.
    fn add_room_stats(&mut self, room: &Room) {
        let rs = room.stats();
        self.stats.forwarded_packets += rs.forwarded_packets;
        self.stats.rtc_ticks += rs.rtc_ticks;
    }

    fn forget_peer(&mut self, room: RoomKey, peer: PeerId) {
        if let Some(ufrag) = self.ufrag_of.remove(&(room, peer)) {
            self.by_ufrag.remove(&ufrag);
        }
        self.by_addr.retain(|_, t| *t != (room, peer));
        if let Some(tcp) = &mut self.tcp {
            tcp.close_where(|k, p| (k, p) == (room, peer));
        }
    }

    /// Drains a room's outputs: transmits are queued for the next `sendmmsg` (flushed when
    /// a batch is full), events go to the meeting.
    fn drain(&mut self, key: RoomKey) {
        loop {
            let Some(out) = self.with_room(key, |room| room.poll_output()).flatten() else {
                return;
            };
            match out {
                RoomOutput::Transmit {
                    transport: Transport::Tcp,
                    peer,
                    destination,
                    contents,
                    ..
                } => {
                    if let Some(tcp) = &mut self.tcp {
                        tcp.send(destination, (key, peer), &contents);
                    }
                }
                RoomOutput::Transmit {
                    destination,
                    contents,
                    ..
                } => {
                    self.outgoing.push(Outgoing {
                        destination,
                        contents,
                    });
                    if self.outgoing.len() >= 4 * BATCH {
                        self.flush();
                    }
                }
                RoomOutput::Event(ev) => {
                    if let RoomEvent::Disconnected(peer) = ev {
                        self.forget_peer(key, peer);
                    }
                    if let Some(slot) = self.rooms.get(&key) {
                        let _ = slot.events.send(ev);
                    }
                }
            }
        }
    }

    /// Sends everything queued (see [`Sender::send_all`]).
    fn flush(&mut self) {
        if !self.outgoing.is_empty() {
            self.sender.send_all(self.socket.as_fd(), &self.outgoing);
            self.outgoing.clear();
        }
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
/// run ([`gso_run`]), whose lengths go to `runs`. One call sends messages of one kind only
/// (nix applies the same control messages to all of them): plain datagrams (`None`), or GSO
/// messages of one segment size (`Some(size)`, returned). The call ends where the kind
/// changes, so the queue's order is kept.
fn plan_chunk(queue: &[Outgoing], gso: bool, runs: &mut Vec<usize>) -> Option<u16> {
    runs.clear();
    let kind = |queue: &[Outgoing], run: usize| {
        (run > 1).then(|| queue.first().map_or(0, |o| o.contents.len() as u16))
    };
    let first = gso_run(queue, gso);
    if first == 0 {
        return None;
    }
    let segment = kind(queue, first);
    runs.push(first);
    let mut at = first;
    while runs.len() < BATCH && at < queue.len() {
        let run = gso_run(&queue[at..], gso);
        if kind(&queue[at..], run) != segment {
            break;
        }
        runs.push(run);
        at += run;
    }
    segment
}

/// The worker's sending side: `sendmmsg` with UDP GSO, and its counters.
///
/// Holds `mmsghdr`s with raw pointers (not `Send`): build it on the thread that uses it.
struct Sender {
    /// Headers for plain datagrams (no control message buffer).
    plain: MultiHeaders<SockaddrStorage>,
    /// Headers for GSO messages: each with room for one `UDP_SEGMENT` control message. Only
    /// for them: a header with a control buffer but no message in it sends a bogus length.
    gso_headers: MultiHeaders<SockaddrStorage>,
    /// GSO in use; switched off for good when the kernel or device refuses it.
    gso: bool,
    /// The runs of the current `sendmmsg` call (see [`plan_chunk`]).
    runs: Vec<usize>,
    sent_datagrams: u64,
    send_batches: u64,
    gso_datagrams: u64,
    /// Test hook: GSO calls fail with this error instead of reaching the kernel.
    #[cfg(test)]
    fail_gso: Option<Errno>,
}

impl Sender {
    fn new(gso: bool) -> Self {
        Sender {
            plain: MultiHeaders::preallocate(BATCH, None),
            gso_headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u16))),
            gso,
            runs: Vec::with_capacity(BATCH),
            sent_datagrams: 0,
            send_batches: 0,
            gso_datagrams: 0,
            #[cfg(test)]
            fail_gso: None,
        }
    }

    /// Sends `queue` in order: runs of datagrams as GSO messages (see [`gso_run`]), up to
    /// [`BATCH`] messages of one kind per `sendmmsg` (see [`plan_chunk`]).
    fn send_all(&mut self, socket: BorrowedFd<'_>, queue: &[Outgoing]) {
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
                    if segment.is_some() {
                        self.gso_datagrams += datagrams as u64;
                    }
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
        #[cfg(test)]
        if let (Some(e), Some(_)) = (self.fail_gso, segment) {
            return Err(e);
        }
        let slices: Vec<IoSlice<'_>> = chunk.iter().map(|o| IoSlice::new(&o.contents)).collect();
        let mut messages: Vec<&[IoSlice<'_>]> = Vec::with_capacity(self.runs.len());
        let mut addrs: [Option<SockaddrStorage>; BATCH] = [None; BATCH];
        let mut at = 0;
        for (run, addr) in self.runs.iter().zip(addrs.iter_mut()) {
            messages.push(&slices[at..at + run]);
            *addr = Some(SockaddrStorage::from(chunk[at].destination));
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
/// `KLAUSUR_TEST_RECORD_RTP` names a file.
#[cfg(feature = "test-hooks")]
pub fn install_payload_recorder(room: &mut klausur_room::Room) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("KLAUSUR_TEST_RECORD_RTP") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(
                "cannot open the RTP recording {}: {e}",
                path.to_string_lossy()
            );
            return;
        }
    };
    room.set_payload_recorder(Box::new(move |p| {
        use base64::Engine as _;
        let line = serde_json::json!({
            "peer": p.publisher,
            "ssrc": p.ssrc,
            "seq": p.seq,
            "ts": p.timestamp,
            "pt": p.payload_type,
            "marker": p.marker,
            "codec": p.codec,
            "payload": base64::engine::general_purpose::STANDARD.encode(p.payload),
        });
        // One write per line: with O_APPEND the lines of several rooms never interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_wait_for_a_timer_ends_its_slack_after_it() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // A timer 5 ms ahead: the worker sleeps 7 ms unless a datagram or command comes.
        assert_eq!(wait_for(Some(now + ms(5)), now), Some(ms(7)));
        // Due 1 ms ago (it came due while the turn ran): still within its slack.
        assert_eq!(wait_for(Some(now - ms(1)), now), Some(ms(1)));
        // Overdue by more than the slack: no wait at all.
        assert_eq!(wait_for(Some(now - ms(10)), now), Some(Duration::ZERO));
        // No timer: wait for the socket or a command only.
        assert_eq!(wait_for(None, now), None);
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
    fn plan_chunk_keeps_one_kind_per_call() {
        let mut runs = Vec::new();
        // A GSO run of 1000, another of 1000 to a second destination: one call.
        let q = queue(&[(1, 1000), (1, 400), (2, 1000), (2, 1000), (3, 50), (4, 60)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2, 2]);
        // Then plain datagrams.
        assert_eq!(plan_chunk(&q[4..], true, &mut runs), None);
        assert_eq!(runs, [1, 1]);
        // Another segment size ends the call.
        let q = queue(&[(1, 1000), (1, 1000), (2, 900), (2, 900)]);
        assert_eq!(plan_chunk(&q, true, &mut runs), Some(1000));
        assert_eq!(runs, [2]);
        // A plain datagram before a GSO run ends the call.
        let q = queue(&[(1, 100), (2, 1000), (2, 1000)]);
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
        let mut sender = Sender::new(true);
        send_mixed(&mut sender);
        // In runs > 1: A 1000, 1000, 400 and B 1000, 1000, 1000.
        assert_eq!(sender.gso_datagrams, 6);
        // GSO (A), plain (B 120, A 1000), GSO (B), plain (A 77).
        assert_eq!(sender.send_batches, 4);
        assert!(sender.gso);
    }

    #[test]
    fn sends_the_same_datagrams_without_gso() {
        let mut sender = Sender::new(false);
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
            let mut sender = Sender::new(true);
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
        let mut sender = Sender::new(true);
        sender.fail_gso = Some(Errno::EPERM);
        sender.send_all(from.as_fd(), &q);
        assert!(sender.gso);
        // The two GSO runs are dropped, the plain datagrams arrive.
        assert_eq!(
            receive(&a, 2),
            [q[4].contents.clone(), q[8].contents.clone()]
        );
        assert_eq!(receive(&b, 1), [q[3].contents.clone()]);
        assert_eq!(sender.sent_datagrams, 3);
        assert_eq!(sender.send_batches, 2);
    }
}
