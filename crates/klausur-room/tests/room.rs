//! Room tests in simulated time: str0m clients, the room, a lossless instant network.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{init_log, Sim};
use klausur_room::{RoomConfig, RoomError, RoomEvent, Source};
use str0m::media::KeyframeRequestKind;

const SETTLE: Duration = Duration::from_secs(3);

/// Joins `ids` one after another and waits until all are connected and every client has all
/// other tracks assigned.
fn meeting(config: RoomConfig, ids: &[u64]) -> Sim {
    init_log();
    let mut sim = Sim::new(config);
    for &id in ids {
        sim.join(id);
    }
    let n = ids.len();
    let ok = sim.run_until(SETTLE, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 2 * (n - 1))
    });
    assert!(ok, "meeting did not settle");
    sim
}

fn assert_clean(sim: &Sim) {
    for c in &sim.clients {
        for ((publisher, source), r) in &c.received {
            assert_eq!(
                r.corrupted, 0,
                "{} got corrupted {publisher}/{source:?}",
                c.id
            );
            assert_eq!(
                r.wrong_mid, 0,
                "{} got {publisher}/{source:?} on a wrong mid",
                c.id
            );
        }
    }
}

#[test]
fn two_peers_exchange_audio_and_video() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    assert!(sim
        .room_events
        .iter()
        .any(|(_, e)| *e == RoomEvent::Connected(1)));
    assert!(sim
        .room_events
        .iter()
        .any(|(_, e)| *e == RoomEvent::Connected(2)));
    sim.run_for(Duration::from_secs(5));

    for (rx, tx) in [(1, 2), (2, 1)] {
        let c = sim.client(rx);
        // 5 s of 20 ms audio = 250, of 33 ms video = ~150.
        let audio = c.received(tx, Source::Microphone);
        let video = c.received(tx, Source::Camera);
        assert!(audio > 200, "{rx} got {audio} audio packets from {tx}");
        assert!(video > 120, "{rx} got {video} video packets from {tx}");
        assert_eq!(
            c.received(rx, Source::Microphone),
            0,
            "no echo of own audio"
        );
    }
    assert_clean(&sim);
    let stats = sim.room.stats();
    assert!(stats.forwarded_packets > 700, "{stats:?}");
    assert!(
        stats.received_packets >= stats.forwarded_packets,
        "{stats:?}"
    );
    assert!(sim.room.publishes(1, Source::Camera));
    assert!(!sim.room.publishes(1, Source::Screen));
    assert_eq!(sim.room.peer_count(), 2);

    // Someone is talking (audio level -30 dBov), so there is an active speaker.
    assert!(sim
        .room_events
        .iter()
        .any(|(_, e)| matches!(e, RoomEvent::ActiveSpeaker(Some(_)))));
}

#[test]
fn three_peers_and_a_later_screen_share() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2, 3]);
    sim.run_for(Duration::from_secs(2));
    for rx in [1, 2, 3] {
        for tx in [1, 2, 3] {
            if rx == tx {
                continue;
            }
            let c = sim.client(rx);
            assert!(
                c.received(tx, Source::Microphone) > 50,
                "{rx} <- {tx} audio"
            );
            assert!(c.received(tx, Source::Camera) > 30, "{rx} <- {tx} video");
        }
    }

    // Peer 1 starts sharing its screen: 2 and 3 are asked for a third video slot.
    let since = sim.now;
    sim.renegotiate_screen(1, true);
    assert!(sim.room.publishes(1, Source::Screen));
    let events = sim.room_events_since(since);
    for peer in [2, 3] {
        assert!(
            events.contains(&RoomEvent::Renegotiate {
                peer,
                audio: 2,
                video: 3
            }),
            "{events:?}"
        );
    }
    let ok = sim.run_until(SETTLE, |s| {
        [2, 3]
            .iter()
            .all(|&id| s.client(id).received(1, Source::Screen) > 20)
    });
    assert!(ok, "screen share did not arrive");
    assert_eq!(sim.client(1).received(1, Source::Screen), 0);

    // Peer 1 stops sharing: the others are told to renegotiate and get no more screen packets.
    let since = sim.now;
    sim.renegotiate_screen(1, false);
    assert!(!sim.room.publishes(1, Source::Screen));
    let events = sim.room_events_since(since);
    for peer in [2, 3] {
        assert!(
            events.contains(&RoomEvent::Renegotiate {
                peer,
                audio: 2,
                video: 2
            }),
            "{events:?}"
        );
    }
    sim.run_for(Duration::from_millis(200));
    let before: Vec<u64> = [2, 3]
        .iter()
        .map(|&id| sim.client(id).received(1, Source::Screen))
        .collect();
    sim.run_for(Duration::from_secs(1));
    let after: Vec<u64> = [2, 3]
        .iter()
        .map(|&id| sim.client(id).received(1, Source::Screen))
        .collect();
    assert_eq!(before, after);
    assert!(sim.client(2).received(1, Source::Camera) > 100);
    assert_clean(&sim);
}

/// Sends 10 PLIs from 2 for 1's camera within 100 ms; returns how many keyframe requests 1
/// saw in the following 300 ms.
fn keyframe_requests_seen(interval: Duration) -> usize {
    let mut sim = meeting(
        RoomConfig {
            keyframe_request_interval: interval,
            ..RoomConfig::default()
        },
        &[1, 2],
    );
    sim.run_for(Duration::from_secs(2));
    let mid = sim
        .client(2)
        .assigned_mid(1, Source::Camera)
        .expect("camera of 1 assigned at 2");
    sim.client_mut(1).keyframe_requests.clear();
    for _ in 0..10 {
        let c = sim.client_mut(2);
        let mut api = c.rtc.direct_api();
        let rx = api.stream_rx_by_mid(mid, None).expect("rx stream");
        rx.request_keyframe(KeyframeRequestKind::Pli);
        sim.run_for(Duration::from_millis(10));
    }
    sim.run_for(Duration::from_millis(300));
    let camera = sim.client(1).send_mid(Source::Camera).expect("camera mid");
    let requests = &sim.client(1).keyframe_requests;
    assert!(
        requests.iter().all(|(_, m, _)| *m == camera),
        "{requests:?}"
    );
    requests.len()
}

#[test]
fn keyframe_requests_are_forwarded_and_throttled() {
    assert_eq!(keyframe_requests_seen(Duration::from_millis(500)), 1);
    // Negative control: without throttling, every PLI gets through.
    let unthrottled = keyframe_requests_seen(Duration::ZERO);
    assert!(unthrottled >= 5, "unthrottled: {unthrottled}");
}

#[test]
fn server_side_mute_stops_audio_only() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    sim.run_for(Duration::from_secs(1));

    sim.room.set_audio_forwarding(1, false);
    sim.run_for(Duration::from_millis(100));
    let audio = sim.client(2).received(1, Source::Microphone);
    let video = sim.client(2).received(1, Source::Camera);
    let audio_back = sim.client(1).received(2, Source::Microphone);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(
        sim.client(2).received(1, Source::Microphone),
        audio,
        "muted audio forwarded"
    );
    assert!(
        sim.client(2).received(1, Source::Camera) > video + 40,
        "video stopped"
    );
    assert!(
        sim.client(1).received(2, Source::Microphone) > audio_back + 80,
        "the other direction is unaffected"
    );

    sim.room.set_audio_forwarding(1, true);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.client(2).received(1, Source::Microphone) > audio + 30,
        "unmute"
    );
    assert_clean(&sim);
}

#[test]
fn removed_peer_is_renegotiated_away() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2, 3]);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.client(1).received(3, Source::Camera) > 10);

    let since = sim.now;
    sim.remove(3);
    assert_eq!(sim.room.peer_count(), 2);
    let events = sim.room_events_since(since);
    for peer in [1, 2] {
        assert!(
            events.contains(&RoomEvent::Renegotiate {
                peer,
                audio: 1,
                video: 1
            }),
            "{events:?}"
        );
    }
    let before: Vec<u64> = [1, 2]
        .iter()
        .map(|&id| sim.client(id).received(3, Source::Camera))
        .collect();
    sim.run_for(Duration::from_secs(1));
    let after: Vec<u64> = [1, 2]
        .iter()
        .map(|&id| sim.client(id).received(3, Source::Camera))
        .collect();
    assert_eq!(before, after);
    // 1 and 2 still talk to each other.
    let a = sim.client(1).received(2, Source::Microphone);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.client(1).received(2, Source::Microphone) > a + 30);
    assert!(!sim
        .room_events
        .iter()
        .any(|(_, e)| matches!(e, RoomEvent::Disconnected(_))));
}

/// An audio-only participant (the dial-in gateway) is neither asked for video slots nor given
/// video, while it still hears and is heard; the others keep their video.
#[test]
fn an_audio_only_peer_gets_audio_and_no_video() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    let since = sim.now;
    sim.join_with(3, |room| room.set_receives_video(3, false));
    let ok = sim.run_until(SETTLE, |s| {
        s.all_connected()
            && s.client(3).assignments.len() == 2
            && [1, 2].iter().all(|&id| s.client(id).assignments.len() == 4)
    });
    assert!(ok, "the audio-only peer did not get both microphones");
    sim.run_for(Duration::from_secs(2));
    for tx in [1, 2] {
        let c = sim.client(3);
        assert!(c.received(tx, Source::Microphone) > 60, "3 hears {tx}");
        assert_eq!(c.received(tx, Source::Camera), 0, "3 gets no video of {tx}");
        assert!(sim.client(tx).received(3, Source::Microphone) > 60);
    }
    for e in sim.room_events_since(since) {
        if let RoomEvent::Renegotiate { peer: 3, video, .. } = e {
            assert_eq!(video, 0, "the audio-only peer was asked for video slots");
        }
    }
    assert!(
        sim.client(3).recv_video.is_empty(),
        "no video receive slots were negotiated"
    );
    assert_clean(&sim);
}

/// A burst of RTP from one publisher, fed to the room as one receive batch, ticks each
/// subscriber once; drained per datagram it ticks each subscriber per packet. Returns the full
/// ticks and the light ones (`Rtc::handle_written`) the burst took.
fn ticks_for_burst(batch: bool) -> (u64, u64) {
    let mut sim = meeting(RoomConfig::default(), &[1, 2, 3]);
    sim.batch = batch;
    sim.run_for(Duration::from_secs(1));
    let before: Vec<u64> = [2, 3]
        .iter()
        .map(|&id| sim.client(id).received(1, Source::Camera))
        .collect();
    let now = sim.now;
    let mid = sim.client(1).send_mid(Source::Camera).expect("camera");
    let c = sim.client_mut(1);
    for _ in 0..5 {
        c.write(now, mid, Source::Camera, str0m::format::Codec::Vp8);
    }
    c.rtc
        .handle_input(str0m::Input::Timeout(now))
        .expect("client tick");
    sim.drain_client(1);
    let stats = sim.room.stats();
    sim.deliver();
    let after = sim.room.stats();
    let ticks = (
        after.rtc_ticks - stats.rtc_ticks,
        after.written_ticks - stats.written_ticks,
    );
    for (i, id) in [2, 3].into_iter().enumerate() {
        assert_eq!(
            sim.client(id).received(1, Source::Camera),
            before[i] + 5,
            "the burst reached {id}"
        );
    }
    sim.run_for(Duration::from_secs(1));
    assert_clean(&sim);
    ticks
}

#[test]
fn a_receive_batch_ticks_each_subscriber_once() {
    let (full, light) = ticks_for_burst(true);
    assert!(
        full + light <= 2,
        "batched: {full} full and {light} light ticks for 5 packets to 2 subscribers"
    );
    // No subscriber timer was due: the written packets only needed the light tick.
    assert_eq!((full, light), (0, 2), "batched: full and light ticks");
    // Negative control: draining after every datagram ticks per packet and subscriber.
    let (full, light) = ticks_for_burst(false);
    assert!(
        full + light >= 10,
        "unbatched: {full} full and {light} light"
    );
}

#[test]
fn batched_meeting_forwards_everything() {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.batch = true;
    for id in [1, 2, 3, 4] {
        sim.join(id);
    }
    assert!(sim.run_until(SETTLE, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 6)
    }));
    sim.run_for(Duration::from_secs(3));
    for rx in [1, 2, 3, 4] {
        for tx in [1, 2, 3, 4] {
            if rx != tx {
                let c = sim.client(rx);
                assert!(
                    c.received(tx, Source::Microphone) > 140,
                    "{rx} <- {tx} audio"
                );
                assert!(c.received(tx, Source::Camera) > 85, "{rx} <- {tx} video");
            }
        }
    }
    assert_clean(&sim);
    // Timers keep firing with batches: RTCP, and the active speaker.
    assert!(sim
        .room_events
        .iter()
        .any(|(_, e)| matches!(e, RoomEvent::ActiveSpeaker(Some(_)))));
}

/// Counters of `tx`'s `source` that `rx` is missing, from the first one it got to the last
/// one `tx` sent more than 300 ms before the end (later ones may still be in repair).
fn missing(sim: &Sim, rx: u64, tx: u64, source: Source, sent_before_end: usize) -> usize {
    let got = &sim.client(rx).received[&(tx, source)].counters;
    let first = *got.first().expect("received something");
    let sent = &sim.client(tx).sent[&source];
    let miss: Vec<u32> = sent[..sent_before_end]
        .iter()
        .filter(|c| **c >= first && !got.contains(c))
        .copied()
        .collect();
    miss.len()
}

#[test]
fn losses_are_repaired_with_nack_and_rtx() {
    for batch in [false, true] {
        let mut sim = meeting(RoomConfig::default(), &[1, 2, 3]);
        sim.batch = batch;
        // Streams first run clean for a while (a receiver does not NACK the first packets of
        // a stream).
        sim.run_for(Duration::from_secs(1));
        // Every 13th RTP packet from the room to 2 is lost, and every 11th from 3 to the room
        // (str0m stops retransmitting above 15 % of a stream).
        sim.drop_rtp_to.insert(2, 13);
        sim.drop_rtp_from.insert(3, 11);
        sim.run_for(Duration::from_secs(4));
        let sent_before: HashMap<(u64, Source), usize> = [1, 3]
            .iter()
            .flat_map(|&tx| {
                [Source::Microphone, Source::Camera]
                    .map(|s| ((tx, s), sim.client(tx).sent[&s].len()))
            })
            .collect();
        sim.run_for(Duration::from_millis(300));
        assert!(sim.dropped > 50, "dropped {}", sim.dropped);
        // Video is NACKed and retransmitted (RTX) on both hops: nothing is missing.
        for (rx, tx) in [(2, 1), (1, 3), (2, 3)] {
            let n = missing(
                &sim,
                rx,
                tx,
                Source::Camera,
                sent_before[&(tx, Source::Camera)],
            );
            assert_eq!(n, 0, "batch {batch}: {rx} misses {n} video packets of {tx}");
        }
        // Negative control: Opus is not NACKed, so the same losses show in audio.
        for (rx, tx) in [(2, 1), (1, 3)] {
            let n = missing(
                &sim,
                rx,
                tx,
                Source::Microphone,
                sent_before[&(tx, Source::Microphone)],
            );
            assert!(
                n > 10,
                "batch {batch}: {rx} misses only {n} audio packets of {tx}"
            );
        }
        // A lossless pair misses nothing.
        assert_eq!(
            missing(
                &sim,
                3,
                1,
                Source::Microphone,
                sent_before[&(1, Source::Microphone)]
            ),
            0
        );
        assert_clean(&sim);
    }
}

/// Video of 1 that 2 misses when its NACKs (all its RTCP) reach the room `delay` after the
/// losses, which happen during 700 ms; `None`: they never do.
fn video_missing_after_late_nacks(delay: Option<Duration>) -> usize {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    sim.run_for(Duration::from_secs(1));
    sim.hold_rtcp_from.insert(2);
    sim.drop_rtp_to.insert(2, 7);
    sim.run_for(Duration::from_millis(700));
    sim.drop_rtp_to.clear();
    assert!(sim.dropped >= 6, "dropped {}", sim.dropped);
    let sent_before = sim.client(1).sent[&Source::Camera].len();
    if let Some(delay) = delay {
        sim.run_for(delay);
        sim.hold_rtcp_from.clear();
        sim.release_held();
    }
    sim.run_for(Duration::from_millis(500));
    missing(&sim, 2, 1, Source::Camera, sent_before)
}

#[test]
fn the_resend_cache_keeps_two_seconds() {
    // NACKs that reach the room 0.1-0.8 s after the losses are answered from the cache.
    let soon = video_missing_after_late_nacks(Some(Duration::from_millis(100)));
    assert_eq!(soon, 0, "{soon} packets missing after NACKs 0.1 s late");
    // 1.2-1.9 s late, as behind a bottleneck's full queue during a media probe: still answered
    // (a cache of one second missed them, and the receiver's picture froze until its keyframe
    // request, seconds later).
    let queued = video_missing_after_late_nacks(Some(Duration::from_millis(1200)));
    assert_eq!(queued, 0, "{queued} packets missing after NACKs 1.2 s late");
    // 2.5-3.2 s after the losses the packets are gone from the cache (str0m's default of 3 s
    // would still repair some): as many are missing as without any NACK.
    let never = video_missing_after_late_nacks(None);
    assert!(never > 0, "the losses hit video");
    let late = video_missing_after_late_nacks(Some(Duration::from_millis(2500)));
    assert_eq!(
        late, never,
        "{late} missing after NACKs 2.5 s late, {never} without NACKs"
    );
}

/// Deterministic xorshift.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn garbage_input_does_not_break_the_room() {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.capture = true;
    sim.join(1);
    sim.join(2);
    assert!(sim.run_until(SETTLE, |s| s.all_connected()));
    sim.run_for(Duration::from_secs(1));
    sim.capture = false;

    // Caller misuse.
    assert!(matches!(
        sim.room.handle_offer(sim.now, 99, "v=0", &[]),
        Err(RoomError::UnknownPeer(99))
    ));
    assert!(matches!(
        sim.room.handle_receive(
            sim.now,
            99,
            common::client_addr(9),
            common::room_addr(),
            &[0; 40]
        ),
        Err(RoomError::UnknownPeer(99))
    ));
    assert!(matches!(
        sim.room.add_peer(sim.now, 1, &[common::room_addr()]),
        Err(RoomError::DuplicatePeer(1))
    ));
    assert!(matches!(
        sim.room.add_peer(sim.now, 50, &[]),
        Err(RoomError::InvalidAddress(_))
    ));
    assert!(matches!(
        sim.room
            .add_peer(sim.now, 51, &["0.0.0.0:1".parse().expect("addr")]),
        Err(RoomError::InvalidAddress(_))
    ));

    // Invalid SDP.
    for sdp in [
        "",
        "garbage",
        "v=0\r\n",
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\nm=video x y z\r\na=mid:\r\na=mid:\u{0}\r\n",
    ] {
        assert!(
            matches!(
                sim.room.handle_offer(sim.now, 1, sdp, &[]),
                Err(RoomError::InvalidSdp(_))
            ),
            "{sdp:?}"
        );
    }

    // Random datagrams, truncated and bit-flipped real STUN and SRTP packets.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in 0..2000 {
        let len = (rng.next() % 300) as usize;
        let mut bytes = rng.bytes(len);
        if let Some(b) = bytes.first_mut() {
            // Spread over every demux class: STUN, DTLS, RTP/RTCP, unknown.
            *b = match i % 4 {
                0 => *b % 2,
                1 => 20 + *b % 44,
                2 => 128 + *b % 64,
                _ => *b,
            };
        }
        let _ = sim.send_garbage(1 + (i % 2), &bytes);
    }
    let captured: Vec<(u64, Vec<u8>)> = sim
        .captured_stun
        .iter()
        .take(3)
        .chain(sim.captured_rtp.iter().take(20))
        .cloned()
        .collect();
    assert!(!captured.is_empty());
    for (peer, packet) in &captured {
        for n in 0..packet.len() {
            let _ = sim.send_garbage(*peer, &packet[..n]);
        }
        for _ in 0..20 {
            let mut p = packet.clone();
            let idx = (rng.next() as usize) % p.len();
            p[idx] ^= 1 << (rng.next() % 8);
            let _ = sim.send_garbage(*peer, &p);
        }
    }

    // The room keeps working.
    assert_eq!(sim.room.peer_count(), 2);
    let a = sim.client(2).received(1, Source::Microphone);
    let v = sim.client(1).received(2, Source::Camera);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.client(2).received(1, Source::Microphone) > a + 50);
    assert!(sim.client(1).received(2, Source::Camera) > v + 30);
    assert!(!sim
        .room_events
        .iter()
        .any(|(_, e)| matches!(e, RoomEvent::Disconnected(_))));
    assert_clean(&sim);
}

#[test]
fn silent_peer_is_disconnected() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    sim.run_for(Duration::from_secs(1));
    // Client 2 vanishes without a word: no STUN, no DTLS close.
    sim.clients.retain(|c| c.id != 2);
    let ok = sim.run_until(Duration::from_secs(60), |s| {
        s.room_events
            .iter()
            .any(|(_, e)| *e == RoomEvent::Disconnected(2))
    });
    assert!(ok, "no Disconnected(2)");
    assert_eq!(sim.room.peer_count(), 1);
    assert!(sim.room.poll_timeout().is_some());
}

#[test]
fn a_peer_that_never_finishes_dtls_is_dropped() {
    let mut sim = meeting(RoomConfig::default(), &[1]);
    // Peer 2 answers ICE, so the room has its address, but its DTLS never arrives: without a
    // deadline its Rtc (and the RTCP queued for it) would stay for good.
    sim.drop_dtls_from.insert(2);
    sim.join(2);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.room.peer_count(), 2, "dropped too early");
    let dropped = sim.run_until(klausur_room::CONNECT_TIMEOUT, |s| {
        s.room_events
            .iter()
            .any(|(_, e)| *e == RoomEvent::Disconnected(2))
    });
    assert!(dropped, "a peer without DTLS stayed past CONNECT_TIMEOUT");
    assert_eq!(sim.room.peer_count(), 1);
    sim.clients.retain(|c| c.id != 2);

    // Negative control: a peer that connects is never dropped by the deadline.
    sim.join(3);
    sim.run_for(klausur_room::CONNECT_TIMEOUT * 2);
    assert_eq!(sim.room.peer_count(), 2);
    assert!(!sim
        .room_events
        .iter()
        .any(|(_, e)| *e == RoomEvent::Disconnected(3) || *e == RoomEvent::Disconnected(1)));
    assert!(sim.client(3).received(1, Source::Microphone) > 0);
}

#[test]
fn an_offer_with_more_m_lines_than_the_meeting_needs_is_refused() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    let limit = sim.room.max_m_lines();
    assert!(limit < 100, "a room of two allows {limit} m-lines");

    // Client 2 asks for far more receive transceivers than two peers can fill.
    let now = sim.now;
    let client = sim.client_mut(2);
    let (offer, _) = client.offer(60, 60, false).expect("offer");
    let sdp = offer.to_sdp_string();
    let sources = sim.client(2).sources();
    match sim.room.handle_offer(now, 2, &sdp, &sources) {
        Err(RoomError::TooManyMLines { count, limit: l }) => {
            assert!(count > 120);
            assert_eq!(l, limit);
        }
        other => panic!("expected TooManyMLines, got {other:?}"),
    }
    // Over the absolute cap the offer is refused before it is parsed.
    let huge = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(klausur_room::MAX_OFFER_M_LINES + 1);
    assert!(matches!(
        klausur_room::parse_offer(&huge),
        Err(RoomError::TooManyMLines { .. })
    ));

    // The refused offer changed nothing: both still get each other's media, and an offer
    // within the limit is accepted.
    let a = sim.client(1).received(2, Source::Camera);
    let b = sim.client(2).received(1, Source::Microphone);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.client(1).received(2, Source::Camera) > a);
    assert!(sim.client(2).received(1, Source::Microphone) > b);
    sim.negotiate(2, 4, 4, true);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.room.peer_count(), 2);
    assert_clean(&sim);
}

#[test]
fn only_a_peers_own_stun_requests_are_authentic() {
    let mut sim = meeting(RoomConfig::default(), &[1, 2]);
    sim.capture = true;
    // ICE consent checks keep coming while connected.
    sim.run_for(Duration::from_secs(6));
    let (peer, request) = sim
        .captured_stun
        .iter()
        .find(|(p, c)| *p == 1 && c.get(0..2) == Some(&[0, 1][..]))
        .cloned()
        .expect("a binding request of client 1");
    assert_eq!(peer, 1);
    assert!(sim.room.stun_authentic(1, &request));
    // Another peer's password does not verify it.
    assert!(!sim.room.stun_authentic(2, &request));
    // A changed transaction id breaks the integrity.
    let mut forged = request.clone();
    forged[10] ^= 0xff;
    assert!(!sim.room.stun_authentic(1, &forged));
    assert!(!sim.room.stun_authentic(1, b"not stun at all"));
    assert!(!sim.room.stun_authentic(9, &request));
}

#[test]
fn video_a_subscriber_does_not_show_is_not_forwarded_to_it() {
    use klausur_room::VideoWant;
    let mut sim = meeting(RoomConfig::default(), &[1, 2, 3]);
    sim.run_for(Duration::from_secs(1));
    // 1 shows only 2's camera.
    let now = sim.now;
    sim.room.set_video_wants(
        now,
        1,
        Some(vec![VideoWant {
            publisher: 2,
            source: Source::Camera,
            width: 320,
            height: 180,
        }]),
    );
    sim.run_for(Duration::from_millis(200));
    let counts = |sim: &Sim| {
        let c = sim.client(1);
        (
            c.received(2, Source::Camera),
            c.received(3, Source::Camera),
            c.received(3, Source::Microphone),
        )
    };
    let before = counts(&sim);
    sim.run_for(Duration::from_secs(2));
    let after = counts(&sim);
    assert!(
        after.0 - before.0 > 40,
        "shown camera keeps coming: {before:?} {after:?}"
    );
    assert_eq!(after.1, before.1, "a camera not shown is not forwarded");
    assert!(
        after.2 - before.2 > 80,
        "audio is always forwarded: {before:?} {after:?}"
    );
    // Negative control: 2 says nothing and gets every camera.
    let c2 = sim.client(2);
    assert!(c2.received(3, Source::Camera) > 60);

    // Showing 3's camera again: it arrives again, on the same mid, continuing cleanly.
    sim.client_mut(3).keyframe_requests.clear();
    let now = sim.now;
    sim.room.set_video_wants(now, 1, None);
    sim.run_for(Duration::from_secs(1));
    let again = counts(&sim);
    assert!(
        again.1 - after.1 > 20,
        "camera shown again: {after:?} {again:?}"
    );
    assert!(
        !sim.client(3).keyframe_requests.is_empty(),
        "the publisher is asked for a keyframe when its video is shown again"
    );
    assert_clean(&sim);
}

/// Wants `publisher`'s camera shown `height` device pixels tall.
fn show_camera(sim: &mut Sim, subscriber: u64, publisher: u64, height: u32) {
    use klausur_room::VideoWant;
    let now = sim.now;
    sim.room.set_video_wants(
        now,
        subscriber,
        Some(vec![VideoWant {
            publisher,
            source: Source::Camera,
            width: height * 16 / 9,
            height,
        }]),
    );
}

/// Packets per layer of `publisher`'s camera at `subscriber` during `d`, and the layer of the
/// newest one.
fn layers_during(
    sim: &mut Sim,
    subscriber: u64,
    publisher: u64,
    d: Duration,
) -> ([u64; 3], Option<u8>) {
    let before = received_layers(sim, subscriber, publisher).0;
    sim.run_for(d);
    let (after, last) = received_layers(sim, subscriber, publisher);
    (std::array::from_fn(|i| after[i] - before[i]), last)
}

fn received_layers(sim: &Sim, subscriber: u64, publisher: u64) -> ([u64; 3], Option<u8>) {
    sim.client(subscriber)
        .received
        .get(&(publisher, Source::Camera))
        .map_or(([0; 3], None), |r| (r.per_layer, r.last_layer))
}

#[test]
fn each_subscriber_gets_the_simulcast_layer_of_its_tile_size() {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.join_simulcast(1);
    sim.join(2);
    sim.join(3);
    let ok = sim.run_until(SETTLE, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 4)
    });
    assert!(ok, "meeting did not settle");
    // 2 shows 1's camera small, 3 large; layers 180, 360 and 720 pixels tall.
    show_camera(&mut sim, 2, 1, 170);
    show_camera(&mut sim, 3, 1, 700);
    sim.run_for(Duration::from_secs(2));
    let (small, last_small) = layers_during(&mut sim, 2, 1, Duration::from_secs(2));
    let (large, last_large) = layers_during(&mut sim, 3, 1, Duration::from_secs(2));
    assert_eq!(last_small, Some(0), "small tile: low layer {small:?}");
    assert_eq!(
        small[1] + small[2],
        0,
        "small tile gets only the low layer: {small:?}"
    );
    assert!(small[0] > 40, "small tile: {small:?}");
    assert_eq!(last_large, Some(2), "large tile: high layer {large:?}");
    assert_eq!(
        large[0] + large[1],
        0,
        "large tile gets only the high layer: {large:?}"
    );
    assert!(large[2] > 40, "large tile: {large:?}");

    // 3's tile shrinks: it switches to the middle layer at a keyframe, asked for by rid.
    sim.client_mut(1).keyframe_rids.clear();
    show_camera(&mut sim, 3, 1, 350);
    sim.run_for(Duration::from_secs(1));
    assert!(
        sim.client(1)
            .keyframe_rids
            .iter()
            .any(|(_, rid)| rid.is_some_and(|r| &*r == "h")),
        "the new layer's keyframe was requested: {:?}",
        sim.client(1).keyframe_rids
    );
    let (mid, last_mid) = layers_during(&mut sim, 3, 1, Duration::from_secs(1));
    assert_eq!(last_mid, Some(1), "{mid:?}");
    assert_eq!(mid[0] + mid[2], 0, "{mid:?}");
    // Across the switch the picture IDs and sequence numbers stay continuous, on one mid.
    let pids = &sim.client(3).received[&(1, Source::Camera)].picture_ids;
    for w in pids.windows(2) {
        assert_eq!((w[0] + 1) % (1 << 15), w[1], "picture IDs continue: {w:?}");
    }
    assert!(sim.room.stats().layer_switches >= 3);
    assert_clean(&sim);
}

/// 1 publishes a simulcast camera, 2 shows it in a large tile and, once the bandwidth estimate
/// (from 1 Mbit/s, falling to what is sent, probed upwards by padding) allows, receives its
/// high layer.
fn simulcast_pair_on_the_high_layer() -> Sim {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.join_simulcast(1);
    sim.join(2);
    let ok = sim.run_until(SETTLE, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 2)
    });
    assert!(ok, "meeting did not settle");
    show_camera(&mut sim, 2, 1, 720);
    let high = sim.run_until(Duration::from_secs(30), |s| {
        received_layers(s, 2, 1).1 == Some(2)
    });
    assert!(
        high,
        "ample bandwidth: high layer {:?}",
        received_layers(&sim, 2, 1)
    );
    sim
}

#[test]
fn a_subscriber_with_little_bandwidth_gets_the_low_layer_and_all_audio() {
    let mut sim = simulcast_pair_on_the_high_layer();
    // 2 may receive only 200 kbit/s (a limit works like a low bandwidth estimate): after
    // 50 kbit/s for audio only the low layer (about 70 kbit/s) fits.
    let now = sim.now;
    sim.room.set_receive_limit(now, 2, Some(200_000));
    let audio_before = sim.client(2).received(1, Source::Microphone);
    sim.run_for(Duration::from_secs(1));
    let (low, last) = layers_during(&mut sim, 2, 1, Duration::from_secs(2));
    assert_eq!(last, Some(0), "200 kbit/s: low layer {low:?}");
    assert_eq!(low[1] + low[2], 0, "{low:?}");
    let audio = sim.client(2).received(1, Source::Microphone) - audio_before;
    assert!(audio >= 140, "audio keeps flowing: {audio} packets in 3 s");
    assert_clean(&sim);
}

#[test]
fn a_layer_the_bandwidth_no_longer_carries_stops_before_the_lower_keyframe_comes() {
    let mut sim = simulcast_pair_on_the_high_layer();
    // The publisher's keyframes come late: the room cannot switch to the low layer yet. Going
    // on with the high layer meanwhile would overload a link that no longer carries it.
    sim.client_mut(1).hold_keyframes = true;
    let now = sim.now;
    sim.room.set_receive_limit(now, 2, Some(200_000));
    sim.run_for(Duration::from_millis(100));
    let (held, _) = layers_during(&mut sim, 2, 1, Duration::from_secs(1));
    assert_eq!(held, [0, 0, 0], "nothing while the low keyframe is due");
    // The keyframe comes: the low layer, continuous.
    sim.client_mut(1).hold_keyframes = false;
    sim.client_mut(1).layer_state[0].1 = true;
    let (low, last) = layers_during(&mut sim, 2, 1, Duration::from_secs(1));
    assert_eq!(last, Some(0), "{low:?}");
    assert!(low[0] > 20 && low[1] + low[2] == 0, "{low:?}");
    // A tile that shrinks is no shortage: the layer it had goes on until the new keyframe.
    sim.room.set_receive_limit(sim.now, 2, None);
    let high = sim.run_until(Duration::from_secs(30), |s| {
        received_layers(s, 2, 1).1 == Some(2)
    });
    assert!(high, "high layer again {:?}", received_layers(&sim, 2, 1));
    sim.client_mut(1).hold_keyframes = true;
    show_camera(&mut sim, 2, 1, 170);
    let (shrunk, last) = layers_during(&mut sim, 2, 1, Duration::from_secs(1));
    assert_eq!(last, Some(2), "{shrunk:?}");
    assert!(shrunk[2] > 20, "{shrunk:?}");
    assert_clean(&sim);
}

/// 1 publishes a simulcast camera (about 70, 170 and 260 kbit/s), 2 shows it in a large tile
/// behind a downlink of 250 kbit/s with a 40-datagram queue: the low layer and audio fit, the
/// middle one (with the headroom to switch up) does not.
fn behind_a_narrow_link() -> Sim {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.limit_downlink(2, 250_000, 40);
    sim.join_simulcast(1);
    sim.join(2);
    let ok = sim.run_until(SETTLE * 3, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 2)
    });
    assert!(ok, "meeting did not settle");
    show_camera(&mut sim, 2, 1, 720);
    // The estimate falls from its start value to what the link carries.
    sim.run_for(Duration::from_secs(10));
    sim
}

#[test]
fn behind_a_narrow_link_probe_trains_find_no_room_and_the_low_layer_flows_undisturbed() {
    let mut sim = behind_a_narrow_link();
    let dropped = sim.downlinks[&2].dropped;
    let audio = sim.client(2).received(1, Source::Microphone);
    let trains = sim.room.stats().probe_trains;
    // Over 40 s the room probes (after waiting 4, 12 and 36 s).
    let (layers, last) = layers_during(&mut sim, 2, 1, Duration::from_secs(40));
    let dropped = sim.downlinks[&2].dropped - dropped;
    assert_eq!(dropped, 0, "the bottleneck's queue overflowed");
    assert_eq!(last, Some(0), "{layers:?}");
    assert_eq!(
        layers[1] + layers[2],
        0,
        "no higher layer tried: {layers:?}"
    );
    assert!(layers[0] > 1000, "the low layer flows: {layers:?}");
    let audio = sim.client(2).received(1, Source::Microphone) - audio;
    assert!(
        audio >= 1950,
        "audio keeps flowing: {audio} packets in 40 s"
    );
    let stats = sim.room.stats();
    assert!(stats.probe_trains > trains, "{stats:?}");
    assert_eq!(stats.media_trials, 0, "{stats:?}");
    assert_clean(&sim);
}

#[test]
fn once_the_link_widens_probe_trains_find_room_and_the_high_layer_comes() {
    // The control: the same meeting, with 2's link widened to 2 Mbit/s. Probe trains prove the
    // room, without a media trial, and nothing is dropped.
    let mut sim = behind_a_narrow_link();
    assert_eq!(received_layers(&sim, 2, 1).1, Some(0));
    let trains = sim.room.stats().probe_trains;
    let dropped = sim.downlinks[&2].dropped;
    sim.set_downlink_rate(2, 2_000_000);
    let high = sim.run_until(Duration::from_secs(60), |s| {
        received_layers(s, 2, 1).1 == Some(2)
    });
    let stats = sim.room.stats();
    assert!(high, "{stats:?} {:?}", received_layers(&sim, 2, 1));
    assert!(stats.probe_trains > trains, "{stats:?}");
    assert_eq!(stats.media_trials, 0, "{stats:?}");
    assert_eq!(sim.downlinks[&2].dropped, dropped);
    assert_clean(&sim);
}

/// Two cameras shown at 360 pixels to 2, whose link carries `rate` bit/s (after the meeting
/// settled and the estimate fell to the link).
fn two_cameras_behind(rate: u64) -> Sim {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.limit_downlink(2, rate, 40);
    sim.join_simulcast(1);
    sim.join(2);
    sim.join_simulcast(3);
    let ok = sim.run_until(SETTLE * 3, |s| {
        s.all_connected() && s.clients.iter().all(|c| c.assignments.len() == 4)
    });
    assert!(ok, "meeting did not settle");
    use klausur_room::VideoWant;
    let now = sim.now;
    let want = |publisher| VideoWant {
        publisher,
        source: Source::Camera,
        width: 640,
        height: 360,
    };
    sim.room
        .set_video_wants(now, 2, Some(vec![want(1), want(3)]));
    sim
}

#[test]
fn behind_a_link_with_room_for_one_larger_picture_probes_raise_one_camera() {
    // Room for one camera's 360-pixel layer and the other's low one, not for both larger: a
    // probe for both at once would fail every time and leave both small.
    let mut sim = two_cameras_behind(RATE_FOR_ONE);
    let one_up = sim.run_until(Duration::from_secs(60), |s| {
        let a = received_layers(s, 2, 1).1;
        let b = received_layers(s, 2, 3).1;
        matches!((a, b), (Some(1), Some(0)) | (Some(0), Some(1)))
    });
    let stats = sim.room.stats();
    assert!(
        one_up,
        "{stats:?} {:?} {:?}",
        received_layers(&sim, 2, 1),
        received_layers(&sim, 2, 3)
    );
    // And so it stays: probes for the second camera's larger layer fail (trains, no media),
    // nothing overflows the link, and the raised camera ends on its larger layer.
    let (raised, other) = if received_layers(&sim, 2, 1).1 == Some(1) {
        (1, 3)
    } else {
        (3, 1)
    };
    let dropped = sim.downlinks[&2].dropped;
    let trains = sim.room.stats().probe_trains;
    let other_before = received_layers(&sim, 2, other).0;
    let (_, last) = layers_during(&mut sim, 2, raised, Duration::from_secs(30));
    let (other_after, other_last) = received_layers(&sim, 2, other);
    let stats = sim.room.stats();
    eprintln!(
        "raised {raised}: {:?}, other {:?} -> {other_after:?}, {stats:?}",
        received_layers(&sim, 2, raised),
        other_before
    );
    assert_eq!(
        sim.downlinks[&2].dropped, dropped,
        "the link's queue overflowed"
    );
    assert_eq!(last, Some(1), "the raised camera keeps its larger layer");
    assert_eq!(other_last, Some(0));
    assert_eq!(
        other_after[1], other_before[1],
        "the other camera's larger layer was never sent"
    );
    assert!(stats.probe_trains > trains, "{stats:?}");
    assert_eq!(stats.media_trials, 0, "{stats:?}");
    assert_clean(&sim);
}

/// 2's link for [`behind_a_link_with_room_for_one_larger_picture_probes_raise_one_camera`]:
/// the two cameras' low layers and audio take about 250 kbit/s, one 360-pixel layer in place
/// of a low one about 345, both about 440 (payload and RTP headers; the link also carries IP
/// and UDP headers).
const RATE_FOR_ONE: u64 = 480_000;
