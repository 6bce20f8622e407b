//! What the dial-in scenario's participants say, and how it is read back: tone cycles, their
//! onsets (for the one-way delay) and the gaps in them (for the loss figures).
//!
//! # The cycle
//!
//! Every meeting runs one clock of 20 ms ticks, and its audio repeats every [`CYCLE_FRAMES`]
//! ticks (1 s). Each source sends a sine of its own frequency ([`MEMBER_FREQS`],
//! [`CALLER_FREQS`]; at most 8 sources are heard at once, so the sum of [`AMPLITUDE`]s stays
//! below full scale), and is silent at the start of each cycle:
//!
//! - the cycle's *probe*, one member in turn (member `cycle % 5`), speaks from frame
//!   [`PROBE_FROM`] to the end of the cycle;
//! - everyone else (the other members and every caller) speaks from frame [`OTHERS_FROM`].
//!
//! So a caller, who hears the mix of everyone but itself, hears the probe's onset alone after
//! [`PROBE_FROM`] frames of silence: the member-to-caller delay. A member receives each
//! participant on a stream of its own and sees each caller's onset at [`OTHERS_FROM`]: the
//! caller-to-member delay. Frames keep flowing during the silent part (encoded silence), as
//! from a browser with DTX off.
//!
//! # Reading it back ([`ToneTracker`])
//!
//! A receiver lays one stream's decoded samples on the stream's own timeline (RTP time; a
//! missing frame is zeros, a late or repeated one is dropped) and finds, per cycle:
//!
//! - the **onset**: the first sample of magnitude at least [`ONSET_LEVEL`] (a third of the
//!   tone's peak) after at least [`ONSET_SILENCE`] without one. Its time is the arrival of the frame
//!   that holds it plus the sample's offset in that frame. The sender's onset is found with the
//!   same detector on the sender's own decoded frames ([`first_onset`]), at the send time of
//!   the frame that holds it plus the offset, so the detector's bias and the sender's own codec
//!   delay (a browser's, not the gateway's) cancel out; the gateway's resampling, coding and
//!   buffering do not.
//! - the **gaps**: from [`GUARD_START`] after the onset to [`GUARD_END`] before the tone ends,
//!   every run of samples below [`SILENCE_LEVEL`] lasting at least [`MIN_GAP`] (a sine's zero
//!   crossings are far shorter). A frame lost without concealment is a gap of 20 ms.
//!
//! [`sent_onset`] pairs each received onset with the latest sent onset before it.
//!
//! Written here: onset and gap detection on known test tones is a few dozen lines, and the
//! rules (what counts as silence, where a cycle's window lies) are the benchmark's own.

use std::time::{Duration, Instant};

/// Frames per cycle (20 ms each: 1 s).
pub const CYCLE_FRAMES: u64 = 50;
/// Frame at which the cycle's probe member starts speaking.
pub const PROBE_FROM: u64 = 8;
/// Frame at which everyone else starts speaking.
pub const OTHERS_FROM: u64 = 18;
/// Members per meeting.
pub const MEMBERS: usize = 5;
/// Most callers per meeting.
pub const MAX_CALLERS: usize = 4;
/// The members' tone frequencies (Hz), in the telephone band and 300 Hz apart.
pub const MEMBER_FREQS: [f64; MEMBERS] = [450.0, 750.0, 1050.0, 1350.0, 1650.0];
/// The callers' tone frequencies (Hz).
pub const CALLER_FREQS: [f64; MAX_CALLERS] = [2000.0, 2300.0, 2600.0, 2900.0];
/// Peak amplitude of every tone: eight of them at once stay below full scale.
pub const AMPLITUDE: f64 = 3000.0;
/// Samples of smaller magnitude are silence.
pub const SILENCE_LEVEL: i16 = 300;
/// A sample of at least this magnitude after [`ONSET_SILENCE`] without one is an onset.
pub const ONSET_LEVEL: i16 = 1000;
/// Quiet (no sample of [`ONSET_LEVEL`]) needed before an onset.
pub const ONSET_SILENCE: Duration = Duration::from_millis(60);
/// Gaps are looked for from this long after an onset ...
pub const GUARD_START: Duration = Duration::from_millis(20);
/// ... until this long before the tone's end.
pub const GUARD_END: Duration = Duration::from_millis(40);
/// The shortest run of silence that counts as a gap.
pub const MIN_GAP: Duration = Duration::from_millis(2);
/// One frame: gaps longer than this are what the target forbids.
pub const FRAME: Duration = Duration::from_millis(20);

/// How long a source's tone lasts in each cycle.
pub fn tone_length(from_frame: u64) -> Duration {
    FRAME * (CYCLE_FRAMES.saturating_sub(from_frame)) as u32
}

/// One cycle of a source at `rate` Hz: [`CYCLE_FRAMES`] frames of 20 ms, silent before
/// `from_frame`, then a sine of `freq` Hz starting at phase 0.
pub fn cycle_pcm(freq: f64, rate: u32, from_frame: u64) -> Vec<Vec<i16>> {
    let per_frame = (rate / 50) as usize;
    (0..CYCLE_FRAMES)
        .map(|f| {
            if f < from_frame {
                return vec![0; per_frame];
            }
            let start = (f - from_frame) as usize * per_frame;
            (0..per_frame)
                .map(|i| {
                    let t = (start + i) as f64 / f64::from(rate);
                    (AMPLITUDE * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
                })
                .collect()
        })
        .collect()
}

/// The first onset (sample index) in `pcm`, found as a [`ToneTracker`] would.
pub fn first_onset(pcm: &[i16], rate: u32) -> Option<usize> {
    let mut d = OnsetDetector::new(rate);
    pcm.iter().position(|&x| d.sample(x))
}

/// Finds onsets sample by sample: a sample of at least [`ONSET_LEVEL`] after at least
/// [`ONSET_SILENCE`] of samples below it. (A codec's pre-echo and a tone's zero crossings are
/// below it, so neither moves the onset nor spoils the silence before it.)
struct OnsetDetector {
    need: u64,
    quiet_run: u64,
}

impl OnsetDetector {
    fn new(rate: u32) -> OnsetDetector {
        OnsetDetector {
            need: samples(ONSET_SILENCE, rate),
            quiet_run: 0,
        }
    }

    /// Takes the next sample; true when it is an onset.
    fn sample(&mut self, x: i16) -> bool {
        if x.unsigned_abs() < ONSET_LEVEL.unsigned_abs() {
            self.quiet_run += 1;
            return false;
        }
        let onset = self.quiet_run >= self.need;
        self.quiet_run = 0;
        onset
    }

    /// Starts over: the next onset needs a full silence before it.
    fn reset(&mut self) {
        self.quiet_run = 0;
    }
}

fn samples(d: Duration, rate: u32) -> u64 {
    (d.as_secs_f64() * f64::from(rate)).round() as u64
}

/// One cycle as a receiver saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle {
    /// When the onset arrived.
    pub onset: Instant,
    /// The gaps inside the cycle's window, milliseconds.
    pub gaps_ms: Vec<f64>,
    /// How long the window was, milliseconds.
    pub covered_ms: f64,
}

struct On {
    onset_pos: u64,
    onset: Instant,
    gap_run: u64,
    gaps: Vec<f64>,
}

/// Onsets and gaps of one received stream. See the module docs.
pub struct ToneTracker {
    rate: u32,
    onsets: OnsetDetector,
    guard_start: u64,
    window_end: u64,
    min_gap: u64,
    next: Option<u64>,
    on: Option<On>,
    /// Frames dropped because their place on the timeline had passed.
    pub late: u64,
    /// Samples filled with zeros because nothing arrived for them.
    pub missing_samples: u64,
    done: Vec<Cycle>,
}

impl ToneTracker {
    /// A tracker for a stream at `rate` Hz whose tone lasts `tone` per cycle.
    pub fn new(rate: u32, tone: Duration) -> ToneTracker {
        ToneTracker {
            rate,
            onsets: OnsetDetector::new(rate),
            guard_start: samples(GUARD_START, rate),
            window_end: samples(tone.saturating_sub(GUARD_END), rate),
            min_gap: samples(MIN_GAP, rate).max(1),
            next: None,
            on: None,
            late: 0,
            missing_samples: 0,
            done: Vec::new(),
        }
    }

    /// Takes one frame: `pos` is its first sample's place on the stream's timeline (RTP time
    /// in samples), `arrived` when it arrived.
    pub fn push(&mut self, pos: u64, arrived: Instant, pcm: &[i16]) {
        let next = *self.next.get_or_insert(pos);
        if pos < next {
            self.late += 1;
            return;
        }
        // A gap on the timeline: zeros (at most a second; beyond, the stream restarted).
        let missing = (pos - next).min(u64::from(self.rate));
        for i in 0..missing {
            self.sample(0, pos - missing + i, arrived, 0);
        }
        self.missing_samples += missing;
        for (i, &x) in pcm.iter().enumerate() {
            self.sample(x, pos + i as u64, arrived, i as u64);
        }
        self.next = Some(pos + pcm.len() as u64);
    }

    fn sample(&mut self, x: i16, pos: u64, arrived: Instant, offset: u64) {
        let silent = x.unsigned_abs() < SILENCE_LEVEL.unsigned_abs();
        let Some(on) = self.on.as_mut() else {
            if self.onsets.sample(x) {
                let at = arrived + Duration::from_secs_f64(offset as f64 / f64::from(self.rate));
                self.on = Some(On {
                    onset_pos: pos,
                    onset: at,
                    gap_run: 0,
                    gaps: Vec::new(),
                });
            }
            return;
        };
        let rel = pos.saturating_sub(on.onset_pos);
        if rel < self.guard_start {
            return;
        }
        if rel < self.window_end {
            if silent {
                on.gap_run += 1;
            } else {
                close_gap(on, self.min_gap, self.rate);
            }
            return;
        }
        close_gap(on, self.min_gap, self.rate);
        if let Some(on) = self.on.take() {
            self.done.push(Cycle {
                onset: on.onset,
                gaps_ms: on.gaps,
                covered_ms: (self.window_end.saturating_sub(self.guard_start)) as f64 * 1000.0
                    / f64::from(self.rate),
            });
        }
        self.onsets.reset();
    }

    /// The cycles completed since the last call.
    pub fn take_cycles(&mut self) -> Vec<Cycle> {
        std::mem::take(&mut self.done)
    }
}

fn close_gap(on: &mut On, min_gap: u64, rate: u32) {
    if on.gap_run >= min_gap {
        on.gaps.push(on.gap_run as f64 * 1000.0 / f64::from(rate));
    }
    on.gap_run = 0;
}

/// The sent onset a received one belongs to: the latest at or before it, if at most `max`
/// earlier. `sent` must be sorted.
pub fn sent_onset(sent: &[Instant], received: Instant, max: Duration) -> Option<Instant> {
    let i = sent.partition_point(|&s| s <= received);
    let s = *i.checked_sub(1).and_then(|i| sent.get(i))?;
    (received - s <= max).then_some(s)
}

/// Gaps over a set of cycles.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct GapSummary {
    /// Cycles looked at.
    pub cycles: usize,
    /// Seconds of tone looked at.
    pub covered_s: f64,
    /// Gaps of at least [`MIN_GAP`].
    pub gaps: usize,
    /// Gaps longer than one frame (20 ms).
    pub over_one_frame: usize,
    /// The longest gap, ms (0 without gaps).
    pub longest_ms: f64,
}

/// Adds up the gaps of `cycles`.
pub fn summarize_gaps<'a>(cycles: impl IntoIterator<Item = &'a Cycle>) -> GapSummary {
    let mut s = GapSummary::default();
    let frame_ms = FRAME.as_secs_f64() * 1000.0;
    for c in cycles {
        s.cycles += 1;
        s.covered_s += c.covered_ms / 1000.0;
        for &g in &c.gaps_ms {
            s.gaps += 1;
            // A 20 ms hole measures at most 20 ms (plus rounding); more is over a frame.
            if g > frame_ms + 0.5 {
                s.over_one_frame += 1;
            }
            s.longest_ms = s.longest_ms.max(g);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 8000;

    /// A stream of cycles of `freq` from `from`, as 160-sample frames with arrival times
    /// `delay` after their nominal times, minus the frames in `lost` (global frame numbers).
    fn feed(
        tracker: &mut ToneTracker,
        t0: Instant,
        cycles: u64,
        from: u64,
        delay: Duration,
        lost: &[u64],
    ) {
        let cycle = cycle_pcm(1000.0, RATE, from);
        for n in 0..cycles * CYCLE_FRAMES {
            if lost.contains(&n) {
                continue;
            }
            let frame = &cycle[(n % CYCLE_FRAMES) as usize];
            tracker.push(n * 160, t0 + FRAME * n as u32 + delay, frame);
        }
    }

    #[test]
    fn onsets_are_found_once_per_cycle_at_the_right_time() {
        let t0 = Instant::now();
        let mut tr = ToneTracker::new(RATE, tone_length(OTHERS_FROM));
        let delay = Duration::from_millis(37);
        feed(&mut tr, t0, 4, OTHERS_FROM, delay, &[]);
        let cycles = tr.take_cycles();
        assert_eq!(cycles.len(), 4);
        for (c, cycle) in cycles.iter().enumerate() {
            // The tone starts at phase 0: the first sample at or above the onset level is a
            // few samples in.
            let nominal = t0 + FRAME * (c as u32 * CYCLE_FRAMES as u32 + OTHERS_FROM as u32);
            let d = cycle.onset - nominal;
            assert!(
                d >= delay && d < delay + Duration::from_micros(200),
                "cycle {c}: {d:?}"
            );
            assert!(cycle.gaps_ms.is_empty(), "{:?}", cycle.gaps_ms);
            assert!(
                (cycle.covered_ms - 580.0).abs() < 0.01,
                "{}",
                cycle.covered_ms
            );
        }
        assert_eq!(tr.late, 0);
        assert_eq!(tr.missing_samples, 0);
    }

    #[test]
    fn the_sender_detector_agrees_with_the_tracker() {
        let pcm: Vec<i16> = cycle_pcm(450.0, 48_000, PROBE_FROM).concat();
        let q = first_onset(&pcm, 48_000).expect("onset");
        let start = (PROBE_FROM * 960) as usize;
        assert!(q >= start && q < start + 20, "{q}");
        // Nothing but silence: no onset; a loud start without silence before it: none either.
        assert_eq!(first_onset(&[0; 4800], 48_000), None);
        assert_eq!(first_onset(&[3000; 4800], 48_000), None);
        // The tracker's onset lies on the same sample.
        let t0 = Instant::now();
        let mut tr = ToneTracker::new(48_000, tone_length(PROBE_FROM));
        tr.push(0, t0, &pcm);
        tr.push(pcm.len() as u64, t0, &[0; 960]);
        let c = tr.take_cycles();
        assert_eq!(c.len(), 1);
        let at = (c[0].onset - t0).as_secs_f64() * 48_000.0;
        assert!((at - q as f64).abs() < 0.5, "{at} vs {q}");
    }

    #[test]
    fn a_lost_frame_is_a_gap_of_one_frame_and_two_are_more() {
        let t0 = Instant::now();
        let mut tr = ToneTracker::new(RATE, tone_length(OTHERS_FROM));
        // Cycle 0: frame 30 lost; cycle 1: frames 80 and 81; cycle 2: a frame in the silence
        // (no gap); cycle 3: none.
        feed(
            &mut tr,
            t0,
            4,
            OTHERS_FROM,
            Duration::ZERO,
            &[30, 80, 81, 105],
        );
        let cycles = tr.take_cycles();
        assert_eq!(cycles.len(), 4);
        assert_eq!(cycles[0].gaps_ms.len(), 1);
        assert!(
            (cycles[0].gaps_ms[0] - 20.0).abs() < 0.3,
            "{:?}",
            cycles[0].gaps_ms
        );
        assert_eq!(cycles[1].gaps_ms.len(), 1);
        assert!(
            (cycles[1].gaps_ms[0] - 40.0).abs() < 0.3,
            "{:?}",
            cycles[1].gaps_ms
        );
        assert!(cycles[2].gaps_ms.is_empty());
        assert!(cycles[3].gaps_ms.is_empty());
        assert_eq!(tr.missing_samples, 4 * 160);
        let s = summarize_gaps(&cycles);
        assert_eq!(s.cycles, 4);
        assert_eq!(s.gaps, 2);
        assert_eq!(s.over_one_frame, 1);
        assert!((s.longest_ms - 40.0).abs() < 0.3);
        assert!((s.covered_s - 4.0 * 0.58).abs() < 1e-9);
    }

    #[test]
    fn late_frames_are_dropped_and_short_dips_are_no_gaps() {
        let t0 = Instant::now();
        let mut tr = ToneTracker::new(RATE, tone_length(PROBE_FROM));
        let cycle = cycle_pcm(450.0, RATE, PROBE_FROM);
        for n in 0..CYCLE_FRAMES + 10 {
            let mut frame = cycle[(n % CYCLE_FRAMES) as usize].clone();
            if n == 30 {
                // 1 ms of silence: a dip, not a gap.
                frame[40..48].fill(0);
            }
            tr.push(n * 160, t0 + FRAME * n as u32, &frame);
            if n == 31 {
                // A repeated frame.
                tr.push(30 * 160, t0 + FRAME * n as u32, &frame);
            }
        }
        assert_eq!(tr.late, 1);
        let c = tr.take_cycles();
        assert_eq!(c.len(), 1);
        assert!(c[0].gaps_ms.is_empty(), "{:?}", c[0].gaps_ms);
    }

    #[test]
    fn received_onsets_pair_with_the_latest_earlier_sent_one() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let sent = [ms(0), ms(1000), ms(2000)];
        let max = Duration::from_millis(500);
        assert_eq!(sent_onset(&sent, ms(45), max), Some(ms(0)));
        assert_eq!(sent_onset(&sent, ms(1060), max), Some(ms(1000)));
        // At the limit, and just past it; before every sent onset; long after the last.
        assert_eq!(sent_onset(&sent, ms(500), max), Some(ms(0)));
        assert_eq!(sent_onset(&sent, ms(2600), max), None);
        assert_eq!(sent_onset(&sent[1..], ms(900), max), None);
        assert_eq!(sent_onset(&sent, ms(3000), max), None);
        // A received onset at the very time of the sent one: delay 0.
        assert_eq!(sent_onset(&sent, ms(1000), max), Some(ms(1000)));
        assert_eq!(sent_onset(&[], ms(45), max), None);
    }
}
