//! The sans-IO SFU core (`klausur_room::Room`) driven by arbitrary sequences of inputs, as the
//! media worker drives it: peers added and removed, offers (a simulated browser's, changed or
//! not, and arbitrary text), datagrams (the browsers' own, changed, dropped, replayed to other
//! peers and from other addresses, and arbitrary bytes behind a STUN, DTLS, RTP or RTCP
//! header), media, server-side mutes and timeouts, with simulated time that only moves forward.
//! The simulated browsers are str0m clients in full ICE and RTP mode, as in klausur-room's
//! tests: they connect over ICE and DTLS and send media, so forwarding is reached too.
//!
//! Invariants, checked after every input:
//! - nothing panics;
//! - every output names a peer the room has (added, not removed, not reported disconnected),
//!   is sent from one of that peer's local addresses, and goes only to an address that sent
//!   the peer a STUN request with valid MESSAGE-INTEGRITY (no datagram is reflected to an
//!   address that never proved it holds the peer's ICE password);
//! - events (connected, disconnected, renegotiate, active speaker) name peers the room has;
//! - `peer_count` is the number of peers the room has; answers assign only other peers' tracks,
//!   each on its own mid;
//! - arbitrary bytes never pass as an authentic STUN request;
//! - after `handle_timeout(now)` the next timeout lies after `now`, at the latest after four
//!   calls at the same `now` (a driver that sleeps until the next timeout never spins);
//! - `add_peer` refuses a peer it already has, `handle_*` a peer it does not have.
//!
//! Input format: a sequence of operations, each an operation byte and its arguments (see
//! `Sim::op`); the sequence ends with the input.
#![no_main]

#[path = "common/mod.rs"]
#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Reader;
use klausur_room::{
    stun_local_ufrag, PeerId, Room, RoomConfig, RoomError, RoomEvent, RoomOutput, SendSource,
    Source,
};
use libfuzzer_sys::fuzz_target;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Peer ids 1 to this; one more id is never added.
const MAX_PEERS: u8 = 4;
/// Operations per input.
const MAX_OPS: usize = 64;
/// Datagrams kept for replays.
const CAPTURED: usize = 32;

fn room_addr() -> SocketAddr {
    (Ipv4Addr::new(10, 0, 0, 1), 3478).into()
}

fn room_addr6() -> SocketAddr {
    (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 3478).into()
}

fn client_addr(id: PeerId) -> SocketAddr {
    (Ipv4Addr::new(10, 0, 1, id as u8), 5000).into()
}

fn source_of(b: u8) -> Source {
    match b % 3 {
        0 => Source::Microphone,
        1 => Source::Camera,
        _ => Source::Screen,
    }
}

/// A simulated browser.
struct Client {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    sends: Vec<(Mid, Source)>,
    recv_audio: Vec<Mid>,
    recv_video: Vec<Mid>,
    sending: bool,
    screen: bool,
    audio_level: i8,
    seq: u64,
}

/// One DTLS certificate for every simulated browser: generating a key pair per browser was
/// most of the target's time (the room's own peers still get one each, as in production).
fn client_cert() -> Option<DtlsCert> {
    static CERT: OnceLock<Option<DtlsCert>> = OnceLock::new();
    CERT.get_or_init(|| {
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    })
    .clone()
}

impl Client {
    fn new(now: Instant, id: PeerId) -> Client {
        let mut builder = Rtc::builder().set_rtp_mode(true);
        if let Some(cert) = client_cert() {
            builder = builder.set_dtls_cert(cert);
        }
        let mut rtc = builder.build(now);
        let addr = client_addr(id);
        if let Ok(c) = Candidate::host(addr, "udp") {
            rtc.add_local_candidate(c);
        }
        Client {
            rtc,
            addr,
            connected: false,
            sends: Vec::new(),
            recv_audio: Vec::new(),
            recv_video: Vec::new(),
            sending: true,
            screen: false,
            audio_level: -30,
            seq: 0,
        }
    }

    /// An offer with the own send tracks and at least `audio`/`video` receive transceivers
    /// (as klausur-room's test clients make it).
    fn offer(&mut self, audio: u32, video: u32) -> Option<(String, SdpPendingOffer)> {
        let mut api = self.rtc.sdp_api();
        let mut sends = self.sends.clone();
        for (kind, source) in [
            (MediaKind::Audio, Source::Microphone),
            (MediaKind::Video, Source::Camera),
        ] {
            if !sends.iter().any(|(_, s)| *s == source) {
                let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
                sends.push((mid, source));
            }
        }
        let has_screen = sends.iter().any(|(_, s)| *s == Source::Screen);
        if self.screen && !has_screen {
            let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
            sends.push((mid, Source::Screen));
        }
        if !self.screen && has_screen {
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
        let (offer, pending) = api.apply()?;
        self.sends = sends;
        self.recv_audio = recv_audio;
        self.recv_video = recv_video;
        Some((offer.to_sdp_string(), pending))
    }

    fn sources(&self) -> Vec<SendSource> {
        self.sends
            .iter()
            .map(|(mid, source)| SendSource {
                mid: mid.to_string(),
                source: *source,
            })
            .collect()
    }

    /// One RTP packet of `source`, if the client sends it.
    fn write(&mut self, now: Instant, source: Source) {
        let Some(mid) = self
            .sends
            .iter()
            .find(|(_, s)| *s == source)
            .map(|(m, _)| *m)
        else {
            return;
        };
        if !self
            .rtc
            .media(mid)
            .is_some_and(|m| m.direction().is_sending())
        {
            return;
        }
        let codec = if source == Source::Microphone {
            Codec::Opus
        } else {
            Codec::Vp8
        };
        let Some(pt) = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let audio = codec == Codec::Opus;
        let exts = ExtensionValues {
            audio_level: audio.then_some(self.audio_level),
            voice_activity: audio.then_some(true),
            ..Default::default()
        };
        let payload = vec![seq as u8; if audio { 60 } else { 300 }];
        let time = (seq * if audio { 960 } else { 3000 }) as u32;
        let mut api = self.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.write_rtp(
                RtpWrite::new(pt, seq.into(), time, now, payload)
                    .marker(true)
                    .ext_vals(exts)
                    .nackable(true),
            );
        }
    }
}

/// What the room has of a peer, as the driver knows it.
struct PeerInfo {
    locals: Vec<SocketAddr>,
    /// Addresses that sent this peer a STUN request with valid MESSAGE-INTEGRITY.
    verified: BTreeSet<SocketAddr>,
}

struct Sim {
    start: Instant,
    now: Instant,
    room: Room,
    known: BTreeMap<PeerId, PeerInfo>,
    clients: BTreeMap<PeerId, Client>,
    to_room: VecDeque<(PeerId, SocketAddr, SocketAddr, Vec<u8>)>,
    to_clients: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    captured: VecDeque<Vec<u8>>,
    /// Change a byte of a datagram to the room: (datagrams to let pass first, position, xor).
    tamper: Option<(u8, u16, u8)>,
    drop_next: u8,
    renegotiate: BTreeMap<PeerId, (u32, u32)>,
}

impl Sim {
    fn new() -> Sim {
        let now = Instant::now();
        Sim {
            start: now,
            now,
            room: Room::new(RoomConfig::default()),
            known: BTreeMap::new(),
            clients: BTreeMap::new(),
            to_room: VecDeque::new(),
            to_clients: VecDeque::new(),
            captured: VecDeque::new(),
            tamper: None,
            drop_next: 0,
            renegotiate: BTreeMap::new(),
        }
    }

    fn forget(&mut self, peer: PeerId) {
        self.known.remove(&peer);
        self.clients.remove(&peer);
        self.renegotiate.remove(&peer);
    }

    /// Drains the room's outputs, checking each.
    fn drain(&mut self) {
        while let Some(out) = self.room.poll_output() {
            match out {
                RoomOutput::Transmit {
                    peer,
                    source,
                    destination,
                    contents,
                    ..
                } => {
                    let info = self.known.get(&peer).unwrap_or_else(|| {
                        panic!("transmit for peer {peer}, which the room lacks")
                    });
                    assert!(
                        info.locals.contains(&source),
                        "transmit for peer {peer} from {source}, not its local address"
                    );
                    assert!(
                        info.verified.contains(&destination),
                        "transmit for peer {peer} to {destination}, which never sent it an \
                         authentic STUN request"
                    );
                    self.to_clients.push_back((source, destination, contents));
                }
                RoomOutput::Event(e) => {
                    trace!("  event {e:?}");
                    let named = match &e {
                        RoomEvent::Connected(p) | RoomEvent::Disconnected(p) => Some(*p),
                        RoomEvent::Renegotiate { peer, .. } => Some(*peer),
                        RoomEvent::ActiveSpeaker(p) => *p,
                    };
                    if let Some(p) = named {
                        assert!(self.known.contains_key(&p), "{e:?}: the room lacks {p}");
                    }
                    match e {
                        RoomEvent::Disconnected(p) => self.forget(p),
                        RoomEvent::Renegotiate { peer, audio, video } => {
                            self.renegotiate.insert(peer, (audio, video));
                        }
                        _ => {}
                    }
                }
            }
        }
        assert_eq!(self.room.peer_count(), self.known.len());
    }

    /// `handle_timeout(now)`, then the next timeout must lie after `now`.
    fn timeout(&mut self) {
        let now = self.now;
        for _ in 0..4 {
            self.room.handle_timeout(now);
            self.drain();
            if self.room.poll_timeout().is_none_or(|t| t > now) {
                return;
            }
        }
        panic!(
            "poll_timeout stays at {:?} after handle_timeout(now): a driver would spin",
            self.room
                .poll_timeout()
                .map(|t| t.saturating_duration_since(now))
        );
    }

    fn receive(&mut self, peer: PeerId, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if self.room.stun_authentic(peer, data) {
            if let Some(info) = self.known.get_mut(&peer) {
                info.verified.insert(source);
            }
        }
        let r = self
            .room
            .handle_receive(self.now, peer, source, destination, data);
        if !self.known.contains_key(&peer) {
            assert!(matches!(r, Err(RoomError::UnknownPeer(_))), "{r:?}");
        }
        self.drain();
    }

    fn drain_client(&mut self, id: PeerId) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        for _ in 0..10_000 {
            match c.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    self.to_room
                        .push_back((id, t.source, t.destination, t.contents.into()));
                }
                Ok(Output::Event(Event::Connected)) => c.connected = true,
                Ok(Output::Event(_)) => {}
            }
        }
    }

    /// Delivers what is in flight until the network is quiet.
    fn deliver(&mut self) {
        for _ in 0..10_000 {
            if let Some((peer, source, destination, mut data)) = self.to_room.pop_front() {
                if self.drop_next > 0 {
                    self.drop_next -= 1;
                    continue;
                }
                if let Some((wait, pos, xor)) = self.tamper {
                    if wait == 0 {
                        if !data.is_empty() {
                            let i = usize::from(pos) % data.len();
                            data[i] ^= xor;
                        }
                        self.tamper = None;
                    } else {
                        self.tamper = Some((wait - 1, pos, xor));
                    }
                }
                if self.captured.len() == CAPTURED {
                    self.captured.pop_front();
                }
                self.captured.push_back(data.clone());
                // The worker routes by remote address, and a new address by ICE username: the
                // clients' addresses are their own, so this is the sending client's peer.
                self.receive(peer, source, destination, &data);
                continue;
            }
            if let Some((source, destination, data)) = self.to_clients.pop_front() {
                let Some((&id, c)) = self.clients.iter_mut().find(|(_, c)| c.addr == destination)
                else {
                    continue;
                };
                if let Ok(recv) = Receive::new(Protocol::Udp, source, destination, &data) {
                    let _ = c.rtc.handle_input(Input::Receive(self.now, recv));
                }
                self.drain_client(id);
                continue;
            }
            return;
        }
    }

    /// An offer from `id`'s browser, changed as `change` says; the answer goes back to it.
    fn client_offer(&mut self, id: PeerId, audio: u32, video: u32, change: Option<(u8, u16, u8)>) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let Some((sdp, pending)) = c.offer(audio, video) else {
            return;
        };
        let mut sources = c.sources();
        let sdp = match change {
            None => sdp,
            Some((how, pos, xor)) => {
                let mut bytes = sdp.into_bytes();
                let i = usize::from(pos) % bytes.len().max(1);
                match how % 4 {
                    0 => {
                        if let Some(b) = bytes.get_mut(i) {
                            *b ^= xor;
                        }
                    }
                    1 => bytes.truncate(i),
                    2 => {
                        // A source on another mid, or twice.
                        if let Some(s) = sources.first().cloned() {
                            sources.push(SendSource {
                                mid: format!("{}", xor % 8),
                                source: source_of(xor),
                            });
                            sources.push(s);
                        }
                    }
                    _ => sources.clear(),
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        let result = self.room.handle_offer(self.now, id, &sdp, &sources);
        self.check_answer(id, &result);
        if let Ok(answer) = result {
            if let (Some(c), Ok(answer)) = (
                self.clients.get_mut(&id),
                SdpAnswer::from_sdp_string(&answer.sdp),
            ) {
                let _ = c.rtc.sdp_api().accept_answer(pending, answer);
            }
        }
        self.drain_client(id);
        self.drain();
    }

    fn check_answer(&self, id: PeerId, result: &Result<klausur_room::Answer, RoomError>) {
        trace!(
            "  offer of {id}: {:?}",
            result.as_ref().map(|a| &a.assignments)
        );
        match result {
            Ok(answer) => {
                assert!(self.known.contains_key(&id));
                let mut mids = BTreeSet::new();
                for a in &answer.assignments {
                    assert_ne!(a.publisher, id, "own track assigned back");
                    assert!(
                        self.known.contains_key(&a.publisher),
                        "{a:?}: publisher unknown"
                    );
                    assert!(mids.insert(a.mid.clone()), "mid {} assigned twice", a.mid);
                }
            }
            Err(RoomError::UnknownPeer(p)) => assert!(!self.known.contains_key(p)),
            Err(_) => assert!(self.known.contains_key(&id)),
        }
    }

    /// Advances time by `dt` per step for `steps` steps: browsers send media and tick, the
    /// room's timers fire, the network delivers, browsers renegotiate when asked.
    fn step(&mut self, steps: u8, dt: Duration) {
        for _ in 0..steps {
            self.now += dt;
            let now = self.now;
            let ids: Vec<PeerId> = self.clients.keys().copied().collect();
            for id in &ids {
                if let Some(c) = self.clients.get_mut(id) {
                    if c.connected && c.sending {
                        c.write(now, Source::Microphone);
                        c.write(now, Source::Camera);
                        if c.screen {
                            c.write(now, Source::Screen);
                        }
                    }
                    let _ = c.rtc.handle_input(Input::Timeout(now));
                }
                self.drain_client(*id);
            }
            if self.room.poll_timeout().is_some_and(|t| t <= now) {
                self.timeout();
            }
            self.deliver();
            for (peer, (audio, video)) in std::mem::take(&mut self.renegotiate) {
                self.client_offer(peer, audio, video, None);
            }
            self.deliver();
        }
    }

    fn addr(&self, r: &mut Reader<'_>, peer: PeerId) -> Option<SocketAddr> {
        Some(match r.u8()? % 4 {
            0 => client_addr(peer),
            1 => client_addr(PeerId::from(r.u8()? % (MAX_PEERS + 1))),
            2 => (
                Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, u16::from(r.u8()?)),
                5000,
            )
                .into(),
            _ => (Ipv4Addr::from(r.u32()?), r.u16()?).into(),
        })
    }

    fn local(&self, r: &mut Reader<'_>) -> Option<SocketAddr> {
        Some(match r.u8()? % 3 {
            0 => room_addr(),
            1 => room_addr6(),
            _ => (Ipv4Addr::new(10, 0, 0, 2), 3478).into(),
        })
    }

    /// One operation from the input; `None` at its end.
    fn op(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let peer = |b: u8| PeerId::from(1 + b % (MAX_PEERS + 1));
        let code = r.u8()? % 13;
        trace!(
            "op {code} at +{:?}: peers {:?}",
            self.now.saturating_duration_since(self.start),
            self.known.keys().collect::<Vec<_>>()
        );
        match code {
            // Add a peer (with a browser, or only the room's side), on one or two local
            // addresses, none, or an unusable one.
            0 => {
                let id = PeerId::from(1 + r.u8()? % MAX_PEERS);
                let how = r.u8()?;
                let locals = match how % 4 {
                    0 => vec![room_addr()],
                    1 => vec![room_addr(), room_addr6()],
                    2 => vec![],
                    _ => vec![(Ipv4Addr::UNSPECIFIED, 0).into()],
                };
                let had = self.known.contains_key(&id);
                let result = self.room.add_peer(self.now, id, &locals);
                match &result {
                    Ok(_) => {
                        assert!(!had, "a second add_peer for {id} succeeded");
                        self.known.insert(
                            id,
                            PeerInfo {
                                locals,
                                verified: BTreeSet::new(),
                            },
                        );
                        if how & 4 == 0 {
                            self.clients.insert(id, Client::new(self.now, id));
                        }
                    }
                    Err(RoomError::DuplicatePeer(p)) => assert!(had && *p == id),
                    Err(e) => assert!(!had, "{e}"),
                }
                self.drain();
            }
            // Remove a peer.
            1 => {
                let id = peer(r.u8()?);
                self.room.remove_peer(self.now, id);
                self.forget(id);
                self.drain();
            }
            // The browser's offer, perhaps changed.
            2 => {
                let id = peer(r.u8()?);
                let counts = r.u8()?;
                let (audio, video) = (u32::from(counts % 4), u32::from(counts / 4 % 4));
                let change = match r.u8()? {
                    0..=127 => None,
                    how => Some((how, r.u16()?, r.u8()?.max(1))),
                };
                self.client_offer(id, audio, video, change);
            }
            // An offer of arbitrary text and sources.
            3 => {
                let id = peer(r.u8()?);
                let sdp = r.string(4096)?;
                let mut sources = Vec::new();
                for _ in 0..r.u8()? % 4 {
                    sources.push(SendSource {
                        mid: r.string(8)?,
                        source: source_of(r.u8()?),
                    });
                }
                let result = self.room.handle_offer(self.now, id, &sdp, &sources);
                self.check_answer(id, &result);
                self.drain();
            }
            // Time passes in steps; everything runs.
            4 => {
                let steps = 1 + r.u8()? % 32;
                let dt = Duration::from_millis(1 + u64::from(r.u8()? % 50));
                self.step(steps, dt);
            }
            // Change one byte of a coming datagram to the room.
            5 => self.tamper = Some((r.u8()? % 16, r.u16()?, r.u8()?.max(1))),
            // Drop coming datagrams to the room.
            6 => self.drop_next = r.u8()? % 8,
            // Arbitrary bytes behind a STUN, DTLS, RTP or RTCP header, to a peer (or an id the
            // room does not have), from its browser's address or another.
            7 => {
                let id = peer(r.u8()?);
                let source = self.addr(r, id)?;
                let destination = self.local(r)?;
                let kind = r.u8()?;
                let body = r.bytes(1500)?;
                let mut data = match kind % 5 {
                    0 => Vec::new(),
                    1 => {
                        let len = (body.len() as u16 & !3).to_be_bytes();
                        vec![0, 1, len[0], len[1], 0x21, 0x12, 0xa4, 0x42]
                    }
                    2 => vec![22, 0xfe, 0xfd],
                    3 => vec![0x80, 96 | (kind & 0x80)],
                    _ => vec![0x80, 200 + kind % 8],
                };
                data.extend_from_slice(body);
                assert!(
                    !self.room.stun_authentic(id, &data),
                    "arbitrary bytes passed as an authentic STUN request"
                );
                let _ = stun_local_ufrag(&data);
                self.receive(id, source, destination, &data);
            }
            // A datagram seen before, again, perhaps to another peer or from another address.
            8 => {
                let idx = usize::from(r.u8()?);
                let id = peer(r.u8()?);
                let source = self.addr(r, id)?;
                if !self.captured.is_empty() {
                    let data = self.captured[idx % self.captured.len()].clone();
                    self.receive(id, source, room_addr(), &data);
                }
            }
            // Time jumps; the room's timers fire.
            9 => {
                self.now += Duration::from_millis(u64::from(r.u16()?));
                self.timeout();
            }
            // The room's next timeout.
            10 => {
                if let Some(t) = self.room.poll_timeout() {
                    self.now = self.now.max(t);
                    self.timeout();
                }
            }
            // Server-side mute and audio-only peers.
            11 => {
                let id = peer(r.u8()?);
                let how = r.u8()?;
                if how & 1 == 0 {
                    self.room.set_audio_forwarding(id, how & 2 == 0);
                } else {
                    self.room.set_receives_video(id, how & 2 == 0);
                }
                let _ = self.room.publishes(id, source_of(how >> 2));
                self.drain();
            }
            // A browser's media: on or off, loudness, screen share (the next offer has it).
            _ => {
                let id = peer(r.u8()?);
                let how = r.u8()?;
                let level = r.u8()?;
                if let Some(c) = self.clients.get_mut(&id) {
                    c.sending = how & 1 == 0;
                    c.screen = how & 2 != 0;
                    c.audio_level = -((level % 128) as i8);
                }
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut sim = Sim::new();
    for _ in 0..MAX_OPS {
        if sim.op(&mut r).is_none() {
            break;
        }
    }
    let _ = sim.room.stats();
});
