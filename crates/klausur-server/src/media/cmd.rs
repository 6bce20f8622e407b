//! What the handle and the workers say to each other: the commands of the signaling side,
//! the counters a worker reports, and the load it publishes for placement.

use std::sync::atomic::AtomicUsize;

use klausur_proto::SendSource;
use klausur_room::{Answer, ParsedOffer, PeerId, RoomEvent, VideoWant};
use tokio::sync::{mpsc, oneshot};

/// Identifies a room (one per running meeting) across the workers.
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
    /// would (see `Worker::with_room`).
    #[cfg(feature = "test-hooks")]
    Panic {
        room: RoomKey,
    },
    /// Test builds only: the worker the room is placed on panics outside any room, as a bug in
    /// the worker loop would (see `worker::supervise`).
    #[cfg(feature = "test-hooks")]
    PanicWorker {
        room: RoomKey,
    },
}

impl MediaCmd {
    /// The room a command is for (`None`: for the worker as a whole).
    pub(super) fn room(&self) -> Option<RoomKey> {
        match self {
            MediaCmd::OpenRoom { room, .. }
            | MediaCmd::CloseRoom { room }
            | MediaCmd::AddPeer { room, .. }
            | MediaCmd::RemovePeer { room, .. }
            | MediaCmd::Offer { room, .. }
            | MediaCmd::SetAudioForwarding { room, .. }
            | MediaCmd::SetReceivesVideo { room, .. }
            | MediaCmd::SetVideoWants { room, .. } => Some(*room),
            #[cfg(feature = "test-hooks")]
            MediaCmd::Panic { room } | MediaCmd::PanicWorker { room } => Some(*room),
            MediaCmd::Stats { .. } => None,
        }
    }
}

/// Counters over all rooms of a worker, or summed over all workers ([`MediaHandle::stats`]).
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
    /// `Input::Timeout` ticks of all peers' `Rtc`s, and the light ticks that only made
    /// written packets sendable (see klausur-room's *Cost*).
    pub rtc_ticks: u64,
    pub written_ticks: u64,
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
    /// Times the worker failed outside a room and was restarted (see `worker::supervise`).
    pub restarts: u64,
}

impl MediaStats {
    /// The counters of several workers summed.
    pub fn total(workers: &[MediaStats]) -> MediaStats {
        let mut total = MediaStats::default();
        for w in workers {
            total.add(w);
        }
        total
    }

    /// Adds another worker's counters.
    pub fn add(&mut self, o: &MediaStats) {
        self.rooms += o.rooms;
        self.peers += o.peers;
        self.forwarded_packets += o.forwarded_packets;
        self.received_datagrams += o.received_datagrams;
        self.unroutable_datagrams += o.unroutable_datagrams;
        self.receive_batches += o.receive_batches;
        self.sent_datagrams += o.sent_datagrams;
        self.send_batches += o.send_batches;
        self.gso_datagrams += o.gso_datagrams;
        self.rtc_ticks += o.rtc_ticks;
        self.written_ticks += o.written_ticks;
        self.wakeups += o.wakeups;
        self.timer_wakeups += o.timer_wakeups;
        self.tcp_connections += o.tcp_connections;
        self.tcp_peer_connections += o.tcp_peer_connections;
        self.tcp_frames += o.tcp_frames;
        self.tcp_refused_frames += o.tcp_refused_frames;
        self.tcp_dropped_packets += o.tcp_dropped_packets;
        self.restarts += o.restarts;
    }
}

/// What a worker publishes of its load (written by the worker after each turn).
#[derive(Default)]
pub(super) struct Load {
    pub peers: AtomicUsize,
}
