//! Sans-IO SFU room core of klausur.
//!
//! A [`Room`] is one meeting. It owns one [str0m] `Rtc` per participant ("peer"), runs every
//! one of them in **ICE-lite** and **RTP mode**, and forwards RTP packets between them. It never
//! touches the network, the clock or a database: time is an argument of every call, and
//! everything the room wants done is returned as a [`RoomOutput`] value.
//!
//! # Contract
//!
//! The room is driven by exactly one owner (a media worker task) through `&mut self`:
//!
//! 1. Inputs are the `handle_*` calls: [`Room::add_peer`], [`Room::handle_offer`],
//!    [`Room::handle_receive`] (one UDP datagram addressed to a peer), [`Room::handle_timeout`],
//!    [`Room::remove_peer`], [`Room::set_audio_forwarding`] and [`Room::set_video_wants`]. Each
//!    takes the current time `now` (where it needs it); `now` must never go backwards between
//!    calls.
//! 2. **After every `handle_*` call** (and after `add_peer`, `remove_peer`, `handle_offer`) the
//!    driver calls [`Room::poll_output`] until it returns `None`, sending each
//!    [`RoomOutput::Transmit`] from `source` to `destination` and acting on each
//!    [`RoomOutput::Event`]. **Receive batches:** the driver may instead feed a whole batch of
//!    datagrams (all it got from one `recvmmsg`) through [`Room::handle_receive`] and drain
//!    once after the batch; that is the cheap way (see *Cost* below).
//! 3. Then it asks [`Room::poll_timeout`] and calls [`Room::handle_timeout`] at about that
//!    instant (earlier is always allowed; a few milliseconds later is fine, as the timers are
//!    for RTCP, feedback, keep-alives and retransmission requests, so a driver may hold a timer
//!    back to handle it with the next packet). `None` means no peers are left.
//!
//! Outputs are queued inside the room, so not draining them only costs memory; but a driver
//! that skips `handle_timeout` stalls ICE, DTLS, RTCP and retransmissions.
//!
//! # Cost
//!
//! In str0m's RTP mode a packet written to a subscriber's `Rtc` only becomes sendable when that
//! `Rtc` is given `Input::Timeout`, and such a tick walks all of the subscriber's streams. So
//! [`Room::handle_receive`] only handles the publisher (whose `Input::Receive` includes a tick)
//! and writes the packet to the subscribers; the subscribers are ticked and drained lazily, by
//! the first [`Room::poll_output`] that finds the output queue empty. A driver that drains once
//! per receive batch thus ticks each subscriber once per batch, not once per packet. And while
//! none of a subscriber's timers is due, that tick is a light one (`Rtc::handle_written`, a
//! patch of the vendored str0m) that only makes the written packets sendable instead of walking
//! every stream for reports and timers (see [`RoomStats::written_ticks`] and
//! [`RoomStats::rtc_ticks`]). [`Room::poll_timeout`] is O(1): the room keeps a lower bound of
//! its peers' timeouts and recomputes it exactly in [`Room::handle_timeout`].
//!
//! # Signaling model
//!
//! The browser is always the offerer. Its offer carries sendonly m-lines for its own sources
//! (announced in `sources`, see [`SendSource`]) and recvonly m-lines to receive others. The
//! room answers ([`Room::handle_offer`]) and says in [`Answer::assignments`] which remote track
//! it forwards on which recvonly mid. When the set of tracks a peer should receive changes the
//! room emits [`RoomEvent::Renegotiate`]; the client then sends a new offer with at least that
//! many recvonly transceivers of each kind. Every track keeps its slot, but video is forwarded
//! only to subscribers that show it ([`Room::set_video_wants`]: the client says which tiles it
//! shows and how large), so a large meeting costs each receiver only the videos on its screen.
//!
//! # Media path
//!
//! Packets are forwarded, never reassembled: the forwarder reads RTP headers and header
//! extensions only, never payload bytes, which are end-to-end encrypted. str0m takes each
//! written payload by value, so every subscriber but the last gets a copy of it and the last
//! one the received buffer. Per subscriber slot the sequence number is rewritten to stay
//! continuous, the payload type is mapped to the subscriber's negotiated payload type, the RTP
//! timestamp and marker are kept. Video packets are written NACK-able, so str0m answers
//! subscriber NACKs from the slot's RTX cache, which keeps two seconds (at most 1024 packets):
//! str0m's default of three seconds and 2000 packets made that cache most of a subscriber's
//! memory, and one second was too short behind a bottleneck's full queue. Opus is
//! negotiated without NACK and not cached. str0m NACKs publisher losses itself. Keyframe
//! requests (PLI/FIR) from subscribers are forwarded to the publisher, throttled per publisher
//! track and layer.
//!
//! # Simulcast and bandwidth
//!
//! A camera may arrive as several simulcast layers (rids, low to high as the offer lists them).
//! Each subscriber slot forwards one layer, chosen every 500 ms and when tiles change from the
//! size the subscriber shows the video at ([`Room::set_video_wants`]) and the bandwidth towards
//! the subscriber (str0m's estimator when [`RoomConfig::bandwidth_estimation`] is on, else the
//! subscriber's REMB; capped by [`Room::set_receive_limit`]), see [`simulcast`]. A slot switches
//! at a keyframe of the new layer; sequence numbers, timestamps and VP8 picture IDs continue.
//! The only payload bytes read are the VP8 payload descriptor and a keyframe's clear header
//! (frame tag, start code, size), which SFrame leaves in clear; the picture ID and TL0PICIDX in
//! the descriptor are rewritten. With bandwidth estimation on, str0m's estimator runs without
//! its pacer (packets go out as they come) and the room probes for a higher layer's bandwidth
//! with short trains of resends before it switches ([`simulcast::MediaProbe`]).
//!
//! # ICE-lite and addresses
//!
//! Each peer gets one host candidate per address given to [`Room::add_peer`]. These must be the
//! exact addresses datagrams arrive on (the `destination` of [`Room::handle_receive`]):
//! a STUN request to any other address is dropped by str0m. The room learns the remote address
//! from the client's STUN binding requests (peer-reflexive candidates); no remote candidates
//! need to be signaled. The driver routes a new peer's first datagram by the ICE username
//! ([`stun_local_ufrag`]) and later datagrams by remote address.
//!
//! Peer input (datagrams, SDP) never panics the room; it is either ignored or returned as a
//! [`RoomError`].

pub mod simulcast;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::SdpOffer;
use str0m::config::CryptoProvider;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Rids};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use simulcast::{allocate, parse_vp8, LayerInfo, MediaProbe, VideoDemand, Vp8Rewrite};

pub use klausur_proto::{SendSource, Source};

/// Identifies a participant inside a room; chosen by the caller.
pub type PeerId = u64;

/// The transport a packet travels over between the server and a peer.
///
/// `Tcp` is ICE-TCP (RFC 6544): the server announces a passive TCP host candidate and the
/// browser connects to it; the driver frames packets on the connection (RFC 4571, a 2-byte
/// length before each) and hands the room whole packets, exactly as it hands UDP datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn protocol(self) -> Protocol {
        match self {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        }
    }
}

/// How long and how many forwarded video packets each receive slot keeps for NACK resends.
/// With str0m's default (3 s, 2000 packets) the caches were most of a subscriber's memory (see
/// BENCHMARKS.md); a resend is only useful within a few round trips, before the receiver's
/// jitter buffer gives up on the frame and asks for a keyframe. Those round trips include the
/// queue of a slow link's bottleneck: a layer that overloads a 300 kbit/s link (one the
/// estimate let through while its measured bitrate dipped, or a media probe) fills a queue of
/// 1.2 s, NACKs for the packets it drops come back later than that, and with a cache of one
/// second they went unanswered and the picture froze for 3 to 4 s (`e2e/network.spec.ts`, slow
/// link; 2 s there after). The cache also feeds probe trains: their packets are resends of it.
const RTX_CACHE_AGE: Duration = Duration::from_secs(2);
const RTX_CACHE_PACKETS: usize = 1024;
/// Stop resending when resends exceed this share of the stream. str0m's default of 15 % is
/// reached by a camera of a few packets per frame on a link that loses 5 % (each resend may be
/// lost again, and jitter makes the receiver ask for late packets too): resends are then
/// dropped, a lost packet stays lost, and the receiver's picture freezes until it asks for a
/// keyframe, up to 3 s later (`e2e/network.spec.ts`, lossy link: 3.2 s once in about ten runs).
/// Half the stream still stops a receiver that asks for everything again.
const RTX_RATIO_CAP: f32 = 0.5;
/// How often the active speaker is re-evaluated, and the layers' bitrates measured and the
/// subscribers' simulcast layers chosen anew.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(500);
/// A layer's measured bitrate falls by this fraction of the way to a lower rate per
/// measurement ([`Layer::measure`]).
const LAYER_FALL: u64 = 8;
/// Most simulcast layers a track may have (the web client sends three).
const MAX_LAYERS: usize = 3;
/// The bandwidth estimate a subscriber starts with (it then follows what is acknowledged, and
/// the room's probe trains; [`MediaProbe`]).
const INITIAL_ESTIMATE_KBPS: u64 = 1_000;
/// Bandwidth set aside per forwarded audio track in [`Room::allocate_peer`] (Opus at its
/// usual 32 kbit/s plus packet overhead at 50 packets per second); audio is never dropped.
const AUDIO_BITRATE: u64 = 50_000;

/// How long a peer has, from its first offer, to get ICE and DTLS up ([`RoomEvent::Connected`]).
/// A peer that never finishes DTLS would otherwise keep its `Rtc` (and the RTCP str0m queues
/// for it) for good; a browser connects within a few seconds, over a relay within ten.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Most m-lines an offer may have in any room ([`parse_offer`]); beyond this an offer is
/// refused before it is parsed. See [`Room::max_m_lines`] for the limit of a room.
pub use klausur_proto::{count_m_lines, MAX_OFFER_M_LINES};

/// Most m-lines a room of `peers` peers accepts in one offer: every other peer's microphone,
/// camera and screen, the peer's own three sources, and room for transceivers that a browser
/// keeps after a track ended or for peers that just left.
fn m_line_limit(peers: usize) -> usize {
    (32 + 4 * peers).min(MAX_OFFER_M_LINES)
}

/// Average loudness (127 + dBov, so 0 = silence, 127 = loudest) a peer needs to count as
/// speaking. 77 is -50 dBov.
const SPEECH_THRESHOLD: u32 = 77;

/// Room configuration.
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Minimum gap between two keyframe requests (PLI/FIR) forwarded to one publisher track.
    pub keyframe_request_interval: Duration,
    /// Estimate each subscriber's bandwidth (str0m's transport-wide congestion control, with
    /// probing) and give it simulcast layers that fit. Off: layers are chosen by tile size
    /// alone, unless the subscriber reports REMB.
    pub bandwidth_estimation: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            keyframe_request_interval: Duration::from_millis(500),
            bandwidth_estimation: true,
        }
    }
}

/// One remote track forwarded on one of the client's recvonly mids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The client's recvonly mid.
    pub mid: String,
    /// Whose track arrives there.
    pub publisher: PeerId,
    /// Which of the publisher's sources.
    pub source: Source,
}

/// A video track a subscriber shows, and how large (in device pixels): see
/// [`Room::set_video_wants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoWant {
    pub publisher: PeerId,
    pub source: Source,
    pub width: u32,
    pub height: u32,
}

/// Most video tracks a subscriber may name in [`Room::set_video_wants`]; more are ignored.
pub const MAX_VIDEO_WANTS: usize = 128;

/// The room's answer to a client offer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The SDP answer.
    pub sdp: String,
    /// All tracks currently forwarded to this client, by recvonly mid.
    pub assignments: Vec<Assignment>,
}

/// Something the driver must act on.
#[derive(Debug)]
pub enum RoomOutput {
    /// Send `contents` from local address `source` to `destination`, over `transport`.
    Transmit {
        peer: PeerId,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    },
    /// Something happened in the room.
    Event(RoomEvent),
}

/// Room events for the signaling side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// ICE + DTLS up for this peer (str0m Event::Connected).
    Connected(PeerId),
    /// The peer's Rtc is gone (ICE disconnected for good, DTLS closed, or a fatal Rtc error).
    /// The room has already removed it.
    Disconnected(PeerId),
    /// The peer should send a new offer with at least `audio`/`video` recvonly transceivers.
    Renegotiate {
        peer: PeerId,
        audio: u32,
        video: u32,
    },
    /// Loudest participant, from the RTP audio-level header extension; emitted on change, at
    /// most every 500 ms. None in silence.
    ActiveSpeaker(Option<PeerId>),
}

/// Errors of the room. Caller misuse (`UnknownPeer`, `DuplicatePeer`, `InvalidAddress`) is kept
/// apart from bad peer input (`InvalidSdp`, `InvalidPacket`) and str0m errors (`Rtc`).
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// No peer with this id in the room.
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// A peer with this id already exists.
    #[error("duplicate peer {0}")]
    DuplicatePeer(PeerId),
    /// A local address could not be used as ICE host candidate (or none was given).
    #[error("invalid local address: {0}")]
    InvalidAddress(String),
    /// Bad peer input: an unparsable offer, or one str0m rejects.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// Bad peer input: an offer with more m-lines than the room allows (see
    /// [`Room::max_m_lines`]); refused before any work is done for it.
    #[error("the offer has {count} m-lines, more than the {limit} this meeting allows")]
    TooManyMLines { count: usize, limit: usize },
    /// Bad peer input: a datagram that is neither STUN, DTLS, RTP nor RTCP.
    #[error("invalid packet: {0}")]
    InvalidPacket(String),
    /// str0m reported an error while handling input for the peer.
    #[error("rtc: {0}")]
    Rtc(String),
}

/// Counters of a room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// RTP packets written to subscribers (one per subscriber and packet).
    pub forwarded_packets: u64,
    /// RTP packets received from publishers.
    pub received_packets: u64,
    /// Received RTP packets not forwarded to anyone because the track is muted server-side,
    /// unknown, or of an unexpected payload type.
    pub dropped_packets: u64,
    /// `Input::Timeout` ticks given to the peers' `Rtc`s for due timers and changes other
    /// than written packets (each walks all of the peer's streams).
    pub rtc_ticks: u64,
    /// Light ticks (`Rtc::handle_written`) that made the packets written to a subscriber
    /// sendable while none of its timers was due: one per subscriber per drained receive
    /// batch.
    pub written_ticks: u64,
    /// Times a subscriber slot switched to another simulcast layer (at a keyframe).
    pub layer_switches: u64,
    /// Probe trains sent to subscribers, before trying a higher layer ([`MediaProbe`]).
    pub probe_trains: u64,
    /// Higher layers tried with media, where no probe train could tell ([`MediaProbe`]).
    pub media_trials: u64,
}

/// A track a peer publishes.
#[derive(Debug)]
struct Track {
    mid: Mid,
    source: Source,
    kind: MediaKind,
    /// The encodings, low to high as the client lists them in its offer (`a=simulcast`); one
    /// layer without a rid for a track that is not simulcast.
    layers: Vec<Layer>,
    /// Subscriber slots receiving this track: (subscriber, index into its `slots`).
    routes: Vec<(PeerId, usize)>,
}

impl Track {
    fn simulcast(&self) -> bool {
        self.layers.first().is_some_and(|l| l.rid.is_some())
    }

    fn layer_of(&self, rid: Option<Rid>) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }
}

/// One encoding of a published track (a simulcast layer, or the whole track), as the room
/// measures it from the packets it receives.
#[derive(Debug)]
struct Layer {
    rid: Option<Rid>,
    /// Frame height from the newest keyframe's clear header (0: none seen yet).
    height: u32,
    /// Payload bytes received since the last measurement.
    bytes: u64,
    /// Measured bitrate in bit/s (smoothed, quick to rise and slow to fall: [`Layer::measure`];
    /// 0 until measured).
    bitrate: u64,
    /// Whether packets arrived in the last measurement interval (a browser stops sending a
    /// layer when its own bandwidth or CPU is short).
    active: bool,
    last_keyframe_request: Option<Instant>,
}

impl Layer {
    fn new(rid: Option<Rid>) -> Layer {
        Layer {
            rid,
            height: 0,
            bytes: 0,
            bitrate: 0,
            active: false,
            last_keyframe_request: None,
        }
    }

    /// Turns the bytes counted over `interval` into the smoothed bitrate: halfway to a higher
    /// rate at once, an eighth of the way to a lower one. A camera's layers follow what it
    /// films: a still moment halves a layer's rate, and movement brings it back within a frame
    /// or two. Layers are chosen by what they may send, not by their quietest moment (a layer
    /// chosen while it dipped would overload a link that carries only its usual rate; over
    /// 2 s a dip to half the rate still counts as about 80 % of it). A publisher that lowers a
    /// layer for good is followed within seconds.
    fn measure(&mut self, interval: Duration) {
        let secs = interval.as_secs_f64().max(0.001);
        let now_rate = (self.bytes as f64 * 8.0 / secs) as u64;
        self.active = self.bytes > 0;
        self.bitrate = if self.bitrate == 0 {
            now_rate
        } else if now_rate >= self.bitrate {
            (self.bitrate + now_rate) / 2
        } else {
            self.bitrate - (self.bitrate - now_rate) / LAYER_FALL
        };
        self.bytes = 0;
    }
}

/// A recvonly m-line of the client, i.e. a slot the room may forward one track into.
#[derive(Debug)]
struct Slot {
    mid: Mid,
    mid_str: String,
    kind: MediaKind,
    assigned: Option<(PeerId, Source)>,
    seq: SeqRewrite,
    /// Simulcast: the layer forwarded now (`None`: none yet, or paused), and the layer wanted
    /// ([`Room::allocate_peer`]); the slot switches to `target` at its next keyframe.
    layer: Option<usize>,
    target: Option<usize>,
    /// Simulcast: the budget no longer carries `layer` (the target is lower only for want of
    /// bandwidth): it stops at its next frame boundary rather than go on filling the
    /// subscriber's queue until the target's keyframe comes.
    cut: bool,
    /// The last packet forwarded did not end a frame (no RTP marker).
    frame_open: bool,
    /// Simulcast: keeps the VP8 picture IDs continuous across layer switches.
    vp8: Vp8Rewrite,
    /// The SSRC of the subscriber's send stream of this slot, as last found by its mid: a
    /// lookup by SSRC is one hash lookup, by mid a search of all send streams. Checked
    /// against the mid on every use.
    tx_ssrc: Option<Ssrc>,
}

impl Slot {
    fn new(mid: Mid, mid_str: String, kind: MediaKind) -> Slot {
        Slot {
            mid,
            mid_str,
            kind,
            assigned: None,
            seq: SeqRewrite::new(),
            layer: None,
            target: None,
            cut: false,
            frame_open: false,
            vp8: Vp8Rewrite::default(),
            tx_ssrc: None,
        }
    }

    /// A new stream starts in this slot (another track, or the same one shown again): output
    /// stays continuous, a simulcast layer is picked anew and waits for a keyframe.
    fn restart(&mut self) {
        self.seq.restart();
        self.vp8.restart();
        self.layer = None;
        self.target = None;
        self.cut = false;
        self.frame_open = false;
    }
}

/// Sequence number and RTP timestamp rewriting of one subscriber slot.
///
/// A slot keeps its SSRC when it is given to another publisher's track (a screen share ends,
/// someone else's camera takes the slot): both the sequence numbers and the RTP timestamps must
/// then continue where the previous track left off, or the receiver's jitter buffer takes the
/// new frames for old ones and drops them.
#[derive(Debug)]
struct SeqRewrite {
    /// Output minus input extended sequence number of the current publisher stream.
    delta: Option<i64>,
    /// The next unused output sequence number.
    next_out: u64,
    /// Output minus input RTP timestamp (wrapping) of the current publisher stream.
    ts_delta: Option<u32>,
    /// The newest output RTP timestamp and when it was sent.
    last_ts: Option<(u32, Instant)>,
}

impl SeqRewrite {
    fn new() -> Self {
        // Start low: a first sequence number >= 65536 would need out-of-band ROC signaling.
        SeqRewrite {
            delta: None,
            next_out: 1,
            ts_delta: None,
            last_ts: None,
        }
    }

    /// Restarts the mapping (new publisher stream), keeping the output continuous.
    fn restart(&mut self) {
        self.delta = None;
        self.ts_delta = None;
    }

    /// Maps an RTP timestamp. The first packet after a restart continues from the previous
    /// output timestamp, advanced by the wall-clock time since then at `clock_rate`.
    fn map_ts(&mut self, now: Instant, input: u32, clock_rate: u32) -> u32 {
        let delta = match self.ts_delta {
            Some(d) => d,
            None => {
                let d = match self.last_ts {
                    Some((last, at)) => {
                        let elapsed = now.saturating_duration_since(at).as_secs_f64();
                        let advance = ((elapsed * f64::from(clock_rate)) as u64).clamp(1, 1 << 30);
                        last.wrapping_add(advance as u32).wrapping_sub(input)
                    }
                    None => 0,
                };
                self.ts_delta = Some(d);
                d
            }
        };
        let out = input.wrapping_add(delta);
        let newer = match self.last_ts {
            Some((last, _)) => (out.wrapping_sub(last) as i32) > 0,
            None => true,
        };
        if newer {
            self.last_ts = Some((out, now));
        }
        out
    }

    fn map(&mut self, input: u64) -> Option<u64> {
        let input = i64::try_from(input).ok()?;
        let next = i64::try_from(self.next_out).ok()?;
        let delta = *self.delta.get_or_insert(next - input);
        let out = input.checked_add(delta)?;
        if out < 1 {
            return None;
        }
        let out = out as u64;
        if out >= self.next_out {
            self.next_out = out + 1;
        }
        Some(out)
    }
}

struct Peer {
    rtc: Rtc,
    next_timeout: Instant,
    connected: bool,
    /// Until ICE and DTLS are up: when the peer's time to connect ends (set by its first
    /// offer, see [`CONNECT_TIMEOUT`]).
    connect_by: Option<Instant>,
    /// The local ICE password: checks the integrity of STUN requests ([`Room::stun_authentic`]).
    local_ice_pass: String,
    audio_forwarding: bool,
    /// Whether others' video is forwarded to this peer (false: an audio-only participant such
    /// as the dial-in gateway; it is neither asked for video slots nor given video).
    receives_video: bool,
    /// The video tracks this peer shows ([`Room::set_video_wants`]); `None`: every one.
    video_wants: Option<Vec<VideoWant>>,
    /// The newest estimate of the bandwidth towards this peer, bit/s (str0m's BWE or the
    /// peer's REMB); `None`: unknown, layers are chosen by size alone.
    estimate: Option<u64>,
    /// At most this many bit/s towards this peer ([`Room::set_receive_limit`]).
    receive_limit: Option<u64>,
    /// Probes for more bandwidth than the estimate shows, as the estimator does not by itself.
    probe: MediaProbe,
    opus_pt: Option<Pt>,
    vp8_pt: Option<Pt>,
    tracks: Vec<Track>,
    slots: Vec<Slot>,
    /// Receive counts last told to the peer (or implied by its offer).
    announced: (u32, u32),
    level_sum: u32,
    level_count: u32,
    /// In `Room::dirty`.
    dirty: bool,
    /// Needs an `Input::Timeout(now)` before draining (a timer is due, or the room changed
    /// something other than written packets).
    needs_tick: bool,
    /// Packets were written to it: they need `Rtc::handle_written` (or a full tick) before
    /// draining.
    written: bool,
}

impl Peer {
    fn publishes(&self, source: Source) -> bool {
        self.tracks.iter().any(|t| t.source == source)
    }

    /// Whether this peer shows `publisher`'s video `source` (see [`Room::set_video_wants`]).
    fn wants_video(&self, publisher: PeerId, source: Source) -> bool {
        shows(&self.video_wants, publisher, source)
    }

    /// The video tracks assigned to this peer's slots that it shows.
    fn shown_video(&self) -> Vec<(PeerId, Source)> {
        self.slots
            .iter()
            .filter(|s| s.kind == MediaKind::Video)
            .filter_map(|s| s.assigned)
            .filter(|&(publisher, source)| self.wants_video(publisher, source))
            .collect()
    }

    fn has_assigned(&self, publisher: PeerId, source: Source) -> bool {
        self.slots
            .iter()
            .any(|s| s.assigned == Some((publisher, source)))
    }
}

/// One meeting: the peers' `Rtc`s and the forwarding state between them. See the crate docs
/// for the calling contract.
pub struct Room {
    config: RoomConfig,
    peers: BTreeMap<PeerId, Peer>,
    outputs: VecDeque<RoomOutput>,
    dirty: Vec<PeerId>,
    /// Reused buffer for a track's routes while forwarding.
    scratch: Vec<(PeerId, usize)>,
    stats: RoomStats,
    active_speaker: Option<PeerId>,
    next_speaker_eval: Option<Instant>,
    /// The latest `now` of any input; deferred subscriber ticks run at this time.
    last_now: Option<Instant>,
    /// A lower bound of the peers' `next_timeout` (exact after `handle_timeout`).
    earliest: Option<Instant>,
    #[cfg(feature = "payload-recorder")]
    recorder: Option<PayloadRecorder>,
}

/// Test builds only (feature `payload-recorder`): one forwarded RTP packet as the room saw it.
#[cfg(feature = "payload-recorder")]
#[derive(Debug)]
pub struct RecordedPacket<'a> {
    pub publisher: PeerId,
    pub ssrc: u32,
    pub seq: u16,
    pub timestamp: u32,
    pub payload_type: u8,
    pub marker: bool,
    /// `"opus"` or `"vp8"`.
    pub codec: &'static str,
    pub payload: &'a [u8],
}

/// Test builds only: called with every RTP packet the room forwards.
#[cfg(feature = "payload-recorder")]
pub type PayloadRecorder = Box<dyn FnMut(&RecordedPacket<'_>) + Send>;

fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(str0m::crypto::from_feature_flags()))
        .clone()
}

fn source_kind(source: Source) -> MediaKind {
    match source {
        Source::Microphone => MediaKind::Audio,
        Source::Camera | Source::Screen => MediaKind::Video,
    }
}

/// The header extension values passed on to subscribers. Transport-level extensions (mid, rid,
/// transport-cc, abs-send-time, ...) belong to each hop and are set by str0m itself.
fn forwarded_exts(ext: &ExtensionValues) -> ExtensionValues {
    ExtensionValues {
        audio_level: ext.audio_level,
        voice_activity: ext.voice_activity,
        video_orientation: ext.video_orientation,
        video_content_type: ext.video_content_type,
        abs_capture_time: ext.abs_capture_time,
        ..Default::default()
    }
}

/// The mids of an SDP, in m-line order.
fn sdp_mids(sdp: &str) -> Vec<String> {
    let mut mids: Vec<String> = Vec::new();
    for line in sdp.lines() {
        if let Some(mid) = line.trim().strip_prefix("a=mid:") {
            let mid = mid.trim().to_string();
            if !mid.is_empty() && !mids.contains(&mid) {
                mids.push(mid);
            }
        }
    }
    mids
}

/// A client offer parsed outside the room (parsing is most of an offer's cost, so the driver
/// can do it off the thread that forwards media), not yet accepted.
#[derive(Debug)]
pub struct ParsedOffer {
    offer: SdpOffer,
    m_lines: usize,
}

/// Parses a client offer for [`Room::handle_parsed_offer`]. Refuses, before parsing, an offer
/// with more than [`MAX_OFFER_M_LINES`] m-lines.
pub fn parse_offer(sdp: &str) -> Result<ParsedOffer, RoomError> {
    let m_lines = count_m_lines(sdp);
    if m_lines > MAX_OFFER_M_LINES {
        return Err(RoomError::TooManyMLines {
            count: m_lines,
            limit: MAX_OFFER_M_LINES,
        });
    }
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| RoomError::InvalidSdp(e.to_string()))?;
    Ok(ParsedOffer { offer, m_lines })
}

impl Room {
    /// Creates an empty room.
    pub fn new(config: RoomConfig) -> Room {
        Room {
            config,
            peers: BTreeMap::new(),
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            stats: RoomStats::default(),
            active_speaker: None,
            next_speaker_eval: None,
            last_now: None,
            earliest: None,
            #[cfg(feature = "payload-recorder")]
            recorder: None,
        }
    }

    /// Test builds only: sees every RTP packet this room forwards (after validation, before the
    /// copies to subscribers).
    #[cfg(feature = "payload-recorder")]
    pub fn set_payload_recorder(&mut self, recorder: PayloadRecorder) {
        self.recorder = Some(recorder);
    }

    /// Records `now` as the latest time seen (it never goes backwards).
    fn observe(&mut self, now: Instant) {
        if self.last_now.is_none_or(|t| t < now) {
            self.last_now = Some(now);
        }
    }

    /// Recomputes the exact earliest peer timeout.
    fn recompute_earliest(&mut self) {
        self.earliest = self.peers.values().map(|p| p.next_timeout).min();
    }

    /// Creates the peer's Rtc (ICE-lite, RTP mode, Opus+VP8) with one host candidate per local address.
    /// Returns the peer's local ICE ufrag; the driver routes the first STUN packet by it.
    pub fn add_peer(
        &mut self,
        now: Instant,
        peer: PeerId,
        local_addrs: &[SocketAddr],
    ) -> Result<String, RoomError> {
        let local: Vec<(Transport, SocketAddr)> =
            local_addrs.iter().map(|a| (Transport::Udp, *a)).collect();
        self.add_peer_on(now, peer, &local)
    }

    /// [`Room::add_peer`] with host candidates over UDP and TCP: a TCP candidate is passive
    /// (`tcptype passive`), the browser opens the connection (ICE-TCP, RFC 6544).
    pub fn add_peer_on(
        &mut self,
        now: Instant,
        peer: PeerId,
        local: &[(Transport, SocketAddr)],
    ) -> Result<String, RoomError> {
        if self.peers.contains_key(&peer) {
            return Err(RoomError::DuplicatePeer(peer));
        }
        self.observe(now);
        if local.is_empty() {
            return Err(RoomError::InvalidAddress("no local address".into()));
        }
        let mut candidates = Vec::with_capacity(local.len());
        for (transport, addr) in local {
            let c = match transport {
                Transport::Udp => Candidate::host(*addr, "udp"),
                Transport::Tcp => Candidate::builder()
                    .tcp()
                    .host(*addr)
                    .tcptype(TcpType::Passive)
                    .build(),
            }
            .map_err(|e| RoomError::InvalidAddress(format!("{addr}: {e}")))?;
            candidates.push(c);
        }

        let mut builder = Rtc::builder()
            .set_crypto_provider(crypto_provider())
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true);
        if self.config.bandwidth_estimation {
            // Unpaced (a vendor patch): str0m's pacer walks every send stream on each tick,
            // which cost a meeting of 25 three quarters of its forwarding capacity, and it
            // held packets back. The room adapts by choosing layers, and probes with short
            // trains of resends that the null pacer spaces out (another vendor patch).
            builder = builder
                .enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
                .set_bwe_unpaced(true);
        }
        let mut rtc = builder.build(now);
        for c in candidates {
            rtc.add_local_candidate(c);
        }
        let creds = rtc.direct_api().local_ice_credentials();
        let (ufrag, local_ice_pass) = (creds.ufrag, creds.pass);

        self.peers.insert(
            peer,
            Peer {
                rtc,
                next_timeout: now,
                connected: false,
                connect_by: None,
                local_ice_pass,
                audio_forwarding: true,
                receives_video: true,
                video_wants: None,
                estimate: None,
                receive_limit: None,
                probe: MediaProbe::default(),
                opus_pt: None,
                vp8_pt: None,
                tracks: Vec::new(),
                slots: Vec::new(),
                announced: (0, 0),
                level_sum: 0,
                level_count: 0,
                dirty: false,
                needs_tick: false,
                written: false,
            },
        );
        if self.next_speaker_eval.is_none() {
            self.next_speaker_eval = Some(now + SPEAKER_INTERVAL);
        }
        self.earliest = Some(self.earliest.map_or(now, |e| e.min(now)));
        self.mark_dirty(peer, true);
        self.run(now);
        Ok(ufrag)
    }

    /// Drops the peer; other subscribers whose assignments change get Renegotiate events.
    pub fn remove_peer(&mut self, now: Instant, peer: PeerId) {
        let Some(mut p) = self.peers.remove(&peer) else {
            return;
        };
        self.observe(now);
        p.rtc.disconnect();
        drop(p);
        for q in self.peers.values_mut() {
            for slot in &mut q.slots {
                if matches!(slot.assigned, Some((publisher, _)) if publisher == peer) {
                    slot.assigned = None;
                    slot.restart();
                }
            }
        }
        self.rebuild_routes();
        self.check_renegotiate(None);
        if self.peers.is_empty() {
            self.next_speaker_eval = None;
        }
        self.run(now);
        self.recompute_earliest();
    }

    /// Accepts a client offer; `sources` says which of its sending mids carry which source.
    pub fn handle_offer(
        &mut self,
        now: Instant,
        peer: PeerId,
        sdp: &str,
        sources: &[SendSource],
    ) -> Result<Answer, RoomError> {
        if !self.peers.contains_key(&peer) {
            return Err(RoomError::UnknownPeer(peer));
        }
        self.check_m_lines(count_m_lines(sdp))?;
        let offer = parse_offer(sdp)?;
        self.handle_parsed_offer(now, peer, offer, sources)
    }

    /// Most m-lines this room accepts in an offer now: 32 plus 4 per peer (every other
    /// peer's three sources, the peer's own, and slack), at most [`MAX_OFFER_M_LINES`]. Each
    /// m-line costs the media thread work on every tick of the peer, so a participant of a
    /// small meeting cannot make its `Rtc` as costly as one of a large meeting.
    pub fn max_m_lines(&self) -> usize {
        m_line_limit(self.peers.len())
    }

    fn check_m_lines(&self, count: usize) -> Result<(), RoomError> {
        let limit = self.max_m_lines();
        if count > limit {
            return Err(RoomError::TooManyMLines { count, limit });
        }
        Ok(())
    }

    /// [`Room::handle_offer`] for an offer parsed by [`parse_offer`].
    pub fn handle_parsed_offer(
        &mut self,
        now: Instant,
        peer: PeerId,
        offer: ParsedOffer,
        sources: &[SendSource],
    ) -> Result<Answer, RoomError> {
        if !self.peers.contains_key(&peer) {
            return Err(RoomError::UnknownPeer(peer));
        }
        self.check_m_lines(offer.m_lines)?;
        self.observe(now);
        let offer = offer.offer;
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        if !p.connected && p.connect_by.is_none() {
            p.connect_by = Some(now + CONNECT_TIMEOUT);
        }
        let result = catch_unwind(AssertUnwindSafe(|| p.rtc.sdp_api().accept_offer(offer)));
        let answer = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                self.mark_dirty(peer, true);
                self.run(now);
                return Err(RoomError::InvalidSdp(e.to_string()));
            }
            Err(_) => {
                // str0m panicked on this offer: its state cannot be trusted any more.
                self.fail_peer(now, peer);
                self.run(now);
                return Err(RoomError::InvalidSdp(
                    "offer caused an internal error".into(),
                ));
            }
        };
        let answer_sdp = answer.to_sdp_string();

        p.opus_pt = p
            .rtc
            .codec_config()
            .find(|c| c.spec().codec == Codec::Opus)
            .map(|c| c.pt());
        p.vp8_pt = p
            .rtc
            .codec_config()
            .find(|c| c.spec().codec == Codec::Vp8)
            .map(|c| c.pt());

        // Published tracks and receive slots from the negotiated m-lines.
        let mut tracks: Vec<Track> = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        for mid_str in sdp_mids(&answer_sdp) {
            let mid = Mid::from(mid_str.as_str());
            let Some(media) = p.rtc.media(mid) else {
                continue;
            };
            if media.disabled() {
                continue;
            }
            let kind = media.kind();
            let dir = media.direction();
            if let Some(send) = sources.iter().find(|s| s.mid == mid_str) {
                let source = send.source;
                if dir.is_receiving()
                    && source_kind(source) == kind
                    && !tracks.iter().any(|t| t.source == source)
                {
                    // Simulcast layers as the offer lists them (low to high); a track whose
                    // layers did not change keeps what was measured of them.
                    let rids: Vec<Option<Rid>> = match media.rids_rx() {
                        Rids::Specific(rids) if kind == MediaKind::Video && !rids.is_empty() => {
                            rids.iter().take(MAX_LAYERS).map(|r| Some(*r)).collect()
                        }
                        _ => vec![None],
                    };
                    let layers = match p.tracks.iter_mut().find(|t| {
                        t.source == source
                            && t.mid == mid
                            && t.layers.iter().map(|l| l.rid).eq(rids.iter().copied())
                    }) {
                        Some(old) => std::mem::take(&mut old.layers),
                        None => rids.into_iter().map(Layer::new).collect(),
                    };
                    tracks.push(Track {
                        mid,
                        source,
                        kind,
                        layers,
                        routes: Vec::new(),
                    });
                }
            } else if dir.is_sending() {
                let old = p
                    .slots
                    .iter()
                    .position(|s| s.mid == mid && s.kind == kind)
                    .map(|i| p.slots.swap_remove(i));
                let slot = match old {
                    Some(old) => old,
                    None => {
                        if kind == MediaKind::Video {
                            if let Some(tx) = p.rtc.direct_api().stream_tx_by_mid(mid, None) {
                                tx.set_rtx_cache(
                                    RTX_CACHE_PACKETS,
                                    RTX_CACHE_AGE,
                                    Some(RTX_RATIO_CAP),
                                );
                            }
                        }
                        Slot::new(mid, mid_str, kind)
                    }
                };
                slots.push(slot);
            }
        }

        let mut old_sources: Vec<(Source, Mid)> =
            p.tracks.iter().map(|t| (t.source, t.mid)).collect();
        let mut new_sources: Vec<(Source, Mid)> =
            tracks.iter().map(|t| (t.source, t.mid)).collect();
        old_sources.sort_by_key(|(s, m)| (*s as u8, m.to_string()));
        new_sources.sort_by_key(|(s, m)| (*s as u8, m.to_string()));
        let publications_changed = old_sources != new_sources;
        p.tracks = tracks;
        p.slots = slots;

        // Unassign slots of other subscribers whose track this peer no longer publishes, or
        // publishes on another mid (a different stream: restart the sequence mapping).
        if publications_changed {
            for (qid, q) in self.peers.iter_mut() {
                if *qid == peer {
                    continue;
                }
                for slot in &mut q.slots {
                    let Some((publisher, source)) = slot.assigned else {
                        continue;
                    };
                    if publisher != peer {
                        continue;
                    }
                    let new_mid = new_sources.iter().find(|(s, _)| *s == source);
                    let old_mid = old_sources.iter().find(|(s, _)| *s == source);
                    if new_mid.is_none() {
                        slot.assigned = None;
                        slot.restart();
                    } else if new_mid != old_mid {
                        slot.restart();
                    }
                }
            }
        }

        // This peer's slots: keep valid assignments, fill free slots with wanted tracks.
        let published: Vec<(PeerId, Source, MediaKind)> = self.published_tracks();
        let mut new_video: Vec<(PeerId, Source)> = Vec::new();
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        for slot in &mut p.slots {
            if let Some((publisher, source)) = slot.assigned {
                let valid = publisher != peer
                    && published
                        .iter()
                        .any(|&(pp, ps, pk)| pp == publisher && ps == source && pk == slot.kind);
                if !valid {
                    slot.assigned = None;
                    slot.restart();
                }
            }
        }
        for &(publisher, source, kind) in &published {
            if publisher == peer
                || p.has_assigned(publisher, source)
                || (kind == MediaKind::Video && !p.receives_video)
            {
                continue;
            }
            if let Some(slot) = p
                .slots
                .iter_mut()
                .find(|s| s.assigned.is_none() && s.kind == kind)
            {
                slot.assigned = Some((publisher, source));
                slot.restart();
                if kind == MediaKind::Video && p.wants_video(publisher, source) {
                    new_video.push((publisher, source));
                }
            }
        }
        let assignments: Vec<Assignment> = p
            .slots
            .iter()
            .filter_map(|s| {
                s.assigned.map(|(publisher, source)| Assignment {
                    mid: s.mid_str.clone(),
                    publisher,
                    source,
                })
            })
            .collect();

        self.rebuild_routes();
        if publications_changed {
            self.check_renegotiate(Some(peer));
        }
        self.check_renegotiate_peer(peer, true);
        self.video_started(now, peer, new_video, false);

        self.mark_dirty(peer, true);
        self.run(now);
        Ok(Answer {
            sdp: answer_sdp,
            assignments,
        })
    }

    /// One UDP datagram from the network addressed to `peer`.
    ///
    /// Handles the publisher at once and writes forwarded RTP to the subscribers' `Rtc`s; the
    /// subscribers are ticked by the next [`Room::poll_output`] (see *Cost* in the crate docs).
    pub fn handle_receive(
        &mut self,
        now: Instant,
        peer: PeerId,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> Result<(), RoomError> {
        self.handle_receive_on(now, peer, Transport::Udp, source, destination, contents)
    }

    /// [`Room::handle_receive`] for a packet that came over `transport` (for TCP: one whole
    /// RFC 4571 frame without its length prefix, `source` the connection's remote address).
    pub fn handle_receive_on(
        &mut self,
        now: Instant,
        peer: PeerId,
        transport: Transport,
        source: SocketAddr,
        destination: SocketAddr,
        contents: &[u8],
    ) -> Result<(), RoomError> {
        if !self.peers.contains_key(&peer) {
            return Err(RoomError::UnknownPeer(peer));
        }
        self.observe(now);
        let p = self
            .peers
            .get_mut(&peer)
            .ok_or(RoomError::UnknownPeer(peer))?;
        let receive = Receive::new(transport.protocol(), source, destination, contents)
            .map_err(|e| RoomError::InvalidPacket(e.to_string()))?;
        match p.rtc.handle_input(Input::Receive(now, receive)) {
            Ok(()) => {
                // Input::Receive includes a tick at `now`: whatever was written to this peer
                // before is sendable now. Drain it at once: str0m holds only one received RTP
                // packet for the next poll.
                p.needs_tick = false;
                p.written = false;
                self.drain(now, peer);
                Ok(())
            }
            Err(e) => {
                if p.rtc.is_alive() {
                    self.mark_dirty(peer, true);
                } else {
                    self.fail_peer(now, peer);
                }
                Err(RoomError::Rtc(e.to_string()))
            }
        }
    }

    /// Drives time forward: ICE, DTLS, RTCP, retransmissions, pacing, active speaker.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        let too_slow: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connect_by.is_some_and(|c| c <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in too_slow {
            tracing::debug!(peer, "no ICE and DTLS within {CONNECT_TIMEOUT:?}: dropped");
            self.fail_peer(now, peer);
        }
        for (id, p) in self.peers.iter_mut() {
            if p.next_timeout <= now {
                p.needs_tick = true;
                if !p.dirty {
                    p.dirty = true;
                    self.dirty.push(*id);
                }
            }
        }
        self.run(now);
        self.recompute_earliest();
    }

    /// The next output, if any. Call until `None` after every `handle_*` call (or after a
    /// batch of [`Room::handle_receive`] calls). When the queue is empty, the peers written to
    /// since the last drain are ticked and drained first.
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        if self.outputs.is_empty() && !self.dirty.is_empty() {
            if let Some(now) = self.last_now {
                self.run(now);
            }
        }
        self.outputs.pop_front()
    }

    /// Earliest time handle_timeout must be called (None if no peers). O(1); may be earlier
    /// than necessary, never later.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.peers.is_empty() {
            return None;
        }
        let peers = self.earliest?;
        Some(match self.next_speaker_eval {
            Some(t) => peers.min(t),
            None => peers,
        })
    }

    /// Server-side mute: while false, the peer's audio packets are not forwarded.
    pub fn set_audio_forwarding(&mut self, peer: PeerId, enabled: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.audio_forwarding = enabled;
            if !enabled {
                p.level_sum = 0;
                p.level_count = 0;
            }
        }
    }

    /// Whether others' video is forwarded to the peer (default true). An audio-only
    /// participant (the dial-in gateway) is set to false before its first offer: it is then
    /// neither asked for video receive slots nor given video.
    pub fn set_receives_video(&mut self, peer: PeerId, enabled: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.receives_video = enabled;
        }
    }

    /// Which of the others' video tracks `peer` shows, and at what size; `None` (the default):
    /// all of them. Video the peer does not show is not forwarded to it at all: its receive
    /// slot stays assigned (the client keeps the transceiver, so showing it again needs no
    /// renegotiation) but idle. A track shown again continues the slot's sequence numbers and
    /// timestamps where they stopped, and its publisher is asked for a keyframe. At most
    /// [`MAX_VIDEO_WANTS`] entries are taken; wants for tracks nobody publishes are kept (the
    /// track may start later).
    pub fn set_video_wants(&mut self, now: Instant, peer: PeerId, wants: Option<Vec<VideoWant>>) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.observe(now);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let wants = wants.map(|mut w| {
            w.truncate(MAX_VIDEO_WANTS);
            w
        });
        let before = p.shown_video();
        p.video_wants = wants;
        let mut started = Vec::new();
        for slot in p.slots.iter_mut().filter(|s| s.kind == MediaKind::Video) {
            let Some((publisher, source)) = slot.assigned else {
                continue;
            };
            if shows(&p.video_wants, publisher, source) && !before.contains(&(publisher, source)) {
                slot.restart();
                started.push((publisher, source));
            }
        }
        self.rebuild_routes();
        if !self.peers.get(&peer).is_some_and(|p| p.connected) {
            started.clear();
        }
        self.video_started(now, peer, started, false);
        self.run(now);
    }

    /// `videos` start to be forwarded to `peer`: their publishers are asked for a keyframe
    /// (simulcast tracks: of the layer chosen now) and the peer's layers are chosen anew.
    fn video_started(
        &mut self,
        now: Instant,
        peer: PeerId,
        videos: Vec<(PeerId, Source)>,
        throttled: bool,
    ) {
        for (publisher, source) in videos {
            let kind = KeyframeRequestKind::Pli;
            self.request_keyframe(now, publisher, source, None, kind, throttled);
        }
        self.allocate_peer(now, peer);
    }

    /// Caps what the room sends `peer` at `limit` bit/s (`None`: only its bandwidth estimate
    /// counts), for a participant who asked for less (a metered mobile link): simulcast
    /// layers are chosen within the lower of the limit and the estimate.
    pub fn set_receive_limit(&mut self, now: Instant, peer: PeerId, limit: Option<u64>) {
        self.observe(now);
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.receive_limit = limit;
        self.allocate_peer(now, peer);
        self.run(now);
    }

    /// Whether `contents` is a STUN message for `peer` whose MESSAGE-INTEGRITY verifies with
    /// the peer's local ICE password: only its client can make one. The driver learns a
    /// remote address for the peer only from such a request; a forged request that merely
    /// names the peer's ICE username (which travels in the clear) must not make the driver
    /// send that address's datagrams to the peer.
    pub fn stun_authentic(&self, peer: PeerId, contents: &[u8]) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        let Ok(message) = str0m::ice::StunMessage::parse(contents) else {
            return false;
        };
        let password = p.local_ice_pass.as_bytes();
        let provider = crypto_provider();
        let hmac =
            |key: &[u8], payloads: &[&[u8]]| provider.sha1_hmac_provider.sha1_hmac(key, payloads);
        message.verify(password, hmac)
    }

    /// Whether the peer publishes a track of this source right now.
    pub fn publishes(&self, peer: PeerId, source: Source) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.publishes(source))
    }

    /// Number of peers in the room.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Packet counters since the room was created.
    pub fn stats(&self) -> RoomStats {
        self.stats
    }

    // ---------------------------------------------------------------------------------------

    fn mark_dirty(&mut self, peer: PeerId, tick: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.needs_tick |= tick;
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(peer);
            }
        }
    }

    /// Packets were written to the peer (it only needs them made sendable).
    fn mark_written(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.written = true;
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(peer);
            }
        }
    }

    /// Drains every dirty peer (which may dirty others) and evaluates the active speaker.
    fn run(&mut self, now: Instant) {
        while let Some(id) = self.dirty.pop() {
            let Some(p) = self.peers.get_mut(&id) else {
                continue;
            };
            p.dirty = false;
            let written = std::mem::take(&mut p.written);
            let result = if std::mem::take(&mut p.needs_tick) || (written && p.next_timeout <= now)
            {
                self.stats.rtc_ticks += 1;
                p.rtc.handle_input(Input::Timeout(now))
            } else if written {
                // No timer of the peer is due: only the written packets need making sendable.
                self.stats.written_ticks += 1;
                p.rtc.handle_written(now)
            } else {
                Ok(())
            };
            if let Err(e) = result {
                tracing::debug!(peer = id, "rtc timeout error: {e}");
                if !p.rtc.is_alive() {
                    self.fail_peer(now, id);
                    continue;
                }
            }
            self.drain(now, id);
        }
        self.eval_speaker(now);
    }

    fn drain(&mut self, now: Instant, id: PeerId) {
        loop {
            let Some(p) = self.peers.get_mut(&id) else {
                return;
            };
            match p.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    // A peer still connecting is woken at the end of its time to connect.
                    let t = p.connect_by.map_or(t, |c| t.min(c));
                    p.next_timeout = t;
                    if self.earliest.is_none_or(|e| t < e) {
                        self.earliest = Some(t);
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let transport = match t.proto {
                        Protocol::Udp => Transport::Udp,
                        // Only TCP host candidates are announced: any other stream protocol
                        // cannot be a pair of this peer, but goes out framed all the same.
                        _ => Transport::Tcp,
                    };
                    self.outputs.push_back(RoomOutput::Transmit {
                        peer: id,
                        transport,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Ok(Output::Event(e)) => self.handle_event(now, id, e),
                Err(e) => {
                    tracing::debug!(peer = id, "rtc poll error: {e}");
                    self.fail_peer(now, id);
                    return;
                }
            }
        }
        if self.peers.get(&id).is_some_and(|p| !p.rtc.is_alive()) {
            self.fail_peer(now, id);
        }
    }

    fn handle_event(&mut self, now: Instant, id: PeerId, event: Event) {
        match event {
            Event::Connected => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                p.connected = true;
                p.connect_by = None;
                let video = p.shown_video();
                self.outputs
                    .push_back(RoomOutput::Event(RoomEvent::Connected(id)));
                self.video_started(now, id, video, true);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.fail_peer(now, id);
            }
            Event::RtpPacket(packet) => self.forward(now, id, packet),
            Event::KeyframeRequest(req) => {
                let Some(p) = self.peers.get(&id) else {
                    return;
                };
                let Some((publisher, source, layer)) = p
                    .slots
                    .iter()
                    .find(|s| s.mid == req.mid)
                    .and_then(|s| s.assigned.map(|(pb, src)| (pb, src, s.layer.or(s.target))))
                else {
                    return;
                };
                self.request_keyframe(now, publisher, source, layer, req.kind, true);
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                let Some(p) = self.peers.get_mut(&id) else {
                    return;
                };
                p.estimate = Some(estimate.as_u64());
                // A media probe is judged at every estimate, not only every SPEAKER_INTERVAL:
                // one the link does not carry ends sooner.
                if p.probe.trying() {
                    self.allocate_peer(now, id);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                // A receiver's own estimate counts where the room runs none of its own.
                if let Some(p) = self.peers.get_mut(&id) {
                    if !self.config.bandwidth_estimation {
                        p.estimate = Some(estimate.as_u64());
                    }
                }
            }
            _ => {}
        }
    }

    fn forward(&mut self, now: Instant, publisher: PeerId, mut packet: RtpPacket) {
        self.stats.received_packets += 1;
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some((mid, rid)) = p
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| (s.mid(), s.rid()))
        else {
            self.stats.dropped_packets += 1;
            return;
        };
        let pt = packet.header.payload_type;
        let codec = if Some(pt) == p.opus_pt {
            Codec::Opus
        } else if Some(pt) == p.vp8_pt {
            Codec::Vp8
        } else {
            self.stats.dropped_packets += 1;
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.mid == mid) else {
            self.stats.dropped_packets += 1;
            return;
        };
        let kind_ok = match codec {
            Codec::Opus => track.kind == MediaKind::Audio,
            _ => track.kind == MediaKind::Video,
        };
        if !kind_ok {
            self.stats.dropped_packets += 1;
            return;
        }
        let Some(layer) = track.layer_of(rid) else {
            self.stats.dropped_packets += 1;
            return;
        };
        // Of a simulcast layer the room reads the VP8 descriptor (clear under SFrame): where a
        // subscriber may switch layers, and the frame size on keyframes.
        let simulcast = track.simulcast();
        let vp8 = if simulcast {
            parse_vp8(&packet.payload)
        } else {
            None
        };
        if let Some(l) = track.layers.get_mut(layer) {
            l.bytes += packet.payload.len() as u64;
            if let Some((_, height)) = vp8.and_then(|d| d.keyframe_size(&packet.payload)) {
                l.height = height;
            }
        }
        #[cfg(feature = "payload-recorder")]
        if let Some(record) = self.recorder.as_mut() {
            record(&RecordedPacket {
                publisher,
                ssrc: *packet.header.ssrc,
                seq: packet.header.sequence_number,
                timestamp: packet.header.timestamp,
                payload_type: *pt,
                marker: packet.header.marker,
                codec: if codec == Codec::Opus { "opus" } else { "vp8" },
                payload: &packet.payload,
            });
        }
        if track.kind == MediaKind::Audio {
            if !p.audio_forwarding {
                self.stats.dropped_packets += 1;
                return;
            }
            if let Some(level) = packet.header.ext_vals.audio_level {
                p.level_sum += (127 + i32::from(level).clamp(-127, 0)) as u32;
                p.level_count += 1;
            }
        }

        let mut routes = std::mem::take(&mut self.scratch);
        routes.clear();
        routes.extend_from_slice(&track.routes);
        let exts = forwarded_exts(&packet.header.ext_vals);
        let in_seq = *packet.seq_no;
        for (i, &(qid, slot_idx)) in routes.iter().enumerate() {
            let Some(q) = self.peers.get_mut(&qid) else {
                continue;
            };
            if !q.connected {
                continue;
            }
            let out_pt = match codec {
                Codec::Opus => q.opus_pt,
                _ => q.vp8_pt,
            };
            let Some(out_pt) = out_pt else {
                continue;
            };
            let Some(slot) = q.slots.get_mut(slot_idx) else {
                continue;
            };
            if simulcast && slot.layer == Some(layer) && slot.cut && !slot.frame_open {
                // A frame ended: stop here until the target's keyframe.
                slot.layer = None;
                slot.cut = false;
            }
            if simulcast && slot.layer != Some(layer) {
                // Another layer: switch to it at its keyframe if it is the one wanted.
                if slot.target != Some(layer) || !vp8.is_some_and(|d| d.keyframe_start) {
                    continue;
                }
                let up = slot.layer.is_none_or(|l| layer > l);
                slot.restart();
                slot.layer = Some(layer);
                slot.target = Some(layer);
                self.stats.layer_switches += 1;
                if up {
                    // Marks a running trial's switch (without the room's own estimator its
                    // delivery is never read, and the mark changes nothing).
                    q.probe.switched(now);
                }
                tracing::debug!(peer = qid, layer, "slot switched layer");
            }
            slot.frame_open = !packet.header.marker;
            let Some(out_seq) = slot.seq.map(in_seq) else {
                continue;
            };
            let mut api = q.rtc.direct_api();
            let mid = slot.mid;
            let cached = slot
                .tx_ssrc
                .filter(|ssrc| api.stream_tx(ssrc).is_some_and(|tx| tx.mid() == mid));
            let ssrc = match cached {
                Some(ssrc) => ssrc,
                None => {
                    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                        continue;
                    };
                    slot.tx_ssrc = Some(tx.ssrc());
                    tx.ssrc()
                }
            };
            let Some(tx) = api.stream_tx(&ssrc) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(
                    out_pt,
                    out_seq.into(),
                    slot.seq.map_ts(
                        now,
                        packet.header.timestamp,
                        if codec == Codec::Opus { 48_000 } else { 90_000 },
                    ),
                    now,
                    // str0m takes the payload by value: one copy per subscriber, and the
                    // last one gets the received buffer itself.
                    {
                        let mut payload = if i + 1 == routes.len() {
                            std::mem::take(&mut packet.payload)
                        } else {
                            packet.payload.clone()
                        };
                        if let Some(d) = &vp8 {
                            // The descriptor is at most 6 bytes: rewrite a copy of it, and copy
                            // the payload only when its numbers actually change.
                            let n = d.frame_start.min(payload.len()).min(8);
                            let mut head = [0u8; 8];
                            head[..n].copy_from_slice(&payload[..n]);
                            slot.vp8.rewrite(&mut head[..n], d);
                            if head[..n] != payload[..n] {
                                let mut v = payload.to_vec();
                                v[..n].copy_from_slice(&head[..n]);
                                payload = v.into();
                            }
                        }
                        payload
                    },
                )
                .marker(packet.header.marker)
                .ext_vals(exts.clone())
                // Opus is negotiated without NACK: caching audio for resends only costs.
                .nackable(codec != Codec::Opus),
            );
            self.stats.forwarded_packets += 1;
            self.mark_written(qid);
        }
        self.scratch = routes;
    }

    /// Asks the publisher for a keyframe of its `source` track, throttled per layer unless
    /// `throttled` is false. Of a simulcast track only `layer` is asked (nothing if `None`:
    /// the subscriber's layer is not chosen yet, and [`Room::allocate_peer`] asks when it is).
    fn request_keyframe(
        &mut self,
        now: Instant,
        publisher: PeerId,
        source: Source,
        layer: Option<usize>,
        kind: KeyframeRequestKind,
        throttled: bool,
    ) {
        let interval = self.config.keyframe_request_interval;
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let Some(track) = p.tracks.iter_mut().find(|t| t.source == source) else {
            return;
        };
        if track.kind != MediaKind::Video {
            return;
        }
        let index = if track.simulcast() { layer } else { Some(0) };
        let Some(l) = index.and_then(|i| track.layers.get_mut(i)) else {
            return;
        };
        if throttled {
            if let Some(last) = l.last_keyframe_request {
                if now.saturating_duration_since(last) < interval {
                    return;
                }
            }
        }
        let mut api = p.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(track.mid, l.rid) else {
            return;
        };
        rx.request_keyframe(kind);
        l.last_keyframe_request = Some(now);
        self.mark_dirty(publisher, true);
    }

    /// The Rtc of this peer is gone: remove it and tell the driver.
    fn fail_peer(&mut self, now: Instant, peer: PeerId) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.remove_peer(now, peer);
        self.outputs
            .push_back(RoomOutput::Event(RoomEvent::Disconnected(peer)));
    }

    /// All published tracks of the room, in peer order.
    fn published_tracks(&self) -> Vec<(PeerId, Source, MediaKind)> {
        self.peers
            .iter()
            .flat_map(|(id, p)| p.tracks.iter().map(move |t| (*id, t.source, t.kind)))
            .collect()
    }

    fn rebuild_routes(&mut self) {
        let mut routes: Vec<(PeerId, Source, PeerId, usize)> = Vec::new();
        for (qid, q) in &self.peers {
            for (idx, slot) in q.slots.iter().enumerate() {
                if let Some((publisher, source)) = slot.assigned {
                    // Video the subscriber does not show is not forwarded to it.
                    if slot.kind == MediaKind::Video && !q.wants_video(publisher, source) {
                        continue;
                    }
                    routes.push((publisher, source, *qid, idx));
                }
            }
        }
        for p in self.peers.values_mut() {
            for t in &mut p.tracks {
                t.routes.clear();
            }
        }
        for (publisher, source, qid, idx) in routes {
            if let Some(track) = self
                .peers
                .get_mut(&publisher)
                .and_then(|p| p.tracks.iter_mut().find(|t| t.source == source))
            {
                track.routes.push((qid, idx));
            }
        }
    }

    /// After a change of the published tracks: tell every peer (except `except`) whose wanted
    /// tracks changed to renegotiate.
    fn check_renegotiate(&mut self, except: Option<PeerId>) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            if Some(id) != except {
                self.check_renegotiate_peer(id, false);
            }
        }
    }

    /// Emits Renegotiate for `peer` if some track it should receive has no slot yet, or (unless
    /// `after_offer`, where only missing slots matter) if the counts of tracks it should receive
    /// differ from what it was last told.
    fn check_renegotiate_peer(&mut self, peer: PeerId, after_offer: bool) {
        let published = self.published_tracks();
        let Some(q) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut audio = 0u32;
        let mut video = 0u32;
        let mut missing = false;
        for &(publisher, source, kind) in &published {
            if publisher == peer || (kind == MediaKind::Video && !q.receives_video) {
                continue;
            }
            match kind {
                MediaKind::Audio => audio += 1,
                MediaKind::Video => video += 1,
            }
            if !q.has_assigned(publisher, source) {
                missing = true;
            }
        }
        let counts = (audio, video);
        let emit = if after_offer {
            missing
        } else {
            counts != q.announced || missing
        };
        if after_offer && !missing {
            q.announced = counts;
        }
        if emit {
            q.announced = counts;
            self.outputs
                .push_back(RoomOutput::Event(RoomEvent::Renegotiate {
                    peer,
                    audio,
                    video,
                }));
        }
    }

    /// Chooses the simulcast layer of every video slot of `peer` from its bandwidth estimate
    /// and the size at which it shows each video ([`simulcast::allocate`]): audio first, then
    /// screen shares, then cameras. A slot whose layer changes keeps forwarding the old layer
    /// until the new one's keyframe (requested here) arrives. The budget is the peer's
    /// bandwidth estimate, raised from time to time to try the next layer up ([`MediaProbe`]),
    /// and capped by its receive limit.
    fn allocate_peer(&mut self, now: Instant, peer: PeerId) {
        let Some(q) = self.peers.get(&peer) else {
            return;
        };
        if !q.connected {
            return;
        }
        let mut demands = Vec::new();
        // (slot index, publisher, source, simulcast, layer indices behind the demand's layers)
        let mut behind: Vec<(usize, PeerId, Source, bool, Vec<usize>)> = Vec::new();
        let mut audio = 0u64;
        // Per demand: the layer it would get with unlimited bandwidth.
        let mut bests: Vec<Option<usize>> = Vec::new();
        for (idx, slot) in q.slots.iter().enumerate() {
            let Some((publisher, source)) = slot.assigned else {
                continue;
            };
            if slot.kind == MediaKind::Audio {
                audio += AUDIO_BITRATE;
                continue;
            }
            if !q.wants_video(publisher, source) {
                continue;
            }
            let Some(track) = self
                .peers
                .get(&publisher)
                .and_then(|p| p.tracks.iter().find(|t| t.source == source))
            else {
                continue;
            };
            // Layers the publisher sends now; all of them until any was measured.
            let mut usable: Vec<usize> = (0..track.layers.len())
                .filter(|&i| track.layers[i].active)
                .collect();
            if usable.is_empty() {
                usable = (0..track.layers.len()).collect();
            }
            let layers: Vec<LayerInfo> = usable
                .iter()
                .map(|&i| LayerInfo {
                    height: track.layers[i].height,
                    bitrate: track.layers[i].bitrate,
                })
                .collect();
            let want_height = q
                .video_wants
                .as_ref()
                .and_then(|w| {
                    w.iter()
                        .find(|w| w.publisher == publisher && w.source == source)
                })
                .map_or(u32::MAX, |w| w.height);
            bests.push(simulcast::choose_layer(
                &layers,
                want_height,
                u64::MAX,
                None,
            ));
            demands.push(VideoDemand {
                screen: source == Source::Screen,
                layers,
                want_height,
                current: slot
                    .target
                    .and_then(|t| usable.iter().position(|&i| i == t)),
            });
            behind.push((idx, publisher, source, track.simulcast(), usable));
        }
        // What is being sent now: audio and the layers currently chosen.
        let sending = audio
            + demands
                .iter()
                .filter_map(|d| d.current.and_then(|c| d.layers.get(c)))
                .map(|l| l.bitrate)
                .sum::<u64>();
        let Some(q) = self.peers.get_mut(&peer) else {
            return;
        };
        let _span = tracing::debug_span!("allocate", peer).entered();
        if self.config.bandwidth_estimation {
            let delivery = q.rtc.bwe().delivery();
            q.probe.observe(now, delivery);
        }
        let trials = q.probe.trials();
        let measured = q.estimate.map(|e| q.probe.budget(now, e, sending));
        let budget = match (measured, q.receive_limit) {
            (Some(e), Some(l)) => e.min(l),
            (e, l) => e.or(l).unwrap_or(u64::MAX),
        };
        let choices = allocate(budget, audio, &demands);
        // What the cheapest step up would need: the chosen layers, one of them one higher.
        let next_step = simulcast::next_step(audio, &demands, &choices, &bests);
        let mut requests = Vec::new();
        for ((idx, publisher, source, simulcast, usable), (choice, best)) in
            behind.into_iter().zip(choices.into_iter().zip(bests))
        {
            let Some(slot) = q.slots.get_mut(idx) else {
                continue;
            };
            if !simulcast {
                continue;
            }
            let target = choice.and_then(|c| usable.get(c).copied());
            let forwarded = slot.layer.and_then(|l| usable.iter().position(|&i| i == l));
            slot.cut =
                matches!((choice, forwarded, best), (Some(c), Some(f), Some(b)) if c < f && c < b);
            slot.target = target;
            if target.is_none() {
                slot.layer = None;
            } else if slot.layer != target {
                requests.push((publisher, source, target));
            }
        }
        let probe = next_step.filter(|&s| q.receive_limit.is_none_or(|l| s <= l));
        if let (Some(_), Some(next_step)) = (measured, probe) {
            if let Some(rate) = q.probe.consider(now, budget, next_step) {
                if q.rtc.bwe().probe_train(Bitrate::bps(rate)) {
                    self.stats.probe_trains += 1;
                } else {
                    q.probe.no_train(now);
                }
            }
        }
        self.stats.media_trials += q.probe.trials() - trials;
        for (publisher, source, layer) in requests {
            self.request_keyframe(
                now,
                publisher,
                source,
                layer,
                KeyframeRequestKind::Pli,
                true,
            );
        }
    }

    fn eval_speaker(&mut self, now: Instant) {
        let Some(next) = self.next_speaker_eval else {
            return;
        };
        if now < next {
            return;
        }
        self.next_speaker_eval = Some(now + SPEAKER_INTERVAL);
        // The time since the previous evaluation (due at `next`, one interval after it).
        let interval = now.saturating_duration_since(next) + SPEAKER_INTERVAL;
        for p in self.peers.values_mut() {
            for t in &mut p.tracks {
                for l in &mut t.layers {
                    l.measure(interval);
                }
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.allocate_peer(now, id);
        }
        let mut best: Option<(PeerId, u32)> = None;
        for (id, p) in self.peers.iter_mut() {
            if p.level_count > 0 && p.audio_forwarding {
                let avg = p.level_sum / p.level_count;
                if avg >= SPEECH_THRESHOLD && best.is_none_or(|(_, b)| avg > b) {
                    best = Some((*id, avg));
                }
            }
            p.level_sum = 0;
            p.level_count = 0;
        }
        let speaker = best.map(|(id, _)| id);
        if speaker != self.active_speaker {
            self.active_speaker = speaker;
            self.outputs
                .push_back(RoomOutput::Event(RoomEvent::ActiveSpeaker(speaker)));
        }
    }
}

/// Whether a subscriber with `wants` ([`Room::set_video_wants`]) shows `publisher`'s `source`.
fn shows(wants: &Option<Vec<VideoWant>>, publisher: PeerId, source: Source) -> bool {
    wants.as_ref().is_none_or(|wants| {
        wants
            .iter()
            .any(|w| w.publisher == publisher && w.source == source)
    })
}

/// The local ufrag from a STUN binding request's USERNAME ("local:remote"), or None if
/// `contents` is not a STUN binding request. Used by the driver to route a new peer's first
/// packet.
pub fn stun_local_ufrag(contents: &[u8]) -> Option<String> {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const BINDING_REQUEST: u16 = 0x0001;
    const USERNAME: u16 = 0x0006;

    let header = contents.get(..20)?;
    let msg_type = u16::from_be_bytes([header[0], header[1]]);
    if msg_type != BINDING_REQUEST || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if len % 4 != 0 {
        return None;
    }
    let mut attrs = contents.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let attr_type = u16::from_be_bytes([attrs[0], attrs[1]]);
        let attr_len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + attr_len)?;
        if attr_type == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            if local.is_empty() {
                return None;
            }
            return Some(local.to_string());
        }
        let padded = (attr_len + 3) & !3;
        attrs = attrs.get(4 + padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layers_bitrate_rises_at_once_and_falls_slowly() {
        let half = Duration::from_millis(500);
        let mut l = Layer::new(None);
        // 250 kbit/s for a while: half a second is 15,625 bytes.
        for _ in 0..4 {
            l.bytes = 15_625;
            l.measure(half);
        }
        assert_eq!(l.bitrate, 250_000);
        // A still moment: half the rate for 2 s still counts as about 80 % of it.
        for _ in 0..4 {
            l.bytes = 15_625 / 2;
            l.measure(half);
        }
        assert!(l.bitrate > 195_000, "{}", l.bitrate);
        // Back up: halfway at once.
        let dipped = l.bitrate;
        l.bytes = 15_625 * 2;
        l.measure(half);
        assert_eq!(l.bitrate, (dipped + 500_000) / 2);
        // A publisher that lowers the layer for good is followed within seconds.
        for _ in 0..20 {
            l.bytes = 15_625 / 2;
            l.measure(half);
        }
        assert!(l.bitrate < 150_000, "{}", l.bitrate);
        assert!(l.active);
    }

    fn stun_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY attribute first, to test skipping.
        attrs.extend_from_slice(&0x0024u16.to_be_bytes());
        attrs.extend_from_slice(&4u16.to_be_bytes());
        attrs.extend_from_slice(&[1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = Vec::new();
        msg.extend_from_slice(&0x0001u16.to_be_bytes());
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    #[test]
    fn stun_ufrag_of_binding_request() {
        let msg = stun_request(b"abcd:efgh");
        assert_eq!(stun_local_ufrag(&msg).as_deref(), Some("abcd"));
        let msg = stun_request(b"x:yz1");
        assert_eq!(stun_local_ufrag(&msg).as_deref(), Some("x"));
    }

    #[test]
    fn stun_ufrag_rejects_non_requests() {
        assert_eq!(stun_local_ufrag(&[]), None);
        assert_eq!(stun_local_ufrag(&[0u8; 19]), None);
        // No colon, empty local part.
        assert_eq!(stun_local_ufrag(&stun_request(b"abcd")), None);
        assert_eq!(stun_local_ufrag(&stun_request(b":abcd")), None);
        // Not UTF-8.
        assert_eq!(stun_local_ufrag(&stun_request(&[0xff, b':', b'a'])), None);
        // Binding success response.
        let mut msg = stun_request(b"abcd:efgh");
        msg[1] = 0x01;
        msg[0] = 0x01;
        assert_eq!(stun_local_ufrag(&msg), None);
        // Bad cookie.
        let mut msg = stun_request(b"abcd:efgh");
        msg[4] = 0;
        assert_eq!(stun_local_ufrag(&msg), None);
        // Truncated: every prefix must be rejected or parsed without panic.
        let msg = stun_request(b"abcd:efgh");
        for n in 0..msg.len() {
            assert_eq!(stun_local_ufrag(&msg[..n]), None);
        }
        // Attribute length pointing past the end.
        let mut msg = stun_request(b"abcd:efgh");
        let last = msg.len();
        msg[last - 14] = 0xff;
        let _ = stun_local_ufrag(&msg);
        // RTP-looking packet.
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
    }

    #[test]
    fn seq_rewrite_is_continuous() {
        let mut s = SeqRewrite::new();
        assert_eq!(s.map(50_000), Some(1));
        assert_eq!(s.map(50_001), Some(2));
        assert_eq!(s.map(49_999), None); // before the start of the slot
        s.restart();
        assert_eq!(s.map(7), Some(3));
        assert_eq!(s.map(9), Some(5));
        assert_eq!(s.map(8), Some(4));
        assert_eq!(s.map(10), Some(6));
    }

    #[test]
    fn timestamps_continue_across_a_restart() {
        let t0 = Instant::now();
        let mut s = SeqRewrite::new();
        // The first stream passes through unchanged.
        assert_eq!(s.map_ts(t0, 4_000_000_000, 90_000), 4_000_000_000);
        assert_eq!(s.map_ts(t0, 4_000_003_000, 90_000), 4_000_003_000);
        // Another publisher's stream, far away in timestamp space, 100 ms later: it continues
        // 9000 ticks (100 ms at 90 kHz) after the last output, never jumping backwards.
        s.restart();
        let t1 = t0 + std::time::Duration::from_millis(100);
        let first = s.map_ts(t1, 17, 90_000);
        assert_eq!(first, 4_000_003_000u32.wrapping_add(9_000));
        assert_eq!(s.map_ts(t1, 17 + 3_000, 90_000), first.wrapping_add(3_000));
        // Older packets of the same stream map consistently and do not move "newest".
        assert_eq!(s.map_ts(t1, 16, 90_000), first.wrapping_sub(1));
        s.restart();
        let second = s.map_ts(t1, 5, 90_000);
        assert_eq!(second, first.wrapping_add(3_000).wrapping_add(1));
    }

    #[test]
    fn sdp_mids_in_order() {
        let sdp = "v=0\r\nm=audio 9 UDP\r\na=mid:0\r\nm=video 9 UDP\r\na=mid:1\r\na=mid:1\r\n";
        assert_eq!(sdp_mids(sdp), vec!["0".to_string(), "1".to_string()]);
    }
}
