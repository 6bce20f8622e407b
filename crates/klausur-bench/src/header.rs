//! The header at the start of every synthetic media payload.
//!
//! The server never looks into payloads (they are opaque, possibly end-to-end encrypted bytes);
//! only the benchmark's receivers parse this header. Because every client lives in one process
//! and shares one start `Instant`, the send timestamp makes one-way latency exact on loopback.
//!
//! Layout (big endian, [`HEADER_LEN`] bytes):
//!
//! | bytes  | field                                        |
//! |--------|----------------------------------------------|
//! | 0..4   | magic `KLBN`                                 |
//! | 4      | flags: bit 0 keyframe, bit 1 last of frame   |
//! | 5      | stream (0 audio, 1 video)                    |
//! | 6..8   | sender index                                 |
//! | 8..12  | sequence tag (per sender and stream, from 0) |
//! | 12..20 | send time, ns since the shared start         |

/// Magic bytes that open every benchmark payload.
pub const MAGIC: [u8; 4] = *b"KLBN";
/// Length of the encoded header.
pub const HEADER_LEN: usize = 20;

const FLAG_KEYFRAME: u8 = 1;
const FLAG_LAST: u8 = 2;
/// Flags bits 2 and 3: a simulcast layer's index + 1 (0: not simulcast).
const LAYER_SHIFT: u8 = 2;

/// A media stream of a simulated participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Audio = 0,
    Video = 1,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Stream::Audio, Stream::Video];

    pub fn index(self) -> usize {
        self as usize
    }

    fn from_u8(v: u8) -> Option<Stream> {
        match v {
            0 => Some(Stream::Audio),
            1 => Some(Stream::Video),
            _ => None,
        }
    }
}

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sender: u16,
    pub stream: Stream,
    pub seq: u32,
    pub send_ns: u64,
    /// Part of a keyframe (video only).
    pub keyframe: bool,
    /// Last packet of a frame (always true for audio).
    pub last_of_frame: bool,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// Panics in debug builds if `buf` is shorter; callers size payloads from [`payload`].
    pub fn encode_into(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC);
        let mut flags = 0;
        if self.keyframe {
            flags |= FLAG_KEYFRAME;
        }
        if self.last_of_frame {
            flags |= FLAG_LAST;
        }
        buf[4] = flags;
        buf[5] = self.stream as u8;
        buf[6..8].copy_from_slice(&self.sender.to_be_bytes());
        buf[8..12].copy_from_slice(&self.seq.to_be_bytes());
        buf[12..20].copy_from_slice(&self.send_ns.to_be_bytes());
    }

    /// Parses the header at the start of `payload`; `None` if it is not a benchmark payload.
    pub fn decode(payload: &[u8]) -> Option<Header> {
        if payload.len() < HEADER_LEN || payload[0..4] != MAGIC {
            return None;
        }
        let flags = payload[4];
        let stream = Stream::from_u8(payload[5])?;
        let sender = u16::from_be_bytes([payload[6], payload[7]]);
        let seq = u32::from_be_bytes(payload[8..12].try_into().ok()?);
        let send_ns = u64::from_be_bytes(payload[12..20].try_into().ok()?);
        Some(Header {
            sender,
            stream,
            seq,
            send_ns,
            keyframe: flags & FLAG_KEYFRAME != 0,
            last_of_frame: flags & FLAG_LAST != 0,
        })
    }
}

/// A payload of `len` bytes (at least [`HEADER_LEN`]) that begins with `header`; the rest is
/// filler derived from the sequence tag.
pub fn payload(header: &Header, len: usize) -> Vec<u8> {
    let len = len.max(HEADER_LEN);
    let mut v = vec![0u8; len];
    header.encode_into(&mut v);
    for (i, b) in v[HEADER_LEN..].iter_mut().enumerate() {
        *b = (i as u8) ^ (header.seq as u8);
    }
    v
}

/// Length of the VP8 framing in front of the header in a simulcast layer's payload: the payload
/// descriptor (4 bytes: X, I with a 15-bit picture ID, S on a frame's first packet) and 10 bytes
/// that on a frame's first packet hold the frame tag (on a keyframe with start code and size,
/// RFC 6386 section 9.1), filler otherwise. The server reads these (layer switching at
/// keyframes, picture ID rewriting, layer sizes); the header after them is the benchmark's.
pub const VP8_PREFIX: usize = 14;

/// A simulcast layer's payload of `len` bytes (at least [`VP8_PREFIX`] + [`HEADER_LEN`]): VP8
/// framing for the layer's `picture_id` (`first`: the frame's first packet; keyframes carry
/// `size`, width and height), then `header` (marked with `layer`, 0 to 2) and filler.
pub fn vp8_payload(
    header: &Header,
    len: usize,
    layer: u8,
    picture_id: u16,
    first: bool,
    size: (u16, u16),
) -> Vec<u8> {
    let mut v = payload(header, len.saturating_sub(VP8_PREFIX));
    v[4] |= ((layer & 0x3) + 1) << LAYER_SHIFT;
    let mut prefix = [0u8; VP8_PREFIX];
    prefix[0] = if first { 0x90 } else { 0x80 };
    prefix[1] = 0x80;
    prefix[2] = 0x80 | ((picture_id >> 8) & 0x7f) as u8;
    prefix[3] = picture_id as u8;
    if first && header.keyframe {
        prefix[4..10].copy_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        prefix[10..12].copy_from_slice(&size.0.to_le_bytes());
        prefix[12..14].copy_from_slice(&size.1.to_le_bytes());
    } else if first {
        prefix[4..7].copy_from_slice(&[0x11, 0x02, 0x00]);
    }
    v.splice(0..0, prefix);
    v
}

/// The header of a benchmark payload, plain or behind a simulcast layer's VP8 framing, and
/// the simulcast layer (0 to 2) it came on, if any.
pub fn decode_any(payload: &[u8]) -> Option<(Header, Option<u8>)> {
    if let Some(h) = Header::decode(payload) {
        return Some((h, None));
    }
    let at = payload.get(VP8_PREFIX..)?;
    let h = Header::decode(at)?;
    let layer = (at[4] >> LAYER_SHIFT) & 0x3;
    Some((h, layer.checked_sub(1)))
}

/// Opus-sized audio payload length for the `seq`-th packet: 60 to 160 bytes.
pub fn audio_len(seq: u32) -> usize {
    60 + (seq.wrapping_mul(37) % 101) as usize
}

/// Packet sizes of one VP8-shaped video frame: about 1000-byte packets, a shorter last one;
/// delta frames have 3 packets, keyframes 12.
pub fn video_frame_sizes(keyframe: bool, frame: u32) -> Vec<usize> {
    let n = if keyframe { 12 } else { 3 };
    let mut sizes = vec![1000; n];
    sizes[n - 1] = 300 + (frame.wrapping_mul(53) % 500) as usize;
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulcast_payload_is_vp8_to_the_server_and_a_header_to_the_receiver() {
        for (keyframe, first) in [(true, true), (false, true), (true, false), (false, false)] {
            let h = Header {
                sender: 7,
                stream: Stream::Video,
                seq: 99,
                send_ns: 12345,
                keyframe,
                last_of_frame: !first,
            };
            let p = vp8_payload(&h, 400, 2, 0x1234, first, (640, 360));
            assert_eq!(p.len(), 400);
            assert_eq!(decode_any(&p), Some((h, Some(2))));
            assert_eq!(decode_any(&payload(&h, 400)), Some((h, None)));
            assert_eq!(
                Header::decode(&p),
                None,
                "the header sits behind the VP8 framing"
            );
            // The descriptor: extended, picture ID 0x1234 (15 bits), S only on the first packet.
            assert_eq!(p[0], if first { 0x90 } else { 0x80 });
            assert_eq!([p[1], p[2], p[3]], [0x80, 0x92, 0x34]);
            // A keyframe's first packet: P bit 0, start code, 640x360.
            if first && keyframe {
                assert_eq!(p[4] & 1, 0);
                assert_eq!(&p[7..14], &[0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
            }
            if first && !keyframe {
                assert_eq!(p[4] & 1, 1);
            }
        }
    }

    #[test]
    fn header_roundtrips() {
        for (keyframe, last) in [(false, false), (true, false), (false, true), (true, true)] {
            let h = Header {
                sender: 513,
                stream: Stream::Video,
                seq: 0xdead_beef,
                send_ns: 0x0123_4567_89ab_cdef,
                keyframe,
                last_of_frame: last,
            };
            let p = payload(&h, 1000);
            assert_eq!(p.len(), 1000);
            assert_eq!(Header::decode(&p), Some(h));
        }
    }

    #[test]
    fn short_payload_is_padded_to_the_header() {
        let h = Header {
            sender: 1,
            stream: Stream::Audio,
            seq: 7,
            send_ns: 42,
            keyframe: false,
            last_of_frame: true,
        };
        let p = payload(&h, 3);
        assert_eq!(p.len(), HEADER_LEN);
        assert_eq!(Header::decode(&p), Some(h));
    }

    #[test]
    fn foreign_payloads_are_rejected() {
        assert_eq!(Header::decode(&[]), None);
        assert_eq!(Header::decode(&[0u8; 100]), None);
        let h = Header {
            sender: 1,
            stream: Stream::Audio,
            seq: 7,
            send_ns: 42,
            keyframe: false,
            last_of_frame: true,
        };
        let mut p = payload(&h, 100);
        assert_eq!(Header::decode(&p[..HEADER_LEN - 1]), None);
        p[5] = 9; // unknown stream
        assert_eq!(Header::decode(&p), None);
        p[5] = 0;
        p[0] = b'X';
        assert_eq!(Header::decode(&p), None);
    }

    #[test]
    fn sizes_are_media_shaped() {
        for seq in 0..1000 {
            let l = audio_len(seq);
            assert!((60..=160).contains(&l), "{l}");
        }
        let delta = video_frame_sizes(false, 5);
        let key = video_frame_sizes(true, 5);
        assert_eq!(delta.len(), 3);
        assert!(key.len() > delta.len());
        assert!(delta.iter().all(|s| (HEADER_LEN..=1000).contains(s)));
    }
}
