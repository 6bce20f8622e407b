//! 48 kHz ⇄ 8 kHz conversion (factor 6) between the meeting's mixer bus and G.711 legs.
//!
//! # Contract
//!
//! - [`Downsampler`] turns 48 kHz into 8 kHz: [`Downsampler::process_frame`] takes one 20 ms
//!   frame of 960 samples and returns 160; [`Downsampler::process`] takes any multiple of 6
//!   samples. [`Upsampler`] is the reverse (160 → 960 per frame; [`Upsampler::process`] for any
//!   length).
//! - Both are stateful: consecutive calls continue one signal, so frame-by-frame output is
//!   bit-for-bit the output of the whole signal in one call (no clicks at frame boundaries).
//!   One instance per direction per leg; [`Downsampler::reset`] / [`Upsampler::reset`] forget the
//!   past (a new call).
//! - Samples are `i16`; the arithmetic is `f32`, rounded and saturated to `i16` on output.
//! - Passband up to 3.4 kHz (flat within 0.1 dB), stopband from 4.2 kHz with at least 60 dB
//!   attenuation: on the way down nothing above 4.2 kHz folds back into the band, on the way up
//!   the images of the 8 kHz signal are removed.
//! - Group delay [`GROUP_DELAY`]: 2.25 ms in each direction, i.e. [`DELAY_48K`] = 108 samples at
//!   48 kHz = [`DELAY_8K`] = 18 samples at 8 kHz (the filter is linear-phase, so every frequency
//!   is delayed by the same amount).
//! - After construction no call allocates as long as the input length does not grow (the
//!   working buffer keeps its capacity).
//!
//! # Why written here
//!
//! One linear-phase FIR (a Kaiser-windowed sinc of 217 taps, cutoff 3.8 kHz), applied
//! polyphase: the downsampler computes only every sixth output (217 multiply-adds per 8 kHz
//! sample), the upsampler only the non-zero taps of each of the six phases (37). The general
//! resampling crate (rubato) would do the job with its FFT-based fixed-ratio resampler, but that
//! one delays by half its FFT block (10 ms per direction at 20 ms frames, against 2.25 ms here,
//! and the gateway's added delay is budgeted), works on planar `f32` buffers only, and its
//! current release needs a newer Rust than the workspace's minimum. A fixed integer ratio needs
//! none of its generality.

use std::sync::OnceLock;
use std::time::Duration;

/// 48 kHz / 8 kHz.
pub const RATIO: usize = 6;
/// Samples of a 20 ms frame at 48 kHz.
pub const FRAME_48K: usize = 960;
/// Samples of a 20 ms frame at 8 kHz.
pub const FRAME_8K: usize = 160;
/// Length of the prototype low-pass filter (at 48 kHz).
pub const TAPS: usize = 217;
/// Group delay in 48 kHz samples (in both directions).
pub const DELAY_48K: usize = (TAPS - 1) / 2;
/// Group delay in 8 kHz samples (in both directions).
pub const DELAY_8K: usize = DELAY_48K / RATIO;
/// Group delay of each direction.
pub const GROUP_DELAY: Duration = Duration::from_micros(2250);

/// Taps of each polyphase branch of the upsampler.
const UP_TAPS: usize = TAPS.div_ceil(RATIO);
/// History the downsampler keeps (48 kHz samples).
const DOWN_HISTORY: usize = TAPS - 1;
/// History the upsampler keeps (8 kHz samples).
const UP_HISTORY: usize = UP_TAPS - 1;

/// Cutoff (-6 dB) of the prototype in Hz.
const CUTOFF_HZ: f64 = 3800.0;
/// Kaiser β for about 60 dB stopband attenuation.
const KAISER_BETA: f64 = 5.65;

/// A slice length that does not fit the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResampleError {
    /// The output length is not the input length times (or divided by) 6.
    #[error("{input} input samples do not make {output} output samples at ratio 6")]
    Length {
        /// Input samples given.
        input: usize,
        /// Output samples given.
        output: usize,
    },
}

/// Modified Bessel function of the first kind, order 0 (power series).
fn bessel_i0(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let half = x / 2.0;
    for k in 1..50 {
        term *= half / k as f64;
        sum += term * term;
        if term * term < 1e-12 * sum {
            break;
        }
    }
    sum
}

/// The prototype low-pass at 48 kHz, unity gain at DC.
fn prototype() -> &'static [f32; TAPS] {
    static TABLE: OnceLock<[f32; TAPS]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let fc = CUTOFF_HZ / 48_000.0;
        let centre = DELAY_48K as f64;
        let denom = bessel_i0(KAISER_BETA);
        let mut h = [0f64; TAPS];
        for (n, tap) in h.iter_mut().enumerate() {
            let t = n as f64 - centre;
            let sinc = if t == 0.0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = t / centre;
            let window = bessel_i0(KAISER_BETA * (1.0 - r * r).max(0.0).sqrt()) / denom;
            *tap = sinc * window;
        }
        let sum: f64 = h.iter().sum();
        h.map(|x| (x / sum) as f32)
    })
}

/// The upsampler's six branches, each reversed so the dot product runs forward over the input:
/// branch `p` tap `i` is `6 · h[p + 6 (UP_TAPS - 1 - i)]` (zero beyond the prototype).
fn up_branches() -> &'static [[f32; UP_TAPS]; RATIO] {
    static TABLE: OnceLock<[[f32; UP_TAPS]; RATIO]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let h = prototype();
        let mut branches = [[0f32; UP_TAPS]; RATIO];
        for (p, branch) in branches.iter_mut().enumerate() {
            for (i, tap) in branch.iter_mut().enumerate() {
                let j = p + RATIO * (UP_TAPS - 1 - i);
                *tap = h.get(j).map_or(0.0, |&x| x * RATIO as f32);
            }
        }
        branches
    })
}

/// Dot product with eight independent sums, so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let (rest_a, rest_b) = (chunks_a.remainder(), chunks_b.remainder());
    for (x, y) in chunks_a.zip(chunks_b) {
        for ((s, &xi), &yi) in acc.iter_mut().zip(x).zip(y) {
            *s += xi * yi;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (&x, &y) in rest_a.iter().zip(rest_b) {
        sum += x * y;
    }
    sum
}

fn to_i16(x: f32) -> i16 {
    // `as` saturates at the i16 range.
    x.round() as i16
}

/// 48 kHz → 8 kHz. See the module docs.
#[derive(Debug, Clone)]
pub struct Downsampler {
    /// The last `DOWN_HISTORY` input samples, then the current input.
    work: Vec<f32>,
}

impl Default for Downsampler {
    fn default() -> Self {
        Downsampler::new()
    }
}

impl Downsampler {
    /// A downsampler whose past is silence.
    pub fn new() -> Downsampler {
        let mut work = Vec::with_capacity(DOWN_HISTORY + FRAME_48K);
        work.resize(DOWN_HISTORY, 0.0);
        Downsampler { work }
    }

    /// Forgets the past (a new signal).
    pub fn reset(&mut self) {
        self.work.clear();
        self.work.resize(DOWN_HISTORY, 0.0);
    }

    /// One 20 ms frame: 960 samples at 48 kHz to 160 at 8 kHz.
    pub fn process_frame(&mut self, input: &[i16; FRAME_48K]) -> [i16; FRAME_8K] {
        let mut out = [0i16; FRAME_8K];
        self.run(input, &mut out);
        out
    }

    /// Any length: `output.len() * 6 == input.len()`.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<(), ResampleError> {
        if output.len().checked_mul(RATIO) != Some(input.len()) {
            return Err(ResampleError::Length {
                input: input.len(),
                output: output.len(),
            });
        }
        self.run(input, output);
        Ok(())
    }

    fn run(&mut self, input: &[i16], output: &mut [i16]) {
        let h = prototype();
        self.work.truncate(DOWN_HISTORY);
        self.work.extend(input.iter().map(|&s| f32::from(s)));
        for (m, out) in output.iter_mut().enumerate() {
            let start = m * RATIO;
            if let Some(window) = self.work.get(start..start + TAPS) {
                *out = to_i16(dot(window, h));
            }
        }
        let keep_from = self.work.len() - DOWN_HISTORY;
        self.work.copy_within(keep_from.., 0);
        self.work.truncate(DOWN_HISTORY);
    }
}

/// 8 kHz → 48 kHz. See the module docs.
#[derive(Debug, Clone)]
pub struct Upsampler {
    /// The last `UP_HISTORY` input samples, then the current input.
    work: Vec<f32>,
}

impl Default for Upsampler {
    fn default() -> Self {
        Upsampler::new()
    }
}

impl Upsampler {
    /// An upsampler whose past is silence.
    pub fn new() -> Upsampler {
        let mut work = Vec::with_capacity(UP_HISTORY + FRAME_8K);
        work.resize(UP_HISTORY, 0.0);
        Upsampler { work }
    }

    /// Forgets the past (a new signal).
    pub fn reset(&mut self) {
        self.work.clear();
        self.work.resize(UP_HISTORY, 0.0);
    }

    /// One 20 ms frame: 160 samples at 8 kHz to 960 at 48 kHz.
    pub fn process_frame(&mut self, input: &[i16; FRAME_8K]) -> [i16; FRAME_48K] {
        let mut out = [0i16; FRAME_48K];
        self.run(input, &mut out);
        out
    }

    /// Any length: `output.len() == input.len() * 6`.
    pub fn process(&mut self, input: &[i16], output: &mut [i16]) -> Result<(), ResampleError> {
        if input.len().checked_mul(RATIO) != Some(output.len()) {
            return Err(ResampleError::Length {
                input: input.len(),
                output: output.len(),
            });
        }
        self.run(input, output);
        Ok(())
    }

    fn run(&mut self, input: &[i16], output: &mut [i16]) {
        let branches = up_branches();
        self.work.truncate(UP_HISTORY);
        self.work.extend(input.iter().map(|&s| f32::from(s)));
        for (m, outs) in output.chunks_exact_mut(RATIO).enumerate() {
            let Some(window) = self.work.get(m..m + UP_TAPS) else {
                continue;
            };
            for (out, branch) in outs.iter_mut().zip(branches) {
                *out = to_i16(dot(window, branch));
            }
        }
        let keep_from = self.work.len() - UP_HISTORY;
        self.work.copy_within(keep_from.., 0);
        self.work.truncate(UP_HISTORY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: f64, amplitude: f64, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / rate).sin()) as i16
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
    }

    fn db(ratio: f64) -> f64 {
        20.0 * ratio.log10()
    }

    /// Amplitude of the component at `freq` (Goertzel, normalised to a sine's amplitude).
    fn amplitude_at(x: &[i16], freq: f64, rate: f64) -> f64 {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / x.len() as f64
    }

    fn down_frames(input: &[i16]) -> Vec<i16> {
        let mut d = Downsampler::new();
        let mut out = Vec::new();
        for frame in input.chunks_exact(FRAME_48K) {
            let frame: &[i16; FRAME_48K] = frame.try_into().expect("frame");
            out.extend_from_slice(&d.process_frame(frame));
        }
        out
    }

    fn up_frames(input: &[i16]) -> Vec<i16> {
        let mut u = Upsampler::new();
        let mut out = Vec::new();
        for frame in input.chunks_exact(FRAME_8K) {
            let frame: &[i16; FRAME_8K] = frame.try_into().expect("frame");
            out.extend_from_slice(&u.process_frame(frame));
        }
        out
    }

    #[test]
    fn passband_tones_keep_their_level_both_ways() {
        for freq in [300.0, 1000.0, 2000.0, 3400.0] {
            let x48 = tone(freq, 48_000.0, 10_000.0, 48_000);
            let y8 = down_frames(&x48);
            assert_eq!(y8.len(), 8000);
            // Skip the start (the filter fills).
            let loss = db(rms(&y8[400..]) / rms(&x48[2400..]));
            assert!(loss.abs() < 0.3, "{freq} Hz down: {loss:.2} dB");

            let x8 = tone(freq, 8000.0, 10_000.0, 8000);
            let y48 = up_frames(&x8);
            assert_eq!(y48.len(), 48_000);
            let loss = db(rms(&y48[2400..]) / rms(&x8[400..]));
            assert!(loss.abs() < 0.3, "{freq} Hz up: {loss:.2} dB");
        }
        // The 1000 Hz tone specifically: within 1 dB, and at its frequency.
        let y8 = down_frames(&tone(1000.0, 48_000.0, 10_000.0, 48_000));
        let a = amplitude_at(&y8[400..], 1000.0, 8000.0);
        assert!(db(a / 10_000.0).abs() < 1.0, "{a}");
        let y48 = up_frames(&tone(1000.0, 8000.0, 10_000.0, 8000));
        let a = amplitude_at(&y48[2400..], 1000.0, 48_000.0);
        assert!(db(a / 10_000.0).abs() < 1.0, "{a}");
    }

    #[test]
    fn anti_aliasing_going_down() {
        // 6 kHz would fold to 2 kHz; 4.5 kHz to 3.5 kHz; 20 kHz to 4 kHz.
        for freq in [4500.0, 6000.0, 10_000.0, 20_000.0] {
            let x48 = tone(freq, 48_000.0, 20_000.0, 48_000);
            let y8 = down_frames(&x48);
            let attenuation = db(rms(&y8[400..]) / rms(&x48[2400..]));
            assert!(attenuation < -40.0, "{freq} Hz: {attenuation:.1} dB");
        }
        let y8 = down_frames(&tone(6000.0, 48_000.0, 20_000.0, 48_000));
        let alias = amplitude_at(&y8[400..], 2000.0, 8000.0);
        assert!(db(alias / 20_000.0) < -55.0, "alias at 2 kHz: {alias}");
    }

    #[test]
    fn images_removed_going_up() {
        // A 1000 Hz tone at 8 kHz has images at 7, 9, 15, 17 kHz once zero-stuffed.
        let y48 = up_frames(&tone(1000.0, 8000.0, 20_000.0, 8000));
        for image in [7000.0, 9000.0, 15_000.0, 17_000.0, 23_000.0] {
            let a = amplitude_at(&y48[2400..], image, 48_000.0);
            assert!(db(a / 20_000.0) < -50.0, "image at {image} Hz: {a}");
        }
    }

    #[test]
    fn frames_continue_the_signal_exactly() {
        // A chirp-like signal resampled in 20 ms frames equals the same signal in one piece.
        let x48: Vec<i16> = (0..48_000)
            .map(|n| {
                let t = n as f64 / 48_000.0;
                (8000.0 * (2.0 * std::f64::consts::PI * (200.0 + 1500.0 * t) * t).sin()) as i16
            })
            .collect();
        let framed = down_frames(&x48);
        let mut whole = vec![0i16; 8000];
        Downsampler::new()
            .process(&x48, &mut whole)
            .expect("lengths");
        assert_eq!(framed, whole);

        let x8: Vec<i16> = whole.clone();
        let framed = up_frames(&x8);
        let mut whole48 = vec![0i16; 48_000];
        Upsampler::new()
            .process(&x8, &mut whole48)
            .expect("lengths");
        assert_eq!(framed, whole48);

        // And no click: the largest step at a frame boundary is no larger than elsewhere.
        let step = |v: &[i16], i: usize| (i32::from(v[i]) - i32::from(v[i - 1])).abs();
        let max_step = (1..framed.len())
            .map(|i| step(&framed, i))
            .max()
            .unwrap_or(0);
        let boundary_step = (1..50)
            .map(|k| step(&framed, k * FRAME_48K))
            .max()
            .unwrap_or(0);
        assert!(boundary_step <= max_step);
    }

    #[test]
    fn group_delay_is_as_documented() {
        assert_eq!(DELAY_48K, 108);
        assert_eq!(DELAY_8K, 18);
        assert_eq!(
            GROUP_DELAY,
            Duration::from_micros(DELAY_48K as u64 * 1_000_000 / 48_000)
        );
        // Down: an impulse at 48 kHz sample 600 peaks at 8 kHz sample (600 + 108) / 6.
        let mut x48 = vec![0i16; 1920];
        x48[600] = 30_000;
        let y8 = down_frames(&x48);
        let peak = (0..y8.len())
            .max_by_key(|&i| y8[i].abs())
            .expect("non-empty");
        assert_eq!(peak, (600 + DELAY_48K) / RATIO);
        // Up: an impulse at 8 kHz sample 100 peaks at 48 kHz sample 600 + 108.
        let mut x8 = vec![0i16; 320];
        x8[100] = 5000;
        let y48 = up_frames(&x8);
        let peak = (0..y48.len())
            .max_by_key(|&i| y48[i].abs())
            .expect("non-empty");
        assert_eq!(peak, 100 * RATIO + DELAY_48K);
        // A tone's phase agrees: the output lags the input by the group delay.
        let x = tone(500.0, 48_000.0, 10_000.0, 9600);
        let y = down_frames(&x);
        for m in 100..200 {
            let expected = f64::from(x[m * RATIO - DELAY_48K]);
            assert!(
                (f64::from(y[m]) - expected).abs() < 60.0,
                "{m}: {} vs {expected}",
                y[m]
            );
        }
    }

    #[test]
    fn lengths_are_checked_and_full_scale_saturates() {
        let mut d = Downsampler::new();
        assert_eq!(
            d.process(&[0; 7], &mut [0; 1]),
            Err(ResampleError::Length {
                input: 7,
                output: 1
            })
        );
        let mut u = Upsampler::new();
        assert!(u.process(&[0; 2], &mut [0; 11]).is_err());
        assert!(u.process(&[], &mut []).is_ok());
        // A full-scale square wave overshoots the filter's range: saturated, no panic.
        let square: Vec<i16> = (0..960)
            .map(|n| {
                if (n / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let mut out = [0i16; 160];
        d.process(&square, &mut out).expect("lengths");
        let up = u.process_frame(&out);
        assert!(up.iter().any(|&s| s == i16::MAX || s == i16::MIN));
        d.reset();
        u.reset();
        assert_eq!(d.process_frame(&[0; 960]), [0; 160]);
    }

    #[test]
    fn no_allocation_after_the_first_frame() {
        let mut d = Downsampler::new();
        let mut u = Upsampler::new();
        let frame48 = [1000i16; 960];
        let frame8 = [1000i16; 160];
        let _ = d.process_frame(&frame48);
        let _ = u.process_frame(&frame8);
        let (dp, dc) = (d.work.as_ptr(), d.work.capacity());
        let (up, uc) = (u.work.as_ptr(), u.work.capacity());
        for _ in 0..100 {
            let _ = d.process_frame(&frame48);
            let _ = u.process_frame(&frame8);
        }
        assert_eq!((d.work.as_ptr(), d.work.capacity()), (dp, dc));
        assert_eq!((u.work.as_ptr(), u.work.capacity()), (up, uc));
    }
}
