//! RTP packets of the trunk leg (RFC 3550): parse what arrives, build what is sent.
//!
//! # Contract
//!
//! - [`parse`] takes one UDP payload and returns a borrowed [`RtpPacket`] view: version 2 only,
//!   with the CSRC list, the header extension (profile id and data) and the payload without its
//!   padding. Any other byte string is an [`RtpError`] (too short for what the header claims,
//!   another version, a padding count of zero or beyond the packet); parsing never panics and
//!   never allocates.
//! - [`is_rtcp`] tells RTCP from RTP on a multiplexed port (RFC 5761: second byte 192-223), so
//!   the driver can drop or route RTCP before parsing.
//! - [`RtpHeader::write`] appends a packet (12-byte header, no CSRCs, no extension, no padding:
//!   all the gateway sends) to a caller's buffer. [`RtpSender`] keeps one outgoing stream's SSRC,
//!   sequence number and timestamp: one call per 20 ms frame.
//!
//! Parsing and writing are done by the `rtp-types` crate (the RTP layer of GStreamer's Rust
//! plugins); this module turns its view into plain fields and typed errors.

use rtp_types::{RtpPacketBuilder, RtpParseError, RtpWriteError};

/// Most CSRCs an RTP header can list.
pub const MAX_CSRCS: usize = 15;

/// Why bytes are not an RTP packet, or a packet cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the header, CSRC list, extension or padding says.
    #[error("RTP packet truncated: {expected} bytes needed, {actual} present")]
    Truncated {
        /// Bytes the header implies.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0} (only 2 is supported)")]
    Version(u8),
    /// The padding count is zero.
    #[error("invalid RTP padding")]
    Padding,
    /// A payload type above 127 was asked for.
    #[error("invalid RTP payload type {0}")]
    PayloadType(u8),
    /// The packet to write is too large.
    #[error("RTP packet too large")]
    TooLarge,
}

impl From<RtpParseError> for RtpError {
    fn from(error: RtpParseError) -> Self {
        match error {
            RtpParseError::UnsupportedVersion(v) => RtpError::Version(v),
            RtpParseError::Truncated { expected, actual } => {
                RtpError::Truncated { expected, actual }
            }
            RtpParseError::PaddingInvalid(_) => RtpError::Padding,
        }
    }
}

impl From<RtpWriteError> for RtpError {
    fn from(error: RtpWriteError) -> Self {
        match error {
            RtpWriteError::InvalidPayloadType(pt) => RtpError::PayloadType(pt),
            _ => RtpError::TooLarge,
        }
    }
}

/// The CSRC list of a packet (at most [`MAX_CSRCS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csrcs {
    ids: [u32; MAX_CSRCS],
    len: usize,
}

impl Csrcs {
    /// The contributing sources, in order.
    pub fn as_slice(&self) -> &[u32] {
        self.ids.get(..self.len).unwrap_or(&[])
    }
}

/// A header extension (RFC 3550 §5.3.1): the profile-defined id and the data (a multiple of 4
/// bytes, without the 4-byte extension header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data.
    pub data: &'a [u8],
}

/// A parsed RTP packet, borrowing the bytes it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Payload type (0-127).
    pub payload_type: u8,
    /// The marker bit (start of a talkspurt; start of a telephone event).
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Contributing sources.
    pub csrcs: Csrcs,
    /// The header extension, if the X bit is set.
    pub extension: Option<RtpExtension<'a>>,
    /// The payload, padding removed.
    pub payload: &'a [u8],
    /// Padding bytes at the end (0 without the P bit).
    pub padding: u8,
}

/// Parses one RTP packet. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let packet = rtp_types::RtpPacket::parse(bytes)?;
    let mut csrcs = Csrcs::default();
    for (slot, id) in csrcs.ids.iter_mut().zip(packet.csrc()) {
        *slot = id;
        csrcs.len += 1;
    }
    // rtp-types borrows its accessors from the view; take the same ranges from `bytes` so the
    // result borrows the caller's buffer. `parse` above checked that they lie within it.
    let offset = packet.payload_offset();
    let payload = bytes
        .get(offset..offset + packet.payload_len())
        .ok_or(RtpError::Truncated {
            expected: offset + packet.payload_len(),
            actual: bytes.len(),
        })?;
    let extension = match packet.extension() {
        Some((profile, _)) => {
            let len = packet.extension_len();
            let data =
                bytes
                    .get(offset.saturating_sub(len)..offset)
                    .ok_or(RtpError::Truncated {
                        expected: offset,
                        actual: bytes.len(),
                    })?;
            Some(RtpExtension { profile, data })
        }
        None => None,
    };
    Ok(RtpPacket {
        payload_type: packet.payload_type(),
        marker: packet.marker_bit(),
        sequence: packet.sequence_number(),
        timestamp: packet.timestamp(),
        ssrc: packet.ssrc(),
        csrcs,
        extension,
        payload,
        padding: packet.padding().unwrap_or(0),
    })
}

/// Whether a datagram on an RTP port is RTCP (RFC 5761 §4: packet types 192-223 in the second
/// byte), to be kept away from [`parse`].
pub fn is_rtcp(bytes: &[u8]) -> bool {
    matches!(bytes.get(1), Some(192..=223))
}

/// The fields of an outgoing packet's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (0-127).
    pub payload_type: u8,
    /// The marker bit.
    pub marker: bool,
    /// Sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
}

impl RtpHeader {
    /// Appends this header and `payload` to `out` as one packet.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), RtpError> {
        if self.payload_type > 127 {
            return Err(RtpError::PayloadType(self.payload_type));
        }
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(self.payload_type)
            .marker_bit(self.marker)
            .sequence_number(self.sequence)
            .timestamp(self.timestamp)
            .ssrc(self.ssrc)
            .payload(payload)
            .write_into_vec(out)?;
        Ok(())
    }
}

/// One outgoing RTP stream: fixed SSRC, sequence number +1 and timestamp + `frame_ticks` per
/// packet. The first packet carries the marker bit (RFC 3551 §4.1: start of a talkspurt).
#[derive(Debug, Clone)]
pub struct RtpSender {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    frame_ticks: u32,
    first: bool,
}

impl RtpSender {
    /// A stream with the given SSRC, initial sequence number and timestamp (pick all three at
    /// random, RFC 3550 §5.1) and the timestamp increment per frame (160 for G.711, 960 for
    /// Opus at 20 ms).
    pub fn new(ssrc: u32, sequence: u16, timestamp: u32, frame_ticks: u32) -> RtpSender {
        RtpSender {
            ssrc,
            sequence,
            timestamp,
            frame_ticks,
            first: true,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The header the next frame will get (without advancing).
    pub fn next_header(&self, payload_type: u8) -> RtpHeader {
        RtpHeader {
            payload_type,
            marker: self.first,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        }
    }

    /// Appends the next frame's packet to `out` and advances the stream by one frame.
    pub fn write_frame(
        &mut self,
        payload_type: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RtpError> {
        self.next_header(payload_type).write(payload, out)?;
        self.first = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(self.frame_ticks);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn parses_a_plain_packet() {
        // sipp's telephone-event packet from dtmf_2833_1.pcap.
        let bytes = [
            0x80, 0xE5, 0x1F, 0x30, 0x00, 0x00, 0x33, 0xE0, 0x0E, 0x05, 0x38, 0x4E, 0x01, 0x0A,
            0x00, 0x00,
        ];
        let p = parse(&bytes).expect("valid");
        assert_eq!(p.payload_type, 101);
        assert!(p.marker);
        assert_eq!(p.sequence, 7984);
        assert_eq!(p.timestamp, 13280);
        assert_eq!(p.ssrc, 0x0E05_384E);
        assert!(p.csrcs.as_slice().is_empty());
        assert_eq!(p.extension, None);
        assert_eq!(p.payload, &[0x01, 0x0A, 0x00, 0x00]);
        assert_eq!(p.padding, 0);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let mut bytes = vec![0x80 | 0x20 | 0x10 | 2, 8, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        bytes.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9]); // two CSRCs
        bytes.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // extension, 1 word
        bytes.extend_from_slice(&[0xD5; 5]); // payload
        bytes.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = parse(&bytes).expect("valid");
        assert_eq!(p.payload_type, 8);
        assert!(!p.marker);
        assert_eq!(p.sequence, 1);
        assert_eq!(p.timestamp, 160);
        assert_eq!(p.ssrc, 0x0102_0304);
        assert_eq!(p.csrcs.as_slice(), &[7, 9]);
        assert_eq!(
            p.extension,
            Some(RtpExtension {
                profile: 0xBEDE,
                data: &[0x10, 0xAA, 0, 0]
            })
        );
        assert_eq!(p.payload, &[0xD5; 5]);
        assert_eq!(p.padding, 3);
    }

    #[test]
    fn rejects_bad_packets() {
        assert!(matches!(parse(&[]), Err(RtpError::Truncated { .. })));
        assert!(matches!(
            parse(&[0x80; 11]),
            Err(RtpError::Truncated { .. })
        ));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::Version(1)));
        // Claims 3 CSRCs, has none.
        let mut bytes = [0u8; 12];
        bytes[0] = 0x83;
        assert!(matches!(parse(&bytes), Err(RtpError::Truncated { .. })));
        // Extension header claims 200 words.
        let mut bytes = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200];
        bytes.extend_from_slice(&[0; 8]);
        assert!(matches!(parse(&bytes), Err(RtpError::Truncated { .. })));
        // Padding count of zero, and padding longer than the payload.
        let mut bytes = vec![0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0];
        assert_eq!(parse(&bytes), Err(RtpError::Padding));
        if let Some(last) = bytes.last_mut() {
            *last = 9;
        }
        assert!(matches!(parse(&bytes), Err(RtpError::Truncated { .. })));
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(3550);
        let mut ok = 0;
        for _ in 0..5000 {
            let len = rng.gen_range(0..80);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            // Make most of them version 2, so the deeper checks run.
            if let Some(first) = bytes.first_mut() {
                if rng.gen_bool(0.8) {
                    *first = (*first & 0x3F) | 0x80;
                }
            }
            if let Ok(p) = parse(&bytes) {
                ok += 1;
                assert!(p.payload.len() + 12 <= bytes.len());
                assert!(p.csrcs.as_slice().len() <= MAX_CSRCS);
            }
        }
        assert!(
            ok > 100,
            "only {ok} random packets parsed; the fuzzing is too shallow"
        );
        // Every prefix of a valid packet with all features.
        let mut full = vec![
            0x80 | 0x20 | 0x10 | 1,
            0x80 | 96,
            0,
            1,
            0,
            0,
            0,
            160,
            1,
            2,
            3,
            4,
        ];
        full.extend_from_slice(&[0, 0, 0, 7, 0xBE, 0xDE, 0, 1, 1, 2, 3, 4, 9, 9, 9, 0, 2]);
        assert!(parse(&full).is_ok());
        for cut in 0..full.len() {
            let _ = parse(&full[..cut]);
        }
    }

    #[test]
    fn written_packets_parse_back() {
        let header = RtpHeader {
            payload_type: 8,
            marker: true,
            sequence: 65535,
            timestamp: 0xFFFF_FF00,
            ssrc: 0xDEAD_BEEF,
        };
        let mut out = vec![0xFF]; // appended, not overwritten
        header.write(&[0xD5; 160], &mut out).expect("write");
        assert_eq!(out.len(), 1 + 12 + 160);
        let p = parse(&out[1..]).expect("parse");
        assert_eq!(
            (p.payload_type, p.marker, p.sequence, p.timestamp, p.ssrc),
            (8, true, 65535, 0xFFFF_FF00, 0xDEAD_BEEF)
        );
        assert_eq!(p.payload, &[0xD5; 160][..]);
        let bad = RtpHeader {
            payload_type: 128,
            ..header
        };
        assert_eq!(bad.write(&[], &mut out), Err(RtpError::PayloadType(128)));
    }

    #[test]
    fn sender_advances_and_wraps() {
        let mut sender = RtpSender::new(42, 65535, u32::MAX - 100, 160);
        let mut packets = Vec::new();
        for _ in 0..3 {
            let mut out = Vec::new();
            sender
                .write_frame(0, &[0xFF; 160], &mut out)
                .expect("write");
            packets.push(out);
        }
        let parsed: Vec<_> = packets.iter().map(|b| parse(b).expect("parse")).collect();
        assert_eq!(
            parsed
                .iter()
                .map(|p| (p.marker, p.sequence, p.timestamp, p.ssrc))
                .collect::<Vec<_>>(),
            vec![
                (true, 65535, u32::MAX - 100, 42),
                (false, 0, 59, 42),
                (false, 1, 219, 42),
            ]
        );
    }

    #[test]
    fn rtcp_is_recognised() {
        assert!(is_rtcp(&[0x80, 200, 0, 6]));
        assert!(is_rtcp(&[0x81, 201]));
        assert!(!is_rtcp(&[0x80, 0x08]));
        assert!(!is_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_rtcp(&[]));
    }
}
