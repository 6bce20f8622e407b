//! The media worker: owns the UDP socket and the room cores placed on it.
//!
//! One task runs the loop that DESIGN.md section 3 describes: receive a datagram, hand it to
//! the room core that owns its peer, drain that room's outputs (sending transmits right
//! away), fire timers. A packet never crosses a thread or a channel between arrival and
//! forwarding; the signaling side talks to the worker through a command channel, and the
//! worker reports room events back through one channel per meeting.
//!
//! Demultiplexing: a new peer's first packet is a STUN binding request whose USERNAME starts
//! with the local ICE ufrag the room core handed out; after that the remote address is known.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use klausur_proto::SendSource;
use klausur_room::{Answer, PeerId, Room, RoomConfig, RoomEvent, RoomOutput};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

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
}

/// The signaling side's handle on the worker.
#[derive(Clone)]
pub struct MediaHandle {
    tx: mpsc::UnboundedSender<MediaCmd>,
}

impl MediaHandle {
    pub fn send(&self, cmd: MediaCmd) {
        // The worker only stops at shutdown; a lost command then does not matter.
        let _ = self.tx.send(cmd);
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
}

struct Worker {
    socket: UdpSocket,
    /// The address announced as host candidate (the public IP with the socket's port).
    candidate: SocketAddr,
    rooms: HashMap<RoomKey, RoomSlot>,
    by_ufrag: HashMap<String, (RoomKey, PeerId)>,
    by_addr: HashMap<SocketAddr, (RoomKey, PeerId)>,
    ufrag_of: HashMap<(RoomKey, PeerId), String>,
    stats: MediaStats,
}

/// Binds the UDP socket and starts the worker task.
pub async fn start(
    listen: SocketAddr,
    public_ip: std::net::IpAddr,
) -> std::io::Result<(MediaHandle, SocketAddr)> {
    let socket = UdpSocket::bind(listen).await?;
    let local = socket.local_addr()?;
    let candidate = SocketAddr::new(public_ip, local.port());
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        socket,
        candidate,
        rooms: HashMap::new(),
        by_ufrag: HashMap::new(),
        by_addr: HashMap::new(),
        ufrag_of: HashMap::new(),
        stats: MediaStats::default(),
    };
    tokio::spawn(worker.run(rx));
    Ok((MediaHandle { tx }, local))
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<MediaCmd>) {
        let mut buf = vec![0u8; 2000];
        loop {
            let deadline = self.next_timeout();
            tokio::select! {
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((n, source)) => self.on_datagram(source, n, &buf).await,
                    Err(e) => tracing::debug!("udp receive error: {e}"),
                },
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                _ = sleep_until(deadline) => self.on_timeout().await,
            }
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.rooms
            .values()
            .filter_map(|s| s.room.poll_timeout())
            .min()
    }

    async fn on_datagram(&mut self, source: SocketAddr, n: usize, buf: &[u8]) {
        let contents = &buf[..n];
        self.stats.received_datagrams += 1;
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
        let now = Instant::now();
        let destination = self.candidate;
        if let Some(slot) = self.rooms.get_mut(&key) {
            if let Err(e) = slot
                .room
                .handle_receive(now, peer, source, destination, contents)
            {
                tracing::debug!(room = key, peer, "datagram rejected: {e}");
            }
        }
        self.drain(key).await;
    }

    async fn on_timeout(&mut self) {
        let now = Instant::now();
        let due: Vec<RoomKey> = self
            .rooms
            .iter()
            .filter(|(_, s)| s.room.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(slot) = self.rooms.get_mut(&key) {
                slot.room.handle_timeout(now);
            }
            self.drain(key).await;
        }
    }

    async fn on_command(&mut self, cmd: MediaCmd) {
        let now = Instant::now();
        match cmd {
            MediaCmd::OpenRoom { room, events } => {
                self.rooms.insert(
                    room,
                    RoomSlot {
                        room: Room::new(RoomConfig::default()),
                        events,
                    },
                );
            }
            MediaCmd::CloseRoom { room } => {
                self.rooms.remove(&room);
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
                self.drain(room).await;
            }
            MediaCmd::RemovePeer { room, peer } => {
                if let Some(slot) = self.rooms.get_mut(&room) {
                    slot.room.remove_peer(now, peer);
                }
                self.forget_peer(room, peer);
                self.drain(room).await;
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
                self.drain(room).await;
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
                s.peers = self.rooms.values().map(|r| r.room.peer_count()).sum();
                s.forwarded_packets = self
                    .rooms
                    .values()
                    .map(|r| r.room.stats().forwarded_packets)
                    .sum();
                let _ = reply.send(s);
            }
        }
    }

    fn forget_peer(&mut self, room: RoomKey, peer: PeerId) {
        if let Some(ufrag) = self.ufrag_of.remove(&(room, peer)) {
            self.by_ufrag.remove(&ufrag);
        }
        self.by_addr.retain(|_, t| *t != (room, peer));
    }

    /// Drains a room's outputs: transmits go out at once, events to the meeting.
    async fn drain(&mut self, key: RoomKey) {
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
                    if let Err(e) = self.socket.send_to(&contents, destination).await {
                        tracing::debug!("udp send to {destination} failed: {e}");
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
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
