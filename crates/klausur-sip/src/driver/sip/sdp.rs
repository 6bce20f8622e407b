//! SDP as plain data.
//!
//! The trunk's session descriptions (offers in INVITEs and re-INVITEs, answers in ACKs) are
//! parsed with ezk-sdp-types into [`RemoteSdp`]: the remote RTP address and, for the first usable
//! audio m-line, the offered formats in order. Ours are built from [`LocalMedia`] with the same
//! crate. Only plain RTP (`RTP/AVP`, `RTP/AVPF`) over an IP literal is usable; anything else is
//! [`SdpError::NoUsableAudio`] (answered 488 Not Acceptable Here).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sdp_types::{
    Connection, Direction, Fmtp, Media, MediaDescription, MediaType, Origin, RtpMap,
    SessionDescription, TaggedAddress, Time, TransportProtocol, UnknownAttribute,
};

/// At most this many formats of an m-line are kept (a real offer has a handful).
const MAX_FORMATS: usize = 32;

/// One RTP payload format of an audio m-line (`a=rtpmap`, `a=fmtp`, or the static table of
/// RFC 3551 for payload types without an rtpmap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFormat {
    /// RTP payload type.
    pub payload_type: u8,
    /// Encoding name as given (`PCMU`, `opus`, `telephone-event`); compare case-insensitively.
    pub encoding: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Audio channels (1 when not given).
    pub channels: u8,
    /// Format parameters (`a=fmtp`), if any.
    pub fmtp: Option<String>,
}

impl MediaFormat {
    /// A format with the given fields.
    pub fn new(
        payload_type: u8,
        encoding: &str,
        clock_rate: u32,
        channels: u8,
        fmtp: Option<&str>,
    ) -> MediaFormat {
        MediaFormat {
            payload_type,
            encoding: encoding.to_string(),
            clock_rate,
            channels,
            fmtp: fmtp.map(str::to_string),
        }
    }

    /// G.711 µ-law, static payload type 0.
    pub fn pcmu() -> MediaFormat {
        MediaFormat::new(0, "PCMU", 8000, 1, None)
    }

    /// G.711 A-law, static payload type 8.
    pub fn pcma() -> MediaFormat {
        MediaFormat::new(8, "PCMA", 8000, 1, None)
    }

    /// Opus (RFC 7587: always `opus/48000/2` in SDP) on a dynamic payload type.
    pub fn opus(payload_type: u8) -> MediaFormat {
        MediaFormat::new(
            payload_type,
            "opus",
            48000,
            2,
            Some("minptime=10;useinbandfec=1"),
        )
    }

    /// RFC 4733 telephone events 0-16 (DTMF) at `clock_rate`.
    pub fn telephone_event(payload_type: u8, clock_rate: u32) -> MediaFormat {
        MediaFormat::new(payload_type, "telephone-event", clock_rate, 1, Some("0-16"))
    }

    /// Whether this is RFC 4733 `telephone-event`.
    pub fn is_telephone_event(&self) -> bool {
        self.encoding.eq_ignore_ascii_case("telephone-event")
    }

    /// Same encoding, clock rate and channels (the payload type may differ).
    pub fn same_encoding(&self, other: &MediaFormat) -> bool {
        self.encoding.eq_ignore_ascii_case(&other.encoding)
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }
}

/// Media direction of an m-line (RFC 3264).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDirection {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    /// The direction an answer gives to an offer with this direction.
    pub fn answer(self) -> MediaDirection {
        match self {
            MediaDirection::SendRecv => MediaDirection::SendRecv,
            MediaDirection::SendOnly => MediaDirection::RecvOnly,
            MediaDirection::RecvOnly => MediaDirection::SendOnly,
            MediaDirection::Inactive => MediaDirection::Inactive,
        }
    }

    fn from_sdp(direction: Direction) -> MediaDirection {
        match direction {
            Direction::SendRecv => MediaDirection::SendRecv,
            Direction::SendOnly => MediaDirection::SendOnly,
            Direction::RecvOnly => MediaDirection::RecvOnly,
            Direction::Inactive => MediaDirection::Inactive,
        }
    }

    fn to_sdp(self) -> Direction {
        match self {
            MediaDirection::SendRecv => Direction::SendRecv,
            MediaDirection::SendOnly => Direction::SendOnly,
            MediaDirection::RecvOnly => Direction::RecvOnly,
            MediaDirection::Inactive => Direction::Inactive,
        }
    }
}

/// The trunk's session description: where to send RTP, and what it offers or answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSdp {
    /// Remote RTP address: connection address and port of the audio m-line. An address of
    /// `0.0.0.0` is the old way to put a call on hold (RFC 2543): send nothing.
    pub rtp_addr: SocketAddr,
    /// The audio m-line's formats in the order given.
    pub formats: Vec<MediaFormat>,
    /// Direction of the audio m-line (session-level attribute if the m-line has none).
    pub direction: MediaDirection,
    /// `a=ptime` in milliseconds, if given.
    pub ptime: Option<u32>,
    /// The SDP origin's session id and version (`o=`), to tell a changed description.
    pub origin: (String, String),
}

impl RemoteSdp {
    /// The first offered format with the same encoding as `wanted` (any payload type).
    pub fn find(&self, wanted: &MediaFormat) -> Option<&MediaFormat> {
        self.formats.iter().find(|f| f.same_encoding(wanted))
    }

    /// The first offered telephone-event format with this clock rate.
    pub fn telephone_event(&self, clock_rate: u32) -> Option<&MediaFormat> {
        self.formats
            .iter()
            .find(|f| f.is_telephone_event() && f.clock_rate == clock_rate)
    }

    /// Whether the remote side put the call on hold (it does not want to receive audio).
    pub fn on_hold(&self) -> bool {
        self.rtp_addr.ip().is_unspecified()
            || matches!(
                self.direction,
                MediaDirection::SendOnly | MediaDirection::Inactive
            )
    }
}

/// Why a session description is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("the SDP is not valid UTF-8")]
    NotUtf8,
    #[error("the SDP does not parse: {0}")]
    Syntax(String),
    #[error("the SDP has no usable audio stream (plain RTP over an IP address)")]
    NoUsableAudio,
}

/// Parses a session description from a message body.
pub fn parse_remote_sdp(body: &[u8]) -> Result<RemoteSdp, SdpError> {
    let text =
        BytesStr::from_utf8_bytes(Bytes::copy_from_slice(body)).map_err(|_| SdpError::NotUtf8)?;
    let sdp = SessionDescription::parse(&text).map_err(|e| {
        // The parser's message quotes the input: cut it on a character boundary.
        SdpError::Syntax(e.to_string().chars().take(120).collect())
    })?;
    remote_from_description(&sdp)
}

fn remote_from_description(sdp: &SessionDescription) -> Result<RemoteSdp, SdpError> {
    let audio = sdp
        .media_descriptions
        .iter()
        .find(|m| {
            m.media.media_type == MediaType::Audio
                && m.media.port != 0
                && matches!(
                    m.media.proto,
                    TransportProtocol::RtpAvp | TransportProtocol::RtpAvpf
                )
        })
        .ok_or(SdpError::NoUsableAudio)?;
    let connection = audio
        .connection
        .as_ref()
        .or(sdp.connection.as_ref())
        .ok_or(SdpError::NoUsableAudio)?;
    let ip: IpAddr = match &connection.address {
        TaggedAddress::IP4(ip) => IpAddr::V4(*ip),
        TaggedAddress::IP6(ip) => IpAddr::V6(*ip),
        TaggedAddress::IP4FQDN(_) | TaggedAddress::IP6FQDN(_) => {
            return Err(SdpError::NoUsableAudio)
        }
    };
    let mut formats = Vec::new();
    for &pt in audio.media.fmts.iter().take(MAX_FORMATS) {
        let rtpmap = audio.rtpmap.iter().find(|r| r.payload == pt);
        let format = match rtpmap {
            Some(r) => MediaFormat {
                payload_type: pt,
                encoding: r.encoding.as_str().trim().to_string(),
                clock_rate: r.clock_rate,
                channels: r
                    .params
                    .as_ref()
                    .and_then(|p| p.trim().parse::<u8>().ok())
                    .unwrap_or(1),
                fmtp: None,
            },
            None => match static_format(pt) {
                Some(f) => f,
                // A dynamic payload type without rtpmap means nothing.
                None => continue,
            },
        };
        let fmtp = audio
            .fmtp
            .iter()
            .find(|f| f.format == pt)
            .map(|f| f.params.as_str().trim().to_string());
        formats.push(MediaFormat { fmtp, ..format });
    }
    if formats.is_empty() {
        return Err(SdpError::NoUsableAudio);
    }
    let ptime = audio
        .attributes
        .iter()
        .find(|a| a.name.as_str() == "ptime")
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.trim().parse::<u32>().ok());
    Ok(RemoteSdp {
        rtp_addr: SocketAddr::new(ip, audio.media.port),
        formats,
        direction: MediaDirection::from_sdp(audio.direction),
        ptime,
        origin: (
            sdp.origin.session_id.as_str().to_string(),
            sdp.origin.session_version.as_str().to_string(),
        ),
    })
}

/// RFC 3551 static audio payload types that trunks send without an rtpmap.
fn static_format(pt: u8) -> Option<MediaFormat> {
    let (name, rate) = match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    };
    Some(MediaFormat::new(pt, name, rate, 1, None))
}

/// Our side of the media: what goes into our SDP (an answer to the trunk's offer, or our offer
/// when the INVITE had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Where we receive RTP (the RTP address and the allocated port).
    pub rtp_addr: SocketAddr,
    /// Formats in order of preference, telephone-event included. An answer lists the chosen
    /// codec (and telephone-event, if the offer had it); an offer may list several.
    pub formats: Vec<MediaFormat>,
    /// Packet time in milliseconds (20).
    pub ptime: u32,
}

impl LocalMedia {
    /// Local media with ptime 20.
    pub fn new(rtp_addr: SocketAddr, formats: Vec<MediaFormat>) -> LocalMedia {
        LocalMedia {
            rtp_addr,
            formats,
            ptime: 20,
        }
    }
}

/// Our SDP: one audio m-line, stable session id, version bumped by the caller when it changes.
#[derive(Debug, Clone)]
pub(crate) struct LocalSdp {
    pub(crate) media: LocalMedia,
    pub(crate) session_id: u64,
    pub(crate) version: u64,
    pub(crate) direction: MediaDirection,
}

impl LocalSdp {
    pub(crate) fn new(media: LocalMedia) -> LocalSdp {
        LocalSdp {
            media,
            session_id: rand::random::<u32>() as u64,
            version: 1,
            direction: MediaDirection::SendRecv,
        }
    }

    /// Sets the direction; bumps the version when it changes.
    pub(crate) fn set_direction(&mut self, direction: MediaDirection) {
        if self.direction != direction {
            self.direction = direction;
            self.version += 1;
        }
    }

    pub(crate) fn render(&self) -> String {
        let ip = self.media.rtp_addr.ip();
        let mut rtpmap = Vec::new();
        let mut fmtp = Vec::new();
        for f in &self.media.formats {
            rtpmap.push(RtpMap {
                payload: f.payload_type,
                encoding: BytesStr::from(f.encoding.as_str()),
                clock_rate: f.clock_rate,
                params: (f.channels > 1).then(|| BytesStr::from(f.channels.to_string())),
            });
            if let Some(p) = &f.fmtp {
                fmtp.push(Fmtp {
                    format: f.payload_type,
                    params: BytesStr::from(p.as_str()),
                });
            }
        }
        let mut audio = MediaDescription::rejected(MediaType::Audio);
        audio.media = Media {
            media_type: MediaType::Audio,
            port: self.media.rtp_addr.port(),
            ports_num: None,
            proto: TransportProtocol::RtpAvp,
            fmts: self.media.formats.iter().map(|f| f.payload_type).collect(),
        };
        audio.direction = self.direction.to_sdp();
        audio.rtpmap = rtpmap;
        audio.fmtp = fmtp;
        audio.attributes = vec![UnknownAttribute {
            name: BytesStr::from_static("ptime"),
            value: Some(BytesStr::from(self.media.ptime.to_string())),
        }];
        let sdp = SessionDescription {
            origin: Origin {
                username: BytesStr::from_static("-"),
                session_id: BytesStr::from(self.session_id.to_string()),
                session_version: BytesStr::from(self.version.to_string()),
                address: TaggedAddress::from(ip),
            },
            name: BytesStr::from_static("klausur"),
            connection: Some(Connection {
                address: TaggedAddress::from(ip),
                ttl: None,
                num: None,
            }),
            bandwidth: vec![],
            time: Time { start: 0, stop: 0 },
            direction: Direction::SendRecv,
            group: vec![],
            extmap: vec![],
            extmap_allow_mixed: false,
            ice_lite: false,
            ice_options: Default::default(),
            ice_ufrag: None,
            ice_pwd: None,
            setup: None,
            fingerprint: vec![],
            attributes: vec![],
            media_descriptions: vec![audio],
        };
        sdp.to_string()
    }
}

impl fmt::Display for MediaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{}/{}",
            self.payload_type, self.encoding, self.clock_rate, self.channels
        )
    }
}

#[cfg(test)]
mod tests {
    /// Found by the fuzz target `sip_sdp`: a syntax error whose message quotes multi-byte
    /// characters at the cut-off used to panic (`String::truncate` inside a character).
    #[test]
    fn syntax_errors_with_multibyte_input_are_errors() {
        let mut body = b"v=0\r\no=5\x0f\x0f\x0f  1Pv".to_vec();
        body.extend("ä".repeat(200).as_bytes());
        body.extend(b"\r\nI=4");
        assert!(super::parse_remote_sdp(&body).is_err());
        let crash = [
            0x76, 0x3d, 0x30, 0x0d, 0x0a, 0x6f, 0x3d, 0x35, 0x0f, 0x0f, 0x0f, 0x20, 0x20, 0x31,
            0x50, 0x76, 0x49, 0x00, 0x00, 0x00, 0xda, 0xb6, 0x2c, 0x4e, 0x49, 0x3d, 0x34,
        ];
        assert!(super::parse_remote_sdp(&crash).is_err());
    }

    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
        a=ptime:20\r\n";

    #[test]
    fn parses_offer_in_order_with_static_types() {
        let sdp = parse_remote_sdp(OFFER.as_bytes()).expect("parses");
        assert_eq!(sdp.rtp_addr, "127.0.0.1:6000".parse().expect("addr"));
        assert_eq!(
            sdp.formats,
            vec![
                MediaFormat::pcmu(),
                MediaFormat::pcma(),
                MediaFormat::new(101, "telephone-event", 8000, 1, Some("0-15")),
            ]
        );
        assert_eq!(sdp.ptime, Some(20));
        assert_eq!(sdp.direction, MediaDirection::SendRecv);
        assert!(sdp.telephone_event(8000).is_some());
        assert!(!sdp.on_hold());
    }

    #[test]
    fn hold_and_session_level_direction() {
        let held = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
        let sdp = parse_remote_sdp(held.as_bytes()).expect("parses");
        assert_eq!(sdp.direction, MediaDirection::SendOnly);
        assert!(sdp.on_hold());
        assert_eq!(sdp.direction.answer(), MediaDirection::RecvOnly);
    }

    #[test]
    fn rejects_unusable() {
        assert_eq!(parse_remote_sdp(&[0xff, 0xfe]), Err(SdpError::NotUtf8));
        assert!(matches!(
            parse_remote_sdp(b"v=0\r\nm=audio x RTP/AVP 0\r\n"),
            Err(SdpError::Syntax(_))
        ));
        let srtp = OFFER.replace("RTP/AVP", "RTP/SAVP");
        assert_eq!(
            parse_remote_sdp(srtp.as_bytes()),
            Err(SdpError::NoUsableAudio)
        );
        let fqdn = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 pbx.example");
        assert_eq!(
            parse_remote_sdp(fqdn.as_bytes()),
            Err(SdpError::NoUsableAudio)
        );
        let video_only = OFFER.replace("m=audio", "m=video");
        assert_eq!(
            parse_remote_sdp(video_only.as_bytes()),
            Err(SdpError::NoUsableAudio)
        );
    }

    #[test]
    fn local_sdp_round_trips() {
        let media = LocalMedia::new(
            "192.0.2.10:20000".parse().expect("addr"),
            vec![
                MediaFormat::pcma(),
                MediaFormat::opus(111),
                MediaFormat::telephone_event(101, 8000),
            ],
        );
        let mut local = LocalSdp::new(media.clone());
        local.set_direction(MediaDirection::RecvOnly);
        let text = local.render();
        assert!(text.contains("a=ptime:20\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
        let parsed = parse_remote_sdp(text.as_bytes()).expect("our SDP parses");
        assert_eq!(parsed.rtp_addr, media.rtp_addr);
        assert_eq!(parsed.formats, media.formats);
        assert_eq!(parsed.direction, MediaDirection::RecvOnly);
        assert_eq!(parsed.origin.1, "2");
    }
}
