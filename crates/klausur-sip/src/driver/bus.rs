//! The audio bus of one meeting in the gateway: every remote speaker's Opus is decoded once
//! per meeting, whichever of the meeting's callers' clients received it, and each caller gets
//! the mix of all speakers but themselves, every 20 ms.
//!
//! # Ownership of tracks
//!
//! Each caller's client receives every other participant's audio from the media server (the
//! server does not know that several of them sit in one gateway). A track (a participant's
//! microphone) is decrypted and decoded only from the client that *owns* it: the first client
//! that delivers it. The clients ask [`Bus::filter`] before decrypting a frame, so the other
//! clients leave it alone. When a caller leaves, its client's tracks are free again and the
//! next client that receives them takes them over; the RTP timestamps are the sender's, so the
//! jitter buffer carries on.
//!
//! A caller's own voice reaches the bus only through another caller's client (the media server
//! never sends a participant its own audio), and is left out of that caller's mix by its
//! participant id: nobody hears themselves. Everything the media server forwards is what the
//! meeting hears: a participant a moderator muted is muted here too.
//!
//! # Timing
//!
//! The bus runs its own 20 ms clock, and its listeners' calls run on it (see
//! [`super::caller`]). Each track has a jitter buffer (the core's [`JitterBuffer`], 40 ms); a
//! lost frame is concealed by the decoder, a track that stays silent for [`IDLE_TRACK`] is
//! dropped (and its decoder freed). Each listener gets one frame per tick at its own rate on a
//! small bounded channel; a listener that does not keep up loses frames, never the bus.
//!
//! # Rate
//!
//! A G.711 leg carries 8 kHz. While every listener is such a narrowband leg (the usual case),
//! the bus decodes the meeting's Opus at 8 kHz and mixes 160-sample frames: libopus leaves out
//! what the telephone band cannot carry, and nothing is resampled. As soon as one listener
//! takes 48 kHz (a trunk that speaks Opus), the bus decodes and mixes at 48 kHz and brings the
//! narrowband listeners' mixes down to 8 kHz each; when that listener leaves it returns to
//! 8 kHz. A switch starts the tracks' decoders anew (one frame of the switch may be lost).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use klausur_client::driver::{AudioFilter, AudioFrame, AudioSink};
use tokio::sync::mpsc;

use crate::core::codec::OpusDecoder;
use crate::core::jitter::{JitterBuffer, Pop};
use crate::core::mixer::{Mixer, FRAME_SAMPLES};
use crate::core::resample::Downsampler;

/// A listener's 20 ms of the mix at its own rate: 160 samples at 8 kHz, 960 at 48 kHz.
pub type MixFrame = Box<[i16]>;

/// The rate of a narrowband (G.711) listener, and of a wideband one.
pub const NARROWBAND: u32 = 8000;
pub const FULLBAND: u32 = 48000;

/// A track silent this long is dropped.
pub const IDLE_TRACK: Duration = Duration::from_secs(10);
/// Frames queued towards one listener before the bus drops frames for it.
const LISTENER_QUEUE: usize = 4;
const TICK: Duration = Duration::from_millis(20);

enum Cmd {
    Listen {
        client_id: u64,
        tx: mpsc::Sender<MixFrame>,
        rate: u32,
    },
    SetParticipant {
        client_id: u64,
        participant_id: String,
    },
    Leave {
        client_id: u64,
    },
}

type Owners = Arc<Mutex<HashMap<String, u64>>>;

/// A meeting's bus (the task runs as long as this handle lives).
pub struct Bus {
    cmds: mpsc::UnboundedSender<Cmd>,
    audio: mpsc::Sender<AudioFrame>,
    owners: Owners,
}

/// Counters of a bus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusStats {
    pub frames_in: u64,
    pub decoded: u64,
    pub concealed: u64,
    pub decode_errors: u64,
}

struct Track {
    jitter: JitterBuffer<Vec<u8>>,
    decoder: OpusDecoder,
    last_heard: Instant,
}

struct Listener {
    participant_id: Option<String>,
    tx: mpsc::Sender<MixFrame>,
    rate: u32,
    /// 48 kHz to 8 kHz, for a narrowband listener while the bus runs at 48 kHz.
    down: Downsampler,
}

impl Bus {
    /// Starts a bus task.
    pub fn start() -> Bus {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (audio, audio_rx) = mpsc::channel(1024);
        let owners: Owners = Arc::default();
        tokio::spawn(run(cmd_rx, audio_rx, owners.clone()));
        Bus {
            cmds,
            audio,
            owners,
        }
    }

    /// The sink for the client `client_id`'s decrypted audio: it delivers (and decrypts) only
    /// the tracks that client owns or is the first to bring.
    pub fn sink(&self, client_id: u64) -> AudioSink {
        AudioSink {
            tx: self.audio.clone(),
            filter: self.filter(client_id),
        }
    }

    /// Whether client `client_id` should decrypt and deliver a participant's audio.
    pub fn filter(&self, client_id: u64) -> AudioFilter {
        let owners = self.owners.clone();
        Arc::new(move |pid: &str| {
            let mut owners = owners.lock().unwrap_or_else(|p| p.into_inner());
            match owners.get(pid) {
                Some(owner) => *owner == client_id,
                None => {
                    owners.insert(pid.to_string(), client_id);
                    true
                }
            }
        })
    }

    /// Client `client_id` wants its caller's mix on `tx` from now on, at `rate` ([`NARROWBAND`]
    /// or [`FULLBAND`]; anything else counts as full band).
    pub fn listen(&self, client_id: u64, tx: mpsc::Sender<MixFrame>, rate: u32) {
        let _ = self.cmds.send(Cmd::Listen {
            client_id,
            tx,
            rate,
        });
    }

    /// The participant id of client `client_id`'s caller (left out of that caller's mix).
    pub fn set_participant(&self, client_id: u64, participant_id: String) {
        let _ = self.cmds.send(Cmd::SetParticipant {
            client_id,
            participant_id,
        });
    }

    /// Client `client_id` is gone: its tracks are free for others, it gets no more frames.
    pub fn leave(&self, client_id: u64) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, owner| *owner != client_id);
        let _ = self.cmds.send(Cmd::Leave { client_id });
    }

    /// A frame channel for one listener.
    pub fn frame_channel() -> (mpsc::Sender<MixFrame>, mpsc::Receiver<MixFrame>) {
        mpsc::channel(LISTENER_QUEUE)
    }
}

/// The rate the bus runs at for these listeners.
fn bus_rate(listeners: &HashMap<u64, Listener>) -> u32 {
    if listeners.values().all(|l| l.rate == NARROWBAND) {
        NARROWBAND
    } else {
        FULLBAND
    }
}

async fn run(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut audio: mpsc::Receiver<AudioFrame>,
    owners: Owners,
) {
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut listeners: HashMap<u64, Listener> = HashMap::new();
    let mut rate = NARROWBAND;
    let mut mixer: Mixer<String> = Mixer::with_frame(rate as usize / 50);
    let mut stats = BusStats::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nobody = String::new();
    let mut full = [0i16; FRAME_SAMPLES];
    loop {
        tokio::select! {
            cmd = cmds.recv() => {
                match cmd {
                    None => break,
                    Some(Cmd::Listen { client_id, tx, rate }) => {
                        let rate = if rate == NARROWBAND { NARROWBAND } else { FULLBAND };
                        let l = listeners.entry(client_id).or_insert_with(|| Listener {
                            participant_id: None,
                            tx: tx.clone(),
                            rate,
                            down: Downsampler::new(),
                        });
                        l.tx = tx;
                        l.rate = rate;
                    }
                    Some(Cmd::SetParticipant { client_id, participant_id }) => {
                        if let Some(l) = listeners.get_mut(&client_id) {
                            l.participant_id = Some(participant_id);
                        }
                    }
                    Some(Cmd::Leave { client_id }) => {
                        listeners.remove(&client_id);
                    }
                }
                let wanted = bus_rate(&listeners);
                if wanted != rate {
                    rate = wanted;
                    mixer = Mixer::with_frame(rate as usize / 50);
                    tracks.retain(|_, t| match OpusDecoder::with_rate(rate) {
                        Ok(d) => {
                            t.decoder = d;
                            true
                        }
                        Err(_) => false,
                    });
                }
            }
            Some(frame) = audio.recv() => {
                let owner = owners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&frame.participant_id)
                    .copied();
                if owner != Some(frame.client_id) {
                    continue;
                }
                stats.frames_in += 1;
                let track = match tracks.get_mut(&frame.participant_id) {
                    Some(t) => t,
                    None => {
                        let (Ok(jitter), Ok(decoder)) =
                            (JitterBuffer::with_clock_rate(48_000), OpusDecoder::with_rate(rate))
                        else {
                            continue;
                        };
                        tracks.entry(frame.participant_id.clone()).or_insert(Track {
                            jitter,
                            decoder,
                            last_heard: frame.arrived,
                        })
                    }
                };
                track.last_heard = frame.arrived;
                // The RTP clock of Opus is 48 kHz; its low 32 bits are the RTP timestamp.
                track.jitter.push(frame.arrived, frame.rtp_time as u32, frame.opus);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                tracks.retain(|_, t| now.saturating_duration_since(t.last_heard) < IDLE_TRACK);
                mixer.begin_tick();
                for (pid, t) in tracks.iter_mut() {
                    let pcm = match t.jitter.pop(now) {
                        Pop::Frame(p) => match t.decoder.decode(&p) {
                            Ok(pcm) => {
                                stats.decoded += 1;
                                Some(pcm)
                            }
                            Err(_) => {
                                stats.decode_errors += 1;
                                t.decoder.conceal().ok()
                            }
                        },
                        Pop::Lost => {
                            stats.concealed += 1;
                            t.decoder.conceal().ok()
                        }
                        Pop::Empty => None,
                    };
                    if let Some(pcm) = pcm {
                        let _ = mixer.add(pid, pcm);
                    }
                }
                for l in listeners.values_mut() {
                    let pid = l.participant_id.as_ref().unwrap_or(&nobody);
                    let out: MixFrame = if l.rate == rate {
                        let mut out = vec![0i16; mixer.frame_len()].into_boxed_slice();
                        mixer.mix_for(pid, &mut out);
                        out
                    } else {
                        // A narrowband listener of a full-band bus.
                        mixer.mix_for(pid, &mut full);
                        Box::new(l.down.process_frame(&full))
                    };
                    let _ = l.tx.try_send(out);
                }
            }
        }
    }
    tracing::debug!(?stats, "meeting audio bus ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codec::{OpusEncoder, OpusSettings};

    /// 20 ms of a `freq` Hz tone at 48 kHz, frame `n` of the stream.
    fn tone(freq: f64, n: u64) -> Vec<i16> {
        (0..960u64)
            .map(|i| {
                let t = (n * 960 + i) as f64 / 48_000.0;
                ((2.0 * std::f64::consts::PI * freq * t).sin() * 8000.0) as i16
            })
            .collect()
    }

    /// The share of `freq` in `pcm` (Goertzel power over total power).
    fn share(pcm: &[i16], rate: f64, freq: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * freq / rate;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let mut total = 0.0;
        for &x in pcm {
            let x = f64::from(x);
            total += x * x;
            let s = x + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        if total == 0.0 {
            0.0
        } else {
            2.0 * power / (total * pcm.len() as f64)
        }
    }

    /// Two members' tones, sent to the bus as client 1 received them.
    struct Feeder<'a> {
        sink: &'a AudioSink,
        encoders: &'a mut [OpusEncoder; 2],
        start: Instant,
        n: u64,
    }

    impl Feeder<'_> {
        /// Feeds `frames` ticks of both members and collects what the listeners got meanwhile.
        async fn feed(
            &mut self,
            frames: u64,
            rx8: &mut mpsc::Receiver<MixFrame>,
            mut rx48: Option<&mut mpsc::Receiver<MixFrame>>,
        ) -> (Vec<MixFrame>, Vec<MixFrame>) {
            let mut got8 = Vec::new();
            let mut got48 = Vec::new();
            let mut next = tokio::time::Instant::now();
            for k in self.n..self.n + frames {
                for (m, (pid, freq)) in [("member-a", 500.0), ("member-b", 1000.0)]
                    .iter()
                    .enumerate()
                {
                    let opus = self.encoders[m]
                        .encode(&tone(*freq, k))
                        .expect("encode")
                        .to_vec();
                    assert!((self.sink.filter)(pid), "client 1 owns the members' tracks");
                    self.sink
                        .tx
                        .send(AudioFrame {
                            client_id: 1,
                            participant_id: pid.to_string(),
                            rtp_time: k * 960,
                            arrived: self.start + TICK * k as u32,
                            opus,
                        })
                        .await
                        .expect("bus");
                }
                next += TICK;
                tokio::time::sleep_until(next).await;
                while let Ok(f) = rx8.try_recv() {
                    got8.push(f);
                }
                if let Some(rx) = rx48.as_deref_mut() {
                    while let Ok(f) = rx.try_recv() {
                        got48.push(f);
                    }
                }
            }
            self.n += frames;
            (got8, got48)
        }

        /// Feeds ten ticks at a time until each listener got `want` frames (the 48 kHz one only
        /// if given), at most `most` ticks: on a loaded machine the ticks of a second can come
        /// later than a second, and what is tested is a frame per tick, not the machine's pace.
        async fn feed_until(
            &mut self,
            want: usize,
            most: u64,
            rx8: &mut mpsc::Receiver<MixFrame>,
            mut rx48: Option<&mut mpsc::Receiver<MixFrame>>,
        ) -> (Vec<MixFrame>, Vec<MixFrame>) {
            let (mut got8, mut got48) = (Vec::new(), Vec::new());
            let mut fed = 0;
            while fed < most && (got8.len() < want || rx48.is_some() && got48.len() < want) {
                let (a, b) = self.feed(10, rx8, rx48.as_deref_mut()).await;
                got8.extend(a);
                got48.extend(b);
                fed += 10;
            }
            (got8, got48)
        }
    }

    /// Two members speak (client 1 brings both); callers listen at 8 and 48 kHz. Each gets
    /// frames at its own rate with both tones, whichever rate the bus runs at, and the one
    /// leaving or joining switches the bus without stopping anyone's frames.
    #[tokio::test]
    async fn listeners_get_the_mix_at_their_own_rate() {
        let bus = Bus::start();
        let sink = bus.sink(1);
        let (tx8, mut rx8) = Bus::frame_channel();
        bus.listen(1, tx8, NARROWBAND);
        bus.set_participant(1, "caller-1".into());
        let mut encoders = [
            OpusEncoder::new(48_000, OpusSettings::default()).expect("encoder"),
            OpusEncoder::new(48_000, OpusSettings::default()).expect("encoder"),
        ];
        let start = Instant::now();
        let mut feeder = Feeder {
            sink: &sink,
            encoders: &mut encoders,
            start,
            n: 0,
        };
        let (got8, _) = feeder.feed_until(40, 250, &mut rx8, None).await;
        assert!(got8.len() >= 40, "a frame per tick: {}", got8.len());
        assert!(got8.iter().all(|f| f.len() == 160), "8 kHz frames");
        let pcm: Vec<i16> = got8[got8.len() - 20..]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        assert!(
            share(&pcm, 8000.0, 500.0) > 0.2,
            "500 Hz in the narrowband mix"
        );
        assert!(
            share(&pcm, 8000.0, 1000.0) > 0.2,
            "1000 Hz in the narrowband mix"
        );

        // A full-band listener joins: the bus runs at 48 kHz, the narrowband one still gets 8 kHz.
        let (tx48, mut rx48) = Bus::frame_channel();
        bus.listen(2, tx48, FULLBAND);
        let (got8, got48) = feeder.feed_until(40, 250, &mut rx8, Some(&mut rx48)).await;
        assert!(
            got8.len() >= 40 && got48.len() >= 40,
            "{} {}",
            got8.len(),
            got48.len()
        );
        assert!(got8.iter().all(|f| f.len() == 160), "still 8 kHz frames");
        assert!(got48.iter().all(|f| f.len() == 960), "48 kHz frames");
        let pcm8: Vec<i16> = got8[got8.len() - 20..]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        let pcm48: Vec<i16> = got48[got48.len() - 20..]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        for freq in [500.0, 1000.0] {
            assert!(share(&pcm8, 8000.0, freq) > 0.2, "{freq} Hz at 8 kHz");
            assert!(share(&pcm48, 48_000.0, freq) > 0.2, "{freq} Hz at 48 kHz");
        }

        // It leaves: back to 8 kHz, and the narrowband listener hears on.
        bus.leave(2);
        let (got8, _) = feeder.feed_until(40, 250, &mut rx8, None).await;
        assert!(got8.len() >= 40 && got8.iter().all(|f| f.len() == 160));
        let pcm: Vec<i16> = got8[got8.len() - 20..]
            .iter()
            .flat_map(|f| f.iter().copied())
            .collect();
        assert!(share(&pcm, 8000.0, 500.0) > 0.2 && share(&pcm, 8000.0, 1000.0) > 0.2);
    }
}
