//! The media worker: owns the UDP socket and the room cores placed on it.
//!
//! One OS thread (`klausur-media`, not a tokio task) runs the loop that DESIGN.md section 3
//! describes, as a plain blocking loop:
//!
//! 1. wait in `ppoll` for the UDP socket, the command eventfd or the earliest room timer;
//! 2. receive a batch of datagrams with one `recvmmsg` (up to [`BATCH`]), hand each to the
//!    room core that owns its peer ([`Room::handle_receive`]);
//! 3. drain each room touched by the batch once (so each subscriber's `Rtc` is ticked once
//!    per batch, see klausur-room's *Cost*) and send all transmits with `sendmmsg`;
//! 4. fire due room timers, run commands.
//!
//! A packet never crosses a thread or a channel between arrival and forwarding, and the thread
//! is only woken by the kernel for its socket or timer, never by another runtime thread. The
//! signaling side talks to the worker through a command channel plus an eventfd, and the
//! worker reports room events back through one tokio channel per meeting.
//!
//! Per packet there is no allocation in this file: receive buffers and `mmsghdr`s are
//! preallocated; str0m allocates the encrypted datagram of each transmit (the one copy per
//! subscriber). GSO does not apply: consecutive transmits go to different subscribers.
//!
//! Demultiplexing: a new peer's first packet is a STUN binding request whose USERNAME starts
//! with the local ICE ufrag the room core handed out; after that the remote address is known.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use klausur_proto::SendSource;
use klausur_room::{Answer, PeerId, Room, RoomConfig, RoomEvent, RoomOutput};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders,
    SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use tokio::sync::{mpsc, oneshot};

/// Datagrams per `recvmmsg` / `sendmmsg`.
pub const BATCH: usize = 32;
/// Receive slot size: larger datagrams are truncated and dropped (the MTU is ~1200-1500).
const SLOT: usize = 2048;
/// Socket buffer sizes asked for: room for bursts (a keyframe to every subscriber), but not
/// for seconds of backlog when the worker is starved of CPU (late media is useless).
const SOCKET_BUFFER: usize = 1 << 20;
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
    Offer {
        room: RoomKey,
        peer: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
        reply: oneshot::Sender<Result<Answer, String>>,
    },
    SetAudioForwarding {
        room: RoomKey,
        peer: PeerId,
        enabled: bool,
    },
    Stats {
        reply: oneshot::Sender<MediaStats>,
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
    /// Datagrams sent, and `sendmmsg` calls used for them.
    pub sent_datagrams: u64,
    pub send_batches: u64,
    /// `Input::Timeout` ticks of all peers' `Rtc`s (see klausur-room's *Cost*).
    pub rtc_ticks: u64,
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

    pub async fn offer(
        &self,
        room: RoomKey,
        peer: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
    ) -> Result<Answer, String> {
        let (reply, rx) = oneshot::channel();
        self.send(MediaCmd::Offer {
            room,
            peer,
            sdp,
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
    socket: UdpSocket,
    wake: Arc<EventFd>,
    /// The address announced as host candidate (the public IP with the socket's port).
    candidate: SocketAddr,
    rooms: HashMap<RoomKey, RoomSlot>,
    by_ufrag: HashMap<String, (RoomKey, PeerId)>,
    by_addr: HashMap<SocketAddr, (RoomKey, PeerId)>,
    ufrag_of: HashMap<(RoomKey, PeerId), String>,
    /// Rooms that got datagrams in the current batch.
    touched: Vec<RoomKey>,
    /// Transmits waiting for the next `sendmmsg`.
    outgoing: Vec<Outgoing>,
    send_headers: MultiHeaders<SockaddrStorage>,
    stats: MediaStats,
}

/// Binds the UDP socket and starts the worker thread.
pub async fn start(
    listen: SocketAddr,
    public_ip: std::net::IpAddr,
) -> std::io::Result<(MediaHandle, SocketAddr)> {
    let socket = UdpSocket::bind(listen)?;
    socket.set_nonblocking(true)?;
    // Bigger socket buffers ride out bursts (a keyframe to every subscriber); best effort.
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    if setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
    }
    let local = socket.local_addr()?;
    let candidate = SocketAddr::new(public_ip, local.port());
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
                socket,
                wake: worker_wake,
                candidate,
                rooms: HashMap::new(),
                by_ufrag: HashMap::new(),
                by_addr: HashMap::new(),
                ufrag_of: HashMap::new(),
                touched: Vec::new(),
                outgoing: Vec::with_capacity(4 * BATCH),
                send_headers: MultiHeaders::preallocate(BATCH, None),
                stats: MediaStats::default(),
            };
            worker.run(rx)
        })?;
    let handle = MediaHandle {
        inner: Arc::new(HandleInner { tx: Some(tx), wake }),
    };
    Ok((handle, local))
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
            MultiHeaders::preallocate(BATCH, None);
        let mut next_report = Instant::now();
        loop {
            // Commands.
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.on_command(cmd),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
            // Timers.
            self.fire_timers();
            self.flush();
            if tracing::enabled!(tracing::Level::DEBUG) && Instant::now() >= next_report {
                next_report = Instant::now() + Duration::from_secs(10);
                self.report();
            }

            // Wait for the socket, a command or the next timer.
            let timeout = self.next_timeout().map(|t| {
                let d = t.saturating_duration_since(Instant::now());
                TimeSpec::from_duration(d)
            });
            let (readable, woken) = {
                let mut fds = [
                    PollFd::new(self.socket.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
                ];
                match nix::poll::ppoll(&mut fds, timeout, None) {
                    Ok(_) => (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false)),
                    Err(Errno::EINTR) => (false, false),
                    Err(e) => {
                        tracing::warn!("media worker: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        (false, false)
                    }
                }
            };
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
        }
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
        let now;
        let mut n = 0;
        match recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
            Ok(results) => {
                now = Instant::now();
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
                    self.on_datagram(now, source, contents);
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
        self.drain_touched();
        self.flush();
        n
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.rooms
            .values()
            .filter_map(|s| s.room.poll_timeout())
            .min()
    }

    fn on_datagram(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) {
        self.stats.received_datagrams += 1;
        // STUN binding requests route by ICE username (cheap to rule out for RTP: the first
        // two bytes differ), everything else by remote address.
        let target = match klausur_room::stun_local_ufrag(contents) {
            Some(ufrag) => match self.by_ufrag.get(&ufrag).copied() {
                Some(t) => {
                    self.by_addr.insert(source, t);
                    Some(t)
                }
                None => None,
            },
            None => self.by_addr.get(&source).copied(),
        };
        let Some((key, peer)) = target else {
            self.stats.unroutable_datagrams += 1;
            return;
        };
        let destination = self.candidate;
        if let Some(slot) = self.rooms.get_mut(&key) {
            if let Err(e) = slot
                .room
                .handle_receive(now, peer, source, destination, contents)
            {
                tracing::debug!(room = key, peer, "datagram rejected: {e}");
            }
            if !slot.touched {
                slot.touched = true;
                self.touched.push(key);
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
                slot.room.handle_timeout(now);
            }
            self.drain(key);
        }
        self.touched = due;
    }

    fn on_command(&mut self, cmd: MediaCmd) {
        let now = Instant::now();
        match cmd {
            MediaCmd::OpenRoom { room, events } => {
                #[allow(unused_mut)] // mutated only in test-hooks builds
                let mut core = Room::new(RoomConfig::default());
                #[cfg(feature = "test-hooks")]
                crate::test_hooks::install_payload_recorder(&mut core);
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
                self.by_ufrag.retain(|_, (k, _)| *k != room);
                self.ufrag_of.retain(|(k, _), _| *k != room);
            }
            MediaCmd::AddPeer { room, peer, reply } => {
                let candidate = self.candidate;
                let result = match self.rooms.get_mut(&room) {
                    Some(slot) => slot
                        .room
                        .add_peer(now, peer, &[candidate])
                        .map_err(|e| e.to_string()),
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
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.remove_peer(now, peer);
                }
                self.forget_peer(room, peer);
                self.drain(room);
            }
            MediaCmd::Offer {
                room,
                peer,
                sdp,
                sources,
                reply,
            } => {
                let result = match self.rooms.get_mut(&room) {
                    Some(slot) => slot
                        .room
                        .handle_offer(now, peer, &sdp, &sources)
                        .map_err(|e| e.to_string()),
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
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.set_audio_forwarding(peer, enabled);
                }
            }
            MediaCmd::Stats { reply } => {
                let mut s = self.stats;
                s.rooms = self.rooms.len();
                for r in self.rooms.values() {
                    s.peers += r.room.peer_count();
                    let rs = r.room.stats();
                    s.forwarded_packets += rs.forwarded_packets;
                    s.rtc_ticks += rs.rtc_ticks;
                }
                let _ = reply.send(s);
            }
        }
    }

    /// Logs the worker's counters (debug level, every 10 s while enabled).
    fn report(&self) {
        let mut s = self.stats;
        for r in self.rooms.values() {
            let rs = r.room.stats();
            s.forwarded_packets += rs.forwarded_packets;
            s.rtc_ticks += rs.rtc_ticks;
        }
        tracing::debug!(
            "media worker: {} datagrams in {} receive batches, {} sent in {} send batches, {} forwarded, {} rtc ticks",
            s.received_datagrams,
            s.receive_batches,
            s.sent_datagrams,
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
    }

    /// Drains a room's outputs: transmits are queued for the next `sendmmsg` (flushed when
    /// a batch is full), events go to the meeting.
    fn drain(&mut self, key: RoomKey) {
        loop {
            let Some(slot) = self.rooms.get_mut(&key) else {
                return;
            };
            let Some(out) = slot.room.poll_output() else {
                return;
            };
            match out {
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

    /// Sends everything queued, `BATCH` datagrams per `sendmmsg`.
    fn flush(&mut self) {
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let mut start = 0;
        let mut stalls = 0;
        while start < outgoing.len() {
            let chunk = &outgoing[start..outgoing.len().min(start + BATCH)];
            match self.send_chunk(chunk) {
                Ok(sent) => {
                    self.stats.send_batches += 1;
                    self.stats.sent_datagrams += sent as u64;
                    // sendmmsg reports an error of a later message as a short count: skip
                    // that message (it is retried as the first one and fails alone if bad).
                    start += sent.max(1);
                    stalls = 0;
                }
                Err(Errno::EAGAIN) if stalls < 3 => {
                    // Socket buffer full: wait a moment for room, then retry.
                    stalls += 1;
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLOUT)];
                    let _ = nix::poll::poll(&mut fds, PollTimeout::from(5u8));
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    if let Some(o) = chunk.first() {
                        tracing::debug!("udp send to {} failed: {e}", o.destination);
                    }
                    start += 1;
                    stalls = 0;
                }
            }
        }
        outgoing.clear();
        self.outgoing = outgoing;
    }

    fn send_chunk(&mut self, chunk: &[Outgoing]) -> nix::Result<usize> {
        let iovs: [[IoSlice<'_>; 1]; BATCH] = std::array::from_fn(|i| {
            [IoSlice::new(
                chunk.get(i).map_or(&[][..], |o| o.contents.as_slice()),
            )]
        });
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| chunk.get(i).map(|o| SockaddrStorage::from(o.destination)));
        let n = chunk.len().min(BATCH);
        let cmsgs: [ControlMessage<'_>; 0] = [];
        let results = sendmmsg(
            self.socket.as_raw_fd(),
            &mut self.send_headers,
            iovs[..n].iter(),
            &addrs[..n],
            cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )?;
        // The count of messages sent (sendmmsg may stop early, e.g. when the buffer is full).
        Ok(results.count())
    }
}
