//! Audio codecs of the trunk leg and the meeting side, and the trunk's codec negotiation.
//!
//! # Negotiation (independent of any SDP parser)
//!
//! The driver turns the offer's audio m-line into a list of [`OfferedCodec`] (in the offerer's
//! order, from `a=rtpmap` / `a=fmtp`, or the static table for payload types 0 and 8 without an
//! rtpmap) and calls [`negotiate`]. It picks the first offered codec we support, honouring the
//! offerer's preference:
//!
//! - `PCMA/8000` ([`AudioCodec::Pcma`]), `PCMU/8000` ([`AudioCodec::Pcmu`]), one channel;
//! - `opus/48000/2` ([`AudioCodec::Opus`], RFC 7587; `opus/48000` with one channel is accepted
//!   too, as some peers write it).
//!
//! Names compare case-insensitively; payload types above 127 are ignored. Nothing usable is
//! [`NegotiationError::NoCommonCodec`] (answer 488). [`Negotiated::telephone_event`] is the
//! offer's `telephone-event` payload type at the chosen codec's clock rate; if the offer has
//! `telephone-event` only at another rate (baresip offers `telephone-event/8000` next to Opus),
//! that one is taken, because the DTMF receiver does not depend on the event clock rate and a
//! caller without DTMF could not get past the voice menu. [`Negotiated::answer`] lists the
//! formats for our SDP answer: the chosen codec and the telephone-event, with the offerer's
//! payload types and our fmtp.
//!
//! For an INVITE without SDP we make the offer: [`our_offer`] = PCMA (8), PCMU (0), Opus
//! ([`OPUS_PAYLOAD_TYPE`]), telephone-event/8000 ([`TELEPHONE_EVENT_8K_PAYLOAD_TYPE`]) and
//! telephone-event/48000 ([`TELEPHONE_EVENT_48K_PAYLOAD_TYPE`]). The answer to it goes through
//! [`negotiate`] the same way. Put `a=ptime:20` in every SDP we send: all codecs here run in
//! 20 ms frames.
//!
//! # Per-leg codecs
//!
//! [`TrunkDecoder`] and [`TrunkEncoder`] are made for the negotiated [`AudioCodec`]. PCM is at
//! the leg's rate ([`AudioCodec::sample_rate`]: 8000 for G.711, 48000 for Opus), mono, one
//! frame of [`AudioCodec::frame_samples`] (160 or 960) per call.
//!
//! - [`TrunkDecoder::decode`] returns the PCM of one payload. A payload that is not exactly one
//!   20 ms frame, or that libopus rejects, is a [`CodecError`] (the driver conceals instead).
//! - [`TrunkDecoder::conceal`] fills a lost frame. G.711: the last 20 ms continued at the
//!   detected pitch period (so the waveform carries on without a jump), faded from full level to
//!   silence over three frames (60 ms), then silence; the first good frame after a loss is
//!   cross-faded in over 5 ms. Opus: libopus's packet-loss concealment.
//!   [`TrunkDecoder::conceal_with_next`] uses the in-band FEC of the packet after the gap (Opus;
//!   [`super::jitter::JitterBuffer::peek`]) and falls back to concealment.
//! - [`TrunkEncoder::encode`] turns one frame into a payload; [`TrunkEncoder::silence`] is the
//!   payload to send when there is nothing to say (G.711: 160 bytes of the law's zero; Opus: an
//!   encoded silent frame), so the leg keeps sending and the trunk's RTP timeout never fires.
//!   RFC 3389 comfort noise is not negotiated; digital silence in the leg's own codec is what
//!   every trunk accepts.
//!
//! # Meeting side
//!
//! The meeting runs Opus at 48 kHz mono, 20 ms. [`OpusDecoder`] decodes each remote track once
//! per meeting (the bridge owns one per track), with [`OpusDecoder::conceal`] and
//! [`OpusDecoder::decode_fec`] for losses. [`OpusEncoder`] encodes each caller's voice for the
//! meeting ([`OpusEncoder::new`]`(48000, OpusSettings::default())`; 8000 is accepted too, to
//! feed a G.711 caller's voice without resampling: the RTP clock of Opus is 48 kHz either way).
//!
//! Voice settings ([`OpusSettings::default`]): VOIP application, voice signal, 32 kbit/s VBR,
//! in-band FEC on with an expected loss of 5 %, DTX off (a silent caller still sends frames, so
//! the stream never looks dead), complexity 5 (of 0-10: the gateway runs one encoder per caller,
//! and speech at 32 kbit/s gains little from the top settings).
//!
//! Opus is libopus through the `opus` crate; G.711 is [`super::g711`]. Every decoder and encoder
//! works in buffers allocated once at construction and returns borrowed slices of them.

use super::g711::Law;

/// Our dynamic payload type for Opus (when we make the offer).
pub const OPUS_PAYLOAD_TYPE: u8 = 96;
/// Our payload type for `telephone-event/8000`.
pub const TELEPHONE_EVENT_8K_PAYLOAD_TYPE: u8 = 101;
/// Our payload type for `telephone-event/48000`.
pub const TELEPHONE_EVENT_48K_PAYLOAD_TYPE: u8 = 102;
/// The fmtp of our telephone-event formats: the 16 DTMF keys.
pub const TELEPHONE_EVENT_FMTP: &str = "0-15";
/// The fmtp of our Opus format: 20 ms packets, in-band FEC, mono both ways.
pub const OPUS_FMTP: &str = "minptime=20;useinbandfec=1;stereo=0;sprop-stereo=0";
/// Largest Opus packet we produce or accept from libopus (RFC 6716: 1275 bytes per frame).
const MAX_OPUS_PACKET: usize = 1500;
/// Largest decoded Opus packet: 120 ms at 48 kHz.
const MAX_OPUS_SAMPLES: usize = 5760;

/// One format of an offer's audio m-line, as the SDP layer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedCodec {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding name (`PCMA`, `opus`, `telephone-event`, ...); empty for a static payload type
    /// without an rtpmap.
    pub name: String,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
    /// Channels (1 when the rtpmap does not say).
    pub channels: u8,
    /// The `a=fmtp` parameters, if any.
    pub fmtp: Option<String>,
}

impl OfferedCodec {
    /// A format with these fields.
    pub fn new(pt: u8, name: &str, clock_rate: u32, channels: u8, fmtp: Option<&str>) -> Self {
        OfferedCodec {
            pt,
            name: name.to_string(),
            clock_rate,
            channels,
            fmtp: fmtp.map(str::to_string),
        }
    }

    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    fn is_telephone_event(&self) -> bool {
        self.is("telephone-event") && self.pt <= 127
    }

    /// The audio codec this format is, if we support it.
    pub fn audio_codec(&self) -> Option<AudioCodec> {
        if self.pt > 127 {
            return None;
        }
        if self.name.is_empty() {
            // Static payload types (RFC 3551) without an rtpmap.
            return match self.pt {
                0 => Some(AudioCodec::Pcmu),
                8 => Some(AudioCodec::Pcma),
                _ => None,
            };
        }
        let mono = self.channels <= 1;
        if self.is("PCMA") && self.clock_rate == 8000 && mono {
            Some(AudioCodec::Pcma)
        } else if self.is("PCMU") && self.clock_rate == 8000 && mono {
            Some(AudioCodec::Pcmu)
        } else if self.is("opus") && self.clock_rate == 48000 && self.channels <= 2 {
            Some(AudioCodec::Opus)
        } else {
            None
        }
    }
}

/// An audio codec of the trunk leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 A-law.
    Pcma,
    /// G.711 µ-law.
    Pcmu,
    /// Opus (RFC 7587).
    Opus,
}

impl AudioCodec {
    /// The SDP encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Opus => "opus",
        }
    }

    /// The RTP clock rate (and the SDP rate).
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Pcma | AudioCodec::Pcmu => 8000,
            AudioCodec::Opus => 48000,
        }
    }

    /// The channel count written in SDP (Opus is always `/2`, RFC 7587).
    pub fn sdp_channels(self) -> u8 {
        match self {
            AudioCodec::Pcma | AudioCodec::Pcmu => 1,
            AudioCodec::Opus => 2,
        }
    }

    /// The PCM sample rate of the leg's decoded audio (mono).
    pub fn sample_rate(self) -> u32 {
        self.clock_rate()
    }

    /// Samples per 20 ms frame at [`AudioCodec::sample_rate`].
    pub fn frame_samples(self) -> usize {
        match self {
            AudioCodec::Pcma | AudioCodec::Pcmu => 160,
            AudioCodec::Opus => 960,
        }
    }

    /// RTP timestamp increment per 20 ms frame.
    pub fn frame_ticks(self) -> u32 {
        self.clock_rate() / 50
    }

    /// The static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcma => Some(8),
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Opus => None,
        }
    }

    /// Our fmtp for this codec.
    pub fn fmtp(self) -> Option<&'static str> {
        match self {
            AudioCodec::Opus => Some(OPUS_FMTP),
            _ => None,
        }
    }

    fn law(self) -> Option<Law> {
        match self {
            AudioCodec::Pcma => Some(Law::ALaw),
            AudioCodec::Pcmu => Some(Law::MuLaw),
            AudioCodec::Opus => None,
        }
    }
}

/// The outcome of [`negotiate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The chosen codec.
    pub codec: AudioCodec,
    /// Its payload type (the offerer's number; we send and receive with it).
    pub payload_type: u8,
    /// The offerer's fmtp for it (for Opus: `maxaveragebitrate`, `useinbandfec`, ...).
    pub remote_fmtp: Option<String>,
    /// The telephone-event payload type, if the offer has one.
    pub telephone_event: Option<u8>,
    /// Its clock rate (the codec's, unless only another rate was offered).
    pub telephone_event_clock_rate: Option<u32>,
}

impl Negotiated {
    /// The formats of our answer, in order: the codec, then telephone-event.
    pub fn answer(&self) -> Vec<OfferedCodec> {
        let mut formats = vec![OfferedCodec::new(
            self.payload_type,
            self.codec.encoding_name(),
            self.codec.clock_rate(),
            self.codec.sdp_channels(),
            self.codec.fmtp(),
        )];
        if let (Some(pt), Some(rate)) = (self.telephone_event, self.telephone_event_clock_rate) {
            formats.push(OfferedCodec::new(
                pt,
                "telephone-event",
                rate,
                1,
                Some(TELEPHONE_EVENT_FMTP),
            ));
        }
        formats
    }
}

/// An offer we cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// No offered audio codec is PCMA, PCMU or Opus.
    #[error("no common audio codec (we support PCMA, PCMU and opus)")]
    NoCommonCodec,
}

/// Picks the codec for an offer (formats in the offerer's order). See the module docs.
pub fn negotiate(offer: &[OfferedCodec]) -> Result<Negotiated, NegotiationError> {
    let (format, codec) = offer
        .iter()
        .find_map(|f| f.audio_codec().map(|c| (f, c)))
        .ok_or(NegotiationError::NoCommonCodec)?;
    let events = || offer.iter().filter(|f| f.is_telephone_event());
    let event = events()
        .find(|f| f.clock_rate == codec.clock_rate())
        .or_else(|| events().next());
    Ok(Negotiated {
        codec,
        payload_type: format.pt,
        remote_fmtp: format.fmtp.clone(),
        telephone_event: event.map(|f| f.pt),
        telephone_event_clock_rate: event.map(|f| f.clock_rate),
    })
}

/// What we offer when an INVITE comes without SDP: PCMA, PCMU, Opus, telephone-event at 8000
/// and 48000, with our payload types and fmtp.
pub fn our_offer() -> Vec<OfferedCodec> {
    vec![
        OfferedCodec::new(8, "PCMA", 8000, 1, None),
        OfferedCodec::new(0, "PCMU", 8000, 1, None),
        OfferedCodec::new(OPUS_PAYLOAD_TYPE, "opus", 48000, 2, Some(OPUS_FMTP)),
        OfferedCodec::new(
            TELEPHONE_EVENT_8K_PAYLOAD_TYPE,
            "telephone-event",
            8000,
            1,
            Some(TELEPHONE_EVENT_FMTP),
        ),
        OfferedCodec::new(
            TELEPHONE_EVENT_48K_PAYLOAD_TYPE,
            "telephone-event",
            48000,
            1,
            Some(TELEPHONE_EVENT_FMTP),
        ),
    ]
}

/// A payload that cannot be decoded, or PCM that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused (a corrupt packet, a bad setting).
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// The payload is not one 20 ms frame (G.711: not 160 bytes; Opus: decodes to another
    /// duration).
    #[error("payload holds {samples} samples, not one 20 ms frame of {expected}")]
    FrameDuration {
        /// Samples the payload holds.
        samples: usize,
        /// Samples of one frame.
        expected: usize,
    },
    /// An empty payload.
    #[error("empty payload")]
    Empty,
    /// PCM handed to an encoder is not one frame.
    #[error("{got} PCM samples given, one frame is {expected}")]
    PcmLength {
        /// Samples given.
        got: usize,
        /// Samples of one frame.
        expected: usize,
    },
    /// An Opus encoder asked for a sample rate libopus does not take here (8000 or 48000).
    #[error("unsupported Opus sample rate {0}")]
    SampleRate(u32),
}

/// Voice settings of an [`OpusEncoder`]. See the module docs for the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusSettings {
    /// Target bitrate in bit/s.
    pub bitrate: i32,
    /// Encoder complexity 0-10.
    pub complexity: i32,
    /// In-band forward error correction.
    pub fec: bool,
    /// Expected packet loss in percent (steers how much FEC is spent).
    pub expected_loss_percent: i32,
    /// Discontinuous transmission (off: keep sending during silence).
    pub dtx: bool,
}

impl Default for OpusSettings {
    fn default() -> Self {
        OpusSettings {
            bitrate: 32_000,
            complexity: 5,
            fec: true,
            expected_loss_percent: 5,
            dtx: false,
        }
    }
}

/// Opus decoder to 48 kHz mono, one 20 ms frame per packet. See the module docs.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    pcm: Box<[i16; MAX_OPUS_SAMPLES]>,
    /// Samples of a 20 ms frame at the output rate.
    frame: usize,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder").finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// A decoder to 48 kHz mono (stereo streams are mixed down by libopus).
    pub fn new() -> Result<OpusDecoder, CodecError> {
        OpusDecoder::with_rate(48000)
    }

    /// A decoder to mono at `sample_rate` (48000, or 8000 for a meeting heard only by
    /// narrowband phone legs: libopus then skips what the telephone band cannot carry).
    pub fn with_rate(sample_rate: u32) -> Result<OpusDecoder, CodecError> {
        if sample_rate != 48000 && sample_rate != 8000 {
            return Err(CodecError::SampleRate(sample_rate));
        }
        Ok(OpusDecoder {
            decoder: opus::Decoder::new(sample_rate, opus::Channels::Mono)?,
            pcm: Box::new([0; MAX_OPUS_SAMPLES]),
            frame: sample_rate as usize / 50,
        })
    }

    /// Samples of a decoded 20 ms frame (960 at 48 kHz, 160 at 8 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Decodes one packet (one 20 ms frame).
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16], CodecError> {
        if payload.is_empty() {
            return Err(CodecError::Empty);
        }
        let n = self.decoder.decode(payload, &mut self.pcm[..], false)?;
        if n != self.frame {
            return Err(CodecError::FrameDuration {
                samples: n,
                expected: self.frame,
            });
        }
        Ok(&self.pcm[..n])
    }

    /// Conceals one lost frame (libopus PLC; one 20 ms frame).
    pub fn conceal(&mut self) -> Result<&[i16], CodecError> {
        let n = self
            .decoder
            .decode(&[], &mut self.pcm[..self.frame], false)?;
        Ok(&self.pcm[..n.min(self.frame)])
    }

    /// Rebuilds one lost frame from the FEC data in `next`, the packet after the gap (PLC if it
    /// carries none or cannot be read). Decode `next` itself normally afterwards.
    pub fn decode_fec(&mut self, next: &[u8]) -> Result<&[i16], CodecError> {
        let frame = self.frame;
        let fec = if next.is_empty() {
            None
        } else {
            self.decoder.decode(next, &mut self.pcm[..frame], true).ok()
        };
        let n = match fec {
            Some(n) => n,
            None => self.decoder.decode(&[], &mut self.pcm[..frame], false)?,
        };
        Ok(&self.pcm[..n.min(frame)])
    }
}

/// Opus encoder of mono speech, one 20 ms frame per packet. See the module docs.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    frame: usize,
    packet: Box<[u8; MAX_OPUS_PACKET]>,
    silence: Vec<i16>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("frame", &self.frame)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// An encoder for mono PCM at `sample_rate` (48000, or 8000 for a G.711 caller's voice).
    pub fn new(sample_rate: u32, settings: OpusSettings) -> Result<OpusEncoder, CodecError> {
        if sample_rate != 48000 && sample_rate != 8000 {
            return Err(CodecError::SampleRate(sample_rate));
        }
        let mut encoder =
            opus::Encoder::new(sample_rate, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_signal(opus::Signal::Voice)?;
        encoder.set_bitrate(opus::Bitrate::Bits(settings.bitrate))?;
        encoder.set_vbr(true)?;
        encoder.set_complexity(settings.complexity)?;
        encoder.set_inband_fec(settings.fec)?;
        encoder.set_packet_loss_perc(settings.expected_loss_percent)?;
        encoder.set_dtx(settings.dtx)?;
        let frame = sample_rate as usize / 50;
        Ok(OpusEncoder {
            encoder,
            frame,
            packet: Box::new([0; MAX_OPUS_PACKET]),
            silence: vec![0; frame],
        })
    }

    /// Samples per frame (960 at 48 kHz, 160 at 8 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame
    }

    /// Encodes one frame.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8], CodecError> {
        if pcm.len() != self.frame {
            return Err(CodecError::PcmLength {
                got: pcm.len(),
                expected: self.frame,
            });
        }
        let n = self.encoder.encode(pcm, &mut self.packet[..])?;
        Ok(&self.packet[..n.min(MAX_OPUS_PACKET)])
    }

    /// Encodes one frame of silence.
    pub fn silence(&mut self) -> Result<&[u8], CodecError> {
        let n = self.encoder.encode(&self.silence, &mut self.packet[..])?;
        Ok(&self.packet[..n.min(MAX_OPUS_PACKET)])
    }
}

/// Frames of fading concealment (then silence).
const PLC_FADE_FRAMES: usize = 3;
/// Level at the start of each concealed frame; the last entry is the level at the end.
const PLC_GAINS: [f32; PLC_FADE_FRAMES + 1] = [1.0, 0.7, 0.35, 0.0];
/// Samples over which the first good frame after a loss is cross-faded in (5 ms).
const PLC_CROSSFADE: usize = 40;
/// History kept for the pitch search (two frames).
const PLC_HISTORY: usize = 320;
/// Pitch lags searched (8 kHz samples: 400 Hz down to 57 Hz).
const PLC_MIN_LAG: usize = 20;
const PLC_MAX_LAG: usize = 140;
/// Correlation window of the pitch search.
const PLC_WINDOW: usize = 80;
/// G.711 frame: 20 ms at 8 kHz.
const G711_FRAME: usize = 160;

/// G.711 decoder with concealment. See the module docs.
#[derive(Debug, Clone)]
pub struct G711Decoder {
    law: Law,
    pcm: [i16; G711_FRAME],
    /// The last `PLC_HISTORY` output samples before the current loss.
    history: [i16; PLC_HISTORY],
    /// Frames concealed in a row.
    lost: usize,
    /// Pitch lag of the current concealment.
    lag: usize,
    /// Position in the periodic continuation.
    phase: usize,
}

impl G711Decoder {
    /// A decoder for `law`.
    pub fn new(law: Law) -> G711Decoder {
        G711Decoder {
            law,
            pcm: [0; G711_FRAME],
            history: [0; PLC_HISTORY],
            lost: 0,
            lag: PLC_MIN_LAG,
            phase: 0,
        }
    }

    /// Decodes one payload of 160 bytes.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16], CodecError> {
        if payload.len() != G711_FRAME {
            return Err(CodecError::FrameDuration {
                samples: payload.len(),
                expected: G711_FRAME,
            });
        }
        self.law.decode_slice(payload, &mut self.pcm);
        if self.lost > 0 {
            // Cross-fade from where the concealment would have gone on.
            let gain = PLC_GAINS.get(self.lost).copied().unwrap_or(0.0);
            for n in 0..PLC_CROSSFADE {
                let w = 1.0 - (n as f32 + 0.5) / PLC_CROSSFADE as f32;
                let continued = gain * self.continuation(self.phase + n);
                if let Some(s) = self.pcm.get_mut(n) {
                    *s = (w * continued + (1.0 - w) * f32::from(*s)).round() as i16;
                }
            }
            self.lost = 0;
        }
        self.history.copy_within(G711_FRAME.., 0);
        self.history[PLC_HISTORY - G711_FRAME..].copy_from_slice(&self.pcm);
        Ok(&self.pcm)
    }

    /// Conceals one lost frame (160 samples).
    pub fn conceal(&mut self) -> &[i16] {
        if self.lost == 0 {
            self.lag = self.pitch_lag();
            self.phase = 0;
        }
        let (start, end) = match (PLC_GAINS.get(self.lost), PLC_GAINS.get(self.lost + 1)) {
            (Some(&a), Some(&b)) => (a, b),
            _ => (0.0, 0.0),
        };
        for n in 0..G711_FRAME {
            let g = start + (end - start) * n as f32 / G711_FRAME as f32;
            let x = if g > 0.0 {
                g * self.continuation(self.phase + n)
            } else {
                0.0
            };
            if let Some(s) = self.pcm.get_mut(n) {
                *s = x.round() as i16;
            }
        }
        self.phase += G711_FRAME;
        self.lost = self.lost.saturating_add(1);
        &self.pcm
    }

    /// The history continued periodically with the current lag.
    fn continuation(&self, n: usize) -> f32 {
        let lag = self.lag.clamp(1, PLC_HISTORY);
        let index = PLC_HISTORY - lag + n % lag;
        self.history.get(index).map_or(0.0, |&s| f32::from(s))
    }

    /// The lag (in samples) that best repeats the end of the history.
    fn pitch_lag(&self) -> usize {
        let end = &self.history[PLC_HISTORY - PLC_WINDOW..];
        let energy_end: f32 = end.iter().map(|&x| f32::from(x).powi(2)).sum();
        let mut best = (PLC_MIN_LAG, f32::MIN);
        for lag in PLC_MIN_LAG..=PLC_MAX_LAG {
            let start = PLC_HISTORY - PLC_WINDOW - lag;
            let past = &self.history[start..start + PLC_WINDOW];
            let (mut cross, mut energy) = (0f32, 0f32);
            for (&a, &b) in end.iter().zip(past) {
                cross += f32::from(a) * f32::from(b);
                energy += f32::from(b).powi(2);
            }
            let score = cross / (energy * energy_end).sqrt().max(1.0);
            if score > best.1 {
                best = (lag, score);
            }
        }
        best.0
    }
}

/// Decoder of the trunk leg. See the module docs.
#[derive(Debug)]
pub enum TrunkDecoder {
    /// PCMA or PCMU (boxed: its concealment history is larger than the Opus handle).
    G711(Box<G711Decoder>),
    /// Opus.
    Opus(OpusDecoder),
}

impl TrunkDecoder {
    /// A decoder for the negotiated codec.
    pub fn new(codec: AudioCodec) -> Result<TrunkDecoder, CodecError> {
        Ok(match codec.law() {
            Some(law) => TrunkDecoder::G711(Box::new(G711Decoder::new(law))),
            None => TrunkDecoder::Opus(OpusDecoder::new()?),
        })
    }

    /// The PCM rate of decoded frames (8000 or 48000).
    pub fn sample_rate(&self) -> u32 {
        match self {
            TrunkDecoder::G711(_) => 8000,
            TrunkDecoder::Opus(_) => 48000,
        }
    }

    /// Decodes one payload into one frame of PCM.
    pub fn decode(&mut self, payload: &[u8]) -> Result<&[i16], CodecError> {
        match self {
            TrunkDecoder::G711(d) => d.decode(payload),
            TrunkDecoder::Opus(d) => d.decode(payload),
        }
    }

    /// Conceals one lost frame.
    pub fn conceal(&mut self) -> Result<&[i16], CodecError> {
        match self {
            TrunkDecoder::G711(d) => Ok(d.conceal()),
            TrunkDecoder::Opus(d) => d.conceal(),
        }
    }

    /// Conceals one lost frame, using the FEC of the next packet when there is one (Opus).
    pub fn conceal_with_next(&mut self, next: Option<&[u8]>) -> Result<&[i16], CodecError> {
        match (self, next) {
            (TrunkDecoder::Opus(d), Some(next)) => d.decode_fec(next),
            (this, _) => this.conceal(),
        }
    }
}

/// G.711 encoder (stateless; kept as a type for symmetry).
#[derive(Debug, Clone)]
pub struct G711Encoder {
    law: Law,
    payload: [u8; G711_FRAME],
}

impl G711Encoder {
    /// An encoder for `law`.
    pub fn new(law: Law) -> G711Encoder {
        G711Encoder {
            law,
            payload: [law.silence(); G711_FRAME],
        }
    }

    /// Encodes one frame of 160 samples.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8], CodecError> {
        if pcm.len() != G711_FRAME {
            return Err(CodecError::PcmLength {
                got: pcm.len(),
                expected: G711_FRAME,
            });
        }
        self.law.encode_slice(pcm, &mut self.payload);
        Ok(&self.payload)
    }

    /// One frame of digital silence.
    pub fn silence(&mut self) -> &[u8] {
        self.payload = [self.law.silence(); G711_FRAME];
        &self.payload
    }
}

/// Encoder of the trunk leg. See the module docs.
#[derive(Debug)]
pub enum TrunkEncoder {
    /// PCMA or PCMU.
    G711(G711Encoder),
    /// Opus (48 kHz input).
    Opus(OpusEncoder),
}

impl TrunkEncoder {
    /// An encoder for the negotiated codec (Opus with `settings`).
    pub fn new(codec: AudioCodec, settings: OpusSettings) -> Result<TrunkEncoder, CodecError> {
        Ok(match codec.law() {
            Some(law) => TrunkEncoder::G711(G711Encoder::new(law)),
            None => TrunkEncoder::Opus(OpusEncoder::new(48000, settings)?),
        })
    }

    /// The PCM rate expected (8000 or 48000).
    pub fn sample_rate(&self) -> u32 {
        match self {
            TrunkEncoder::G711(_) => 8000,
            TrunkEncoder::Opus(_) => 48000,
        }
    }

    /// Encodes one frame of PCM into a payload.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<&[u8], CodecError> {
        match self {
            TrunkEncoder::G711(e) => e.encode(pcm),
            TrunkEncoder::Opus(e) => e.encode(pcm),
        }
    }

    /// The payload of one frame of silence, to keep the leg alive.
    pub fn silence(&mut self) -> Result<&[u8], CodecError> {
        match self {
            TrunkEncoder::G711(e) => Ok(e.silence()),
            TrunkEncoder::Opus(e) => e.silence(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, rate: u32, amplitude: f64, samples: usize, offset: usize) -> Vec<i16> {
        (0..samples)
            .map(|n| {
                let t = (n + offset) as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * freq * t).sin()).round() as i16
            })
            .collect()
    }

    /// Amplitude of the component at `freq` (Goertzel).
    fn amplitude_at(x: &[i16], freq: f64, rate: u32) -> f64 {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / f64::from(rate)).cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        2.0 * (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0).sqrt() / x.len() as f64
    }

    fn zero_crossings_per_second(x: &[i16], rate: u32) -> f64 {
        let crossings = x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        crossings as f64 * f64::from(rate) / x.len() as f64
    }

    fn db(x: f64) -> f64 {
        20.0 * x.log10()
    }

    /// Encodes and decodes `seconds` of a tone frame by frame; returns the decoded PCM.
    fn round_trip(codec: AudioCodec, freq: f64, amplitude: f64, frames: usize) -> Vec<i16> {
        let mut enc = TrunkEncoder::new(codec, OpusSettings::default()).expect("encoder");
        let mut dec = TrunkDecoder::new(codec).expect("decoder");
        let n = codec.frame_samples();
        assert_eq!(enc.sample_rate(), codec.sample_rate());
        assert_eq!(dec.sample_rate(), codec.sample_rate());
        let mut out = Vec::new();
        for k in 0..frames {
            let pcm = tone(freq, codec.sample_rate(), amplitude, n, k * n);
            let payload = enc.encode(&pcm).expect("encode").to_vec();
            let decoded = dec.decode(&payload).expect("decode");
            assert_eq!(decoded.len(), n);
            out.extend_from_slice(decoded);
        }
        out
    }

    #[test]
    fn g711_round_trip_keeps_frequency_and_level() {
        for codec in [AudioCodec::Pcma, AudioCodec::Pcmu] {
            let out = round_trip(codec, 1000.0, 10_000.0, 50);
            let a = amplitude_at(&out, 1000.0, 8000);
            assert!(db(a / 10_000.0).abs() < 0.2, "{codec:?}: {a}");
            assert!(amplitude_at(&out, 500.0, 8000) < a / 300.0, "{codec:?}");
            let zc = zero_crossings_per_second(&out, 8000);
            assert!((zc - 2000.0).abs() < 20.0, "{codec:?}: {zc}");
        }
    }

    #[test]
    fn opus_round_trip_keeps_frequency_and_level() {
        let out = round_trip(AudioCodec::Opus, 1000.0, 10_000.0, 50);
        // Skip the first 100 ms (encoder lookahead and start-up).
        let steady = &out[4800..];
        let a = amplitude_at(steady, 1000.0, 48000);
        assert!(db(a / 10_000.0).abs() < 2.0, "amplitude {a}");
        assert!(amplitude_at(steady, 500.0, 48000) < a / 30.0);
        let zc = zero_crossings_per_second(steady, 48000);
        assert!((zc - 2000.0).abs() < 40.0, "{zc}");
    }

    #[test]
    fn meeting_side_opus_pair_and_8k_input() {
        // The browser's 500 Hz test tone through the meeting decoder.
        let mut enc = OpusEncoder::new(48000, OpusSettings::default()).expect("encoder");
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        for k in 0..50 {
            let pcm = tone(500.0, 48000, 8000.0, 960, k * 960);
            let packet = enc.encode(&pcm).expect("encode").to_vec();
            out.extend_from_slice(dec.decode(&packet).expect("decode"));
        }
        let a = amplitude_at(&out[4800..], 500.0, 48000);
        assert!(db(a / 8000.0).abs() < 2.0, "{a}");
        assert!(amplitude_at(&out[4800..], 1000.0, 48000) < a / 30.0);

        // A G.711 caller's 8 kHz voice encoded directly; the meeting decodes at 48 kHz.
        let mut enc8 = OpusEncoder::new(8000, OpusSettings::default()).expect("encoder");
        assert_eq!(enc8.frame_samples(), 160);
        let mut dec = OpusDecoder::new().expect("decoder");
        let mut out = Vec::new();
        for k in 0..50 {
            let pcm = tone(1000.0, 8000, 8000.0, 160, k * 160);
            let packet = enc8.encode(&pcm).expect("encode").to_vec();
            out.extend_from_slice(dec.decode(&packet).expect("decode"));
        }
        let a = amplitude_at(&out[4800..], 1000.0, 48000);
        assert!(db(a / 8000.0).abs() < 2.0, "{a}");
        assert!(OpusEncoder::new(44100, OpusSettings::default()).is_err());
    }

    #[test]
    fn wrong_lengths_and_garbage_are_errors() {
        let mut enc = TrunkEncoder::new(AudioCodec::Pcma, OpusSettings::default()).expect("enc");
        assert!(matches!(
            enc.encode(&[0; 959]),
            Err(CodecError::PcmLength {
                got: 959,
                expected: 160
            })
        ));
        let mut dec = TrunkDecoder::new(AudioCodec::Pcmu).expect("dec");
        assert!(matches!(
            dec.decode(&[0xFF; 80]),
            Err(CodecError::FrameDuration { samples: 80, .. })
        ));
        let mut opus = TrunkDecoder::new(AudioCodec::Opus).expect("dec");
        assert!(matches!(opus.decode(&[]), Err(CodecError::Empty)));
        // Arbitrary bytes: an error or a frame, never a panic.
        let mut state = 0x1234_5678u32;
        for len in 1..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            if let Ok(pcm) = opus.decode(&bytes) {
                assert_eq!(pcm.len(), 960);
            }
        }
        // A 40 ms packet is not one frame.
        let mut enc40 =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).expect("enc");
        let packet = enc40.encode_vec(&[0; 1920], 1500).expect("encode");
        let mut fresh = OpusDecoder::new().expect("dec");
        assert!(matches!(
            fresh.decode(&packet),
            Err(CodecError::FrameDuration {
                samples: 1920,
                expected: 960
            })
        ));
    }

    #[test]
    fn silence_frames_keep_the_leg_alive() {
        let mut pcma = TrunkEncoder::new(AudioCodec::Pcma, OpusSettings::default()).expect("e");
        assert_eq!(pcma.silence().expect("silence"), &[0xD5; 160][..]);
        let mut pcmu = TrunkEncoder::new(AudioCodec::Pcmu, OpusSettings::default()).expect("e");
        assert_eq!(pcmu.silence().expect("silence"), &[0xFF; 160][..]);
        let mut opus = TrunkEncoder::new(AudioCodec::Opus, OpusSettings::default()).expect("e");
        let mut dec = TrunkDecoder::new(AudioCodec::Opus).expect("d");
        for _ in 0..20 {
            // DTX is off: every silent frame is a real packet, small, and decodes to silence.
            let packet = opus.silence().expect("silence").to_vec();
            assert!(
                !packet.is_empty() && packet.len() < 40,
                "{} bytes",
                packet.len()
            );
            let pcm = dec.decode(&packet).expect("decode");
            assert!(pcm.iter().all(|&s| s.abs() < 50));
        }
    }

    /// Largest sample-to-sample step.
    fn max_step(x: &[i16]) -> i32 {
        x.windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn g711_concealment_continues_the_wave_then_fades() {
        // 440 Hz: the period (18.18 samples) does not divide the frame, so plain repetition of
        // the last frame would jump at the boundary.
        let mut dec = G711Decoder::new(Law::ALaw);
        let mut enc = G711Encoder::new(Law::ALaw);
        let mut out = Vec::new();
        for k in 0..10 {
            let pcm = tone(440.0, 8000, 12_000.0, 160, k * 160);
            let payload = enc.encode(&pcm).expect("encode").to_vec();
            out.extend_from_slice(dec.decode(&payload).expect("decode"));
        }
        let normal_step = max_step(&out);
        let first = dec.conceal().to_vec();
        // Non-empty, at nearly full level at first.
        assert!(first[..40].iter().any(|&s| s.abs() > 8000));
        let mut joined = out[out.len() - 40..].to_vec();
        joined.extend_from_slice(&first);
        // No click: the step into the concealment is no larger than the tone's own steps.
        assert!(
            max_step(&joined) <= normal_step + normal_step / 10,
            "{} vs {normal_step}",
            max_step(&joined)
        );
        // It is still 440 Hz.
        assert!(amplitude_at(&first, 440.0, 8000) > 5000.0);
        // Fades: second frame weaker, after the third only silence.
        let second = dec.conceal().to_vec();
        let third = dec.conceal().to_vec();
        let fourth = dec.conceal().to_vec();
        let peak = |x: &[i16]| x.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak(&second) < peak(&first));
        assert!(peak(&third) < peak(&second));
        assert_eq!(peak(&fourth), 0);
        // Recovery after a single lost frame: cross-faded, no click.
        let mut dec2 = G711Decoder::new(Law::ALaw);
        let mut all = Vec::new();
        for k in 0..10 {
            let pcm = tone(440.0, 8000, 12_000.0, 160, k * 160);
            let payload = enc.encode(&pcm).expect("encode").to_vec();
            if k == 6 {
                all.extend_from_slice(dec2.conceal());
            } else {
                all.extend_from_slice(dec2.decode(&payload).expect("decode"));
            }
        }
        assert!(
            max_step(&all) <= normal_step + normal_step / 5,
            "{}",
            max_step(&all)
        );
        // Before any audio, concealment is silence.
        assert!(G711Decoder::new(Law::MuLaw)
            .conceal()
            .iter()
            .all(|&s| s == 0));
    }

    #[test]
    fn opus_concealment_and_fec_are_not_clicks() {
        let mut enc = OpusEncoder::new(48000, OpusSettings::default()).expect("encoder");
        let packets: Vec<Vec<u8>> = (0..30)
            .map(|k| {
                let pcm = tone(440.0, 48000, 10_000.0, 960, k * 960);
                enc.encode(&pcm).expect("encode").to_vec()
            })
            .collect();
        for use_fec in [false, true] {
            let mut dec = TrunkDecoder::new(AudioCodec::Opus).expect("decoder");
            let mut out = Vec::new();
            for (k, packet) in packets.iter().enumerate() {
                if k == 20 {
                    let next = if use_fec {
                        Some(&packets[21][..])
                    } else {
                        None
                    };
                    let pcm = dec.conceal_with_next(next).expect("conceal");
                    assert_eq!(pcm.len(), 960);
                    let a = amplitude_at(pcm, 440.0, 48000);
                    assert!(a > 2000.0, "fec {use_fec}: concealed amplitude {a}");
                    out.extend_from_slice(pcm);
                } else {
                    out.extend_from_slice(dec.decode(packet).expect("decode"));
                }
            }
            let steady = &out[4800..];
            let normal = max_step(&steady[..10_000]);
            let around_loss = max_step(&out[19 * 960..23 * 960]);
            assert!(
                around_loss <= normal * 2,
                "fec {use_fec}: {around_loss} vs {normal}"
            );
        }
    }

    fn sipp_offer() -> Vec<OfferedCodec> {
        // m=audio 6000 RTP/AVP 0 101
        vec![
            OfferedCodec::new(0, "PCMU", 8000, 1, None),
            OfferedCodec::new(101, "telephone-event", 8000, 1, Some("0-15")),
        ]
    }

    fn baresip_offer() -> Vec<OfferedCodec> {
        // m=audio 10000 RTP/AVP 116 8 0 101
        vec![
            OfferedCodec::new(116, "opus", 48000, 2, Some("stereo=1;sprop-stereo=1")),
            OfferedCodec::new(8, "PCMA", 8000, 1, None),
            OfferedCodec::new(0, "PCMU", 8000, 1, None),
            OfferedCodec::new(101, "telephone-event", 8000, 1, Some("0-15")),
        ]
    }

    #[test]
    fn negotiates_sipps_default_offer() {
        let n = negotiate(&sipp_offer()).expect("common codec");
        assert_eq!(n.codec, AudioCodec::Pcmu);
        assert_eq!(n.payload_type, 0);
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.telephone_event_clock_rate, Some(8000));
        assert_eq!(
            n.answer(),
            vec![
                OfferedCodec::new(0, "PCMU", 8000, 1, None),
                OfferedCodec::new(101, "telephone-event", 8000, 1, Some("0-15")),
            ]
        );
    }

    #[test]
    fn negotiates_baresips_offer_in_its_order() {
        let n = negotiate(&baresip_offer()).expect("common codec");
        assert_eq!(n.codec, AudioCodec::Opus);
        assert_eq!(n.payload_type, 116);
        assert_eq!(n.remote_fmtp.as_deref(), Some("stereo=1;sprop-stereo=1"));
        // Only telephone-event/8000 offered: taken anyway.
        assert_eq!(n.telephone_event, Some(101));
        assert_eq!(n.telephone_event_clock_rate, Some(8000));
        let answer = n.answer();
        assert_eq!(answer[0].name, "opus");
        assert_eq!((answer[0].clock_rate, answer[0].channels), (48000, 2));
        assert_eq!(answer[0].fmtp.as_deref(), Some(OPUS_FMTP));

        // With telephone-event at both rates the codec's rate wins.
        let mut offer = baresip_offer();
        offer.push(OfferedCodec::new(
            110,
            "telephone-event",
            48000,
            1,
            Some("0-15"),
        ));
        let n = negotiate(&offer).expect("common codec");
        assert_eq!(n.telephone_event, Some(110));
        // And for G.711 first, the 8000 one.
        offer.rotate_left(1);
        let n = negotiate(&offer).expect("common codec");
        assert_eq!((n.codec, n.payload_type), (AudioCodec::Pcma, 8));
        assert_eq!(n.telephone_event, Some(101));
    }

    #[test]
    fn refuses_offers_without_a_common_codec() {
        let g722 = vec![
            OfferedCodec::new(9, "G722", 8000, 1, None),
            OfferedCodec::new(101, "telephone-event", 8000, 1, Some("0-15")),
        ];
        assert_eq!(negotiate(&g722), Err(NegotiationError::NoCommonCodec));
        assert_eq!(negotiate(&[]), Err(NegotiationError::NoCommonCodec));
        // Near misses are not accepted: PCMA at 16 kHz, stereo PCMU, opus at 16 kHz, pt > 127.
        let near = vec![
            OfferedCodec::new(96, "PCMA", 16000, 1, None),
            OfferedCodec::new(97, "PCMU", 8000, 2, None),
            OfferedCodec::new(98, "opus", 16000, 1, None),
            OfferedCodec::new(200, "PCMA", 8000, 1, None),
        ];
        assert_eq!(negotiate(&near), Err(NegotiationError::NoCommonCodec));
    }

    #[test]
    fn static_payload_types_and_case() {
        let offer = vec![
            OfferedCodec::new(18, "", 8000, 1, None), // G.729 without rtpmap
            OfferedCodec::new(8, "", 8000, 1, None),
        ];
        let n = negotiate(&offer).expect("common codec");
        assert_eq!((n.codec, n.telephone_event), (AudioCodec::Pcma, None));
        let offer = vec![
            OfferedCodec::new(111, "OPUS", 48000, 2, None),
            OfferedCodec::new(100, "Telephone-Event", 48000, 1, None),
        ];
        let n = negotiate(&offer).expect("common codec");
        assert_eq!((n.codec, n.telephone_event), (AudioCodec::Opus, Some(100)));
    }

    #[test]
    fn our_offer_negotiates_with_itself() {
        let offer = our_offer();
        assert_eq!(
            offer
                .iter()
                .map(|f| (f.pt, f.name.as_str(), f.clock_rate))
                .collect::<Vec<_>>(),
            vec![
                (8, "PCMA", 8000),
                (0, "PCMU", 8000),
                (96, "opus", 48000),
                (101, "telephone-event", 8000),
                (102, "telephone-event", 48000),
            ]
        );
        let n = negotiate(&offer).expect("common codec");
        assert_eq!((n.codec, n.telephone_event), (AudioCodec::Pcma, Some(101)));
        // An answerer that picked Opus gets the 48 kHz events.
        let n = negotiate(&offer[2..]).expect("common codec");
        assert_eq!((n.codec, n.telephone_event), (AudioCodec::Opus, Some(102)));
        assert_eq!(AudioCodec::Opus.frame_ticks(), 960);
        assert_eq!(AudioCodec::Pcmu.frame_ticks(), 160);
    }
}
