//! Loss and latency accounting.
//!
//! Only packets whose *send* time falls inside the measured window count, on both sides: the
//! sender counts what it sent in the window, each receiver counts the distinct sequence tags it
//! received from that window (duplicates, e.g. retransmissions, are counted apart). Clients keep
//! running for a drain period after the window, so packets in flight at its end still arrive.

use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::header::{decode_any, Stream};

/// The measured window, in ns since the shared start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn contains(&self, t_ns: u64) -> bool {
        t_ns >= self.start_ns && t_ns < self.end_ns
    }

    pub fn secs(&self) -> f64 {
        (self.end_ns.saturating_sub(self.start_ns)) as f64 / 1e9
    }
}

/// Which sequence tags of one (sender, stream) were seen: a growable bitset.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    bits: Vec<u64>,
    pub unique: u64,
    pub duplicates: u64,
}

impl SeqTracker {
    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u32) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    /// Records `seq`; returns true if it was new.
    pub fn insert(&mut self, seq: u32) -> bool {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            false
        } else {
            self.bits[word] |= bit;
            self.unique += 1;
            true
        }
    }
}

/// A latency histogram in nanoseconds (1 ns to 60 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// What one client received.
#[derive(Debug, Clone)]
pub struct RecvStats {
    /// Distinct packets from the window, per (sender, stream).
    pub seen: HashMap<(u16, Stream), SeqTracker>,
    /// One-way latency of packets sent in the window, ns.
    pub latency: Histogram<u64>,
    /// Packets that did not carry a benchmark header.
    pub foreign: u64,
    /// Time from sending `join` to the last packet of the first keyframe, ns.
    pub ttff_ns: Option<u64>,
    /// Time from sending `join` to the first audio packet, ns.
    pub first_audio_ns: Option<u64>,
    /// Any video packet arrived (then only a keyframe makes a first frame).
    pub video_seen: bool,
    /// Video packets from the window received per simulcast layer (low to high).
    pub layers: [u64; 3],
}

impl Default for RecvStats {
    fn default() -> Self {
        RecvStats {
            seen: HashMap::new(),
            latency: new_histogram(),
            foreign: 0,
            ttff_ns: None,
            first_audio_ns: None,
            video_seen: false,
            layers: [0; 3],
        }
    }
}

impl RecvStats {
    /// Accounts one received payload at `now_ns`; `joined_ns` is when this client sent `join`.
    pub fn record(&mut self, payload: &[u8], now_ns: u64, joined_ns: u64, window: &Window) {
        let Some((h, layer)) = decode_any(payload) else {
            self.foreign += 1;
            return;
        };
        match h.stream {
            Stream::Video => {
                self.video_seen = true;
                if self.ttff_ns.is_none() && h.keyframe && h.last_of_frame {
                    self.ttff_ns = Some(now_ns.saturating_sub(joined_ns));
                }
            }
            Stream::Audio => {
                if self.first_audio_ns.is_none() {
                    self.first_audio_ns = Some(now_ns.saturating_sub(joined_ns));
                }
            }
        }
        if !window.contains(h.send_ns) {
            return;
        }
        if let Some(l) = layer {
            self.layers[usize::from(l).min(2)] += 1;
        }
        let fresh = self
            .seen
            .entry((h.sender, h.stream))
            .or_default()
            .insert(h.seq);
        if fresh {
            self.latency
                .saturating_record(now_ns.saturating_sub(h.send_ns).max(1));
        }
    }

    /// Forgets the first-frame times (measured again from a new `join`).
    pub fn restart_first_frame(&mut self) {
        self.ttff_ns = None;
        self.first_audio_ns = None;
    }

    /// Time from `join` to the first frame: the first complete keyframe for a participant that
    /// receives video, the first audio packet for one that receives no video at all (audio-only
    /// listeners, whose first "frame" is the first sound they hear).
    pub fn time_to_first_frame_ns(&self) -> Option<u64> {
        if self.video_seen {
            self.ttff_ns
        } else {
            self.first_audio_ns
        }
    }

    /// Distinct window packets received, from all senders.
    pub fn unique(&self) -> u64 {
        self.seen.values().map(|t| t.unique).sum()
    }

    pub fn duplicates(&self) -> u64 {
        self.seen.values().map(|t| t.duplicates).sum()
    }
}

/// What one client sent inside the window, per stream.
#[derive(Debug, Default, Clone)]
pub struct SendStats {
    pub total: u64,
    /// Simulcast layers each video packet went out on (0 or 1: one).
    pub video_layers: u8,
    /// (sequence tag, send time) of every packet sent inside the window, per stream: what a
    /// receiver that was present only part of the window should have received.
    pub log: [Vec<(u32, u64)>; 2],
}

impl SendStats {
    pub fn record(&mut self, stream: Stream, seq: u32, send_ns: u64, window: &Window) {
        self.total += 1;
        if window.contains(send_ns) {
            self.log[stream.index()].push((seq, send_ns));
        }
    }
}

/// Expected and received packet counts over all (receiver, sender) pairs.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub expected: u64,
    pub received: u64,
}

impl Delivery {
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        1.0 - (self.received.min(self.expected) as f64 / self.expected as f64)
    }
}

/// When a participant was in the meeting, ns since the shared start: from sending `join` to
/// leaving (or the end of the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub joined_ns: u64,
    pub left_ns: u64,
}

/// Which packets count as expected between two participants that were in the meeting at the
/// same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap {
    /// After the later of the two joins: the time to connect and be subscribed, which is the
    /// time to first frame and not loss.
    pub settle_ns: u64,
    /// Before the earlier of the two departures: packets still in flight when a receiver leaves
    /// are not loss either.
    pub margin_ns: u64,
}

/// One participant's side of the accounting.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub index: u16,
    /// The meeting the member is in: only members of one meeting are expected to receive
    /// each other.
    pub meeting: u16,
    pub presence: Presence,
    /// Whose video this member shows (`None`: everyone's); video it does not show is not
    /// expected.
    pub shows: Option<&'a [u16]>,
    pub send: &'a SendStats,
    pub recv: &'a RecvStats,
}

/// Everyone receives everyone else while both are in the meeting: each receiver expects every
/// other sender's window packets sent from `settle` after the later join to `margin` before the
/// earlier departure. With everyone present the whole window (joined at least `settle` before
/// it, leaving at least `margin` after it) that is every window packet of every other sender.
pub fn delivery(members: &[Member<'_>], overlap: Overlap) -> Delivery {
    let mut d = Delivery::default();
    for r in members {
        for s in members {
            if s.index == r.index || s.meeting != r.meeting {
                continue;
            }
            let from = r.presence.joined_ns.max(s.presence.joined_ns) + overlap.settle_ns;
            let to = r
                .presence
                .left_ns
                .min(s.presence.left_ns)
                .saturating_sub(overlap.margin_ns);
            if from >= to {
                continue;
            }
            for stream in Stream::ALL {
                if stream == Stream::Video && r.shows.is_some_and(|v| !v.contains(&s.index)) {
                    continue;
                }
                let seen = r.recv.seen.get(&(s.index, stream));
                for &(seq, send_ns) in &s.send.log[stream.index()] {
                    if send_ns < from || send_ns >= to {
                        continue;
                    }
                    d.expected += 1;
                    if seen.is_some_and(|t| t.contains(seq)) {
                        d.received += 1;
                    }
                }
            }
        }
    }
    d
}

/// Median of the values (mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The `q`-quantile (0..=1) of the values by nearest rank; `None` if empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{payload, Header};

    const W: Window = Window {
        start_ns: 1_000,
        end_ns: 2_000,
    };

    fn pkt(sender: u16, stream: Stream, seq: u32, send_ns: u64) -> Vec<u8> {
        payload(
            &Header {
                sender,
                stream,
                seq,
                send_ns,
                keyframe: false,
                last_of_frame: true,
            },
            100,
        )
    }

    #[test]
    fn window_is_half_open() {
        assert!(!W.contains(999));
        assert!(W.contains(1_000));
        assert!(W.contains(1_999));
        assert!(!W.contains(2_000));
        assert!((W.secs() - 1e-6).abs() < 1e-12);
    }

    #[test]
    fn seq_tracker_counts_duplicates_apart() {
        let mut t = SeqTracker::default();
        assert!(t.insert(0));
        assert!(t.insert(200));
        assert!(!t.insert(200));
        assert!(t.insert(63));
        assert!(t.insert(64));
        assert_eq!(t.unique, 4);
        assert_eq!(t.duplicates, 1);
    }

    #[test]
    fn receiver_counts_only_window_packets_and_records_latency() {
        let mut r = RecvStats::default();
        r.record(&pkt(1, Stream::Audio, 0, 500), 600, 0, &W); // warm-up
        r.record(&pkt(1, Stream::Audio, 1, 1_000), 1_250, 0, &W);
        r.record(&pkt(1, Stream::Audio, 1, 1_000), 1_300, 0, &W); // duplicate
        r.record(&pkt(1, Stream::Video, 0, 1_500), 1_750, 0, &W);
        r.record(&pkt(2, Stream::Audio, 5, 2_000), 2_100, 0, &W); // after the window
        r.record(b"not a benchmark packet", 1_500, 0, &W);
        assert_eq!(r.unique(), 2);
        assert_eq!(r.duplicates(), 1);
        assert_eq!(r.foreign, 1);
        assert_eq!(r.latency.len(), 2);
        assert_eq!(r.latency.value_at_quantile(1.0), 250);
    }

    #[test]
    fn ttff_is_the_last_packet_of_the_first_keyframe() {
        let mut r = RecvStats::default();
        let mut h = Header {
            sender: 0,
            stream: Stream::Video,
            seq: 0,
            send_ns: 10,
            keyframe: false,
            last_of_frame: true,
        };
        r.record(&payload(&h, 50), 100, 40, &W); // delta frame: no picture yet
        assert_eq!(r.ttff_ns, None);
        h.keyframe = true;
        h.last_of_frame = false;
        h.seq = 1;
        r.record(&payload(&h, 50), 150, 40, &W);
        assert_eq!(r.ttff_ns, None);
        h.last_of_frame = true;
        h.seq = 2;
        r.record(&payload(&h, 50), 190, 40, &W);
        assert_eq!(r.ttff_ns, Some(150));
        h.seq = 3;
        r.record(&payload(&h, 50), 900, 40, &W);
        assert_eq!(r.ttff_ns, Some(150));
    }

    #[test]
    fn audio_is_the_first_frame_only_without_video() {
        let mut listener = RecvStats::default();
        assert_eq!(listener.time_to_first_frame_ns(), None);
        listener.record(&pkt(0, Stream::Audio, 0, 10), 70, 40, &W);
        listener.record(&pkt(0, Stream::Audio, 1, 30), 90, 40, &W);
        assert_eq!(listener.first_audio_ns, Some(30));
        assert_eq!(listener.time_to_first_frame_ns(), Some(30));
        listener.restart_first_frame();
        assert_eq!(listener.time_to_first_frame_ns(), None);

        // Receiving video at all: only a complete keyframe counts, whatever audio came first.
        let mut viewer = RecvStats::default();
        viewer.record(&pkt(0, Stream::Audio, 0, 10), 70, 40, &W);
        viewer.record(&pkt(0, Stream::Video, 0, 20), 80, 40, &W); // a delta frame
        assert_eq!(viewer.time_to_first_frame_ns(), None);
        let key = Header {
            sender: 0,
            stream: Stream::Video,
            seq: 1,
            send_ns: 100,
            keyframe: true,
            last_of_frame: true,
        };
        viewer.record(&payload(&key, 50), 140, 40, &W);
        assert_eq!(viewer.time_to_first_frame_ns(), Some(100));
    }

    fn sent(audio: u32, video: u32, send_ns: impl Fn(u32) -> u64) -> SendStats {
        let mut s = SendStats::default();
        for seq in 0..audio {
            s.record(Stream::Audio, seq, send_ns(seq), &W);
        }
        for seq in 0..video {
            s.record(Stream::Video, seq, send_ns(seq), &W);
        }
        s
    }

    const WHOLE_RUN: Presence = Presence {
        joined_ns: 0,
        left_ns: 10_000,
    };
    const NO_SETTLE: Overlap = Overlap {
        settle_ns: 0,
        margin_ns: 0,
    };

    #[test]
    fn loss_over_all_pairs() {
        // Three participants; each sent 10 audio and 20 video packets in the window.
        let senders: Vec<SendStats> = (0..3).map(|_| sent(10, 20, |_| 1_100)).collect();
        let mut receivers: Vec<RecvStats> = (0..3).map(|_| RecvStats::default()).collect();
        for (r, recv) in receivers.iter_mut().enumerate() {
            for s in 0..3u16 {
                if s as usize == r {
                    continue;
                }
                for seq in 0..10 {
                    recv.record(&pkt(s, Stream::Audio, seq, 1_100), 1_200, 0, &W);
                }
                // Receiver 2 misses the last 3 video packets of sender 0.
                let video = if r == 2 && s == 0 { 17 } else { 20 };
                for seq in 0..video {
                    recv.record(&pkt(s, Stream::Video, seq, 1_100), 1_200, 0, &W);
                }
            }
        }
        let members: Vec<Member<'_>> = (0..3)
            .map(|i| Member {
                index: i as u16,
                meeting: 0,
                shows: None,
                presence: WHOLE_RUN,
                send: &senders[i],
                recv: &receivers[i],
            })
            .collect();
        let d = delivery(&members, NO_SETTLE);
        assert_eq!(d.expected, 3 * 2 * 30);
        assert_eq!(d.received, 180 - 3);
        assert!((d.loss_ratio() - 3.0 / 180.0).abs() < 1e-12);
        assert_eq!(Delivery::default().loss_ratio(), 0.0);
    }

    #[test]
    fn loss_counts_only_while_both_are_present() {
        // Sender 0 is there the whole run and sends audio packet `seq` at 1_000 + 10 * seq
        // (100 packets over the window). Participant 1 joins at 1_200 and leaves at 1_700 and
        // receives everything from 1_300 on; participant 2 (index 7) joins at 1_650, after 1's
        // departure, and hears everything.
        let send_ns = |seq: u32| 1_000 + 10 * u64::from(seq);
        let s0 = sent(100, 0, send_ns);
        let quiet = SendStats::default();
        let mut r1 = RecvStats::default();
        let mut r2 = RecvStats::default();
        for seq in 0..100 {
            let t = send_ns(seq);
            if (1_300..1_700).contains(&t) {
                r1.record(&pkt(0, Stream::Audio, seq, t), t + 5, 1_200, &W);
            }
            if t >= 1_650 {
                r2.record(&pkt(0, Stream::Audio, seq, t), t + 5, 1_650, &W);
            }
        }
        let members = [
            Member {
                index: 0,
                meeting: 0,
                shows: None,
                presence: WHOLE_RUN,
                send: &s0,
                recv: &RecvStats::default(),
            },
            Member {
                index: 1,
                meeting: 0,
                shows: None,
                presence: Presence {
                    joined_ns: 1_200,
                    left_ns: 1_700,
                },
                send: &quiet,
                recv: &r1,
            },
            Member {
                index: 7,
                meeting: 0,
                shows: None,
                presence: Presence {
                    joined_ns: 1_650,
                    left_ns: 10_000,
                },
                send: &quiet,
                recv: &r2,
            },
        ];
        // Without a settle time, participant 1's first 100 ns count as loss (10 packets).
        let d = delivery(&members, NO_SETTLE);
        assert_eq!(d.expected, 50 + 35);
        assert_eq!(d.received, 40 + 35);
        // 100 ns to settle and 50 ns of margin: 1_300..1_650 and 1_750..2_000.
        let d = delivery(
            &members,
            Overlap {
                settle_ns: 100,
                margin_ns: 50,
            },
        );
        assert_eq!(d.expected, 35 + 25);
        assert_eq!(d.received, d.expected);
        // A packet sent before the receiver joined is not expected.
        let mut s1 = quiet.clone();
        s1.record(Stream::Audio, 0, 1_500, &W);
        let members = [
            members[1],
            Member {
                send: &s1,
                ..members[2]
            },
        ];
        assert_eq!(delivery(&members, NO_SETTLE), Delivery::default());
        // Members of another meeting are not expected to receive each other.
        let members = [
            members[0],
            Member {
                meeting: 1,
                ..members[1]
            },
        ];
        assert_eq!(delivery(&members, NO_SETTLE), Delivery::default());
    }

    #[test]
    fn send_stats_count_window_per_stream() {
        let mut s = SendStats::default();
        s.record(Stream::Audio, 0, 999, &W);
        s.record(Stream::Audio, 1, 1_000, &W);
        s.record(Stream::Video, 0, 1_999, &W);
        s.record(Stream::Video, 1, 2_000, &W);
        assert_eq!(s.log.each_ref().map(Vec::len), [1, 1]);
        assert_eq!(s.total, 4);
        assert_eq!(s.log[0], vec![(1, 1_000)]);
        assert_eq!(s.log[1], vec![(0, 1_999)]);
    }

    #[test]
    fn seq_tracker_contains() {
        let mut t = SeqTracker::default();
        t.insert(3);
        t.insert(130);
        assert!(t.contains(3) && t.contains(130));
        assert!(!t.contains(4) && !t.contains(129) && !t.contains(100_000));
    }

    #[test]
    fn median_and_quantile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
    }
}
