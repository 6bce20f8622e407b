use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Pacer;
use super::PaddingRequest;
use super::{QueueSnapshot, QueueState};
use crate::Reason;
use crate::bwe_::ProbeClusterConfig;
use crate::pacer::PacerReason;
use crate::rtp_::{Bitrate, DataSize, MidRid, TwccClusterId};

/// A null pacer that doesn't pace.
#[derive(Debug, Default)]
pub struct NullPacer {
    last_sends: HashMap<MidRid, Instant>,
    /// Snapshots from the last `handle_timeout`. `poll_queue` counts off
    /// each packet it hands out.
    queue_states: Vec<QueueState>,
    /// Set when `poll_queue` hands out a queue that `register_send` never confirms:
    /// the stream had nothing to send after all, so the snapshot is stale.
    unsent_since: Option<Instant>,
    /// klausur patch: a probe train the application asked for (`Bwe::probe_train`).
    train: Option<Train>,
}

/// klausur patch: how long a probe train may take to go out before it is given up (its
/// packets are spaced at its rate; 5 of them take a few tens of milliseconds).
const TRAIN_GIVE_UP: Duration = Duration::from_millis(500);

/// klausur patch: the padding asked of a stream for one packet of a probe train (a spurious
/// resend of a cached packet up to twice this size, or blank padding).
const TRAIN_PACKET: usize = 1000;

/// klausur patch: a probe cluster sent without a pacer, one padding packet at a time, spaced
/// at the cluster's rate so that the estimator can compare the rate sent with the rate received.
#[derive(Debug)]
struct Train {
    config: ProbeClusterConfig,
    /// The stream that sends the padding, chosen at the first snapshot with one that can.
    midrid: Option<MidRid>,
    /// Padding was asked of the stream and has not gone out yet.
    asked: bool,
    /// When the first packet was asked for: the others are due on a schedule from then (a
    /// late timeout does not delay those after it).
    first_at: Option<Instant>,
    /// When the first snapshot saw the train.
    started: Option<Instant>,
    bytes: DataSize,
    packets: usize,
    /// Sent in full, or given up: `check_probe_complete` reports it.
    done: bool,
}

impl NullPacer {
    /// klausur patch: start sending a probe train (replacing one still going).
    pub fn start_probe(&mut self, config: ProbeClusterConfig) {
        self.train = Some(Train {
            config,
            midrid: None,
            asked: false,
            first_at: None,
            started: None,
            bytes: DataSize::ZERO,
            packets: 0,
            done: false,
        });
    }

    /// klausur patch: nothing that only a full timeout handles: no poll found a queue empty
    /// since the last snapshot, and no probe train is running or waiting to be reported
    /// (`Session::handle_written`).
    pub fn is_idle(&self) -> bool {
        self.unsent_since.is_none() && self.train.is_none()
    }

    /// klausur patch: puts the state of a queue that was written to since the last snapshot
    /// into the snapshot, in place of its old state (`Session::handle_written`): the same
    /// snapshot a full `handle_timeout` would take of it, while the other queues keep theirs.
    pub fn update_queue(&mut self, q: QueueState) {
        // The queues that polls emptied go, as with a full snapshot: `poll_queue` walks this
        // list for every packet.
        self.queue_states.retain(|e| e.snapshot.packet_count > 0);
        let old = self.queue_states.iter().position(|e| e.midrid == q.midrid);
        match (old, q.snapshot.packet_count > 0) {
            (Some(i), true) => self.queue_states[i] = q,
            (Some(i), false) => {
                self.queue_states.remove(i);
            }
            (None, true) => self.queue_states.push(q),
            (None, false) => {}
        }
    }

    /// klausur patch: the running train's cluster, for the packets it sends.
    pub fn active_cluster(&self) -> Option<TwccClusterId> {
        self.train
            .as_ref()
            .filter(|t| !t.done)
            .map(|t| t.config.cluster())
    }

    /// klausur patch: a train that was sent or given up, once.
    pub fn check_probe_complete(&mut self, _now: Instant) -> Option<TwccClusterId> {
        if self.train.as_ref().is_some_and(|t| t.done) {
            return self.train.take().map(|t| t.config.cluster());
        }
        None
    }

    /// klausur patch: when the running train's next packet is due (a train that is done is
    /// reported at whatever timeout comes next: its estimator state only waits for feedback).
    fn train_at(&self) -> Option<Instant> {
        let t = self.train.as_ref().filter(|t| !t.done && !t.asked)?;
        Some(t.next_at())
    }
}

impl Pacer for NullPacer {
    fn set_pacing_rate(&mut self, _padding_bitrate: Bitrate) {
        // We don't care
    }

    fn set_padding_rate(&mut self, _padding_bitrate: Bitrate) {
        // We don't care
    }
    fn poll_timeout(&self) -> (Option<Instant>, Reason) {
        // Only a poll that sent nothing needs a fresh snapshot: other queued packets go
        // out on the next poll. New media requests a timeout, and receiving a NACK
        // refreshes the snapshot through Rtc::handle_input before polling resumes.
        // klausur patch: or when a probe train's next packet is due.
        let at = match (self.unsent_since, self.train_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (at, Reason::Pacer(PacerReason::Handle))
    }

    fn handle_timeout(
        &mut self,
        now: Instant,
        iter: impl Iterator<Item = QueueState>,
    ) -> Option<PaddingRequest> {
        self.unsent_since = None;
        self.queue_states.clear();
        // klausur patch: keep only the queues with packets, the only ones `poll_queue`
        // picks from (it walks this list for every packet it sends). A probe train
        // takes the first stream that can send padding.
        let mut padder = None;
        for q in iter {
            if q.use_for_padding && padder.is_none() {
                padder = Some(q.midrid);
            }
            if q.snapshot.packet_count > 0 {
                self.queue_states.push(q);
            }
        }
        self.train_step(now, padder)
    }

    fn poll_queue(&mut self) -> Option<(MidRid, Option<TwccClusterId>)> {
        // Pick a queue using round robin, prioritize the least recently sent on queue.
        let queue = self
            .queue_states
            .iter_mut()
            .filter(|q| q.snapshot.packet_count > 0)
            .min_by_key(|q| self.last_sends.get(&q.midrid))?;

        queue.snapshot.packet_count -= 1;
        self.unsent_since = Some(queue.snapshot.created_at);

        // klausur patch: a probe train's stream sends its packets in the train's cluster.
        let midrid = queue.midrid;
        let cluster = self
            .train
            .as_ref()
            .filter(|t| !t.done && t.midrid == Some(midrid))
            .map(|t| t.config.cluster());
        Some((midrid, cluster))
    }

    fn register_send(&mut self, now: Instant, packet_size: DataSize, from: MidRid) {
        self.unsent_since = None;
        let e = self.last_sends.entry(from).or_insert(now);
        *e = now;
        // klausur patch: count a probe train's packets; the next is due when this one would
        // have taken at the train's rate.
        if let Some(t) = self
            .train
            .as_mut()
            .filter(|t| !t.done && t.midrid == Some(from))
        {
            t.bytes += packet_size;
            t.packets += 1;
            t.asked = false;
            if t.bytes >= t.config.target_bytes() && t.packets >= t.config.min_packet_count() {
                t.done = true;
            }
        }
    }
}

impl Train {
    /// When the next packet is due: at the train's rate from its first, so that one sent late
    /// makes the next due at once.
    fn next_at(&self) -> Instant {
        match self.first_at {
            Some(first) => first + self.bytes / self.config.target_bitrate(),
            None => crate::util::already_happened(),
        }
    }
}

impl NullPacer {
    /// klausur patch: asks the train's stream for its next packet when one is due; gives the
    /// train up when no stream can send padding or it takes too long.
    fn train_step(&mut self, now: Instant, padder: Option<MidRid>) -> Option<PaddingRequest> {
        let t = self.train.as_mut().filter(|t| !t.done)?;
        let started = *t.started.get_or_insert(now);
        if now >= started + TRAIN_GIVE_UP {
            t.done = true;
            return None;
        }
        if t.midrid.is_none() {
            t.midrid = padder;
        }
        let Some(midrid) = t.midrid else {
            // Nothing can send padding: no train.
            t.done = true;
            return None;
        };
        let pending = self.queue_states.iter().any(|q| q.midrid == midrid);
        if t.asked && !pending {
            // The padding asked for could not be made (the stream lost its padding source).
            t.done = true;
            return None;
        }
        if t.asked || now < t.next_at() {
            return None;
        }
        t.first_at.get_or_insert(now);
        t.asked = true;
        // The stream queues the padding when this returns, after the snapshot: count it in,
        // so that this round of polls sends it.
        match self.queue_states.iter_mut().find(|q| q.midrid == midrid) {
            Some(q) => q.snapshot.packet_count += 1,
            None => self.queue_states.push(QueueState {
                midrid,
                unpaced: true,
                use_for_padding: true,
                snapshot: QueueSnapshot {
                    created_at: now,
                    packet_count: 1,
                    ..Default::default()
                },
            }),
        }
        Some(PaddingRequest {
            midrid,
            padding: TRAIN_PACKET,
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::pacer::QueueSnapshot;

    fn queue(mid: &str, packet_count: u32, now: Instant) -> QueueState {
        padder(mid, packet_count, now, false)
    }

    fn padder(mid: &str, packet_count: u32, now: Instant, use_for_padding: bool) -> QueueState {
        QueueState {
            midrid: MidRid(mid.into(), None),
            unpaced: true,
            use_for_padding,
            snapshot: QueueSnapshot {
                created_at: now,
                packet_count,
                ..Default::default()
            },
        }
    }

    #[test]
    fn drains_every_queue_without_another_timeout() {
        let now = Instant::now();
        let mut pacer = NullPacer::default();
        let queues = [queue("a", 2, now), queue("b", 1, now), queue("c", 0, now)];
        pacer.handle_timeout(now, queues.into_iter());

        let mut sent = vec![];
        for _ in 0..3 {
            let (midrid, _) = pacer.poll_queue().expect("queued packet");
            pacer.register_send(now, DataSize::bytes(100), midrid);
            assert_eq!(pacer.poll_timeout().0, None, "no timeout between sends");
            sent.push(midrid.mid().to_string());
        }
        sent.sort();
        assert_eq!(sent, ["a", "a", "b"]);
        assert_eq!(pacer.poll_queue(), None);
        assert_eq!(pacer.poll_timeout().0, None, "no timeout after draining");
    }

    #[test]
    fn unsent_poll_asks_for_a_fresh_snapshot() {
        let now = Instant::now();
        let mut pacer = NullPacer::default();
        pacer.handle_timeout(now, [queue("a", 1, now), queue("b", 1, now)].into_iter());

        assert!(pacer.poll_queue().is_some());
        assert_eq!(pacer.poll_timeout().0, Some(now), "stream sent nothing");

        pacer.handle_timeout(now, [queue("b", 1, now)].into_iter());
        assert_eq!(pacer.poll_timeout().0, None);
        let (midrid, _) = pacer.poll_queue().expect("remaining packet");
        assert_eq!(midrid, MidRid("b".into(), None));
        pacer.register_send(now, DataSize::bytes(100), midrid);
        assert_eq!(pacer.poll_queue(), None);
        assert_eq!(pacer.poll_timeout().0, None);
    }

    #[test]
    fn round_robin_by_least_recently_sent() {
        let now = Instant::now();
        let mut pacer = NullPacer::default();
        pacer.register_send(now, DataSize::bytes(100), MidRid("a".into(), None));
        let later = now + std::time::Duration::from_millis(1);
        pacer.register_send(later, DataSize::bytes(100), MidRid("b".into(), None));
        pacer.handle_timeout(
            later,
            [queue("a", 1, later), queue("b", 1, later)].into_iter(),
        );

        assert_eq!(pacer.poll_queue(), Some((MidRid("a".into(), None), None)));
    }

    // klausur patch: probe trains.
    fn train(target_kbps: u64) -> ProbeClusterConfig {
        use crate::bwe_::ProbeKind;
        ProbeClusterConfig::new(7.into(), Bitrate::kbps(target_kbps), ProbeKind::Train)
            .with_duration(Duration::from_millis(30))
            .with_min_packet_count(5)
    }

    #[test]
    fn a_probe_train_goes_out_one_packet_at_a_time_at_its_rate() {
        let t0 = Instant::now();
        let mut pacer = NullPacer::default();
        pacer.start_probe(train(800));
        let v = MidRid("v".into(), None);
        let mut now = t0;
        let mut sent = vec![];
        for _ in 0..20 {
            // Nothing queued: the pacer asks the padding stream for one packet...
            let ask = pacer.handle_timeout(
                now,
                [padder("a", 0, now, false), padder("v", 0, now, true)].into_iter(),
            );
            let Some(ask) = ask else {
                break;
            };
            assert_eq!(ask.midrid, v);
            assert_eq!(ask.padding, TRAIN_PACKET);
            // ...and sends it in the same round of polls, with the other media there is (here
            // none: the snapshot was empty), without asking for another timeout.
            assert_eq!(pacer.poll_timeout().0, None);
            assert!(
                pacer
                    .handle_timeout(
                        now,
                        [padder("a", 1, now, false), padder("v", 1, now, true)].into_iter()
                    )
                    .is_none(),
                "asked already"
            );
            // Other media is sent too, outside the cluster; the train's packet is in it.
            let mut clusters = vec![];
            while let Some((midrid, cluster)) = pacer.poll_queue() {
                pacer.register_send(now, DataSize::bytes(1000), midrid);
                clusters.push((midrid.mid().to_string(), cluster.map(|c| *c)));
            }
            clusters.sort();
            assert_eq!(
                clusters,
                [("a".to_string(), None), ("v".to_string(), Some(7))]
            );
            sent.push(now);
            // The next packet is due 1000 bytes at 800 kbit/s later: 10 ms.
            let (at, _) = pacer.poll_timeout();
            if pacer.active_cluster().is_some() {
                assert_eq!(at, Some(now + Duration::from_millis(10)));
                assert!(
                    pacer
                        .handle_timeout(
                            now + Duration::from_millis(5),
                            [padder("v", 0, now, true)].into_iter()
                        )
                        .is_none(),
                    "not yet due"
                );
                now += Duration::from_millis(10);
            }
        }
        // 30 ms at 800 kbit/s is 3000 bytes, but at least 5 packets.
        assert_eq!(sent.len(), 5);
        assert_eq!(sent[4] - sent[0], Duration::from_millis(40));
        assert_eq!(pacer.active_cluster(), None);
        assert_eq!(pacer.check_probe_complete(now), Some(7.into()));
        assert_eq!(pacer.check_probe_complete(now), None);
    }

    #[test]
    fn a_probe_train_catches_up_after_a_late_timeout() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut pacer = NullPacer::default();
        pacer.start_probe(train(800));
        let v = MidRid("v".into(), None);
        let send = |pacer: &mut NullPacer, now: Instant| {
            let ask = pacer.handle_timeout(now, [padder("v", 0, now, true)].into_iter());
            assert!(ask.is_some(), "a packet is due at {:?}", now - t0);
            assert_eq!(pacer.poll_queue(), Some((v, Some(7.into()))));
            pacer.register_send(now, DataSize::bytes(1000), v);
        };
        send(&mut pacer, t0);
        // 1000 bytes at 800 kbit/s: the next is due 10 ms after the first.
        assert_eq!(pacer.poll_timeout().0, Some(t0 + ms(10)));
        // The timeout comes 15 ms late: that packet goes, and the one due at 20 ms at once.
        send(&mut pacer, t0 + ms(25));
        assert_eq!(pacer.poll_timeout().0, Some(t0 + ms(20)));
        send(&mut pacer, t0 + ms(25));
        assert_eq!(pacer.poll_timeout().0, Some(t0 + ms(30)));
    }

    #[test]
    fn a_probe_train_without_a_stream_that_pads_is_given_up() {
        let now = Instant::now();
        let mut pacer = NullPacer::default();
        pacer.start_probe(train(800));
        assert!(
            pacer
                .handle_timeout(now, [queue("a", 1, now)].into_iter())
                .is_none()
        );
        assert_eq!(pacer.active_cluster(), None);
        assert_eq!(pacer.poll_queue(), Some((MidRid("a".into(), None), None)));
        assert_eq!(pacer.check_probe_complete(now), Some(7.into()));
    }

    #[test]
    fn a_probe_train_that_takes_too_long_is_given_up() {
        let now = Instant::now();
        let mut pacer = NullPacer::default();
        pacer.start_probe(train(800));
        assert!(
            pacer
                .handle_timeout(now, [padder("v", 0, now, true)].into_iter())
                .is_some()
        );
        // The padding never comes (the stream lost its padding source).
        let later = now + TRAIN_GIVE_UP;
        assert!(
            pacer
                .handle_timeout(later, [padder("v", 0, now, true)].into_iter())
                .is_none()
        );
        assert_eq!(pacer.check_probe_complete(later), Some(7.into()));
    }
}
