//! In-process harness: str0m clients (full ICE, RTP mode) talk to one `Room` over a simulated
//! network in simulated time. Datagrams are delivered instantly, in order; time advances in
//! 1 ms steps and every component gets `handle_timeout` when due.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use klausur_room::simulcast::parse_vp8;
use klausur_room::{
    stun_local_ufrag, Assignment, PeerId, Room, RoomConfig, RoomEvent, RoomOutput, SendSource,
    Source,
};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub const STEP: Duration = Duration::from_millis(1);

pub fn room_addr() -> SocketAddr {
    (Ipv4Addr::new(10, 0, 0, 1), 3478).into()
}

pub fn client_addr(id: PeerId) -> SocketAddr {
    (Ipv4Addr::new(10, 0, 1, id as u8), 5000).into()
}

pub fn source_tag(source: Source) -> u8 {
    match source {
        Source::Microphone => 0,
        Source::Camera => 1,
        Source::Screen => 2,
    }
}

/// The payload a client sends: recognisable by the receiver and checked byte for byte.
pub fn make_payload(sender: PeerId, source: Source, counter: u32) -> Vec<u8> {
    let mut v = vec![sender as u8, source_tag(source)];
    v.extend_from_slice(&counter.to_be_bytes());
    let len = match source {
        Source::Microphone => 60,
        _ => 300,
    };
    for i in 0..len {
        v.push((i as u8) ^ (counter as u8) ^ (sender as u8).wrapping_mul(31));
    }
    v
}

/// What a client received, per (publisher, source).
#[derive(Debug, Default, Clone)]
pub struct Received {
    pub count: u64,
    pub corrupted: u64,
    pub wrong_mid: u64,
    /// The distinct payload counters received.
    pub counters: BTreeSet<u32>,
    /// Simulcast: packets per layer index, the layer of the newest packet, and every VP8
    /// picture ID in arrival order (as rewritten by the room).
    pub per_layer: [u64; 3],
    pub last_layer: Option<u8>,
    pub picture_ids: Vec<u16>,
}

/// The simulcast layers of a test camera (rid, frame height), low to high.
pub const LAYERS: [(&str, u16); 3] = [("q", 180), ("h", 360), ("f", 720)];
/// Marks a simulcast test payload after its VP8 framing.
const LAYER_MAGIC: u8 = 0xee;

/// A VP8-framed payload of a simulcast test camera: the payload descriptor (X, I with a
/// 15-bit picture ID, S), the frame tag (and on keyframes start code and size), then a marker,
/// the sender, the layer, the counter and filler.
pub fn layer_payload(
    sender: PeerId,
    layer: u8,
    picture_id: u16,
    key: bool,
    counter: u32,
) -> Vec<u8> {
    let mut v = vec![0x90, 0x80, 0x80 | (picture_id >> 8) as u8, picture_id as u8];
    if key {
        let height = LAYERS[usize::from(layer)].1;
        let width = height * 16 / 9;
        v.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        v.extend_from_slice(&width.to_le_bytes());
        v.extend_from_slice(&height.to_le_bytes());
    } else {
        v.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    v.extend_from_slice(&[LAYER_MAGIC, sender as u8, layer]);
    v.extend_from_slice(&counter.to_be_bytes());
    // About 70, 170 and 260 kbit/s at 30 frames per second.
    v.resize([300, 700, 1100][usize::from(layer).min(2)], 0x5a);
    v
}

pub struct Client {
    pub id: PeerId,
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub next_timeout: Instant,
    pub connected: bool,
    pub sends: Vec<(Mid, Source)>,
    pub recv_audio: Vec<Mid>,
    pub recv_video: Vec<Mid>,
    pub assignments: Vec<Assignment>,
    pub received: HashMap<(PeerId, Source), Received>,
    pub keyframe_requests: Vec<(Instant, Mid, KeyframeRequestKind)>,
    pub sending: bool,
    pub counter: u32,
    pub seqs: HashMap<Source, u64>,
    pub next_audio: Instant,
    pub next_video: Instant,
    pub audio_level: i8,
    /// Payload counters written, per source.
    pub sent: HashMap<Source, Vec<u32>>,
    /// Sends its camera as three simulcast layers ([`LAYERS`], VP8-framed payloads).
    pub simulcast_camera: bool,
    /// Simulcast: per layer the next picture ID, and whether a keyframe is due.
    pub layer_state: [(u16, bool); 3],
    /// Keyframe requests by rid.
    pub keyframe_rids: Vec<(Instant, Option<Rid>)>,
    /// Simulcast: keyframe requests are noted but not answered (a keyframe that comes late).
    pub hold_keyframes: bool,
}

impl Client {
    fn new(now: Instant, id: PeerId) -> Client {
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
        let addr = client_addr(id);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Client {
            id,
            rtc,
            addr,
            next_timeout: now,
            connected: false,
            sends: Vec::new(),
            recv_audio: Vec::new(),
            recv_video: Vec::new(),
            assignments: Vec::new(),
            received: HashMap::new(),
            keyframe_requests: Vec::new(),
            sending: true,
            counter: 0,
            seqs: HashMap::new(),
            next_audio: now,
            next_video: now,
            audio_level: -30,
            sent: HashMap::new(),
            simulcast_camera: false,
            layer_state: [(1000, true), (20000, true), (32000, true)],
            keyframe_rids: Vec::new(),
            hold_keyframes: false,
        }
    }

    pub fn received(&self, publisher: PeerId, source: Source) -> u64 {
        self.received
            .get(&(publisher, source))
            .map(|r| r.count)
            .unwrap_or(0)
    }

    pub fn send_mid(&self, source: Source) -> Option<Mid> {
        self.sends
            .iter()
            .find(|(_, s)| *s == source)
            .map(|(m, _)| *m)
    }

    pub fn assigned_mid(&self, publisher: PeerId, source: Source) -> Option<Mid> {
        self.assignments
            .iter()
            .find(|a| a.publisher == publisher && a.source == source)
            .map(|a| Mid::from(a.mid.as_str()))
    }

    fn pt(&self, codec: Codec) -> Pt {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec")
    }

    fn send_media(&mut self, now: Instant) {
        if !self.connected || !self.sending {
            return;
        }
        if now >= self.next_audio {
            self.next_audio = now + Duration::from_millis(20);
            if let Some(mid) = self.send_mid(Source::Microphone) {
                self.write(now, mid, Source::Microphone, Codec::Opus);
            }
        }
        if now >= self.next_video {
            self.next_video = now + Duration::from_millis(33);
            for source in [Source::Camera, Source::Screen] {
                if let Some(mid) = self.send_mid(source) {
                    if source == Source::Camera && self.simulcast_camera {
                        self.write_layers(now, mid);
                    } else {
                        self.write(now, mid, source, Codec::Vp8);
                    }
                }
            }
        }
    }

    pub fn write(&mut self, now: Instant, mid: Mid, source: Source, codec: Codec) {
        let Some(media) = self.rtc.media(mid) else {
            return;
        };
        if !media.direction().is_sending() {
            return;
        }
        let pt = self.pt(codec);
        self.counter += 1;
        let counter = self.counter;
        self.sent.entry(source).or_default().push(counter);
        let payload = make_payload(self.id, source, counter);
        let exts = ExtensionValues {
            audio_level: (codec == Codec::Opus).then_some(self.audio_level),
            voice_activity: (codec == Codec::Opus).then_some(true),
            ..Default::default()
        };
        let seq = {
            let s = self.seqs.entry(source).or_insert(0);
            *s += 1;
            *s
        };
        let ticks: u64 = if codec == Codec::Opus { 960 } else { 3000 };
        let time = (seq * ticks) as u32;
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return;
        };
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), time, now, payload)
                .marker(true)
                .ext_vals(exts)
                .nackable(true),
        );
    }

    /// One frame (one packet) on each simulcast layer of the camera.
    fn write_layers(&mut self, now: Instant, mid: Mid) {
        let pt = self.pt(Codec::Vp8);
        self.counter += 1;
        let counter = self.counter;
        self.sent.entry(Source::Camera).or_default().push(counter);
        let seq = {
            let s = self.seqs.entry(Source::Camera).or_insert(0);
            *s += 1;
            *s
        };
        for (layer, (rid, _)) in LAYERS.iter().enumerate() {
            let (pid, key) = self.layer_state[layer];
            self.layer_state[layer] = ((pid + 1) % (1 << 15), false);
            let payload = layer_payload(self.id, layer as u8, pid, key, counter);
            let mut api = self.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(mid, Some(Rid::from(*rid))) else {
                continue;
            };
            tx.write_rtp(
                RtpWrite::new(
                    pt,
                    (seq * 3 + layer as u64).into(),
                    (seq * 3000) as u32,
                    now,
                    payload,
                )
                .marker(true)
                .nackable(true),
            );
        }
    }

    fn handle_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::Connected => self.connected = true,
            Event::RtpPacket(p) if p.payload.first() == Some(&0x90) => {
                let Some(d) = parse_vp8(&p.payload) else {
                    return;
                };
                let at = d.frame_start + if d.keyframe_start { 10 } else { 3 };
                let Some(&[magic, sender, layer, c0, c1, c2, c3]) = p
                    .payload
                    .get(at..at + 7)
                    .and_then(|b| <&[u8; 7]>::try_from(b).ok())
                else {
                    return;
                };
                let mid = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let sender = PeerId::from(sender);
                let expected_mid = self.assigned_mid(sender, Source::Camera);
                let r = self.received.entry((sender, Source::Camera)).or_default();
                if magic != LAYER_MAGIC || layer > 2 {
                    r.corrupted += 1;
                    return;
                }
                r.count += 1;
                r.counters.insert(u32::from_be_bytes([c0, c1, c2, c3]));
                r.per_layer[usize::from(layer)] += 1;
                r.last_layer = Some(layer);
                if let Some((pid, _, _)) = d.picture_id {
                    r.picture_ids.push(pid);
                }
                if mid.is_none() || mid != expected_mid {
                    r.wrong_mid += 1;
                }
            }
            Event::RtpPacket(p) => {
                let payload = &p.payload;
                if payload.len() < 6 {
                    return;
                }
                let sender = PeerId::from(payload[0]);
                let source = match payload[1] {
                    0 => Source::Microphone,
                    1 => Source::Camera,
                    _ => Source::Screen,
                };
                let counter = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
                let mid = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let expected_mid = self.assigned_mid(sender, source);
                let r = self.received.entry((sender, source)).or_default();
                r.count += 1;
                r.counters.insert(counter);
                if payload[..] != make_payload(sender, source, counter)[..] {
                    r.corrupted += 1;
                }
                if mid.is_none() || mid != expected_mid {
                    r.wrong_mid += 1;
                }
            }
            Event::KeyframeRequest(req) => {
                self.keyframe_requests.push((now, req.mid, req.kind));
                self.keyframe_rids.push((now, req.rid));
                if let Some(rid) = req.rid.filter(|_| !self.hold_keyframes) {
                    if let Some(i) = LAYERS.iter().position(|(r, _)| Rid::from(*r) == rid) {
                        self.layer_state[i].1 = true;
                    }
                }
            }
            _ => {}
        }
    }

    /// Builds an offer with our send tracks and at least `audio`/`video` recvonly transceivers.
    pub fn offer(
        &mut self,
        audio: u32,
        video: u32,
        screen: bool,
    ) -> Option<(SdpOffer, str0m::change::SdpPendingOffer)> {
        let mut api = self.rtc.sdp_api();
        let mut sends = self.sends.clone();
        if !sends.iter().any(|(_, s)| *s == Source::Microphone) {
            let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            sends.push((mid, Source::Microphone));
        }
        if !sends.iter().any(|(_, s)| *s == Source::Camera) {
            let simulcast = self.simulcast_camera.then(|| {
                let mut s = Simulcast::new();
                for (rid, _) in LAYERS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
            sends.push((mid, Source::Camera));
        }
        let has_screen = sends.iter().any(|(_, s)| *s == Source::Screen);
        if screen && !has_screen {
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            sends.push((mid, Source::Screen));
        }
        if !screen && has_screen {
            if let Some(pos) = sends.iter().position(|(_, s)| *s == Source::Screen) {
                let (mid, _) = sends.remove(pos);
                api.set_direction(mid, Direction::Inactive);
            }
        }
        let mut recv_audio = self.recv_audio.clone();
        let mut recv_video = self.recv_video.clone();
        while (recv_audio.len() as u32) < audio {
            recv_audio.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        while (recv_video.len() as u32) < video {
            recv_video.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        }
        let result = api.apply();
        if result.is_some() {
            self.sends = sends;
            self.recv_audio = recv_audio;
            self.recv_video = recv_video;
        }
        result
    }

    pub fn sources(&self) -> Vec<SendSource> {
        self.sends
            .iter()
            .map(|(mid, source)| SendSource {
                mid: mid.to_string(),
                source: *source,
            })
            .collect()
    }
}

pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub room: Room,
    pub clients: Vec<Client>,
    pub room_events: Vec<(Instant, RoomEvent)>,
    /// Renegotiate requests not yet acted on.
    pub pending_renegotiate: Vec<(PeerId, u32, u32)>,
    pub auto_renegotiate: bool,
    to_room: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    to_clients: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    addr_to_peer: HashMap<SocketAddr, PeerId>,
    ufrag_to_peer: HashMap<String, PeerId>,
    /// Copies of datagrams sent to the room, for the garbage tests: (peer, first byte class).
    pub captured_stun: Vec<(PeerId, Vec<u8>)>,
    pub captured_rtp: Vec<(PeerId, Vec<u8>)>,
    pub capture: bool,
    /// Feed every datagram queued for the room before draining it once (a receive batch, as
    /// the media worker does with recvmmsg), instead of draining after each datagram.
    pub batch: bool,
    /// Drop every n-th RTP datagram (not RTCP, not a retransmission) the room sends to this
    /// client.
    pub drop_rtp_to: HashMap<PeerId, u64>,
    /// Drop every n-th RTP datagram (not RTCP, not a retransmission) this client sends to the
    /// room.
    pub drop_rtp_from: HashMap<PeerId, u64>,
    rtp_seen: HashMap<(PeerId, bool), u64>,
    /// Datagrams dropped by `drop_rtp_to` / `drop_rtp_from`.
    pub dropped: u64,
    /// RTCP from these clients to the room is held back (a slow reverse path) until
    /// [`Sim::release_held`].
    pub hold_rtcp_from: BTreeSet<PeerId>,
    /// DTLS from these clients never reaches the room (a peer that answers STUN and never
    /// finishes the handshake).
    pub drop_dtls_from: BTreeSet<PeerId>,
    /// Every datagram from these clients to the room is held back until
    /// [`Sim::release_held`] (a path that stalls, then delivers a burst).
    pub hold_all_from: BTreeSet<PeerId>,
    held: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Bottlenecks on clients' downlinks ([`Sim::limit_downlink`]).
    pub downlinks: HashMap<PeerId, Downlink>,
}

/// A client's downlink through a bottleneck: datagrams from the room leave it one after the
/// other at `rate` bit/s (with 28 bytes of IP and UDP header each), through a queue of at most
/// `limit` datagrams; those that find it full are dropped.
pub struct Downlink {
    pub rate: u64,
    pub limit: usize,
    /// (when it has passed the bottleneck, source, destination, datagram)
    queue: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    busy_until: Option<Instant>,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
}

/// The payload type of VP8's retransmissions (RTX) in str0m's default codec configuration,
/// which the simulated clients and the room use.
const RTX_PT: u8 = 97;

/// Whether a datagram is DTLS, by RFC 7983 demultiplexing (first byte 20 to 63).
pub fn is_dtls(contents: &[u8]) -> bool {
    contents.first().is_some_and(|b| (20..64).contains(b))
}

/// Whether a datagram is RTP (not RTCP, STUN or DTLS), by RFC 5761/7983 demultiplexing.
pub fn is_rtp(contents: &[u8]) -> bool {
    matches!(contents, [128..=191, b1, ..] if !(192..=223).contains(b1))
}

/// Whether a datagram is RTCP, by RFC 5761/7983 demultiplexing.
pub fn is_rtcp(contents: &[u8]) -> bool {
    matches!(contents, [128..=191, 192..=223, ..])
}

impl Sim {
    pub fn new(config: RoomConfig) -> Sim {
        let now = Instant::now();
        Sim {
            start: now,
            now,
            room: Room::new(config),
            clients: Vec::new(),
            room_events: Vec::new(),
            pending_renegotiate: Vec::new(),
            auto_renegotiate: true,
            to_room: VecDeque::new(),
            to_clients: VecDeque::new(),
            addr_to_peer: HashMap::new(),
            ufrag_to_peer: HashMap::new(),
            captured_stun: Vec::new(),
            captured_rtp: Vec::new(),
            capture: false,
            batch: false,
            drop_rtp_to: HashMap::new(),
            drop_rtp_from: HashMap::new(),
            rtp_seen: HashMap::new(),
            dropped: 0,
            hold_rtcp_from: BTreeSet::new(),
            drop_dtls_from: BTreeSet::new(),
            hold_all_from: BTreeSet::new(),
            held: Vec::new(),
            downlinks: HashMap::new(),
        }
    }

    /// Puts client `id`'s downlink through a bottleneck of `rate` bit/s with a queue of
    /// `limit` datagrams ([`Downlink`]).
    pub fn limit_downlink(&mut self, id: PeerId, rate: u64, limit: usize) {
        self.downlinks.insert(
            id,
            Downlink {
                rate,
                limit,
                queue: VecDeque::new(),
                busy_until: None,
                dropped: 0,
            },
        );
    }

    /// Changes the rate of client `id`'s bottleneck (datagrams already queued keep their
    /// times).
    pub fn set_downlink_rate(&mut self, id: PeerId, rate: u64) {
        if let Some(link) = self.downlinks.get_mut(&id) {
            link.rate = rate;
        }
    }

    /// Hands the datagrams that have passed their downlink's bottleneck to their clients.
    fn pass_downlinks(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        for link in self.downlinks.values_mut() {
            while link.queue.front().is_some_and(|(at, ..)| *at <= now) {
                if let Some((_, source, destination, contents)) = link.queue.pop_front() {
                    due.push((source, destination, contents));
                }
            }
        }
        for (source, destination, contents) in due {
            self.hand_to_client(source, destination, &contents);
        }
    }

    fn hand_to_client(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        let Some(idx) = self.clients.iter().position(|c| c.addr == destination) else {
            return;
        };
        let id = self.clients[idx].id;
        let recv = Receive::new(Protocol::Udp, source, destination, contents)
            .expect("room sends valid datagrams");
        self.clients[idx]
            .rtc
            .handle_input(Input::Receive(self.now, recv))
            .expect("client handle_input");
        self.drain_client(id);
    }

    pub fn client(&self, id: PeerId) -> &Client {
        self.clients.iter().find(|c| c.id == id).expect("client")
    }

    pub fn client_mut(&mut self, id: PeerId) -> &mut Client {
        self.clients
            .iter_mut()
            .find(|c| c.id == id)
            .expect("client")
    }

    /// Adds a client and runs the initial offer/answer (sendonly audio + video, and recvonly
    /// transceivers for what the room currently publishes).
    pub fn join(&mut self, id: PeerId) {
        self.join_with(id, |_| {});
    }

    /// Adds the room's peer and the client `id`, without any offer.
    pub fn add_client(&mut self, id: PeerId) {
        let ufrag = self
            .room
            .add_peer(self.now, id, &[room_addr()])
            .expect("add_peer");
        self.ufrag_to_peer.insert(ufrag, id);
        self.clients.push(Client::new(self.now, id));
        self.drain_room();
    }

    /// Joins `id`, letting `setup` configure the room's peer before its first offer.
    pub fn join_with(&mut self, id: PeerId, setup: impl FnOnce(&mut Room)) {
        self.join_client(id, setup, false);
    }

    /// Joins `id` with a camera that sends three simulcast layers ([`LAYERS`]).
    pub fn join_simulcast(&mut self, id: PeerId) {
        self.join_client(id, |_| {}, true);
    }

    fn join_client(&mut self, id: PeerId, setup: impl FnOnce(&mut Room), simulcast: bool) {
        let ufrag = self
            .room
            .add_peer(self.now, id, &[room_addr()])
            .expect("add_peer");
        setup(&mut self.room);
        self.ufrag_to_peer.insert(ufrag, id);
        let mut client = Client::new(self.now, id);
        client.simulcast_camera = simulcast;
        self.clients.push(client);
        self.drain_room();
        self.negotiate(id, 0, 0, false);
    }

    /// One offer/answer round for `id`.
    pub fn negotiate(&mut self, id: PeerId, audio: u32, video: u32, screen: bool) {
        let now = self.now;
        let client = self.client_mut(id);
        let Some((offer, pending)) = client.offer(audio, video, screen) else {
            return;
        };
        let sources = client.sources();
        let answer = self
            .room
            .handle_offer(now, id, &offer.to_sdp_string(), &sources)
            .expect("handle_offer");
        let client = self.client_mut(id);
        client.assignments = answer.assignments.clone();
        let answer = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer parses");
        client
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accept_answer");
        self.drain_client(id);
        self.drain_room();
    }

    /// Renegotiates a client keeping its receive counts (e.g. to add or stop a screen share).
    pub fn renegotiate_screen(&mut self, id: PeerId, screen: bool) {
        let c = self.client(id);
        let (a, v) = (c.recv_audio.len() as u32, c.recv_video.len() as u32);
        self.negotiate(id, a, v, screen);
    }

    fn has_screen(&self, id: PeerId) -> bool {
        self.client(id).send_mid(Source::Screen).is_some()
    }

    pub fn drain_room(&mut self) {
        while let Some(out) = self.room.poll_output() {
            match out {
                RoomOutput::Transmit {
                    source,
                    destination,
                    contents,
                    ..
                } => {
                    assert_eq!(source, room_addr());
                    self.to_clients.push_back((source, destination, contents));
                }
                RoomOutput::Event(e) => {
                    if let RoomEvent::Renegotiate { peer, audio, video } = e {
                        self.pending_renegotiate.push((peer, audio, video));
                    }
                    self.room_events.push((self.now, e));
                }
            }
        }
    }

    pub fn drain_client(&mut self, id: PeerId) {
        let now = self.now;
        let idx = self
            .clients
            .iter()
            .position(|c| c.id == id)
            .expect("client");
        loop {
            let out = self.clients[idx].rtc.poll_output().expect("client poll");
            match out {
                Output::Timeout(t) => {
                    self.clients[idx].next_timeout = t;
                    break;
                }
                Output::Transmit(t) => {
                    self.to_room
                        .push_back((t.source, t.destination, t.contents.into()));
                }
                Output::Event(e) => self.clients[idx].handle_event(now, e),
            }
        }
    }

    /// Whether the lossy link drops this RTP datagram of `peer` (`to_client`: room -> peer).
    fn lose(&mut self, peer: PeerId, to_client: bool, contents: &[u8]) -> bool {
        let every = if to_client {
            self.drop_rtp_to.get(&peer)
        } else {
            self.drop_rtp_from.get(&peer)
        };
        let Some(&every) = every else {
            return false;
        };
        // Retransmissions get through: with every n-th datagram counted, the pattern now and
        // then hit a packet and later its retransmission too, a double loss that NACK within
        // the tests' window cannot be expected to repair (about one run in 40).
        if !is_rtp(contents) || contents[1] & 0x7f == RTX_PT {
            return false;
        }
        let n = self.rtp_seen.entry((peer, to_client)).or_default();
        *n += 1;
        if n.is_multiple_of(every) {
            self.dropped += 1;
            return true;
        }
        false
    }

    /// Delivers everything in flight (room and clients) until the network is quiet.
    pub fn deliver(&mut self) {
        for _ in 0..100_000 {
            if let Some((source, destination, contents)) = self.to_room.pop_front() {
                assert_eq!(destination, room_addr());
                // Route like the driver: by remote address, else by the STUN username.
                let peer = match self.addr_to_peer.get(&source) {
                    Some(p) => Some(*p),
                    None => stun_local_ufrag(&contents)
                        .and_then(|u| self.ufrag_to_peer.get(&u).copied())
                        .inspect(|p| {
                            self.addr_to_peer.insert(source, *p);
                        }),
                };
                let Some(peer) = peer else {
                    continue;
                };
                if self.hold_all_from.contains(&peer)
                    || (self.hold_rtcp_from.contains(&peer) && is_rtcp(&contents))
                {
                    self.held.push((source, destination, contents));
                    continue;
                }
                if self.lose(peer, false, &contents) {
                    continue;
                }
                if self.drop_dtls_from.contains(&peer) && is_dtls(&contents) {
                    continue;
                }
                if self.capture {
                    let first = contents.first().copied().unwrap_or(0);
                    if first < 2 {
                        self.captured_stun.push((peer, contents.clone()));
                    } else if (128..192).contains(&first) {
                        self.captured_rtp.push((peer, contents.clone()));
                    }
                }
                let _ = self
                    .room
                    .handle_receive(self.now, peer, source, destination, &contents);
                if !self.batch || self.to_room.is_empty() {
                    self.drain_room();
                }
                continue;
            }
            if let Some((source, destination, contents)) = self.to_clients.pop_front() {
                let Some(idx) = self.clients.iter().position(|c| c.addr == destination) else {
                    continue;
                };
                let id = self.clients[idx].id;
                if self.lose(id, true, &contents) {
                    continue;
                }
                if let Some(link) = self.downlinks.get_mut(&id) {
                    if link.queue.len() >= link.limit {
                        link.dropped += 1;
                        continue;
                    }
                    let start = link.busy_until.map_or(self.now, |t| t.max(self.now));
                    let bits = (contents.len() as u64 + 28) * 8;
                    let done = start + Duration::from_micros(bits * 1_000_000 / link.rate);
                    link.busy_until = Some(done);
                    link.queue.push_back((done, source, destination, contents));
                    continue;
                }
                self.hand_to_client(source, destination, &contents);
                continue;
            }
            return;
        }
        panic!("network does not settle");
    }

    /// Sends the held-back RTCP on to the room, in the order it was sent (before anything else
    /// in flight), and delivers it.
    pub fn release_held(&mut self) {
        for d in self.held.drain(..).rev() {
            self.to_room.push_front(d);
        }
        self.deliver();
    }

    /// Advances simulated time by one step and processes everything due.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        let ids: Vec<PeerId> = self.clients.iter().map(|c| c.id).collect();
        for id in &ids {
            let c = self.client_mut(*id);
            c.send_media(now);
            // Always tick and drain: written media must be picked up.
            c.rtc
                .handle_input(Input::Timeout(now))
                .expect("client timeout");
            self.drain_client(*id);
        }
        if self.room.poll_timeout().is_some_and(|t| t <= now) {
            self.room.handle_timeout(now);
            self.drain_room();
            // A timeout handled must move on: a room that stays due would make its driver spin.
            // (Time stands still between sending and receiving here, so round trips are zero.)
            if let Some(t) = self.room.poll_timeout() {
                assert!(t > now, "poll_timeout stays due after handle_timeout");
            }
        }
        self.pass_downlinks();
        self.deliver();
        if self.auto_renegotiate {
            let pending = std::mem::take(&mut self.pending_renegotiate);
            for (peer, audio, video) in pending {
                if self.clients.iter().any(|c| c.id == peer) {
                    let screen = self.has_screen(peer);
                    self.negotiate(peer, audio, video, screen);
                }
            }
            self.deliver();
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `f` holds, at most `max`; returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut f: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if f(self) {
                return true;
            }
            self.step();
        }
        f(self)
    }

    pub fn remove(&mut self, id: PeerId) {
        self.room.remove_peer(self.now, id);
        self.clients.retain(|c| c.id != id);
        self.addr_to_peer.retain(|_, p| *p != id);
        self.drain_room();
    }

    pub fn all_connected(&self) -> bool {
        self.clients.iter().all(|c| c.connected)
    }

    pub fn room_events_since(&self, since: Instant) -> Vec<RoomEvent> {
        self.room_events
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, e)| e.clone())
            .collect()
    }

    pub fn send_garbage(
        &mut self,
        peer: PeerId,
        contents: &[u8],
    ) -> Result<(), klausur_room::RoomError> {
        let source = client_addr(peer);
        let r = self
            .room
            .handle_receive(self.now, peer, source, room_addr(), contents);
        self.drain_room();
        r
    }
}

pub fn init_log() {
    use std::sync::Once;
    static START: Once = Once::new();
    START.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
