//! G.711 A-law and µ-law (ITU-T G.711), the audio of 8 kHz telephone legs.
//!
//! # Contract
//!
//! - Linear samples are 16-bit two's complement (`i16`); a G.711 byte is one 8 kHz sample
//!   (160 bytes = 20 ms).
//! - Encoding follows the ITU-T G.711 segment tables as in the reference implementation that
//!   most telephony software shares (Sun's `g711.c`, also Python's `audioop`): A-law works on the
//!   top 13 bits, µ-law on the top 14 bits with the bias of 33; A-law bytes carry the even-bit
//!   inversion (XOR `0x55`), µ-law bytes are inverted (XOR `0xFF`). Inputs beyond the codec's
//!   range saturate to the largest code.
//! - Decoding returns the segment's midpoint, scaled to 16 bits: A-law spans ±32256, µ-law
//!   ±32124. Every byte decodes (there is no invalid input), so peer bytes can never make these
//!   functions fail.
//! - Digital silence is [`ALAW_SILENCE`] (`0xD5`, decodes to +8) and [`ULAW_SILENCE`] (`0xFF`,
//!   decodes to 0): what a keep-alive frame is filled with.
//!
//! Decoding uses 256-entry tables built at compile time; encoding computes the segment (a few
//! comparisons). Both are allocation-free; the slice functions write into a caller's buffer.
//!
//! Written here rather than taken from a crate: the whole codec is the two tables of the
//! standard and about forty lines, and the slice API fits the gateway's buffers exactly.

/// The A-law byte of linear 0 (positive zero); decodes to +8.
pub const ALAW_SILENCE: u8 = 0xD5;
/// The µ-law byte of linear 0 (positive zero); decodes to 0.
pub const ULAW_SILENCE: u8 = 0xFF;

/// Which G.711 companding law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// A-law (PCMA, RTP payload type 8): Europe and most of the world.
    ALaw,
    /// µ-law (PCMU, RTP payload type 0): North America and Japan.
    MuLaw,
}

impl Law {
    /// Encodes one sample.
    pub fn encode(self, sample: i16) -> u8 {
        match self {
            Law::ALaw => linear_to_alaw(sample),
            Law::MuLaw => linear_to_ulaw(sample),
        }
    }

    /// Decodes one byte.
    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::ALaw => alaw_to_linear(byte),
            Law::MuLaw => ulaw_to_linear(byte),
        }
    }

    /// The byte of linear zero ([`ALAW_SILENCE`] or [`ULAW_SILENCE`]).
    pub fn silence(self) -> u8 {
        match self {
            Law::ALaw => ALAW_SILENCE,
            Law::MuLaw => ULAW_SILENCE,
        }
    }

    /// Encodes `pcm` into `out`, sample by sample, over the shorter of the two lengths; returns
    /// how many bytes were written.
    pub fn encode_slice(self, pcm: &[i16], out: &mut [u8]) -> usize {
        match self {
            Law::ALaw => encode_alaw(pcm, out),
            Law::MuLaw => encode_ulaw(pcm, out),
        }
    }

    /// Decodes `bytes` into `out`, over the shorter of the two lengths; returns how many
    /// samples were written.
    pub fn decode_slice(self, bytes: &[u8], out: &mut [i16]) -> usize {
        match self {
            Law::ALaw => decode_alaw(bytes, out),
            Law::MuLaw => decode_ulaw(bytes, out),
        }
    }
}

/// Upper bounds of the A-law segments, on the 13-bit magnitude.
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
/// Upper bounds of the µ-law segments, on the biased 14-bit magnitude.
const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
/// µ-law bias (on the 16-bit scale; 33 on the 14-bit one).
const ULAW_BIAS: i32 = 0x84;
/// Largest µ-law magnitude on the 14-bit scale before the bias is added.
const ULAW_CLIP: i32 = 8159;

fn segment(value: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&end| value <= end).unwrap_or(8)
}

/// Encodes one linear sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 3;
    let mask: u8 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    let seg = segment(value, &SEG_AEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = if seg < 2 {
        (value >> 1) & 0x0F
    } else {
        (value >> seg) & 0x0F
    };
    // seg < 8 and mantissa < 16: the value fits a byte.
    ((seg as u8) << 4 | mantissa as u8) ^ mask
}

/// Encodes one linear sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut value = i32::from(sample) >> 2;
    let mask: u8 = if value < 0 {
        value = -value;
        0x7F
    } else {
        0xFF
    };
    value = value.min(ULAW_CLIP) + (ULAW_BIAS >> 2);
    let seg = segment(value, &SEG_UEND);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let mantissa = (value >> (seg + 1)) & 0x0F;
    ((seg as u8) << 4 | mantissa as u8) ^ mask
}

const fn alaw_expand(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn ulaw_expand(byte: u8) -> i16 {
    let u = !byte;
    let mut t = (((u & 0x0F) as i32) << 3) + ULAW_BIAS;
    t <<= ((u & 0x70) >> 4) as i32;
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_expand(i as u8)
        } else {
            ulaw_expand(i as u8)
        };
        i += 1;
    }
    table
}

static ALAW_TABLE: [i16; 256] = build_table(true);
static ULAW_TABLE: [i16; 256] = build_table(false);

/// Decodes one A-law byte.
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_TABLE[usize::from(byte)]
}

/// Decodes one µ-law byte.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_TABLE[usize::from(byte)]
}

/// Encodes `pcm` to A-law into `out` (over the shorter length); returns the bytes written.
pub fn encode_alaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_alaw(s);
    }
    n
}

/// Encodes `pcm` to µ-law into `out` (over the shorter length); returns the bytes written.
pub fn encode_ulaw(pcm: &[i16], out: &mut [u8]) -> usize {
    let n = pcm.len().min(out.len());
    for (o, &s) in out.iter_mut().zip(pcm) {
        *o = linear_to_ulaw(s);
    }
    n
}

/// Decodes A-law `bytes` into `out` (over the shorter length); returns the samples written.
pub fn decode_alaw(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = alaw_to_linear(b);
    }
    n
}

/// Decodes µ-law `bytes` into `out` (over the shorter length); returns the samples written.
pub fn decode_ulaw(bytes: &[u8], out: &mut [i16]) -> usize {
    let n = bytes.len().min(out.len());
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = ulaw_to_linear(b);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (linear, A-law, µ-law, A-law decoded, µ-law decoded), from the reference implementation
    /// (Python's `audioop`, which is Sun's g711.c).
    const REFERENCE: &[(i16, u8, u8, i16, i16)] = &[
        (0, 0xD5, 0xFF, 8, 0),
        (1, 0xD5, 0xFF, 8, 0),
        (-1, 0x55, 0x7E, -8, -8),
        (8, 0xD5, 0xFE, 8, 8),
        (-8, 0x55, 0x7E, -8, -8),
        (100, 0xD3, 0xF2, 104, 104),
        (-100, 0x53, 0x72, -104, -104),
        (1000, 0xFA, 0xCE, 1008, 988),
        (-1000, 0x7A, 0x4E, -1008, -988),
        (4095, 0x9A, 0xAF, 4032, 4092),
        (4096, 0x85, 0xAF, 4224, 4092),
        (-4096, 0x1A, 0x2F, -4032, -4092),
        (10000, 0xB6, 0x9C, 9984, 9852),
        (-10000, 0x36, 0x1C, -9984, -9852),
        (20000, 0xA6, 0x8C, 19968, 19836),
        (32767, 0xAA, 0x80, 32256, 32124),
        (-32768, 0x2A, 0x00, -32256, -32124),
    ];

    #[test]
    fn reference_values() {
        for &(linear, a, u, a_dec, u_dec) in REFERENCE {
            assert_eq!(linear_to_alaw(linear), a, "A-law of {linear}");
            assert_eq!(linear_to_ulaw(linear), u, "µ-law of {linear}");
            assert_eq!(alaw_to_linear(a), a_dec, "A-law decode of {a:#04x}");
            assert_eq!(ulaw_to_linear(u), u_dec, "µ-law decode of {u:#04x}");
        }
    }

    #[test]
    fn decoding_tables_known_points() {
        // A-law: the smallest steps around zero, the extremes, the first byte of each sign.
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0x80), 5504);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0xFF), 848);
        assert_eq!(alaw_to_linear(0x7F), -848);
        // µ-law: both zeros, the extremes.
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0xD5), 716);
        assert_eq!(ulaw_to_linear(0x01), -31100);
    }

    #[test]
    fn silence_constants_decode_to_near_zero() {
        assert_eq!(Law::ALaw.silence(), 0xD5);
        assert_eq!(Law::MuLaw.silence(), 0xFF);
        assert_eq!(Law::ALaw.encode(0), Law::ALaw.silence());
        assert_eq!(Law::MuLaw.encode(0), Law::MuLaw.silence());
        assert!(Law::ALaw.decode(ALAW_SILENCE).abs() <= 8);
        assert_eq!(Law::MuLaw.decode(ULAW_SILENCE), 0);
    }

    #[test]
    fn encoding_is_monotonic() {
        for law in [Law::ALaw, Law::MuLaw] {
            let mut previous = i32::from(law.decode(law.encode(i16::MIN)));
            for x in i16::MIN..=i16::MAX {
                let y = i32::from(law.decode(law.encode(x)));
                assert!(
                    y >= previous,
                    "{law:?}: decode(encode({x})) = {y} < {previous}"
                );
                previous = y;
            }
        }
    }

    #[test]
    fn decoding_tables_are_ordered_by_code() {
        // Within each sign, a larger code magnitude (after removing the inversion) decodes larger.
        for law in [Law::ALaw, Law::MuLaw] {
            let canonical = |code: u8| match law {
                Law::ALaw => code ^ 0x55,
                Law::MuLaw => !code,
            };
            let mut positive: Vec<(u8, i16)> = Vec::new();
            let mut negative: Vec<(u8, i16)> = Vec::new();
            for byte in 0..=255u8 {
                let c = canonical(byte);
                let value = law.decode(byte);
                let bucket = match law {
                    // A-law: sign bit set = positive; µ-law (after inversion): clear = positive.
                    Law::ALaw if c & 0x80 != 0 => &mut positive,
                    Law::MuLaw if c & 0x80 == 0 => &mut positive,
                    _ => &mut negative,
                };
                bucket.push((c & 0x7F, value));
            }
            positive.sort_by_key(|&(m, _)| m);
            negative.sort_by_key(|&(m, _)| m);
            for pair in positive.windows(2) {
                assert!(pair[1].1 > pair[0].1, "{law:?} positive {pair:?}");
            }
            for pair in negative.windows(2) {
                assert!(pair[1].1 < pair[0].1, "{law:?} negative {pair:?}");
            }
        }
    }

    #[test]
    fn round_trip_error_within_half_a_step_per_segment() {
        // The quantisation step doubles per segment: A-law 16,16,32,...,1024 (16-bit scale),
        // µ-law 8,16,...,1024. The decoded value is the middle of the step, so the error is at
        // most half a step (plus the clipping at the very top).
        for x in i16::MIN..=i16::MAX {
            let v = i32::from(x);
            let a = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let mag = v.unsigned_abs();
            let a_step = if mag < 512 {
                16
            } else {
                16 << (31 - mag.leading_zeros() - 8)
            };
            if mag <= 32256 {
                assert!(
                    (a - v).abs() <= a_step / 2,
                    "A-law {x} -> {a} (step {a_step})"
                );
            } else {
                assert_eq!(a.abs(), 32256);
            }

            let u = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            // Step on the 16-bit scale: 8 << segment, segment from the biased magnitude.
            // As the encoder computes it (for negatives, the magnitude of the shifted value).
            let shifted = if v < 0 { -(v >> 2) } else { v >> 2 };
            let biased = shifted.min(ULAW_CLIP) + 33;
            let seg = segment(biased, &SEG_UEND) as u32;
            let u_step = 8 << seg;
            if v.abs() <= 32124 {
                assert!(
                    (u - v).abs() <= u_step / 2 + 4,
                    "µ-law {x} -> {u} (step {u_step})"
                );
            } else {
                assert_eq!(u.abs(), 32124);
            }
        }
    }

    #[test]
    fn every_byte_round_trips_through_its_own_value() {
        // Decoding a byte and encoding the result gives the byte back (negative zero aside).
        for byte in 0..=255u8 {
            let a = alaw_to_linear(byte);
            assert_eq!(linear_to_alaw(a), byte, "A-law {byte:#04x} -> {a}");
            let u = ulaw_to_linear(byte);
            if byte != 0x7F {
                assert_eq!(linear_to_ulaw(u), byte, "µ-law {byte:#04x} -> {u}");
            }
        }
    }

    #[test]
    fn slices_use_the_shorter_length() {
        let pcm = [0i16, 1000, -1000, 32767];
        let mut bytes = [0u8; 3];
        assert_eq!(encode_alaw(&pcm, &mut bytes), 3);
        assert_eq!(bytes, [0xD5, 0xFA, 0x7A]);
        let mut back = [0i16; 8];
        assert_eq!(Law::ALaw.decode_slice(&bytes, &mut back), 3);
        assert_eq!(&back[..3], &[8, 1008, -1008]);
        assert_eq!(back[3], 0);

        let mut ubytes = [0u8; 4];
        assert_eq!(Law::MuLaw.encode_slice(&pcm, &mut ubytes), 4);
        assert_eq!(ubytes, [0xFF, 0xCE, 0x4E, 0x80]);
        let mut uback = [0i16; 2];
        assert_eq!(decode_ulaw(&ubytes, &mut uback), 2);
        assert_eq!(uback, [0, 988]);
    }
}
