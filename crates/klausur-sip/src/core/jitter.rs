//! Jitter buffer for 20 ms audio frames keyed by RTP timestamp.
//!
//! One [`JitterBuffer`] per received stream: the trunk leg's G.711 or Opus payloads (`T =
//! Vec<u8>` or any other payload type), and each meeting track's Opus frames. Sans-IO: time is
//! the `Instant` the caller passes in; nothing here reads a clock.
//!
//! # Use
//!
//! - [`JitterBuffer::push`]`(arrival, rtp_timestamp, payload)` for every packet as it arrives.
//! - [`JitterBuffer::pop`]`(now)` once per 20 ms tick; it returns
//!   - [`Pop::Frame`]: the next frame to decode and play;
//!   - [`Pop::Lost`]: the next frame is missing but later ones are here: conceal one frame (for
//!     Opus, first try the in-band FEC of [`JitterBuffer::peek`], the packet after the gap);
//!   - [`Pop::Empty`]: nothing to play: not started yet, or the buffer ran dry (underrun). The
//!     caller plays silence (or keeps concealing, its choice).
//! - [`JitterBuffer::reset`] when the stream changes (a new SSRC, a re-INVITE to another
//!   codec): everything buffered is dropped and the next packet starts a new stream.
//!
//! # Behaviour
//!
//! Packets are placed in 20 ms slots by timestamp (relative to the stream's first packet,
//! rounded to the nearest slot), so reordering within the buffer is undone, and a second packet
//! for a slot is a duplicate (dropped, counted). RTP timestamps are unwrapped to 64 bits, so the
//! wrap at `u32::MAX` is invisible.
//!
//! - **Start.** Playout starts at the first `pop` at which the buffered audio spans the target
//!   delay (the newest packet is `target` ahead of the oldest), or the first packet has waited
//!   the target delay. In steady state every frame therefore waits exactly the target delay plus
//!   the phase of the caller's tick (0 to 20 ms): with ticks aligned to arrivals the added delay
//!   is the target.
//! - **Late.** A packet whose slot was already played or concealed is dropped and counted as
//!   `late` (or `duplicate` if that slot was played from an earlier copy).
//! - **Underrun.** When nothing is buffered at a tick, `pop` returns `Empty` and the buffer
//!   re-buffers: playout resumes once the target delay is buffered again (or the first packet
//!   after the underrun has waited the target), so a stall is followed by the normal delay, not
//!   a shorter one. Slots jumped over at that point (the sender was silent, or those packets were
//!   lost) are not played as `Lost`. If more than a frame above the target is buffered when
//!   playout (re)starts (a burst after a stall), the oldest packets are dropped so that it starts
//!   at the target delay rather than behind it.
//! - **Overflow.** When the buffered span exceeds the maximum delay (a burst, a sender clock
//!   running fast), the oldest packets are dropped until the span is back to the target. This
//!   bounds both the delay and the memory: at most `max_delay / 20 ms + 1` packets are held.
//!   Gentler: while playing, when more than one frame above the target stays buffered for
//!   [`CATCH_UP_TICKS`] ticks (1 s), one frame is dropped, so a delay built up by a jitter spike
//!   or clock drift returns to the target. `dropped_overflow` counts the packets dropped either
//!   way.
//! - **Resync.** A packet more than `resync_after` (default 2 s) ahead of the playout point or
//!   behind it, a packet later than `max_delay` while nothing is buffered, or
//!   [`RESYNC_AFTER_LATE`] late packets in a row (the sender restarted its timestamps) start a
//!   new stream at that packet, like [`JitterBuffer::reset`].
//!
//! # Counters ([`JitterStats`])
//!
//! `received` (every push), `played` (frames returned), `late`, `duplicate`, `lost` (RFC 3550
//! §6.4.1: packets expected from the timestamp span minus distinct packets received, late ones
//! included; computed from timestamps, so a sender's silence suppression counts as loss),
//! `concealed` (`Lost` results), `dropped_overflow`, `underruns` (ticks that found the buffer
//! dry while playing) and `resyncs`. All counters are cumulative over resets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Late packets in a row after which the stream is restarted.
pub const RESYNC_AFTER_LATE: u32 = 5;
/// Ticks (1 s) with more than one frame above the target buffered after which one frame is
/// dropped.
pub const CATCH_UP_TICKS: u32 = 50;

/// Settings of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream in Hz (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// Duration of one frame (one packet); 20 ms throughout the gateway.
    pub frame: Duration,
    /// Delay the buffer adds in steady state; rounded to whole frames. Default 40 ms.
    pub target_delay: Duration,
    /// Largest buffered span before the oldest packets are dropped. Default 200 ms.
    pub max_delay: Duration,
    /// A timestamp jump larger than this restarts the stream. Default 2 s.
    pub resync_after: Duration,
}

impl JitterConfig {
    /// The defaults for a stream with this RTP clock rate.
    pub fn new(clock_rate: u32) -> JitterConfig {
        JitterConfig {
            clock_rate,
            frame: Duration::from_millis(20),
            target_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
            resync_after: Duration::from_secs(2),
        }
    }
}

/// A [`JitterConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitterConfigError {
    /// The frame is not a whole, non-zero number of RTP clock ticks.
    #[error("a frame of {frame:?} is not a whole number of ticks at {clock_rate} Hz")]
    Frame {
        /// The clock rate.
        clock_rate: u32,
        /// The frame duration.
        frame: Duration,
    },
    /// The maximum delay is below the target, or the resync distance below the maximum.
    #[error("delays must satisfy target <= max_delay < resync_after")]
    Delays,
}

/// What to play at this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pop<T> {
    /// The next frame.
    Frame(T),
    /// The next frame is missing (later ones are buffered): conceal one frame.
    Lost,
    /// Nothing to play: not started, or the buffer ran dry.
    Empty,
}

/// Cumulative counters of a [`JitterBuffer`]. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JitterStats {
    /// Packets pushed.
    pub received: u64,
    /// Frames returned by `pop`.
    pub played: u64,
    /// Packets that came after their slot was played or concealed.
    pub late: u64,
    /// Second copies of a packet.
    pub duplicate: u64,
    /// Packets never received (RFC 3550 cumulative loss).
    pub lost: u64,
    /// `Pop::Lost` results.
    pub concealed: u64,
    /// Packets dropped because the buffer exceeded its maximum delay.
    pub dropped_overflow: u64,
    /// Ticks that found the buffer empty while playing.
    pub underruns: u64,
    /// Stream restarts after a timestamp jump or a run of late packets.
    pub resyncs: u64,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the target delay; `since` is the arrival of the first packet of this wait.
    Buffering {
        since: Option<Instant>,
    },
    Playing,
}

/// State of the current stream.
#[derive(Debug, Clone)]
struct Stream {
    /// Unwrapped timestamp of slot 0.
    base: i64,
    /// Highest unwrapped timestamp seen (the reference for unwrapping).
    highest: i64,
    /// Slot to play next.
    next: i64,
    /// Highest slot received.
    newest: i64,
    /// Lowest slot received (for the loss count).
    lowest: i64,
    /// Distinct packets received.
    unique: u64,
    phase: Phase,
    /// A frame was played or concealed since the stream started.
    started: bool,
    /// Bit i: slot `next - 1 - i` was played from a packet.
    history: u64,
    /// Late packets in a row.
    late_run: u32,
    /// Consecutive ticks with more than a frame above the target buffered.
    excess_ticks: u32,
}

impl Stream {
    fn lost(&self) -> u64 {
        let expected = u64::try_from(self.newest - self.lowest + 1).unwrap_or(0);
        expected.saturating_sub(self.unique)
    }

    fn advance(&mut self, played: bool) {
        self.history = (self.history << 1) | u64::from(played);
        self.next += 1;
    }

    fn skip_to(&mut self, slot: i64) {
        let n = slot - self.next;
        if n > 0 {
            self.history = if n >= 64 { 0 } else { self.history << n };
            self.next = slot;
        }
    }
}

/// A jitter buffer for one stream of 20 ms frames. See the module docs.
#[derive(Debug, Clone)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    ticks_per_frame: i64,
    target_frames: i64,
    max_frames: i64,
    resync_frames: i64,
    stream: Option<Stream>,
    /// Buffered packets by slot, ascending; every slot >= `stream.next`.
    queue: VecDeque<(i64, T)>,
    stats: JitterStats,
    /// Loss of earlier streams.
    lost_before: u64,
}

fn frames_in(d: Duration, frame: Duration) -> i64 {
    let f = frame.as_micros().max(1);
    i64::try_from((d.as_micros() + f / 2) / f).unwrap_or(i64::MAX)
}

impl<T> JitterBuffer<T> {
    /// A buffer with the given settings.
    pub fn new(config: JitterConfig) -> Result<JitterBuffer<T>, JitterConfigError> {
        let ticks = u128::from(config.clock_rate) * config.frame.as_nanos();
        if ticks == 0 || ticks.checked_rem(1_000_000_000) != Some(0) {
            return Err(JitterConfigError::Frame {
                clock_rate: config.clock_rate,
                frame: config.frame,
            });
        }
        let ticks_per_frame =
            i64::try_from(ticks / 1_000_000_000).map_err(|_| JitterConfigError::Frame {
                clock_rate: config.clock_rate,
                frame: config.frame,
            })?;
        let target_frames = frames_in(config.target_delay, config.frame);
        let max_frames = frames_in(config.max_delay, config.frame);
        let resync_frames = frames_in(config.resync_after, config.frame);
        if max_frames < target_frames || resync_frames <= max_frames {
            return Err(JitterConfigError::Delays);
        }
        Ok(JitterBuffer {
            config,
            ticks_per_frame,
            target_frames,
            max_frames,
            resync_frames,
            stream: None,
            queue: VecDeque::with_capacity(usize::try_from(max_frames + 2).unwrap_or(16)),
            stats: JitterStats::default(),
            lost_before: 0,
        })
    }

    /// A buffer with the default settings for this RTP clock rate (8000 or 48000).
    pub fn with_clock_rate(clock_rate: u32) -> Result<JitterBuffer<T>, JitterConfigError> {
        JitterBuffer::new(JitterConfig::new(clock_rate))
    }

    /// The settings.
    pub fn config(&self) -> &JitterConfig {
        &self.config
    }

    /// The counters so far.
    pub fn stats(&self) -> JitterStats {
        let mut stats = self.stats;
        stats.lost = self.lost_before + self.stream.as_ref().map_or(0, Stream::lost);
        stats
    }

    /// Packets currently buffered.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Audio buffered ahead of the playout point: from the next slot to the newest packet,
    /// including its own frame (zero when empty).
    pub fn buffered(&self) -> Duration {
        match (&self.stream, self.queue.is_empty()) {
            (Some(s), false) => {
                let frames = u32::try_from(s.newest - s.next + 1).unwrap_or(0);
                self.config.frame * frames
            }
            _ => Duration::ZERO,
        }
    }

    /// Whether playout is running (started and not re-buffering).
    pub fn is_playing(&self) -> bool {
        matches!(
            self.stream,
            Some(Stream {
                phase: Phase::Playing,
                ..
            })
        )
    }

    /// The packet that the next `pop` would play, if it is here. After a [`Pop::Lost`] this is
    /// the packet following the gap, whose Opus FEC can rebuild the lost frame.
    pub fn peek(&self) -> Option<&T> {
        let next = self.stream.as_ref()?.next;
        match self.queue.front() {
            Some((slot, payload)) if *slot == next => Some(payload),
            _ => None,
        }
    }

    /// Drops everything; the next packet starts a new stream.
    pub fn reset(&mut self) {
        if let Some(s) = self.stream.take() {
            self.lost_before += s.lost();
        }
        self.queue.clear();
    }

    /// Takes a packet that arrived at `arrival` with RTP timestamp `timestamp`.
    pub fn push(&mut self, arrival: Instant, timestamp: u32, payload: T) {
        self.stats.received += 1;
        let Some(s) = self.stream.as_mut() else {
            self.start_stream(arrival, timestamp, payload);
            return;
        };
        let delta = i64::from(timestamp.wrapping_sub(s.highest as u32) as i32);
        let ext = s.highest + delta;
        let slot = (ext - s.base + self.ticks_per_frame / 2).div_euclid(self.ticks_per_frame);

        let jump = slot > s.next + self.resync_frames || slot < s.next - self.resync_frames;
        let stale = slot < s.next - self.max_frames && self.queue.is_empty();
        if jump || stale {
            self.resync(arrival, timestamp, payload);
            return;
        }
        if slot < s.next {
            if !s.started {
                // Reordered before playout began: play it first.
                s.next = slot;
            } else {
                let behind = s.next - 1 - slot;
                if behind < 64 && s.history & (1 << behind) != 0 {
                    self.stats.duplicate += 1;
                    return;
                }
                self.stats.late += 1;
                s.unique += 1;
                s.late_run += 1;
                if s.late_run >= RESYNC_AFTER_LATE {
                    self.resync(arrival, timestamp, payload);
                }
                return;
            }
        }
        s.late_run = 0;
        match self.queue.binary_search_by_key(&slot, |(k, _)| *k) {
            Ok(_) => {
                self.stats.duplicate += 1;
                return;
            }
            Err(index) => self.queue.insert(index, (slot, payload)),
        }
        s.unique += 1;
        s.highest = s.highest.max(ext);
        s.newest = s.newest.max(slot);
        s.lowest = s.lowest.min(slot);
        if let Phase::Buffering { since: None } = s.phase {
            s.phase = Phase::Buffering {
                since: Some(arrival),
            };
        }
        self.trim();
    }

    /// What to play at this tick (call once per frame duration).
    pub fn pop(&mut self, now: Instant) -> Pop<T> {
        let target = self.config.target_delay;
        let target_frames = self.target_frames;
        let Some(s) = self.stream.as_mut() else {
            return Pop::Empty;
        };
        if let Phase::Buffering { since } = s.phase {
            let Some(&(first, _)) = self.queue.front() else {
                return Pop::Empty;
            };
            let depth = s.newest - first.max(s.next);
            let waited = since.is_some_and(|t| now.saturating_duration_since(t) >= target);
            if depth < target_frames && !waited {
                return Pop::Empty;
            }
            // Well over the target buffered (a burst after a stall): start at the target.
            let start = if depth > target_frames + 1 {
                first.max(s.newest - target_frames)
            } else {
                first
            };
            while self.queue.front().is_some_and(|&(slot, _)| slot < start) {
                self.queue.pop_front();
                self.stats.dropped_overflow += 1;
            }
            s.skip_to(start);
            s.phase = Phase::Playing;
            s.excess_ticks = 0;
        } else if self.queue.front().is_some() {
            // Slow catch-up: more than a frame above the target for a second drops one frame.
            if s.newest - s.next > target_frames + 1 {
                s.excess_ticks += 1;
            } else {
                s.excess_ticks = 0;
            }
            if s.excess_ticks >= CATCH_UP_TICKS {
                s.excess_ticks = 0;
                if self.queue.front().is_some_and(|&(slot, _)| slot == s.next) {
                    self.queue.pop_front();
                    self.stats.dropped_overflow += 1;
                }
                s.advance(false);
            }
        }
        match self.queue.front() {
            Some((slot, _)) if *slot == s.next => {
                let payload = self.queue.pop_front().map(|(_, p)| p);
                s.advance(true);
                s.started = true;
                match payload {
                    Some(payload) => {
                        self.stats.played += 1;
                        Pop::Frame(payload)
                    }
                    None => Pop::Lost,
                }
            }
            Some(_) => {
                s.advance(false);
                s.started = true;
                self.stats.concealed += 1;
                Pop::Lost
            }
            None => {
                self.stats.underruns += 1;
                s.phase = Phase::Buffering { since: None };
                Pop::Empty
            }
        }
    }

    fn start_stream(&mut self, arrival: Instant, timestamp: u32, payload: T) {
        let ts = i64::from(timestamp);
        self.queue.clear();
        self.queue.push_back((0, payload));
        self.stream = Some(Stream {
            base: ts,
            highest: ts,
            next: 0,
            newest: 0,
            lowest: 0,
            unique: 1,
            phase: Phase::Buffering {
                since: Some(arrival),
            },
            started: false,
            history: 0,
            late_run: 0,
            excess_ticks: 0,
        });
    }

    fn resync(&mut self, arrival: Instant, timestamp: u32, payload: T) {
        self.stats.resyncs += 1;
        self.reset();
        self.start_stream(arrival, timestamp, payload);
    }

    /// Drops the oldest packets while the buffered span exceeds the maximum.
    fn trim(&mut self) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        if s.newest - s.next <= self.max_frames {
            return;
        }
        let new_next = s.newest - self.target_frames;
        while let Some(&(slot, _)) = self.queue.front() {
            if slot >= new_next {
                break;
            }
            self.queue.pop_front();
            self.stats.dropped_overflow += 1;
        }
        s.skip_to(new_next);
        s.started = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn buffer() -> JitterBuffer<u32> {
        JitterBuffer::with_clock_rate(8000).expect("valid config")
    }

    /// A simulation: packets carry their sequence index as payload; records what each tick
    /// played.
    struct Sim {
        jb: JitterBuffer<u32>,
        t0: Instant,
        ts0: u32,
        log: Vec<Pop<u32>>,
        /// (frame index, tick time) of every played frame.
        played_at: Vec<(u32, Duration)>,
    }

    impl Sim {
        fn new(ts0: u32) -> Sim {
            Sim {
                jb: buffer(),
                t0: Instant::now(),
                ts0,
                log: Vec::new(),
                played_at: Vec::new(),
            }
        }

        fn push(&mut self, at_ms: u64, index: u32) {
            let ts = self.ts0.wrapping_add(index.wrapping_mul(160));
            self.jb.push(self.t0 + MS * at_ms as u32, ts, index);
        }

        fn pop(&mut self, at_ms: u64) {
            let result = self.jb.pop(self.t0 + MS * at_ms as u32);
            if let Pop::Frame(i) = result {
                self.played_at.push((i, MS * at_ms as u32));
            }
            self.log.push(result);
        }

        /// Runs `ticks` ticks (at `phase + 20 k` ms), pushing packet `i` at `arrivals[i]` ms.
        fn run(&mut self, arrivals: &[(u64, u32)], ticks: u64, phase: u64) {
            let mut pending: Vec<(u64, u32)> = arrivals.to_vec();
            pending.sort_by_key(|&(t, _)| t);
            let mut next = 0;
            for k in 0..ticks {
                let now = phase + 20 * k;
                while next < pending.len() && pending[next].0 <= now {
                    self.push(pending[next].0, pending[next].1);
                    next += 1;
                }
                self.pop(now);
            }
        }

        fn frames(&self) -> Vec<u32> {
            self.log
                .iter()
                .filter_map(|p| match p {
                    Pop::Frame(i) => Some(*i),
                    _ => None,
                })
                .collect()
        }

        fn count_lost(&self) -> usize {
            self.log.iter().filter(|p| matches!(p, Pop::Lost)).count()
        }

        /// Delay of each played frame: tick time minus its nominal send time (20 ms × index).
        fn delays(&self) -> Vec<Duration> {
            self.played_at
                .iter()
                .map(|&(i, at)| at - MS * (20 * i))
                .collect()
        }
    }

    fn steady(n: u32) -> Vec<(u64, u32)> {
        (0..n).map(|i| (20 * u64::from(i), i)).collect()
    }

    #[test]
    fn in_order_stream_plays_everything_with_the_target_delay() {
        for phase in [0u64, 7, 19] {
            let mut sim = Sim::new(1000);
            sim.run(&steady(100), 120, phase);
            assert_eq!(sim.frames(), (0..100).collect::<Vec<_>>(), "phase {phase}");
            assert_eq!(sim.count_lost(), 0);
            // Added delay: the target plus the tick's phase, for every frame.
            for d in sim.delays() {
                assert_eq!(d, MS * (40 + phase as u32), "phase {phase}");
            }
            let stats = sim.jb.stats();
            assert_eq!(stats.received, 100);
            assert_eq!(stats.played, 100);
            assert_eq!((stats.lost, stats.late, stats.duplicate), (0, 0, 0));
            // After the last frame: one underrun, then nothing.
            assert_eq!(stats.underruns, 1);
            assert_eq!(sim.log.last(), Some(&Pop::Empty));
        }
    }

    #[test]
    fn nothing_before_the_first_packet_or_the_target() {
        let mut jb = buffer();
        let t0 = Instant::now();
        assert_eq!(jb.pop(t0), Pop::Empty);
        jb.push(t0, 0, 0);
        assert_eq!(jb.pop(t0 + MS * 20), Pop::Empty);
        assert!(!jb.is_playing());
        // A single packet plays once it has waited the target delay.
        assert_eq!(jb.pop(t0 + MS * 40), Pop::Frame(0));
        assert!(jb.is_playing());
    }

    #[test]
    fn reordered_packets_play_in_order() {
        let mut arrivals = steady(60);
        // Swap neighbours: 1 before 0, 3 before 2, ... each 10 ms late.
        for pair in arrivals.chunks_mut(2) {
            if let [a, b] = pair {
                std::mem::swap(&mut a.1, &mut b.1);
            }
        }
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 80, 0);
        assert_eq!(sim.frames(), (0..60).collect::<Vec<_>>());
        assert_eq!(sim.count_lost(), 0);
        assert_eq!(sim.jb.stats().late, 0);
    }

    #[test]
    fn a_lost_packet_is_one_lost_frame() {
        let arrivals: Vec<_> = steady(30).into_iter().filter(|&(_, i)| i != 12).collect();
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 40, 0);
        let expected: Vec<u32> = (0..30).filter(|&i| i != 12).collect();
        assert_eq!(sim.frames(), expected);
        assert_eq!(sim.count_lost(), 1);
        // The Lost comes exactly in frame 12's place.
        let pos = sim
            .log
            .iter()
            .position(|p| *p == Pop::Lost)
            .expect("a Lost");
        assert_eq!(sim.log[pos - 1], Pop::Frame(11));
        assert_eq!(sim.log[pos + 1], Pop::Frame(13));
        let stats = sim.jb.stats();
        assert_eq!((stats.lost, stats.concealed), (1, 1));
    }

    #[test]
    fn peek_after_a_gap_shows_the_packet_for_fec() {
        let mut jb = buffer();
        let t0 = Instant::now();
        jb.push(t0, 0, 0);
        jb.push(t0 + MS * 20, 160, 1);
        assert_eq!(jb.pop(t0 + MS * 40), Pop::Frame(0));
        assert_eq!(jb.peek(), Some(&1));
        jb.push(t0 + MS * 60, 480, 3);
        assert_eq!(jb.pop(t0 + MS * 60), Pop::Frame(1));
        assert_eq!(jb.peek(), None);
        assert_eq!(jb.pop(t0 + MS * 80), Pop::Lost);
        assert_eq!(jb.peek(), Some(&3));
        assert_eq!(jb.pop(t0 + MS * 100), Pop::Frame(3));
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut arrivals = steady(30);
        arrivals.extend(steady(30).into_iter().map(|(t, i)| (t + 5, i)));
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 40, 0);
        assert_eq!(sim.frames(), (0..30).collect::<Vec<_>>());
        let stats = sim.jb.stats();
        assert_eq!(stats.duplicate, 30);
        assert_eq!((stats.late, stats.lost), (0, 0));
        // A copy of an already played frame, long after: a duplicate, not late.
        let mut jb = buffer();
        let t0 = Instant::now();
        let mut played = Vec::new();
        for k in 0..6u32 {
            if k < 5 {
                jb.push(t0 + MS * (20 * k), 160 * k, k);
            }
            if let Pop::Frame(i) = jb.pop(t0 + MS * (20 * k)) {
                played.push(i);
            }
        }
        assert_eq!(played, [0, 1, 2, 3]);
        jb.push(t0 + MS * 120, 0, 0);
        assert_eq!(jb.stats().duplicate, 1);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn late_packets_are_dropped_and_counted() {
        // Packet 10 arrives 100 ms late: its slot is concealed, the packet dropped.
        let arrivals: Vec<_> = steady(30)
            .into_iter()
            .map(|(t, i)| if i == 10 { (t + 100, i) } else { (t, i) })
            .collect();
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 40, 0);
        let expected: Vec<u32> = (0..30).filter(|&i| i != 10).collect();
        assert_eq!(sim.frames(), expected);
        let stats = sim.jb.stats();
        assert_eq!(stats.late, 1);
        assert_eq!(stats.concealed, 1);
        // It did arrive, so it is not lost in the RFC 3550 sense.
        assert_eq!(stats.lost, 0);
    }

    #[test]
    fn burst_after_a_stall_returns_to_the_target_delay() {
        // Packets 20..=34 (300 ms) are held back by the network and arrive together at 700 ms.
        let arrivals: Vec<_> = steady(100)
            .into_iter()
            .map(|(t, i)| {
                if (20..=34).contains(&i) {
                    (700, i)
                } else {
                    (t, i)
                }
            })
            .collect();
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 130, 0);
        let frames = sim.frames();
        // In order, never backwards.
        assert!(frames.windows(2).all(|w| w[0] < w[1]), "{frames:?}");
        let stats = sim.jb.stats();
        assert!(stats.underruns >= 1, "{stats:?}");
        assert!(stats.dropped_overflow > 0, "{stats:?}");
        assert_eq!(stats.lost, 0);
        // The last frames wait the target delay again.
        let delays = sim.delays();
        assert_eq!(delays.last(), Some(&(MS * 40)));
        assert!(frames.contains(&99));
        // The delay never exceeded the maximum plus a frame.
        assert!(delays.iter().all(|&d| d <= MS * 240), "{delays:?}");
    }

    #[test]
    fn a_fast_sender_clock_is_caught_up_gently() {
        // The sender's clock runs 1 % fast: a packet every 19.8 ms of ours.
        let arrival_us = |i: u32| u64::from(i) * 19_800;
        let arrivals: Vec<_> = (0..3000u32).map(|i| (arrival_us(i) / 1000, i)).collect();
        let mut sim = Sim::new(0);
        sim.run(&arrivals, 2980, 0);
        let stats = sim.jb.stats();
        assert_eq!(stats.concealed, 0, "{stats:?}");
        // About 1 % of the frames had to go, one at a time.
        assert!((20..=40).contains(&stats.dropped_overflow), "{stats:?}");
        let worst = sim
            .played_at
            .iter()
            .map(|&(i, at)| at.as_micros() as u64 - arrival_us(i))
            .max()
            .unwrap_or(0);
        assert!(worst <= 100_000, "worst delay {worst} µs");
    }

    #[test]
    fn timestamps_wrap_at_u32_max() {
        let ts0 = u32::MAX - 5 * 160 + 1;
        let mut sim = Sim::new(ts0);
        let mut arrivals = steady(20);
        // Reordering right at the wrap: packet 6 arrives before packet 5.
        arrivals[5].1 = 6;
        arrivals[6].1 = 5;
        sim.run(&arrivals, 30, 0);
        assert_eq!(sim.frames(), (0..20).collect::<Vec<_>>());
        assert_eq!(sim.jb.stats().resyncs, 0);
        assert_eq!(sim.jb.stats().lost, 0);
    }

    #[test]
    fn a_large_jump_resyncs() {
        let mut jb = buffer();
        let t0 = Instant::now();
        let mut played = Vec::new();
        for k in 0..20u32 {
            // Packets 0..9 from one timestamp origin, then a jump of an hour.
            let ts = if k < 10 {
                160 * k
            } else {
                8000 * 3600 + 160 * k
            };
            jb.push(t0 + MS * (20 * k), ts, k);
            if let Pop::Frame(i) = jb.pop(t0 + MS * (20 * k)) {
                played.push(i);
            }
        }
        assert_eq!(jb.stats().resyncs, 1);
        // After the jump, buffering starts again: 10 and 11 wait, then 10.. play.
        // 8 and 9 were still buffered at the jump; 10 starts the new stream.
        assert_eq!(
            played,
            [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17]
        );
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn timestamps_restarting_backwards_resync_after_a_few_late_packets() {
        let mut jb = buffer();
        let t0 = Instant::now();
        let mut played = Vec::new();
        for k in 0..60u32 {
            // Frames 30.. restart at timestamp 0 + 160·(k-30) + 800, i.e. 1.2 s in the past.
            let ts = if k < 30 {
                8000 + 160 * k
            } else {
                800 + 160 * (k - 30)
            };
            jb.push(t0 + MS * (20 * k), ts, k);
            if let Pop::Frame(i) = jb.pop(t0 + MS * (20 * k)) {
                played.push(i);
            }
        }
        assert_eq!(jb.stats().resyncs, 1);
        assert!(played.ends_with(&[55, 56, 57]), "{played:?}");
        assert!(u64::from(RESYNC_AFTER_LATE) >= jb.stats().late);
    }

    #[test]
    fn reset_starts_a_new_stream() {
        let mut jb = buffer();
        let t0 = Instant::now();
        jb.push(t0, 5000, 1);
        jb.push(t0 + MS * 20, 5160, 2);
        jb.reset();
        assert!(jb.is_empty());
        assert_eq!(jb.pop(t0 + MS * 100), Pop::Empty);
        jb.push(t0 + MS * 100, 1, 7);
        assert_eq!(jb.pop(t0 + MS * 140), Pop::Frame(7));
    }

    #[test]
    fn a_sender_running_fast_is_trimmed_back() {
        // 30 packets at once: far over the 200 ms maximum.
        let mut jb = buffer();
        let t0 = Instant::now();
        for i in 0..30u32 {
            jb.push(t0, 160 * i, i);
        }
        assert!(jb.buffered() <= MS * 60, "{:?}", jb.buffered());
        assert!(jb.len() <= 3);
        assert_eq!(jb.stats().dropped_overflow, 27);
        assert_eq!(jb.pop(t0), Pop::Frame(27));
        assert_eq!(jb.pop(t0 + MS * 20), Pop::Frame(28));
        // Memory stays bounded whatever the timestamps (within the resync window).
        for i in 0..10_000u32 {
            jb.push(t0, (i * 7919) % 16_000, i);
        }
        assert!(jb.len() <= 12, "{}", jb.len());
    }

    #[test]
    fn one_percent_loss_with_jitter_never_loses_two_frames_in_a_row() {
        // Deterministic: every 100th packet lost, arrival jitter 0-15 ms.
        let arrivals: Vec<_> = (0..2000u32)
            .filter(|i| i % 100 != 37)
            .map(|i| (20 * u64::from(i) + u64::from((i * 7) % 16), i))
            .collect();
        let mut sim = Sim::new(12345);
        sim.run(&arrivals, 2010, 3);
        let lost_runs = sim
            .log
            .windows(2)
            .filter(|w| w[0] == Pop::Lost && w[1] == Pop::Lost)
            .count();
        assert_eq!(lost_runs, 0);
        let stats = sim.jb.stats();
        assert_eq!(stats.lost, 20);
        assert_eq!(stats.concealed, 20);
        assert_eq!(stats.underruns, 1); // only after the end
        assert_eq!(stats.played, 1980);
    }

    #[test]
    fn config_is_checked() {
        assert!(JitterBuffer::<u8>::with_clock_rate(48000).is_ok());
        assert!(matches!(
            JitterBuffer::<u8>::with_clock_rate(0),
            Err(JitterConfigError::Frame { .. })
        ));
        assert!(matches!(
            JitterBuffer::<u8>::with_clock_rate(8001),
            Err(JitterConfigError::Frame { .. })
        ));
        let mut c = JitterConfig::new(8000);
        c.max_delay = MS * 20;
        assert_eq!(
            JitterBuffer::<u8>::new(c).err(),
            Some(JitterConfigError::Delays)
        );
    }

    #[test]
    fn works_at_48_khz_with_byte_payloads() {
        let mut jb: JitterBuffer<Vec<u8>> = JitterBuffer::with_clock_rate(48000).expect("config");
        let t0 = Instant::now();
        for i in 0..3u32 {
            jb.push(t0 + MS * (20 * i), 960 * i, vec![i as u8; 3]);
        }
        assert_eq!(jb.pop(t0 + MS * 40), Pop::Frame(vec![0; 3]));
        assert_eq!(jb.pop(t0 + MS * 60), Pop::Frame(vec![1; 3]));
    }
}
