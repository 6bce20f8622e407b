//! The media worker: one OS thread (`klausur-media-<i>`, not a tokio task) that owns a UDP
//! socket (and, with ICE-TCP, a TCP listener on the same port number) and the room cores
//! placed on it, and runs DESIGN.md section 3's loop as a plain blocking loop:
//!
//! 1. wait in `ppoll` for the socket, the command eventfd or the earliest room timer;
//! 2. receive a batch of datagrams with one `recvmmsg` (up to [`BATCH`]), hand each to the
//!    room core that owns its peer ([`Room::handle_receive`]; the [`demux`](super::demux)
//!    says which);
//! 3. drain each room touched by the batch once (so each subscriber's `Rtc` is ticked once
//!    per batch, see klausur-room's *Cost*) and send all transmits with `sendmmsg` (with
//!    UDP GSO, see [`socket`](super::socket));
//! 4. fire due room timers, run commands. The wait for a timer ends up to `TIMER_SLACK` (2 ms)
//!    after it is due, so most timers are handled on a wake-up a packet caused anyway.
//!
//! A packet never crosses a thread or a channel between arrival and forwarding, and nothing
//! on the packet path takes a lock: a worker shares nothing with the others. The thread is
//! only woken by the kernel for its sockets or timer, never by another runtime thread. The
//! signaling side talks to it through a command channel plus an eventfd, and the worker
//! reports room events back through one tokio channel per meeting.
//!
//! Failures: a panic in a room core stays in that room ([`Worker::with_room`]); a panic
//! anywhere else in the loop ends that turn only: [`supervise`] restarts the worker on the same
//! sockets with a new, empty core for each of its rooms, and tells their meetings that every
//! peer's media is gone, so the participants connect again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klausur_room::{PeerId, Room, RoomConfig, RoomEvent, RoomOutput, Transport};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::eventfd::EventFd;
use nix::sys::time::TimeSpec;
use tokio::sync::mpsc;

use super::cmd::{Load, MediaCmd, MediaStats, RoomKey};
use super::demux::Routes;
use super::socket::{self, Outgoing, Receiver, Sender, BATCH};
use super::tcp;

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

struct RoomSlot {
    room: Room,
    events: mpsc::UnboundedSender<RoomEvent>,
    /// Touched by the current receive batch (in `Worker::touched`).
    touched: bool,
}

/// What a worker is started with (built by the handle, moved to the worker's thread).
pub(super) struct Setup {
    pub index: usize,
    pub room_config: RoomConfig,
    pub bound: socket::Bound,
    /// The address announced as host candidate (the public IP with the socket's port).
    pub candidate: SocketAddr,
    /// An IPv6 host candidate beside an IPv4 `candidate` (dual stack), if any.
    pub candidate6: Option<SocketAddr>,
    pub wake: Arc<EventFd>,
    pub load: Arc<Load>,
}

pub(super) struct Worker {
    index: usize,
    /// Every room's configuration.
    room_config: RoomConfig,
    socket: std::net::UdpSocket,
    wake: Arc<EventFd>,
    /// Where the worker publishes its load for placement.
    load: Arc<Load>,
    /// The address announced as host candidate, and an IPv6 one beside it (dual stack). The
    /// TCP candidates, with ICE-TCP on, are the same addresses.
    candidate: SocketAddr,
    candidate6: Option<SocketAddr>,
    /// ICE-TCP, when on: the listener and its connections.
    tcp: Option<tcp::Tcp>,
    rooms: HashMap<RoomKey, RoomSlot>,
    routes: Routes,
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
    /// The counters of the worker before its restarts (see [`Worker::restarted`]).
    previous: MediaStats,
}

/// The worker thread's body: runs the worker until the handle is gone. A panic outside a
/// room (a bug in the loop, the demultiplexer or the socket layer) ends the turn it happened
/// in: the worker is restarted ([`Worker::restarted`]) and runs on.
pub(super) fn supervise(setup: Setup, rx: std::sync::mpsc::Receiver<MediaCmd>) {
    let mut worker = Worker::new(setup);
    loop {
        match catch_unwind(AssertUnwindSafe(|| worker.run(&rx))) {
            Ok(()) => return,
            Err(_) => worker = worker.restarted(),
        }
    }
}

impl Worker {
    /// Built on the worker thread: the preallocated `mmsghdr`s hold raw pointers.
    fn new(setup: Setup) -> Self {
        let Setup {
            index,
            room_config,
            bound,
            candidate,
            candidate6,
            wake,
            load,
        } = setup;
        Worker {
            index,
            room_config,
            socket: bound.socket,
            wake,
            load,
            candidate,
            candidate6,
            tcp: bound.listener.map(tcp::Tcp::new),
            rooms: HashMap::new(),
            routes: Routes::default(),
            touched: Vec::new(),
            latest: Instant::now(),
            failed: Vec::new(),
            outgoing: Vec::with_capacity(4 * BATCH),
            sender: Sender::new(bound.gso, bound.v6),
            stats: MediaStats::default(),
            previous: MediaStats::default(),
        }
    }

    /// The worker after a panic outside its rooms: the same sockets, channel and counters, a
    /// new, empty core for each room (nothing is asked of the old ones, whose state the panic
    /// may have left half-changed), and every peer that was placed reported disconnected to
    /// its meeting, so its participants connect again. ICE-TCP connections are closed.
    fn restarted(mut self) -> Worker {
        tracing::error!(
            worker = self.index,
            rooms = self.rooms.len(),
            peers = self.routes.peer_count(),
            "a media worker failed and was restarted; the participants of its meetings connect again"
        );
        for (key, slot) in &self.rooms {
            for peer in self.routes.peers_of(*key) {
                let _ = slot.events.send(RoomEvent::Disconnected(peer));
            }
        }
        // Counters go on; what is open (rooms, peers, connections) starts again.
        let previous = MediaStats {
            rooms: 0,
            peers: 0,
            tcp_connections: 0,
            tcp_peer_connections: 0,
            restarts: self.previous.restarts + 1,
            ..self.totals()
        };
        let rooms = std::mem::take(&mut self.rooms);
        let listener = self.tcp.take().map(|t| t.listener);
        let mut next = Worker::new(Setup {
            index: self.index,
            room_config: self.room_config,
            bound: socket::Bound {
                socket: self.socket,
                listener,
                gso: self.sender.gso(),
                v6: self.sender.v6(),
            },
            candidate: self.candidate,
            candidate6: self.candidate6,
            wake: self.wake,
            load: self.load,
        });
        next.previous = previous;
        for (key, slot) in rooms {
            next.open_room(key, slot.events);
        }
        next.publish_load();
        next
    }

    fn run(&mut self, rx: &std::sync::mpsc::Receiver<MediaCmd>) {
        let mut receiver = Receiver::new();
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

            self.publish_load();
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
                    let n = self.receive_batch(&mut receiver);
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
    fn receive_batch(&mut self, receiver: &mut Receiver) -> usize {
        let fd = self.socket.as_raw_fd();
        let got = receiver.receive(fd, self.latest, |at, source, contents| {
            self.on_datagram(at, source, contents)
        });
        if got.datagrams == 0 {
            return 0;
        }
        self.stats.receive_batches += 1;
        self.stats.unroutable_datagrams += got.truncated as u64;
        self.latest = got.latest.max(Instant::now());
        self.drain_touched();
        self.replace_failed_rooms();
        self.flush();
        got.datagrams
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
        let known = self.routes.of_address(&source);
        if let Some(owner) = self.on_packet(now, Transport::Udp, source, contents, known) {
            self.routes.learn(source, owner);
        }
    }

    /// The host candidate a packet from `source` arrived at: the IPv6 one for an IPv6 source
    /// when the worker has one beside its IPv4 candidate (dual stack), else the candidate.
    fn local_for(&self, source: SocketAddr) -> SocketAddr {
        match (self.candidate6, source) {
            (Some(c6), SocketAddr::V6(_)) => c6,
            _ => self.candidate,
        }
    }

    /// Routes one packet (a UDP datagram, or a frame of an ICE-TCP connection) that came
    /// from `source`, whose route so far is `known` (see [`Routes::target`]). Returns the peer
    /// `source` is now known to belong to, when this packet proved it: a STUN request whose
    /// integrity verifies with the peer's ICE password.
    fn on_packet(
        &mut self,
        now: Instant,
        transport: Transport,
        source: SocketAddr,
        contents: &[u8],
        known: Option<(RoomKey, PeerId)>,
    ) -> Option<(RoomKey, PeerId)> {
        let Some(target) = self.routes.target(contents, known) else {
            self.stats.unroutable_datagrams += 1;
            return None;
        };
        let ((key, peer), learn) = (target.route, target.may_learn);
        let destination = self.local_for(source);
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
            let peers = self.routes.peers_of(key);
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
            MediaCmd::OpenRoom { room, events } => self.open_room(room, events),
            MediaCmd::CloseRoom { room } => {
                if let Some(slot) = self.rooms.remove(&room) {
                    self.add_room_stats(&slot.room);
                }
                self.routes.forget_room(room);
                if let Some(tcp) = &mut self.tcp {
                    tcp.close_where(|k, _| k == room);
                }
            }
            MediaCmd::AddPeer { room, peer, reply } => {
                let mut local = Vec::with_capacity(4);
                for c in std::iter::once(self.candidate).chain(self.candidate6) {
                    local.push((Transport::Udp, c));
                    if self.tcp.is_some() {
                        local.push((Transport::Tcp, c));
                    }
                }
                let result = match self.with_room(room, |r| r.add_peer_on(now, peer, &local)) {
                    Some(result) => result.map_err(|e| e.to_string()),
                    None => Err("room is not open".to_string()),
                };
                let result = result.map(|ufrag| self.routes.add_peer((room, peer), ufrag));
                // Placed before the answer: a room opened after it sees this peer counted.
                self.publish_load();
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
            #[cfg(feature = "test-hooks")]
            MediaCmd::PanicWorker { .. } => panic!("test hook: a media worker panics"),
        }
        self.replace_failed_rooms();
        self.publish_load();
    }

    /// A new room with an empty core.
    fn open_room(&mut self, room: RoomKey, events: mpsc::UnboundedSender<RoomEvent>) {
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

    /// Publishes the worker's load for placement (see `handle::least_loaded`).
    fn publish_load(&self) {
        self.load
            .peers
            .store(self.routes.peer_count(), Ordering::Relaxed);
    }

    /// The worker's counters with those of the sender, the open rooms and the worker before
    /// its restarts added.
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
            s.written_ticks += rs.written_ticks;
        }
        s.add(&self.previous);
        s
    }

    /// Logs the worker's counters (debug level, every 10 s while enabled).
    fn report(&self) {
        let s = self.totals();
        tracing::debug!(
            "media worker: {} wakeups ({} for timers only), {} datagrams in {} receive batches, {} sent ({} in GSO messages) in {} send batches, {} forwarded, {} rtc ticks, {} light ticks for written packets",
            s.wakeups,
            s.timer_wakeups,
            s.received_datagrams,
            s.receive_batches,
            s.sent_datagrams,
            s.gso_datagrams,
            s.send_batches,
            s.forwarded_packets,
            s.rtc_ticks,
            s.written_ticks
        );
    }

    /// Keeps a closed room's counters in the worker's totals.
    fn add_room_stats(&mut self, room: &Room) {
        let rs = room.stats();
        self.stats.forwarded_packets += rs.forwarded_packets;
        self.stats.rtc_ticks += rs.rtc_ticks;
        self.stats.written_ticks += rs.written_ticks;
    }

    fn forget_peer(&mut self, room: RoomKey, peer: PeerId) {
        self.routes.forget_peer((room, peer));
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
}
