//! 20 ms frames out of a G.711 stream of any packet duration.
//!
//! The gateway answers with `a=ptime:20`, but trunks and phones do not all follow it: 10, 30
//! and 60 ms packets are in use (sip-tester's own speech capture has 30 ms packets). The jitter
//! buffer and the call's clock work in 20 ms frames, so the trunk's G.711 payloads pass through
//! a [`Reframer`] first. G.711 has one byte per sample and no state, so the payload bytes can be
//! cut and joined anywhere.
//!
//! Frames are aligned to the stream's first timestamp: frame `k` holds the samples from
//! `first + 160 k`. A packet of exactly one aligned frame goes through as it is (the usual
//! case, no copy). Other packets are cut into the frames they overlap; a frame is handed on as
//! soon as all its 160 samples are in; a frame still missing samples when the stream is
//! [`MAX_PARTIAL`] frames past it, or when [`MAX_PARTIAL`] frames are open, is dropped (the
//! jitter buffer conceals it, as for a lost packet). A timestamp more than [`RESTART_AFTER`] samples away from the newest one
//! (the sender restarted its clock) starts the alignment anew.
//!
//! Sans-IO and allocation-bounded: at most [`MAX_PARTIAL`] frames are held.

use std::collections::VecDeque;

/// Samples (bytes) of a 20 ms G.711 frame.
pub const FRAME: usize = 160;
/// Incomplete frames held at most.
pub const MAX_PARTIAL: usize = 4;
/// A timestamp this many samples (2 s) from the newest restarts the alignment.
pub const RESTART_AFTER: u32 = 16_000;

#[derive(Debug, Clone)]
struct Partial {
    /// Timestamp of the frame's first sample.
    ts: u32,
    data: Box<[u8; FRAME]>,
    /// Bit i: sample i is in.
    filled: [u64; 3],
}

impl Partial {
    fn new(ts: u32) -> Partial {
        Partial {
            ts,
            data: Box::new([0; FRAME]),
            filled: [0; 3],
        }
    }

    fn set(&mut self, i: usize, byte: u8) {
        if let Some(d) = self.data.get_mut(i) {
            *d = byte;
            if let Some(word) = self.filled.get_mut(i / 64) {
                *word |= 1 << (i % 64);
            }
        }
    }

    fn complete(&self) -> bool {
        self.filled[0] == u64::MAX && self.filled[1] == u64::MAX && self.filled[2] == (1 << 32) - 1
    }
}

/// Cuts a G.711 stream into 20 ms frames. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Reframer {
    /// Timestamp of a frame boundary (the stream's first packet's), and the newest seen.
    anchor: Option<(u32, u32)>,
    partial: VecDeque<Partial>,
    /// Incomplete frames dropped so far.
    dropped: u64,
}

impl Reframer {
    /// A reframer before the first packet.
    pub fn new() -> Reframer {
        Reframer::default()
    }

    /// Incomplete frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Takes one packet (`timestamp`, G.711 `payload`) and calls `out(timestamp, frame)` for
    /// every 20 ms frame it completes, oldest first.
    pub fn push(&mut self, timestamp: u32, payload: &[u8], mut out: impl FnMut(u32, Vec<u8>)) {
        if payload.is_empty() {
            return;
        }
        let (anchor, newest) = match self.anchor {
            Some((a, n)) => {
                let ahead = timestamp.wrapping_sub(n);
                let behind = n.wrapping_sub(timestamp);
                if ahead.min(behind) > RESTART_AFTER {
                    self.partial.clear();
                    (timestamp, timestamp)
                } else if ahead <= RESTART_AFTER {
                    (a, timestamp)
                } else {
                    (a, n)
                }
            }
            None => (timestamp, timestamp),
        };
        self.anchor = Some((anchor, newest));
        let offset = timestamp.wrapping_sub(anchor) % FRAME as u32;
        if offset == 0 && payload.len() == FRAME {
            out(timestamp, payload.to_vec());
            return;
        }
        for (i, &byte) in payload.iter().enumerate() {
            let ts = timestamp.wrapping_add(i as u32);
            let within = ts.wrapping_sub(anchor) % FRAME as u32;
            let start = ts.wrapping_sub(within);
            let slot = match self.partial.iter().position(|p| p.ts == start) {
                Some(s) => s,
                None => {
                    if self.partial.len() >= MAX_PARTIAL {
                        self.partial.pop_front();
                        self.dropped += 1;
                    }
                    self.partial.push_back(Partial::new(start));
                    self.partial.len() - 1
                }
            };
            let Some(p) = self.partial.get_mut(slot) else {
                continue;
            };
            p.set(within as usize, byte);
            if p.complete() {
                if let Some(done) = self.partial.remove(slot) {
                    out(done.ts, done.data.to_vec());
                }
            }
        }
        // Frames that stayed incomplete while the stream moved on will not be completed.
        let horizon = (MAX_PARTIAL * FRAME) as u32;
        let before = self.partial.len();
        self.partial.retain(|p| {
            newest.wrapping_sub(p.ts) <= horizon || p.ts.wrapping_sub(newest) <= horizon
        });
        self.dropped += (before - self.partial.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Reframer, packets: &[(u32, Vec<u8>)]) -> Vec<(u32, Vec<u8>)> {
        let mut got = Vec::new();
        for (ts, p) in packets {
            r.push(*ts, p, |t, f| got.push((t, f)));
        }
        got
    }

    /// A stream of `ms`-millisecond packets from timestamp `first`; sample n is byte n % 251.
    fn stream(first: u32, ms: usize, packets: usize) -> Vec<(u32, Vec<u8>)> {
        let len = ms * 8;
        (0..packets)
            .map(|k| {
                let start = k * len;
                let bytes = (start..start + len).map(|n| (n % 251) as u8).collect();
                (first.wrapping_add(start as u32), bytes)
            })
            .collect()
    }

    fn check_frames(first: u32, frames: &[(u32, Vec<u8>)], count: usize) {
        assert_eq!(frames.len(), count);
        for (k, (ts, f)) in frames.iter().enumerate() {
            assert_eq!(*ts, first.wrapping_add((k * FRAME) as u32), "frame {k}");
            let want: Vec<u8> = (k * FRAME..(k + 1) * FRAME)
                .map(|n| (n % 251) as u8)
                .collect();
            assert_eq!(f, &want, "frame {k}'s samples");
        }
    }

    #[test]
    fn twenty_ms_packets_pass_through() {
        let mut r = Reframer::new();
        let frames = run(&mut r, &stream(1000, 20, 10));
        check_frames(1000, &frames, 10);
    }

    #[test]
    fn ten_thirty_and_sixty_ms_packets_become_twenty_ms_frames() {
        for (ms, packets, frames) in [(10, 20, 10), (30, 10, 15), (60, 5, 15), (40, 5, 10)] {
            let mut r = Reframer::new();
            let got = run(&mut r, &stream(u32::MAX - 500, ms, packets));
            check_frames(u32::MAX - 500, &got, frames);
            assert_eq!(r.dropped(), 0, "{ms} ms");
        }
    }

    #[test]
    fn a_lost_thirty_ms_packet_loses_only_the_frames_it_touched() {
        let mut s = stream(0, 30, 12);
        // Packet 3 (samples 720..960) touches frames 4 (640..800) and 5 (800..960).
        s.remove(3);
        let mut r = Reframer::new();
        let got = run(&mut r, &s);
        let starts: Vec<u32> = got.iter().map(|(t, _)| *t).collect();
        let want: Vec<u32> = (0..18u32)
            .filter(|k| *k != 4 && *k != 5)
            .map(|k| k * FRAME as u32)
            .collect();
        assert_eq!(starts, want);
        assert_eq!(
            r.dropped(),
            1,
            "frame 4 (half in) was dropped once the stream was past it; frame 5 never began"
        );
        assert!(r.partial.len() <= 1, "nothing stale is held");
    }

    #[test]
    fn reordered_packets_still_complete_their_frames() {
        let mut s = stream(0, 30, 6);
        s.swap(1, 2);
        let mut r = Reframer::new();
        let got = run(&mut r, &s);
        assert_eq!(got.len(), 9);
        let mut starts: Vec<u32> = got.iter().map(|(t, _)| *t).collect();
        starts.sort_unstable();
        assert_eq!(starts, (0..9).map(|k| k * FRAME as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_restarted_clock_starts_a_new_alignment() {
        let mut r = Reframer::new();
        let mut s = stream(50_000, 30, 4);
        s.extend(stream(240, 30, 4));
        let got = run(&mut r, &s);
        assert_eq!(got.len(), 12);
        assert_eq!(
            got[6].0, 240,
            "the new stream is aligned to its own first packet"
        );
    }

    #[test]
    fn duplicates_do_not_make_a_frame_early() {
        let mut r = Reframer::new();
        let p = stream(0, 10, 1);
        let got = run(&mut r, &[p[0].clone(), p[0].clone()]);
        assert!(got.is_empty(), "half a frame twice is still half a frame");
    }
}
