//! The voice prompts of the dial-in gateway: the catalogue ([`Prompt`]), their audio
//! ([`PromptSet`]), a reader for the WAV files they are stored in ([`decode_wav`]) and the
//! player that turns queued prompts into 20 ms frames for the caller's leg ([`PromptPlayer`]).
//!
//! # Catalogue and texts
//!
//! Every [`Prompt`] has a file name ([`Prompt::name`]) and a text in each [`Language`]
//! ([`Prompt::text`]). The texts live in `crates/klausur-sip/prompts/<lang>.tsv` (one
//! `<name><TAB><text>` per line); that file is the single source of both [`Prompt::text`] (it is
//! compiled in) and the audio, which `scripts/make-prompts.sh` synthesises from it with espeak-ng
//! and sox into `prompts/<lang>/<name>.wav`. German is the default (the city's language: polite
//! "Sie", gender-fair "die Moderation"); English is the alternative.
//!
//! # Audio
//!
//! The built-in prompts ([`PromptSet::builtin`]) are compiled into the binary with
//! `include_bytes!`, so the gateway needs no files at run time. They are stored as 8 kHz mono
//! G.711 A-law WAV (format tag 6): half the size of 16-bit PCM, and exactly what a telephone leg
//! carries anyway. An operator may replace them with their own recordings:
//! [`PromptSet::from_dir`] reads `<dir>/<name>.wav` for every prompt of the catalogue; a file
//! that is missing, unreadable, larger than [`MAX_FILE_BYTES`] or not in a supported format is an
//! error that names the file (a set is complete or it is not loaded, never mixed silently).
//!
//! # WAV reader
//!
//! [`decode_wav`] reads what the gateway stores and plays: RIFF/WAVE with one `fmt ` and one
//! `data` chunk (other chunks such as `fact` or `LIST` are skipped), mono, 8000 Hz, either 16-bit
//! little-endian PCM (format tag 1) or 8-bit A-law (format tag 6), also inside
//! `WAVE_FORMAT_EXTENSIBLE`. Anything else, and every truncated or inconsistent header, is a
//! [`WavError`], never a panic. It is written here rather than taken from a WAV crate because the
//! common ones (hound) do not read A-law, and the subset needed is a few dozen lines; A-law is
//! expanded by [`super::g711`].
//!
//! # Player
//!
//! [`PromptPlayer`] is a queue of prompts. [`PromptPlayer::next_frame`] yields 20 ms frames of
//! 8 kHz i16 PCM ([`FRAME_SAMPLES`] = 160 samples) while anything is queued; each prompt starts
//! on a frame boundary and its last frame is padded with silence, so a prompt of duration `d`
//! takes exactly `ceil(d / 20 ms)` frames. When the frame that empties the queue has been taken,
//! [`PromptPlayer::poll_finished`] reports it once: that is the voice menu's "the prompts queued
//! so far have finished playing" input ([`crate::core::ivr::Input::PromptsDone`]).
//! [`PromptPlayer::flush`] drops everything queued (barge-in) and does not report "finished".
//! The player is sans-IO: the caller's media task pulls a frame every 20 ms.

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::g711;

/// Sample rate of prompt audio and of the frames the player yields.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples in one 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Duration of one frame.
pub const FRAME_DURATION: Duration = Duration::from_millis(20);
/// Largest prompt file [`PromptSet::from_dir`] reads (about 10 minutes of 16-bit PCM).
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;

/// The language of the prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// German (the default).
    #[default]
    De,
    /// English.
    En,
}

impl Language {
    /// Every language with built-in prompts.
    pub const ALL: [Language; 2] = [Language::De, Language::En];

    /// The language code used in the configuration and the prompt directory (`de`, `en`).
    pub fn code(self) -> &'static str {
        match self {
            Language::De => "de",
            Language::En => "en",
        }
    }

    fn texts(self) -> &'static str {
        match self {
            Language::De => include_str!("../../prompts/de.tsv"),
            Language::En => include_str!("../../prompts/en.tsv"),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language code that has no prompts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown prompt language {0:?} (known: de, en)")]
pub struct UnknownLanguage(pub String);

impl FromStr for Language {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "de" => Ok(Language::De),
            "en" => Ok(Language::En),
            other => Err(UnknownLanguage(other.chars().take(16).collect())),
        }
    }
}

macro_rules! catalogue {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A voice prompt of the dial-in menu (the catalogue; texts in `prompts/<lang>.tsv`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Prompt {
            $($(#[$doc])* $variant,)*
        }

        impl Prompt {
            /// Every prompt, in catalogue order.
            pub const ALL: &'static [Prompt] = &[$(Prompt::$variant,)*];

            /// The file name without `.wav` (and the key in `prompts/<lang>.tsv`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Prompt::$variant => $name,)*
                }
            }
        }

        /// The built-in WAV files of a language, in catalogue order.
        fn builtin_wavs(language: Language) -> &'static [&'static [u8]] {
            match language {
                Language::De => &[$(include_bytes!(concat!("../../prompts/de/", $name, ".wav")),)*],
                Language::En => &[$(include_bytes!(concat!("../../prompts/en/", $name, ".wav")),)*],
            }
        }
    };
}

catalogue! {
    /// Greeting at the start of the call.
    Welcome => "welcome",
    /// Asks for the meeting number, ended by '#'; '*' starts the entry again.
    EnterMeetingNumber => "enter_meeting_number",
    /// Asks for the personal PIN, ended by '#'.
    EnterPin => "enter_pin",
    /// The number or the PIN is wrong (never says which); please try again.
    WrongEntry => "wrong_entry",
    /// The third wrong entry: the call ends.
    TooManyTries => "too_many_tries",
    /// The server throttles further attempts: the call ends.
    Throttled => "throttled",
    /// The meeting's security profile allows only end-to-end encrypted participation in the
    /// browser, not dial-in: the call ends.
    NotAllowed => "not_allowed",
    /// The meeting has not started yet (dial-in opens 30 minutes before): the call ends.
    NotYet => "not_yet",
    /// The meeting has ended: the call ends.
    MeetingEnded => "meeting_ended",
    /// In the lobby: please wait, the moderation will let you in.
    WaitForModerator => "wait_for_moderator",
    /// In the meeting: the phone leg is not end-to-end encrypted and everyone sees it; *6 mutes,
    /// *9 raises the hand.
    Joined => "joined",
    /// Confirmation: the caller muted themselves.
    Muted => "muted",
    /// Confirmation: the caller unmuted themselves.
    Unmuted => "unmuted",
    /// A moderator muted the caller.
    MutedByModerator => "muted_by_moderator",
    /// A moderator lifted their mute; *6 unmutes.
    ModeratorMuteLifted => "moderator_mute_lifted",
    /// *6 refused: a moderator muted the caller.
    CannotUnmute => "cannot_unmute",
    /// Confirmation: the hand is raised.
    HandRaised => "hand_raised",
    /// Confirmation: the hand is lowered.
    HandLowered => "hand_lowered",
    /// A moderator lowered the caller's hand.
    HandLoweredByModerator => "hand_lowered_by_moderator",
    /// A moderator removed the caller: the call ends.
    Removed => "removed",
    /// A moderator declined the caller in the lobby: the call ends.
    Denied => "denied",
    /// The gateway lost its connection to the meeting: the call ends.
    ConnectionLost => "connection_lost",
    /// The connection to the meeting broke: the gateway tries to get back in.
    Reconnecting => "reconnecting",
    /// Back in the meeting after an interruption.
    Reconnected => "reconnected",
    /// The server is being taken out of service (maintenance): if the meeting goes on for
    /// long, the call may be interrupted; then call again.
    Maintenance => "maintenance",
    /// The server cannot be reached or another technical problem: the call ends.
    TechnicalError => "technical_error",
    /// Nothing was typed after the prompt was repeated: the call ends.
    NoInput => "no_input",
    /// The time for entering number and PIN ran out: the call ends.
    TimeUp => "time_up",
}

impl Prompt {
    /// The prompt's text in `language` (what the built-in recording says).
    pub fn text(self, language: Language) -> &'static str {
        language
            .texts()
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, _)| *name == self.name())
            .map(|(_, text)| text.trim())
            .unwrap_or("")
    }

    fn index(self) -> usize {
        Prompt::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// Why a WAV file cannot be used as a prompt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF file")]
    NotRiff,
    #[error("a RIFF file but not WAVE")]
    NotWave,
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("no fmt chunk before the data chunk")]
    MissingFmt,
    #[error("no data chunk")]
    MissingData,
    #[error("the fmt chunk is too short ({0} bytes)")]
    ShortFmt(u32),
    #[error("unsupported encoding (format tag {0:#06x}); supported: 16-bit PCM, A-law")]
    UnsupportedFormat(u16),
    #[error("{0} channels; prompts must be mono")]
    NotMono(u16),
    #[error("{0} Hz; prompts must be 8000 Hz")]
    WrongRate(u32),
    #[error("{bits} bits per sample with block align {block_align} does not fit the encoding")]
    BadSampleSize { bits: u16, block_align: u16 },
    #[error("the data chunk's length {0} is not a whole number of samples")]
    PartialSample(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Pcm16,
    Alaw,
}

const TAG_PCM: u16 = 0x0001;
const TAG_ALAW: u16 = 0x0006;
const TAG_EXTENSIBLE: u16 = 0xfffe;

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_fmt(body: &[u8]) -> Result<Encoding, WavError> {
    let short = || WavError::ShortFmt(u32::try_from(body.len()).unwrap_or(u32::MAX));
    let mut tag = le16(body, 0).ok_or_else(short)?;
    let channels = le16(body, 2).ok_or_else(short)?;
    let rate = le32(body, 4).ok_or_else(short)?;
    let block_align = le16(body, 12).ok_or_else(short)?;
    let bits = le16(body, 14).ok_or_else(short)?;
    if tag == TAG_EXTENSIBLE {
        // cbSize (16), valid bits (18), channel mask (20), sub-format GUID (24..40) whose first
        // two bytes are the format tag.
        tag = le16(body, 24).ok_or_else(short)?;
    }
    let encoding = match tag {
        TAG_PCM => Encoding::Pcm16,
        TAG_ALAW => Encoding::Alaw,
        other => return Err(WavError::UnsupportedFormat(other)),
    };
    if channels != 1 {
        return Err(WavError::NotMono(channels));
    }
    if rate != SAMPLE_RATE {
        return Err(WavError::WrongRate(rate));
    }
    let fits = match encoding {
        Encoding::Pcm16 => bits == 16 && block_align == 2,
        Encoding::Alaw => bits == 8 && block_align == 1,
    };
    if !fits {
        return Err(WavError::BadSampleSize { bits, block_align });
    }
    Ok(encoding)
}

/// Decodes a prompt WAV file (see the module docs for what is accepted) to 8 kHz i16 samples.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<i16>, WavError> {
    let header = bytes.get(..12).ok_or(WavError::Truncated("RIFF header"))?;
    if header.get(..4) != Some(b"RIFF".as_slice()) {
        return Err(WavError::NotRiff);
    }
    if header.get(8..12) != Some(b"WAVE".as_slice()) {
        return Err(WavError::NotWave);
    }
    let mut rest = bytes.get(12..).unwrap_or_default();
    let mut encoding = None;
    while !rest.is_empty() {
        let id = rest.get(..4).ok_or(WavError::Truncated("chunk header"))?;
        let size = le32(rest, 4).ok_or(WavError::Truncated("chunk header"))?;
        let len = usize::try_from(size).map_err(|_| WavError::Truncated("chunk"))?;
        let end = len.checked_add(8).ok_or(WavError::Truncated("chunk"))?;
        let truncated = if id == b"data" {
            "data chunk"
        } else if id == b"fmt " {
            "fmt chunk"
        } else {
            "chunk"
        };
        let body = rest.get(8..end).ok_or(WavError::Truncated(truncated))?;
        if id == b"fmt " {
            encoding = Some(parse_fmt(body)?);
        } else if id == b"data" {
            let encoding = encoding.ok_or(WavError::MissingFmt)?;
            return Ok(match encoding {
                Encoding::Alaw => body.iter().map(|&b| g711::alaw_to_linear(b)).collect(),
                Encoding::Pcm16 => {
                    if body.len() % 2 != 0 {
                        return Err(WavError::PartialSample(size));
                    }
                    body.chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]))
                        .collect()
                }
            });
        }
        // Chunks are padded to an even length; a missing pad byte at the very end is tolerated.
        rest = rest.get(end + (len & 1)..).unwrap_or_default();
    }
    Err(if encoding.is_none() {
        WavError::MissingFmt
    } else {
        WavError::MissingData
    })
}

/// Why a set of prompts cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A prompt file is missing or cannot be read.
    #[error("cannot read prompt file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A prompt file is larger than [`MAX_FILE_BYTES`].
    #[error("prompt file {path} is too large ({bytes} bytes, at most {MAX_FILE_BYTES})")]
    TooLarge { path: PathBuf, bytes: u64 },
    /// A prompt file is not a usable WAV file.
    #[error(
        "prompt file {file}: {source} (prompts must be WAV, 8000 Hz, mono, 16-bit PCM or A-law; \
         for example: sox in.wav -r 8000 -c 1 -b 16 -e signed-integer {file})"
    )]
    Wav {
        file: String,
        #[source]
        source: WavError,
    },
}

/// The audio of one prompt: 8 kHz mono i16 samples, shared (cloning is cheap).
#[derive(Clone, PartialEq, Eq)]
pub struct Clip(Arc<[i16]>);

impl Clip {
    /// A clip of these 8 kHz samples.
    pub fn new(samples: Vec<i16>) -> Clip {
        Clip(samples.into())
    }

    /// The samples.
    pub fn samples(&self) -> &[i16] {
        &self.0
    }

    /// How long the clip plays.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.0.len() as u64 * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}

impl fmt::Debug for Clip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clip({} samples)", self.0.len())
    }
}

/// The audio of every prompt of the catalogue, in one language or from an operator's directory.
/// Cloning is cheap (one set serves every call).
#[derive(Clone, Debug)]
pub struct PromptSet {
    clips: Arc<[Clip]>,
}

impl PromptSet {
    /// The built-in prompts of `language` (compiled into the binary). Fails only if a built-in
    /// file is broken, which the crate's tests rule out.
    pub fn builtin(language: Language) -> Result<PromptSet, PromptError> {
        let wavs = builtin_wavs(language);
        PromptSet::load(|prompt| {
            let bytes = wavs.get(prompt.index()).copied().unwrap_or_default();
            Ok((
                format!("{}/{}.wav", language.code(), prompt.name()),
                bytes.to_vec(),
            ))
        })
    }

    /// An operator's recordings: `<dir>/<name>.wav` for every prompt of the catalogue (see
    /// [`Prompt::name`]). Reads the files now (at start-up), not during calls.
    pub fn from_dir(dir: &Path) -> Result<PromptSet, PromptError> {
        PromptSet::load(|prompt| {
            let path = dir.join(format!("{}.wav", prompt.name()));
            let read_err = |source| PromptError::Read {
                path: path.clone(),
                source,
            };
            let bytes = std::fs::metadata(&path).map_err(read_err)?.len();
            if bytes > MAX_FILE_BYTES {
                return Err(PromptError::TooLarge { path, bytes });
            }
            let data = std::fs::read(&path).map_err(read_err)?;
            Ok((path.display().to_string(), data))
        })
    }

    /// A set from WAV bytes per prompt: `get` returns the file's name (for errors) and bytes.
    pub fn from_wavs(
        get: impl FnMut(Prompt) -> Result<(String, Vec<u8>), PromptError>,
    ) -> Result<PromptSet, PromptError> {
        PromptSet::load(get)
    }

    fn load(
        mut get: impl FnMut(Prompt) -> Result<(String, Vec<u8>), PromptError>,
    ) -> Result<PromptSet, PromptError> {
        let clips = Prompt::ALL
            .iter()
            .map(|&prompt| {
                let (file, bytes) = get(prompt)?;
                decode_wav(&bytes)
                    .map(Clip::new)
                    .map_err(|source| PromptError::Wav { file, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PromptSet {
            clips: clips.into(),
        })
    }

    /// The audio of `prompt`.
    pub fn clip(&self, prompt: Prompt) -> Clip {
        self.clips
            .get(prompt.index())
            .cloned()
            .unwrap_or_else(|| Clip::new(Vec::new()))
    }
}

/// A queue of prompts played as 20 ms frames (see the module docs).
#[derive(Debug, Clone)]
pub struct PromptPlayer {
    set: PromptSet,
    queue: VecDeque<Clip>,
    /// Position in the front clip.
    pos: usize,
    /// The queue ran empty by playing; not yet reported.
    finished: bool,
}

impl PromptPlayer {
    /// A player for the prompts of `set`, with nothing queued.
    pub fn new(set: PromptSet) -> PromptPlayer {
        PromptPlayer {
            set,
            queue: VecDeque::new(),
            pos: 0,
            finished: false,
        }
    }

    /// Queues `prompt` after whatever is queued.
    pub fn play(&mut self, prompt: Prompt) {
        let clip = self.set.clip(prompt);
        self.enqueue(clip);
    }

    /// Queues a clip after whatever is queued.
    pub fn enqueue(&mut self, clip: Clip) {
        self.queue.push_back(clip);
    }

    /// Drops everything queued, also the rest of the prompt playing now. Does not count as
    /// "finished": [`PromptPlayer::poll_finished`] stays false until newly queued prompts ran out.
    pub fn flush(&mut self) {
        self.queue.clear();
        self.pos = 0;
        self.finished = false;
    }

    /// Whether anything is left to play.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next 20 ms frame, or `None` when nothing is queued. The last frame of each prompt is
    /// padded with silence.
    pub fn next_frame(&mut self) -> Option<[i16; FRAME_SAMPLES]> {
        loop {
            let clip = self.queue.front()?;
            let samples = clip.samples();
            let Some(rest) = samples.get(self.pos..).filter(|r| !r.is_empty()) else {
                // An empty clip (or one played to its end) is skipped.
                self.advance();
                if self.queue.is_empty() {
                    return None;
                }
                continue;
            };
            let n = rest.len().min(FRAME_SAMPLES);
            let mut frame = [0i16; FRAME_SAMPLES];
            frame[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            if self.pos >= samples.len() {
                self.advance();
            }
            return Some(frame);
        }
    }

    fn advance(&mut self) {
        self.queue.pop_front();
        self.pos = 0;
        if self.queue.is_empty() {
            self.finished = true;
        }
    }

    /// True once after the queue ran empty by playing (the frame that emptied it has been taken):
    /// feed the voice menu [`crate::core::ivr::Input::PromptsDone`].
    pub fn poll_finished(&mut self) -> bool {
        std::mem::take(&mut self.finished)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is a failure
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let block_align = channels * bits / 8;
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
        fmt.extend_from_slice(&block_align.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        riff(&[(b"fmt ", &fmt), (b"data", data)])
    }

    fn riff(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn pcm(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn reads_pcm16_and_alaw() {
        let samples = [0i16, 1, -1, 32767, -32768, 1234];
        assert_eq!(
            decode_wav(&wav(1, 1, 8000, 16, &pcm(&samples))).unwrap(),
            samples
        );
        // A-law: 0xd5 / 0x55 are the two smallest magnitudes, 0xaa / 0x2a the two largest.
        assert_eq!(
            decode_wav(&wav(6, 1, 8000, 8, &[0xd5, 0x55, 0xaa, 0x2a])).unwrap(),
            [8, -8, 32256, -32256]
        );
    }

    #[test]
    fn skips_other_chunks_and_reads_extensible() {
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&TAG_EXTENSIBLE.to_le_bytes());
        fmt.extend_from_slice(&1u16.to_le_bytes());
        fmt.extend_from_slice(&8000u32.to_le_bytes());
        fmt.extend_from_slice(&16000u32.to_le_bytes());
        fmt.extend_from_slice(&2u16.to_le_bytes());
        fmt.extend_from_slice(&16u16.to_le_bytes());
        fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        fmt.extend_from_slice(&16u16.to_le_bytes()); // valid bits
        fmt.extend_from_slice(&4u32.to_le_bytes()); // channel mask
        fmt.extend_from_slice(&1u16.to_le_bytes()); // sub-format: PCM
        fmt.extend_from_slice(&[0; 14]);
        let file = riff(&[
            (b"LIST", b"odd"),
            (b"fmt ", &fmt),
            (b"fact", &[1, 0, 0, 0]),
            (b"data", &pcm(&[5, -5])),
        ]);
        assert_eq!(decode_wav(&file).unwrap(), [5, -5]);
    }

    #[test]
    fn rejects_what_it_does_not_play() {
        assert_eq!(
            decode_wav(&wav(1, 2, 8000, 16, &[0; 8])),
            Err(WavError::NotMono(2))
        );
        assert_eq!(
            decode_wav(&wav(1, 1, 16000, 16, &[0; 8])),
            Err(WavError::WrongRate(16000))
        );
        assert_eq!(
            decode_wav(&wav(3, 1, 8000, 32, &[0; 8])),
            Err(WavError::UnsupportedFormat(3))
        );
        assert_eq!(
            decode_wav(&wav(7, 1, 8000, 8, &[0; 8])),
            Err(WavError::UnsupportedFormat(7))
        );
        assert_eq!(
            decode_wav(&wav(1, 1, 8000, 8, &[0; 8])),
            Err(WavError::BadSampleSize {
                bits: 8,
                block_align: 1
            })
        );
        assert_eq!(
            decode_wav(&wav(6, 1, 8000, 16, &[0; 8])),
            Err(WavError::BadSampleSize {
                bits: 16,
                block_align: 2
            })
        );
        assert_eq!(
            decode_wav(&wav(1, 1, 8000, 16, &[0; 3])),
            Err(WavError::PartialSample(3))
        );
    }

    #[test]
    fn rejects_corrupt_and_truncated_headers() {
        let good = wav(1, 1, 8000, 16, &pcm(&[1, 2, 3, 4]));
        assert!(decode_wav(&good).is_ok());
        // Every truncation of a good file is an error, never a panic.
        for len in 0..good.len() {
            assert!(decode_wav(&good[..len]).is_err(), "length {len}");
        }
        assert_eq!(
            decode_wav(&good[..20]),
            Err(WavError::Truncated("fmt chunk"))
        );
        assert_eq!(
            decode_wav(&good[..good.len() - 1]),
            Err(WavError::Truncated("data chunk"))
        );
        let mut bad = good.clone();
        bad[..4].copy_from_slice(b"RIFX");
        assert_eq!(decode_wav(&bad), Err(WavError::NotRiff));
        let mut bad = good.clone();
        bad[8..12].copy_from_slice(b"AVI ");
        assert_eq!(decode_wav(&bad), Err(WavError::NotWave));
        // A chunk length near u32::MAX.
        let mut bad = good.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_wav(&bad), Err(WavError::Truncated("fmt chunk")));
        // A fmt chunk too short to hold the fields.
        assert_eq!(
            decode_wav(&riff(&[(b"fmt ", &[1, 0, 1, 0]), (b"data", &[0, 0])])),
            Err(WavError::ShortFmt(4))
        );
        // Data before fmt, and no data at all.
        assert_eq!(
            decode_wav(&riff(&[(b"data", &[0, 0])])),
            Err(WavError::MissingFmt)
        );
        let fmt_only = &good[..36];
        assert_eq!(decode_wav(fmt_only), Err(WavError::MissingData));
        // Every single-byte corruption of the header is handled without a panic.
        for at in 0..44 {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] = value;
                let _ = decode_wav(&bad);
            }
        }
    }

    #[test]
    fn texts_match_the_catalogue_in_every_language() {
        for language in Language::ALL {
            let mut names = HashSet::new();
            for line in language.texts().lines() {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (name, text) = line.split_once('\t').expect("name<TAB>text");
                assert!(names.insert(name), "{language}: {name} twice");
                assert!(!text.trim().is_empty(), "{language}: {name} has no text");
                assert!(
                    Prompt::ALL.iter().any(|p| p.name() == name),
                    "{language}: {name} is not in the catalogue"
                );
            }
            for prompt in Prompt::ALL {
                assert!(!prompt.text(language).is_empty(), "{language}: {prompt:?}");
            }
        }
        // The texts say what the product promises.
        assert!(Prompt::Joined
            .text(Language::De)
            .contains("nicht Ende-zu-Ende-verschlüsselt"));
        assert!(Prompt::Joined
            .text(Language::En)
            .contains("not end-to-end encrypted"));
        assert!(Prompt::NotAllowed.text(Language::De).contains("Browser"));
        assert!(Prompt::WaitForModerator
            .text(Language::De)
            .contains("Moderation"));
    }

    #[test]
    fn every_builtin_prompt_decodes_to_plausible_audio() {
        for language in Language::ALL {
            let set = PromptSet::builtin(language).unwrap();
            for &prompt in Prompt::ALL {
                let clip = set.clip(prompt);
                let d = clip.duration();
                assert!(
                    d >= Duration::from_millis(500) && d <= Duration::from_secs(20),
                    "{language}/{}: {d:?}",
                    prompt.name()
                );
                // Speech, not silence: the A-law decoding yields real signal.
                let peak = clip.samples().iter().map(|s| s.unsigned_abs()).max();
                assert!(peak > Some(8000), "{language}/{}: {peak:?}", prompt.name());
            }
            // The same prompt differs between the languages (not one file twice).
            assert_ne!(
                set.clip(Prompt::Joined),
                PromptSet::builtin(Language::En)
                    .unwrap()
                    .clip(Prompt::Welcome)
            );
        }
    }

    #[test]
    fn languages_parse() {
        assert_eq!("de".parse(), Ok(Language::De));
        assert_eq!("en".parse(), Ok(Language::En));
        assert!("fr".parse::<Language>().is_err());
        assert_eq!(Language::default(), Language::De);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("klausur-sip-prompts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_an_operators_directory_and_names_bad_files() {
        let dir = temp_dir("dir");
        for prompt in Prompt::ALL {
            std::fs::write(
                dir.join(format!("{}.wav", prompt.name())),
                wav(1, 1, 8000, 16, &pcm(&[7; 4000])),
            )
            .unwrap();
        }
        let set = PromptSet::from_dir(&dir).unwrap();
        assert_eq!(set.clip(Prompt::Removed).samples(), &[7; 4000][..]);

        // A missing file: the error names it.
        std::fs::remove_file(dir.join("removed.wav")).unwrap();
        let err = PromptSet::from_dir(&dir).unwrap_err();
        assert!(matches!(err, PromptError::Read { .. }), "{err}");
        assert!(err.to_string().contains("removed.wav"), "{err}");

        // A file in another format: the error names it and says what is wanted.
        std::fs::write(dir.join("removed.wav"), wav(1, 1, 44100, 16, &pcm(&[0; 8]))).unwrap();
        let err = PromptSet::from_dir(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                PromptError::Wav {
                    source: WavError::WrongRate(44100),
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("removed.wav") && text.contains("8000 Hz"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn frames_until_idle(player: &mut PromptPlayer) -> usize {
        let mut frames = 0;
        while player.next_frame().is_some() {
            frames += 1;
            assert!(frames < 100_000);
        }
        frames
    }

    #[test]
    fn player_frame_count_is_the_duration_rounded_up() {
        let set = PromptSet::builtin(Language::De).unwrap();
        for &prompt in Prompt::ALL {
            let mut player = PromptPlayer::new(set.clone());
            player.play(prompt);
            let samples = set.clip(prompt).samples().len();
            assert_eq!(
                frames_until_idle(&mut player),
                samples.div_ceil(FRAME_SAMPLES)
            );
            assert!(player.poll_finished());
            assert!(!player.poll_finished(), "reported once");
        }
    }

    #[test]
    fn player_pads_the_last_frame_and_reports_finished_after_it() {
        let set = PromptSet::builtin(Language::En).unwrap();
        let mut player = PromptPlayer::new(set);
        player.enqueue(Clip::new(vec![3; 170]));
        player.enqueue(Clip::new(Vec::new()));
        player.enqueue(Clip::new(vec![4; 160]));
        assert!(player.is_playing());
        assert_eq!(player.next_frame(), Some([3; 160]));
        assert!(!player.poll_finished());
        let mut second = [0; 160];
        second[..10].copy_from_slice(&[3; 10]);
        assert_eq!(player.next_frame(), Some(second));
        assert!(!player.poll_finished());
        // The empty clip is skipped; the next prompt starts on a frame boundary.
        assert_eq!(player.next_frame(), Some([4; 160]));
        assert!(player.poll_finished());
        assert!(!player.is_playing());
        assert_eq!(player.next_frame(), None);
        assert!(!player.poll_finished());
    }

    #[test]
    fn flush_empties_the_queue_without_reporting_finished() {
        let set = PromptSet::builtin(Language::De).unwrap();
        let mut player = PromptPlayer::new(set.clone());
        player.play(Prompt::Welcome);
        player.play(Prompt::EnterMeetingNumber);
        assert!(player.next_frame().is_some());
        player.flush();
        assert!(!player.is_playing());
        assert_eq!(player.next_frame(), None);
        assert!(!player.poll_finished());
        // After a flush, new prompts play from their start.
        player.play(Prompt::Muted);
        assert_eq!(
            frames_until_idle(&mut player),
            set.clip(Prompt::Muted)
                .samples()
                .len()
                .div_ceil(FRAME_SAMPLES)
        );
        assert!(player.poll_finished());
    }
}
