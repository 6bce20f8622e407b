//! One answered call, from the voice menu to the end: the task that owns the call's RTP socket,
//! its codec, jitter buffer and DTMF detection, the voice menu ([`Ivr`]) and its prompts, and
//! once the caller is admitted the caller's meeting client (a [`klausur_client`] participant
//! with its own device key and `phone_gateway` credential) and its place on the meeting's
//! [`Bus`].
//!
//! Every 20 ms the task
//! - takes the next trunk frame from the jitter buffer (decoded, or concealed), looks for
//!   in-band DTMF in it (G.711 legs until an RFC 4733 event is seen), and, once the caller is
//!   in the meeting and not muted, encodes it as Opus at the trunk's rate (8 kHz for G.711,
//!   48 kHz for an Opus trunk) for the caller's client, which encrypts it under the caller's
//!   own MLS member;
//! - sends one frame to the trunk: the prompt that is playing, laid over the meeting mix
//!   (lowered while a prompt plays), or the mix alone, or silence, so the leg never goes quiet.
//!
//! # One clock per meeting
//!
//! Until the caller is in the meeting the call runs on its own 20 ms clock ([`TICK`]). From
//! the first mix frame of the meeting's [`Bus`] on, the bus's clock paces the call: each mix
//! frame is sent to the trunk the moment it arrives, together with a step of the trunk side.
//! Two free-running 20 ms clocks would meet a frame twice or not at all now and then (a gap of
//! a frame, and a frame thrown away) and keep a queue between them (delay). If the bus stops
//! delivering for `BUS_CLOCK_LOST` (60 ms), the call's own clock takes over again.
//!
//! Everything decrypted stays in memory: nothing is recorded or written anywhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klausur_client::driver::{self as client, ClientEvent, ClientHandle, ClientOptions};
use klausur_client::session::{Event, JoinAs};
use klausur_proto::EndReason as MeetingEnd;
use rand::Rng as _;
use tokio::sync::{mpsc, oneshot};

use super::api::{CheckOutcome, DialInApi, Ticket};
use super::bus::{Bus, MixFrame};
use super::sip::{ActiveCall, CallEvent, RtpPort};
use super::Gateway;
use crate::core::codec::{Negotiated, OpusEncoder, OpusSettings, TrunkDecoder, TrunkEncoder};
use crate::core::dtmf::DtmfInput;
use crate::core::ivr::{CheckResult, Input, Ivr, MeetingEvent, Output};
use crate::core::jitter::{JitterBuffer, Pop};
use crate::core::mixer::FRAME_SAMPLES;
use crate::core::prompts::PromptPlayer;
use crate::core::reframe::Reframer;
use crate::core::resample::{Upsampler, FRAME_8K};
use crate::core::rtp;

/// The call's clock.
pub const TICK: Duration = Duration::from_millis(20);
/// The bus's clock counts as lost (and the call's own takes over) after this long without a
/// mix frame.
const BUS_CLOCK_LOST: Duration = Duration::from_millis(60);
/// Opus complexity for a G.711 caller's voice (see [`voice_settings`]).
const NARROWBAND_COMPLEXITY: i32 = 1;
/// How much the meeting is lowered while a prompt plays over it (a factor of 1/4: -12 dB).
const DUCK_SHIFT: u32 = 2;

/// The meeting side of a call, once the caller was admitted.
struct Meeting {
    client: ClientHandle,
    client_id: u64,
    bus: Arc<Bus>,
    encoder: OpusEncoder,
    joined: bool,
    over: bool,
}

/// What the call task needs from the gateway.
pub(crate) struct CallSetup {
    pub call: ActiveCall,
    pub port: RtpPort,
    pub negotiated: Negotiated,
    pub caller: Option<String>,
    pub source: SocketAddr,
    /// The gateway's running number of the call: how it appears in the log (never with any
    /// digit of the caller's number).
    pub number: u64,
}

/// The Opus settings for a caller's voice at `sample_rate`. A G.711 leg's 8 kHz audio needs no
/// more than narrowband's bitrate, and it went through G.711's own quantisation already: the
/// encoder's delayed-decision search (complexity 2 and up) costs the gateway a fifth of its
/// CPU per call for no audible gain on such a source.
fn voice_settings(sample_rate: u32) -> OpusSettings {
    let default = OpusSettings::default();
    if sample_rate == 8000 {
        OpusSettings {
            bitrate: 20_000,
            complexity: NARROWBAND_COMPLEXITY,
            ..default
        }
    } else {
        default
    }
}

/// The RFC 6464 audio level of a 48 kHz frame: 0 (loudest) to 127 (silence), in -dBov.
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / pcm.len() as f64).sqrt() / 32768.0;
    if rms <= 0.0 {
        return 127;
    }
    let dbov = 20.0 * rms.log10();
    (-dbov).round().clamp(0.0, 127.0) as u8
}

fn check_result(outcome: &Result<CheckOutcome, super::api::ApiError>) -> CheckResult {
    match outcome {
        Ok(CheckOutcome::Admit {
            invitee,
            meeting_title,
            ..
        }) => CheckResult::Admit {
            invitee: invitee.clone(),
            meeting_title: meeting_title.clone(),
        },
        Ok(CheckOutcome::Wrong) => CheckResult::Wrong,
        Ok(CheckOutcome::NotAllowed) => CheckResult::NotAllowed,
        Ok(CheckOutcome::NotYet) => CheckResult::NotYet,
        Ok(CheckOutcome::Ended) => CheckResult::Ended,
        Ok(CheckOutcome::Throttled) => CheckResult::Throttled,
        Err(_) => CheckResult::Unreachable,
    }
}

/// The meeting event a client event means for the voice menu, if any.
fn meeting_event(e: &ClientEvent) -> Option<MeetingEvent> {
    Some(match e {
        ClientEvent::Session(Event::Lobby) => MeetingEvent::Lobby,
        ClientEvent::Session(Event::Joined { .. }) => MeetingEvent::Joined,
        ClientEvent::Session(Event::MutedByModerator(true)) => MeetingEvent::MutedByModerator,
        ClientEvent::Session(Event::MutedByModerator(false)) => MeetingEvent::ModeratorMuteLifted,
        ClientEvent::Session(Event::HandLowered) => MeetingEvent::HandLoweredByModerator,
        ClientEvent::Session(Event::Ended { reason, .. }) => match reason {
            Some(MeetingEnd::Removed) => MeetingEvent::Removed,
            Some(MeetingEnd::Denied) => MeetingEvent::Denied,
            Some(MeetingEnd::EndedByModerator) => MeetingEvent::Ended,
            // The server goes down (a restart), or the connection closed without a word: try
            // to get back in (a restarted server no longer knows the ticket and refuses it).
            Some(MeetingEnd::ServerShutdown) | None => MeetingEvent::Interrupted,
            // Replaced by another call with the same ticket, or no room in a full lobby.
            Some(MeetingEnd::Replaced | MeetingEnd::LobbyFull) => MeetingEvent::ConnectionLost,
        },
        // The server refused the caller's ticket, or the group put the caller's member out. A
        // refusal of anything else (a rate limit, an offer) leaves the call in the meeting.
        ClientEvent::Session(Event::Refused { ended: true, .. }) => MeetingEvent::ConnectionLost,
        ClientEvent::Session(Event::RemovedFromGroup) => MeetingEvent::ConnectionLost,
        // The server lost the call's media connection (its media worker was restarted): get
        // back in with a new one, as after a broken connection.
        ClientEvent::Session(Event::MediaLost) => MeetingEvent::Interrupted,
        // The server is being taken out of service: the caller hears so.
        ClientEvent::Session(Event::Maintenance { .. }) => MeetingEvent::Maintenance,
        // The client could not reach the server, or lost it.
        ClientEvent::Failed(_) | ClientEvent::Stopped => MeetingEvent::Interrupted,
        _ => return None,
    })
}

/// Runs one call to its end.
pub(crate) async fn run(gw: Arc<Gateway>, setup: CallSetup) {
    let CallSetup {
        mut call,
        port,
        negotiated,
        caller,
        source,
        number,
    } = setup;
    let label = format!("#{number}");
    let codec = negotiated.codec;
    let (Ok(mut decoder), Ok(mut encoder), Ok(mut jitter)) = (
        TrunkDecoder::new(codec),
        TrunkEncoder::new(codec, OpusSettings::default()),
        JitterBuffer::<Vec<u8>>::with_clock_rate(codec.clock_rate()),
    ) else {
        tracing::warn!("call {label}: codec setup failed");
        let _ = call.hangup().await;
        return;
    };
    let mut remote = call.remote().rtp_addr;
    let mut on_hold = call.remote().on_hold();
    let mut dtmf = DtmfInput::new();
    let mut reframer = Reframer::new();
    let mut rtp_out = {
        let mut rng = rand::thread_rng();
        rtp::RtpSender::new(rng.gen(), rng.gen(), rng.gen(), codec.frame_ticks())
    };
    let mut player = PromptPlayer::new(gw.prompts.clone());
    let mut prompt_up = Upsampler::new();
    let start = Instant::now();
    let mut ivr = Ivr::new(start);
    let mut check: Option<oneshot::Receiver<Result<CheckOutcome, super::api::ApiError>>> = None;
    let mut ticket: Option<Ticket> = None;
    let mut meeting_id: Option<String> = None;
    let mut meeting: Option<Meeting> = None;
    let mut muted = false;
    let mut hangup = false;
    let mut packet = Vec::with_capacity(1500);
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // When the meeting's bus last delivered a mix frame: from the first one on, the bus's
    // clock paces the call (see the module docs).
    let mut last_bus_frame: Option<Instant> = None;
    // The meeting's mix for this caller, from the bus.
    let mut mix: Option<mpsc::Receiver<MixFrame>> = None;
    tracing::info!("call {label}: answered ({})", codec.encoding_name());

    'call: loop {
        // Carry out what the voice menu wants.
        while let Some(out) = ivr.poll_output() {
            match out {
                Output::Play(p) => player.play(p),
                Output::StopPrompts => player.flush(),
                Output::Check {
                    meeting_number,
                    pin,
                } => {
                    let (tx, rx) = oneshot::channel();
                    let api: DialInApi = gw.api.clone();
                    let caller = caller.clone();
                    let source = source.ip().to_string();
                    tokio::spawn(async move {
                        let r = api
                            .check(&meeting_number, pin.expose(), caller.as_deref(), &source)
                            .await;
                        let _ = tx.send(r);
                    });
                    check = Some(rx);
                }
                out @ (Output::Join | Output::Rejoin) => {
                    if out == Output::Rejoin {
                        // What is left of the broken connection goes; its goodbye runs on its
                        // own, its events are not read any more.
                        if let Some(old) = meeting.take() {
                            old.client.leave();
                            old.bus.leave(old.client_id);
                        }
                        mix = None;
                        last_bus_frame = None;
                        tracing::info!("call {label}: joining the meeting again");
                    }
                    let (Some(t), Some(mid)) = (ticket.clone(), meeting_id.clone()) else {
                        ivr.handle_input(
                            Instant::now(),
                            Input::Meeting(MeetingEvent::ConnectionLost),
                        );
                        continue;
                    };
                    let bus = gw.bus(&mid);
                    let client_id = gw.next_client_id();
                    let (mix_tx, mix_rx) = Bus::frame_channel();
                    bus.listen(client_id, mix_tx, codec.sample_rate());
                    let client = client::spawn(ClientOptions {
                        server: gw.api.server().to_string(),
                        meeting_id: mid.clone(),
                        join: JoinAs::DialIn(t.0.clone()),
                        publish_audio: true,
                        bind_ip: gw.media_ip,
                        client_id,
                        audio: Some(bus.sink(client_id)),
                        tls: gw.api.tls().cloned(),
                        gateway_token: Some(gw.api.token().clone()),
                    });
                    let Ok(encoder) =
                        OpusEncoder::new(codec.sample_rate(), voice_settings(codec.sample_rate()))
                    else {
                        ivr.handle_input(
                            Instant::now(),
                            Input::Meeting(MeetingEvent::ConnectionLost),
                        );
                        continue;
                    };
                    mix = Some(mix_rx);
                    meeting = Some(Meeting {
                        client,
                        client_id,
                        bus,
                        encoder,
                        joined: false,
                        over: false,
                    });
                    tracing::info!("call {label}: joining the meeting");
                }
                Output::SetMuted(m) => {
                    muted = m;
                    if let Some(mt) = &meeting {
                        mt.client.set_muted(m);
                    }
                }
                Output::RaiseHand(r) => {
                    if let Some(mt) = &meeting {
                        mt.client.raise_hand(r);
                    }
                }
                Output::Hangup(reason) => {
                    tracing::info!("call {label}: ending ({reason:?})");
                    hangup = true;
                }
            }
        }
        if hangup {
            break 'call;
        }
        let timeout = ivr
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));

        // Set by a clock (the call's own, or the bus's with its mix frame): run one 20 ms step.
        let mut wake: Option<Option<MixFrame>> = None;
        tokio::select! {
            r = port.rtp().recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                // Media only from the trunk's address (no injection from elsewhere).
                if from.ip() != remote.ip() {
                    continue;
                }
                let Some(bytes) = buf.get(..n) else { continue };
                let Ok(p) = rtp::parse(bytes) else { continue };
                let now = Instant::now();
                if Some(p.payload_type) == negotiated.telephone_event {
                    if let Ok(Some(d)) = dtmf.on_telephone_event(p.timestamp, p.marker, p.payload) {
                        ivr.handle_input(now, Input::Digit(d));
                    }
                } else if p.payload_type == negotiated.payload_type {
                    if codec.sample_rate() == 8000 {
                        // G.711 in 20 ms frames, whatever the trunk's packets hold.
                        reframer.push(p.timestamp, p.payload, |ts, frame| jitter.push(now, ts, frame));
                    } else {
                        jitter.push(now, p.timestamp, p.payload.to_vec());
                    }
                }
            }
            ev = call.next_event() => match ev {
                CallEvent::RemoteMediaChanged(r) => {
                    remote = r.rtp_addr;
                    on_hold = r.on_hold();
                }
                CallEvent::Ended(reason) => {
                    tracing::info!("call {label}: ended by the trunk side ({reason:?})");
                    break 'call;
                }
            },
            r = async { check.as_mut().expect("guarded").await }, if check.is_some() => {
                check = None;
                let outcome = r.unwrap_or_else(|_| Err(super::api::ApiError::Refused("lost".into())));
                if let Err(e) = &outcome {
                    tracing::warn!("call {label}: the dial-in API failed: {e}");
                }
                if let Ok(CheckOutcome::Admit { ticket: t, meeting_id: m, .. }) = &outcome {
                    ticket = Some(t.clone());
                    meeting_id = Some(m.clone());
                }
                ivr.handle_input(Instant::now(), Input::Check(check_result(&outcome)));
            }
            e = async { meeting.as_mut().expect("guarded").client.events.recv().await },
                if meeting.as_ref().is_some_and(|m| !m.over) => {
                let now = Instant::now();
                let Some(mt) = meeting.as_mut() else { continue };
                let e = e.unwrap_or(ClientEvent::Stopped);
                match &e {
                    ClientEvent::Session(Event::Lobby) => {
                        tracing::info!("call {label}: waiting in the lobby");
                    }
                    ClientEvent::Session(Event::Joined { self_id }) => {
                        tracing::info!("call {label}: in the meeting");
                        mt.joined = true;
                        // What the bus mixed while the caller waited is stale.
                        if let Some(m) = mix.as_mut() {
                            while m.try_recv().is_ok() {}
                        }
                        mt.bus.set_participant(mt.client_id, self_id.clone());
                        if muted {
                            mt.client.set_muted(true);
                        }
                    }
                    ClientEvent::Session(Event::InGroup) => {
                        tracing::info!("call {label}: in the encrypted group");
                    }
                    ClientEvent::Session(Event::Warning(w)) => {
                        tracing::debug!("call {label}: meeting client: {w}");
                    }
                    ClientEvent::Failed(why) => {
                        tracing::warn!("call {label}: meeting client failed: {why}");
                    }
                    _ => {}
                }
                if matches!(e, ClientEvent::Stopped) {
                    mt.over = true;
                }
                if let Some(me) = meeting_event(&e) {
                    if matches!(me, MeetingEvent::Removed | MeetingEvent::Denied | MeetingEvent::Ended | MeetingEvent::Interrupted | MeetingEvent::ConnectionLost) {
                        mt.over = true;
                    }
                    ivr.handle_input(now, Input::Meeting(me));
                }
            }
            _ = tick.tick() => {
                // The call's own clock: until the meeting's bus clocks the call, and if the
                // bus falls silent.
                let bus_clocked = last_bus_frame
                    .is_some_and(|t| t.elapsed() < BUS_CLOCK_LOST);
                if !bus_clocked {
                    wake = Some(None);
                }
            }
            f = async { mix.as_mut().expect("guarded").recv().await },
                if mix.is_some() && meeting.as_ref().is_some_and(|m| m.joined && !m.over) => {
                match f {
                    Some(f) => {
                        last_bus_frame = Some(Instant::now());
                        wake = Some(Some(f));
                    }
                    // The bus is gone: the call's own clock carries on.
                    None => mix = None,
                }
            }
            _ = tokio::time::sleep_until(timeout) => ivr.handle_timeout(Instant::now()),
        }
        let Some(mix) = wake.take() else { continue };
        let now = Instant::now();
        // Trunk -> meeting.
        let pcm: Option<&[i16]> = match jitter.pop(now) {
            Pop::Frame(p) => decoder.decode(&p).ok(),
            Pop::Lost => decoder.conceal().ok(),
            Pop::Empty => None,
        };
        if let Some(mt) = meeting.as_mut().filter(|m| m.joined && !m.over && !muted) {
            // The caller's voice as Opus at the trunk's own rate (a G.711 leg carries 8 kHz
            // audio: encoding it at 8 kHz spares the resampler and most of the encoder).
            let frame = pcm.filter(|p| p.len() == mt.encoder.frame_samples());
            let level = frame.map(audio_level).unwrap_or(127);
            let opus = match frame {
                Some(p) => mt.encoder.encode(p),
                None => mt.encoder.silence(),
            };
            if let Ok(opus) = opus {
                mt.client.send_audio(opus.to_vec(), level);
            }
        }
        if let Some(frame) = pcm.and_then(|p| <&[i16; FRAME_8K]>::try_from(p).ok()) {
            if codec.sample_rate() == 8000 {
                for d in dtmf.on_audio(frame) {
                    ivr.handle_input(now, Input::Digit(d));
                }
            }
        }
        // Meeting (and prompts) -> trunk.
        let prompt8 = player.next_frame();
        if player.poll_finished() {
            ivr.handle_input(now, Input::PromptsDone);
        }
        // The mix comes at the trunk's rate (the bus brings it down to 8 kHz for G.711).
        let payload = if codec.sample_rate() == 8000 {
            let mut out8 = [0i16; FRAME_8K];
            if let Some(m) = mix.as_deref().filter(|m| m.len() == FRAME_8K) {
                out8.copy_from_slice(m);
            }
            if let Some(p) = prompt8 {
                for (o, s) in out8.iter_mut().zip(p.iter()) {
                    *o = (*o >> DUCK_SHIFT).saturating_add(*s);
                }
            }
            encoder.encode(&out8)
        } else {
            let mut out48 = [0i16; FRAME_SAMPLES];
            if let Some(m) = mix.as_deref().filter(|m| m.len() == FRAME_SAMPLES) {
                out48.copy_from_slice(m);
            }
            if let Some(p) = prompt8 {
                let p48 = prompt_up.process_frame(&p);
                for (o, s) in out48.iter_mut().zip(p48.iter()) {
                    *o = (*o >> DUCK_SHIFT).saturating_add(*s);
                }
            }
            encoder.encode(&out48)
        };
        if let (Ok(payload), false) = (payload, on_hold) {
            packet.clear();
            if rtp_out
                .write_frame(negotiated.payload_type, payload, &mut packet)
                .is_ok()
            {
                let _ = port.rtp().send_to(&packet, remote).await;
            }
        }
    }

    // The end: leave the meeting, void the ticket, hang up.
    if let Some(mt) = meeting.take() {
        mt.client.leave();
        mt.bus.leave(mt.client_id);
        // Let the client say goodbye (bounded).
        let mut events = mt.client.events;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(e) = events.recv().await {
                if matches!(e, ClientEvent::Stopped) {
                    break;
                }
            }
        })
        .await;
    }
    if let Some(t) = ticket {
        if let Err(e) = gw.api.end(&t).await {
            tracing::debug!("call {label}: the ticket could not be voided: {e}");
        }
    }
    let _ = call.hangup().await;
    tracing::info!("call {label}: over after {} s", start.elapsed().as_secs());
    drop(port);
}

#[cfg(test)]
mod tests {
    use super::{audio_level, meeting_event};
    use crate::core::ivr::MeetingEvent;
    use klausur_client::driver::ClientEvent;
    use klausur_client::session::Event;
    use klausur_proto::ErrorCode;

    /// Only a refused join ends the caller's meeting; a refused message later (a rate limit, an
    /// offer) leaves the call in it.
    #[test]
    fn only_a_refused_join_loses_the_meeting() {
        let refused = |ended| {
            meeting_event(&ClientEvent::Session(Event::Refused {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                ended,
            }))
        };
        assert_eq!(refused(true), Some(MeetingEvent::ConnectionLost));
        assert_eq!(refused(false), None);
        // Media the server lost: the call gets back in, as after a broken connection.
        assert_eq!(
            meeting_event(&ClientEvent::Session(Event::MediaLost)),
            Some(MeetingEvent::Interrupted)
        );
    }

    #[test]
    fn audio_levels() {
        assert_eq!(audio_level(&[0; 960]), 127);
        assert_eq!(audio_level(&[]), 127);
        // Full scale square wave: 0 dBov.
        let loud: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { i16::MAX } else { i16::MIN })
            .collect();
        assert_eq!(audio_level(&loud), 0);
        // -20 dBov.
        let quiet: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 3277 } else { -3277 })
            .collect();
        assert_eq!(audio_level(&quiet), 20);
    }
}
