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
//! The bus runs its own 20 ms clock. Each track has a jitter buffer (the core's
//! [`JitterBuffer`], 40 ms); a lost frame is concealed by the decoder, a track that stays
//! silent for [`IDLE_TRACK`] is dropped (and its decoder freed). Each listener gets one 48 kHz
//! frame per tick on a small bounded channel; a listener that does not keep up loses frames,
//! never the bus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use klausur_client::driver::{AudioFilter, AudioFrame, AudioSink};
use tokio::sync::mpsc;

use crate::core::codec::OpusDecoder;
use crate::core::jitter::{JitterBuffer, Pop};
use crate::core::mixer::{Mixer, FRAME_SAMPLES};

/// A 20 ms frame at 48 kHz.
pub type Frame48 = Box<[i16; FRAME_SAMPLES]>;

/// A track silent this long is dropped.
pub const IDLE_TRACK: Duration = Duration::from_secs(10);
/// Frames queued towards one listener before the bus drops frames for it.
const LISTENER_QUEUE: usize = 4;
const TICK: Duration = Duration::from_millis(20);

enum Cmd {
    Listen {
        client_id: u64,
        tx: mpsc::Sender<Frame48>,
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
    tx: mpsc::Sender<Frame48>,
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

    /// Client `client_id` wants its caller's mix on `tx` from now on.
    pub fn listen(&self, client_id: u64, tx: mpsc::Sender<Frame48>) {
        let _ = self.cmds.send(Cmd::Listen { client_id, tx });
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
    pub fn frame_channel() -> (mpsc::Sender<Frame48>, mpsc::Receiver<Frame48>) {
        mpsc::channel(LISTENER_QUEUE)
    }
}

async fn run(
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    mut audio: mpsc::Receiver<AudioFrame>,
    owners: Owners,
) {
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut listeners: HashMap<u64, Listener> = HashMap::new();
    let mut mixer: Mixer<String> = Mixer::new();
    let mut stats = BusStats::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let nobody = String::new();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => break,
                Some(Cmd::Listen { client_id, tx }) => {
                    match listeners.get_mut(&client_id) {
                        Some(l) => l.tx = tx,
                        None => {
                            listeners.insert(client_id, Listener { participant_id: None, tx });
                        }
                    }
                }
                Some(Cmd::SetParticipant { client_id, participant_id }) => {
                    if let Some(l) = listeners.get_mut(&client_id) {
                        l.participant_id = Some(participant_id);
                    }
                }
                Some(Cmd::Leave { client_id }) => {
                    listeners.remove(&client_id);
                }
            },
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
                            (JitterBuffer::with_clock_rate(48_000), OpusDecoder::new())
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
                for l in listeners.values() {
                    let mut out: Frame48 = Box::new([0i16; FRAME_SAMPLES]);
                    mixer.mix_for(l.participant_id.as_ref().unwrap_or(&nobody), &mut out);
                    let _ = l.tx.try_send(out);
                }
            }
        }
    }
    tracing::debug!(?stats, "meeting audio bus ended");
}
