//! Peers that join within milliseconds of each other and become connected in the same tick,
//! as the browsers do when they come back to a restarted server: signaling has latency (an
//! offer/answer round is in flight while others join and connect, `Renegotiate` during a round
//! queues another, as the web client does), and the clients' datagrams are held back and then
//! delivered as one burst, so the room sees every peer's ICE and DTLS finish in one tick.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{init_log, Sim};
use klausur_room::{PeerId, RoomConfig, SendSource, Source};
use str0m::change::{SdpAnswer, SdpPendingOffer};

enum Msg {
    Offer {
        id: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
        pending: SdpPendingOffer,
    },
    Answer {
        id: PeerId,
        answer: klausur_room::Answer,
        pending: SdpPendingOffer,
    },
}

struct Browser {
    delay: Duration,
    in_flight: BTreeSet<PeerId>,
    again: BTreeSet<PeerId>,
    want: BTreeMap<PeerId, (u32, u32)>,
    queue: Vec<(Instant, Msg)>,
}

impl Browser {
    fn new(delay: Duration) -> Self {
        Browser {
            delay,
            in_flight: BTreeSet::new(),
            again: BTreeSet::new(),
            want: BTreeMap::new(),
            queue: Vec::new(),
        }
    }

    fn negotiate(&mut self, sim: &mut Sim, id: PeerId) {
        if self.in_flight.contains(&id) {
            self.again.insert(id);
            return;
        }
        let (a, v) = self.want.get(&id).copied().unwrap_or((0, 0));
        let c = sim.client_mut(id);
        let Some((offer, pending)) = c.offer(a, v, false) else {
            return;
        };
        let sources = c.sources();
        self.in_flight.insert(id);
        self.queue.push((
            sim.now + self.delay,
            Msg::Offer {
                id,
                sdp: offer.to_sdp_string(),
                sources,
                pending,
            },
        ));
    }

    fn join(&mut self, sim: &mut Sim, id: PeerId) {
        sim.add_client(id);
        self.negotiate(sim, id);
    }

    fn step(&mut self, sim: &mut Sim) {
        sim.step();
        for (peer, a, v) in std::mem::take(&mut sim.pending_renegotiate) {
            let w = self.want.entry(peer).or_insert((0, 0));
            w.0 = w.0.max(a);
            w.1 = w.1.max(v);
            self.negotiate(sim, peer);
        }
        let now = sim.now;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.queue = rest;
        for (_, msg) in due {
            match msg {
                Msg::Offer {
                    id,
                    sdp,
                    sources,
                    pending,
                } => {
                    let answer = sim
                        .room
                        .handle_offer(now, id, &sdp, &sources)
                        .expect("handle_offer");
                    sim.drain_room();
                    self.queue.push((
                        now + self.delay,
                        Msg::Answer {
                            id,
                            answer,
                            pending,
                        },
                    ));
                }
                Msg::Answer {
                    id,
                    answer,
                    pending,
                } => {
                    let c = sim.client_mut(id);
                    c.assignments = answer.assignments.clone();
                    let sdp = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer");
                    c.rtc
                        .sdp_api()
                        .accept_answer(pending, sdp)
                        .expect("accept_answer");
                    sim.drain_client(id);
                    self.in_flight.remove(&id);
                    if self.again.remove(&id) {
                        self.negotiate(sim, id);
                    }
                }
            }
        }
        sim.deliver();
    }
}

fn run(delay_ms: u64, hold_ms: u64, joins: &[(PeerId, u64)], batch: bool) -> Vec<String> {
    init_log();
    let mut sim = Sim::new(RoomConfig::default());
    sim.auto_renegotiate = false;
    sim.batch = batch;
    let mut b = Browser::new(Duration::from_millis(delay_ms));
    let start = sim.now;
    for id in [1, 2, 3] {
        sim.hold_all_from.insert(id);
    }
    let end = start + Duration::from_millis(hold_ms);
    let mut released = false;
    while sim.now < start + Duration::from_secs(6) {
        for &(id, at) in joins {
            if sim.now == start + Duration::from_millis(at) {
                b.join(&mut sim, id);
            }
        }
        if !released && sim.now >= end {
            released = true;
            sim.hold_all_from.clear();
            sim.release_held();
        }
        b.step(&mut sim);
    }
    let mut bad = Vec::new();
    for rx in [1, 2, 3] {
        for tx in [1, 2, 3] {
            if rx == tx {
                continue;
            }
            let c = sim.client(rx);
            let a = c.received(tx, Source::Microphone);
            let v = c.received(tx, Source::Camera);
            if a < 100 || v < 60 {
                bad.push(format!("{rx}<-{tx}: audio {a} video {v}"));
            }
        }
    }
    bad
}

/// Three peers join (at the given offsets), connect in the same tick and each receives the
/// other two's audio and video. The joins of the restart test (17 ms and 83 ms apart) and all
/// at once; signaling latency 0 to 50 ms; the burst before, during or after the renegotiations.
#[test]
fn three_peers_connecting_in_the_same_tick_receive_each_other() {
    let mut failures = Vec::new();
    for (delay, hold, joins, batch) in [
        (0, 0, [(1, 0), (2, 0), (3, 0)], true),
        (5, 30, [(1, 0), (2, 0), (3, 0)], false),
        (20, 100, [(1, 0), (2, 17), (3, 83)], true),
        (50, 100, [(1, 0), (2, 17), (3, 83)], false),
        (50, 300, [(1, 0), (2, 5), (3, 10)], true),
        (20, 1000, [(1, 0), (2, 17), (3, 83)], true),
    ] {
        let bad = run(delay, hold, &joins, batch);
        if !bad.is_empty() {
            failures.push(format!(
                "delay {delay} ms, burst at {hold} ms, joins {joins:?}, batch {batch}: {bad:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
