//! DTMF from the caller: RFC 4733 telephone events and, for legs without them, in-band tones.
//!
//! Every key press reaches the voice menu exactly once as an [`ivr::Digit`](super::ivr::Digit),
//! whichever way the trunk sends it. Three parts:
//!
//! # [`TelephoneEventReceiver`]: RFC 4733 events
//!
//! Feed it every RTP packet of the negotiated `telephone-event` payload type with
//! [`TelephoneEventReceiver::on_packet`]`(rtp timestamp, marker bit, payload)`. It returns
//! `Ok(Some(digit))` once per key press, at the first packet of the event that arrives (no need
//! to wait for the end: the menu reacts at once), and `Ok(None)` for every further packet of the
//! same event: the updates while the key is held, the end packet and its retransmissions, and
//! segments of an event longer than the 16-bit duration field. One event is one RTP timestamp
//! (RFC 4733 §2.5.1.2): a new timestamp is a new press, including the same key pressed again.
//! The last [`RECENT_EVENTS`] timestamps are remembered, so a packet of an earlier event that
//! arrives late or twice never counts again.
//!
//! Events 0-9, 10 (`*`), 11 (`#`) and 12-15 (`A`-`D`) are key presses. A payload shorter than
//! four bytes is [`DtmfError::Truncated`]; any other event code (flash, the tones of RFC 4734)
//! is [`DtmfError::NotADigit`]. Both are values, never panics; the driver logs them at debug
//! level and carries on. Only the first event block of a payload is read (redundant blocks of
//! RFC 2198 are not used by trunks for DTMF). Call [`TelephoneEventReceiver::reset`] when the
//! stream's SSRC changes.
//!
//! # [`InbandDetector`]: tones in the audio (Goertzel)
//!
//! For legs that did not negotiate `telephone-event` (or send the tones in the audio anyway),
//! [`InbandDetector::process`] takes the decoded 8 kHz audio (any number of samples per call;
//! the driver passes each 20 ms frame of 160, decoded or concealed, in playout order) and
//! returns the digits completed in it. For an Opus leg, downsample to 8 kHz first
//! ([`super::resample::Downsampler`]).
//!
//! The audio is cut into blocks of [`BLOCK_SAMPLES`] (102 samples, 12.75 ms); each block is
//! measured with the Goertzel algorithm at the eight DTMF frequencies (697, 770, 852, 941 Hz;
//! 1209, 1336, 1477, 1633 Hz) and counts as a key when all of these hold:
//!
//! - **Level:** the strongest low-group (row) and high-group (column) tones are each at least
//!   [`MIN_TONE_LEVEL_DBM0`] (-36 dBm0; 0 dBm0 is a sine of peak [`ZERO_DBM0_PEAK`] in 16-bit
//!   PCM, the G.711 reference). Keys are specified from -3 to -25 dBm0 per tone; the margin
//!   covers twist and partial blocks.
//! - **Twist:** the high-group tone is at most [`MAX_REVERSE_TWIST_DB`] (4 dB) stronger than the
//!   low-group tone, and at most [`MAX_NORMAL_TWIST_DB`] (8 dB) weaker (lines attenuate the high
//!   group; the usual receiver limits).
//! - **Dominance:** each of the two tones is [`RELATIVE_PEAK_DB`] (8 dB) above every other tone
//!   of its group, and the two together carry at least [`MIN_TONE_FRACTION`] (50 %) of the
//!   block's energy. Speech, music and noise spread their energy and fail this.
//! - **Harmonics:** the second harmonic of the high-group tone is at least
//!   [`MIN_HARMONIC_REJECTION_DB`] (10 dB) below it. Pure DTMF has no harmonics; voiced speech
//!   does. (The low group's harmonics fall between the high-group tones, where a 102-sample block
//!   cannot tell them apart from the high tone's own energy, so they are not tested.)
//! - **Frequency:** each tone is within [`MAX_FREQUENCY_DEVIATION_PERCENT`] (2.5 %) of its
//!   nominal frequency, measured from the phase advance between the block's two halves. ITU-T
//!   Q.24 asks to accept 1.5 % and reject 3.5 %; the check mostly rejects voiced speech whose
//!   harmonics happen to lie near a row and a column frequency at once.
//! - **Steadiness:** the block's two halves differ in level by at most
//!   [`MAX_HALF_BLOCK_IMBALANCE_DB`] (3 dB), so a block the tone only partly fills (its start
//!   or end, a short burst) does not count.
//!
//! A key is reported when the same key was seen in [`MIN_ON_BLOCKS`] (2) consecutive blocks
//! (25.5 ms of clean tone): every tone of 40 ms or more contains two whole blocks and is
//! detected; bursts under 19 ms never are (each of the two blocks needs at least three quarters
//! of its samples to be tone to pass the steadiness test).
//! Once reported, the key must be absent for [`MIN_OFF_BLOCKS`] (3) consecutive blocks (38 ms)
//! before any key is reported again; the blocks that straddle a pause already fail the tests,
//! so a pause of 40 ms separates two presses, and a held key, or a held key with a dropout of
//! up to 10 ms, is one digit. A single tone (a 1000 Hz test tone, a 500 Hz one, one DTMF
//! frequency alone) never counts: the other group's tone is missing, so the level, twist and
//! energy-share tests fail.
//!
//! # [`DtmfInput`]: both sources for one call
//!
//! [`DtmfInput`] holds a receiver and a detector. Its in-band detection is on until the first
//! valid RFC 4733 packet arrives ([`DtmfInput::on_telephone_event`]), then off for the rest of
//! the call: a phone that sends events may also leave the tones in the audio, and one press
//! must never count twice. If the in-band detector reported the very key of that first event
//! within the last [`SWITCH_OVER_WINDOW_SAMPLES`] of audio (the same press, seen in the audio a
//! moment before its event packet arrived), the event is not reported again.
//!
//! Written here: the RFC 4733 rules are a dozen lines, and no maintained Rust crate offers a
//! DTMF detector with twist, harmonic and timing checks.

use super::ivr::Digit;

/// How many recent event timestamps the receiver remembers to ignore late or repeated packets.
pub const RECENT_EVENTS: usize = 16;

/// Sample rate of the audio [`InbandDetector`] expects.
pub const INBAND_SAMPLE_RATE: u32 = 8000;
/// Samples per analysis block (12.75 ms at 8 kHz).
pub const BLOCK_SAMPLES: usize = 102;
/// Peak amplitude (16-bit PCM) of a 0 dBm0 sine: G.711's overload point is +3.14 dBm0.
pub const ZERO_DBM0_PEAK: f32 = 22_800.0;
/// Weakest tone (each of the two) that counts, in dBm0.
pub const MIN_TONE_LEVEL_DBM0: f32 = -36.0;
/// Largest accepted level of the low-group tone above the high-group tone, in dB.
pub const MAX_NORMAL_TWIST_DB: f32 = 8.0;
/// Largest accepted level of the high-group tone above the low-group tone, in dB.
pub const MAX_REVERSE_TWIST_DB: f32 = 4.0;
/// How far each detected tone must stand above the other tones of its group, in dB.
pub const RELATIVE_PEAK_DB: f32 = 8.0;
/// Share of the block's energy the two tones must carry together.
pub const MIN_TONE_FRACTION: f32 = 0.5;
/// How far the high-group tone's second harmonic must stay below the tone, in dB.
pub const MIN_HARMONIC_REJECTION_DB: f32 = 10.0;
/// Largest accepted deviation of a tone from its nominal frequency, in percent.
pub const MAX_FREQUENCY_DEVIATION_PERCENT: f32 = 2.5;
/// Largest level difference between the two halves of a block, in dB.
pub const MAX_HALF_BLOCK_IMBALANCE_DB: f32 = 3.0;
/// Consecutive blocks with the same key before it is reported (25.5 ms).
pub const MIN_ON_BLOCKS: u32 = 2;
/// Consecutive blocks without a key before another key can be reported (about 38 ms).
pub const MIN_OFF_BLOCKS: u32 = 3;
/// Audio (in 8 kHz samples, 500 ms) within which an in-band digit and the first RFC 4733 event
/// of the same key count as one press in [`DtmfInput`].
pub const SWITCH_OVER_WINDOW_SAMPLES: u64 = 4000;

/// Low-group (row) frequencies in Hz.
const ROW_FREQS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
const COL_FREQS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// Keys by row and column.
const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Hash, Digit::D],
];

/// A telephone-event payload that does not carry a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    /// The payload is shorter than the 4 bytes of an event block.
    #[error("telephone-event payload of {len} bytes (at least 4 needed)")]
    Truncated {
        /// Length of the payload.
        len: usize,
    },
    /// The event code is not one of the 16 DTMF keys (0-15).
    #[error("telephone-event {event} is not a DTMF key")]
    NotADigit {
        /// The event code.
        event: u8,
    },
}

/// The key of an RFC 4733 event code: 0-9, 10 = `*`, 11 = `#`, 12-15 = `A`-`D`.
pub fn digit_of_event(event: u8) -> Option<Digit> {
    Some(match event {
        0 => Digit::D0,
        1 => Digit::D1,
        2 => Digit::D2,
        3 => Digit::D3,
        4 => Digit::D4,
        5 => Digit::D5,
        6 => Digit::D6,
        7 => Digit::D7,
        8 => Digit::D8,
        9 => Digit::D9,
        10 => Digit::Star,
        11 => Digit::Hash,
        12 => Digit::A,
        13 => Digit::B,
        14 => Digit::C,
        15 => Digit::D,
        _ => return None,
    })
}

/// One RFC 4733 event block (the first four bytes of a telephone-event payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 are DTMF keys).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume in -dBm0 (0-63); informational.
    pub volume: u8,
    /// Duration so far in RTP timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Reads the first event block of `payload`.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::Truncated { len: payload.len() }),
        }
    }
}

/// The event the receiver is in, to tell a long event's next segment from a new press.
#[derive(Debug, Clone, Copy)]
struct CurrentEvent {
    timestamp: u32,
    event: u8,
    ended: bool,
}

/// RFC 4733 receiver for one RTP stream: one digit per key press. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct TelephoneEventReceiver {
    recent: [Option<u32>; RECENT_EVENTS],
    next_slot: usize,
    current: Option<CurrentEvent>,
}

impl TelephoneEventReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> TelephoneEventReceiver {
        TelephoneEventReceiver::default()
    }

    /// Forgets all events (a new RTP stream).
    pub fn reset(&mut self) {
        *self = TelephoneEventReceiver::default();
    }

    /// Takes one telephone-event packet: its RTP timestamp, marker bit and payload. Returns the
    /// key when this packet is the first seen of a new press, `Ok(None)` for further packets of
    /// a press, and an error for a payload that is not a DTMF event.
    pub fn on_packet(
        &mut self,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Digit>, DtmfError> {
        let block = TelephoneEvent::parse(payload)?;
        let digit =
            digit_of_event(block.event).ok_or(DtmfError::NotADigit { event: block.event })?;
        // A packet with the marker bit starts a press (RFC 4733 §2.5.1.1). Seen at a timestamp
        // of an earlier press that has ended (or of another press), it is a new press of a
        // sender that reuses timestamps (replayed recordings do); while the press at that
        // timestamp goes on, it is a retransmitted start.
        let fresh_press = marker
            && !self
                .current
                .is_some_and(|c| c.timestamp == timestamp && !c.ended);
        if self.recent.contains(&Some(timestamp)) && !fresh_press {
            if let Some(current) = self.current.as_mut() {
                if current.timestamp == timestamp && block.end {
                    current.ended = true;
                }
            }
            return Ok(None);
        }
        // A long event continues in a new segment with a new timestamp (RFC 4733 §2.5.2.3):
        // same key, the previous segment not ended, no marker, about 65535 units later.
        let continuation = self.current.is_some_and(|c| {
            let gap = timestamp.wrapping_sub(c.timestamp);
            !marker && !c.ended && c.event == block.event && gap > 0 && gap <= 0x2_0000
        });
        self.remember(timestamp);
        self.current = Some(CurrentEvent {
            timestamp,
            event: block.event,
            ended: block.end,
        });
        Ok(if continuation { None } else { Some(digit) })
    }

    fn remember(&mut self, timestamp: u32) {
        if let Some(slot) = self.recent.get_mut(self.next_slot) {
            *slot = Some(timestamp);
        }
        self.next_slot = (self.next_slot + 1) % RECENT_EVENTS;
    }
}

/// Goertzel coefficient `2 cos(2π f / fs)` for 8 kHz.
fn goertzel_coeff(freq: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * freq / INBAND_SAMPLE_RATE as f32).cos()
}

/// Energy of the component at the coefficient's frequency, on the same scale as the block's
/// sum of squares (a sine of amplitude `a` over `n` samples gives about `a² n / 2`).
fn goertzel_energy(block: &[f32], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in block {
        let s = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0) / block.len().max(1) as f32
}

/// Frequency offset (in Hz) of the component at `freq` in `block`: the phase advance of that
/// component from the first half of the block to the second.
fn frequency_offset(block: &[f32], freq: f32) -> f32 {
    let half = block.len() / 2;
    let w = 2.0 * std::f32::consts::PI * freq / INBAND_SAMPLE_RATE as f32;
    let dft = |range: std::ops::Range<usize>| {
        let (mut re, mut im) = (0f32, 0f32);
        for (n, &x) in block.iter().enumerate().take(range.end).skip(range.start) {
            let phase = w * n as f32;
            re += x * phase.cos();
            im -= x * phase.sin();
        }
        (re, im)
    };
    let (r1, i1) = dft(0..half);
    let (r2, i2) = dft(half..2 * half);
    // arg(X2 · conj(X1)) = advance over `half` samples.
    let advance = (i2 * r1 - r2 * i1).atan2(r2 * r1 + i2 * i1);
    advance / half.max(1) as f32 * INBAND_SAMPLE_RATE as f32 / (2.0 * std::f32::consts::PI)
}

fn db_to_power_ratio(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

/// In-band DTMF detector for 8 kHz audio. See the module docs for the tests it applies.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    block: [f32; BLOCK_SAMPLES],
    filled: usize,
    row_coeffs: [f32; 4],
    col_coeffs: [f32; 4],
    col_harmonic_coeffs: [f32; 4],
    min_tone_energy: f32,
    /// The key of the current run of blocks and how many blocks it lasted.
    candidate: Option<Digit>,
    run: u32,
    /// A key was reported and has not been released yet.
    latched: bool,
    /// Consecutive blocks without a key.
    quiet: u32,
}

impl Default for InbandDetector {
    fn default() -> Self {
        InbandDetector::new()
    }
}

impl InbandDetector {
    /// A detector with the thresholds of the module docs.
    pub fn new() -> InbandDetector {
        let min_amplitude = ZERO_DBM0_PEAK * 10f32.powf(MIN_TONE_LEVEL_DBM0 / 20.0);
        InbandDetector {
            block: [0.0; BLOCK_SAMPLES],
            filled: 0,
            row_coeffs: ROW_FREQS.map(goertzel_coeff),
            col_coeffs: COL_FREQS.map(goertzel_coeff),
            col_harmonic_coeffs: COL_FREQS.map(|f| goertzel_coeff(2.0 * f)),
            min_tone_energy: min_amplitude * min_amplitude * BLOCK_SAMPLES as f32 / 2.0,
            candidate: None,
            run: 0,
            latched: false,
            quiet: MIN_OFF_BLOCKS,
        }
    }

    /// Forgets the audio seen so far.
    pub fn reset(&mut self) {
        *self = InbandDetector::new();
    }

    /// Takes the next 8 kHz samples; returns the keys completed in them (usually none, at most
    /// one per 20 ms frame).
    pub fn process(&mut self, samples: &[i16]) -> Vec<Digit> {
        let mut digits = Vec::new();
        for &sample in samples {
            if let Some(slot) = self.block.get_mut(self.filled) {
                *slot = f32::from(sample);
            }
            self.filled += 1;
            if self.filled >= BLOCK_SAMPLES {
                self.filled = 0;
                let key = self.classify_block();
                if let Some(digit) = self.step(key) {
                    digits.push(digit);
                }
            }
        }
        digits
    }

    /// Applies the timing rules to one block's result.
    fn step(&mut self, key: Option<Digit>) -> Option<Digit> {
        match key {
            Some(digit) => {
                if self.candidate == Some(digit) {
                    self.run = self.run.saturating_add(1);
                } else {
                    self.candidate = Some(digit);
                    self.run = 1;
                }
                self.quiet = 0;
                if !self.latched && self.run >= MIN_ON_BLOCKS {
                    self.latched = true;
                    return Some(digit);
                }
                None
            }
            None => {
                self.candidate = None;
                self.run = 0;
                self.quiet = self.quiet.saturating_add(1);
                if self.quiet >= MIN_OFF_BLOCKS {
                    self.latched = false;
                }
                None
            }
        }
    }

    /// The key this block carries, if it passes every test.
    fn classify_block(&self) -> Option<Digit> {
        let block = &self.block[..];
        let (first, second) = block.split_at(BLOCK_SAMPLES / 2);
        let first: f32 = first.iter().map(|x| x * x).sum();
        let second: f32 = second.iter().map(|x| x * x).sum();
        let total = first + second;
        if total <= 0.0
            || first.max(second)
                > first.min(second) * db_to_power_ratio(MAX_HALF_BLOCK_IMBALANCE_DB)
        {
            return None;
        }
        let rows = self.row_coeffs.map(|c| goertzel_energy(block, c));
        let cols = self.col_coeffs.map(|c| goertzel_energy(block, c));
        let (row, row_energy) = strongest(&rows);
        let (col, col_energy) = strongest(&cols);

        if row_energy < self.min_tone_energy || col_energy < self.min_tone_energy {
            return None;
        }
        if col_energy > row_energy * db_to_power_ratio(MAX_REVERSE_TWIST_DB)
            || row_energy > col_energy * db_to_power_ratio(MAX_NORMAL_TWIST_DB)
        {
            return None;
        }
        let peak = db_to_power_ratio(RELATIVE_PEAK_DB);
        let dominates = |energies: &[f32; 4], best: usize, best_energy: f32| {
            energies
                .iter()
                .enumerate()
                .all(|(i, &e)| i == best || e * peak <= best_energy)
        };
        if !dominates(&rows, row, row_energy) || !dominates(&cols, col, col_energy) {
            return None;
        }
        if row_energy + col_energy < MIN_TONE_FRACTION * total {
            return None;
        }
        let harmonic_coeff = *self.col_harmonic_coeffs.get(col)?;
        let harmonic = goertzel_energy(block, harmonic_coeff);
        if harmonic * db_to_power_ratio(MIN_HARMONIC_REJECTION_DB) > col_energy {
            return None;
        }
        for freq in [*ROW_FREQS.get(row)?, *COL_FREQS.get(col)?] {
            if frequency_offset(block, freq).abs() > freq * MAX_FREQUENCY_DEVIATION_PERCENT / 100.0
            {
                return None;
            }
        }
        KEYPAD.get(row)?.get(col).copied()
    }
}

/// Index and energy of the largest of four energies.
fn strongest(energies: &[f32; 4]) -> (usize, f32) {
    let mut best = (0, energies[0]);
    for (i, &e) in energies.iter().enumerate().skip(1) {
        if e > best.1 {
            best = (i, e);
        }
    }
    best
}

/// Both DTMF sources of one call; in-band detection stops at the first RFC 4733 event. See the
/// module docs.
#[derive(Debug, Clone, Default)]
pub struct DtmfInput {
    events: TelephoneEventReceiver,
    inband: InbandDetector,
    events_seen: bool,
    /// 8 kHz samples passed to the in-band detector so far.
    samples: u64,
    /// The last in-band digit and the sample count when it was reported.
    last_inband: Option<(Digit, u64)>,
}

impl DtmfInput {
    /// Both sources on.
    pub fn new() -> DtmfInput {
        DtmfInput::default()
    }

    /// Whether in-band detection is still on (no RFC 4733 event seen yet).
    pub fn inband_active(&self) -> bool {
        !self.events_seen
    }

    /// Takes one telephone-event packet (see [`TelephoneEventReceiver::on_packet`]). Any valid
    /// event packet, even one that is not a key, switches in-band detection off for the call.
    pub fn on_telephone_event(
        &mut self,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<Option<Digit>, DtmfError> {
        let result = self.events.on_packet(timestamp, marker, payload);
        let valid_packet = !matches!(result, Err(DtmfError::Truncated { .. }));
        let first = valid_packet && !self.events_seen;
        if valid_packet {
            self.events_seen = true;
        }
        let digit = result?;
        if first {
            if let (Some(digit), Some((seen, at))) = (digit, self.last_inband) {
                if seen == digit && self.samples.saturating_sub(at) <= SWITCH_OVER_WINDOW_SAMPLES {
                    return Ok(None);
                }
            }
        }
        Ok(digit)
    }

    /// Takes the next decoded 8 kHz audio of the call; returns in-band keys while in-band
    /// detection is on, nothing after.
    pub fn on_audio(&mut self, samples: &[i16]) -> Vec<Digit> {
        if self.events_seen {
            return Vec::new();
        }
        let digits = self.inband.process(samples);
        self.samples = self.samples.saturating_add(samples.len() as u64);
        if let Some(&last) = digits.last() {
            self.last_inband = Some((last, self.samples));
        }
        digits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::g711::Law;
    use crate::core::rtp;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ALL_KEYS: &str = "123A456B789C*0#D";

    fn digits_to_string(digits: &[Digit]) -> String {
        digits.iter().map(|d| d.to_char()).collect()
    }

    fn row_col(key: char) -> (f32, f32) {
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, digit) in row.iter().enumerate() {
                if digit.to_char() == key {
                    return (ROW_FREQS[r], COL_FREQS[c]);
                }
            }
        }
        panic!("no key {key}");
    }

    fn amplitude(dbm0: f32) -> f32 {
        ZERO_DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
    }

    /// Appends `ms` of a dual tone (levels per tone in dBm0) to `out`.
    fn push_tone(out: &mut Vec<f32>, key: char, low_dbm0: f32, high_dbm0: f32, ms: usize) {
        let (fr, fc) = row_col(key);
        push_pair(out, fr, fc, low_dbm0, high_dbm0, ms);
    }

    fn push_pair(out: &mut Vec<f32>, f1: f32, f2: f32, l1: f32, l2: f32, ms: usize) {
        let start = out.len();
        let (a1, a2) = (amplitude(l1), amplitude(l2));
        for n in 0..ms * 8 {
            let t = (start + n) as f32 / 8000.0;
            let w = 2.0 * std::f32::consts::PI * t;
            out.push(a1 * (w * f1).sin() + a2 * (w * f2 + 0.7).sin());
        }
    }

    fn push_silence(out: &mut Vec<f32>, ms: usize) {
        out.extend(std::iter::repeat_n(0.0, ms * 8));
    }

    /// Appends each key of `keys` as `ms.0` of a dual tone (levels per tone in dBm0, both
    /// frequencies times `deviation`) followed by `ms.1` of silence.
    fn push_keys(
        out: &mut Vec<f32>,
        keys: &str,
        (low_dbm0, high_dbm0): (f32, f32),
        deviation: f32,
        (tone_ms, pause_ms): (usize, usize),
    ) {
        for key in keys.chars() {
            let (fr, fc) = row_col(key);
            push_pair(
                out,
                fr * deviation,
                fc * deviation,
                low_dbm0,
                high_dbm0,
                tone_ms,
            );
            push_silence(out, pause_ms);
        }
    }

    fn to_pcm(signal: &[f32]) -> Vec<i16> {
        signal
            .iter()
            .map(|&x| x.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }

    /// Runs the detector over `signal` in 20 ms frames.
    fn detect(signal: &[f32]) -> String {
        let pcm = to_pcm(signal);
        let mut detector = InbandDetector::new();
        let mut found = Vec::new();
        for frame in pcm.chunks(160) {
            found.extend(detector.process(frame));
        }
        digits_to_string(&found)
    }

    /// Hands `pcm` to `input` in 20 ms frames: the digits found in it.
    fn input_audio(input: &mut DtmfInput, pcm: &[i16]) -> String {
        let mut found = Vec::new();
        for frame in pcm.chunks(160) {
            found.extend(input.on_audio(frame));
        }
        digits_to_string(&found)
    }

    /// Hands the telephone-event payloads `packets` (marker bit, payload) of the event at
    /// `timestamp` to `rx`, each of which must be valid: the digits they gave.
    fn receive_event(
        rx: &mut TelephoneEventReceiver,
        timestamp: u32,
        packets: impl IntoIterator<Item = (bool, [u8; 4])>,
    ) -> Vec<Digit> {
        packets
            .into_iter()
            .filter_map(|(marker, payload)| {
                rx.on_packet(timestamp, marker, &payload).expect("valid")
            })
            .collect()
    }

    fn noise(rng: &mut StdRng, samples: usize, rms: f32) -> Vec<f32> {
        // Sum of uniforms: close enough to Gaussian, deterministic.
        (0..samples)
            .map(|_| {
                let s: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
                s * rms * (3.0f32 / 4.0).sqrt()
            })
            .collect()
    }

    #[test]
    fn event_codes_map_to_keys() {
        assert_eq!(
            (0..16)
                .map(|e| digit_of_event(e).map(|d| d.to_char()).unwrap_or('?'))
                .collect::<String>(),
            "0123456789*#ABCD"
        );
        assert_eq!(digit_of_event(16), None);
    }

    #[test]
    fn one_digit_per_event_with_updates_and_end_retransmissions() {
        let mut rx = TelephoneEventReceiver::new();
        let mut got = Vec::new();
        // Key 5: start with marker, updates, three end packets; then key 5 again (new
        // timestamp), then key #.
        for (ts, press) in [(1000u32, 5u8), (3000, 5), (5000, 11)] {
            let updates = (0..6u16).map(|i| {
                let duration = (i * 160).to_be_bytes();
                (i == 0, [press, 0x0A, duration[0], duration[1]])
            });
            let ends = [(false, [press, 0x8A, 0x04, 0x00]); 3];
            got.extend(receive_event(&mut rx, ts, updates.chain(ends)));
        }
        assert_eq!(digits_to_string(&got), "55#");
    }

    #[test]
    fn late_and_reordered_packets_of_old_events_do_not_repeat() {
        let mut rx = TelephoneEventReceiver::new();
        assert_eq!(
            rx.on_packet(100, true, &[1, 0x0A, 0, 160]),
            Ok(Some(Digit::D1))
        );
        assert_eq!(
            rx.on_packet(900, true, &[2, 0x0A, 0, 160]),
            Ok(Some(Digit::D2))
        );
        // A late end packet of the first event after the second began.
        assert_eq!(rx.on_packet(100, false, &[1, 0x8A, 3, 0]), Ok(None));
        assert_eq!(rx.on_packet(900, false, &[2, 0x8A, 3, 0]), Ok(None));
    }

    /// A sender that reuses RTP timestamps (sipp replaying the same recording for each press of
    /// a key): each press starts with the marker bit after the earlier one ended, so each counts;
    /// a retransmitted start while the press goes on does not.
    #[test]
    fn replayed_presses_with_reused_timestamps_each_count() {
        let mut rx = TelephoneEventReceiver::new();
        let mut got = Vec::new();
        for (ts, key) in [(13280u32, 1u8), (23200, 2), (13280, 1), (13280, 1)] {
            // The start packet is sent twice.
            let updates = (0..4u8).map(|i| (i < 2, [key, 0x0A, 0, i * 40]));
            let ends = [(false, [key, 0x8A, 1, 0]); 3];
            got.extend(receive_event(&mut rx, ts, updates.chain(ends)));
        }
        assert_eq!(digits_to_string(&got), "1211");
    }

    #[test]
    fn lost_start_packets_still_give_the_digit_once() {
        let mut rx = TelephoneEventReceiver::new();
        // Only the end packets arrive.
        assert_eq!(
            rx.on_packet(7, false, &[9, 0x8A, 6, 0]),
            Ok(Some(Digit::D9))
        );
        assert_eq!(rx.on_packet(7, false, &[9, 0x8A, 6, 0]), Ok(None));
    }

    #[test]
    fn long_event_segments_are_one_press() {
        let mut rx = TelephoneEventReceiver::new();
        assert_eq!(
            rx.on_packet(0xFFFF_0000, true, &[0, 0x0A, 0xFF, 0xFF]),
            Ok(Some(Digit::D0))
        );
        // Next segment: timestamp + 0xFFFF (wrapping), no marker, same key.
        let next = 0xFFFF_0000u32.wrapping_add(0xFFFF);
        assert_eq!(rx.on_packet(next, false, &[0, 0x0A, 0, 160]), Ok(None));
        assert_eq!(rx.on_packet(next, false, &[0, 0x8A, 1, 0]), Ok(None));
        // The same key again later (ended before, marker set) is a new press.
        assert_eq!(
            rx.on_packet(next.wrapping_add(8000), true, &[0, 0x0A, 0, 0]),
            Ok(Some(Digit::D0))
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut rx = TelephoneEventReceiver::new();
        assert_eq!(
            rx.on_packet(1, true, &[]),
            Err(DtmfError::Truncated { len: 0 })
        );
        assert_eq!(
            rx.on_packet(1, true, &[1, 0x0A, 0]),
            Err(DtmfError::Truncated { len: 3 })
        );
        assert_eq!(
            rx.on_packet(1, true, &[16, 0x0A, 0, 0]),
            Err(DtmfError::NotADigit { event: 16 })
        );
        assert_eq!(
            rx.on_packet(1, true, &[255, 0xFF, 0xFF, 0xFF]),
            Err(DtmfError::NotADigit { event: 255 })
        );
        // None of that consumed timestamp 1: a valid event there still counts.
        assert_eq!(rx.on_packet(1, true, &[4, 0x0A, 0, 0]), Ok(Some(Digit::D4)));
        // Arbitrary bytes never panic.
        let mut rng = StdRng::seed_from_u64(4733);
        for _ in 0..5000 {
            let len = rng.gen_range(0..12);
            let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = rx.on_packet(rng.gen(), rng.gen(), &payload);
        }
    }

    /// Telephone-event packets (timestamp, marker, payload) of a pcap capture: Ethernet, IPv4,
    /// UDP, RTP. Test-only: enough of libpcap's format for sipp's captures.
    fn pcap_rtp_packets(data: &[u8]) -> Vec<(u8, u32, bool, Vec<u8>)> {
        let magic = u32::from_le_bytes(data[0..4].try_into().expect("header"));
        let little = match magic {
            0xA1B2_C3D4 | 0xA1B2_3C4D => true,
            0xD4C3_B2A1 | 0x4D3C_B2A1 => false,
            other => panic!("not a pcap file (magic {other:#x})"),
        };
        let u32_at = |b: &[u8], at: usize| {
            let bytes: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
            if little {
                u32::from_le_bytes(bytes)
            } else {
                u32::from_be_bytes(bytes)
            }
        };
        assert_eq!(u32_at(data, 20), 1, "link type Ethernet");
        let mut packets = Vec::new();
        let mut at = 24;
        while at + 16 <= data.len() {
            let incl = u32_at(data, at + 8) as usize;
            let frame = &data[at + 16..at + 16 + incl];
            at += 16 + incl;
            let mut eth = 14;
            let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
            if ethertype == 0x8100 {
                ethertype = u16::from_be_bytes([frame[16], frame[17]]);
                eth += 4;
            }
            if ethertype != 0x0800 {
                continue;
            }
            let ip = &frame[eth..];
            let ihl = usize::from(ip[0] & 0x0F) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[9] != 17 {
                continue;
            }
            let udp = &ip[ihl..total];
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            let packet = rtp::parse(&udp[8..udp_len]).expect("RTP in the capture");
            packets.push((
                packet.payload_type,
                packet.timestamp,
                packet.marker,
                packet.payload.to_vec(),
            ));
        }
        packets
    }

    #[test]
    fn sipp_captures_yield_each_digit_once() {
        let dir = std::path::Path::new("/usr/share/sip-tester");
        assert!(
            dir.is_dir(),
            "{} is missing: install sip-tester (apt-get install sip-tester), whose RFC 2833 \
             DTMF captures this test replays",
            dir.display()
        );
        let files = [
            ("0", '0'),
            ("1", '1'),
            ("2", '2'),
            ("3", '3'),
            ("4", '4'),
            ("5", '5'),
            ("6", '6'),
            ("7", '7'),
            ("8", '8'),
            ("9", '9'),
            ("star", '*'),
            ("pound", '#'),
        ];
        for (name, expected) in files {
            let path = dir.join(format!("dtmf_2833_{name}.pcap"));
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (install sip-tester)", path.display()));
            let packets = pcap_rtp_packets(&data);
            assert!(
                packets.len() >= 3,
                "{}: {} packets",
                path.display(),
                packets.len()
            );
            let mut rx = TelephoneEventReceiver::new();
            let mut input = DtmfInput::new();
            let mut from_rx = Vec::new();
            let mut from_input = Vec::new();
            for (pt, ts, marker, payload) in &packets {
                assert_eq!(*pt, 101, "sipp's telephone-event payload type");
                if let Some(d) = rx.on_packet(*ts, *marker, payload).expect("valid event") {
                    from_rx.push(d);
                }
                if let Some(d) = input
                    .on_telephone_event(*ts, *marker, payload)
                    .expect("valid")
                {
                    from_input.push(d);
                }
            }
            assert_eq!(digits_to_string(&from_rx), expected.to_string(), "{name}");
            assert_eq!(
                digits_to_string(&from_input),
                expected.to_string(),
                "{name}"
            );
            assert!(!input.inband_active());
        }
    }

    #[test]
    fn all_keys_at_all_levels_with_twist_once_each() {
        // Per-tone levels (low group, high group) from -3 to -25 dBm0; twist: none, high group
        // 2 dB above (a phone's pre-emphasis) and 6 dB below (line loss) the low group.
        let levels = [
            (-3.0f32, -3.0f32),
            (-5.0, -3.0),
            (-3.0, -9.0),
            (-10.0, -10.0),
            (-12.0, -10.0),
            (-10.0, -16.0),
            (-18.0, -18.0),
            (-20.0, -18.0),
            (-18.0, -24.0),
            (-25.0, -25.0),
            (-25.0, -23.0),
            (-19.0, -25.0),
        ];
        for (low, high) in levels {
            let mut signal = Vec::new();
            push_silence(&mut signal, 50);
            push_keys(&mut signal, ALL_KEYS, (low, high), 1.0, (80, 80));
            assert_eq!(
                detect(&signal),
                ALL_KEYS,
                "low {low} dBm0, high {high} dBm0"
            );
        }
    }

    #[test]
    fn through_g711_and_off_nominal_frequency() {
        // Each key at -15 dBm0, 1.5 % off frequency (Q.24's tolerance), through A-law.
        for deviation in [0.985f32, 1.015] {
            let mut signal = Vec::new();
            push_keys(&mut signal, ALL_KEYS, (-15.0, -15.0), deviation, (70, 60));
            let coded: Vec<f32> = to_pcm(&signal)
                .iter()
                .map(|&s| f32::from(Law::ALaw.decode(Law::ALaw.encode(s))))
                .collect();
            assert_eq!(detect(&coded), ALL_KEYS, "deviation {deviation}");
        }
    }

    #[test]
    fn held_key_is_one_digit_and_short_pauses_separate() {
        let mut signal = Vec::new();
        push_tone(&mut signal, '7', -10.0, -10.0, 2000);
        push_silence(&mut signal, 40);
        // Fast dialing: 55 ms tones, 55 ms pauses.
        push_keys(&mut signal, "0815", (-12.0, -10.0), 1.0, (55, 55));
        // The same key twice with a 55 ms pause is two presses.
        push_tone(&mut signal, '9', -10.0, -10.0, 60);
        push_silence(&mut signal, 55);
        push_tone(&mut signal, '9', -10.0, -10.0, 60);
        push_silence(&mut signal, 40);
        assert_eq!(detect(&signal), "7081599");
    }

    #[test]
    fn a_dropout_within_a_held_key_does_not_repeat_it() {
        for dropout_ms in [5, 10] {
            for offset in (0..BLOCK_SAMPLES).step_by(11) {
                let mut signal = vec![0.0; offset];
                push_tone(&mut signal, '3', -10.0, -10.0, 200);
                push_silence(&mut signal, dropout_ms);
                push_tone(&mut signal, '3', -10.0, -10.0, 200);
                assert_eq!(
                    detect(&signal),
                    "3",
                    "dropout {dropout_ms} ms, offset {offset}"
                );
            }
        }
    }

    #[test]
    fn forty_ms_tones_and_pauses_count_shorter_tones_do_not() {
        // ITU-T Q.24's shortest signal: 40 ms tone, 40 ms pause, at every alignment to the
        // detector's blocks.
        for offset in (0..BLOCK_SAMPLES).step_by(7) {
            let mut signal = vec![0.0; offset];
            push_keys(&mut signal, "1593", (-10.0, -10.0), 1.0, (40, 40));
            assert_eq!(detect(&signal), "1593", "offset {offset}");
        }
        // 18 ms bursts (a click, a chirp of speech) never.
        for offset in (0..BLOCK_SAMPLES).step_by(7) {
            let mut signal = vec![0.0; offset];
            push_keys(&mut signal, "123", (-5.0, -5.0), 1.0, (18, 100));
            assert_eq!(detect(&signal), "", "offset {offset}");
        }
    }

    #[test]
    fn tones_far_off_frequency_are_rejected() {
        // Q.24: a deviation of 3.5 % must not be accepted.
        for deviation in [0.965f32, 1.035] {
            let mut signal = Vec::new();
            push_keys(&mut signal, ALL_KEYS, (-10.0, -10.0), deviation, (80, 80));
            assert_eq!(detect(&signal), "", "deviation {deviation}");
        }
    }

    #[test]
    fn single_tones_noise_and_speech_give_nothing() {
        let mut rng = StdRng::seed_from_u64(1633);
        for freq in [500.0f32, 1000.0, 1209.0, 697.0, 1633.0] {
            for level in [-3.0f32, -20.0] {
                let a = amplitude(level);
                let signal: Vec<f32> = (0..8000 * 2)
                    .map(|n| a * (2.0 * std::f32::consts::PI * freq * n as f32 / 8000.0).sin())
                    .collect();
                assert_eq!(detect(&signal), "", "{freq} Hz at {level} dBm0");
            }
        }
        // 500 Hz and 1000 Hz together (the browser's and the caller's test tones).
        let mut both = Vec::new();
        push_pair(&mut both, 500.0, 1000.0, -6.0, -6.0, 2000);
        assert_eq!(detect(&both), "");
        for rms_dbm0 in [-10.0f32, -30.0] {
            let white = noise(&mut rng, 8000 * 5, amplitude(rms_dbm0) / 2f32.sqrt());
            assert_eq!(detect(&white), "", "white noise at {rms_dbm0} dBm0");
        }
        // Speech-like: a gliding voiced fundamental with many harmonics under two formants.
        let mut speech = Vec::new();
        let mut phase = 0.0f32;
        for n in 0..8000 * 5 {
            let t = n as f32 / 8000.0;
            let f0 = 120.0 + 60.0 * (2.0 * std::f32::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f32::consts::PI * f0 / 8000.0;
            let mut x = 0.0;
            for k in 1..=25 {
                let f = f0 * k as f32;
                if f > 3800.0 {
                    break;
                }
                let formant = 1.0 / (1.0 + ((f - 700.0) / 250.0).powi(2))
                    + 0.6 / (1.0 + ((f - 1250.0) / 300.0).powi(2));
                x += formant / k as f32 * (phase * k as f32).sin();
            }
            speech.push(x * 6000.0);
        }
        assert_eq!(detect(&speech), "");
    }

    #[test]
    fn twist_and_harmonic_limits_reject() {
        // High group 12 dB under the low group: beyond the normal twist limit.
        let mut signal = Vec::new();
        push_tone(&mut signal, '5', -6.0, -18.0, 200);
        assert_eq!(detect(&signal), "");
        // High group 7 dB above the low group: beyond the reverse twist limit.
        let mut signal = Vec::new();
        push_tone(&mut signal, '5', -17.0, -10.0, 200);
        assert_eq!(detect(&signal), "");
        // A valid pair whose high tone carries a strong second harmonic (voice-like).
        let (fr, fc) = row_col('5');
        let mut signal = Vec::new();
        push_pair(&mut signal, fr, fc, -10.0, -10.0, 200);
        let a = amplitude(-13.0);
        for (n, x) in signal.iter_mut().enumerate() {
            *x += a * (2.0 * std::f32::consts::PI * 2.0 * fc * n as f32 / 8000.0).sin();
        }
        assert_eq!(detect(&signal), "");
        // Control: the same pair without the harmonic and within the twist limits is found.
        let mut signal = Vec::new();
        push_pair(&mut signal, fr, fc, -10.0, -10.0, 200);
        assert_eq!(detect(&signal), "5");
    }

    #[test]
    fn digits_in_noise_are_found() {
        let mut rng = StdRng::seed_from_u64(697);
        let mut signal = Vec::new();
        push_keys(&mut signal, "2580", (-12.0, -12.0), 1.0, (80, 80));
        // Tone power: two tones of -12 dBm0; noise 15 dB below that.
        let tone_power = 2.0 * amplitude(-12.0).powi(2) / 2.0;
        let noise_rms = (tone_power / 10f32.powf(1.5)).sqrt();
        let n = noise(&mut rng, signal.len(), noise_rms);
        for (x, e) in signal.iter_mut().zip(&n) {
            *x += e;
        }
        assert_eq!(detect(&signal), "2580");
    }

    #[test]
    fn events_switch_inband_detection_off() {
        let mut signal = Vec::new();
        push_tone(&mut signal, '4', -10.0, -10.0, 100);
        push_silence(&mut signal, 100);
        let pcm = to_pcm(&signal);

        let mut input = DtmfInput::new();
        assert!(input.inband_active());
        assert_eq!(input_audio(&mut input, &pcm), "4");

        // The event of that same press arrives just after: not counted twice.
        assert_eq!(
            input.on_telephone_event(5000, true, &[4, 0x0A, 0, 0]),
            Ok(None)
        );
        assert!(!input.inband_active());
        // From now on in-band tones are ignored, events count.
        assert_eq!(input_audio(&mut input, &pcm), "");
        assert_eq!(
            input.on_telephone_event(9000, true, &[4, 0x0A, 0, 0]),
            Ok(Some(Digit::D4))
        );
    }

    #[test]
    fn first_event_of_another_key_or_much_later_counts() {
        let mut signal = Vec::new();
        push_tone(&mut signal, '4', -10.0, -10.0, 100);
        let pcm = to_pcm(&signal);
        let mut input = DtmfInput::new();
        assert_eq!(input_audio(&mut input, &pcm), "4");
        // 1 s of silence later the same key as an event is a new press.
        let silence = [0i16; 160];
        for _ in 0..50 {
            assert!(input.on_audio(&silence).is_empty());
        }
        assert_eq!(
            input.on_telephone_event(1, true, &[4, 0x0A, 0, 0]),
            Ok(Some(Digit::D4))
        );

        // A truncated packet does not switch in-band detection off.
        let mut input = DtmfInput::new();
        assert_eq!(
            input.on_telephone_event(1, true, &[4]),
            Err(DtmfError::Truncated { len: 1 })
        );
        assert!(input.inband_active());
    }
}
