//! Mix-minus for a meeting's bridge: every caller hears everyone but themselves.
//!
//! # Contract
//!
//! Once per 20 ms tick:
//!
//! 1. [`Mixer::begin_tick`] forgets the previous tick's frames.
//! 2. [`Mixer::add`]`(key, frame)` for every track that has audio this tick: each decoded
//!    remote meeting track and each caller's own voice, one frame of the mixer's length (960
//!    samples at 48 kHz, or 160 at 8 kHz when every listener is a narrowband phone leg:
//!    [`Mixer::with_frame`]), keyed by a participant id (any `K: Eq + Clone`). Adding the same key twice in a tick replaces its
//!    frame. Tracks without audio this tick (muted, nothing received) are simply not added.
//! 3. [`Mixer::mix_for`]`(listener, out)` writes what `listener` hears: the sum of all tracks
//!    of this tick except the listener's own. [`Mixer::mix_all`] is the sum of all tracks.
//!
//! The sum is kept in `i32` per sample and saturated to `i16` only when an output is written, so
//! "everything minus my own" is exact (no clipping before the subtraction) and a listener's own
//! voice never leaks back in, however loud the others are. With no track (or only the
//! listener's) the output is silence. At most [`MAX_TRACKS`] tracks per tick; more cannot
//! overflow the `i32` sums, and [`Mixer::add`] refuses them.
//!
//! # Cost
//!
//! Adding is one pass over the frame; each output one pass plus a key lookup (linear in the
//! tracks of the tick; meetings are small). Storage is reused: once the mixer has seen its
//! largest number of tracks in a tick, no tick allocates (with keys whose `clone_from` does not
//! allocate: integer ids, `Arc`s, or strings no longer than the slot's previous key).
//!
//! Plain saturating sum, no automatic gain: the meeting's levels come from the participants'
//! own processing (browsers apply AGC), and a sum keeps minus-own exact.

/// Samples per frame: 20 ms at 48 kHz (the default frame).
pub const FRAME_SAMPLES: usize = 960;
/// Samples per frame: 20 ms at 8 kHz.
pub const FRAME_SAMPLES_8K: usize = 160;
/// Most tracks per tick (keeps the `i32` sums far from overflow).
pub const MAX_TRACKS: usize = 4096;

/// A frame that cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// The frame is not of the mixer's length.
    #[error("a mixer frame has {0} samples, not the mixer's frame length")]
    FrameLength(usize),
    /// [`MAX_TRACKS`] tracks were already added this tick.
    #[error("too many tracks in one tick")]
    TooManyTracks,
}

#[derive(Debug, Clone)]
struct Slot<K> {
    key: K,
    frame: Box<[i16]>,
}

/// The mix-minus mixer of one meeting's bridge. See the module docs.
#[derive(Debug, Clone)]
pub struct Mixer<K> {
    /// Slots in use this tick are `slots[..active]`; the rest are kept for reuse.
    slots: Vec<Slot<K>>,
    active: usize,
    sum: Box<[i32]>,
}

impl<K: Eq + Clone> Default for Mixer<K> {
    fn default() -> Self {
        Mixer::new()
    }
}

impl<K: Eq + Clone> Mixer<K> {
    /// An empty mixer of 48 kHz frames ([`FRAME_SAMPLES`]).
    pub fn new() -> Mixer<K> {
        Mixer::with_frame(FRAME_SAMPLES)
    }

    /// An empty mixer of frames of `samples` samples (at least one).
    pub fn with_frame(samples: usize) -> Mixer<K> {
        Mixer {
            slots: Vec::new(),
            active: 0,
            sum: vec![0; samples.max(1)].into_boxed_slice(),
        }
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.sum.len()
    }

    /// Starts a tick: no track has audio yet.
    pub fn begin_tick(&mut self) {
        self.active = 0;
        self.sum.fill(0);
    }

    /// Tracks added this tick.
    pub fn track_count(&self) -> usize {
        self.active
    }

    /// Adds `key`'s frame for this tick (replacing an earlier one of the same key).
    pub fn add(&mut self, key: &K, frame: &[i16]) -> Result<(), MixError> {
        if frame.len() != self.sum.len() {
            return Err(MixError::FrameLength(frame.len()));
        }
        let existing = self.slots[..self.active].iter().position(|s| s.key == *key);
        let index = match existing {
            Some(i) => {
                // Replace: take the old frame out of the sum first.
                if let Some(slot) = self.slots.get(i) {
                    for (s, &x) in self.sum.iter_mut().zip(slot.frame.iter()) {
                        *s -= i32::from(x);
                    }
                }
                i
            }
            None => {
                if self.active >= MAX_TRACKS {
                    return Err(MixError::TooManyTracks);
                }
                if self.active == self.slots.len() {
                    self.slots.push(Slot {
                        key: key.clone(),
                        frame: vec![0; self.sum.len()].into_boxed_slice(),
                    });
                } else if let Some(slot) = self.slots.get_mut(self.active) {
                    slot.key.clone_from(key);
                }
                self.active += 1;
                self.active - 1
            }
        };
        if let Some(slot) = self.slots.get_mut(index) {
            slot.frame.copy_from_slice(frame);
            for (s, &x) in self.sum.iter_mut().zip(frame.iter()) {
                *s += i32::from(x);
            }
        }
        Ok(())
    }

    /// Writes what `listener` hears this tick: every track but its own, saturated to `i16`
    /// (`out` is as long as a frame; a longer one keeps its tail, a shorter one gets the start).
    pub fn mix_for(&self, listener: &K, out: &mut [i16]) {
        let own = self.slots[..self.active]
            .iter()
            .find(|s| s.key == *listener)
            .map(|s| &s.frame);
        match own {
            Some(own) => {
                for ((o, &s), &x) in out.iter_mut().zip(self.sum.iter()).zip(own.iter()) {
                    *o = saturate(s - i32::from(x));
                }
            }
            None => self.mix_all(out),
        }
    }

    /// Writes the sum of all tracks of this tick, saturated to `i16`.
    pub fn mix_all(&self, out: &mut [i16]) {
        for (o, &s) in out.iter_mut().zip(self.sum.iter()) {
            *o = saturate(s);
        }
    }
}

fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(f: impl Fn(usize) -> i16) -> [i16; FRAME_SAMPLES] {
        std::array::from_fn(f)
    }

    #[test]
    fn empty_mix_is_silence() {
        let mut m: Mixer<u32> = Mixer::new();
        m.begin_tick();
        let mut out = [7i16; FRAME_SAMPLES];
        m.mix_for(&1, &mut out);
        assert_eq!(out, [0; FRAME_SAMPLES]);
        // Only the listener's own track: silence too.
        m.add(&1, &[1000; FRAME_SAMPLES]).expect("add");
        m.mix_for(&1, &mut out);
        assert_eq!(out, [0; FRAME_SAMPLES]);
    }

    #[test]
    fn three_tracks_each_listener_hears_the_other_two() {
        let a = frame(|i| (i % 100) as i16 * 10);
        let b = frame(|i| -((i % 50) as i16) * 20);
        let c = frame(|i| if i % 2 == 0 { 300 } else { -300 });
        let mut m = Mixer::new();
        m.begin_tick();
        m.add(&"a", &a).expect("add");
        m.add(&"b", &b).expect("add");
        m.add(&"c", &c).expect("add");
        assert_eq!(m.track_count(), 3);
        let mut out = [0i16; FRAME_SAMPLES];
        for (listener, x, y) in [("a", &b, &c), ("b", &a, &c), ("c", &a, &b)] {
            m.mix_for(&listener, &mut out);
            for i in 0..FRAME_SAMPLES {
                assert_eq!(out[i], x[i] + y[i], "{listener} at {i}");
            }
        }
        // A listener without a track (a silent caller) hears all three.
        m.mix_for(&"d", &mut out);
        for i in 0..FRAME_SAMPLES {
            assert_eq!(out[i], a[i] + b[i] + c[i]);
        }
    }

    #[test]
    fn minus_self_is_exact_even_when_the_total_clips() {
        // Three loud tracks: the total exceeds i16, the listener's mix does not.
        let mut m = Mixer::new();
        m.begin_tick();
        m.add(&1u8, &[30_000; FRAME_SAMPLES]).expect("add");
        m.add(&2u8, &[2_000; FRAME_SAMPLES]).expect("add");
        m.add(&3u8, &[1_500; FRAME_SAMPLES]).expect("add");
        let mut out = [0i16; FRAME_SAMPLES];
        // Everything (33 500): saturated, not wrapped.
        m.mix_all(&mut out);
        assert_eq!(out, [i16::MAX; FRAME_SAMPLES]);
        // Each minus its own: exact, as if the total had never clipped.
        m.mix_for(&1, &mut out);
        assert_eq!(out, [3_500; FRAME_SAMPLES]);
        m.mix_for(&2, &mut out);
        assert_eq!(out, [31_500; FRAME_SAMPLES]);
        m.mix_for(&3, &mut out);
        assert_eq!(out, [32_000; FRAME_SAMPLES]);
        // A fourth loud track: now the others' sum clips for listener 4 as well.
        m.add(&4u8, &[10_000; FRAME_SAMPLES]).expect("add");
        m.mix_for(&4, &mut out);
        assert_eq!(out, [i16::MAX; FRAME_SAMPLES]);
        m.mix_for(&1, &mut out);
        assert_eq!(out, [13_500; FRAME_SAMPLES]);
    }

    #[test]
    fn saturates_both_ways() {
        let mut m = Mixer::new();
        m.begin_tick();
        for k in 0..4u8 {
            m.add(&k, &[i16::MIN; FRAME_SAMPLES]).expect("add");
        }
        let mut out = [0i16; FRAME_SAMPLES];
        m.mix_for(&0, &mut out);
        assert_eq!(out, [i16::MIN; FRAME_SAMPLES]);
        m.begin_tick();
        for k in 0..4u8 {
            m.add(&k, &[i16::MAX; FRAME_SAMPLES]).expect("add");
        }
        m.mix_all(&mut out);
        assert_eq!(out, [i16::MAX; FRAME_SAMPLES]);
    }

    #[test]
    fn adding_a_key_twice_replaces_and_ticks_start_empty() {
        let mut m = Mixer::new();
        m.begin_tick();
        m.add(&1u8, &[100; FRAME_SAMPLES]).expect("add");
        m.add(&2u8, &[10; FRAME_SAMPLES]).expect("add");
        m.add(&1u8, &[200; FRAME_SAMPLES]).expect("add");
        assert_eq!(m.track_count(), 2);
        let mut out = [0i16; FRAME_SAMPLES];
        m.mix_all(&mut out);
        assert_eq!(out, [210; FRAME_SAMPLES]);
        m.mix_for(&2, &mut out);
        assert_eq!(out, [200; FRAME_SAMPLES]);
        // Next tick: only what is added then.
        m.begin_tick();
        m.add(&3u8, &[5; FRAME_SAMPLES]).expect("add");
        m.mix_for(&1, &mut out);
        assert_eq!(out, [5; FRAME_SAMPLES]);
        m.mix_for(&3, &mut out);
        assert_eq!(out, [0; FRAME_SAMPLES]);
    }

    #[test]
    fn narrowband_frames_mix_the_same_way() {
        let mut m: Mixer<u8> = Mixer::with_frame(FRAME_SAMPLES_8K);
        assert_eq!(m.frame_len(), 160);
        m.begin_tick();
        m.add(&1, &[100; FRAME_SAMPLES_8K]).expect("add");
        m.add(&2, &[-30; FRAME_SAMPLES_8K]).expect("add");
        assert_eq!(
            m.add(&3, &[0; FRAME_SAMPLES]),
            Err(MixError::FrameLength(960)),
            "a 48 kHz frame does not fit a narrowband mixer"
        );
        let mut out = [0i16; FRAME_SAMPLES_8K];
        m.mix_for(&1, &mut out);
        assert_eq!(out, [-30; FRAME_SAMPLES_8K]);
        m.mix_all(&mut out);
        assert_eq!(out, [70; FRAME_SAMPLES_8K]);
    }

    #[test]
    fn wrong_lengths_and_too_many_tracks_are_refused() {
        let mut m: Mixer<usize> = Mixer::new();
        m.begin_tick();
        assert_eq!(m.add(&0, &[0; 160]), Err(MixError::FrameLength(160)));
        let silence = [0i16; FRAME_SAMPLES];
        for k in 0..MAX_TRACKS {
            m.add(&k, &silence).expect("add");
        }
        assert_eq!(m.add(&MAX_TRACKS, &silence), Err(MixError::TooManyTracks));
        // Replacing an existing track still works at the limit.
        assert_eq!(m.add(&0, &silence), Ok(()));
    }

    /// No allocation per tick after warm-up. A counting global allocator would need `unsafe`
    /// (forbidden in this workspace), so the test checks that no buffer the mixer owns is
    /// reallocated or grows: every tick reuses the same slots, frames and sum.
    #[test]
    fn no_allocation_per_tick_after_warm_up() {
        let mut m: Mixer<u64> = Mixer::new();
        let frame = [123i16; FRAME_SAMPLES];
        let mut out = [0i16; FRAME_SAMPLES];
        // Warm-up: the largest meeting this mixer will see.
        m.begin_tick();
        for k in 0..8 {
            m.add(&k, &frame).expect("add");
        }
        let slots = (m.slots.as_ptr(), m.slots.capacity());
        let frames: Vec<*const i16> = m.slots.iter().map(|s| s.frame.as_ptr()).collect();
        let sum = m.sum.as_ptr();
        for tick in 0..1000u64 {
            m.begin_tick();
            // Participants come and go: different keys, up to eight at a time.
            for k in 0..(tick % 9) {
                m.add(&(tick * 10 + k), &frame).expect("add");
            }
            for k in 0..(tick % 9) {
                m.mix_for(&(tick * 10 + k), &mut out);
            }
        }
        assert_eq!((m.slots.as_ptr(), m.slots.capacity()), slots);
        let after: Vec<*const i16> = m.slots.iter().map(|s| s.frame.as_ptr()).collect();
        assert_eq!(after, frames);
        assert_eq!(m.sum.as_ptr(), sum);
    }
}
