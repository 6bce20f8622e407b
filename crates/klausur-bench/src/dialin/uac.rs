//! The benchmark's telephone callers: a SIP user agent client on the ezk SIP stack (the same
//! stack the gateway uses) and, per call, the RTP leg the meeting's clock drives.
//!
//! Why not sipp: sipp plays prerecorded RTP (DTMF captures, a 7 s speech file) and cannot
//! type a different PIN per call without one scenario file per call, nor send a tone on a
//! shared clock, nor decode what comes back. Here each call is an ezk INVITE session (offer
//! PCMA and telephone-event, ACK, BYE either way) and the RTP is built per 20 ms tick by a
//! [`Leg`]: RFC 4733 events for the meeting number and PIN, then the caller's G.711 frames,
//! with a chosen share of them dropped at random (the trunk leg's loss).
//!
//! [`Leg`] is sans-IO (it writes packets into a buffer; the scenario sends them), so the
//! packets it makes are tested without a network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytesstr::BytesStr;
use ezk_sip_core::transport::udp::Udp;
use ezk_sip_core::Endpoint;
use ezk_sip_types::header::typed::{Contact, ContentType};
use ezk_sip_types::host::HostPort;
use ezk_sip_types::uri::{NameAddr, SipUri};
use ezk_sip_types::StatusCode;
use ezk_sip_ua::dialog::DialogLayer;
use ezk_sip_ua::invite::initiator::{EarlyResponse, InviteInitiator, Response};
use ezk_sip_ua::invite::session::{InviteSession, InviteSessionEvent};
use ezk_sip_ua::invite::{create_ack, InviteLayer};
use klausur_sip::core::g711::ALAW_SILENCE;
use klausur_sip::core::rtp::RtpHeader;
use klausur_sip::driver::sip::{sdp::parse_remote_sdp, MediaFormat, RemoteSdp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;

/// G.711 A-law, static payload type.
pub const PCMA_PT: u8 = 8;
/// Our telephone-event payload type (the gateway answers with the one we offer).
pub const EVENT_PT: u8 = 101;
/// Samples (and RTP ticks) per 20 ms frame at 8 kHz.
pub const FRAME_8K: u32 = 160;
/// Ticks of silence after the answer before the first key.
const LEAD_IN_TICKS: u32 = 15;
/// Ticks per key: 3 event packets (the third ends it), 2 retransmissions of the end, 2 of
/// silence before the next key.
const KEY_TICKS: u32 = 7;
/// How long a call may take to be answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a BYE may take.
const BYE_TIMEOUT: Duration = Duration::from_secs(5);

/// The RFC 4733 event code of a key.
fn event_code(key: char) -> Option<u8> {
    match key {
        '0'..='9' => Some(key as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        _ => None,
    }
}

/// What one tick sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// A packet is in the buffer.
    Packet,
    /// A packet was made and dropped (the trunk's loss): the buffer is empty.
    Dropped,
}

/// The RTP stream of one caller, one packet per 20 ms tick. See the module docs.
pub struct Leg {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    audio_pt: u8,
    event_pt: u8,
    keys: Vec<u8>,
    /// Ticks since the answer.
    tick: u32,
    /// Drop probability of audio packets, parts per million (shared: the scenario changes it).
    loss_ppm: Arc<AtomicU32>,
    rng: StdRng,
    /// Audio packets dropped so far.
    pub dropped: u64,
}

impl Leg {
    /// A leg that types `keys` (digits, `*`, `#`; anything else is skipped) and then sends
    /// audio. `seed` makes the SSRC, the first sequence number and timestamp and the losses.
    pub fn new(seed: u64, audio_pt: u8, event_pt: u8, keys: &str, loss_ppm: Arc<AtomicU32>) -> Leg {
        let mut rng = StdRng::seed_from_u64(seed);
        Leg {
            ssrc: rng.gen(),
            sequence: rng.gen(),
            timestamp: rng.gen(),
            audio_pt,
            event_pt,
            keys: keys.chars().filter_map(event_code).collect(),
            tick: 0,
            loss_ppm,
            rng,
            dropped: 0,
        }
    }

    /// Whether the keys have all been typed (from then on the leg sends the caller's audio).
    pub fn talking(&self) -> bool {
        self.talking_at(self.tick)
    }

    fn talking_at(&self, tick: u32) -> bool {
        tick >= LEAD_IN_TICKS + KEY_TICKS * self.keys.len() as u32
    }

    /// The next tick's packet into `out` (cleared first): a telephone event while keys are
    /// typed, silence around them, then `audio` (160 bytes of A-law; dropped at the loss rate).
    pub fn tick(&mut self, audio: &[u8], out: &mut Vec<u8>) -> Sent {
        out.clear();
        let tick = self.tick;
        self.tick = self.tick.saturating_add(1);
        let timestamp = self.timestamp;
        self.timestamp = self.timestamp.wrapping_add(FRAME_8K);
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        let silence = [ALAW_SILENCE; FRAME_8K as usize];
        let header = |payload_type, marker, timestamp| RtpHeader {
            payload_type,
            marker,
            sequence,
            timestamp,
            ssrc: self.ssrc,
        };
        let written = if tick < LEAD_IN_TICKS {
            header(self.audio_pt, tick == 0, timestamp).write(&silence, out)
        } else if !self.talking_at(tick) {
            let k = tick - LEAD_IN_TICKS;
            let (key, step) = ((k / KEY_TICKS) as usize, k % KEY_TICKS);
            let event = self.keys.get(key).copied().unwrap_or(0);
            // The event's timestamp is its first packet's; durations grow by a frame.
            let start = timestamp.wrapping_sub(step * FRAME_8K);
            match step {
                0..=4 => {
                    let duration = (FRAME_8K * (step.min(2) + 1)) as u16;
                    let end = step >= 2;
                    // Event, E bit, volume 10 dBm0 below, duration (RFC 4733 §2.3).
                    let d = duration.to_be_bytes();
                    let payload = [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]];
                    header(self.event_pt, step == 0, start).write(&payload, out)
                }
                _ => header(self.audio_pt, false, timestamp).write(&silence, out),
            }
        } else {
            let ppm = self.loss_ppm.load(Ordering::Relaxed);
            if ppm > 0 && self.rng.gen_range(0..1_000_000) < ppm {
                self.dropped += 1;
                return Sent::Dropped;
            }
            header(self.audio_pt, false, timestamp).write(audio, out)
        };
        if written.is_err() {
            out.clear();
        }
        Sent::Packet
    }
}

/// A SIP user agent for the benchmark's calls: one UDP transport on loopback.
pub struct SipUa {
    endpoint: Endpoint,
    local: SocketAddr,
}

/// An answered call: where to send RTP, and the session's task.
pub struct Call {
    /// The gateway's RTP address.
    pub remote_rtp: SocketAddr,
    /// Set when the call ended (either side's BYE).
    pub ended: Arc<AtomicBool>,
    hangup: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Call {
    /// Sends BYE (if the call is still up) and waits for the session's end (bounded).
    pub async fn hang_up(mut self) {
        if let Some(tx) = self.hangup.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(BYE_TIMEOUT + Duration::from_secs(1), &mut self.task).await;
        self.task.abort();
    }
}

/// Our SDP offer: PCMA and telephone-event on `rtp`.
fn offer(rtp: SocketAddr) -> String {
    let ip = rtp.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=klausur-bench\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {PCMA_PT} {EVENT_PT}\r\na=rtpmap:{PCMA_PT} PCMA/8000\r\n\
         a=rtpmap:{EVENT_PT} telephone-event/8000\r\na=fmtp:{EVENT_PT} 0-15\r\na=ptime:20\r\n\
         a=sendrecv\r\n",
        port = rtp.port()
    )
}

/// Checks the gateway's answer: PCMA and telephone-event chosen, an RTP address.
fn check_answer(answer: &RemoteSdp) -> anyhow::Result<()> {
    if answer.find(&MediaFormat::pcma()).map(|f| f.payload_type) != Some(PCMA_PT) {
        bail!("the gateway did not answer with PCMA: {:?}", answer.formats);
    }
    if answer.telephone_event(8000).map(|f| f.payload_type) != Some(EVENT_PT) {
        bail!(
            "the gateway did not answer with telephone-event: {:?}",
            answer.formats
        );
    }
    Ok(())
}

impl SipUa {
    /// Starts the user agent on an ephemeral UDP port of `ip`.
    pub async fn start(ip: std::net::IpAddr) -> anyhow::Result<SipUa> {
        let mut builder = Endpoint::builder();
        // A resolver that needs no system configuration (we only call IP literals).
        builder.set_dns_resolver(
            hickory_resolver::TokioResolver::builder_with_config(
                hickory_resolver::config::ResolverConfig::new(),
                hickory_resolver::name_server::TokioConnectionProvider::default(),
            )
            .build(),
        );
        builder.user_agent("klausur-bench");
        builder.add_layer(DialogLayer::default());
        builder.add_layer(InviteLayer::default());
        let transport = Udp::spawn(&mut builder, SocketAddr::new(ip, 0))
            .await
            .context("SIP socket")?;
        let local = transport.bound();
        let endpoint = builder.build();
        Ok(SipUa { endpoint, local })
    }

    /// Calls `gateway` as `caller` (the From user part) with RTP on `rtp`; returns once the
    /// call is answered and acknowledged.
    pub async fn call(
        &self,
        gateway: SocketAddr,
        caller: &str,
        rtp: SocketAddr,
    ) -> anyhow::Result<Call> {
        let local_uri =
            SipUri::new(HostPort::from(self.local)).user(BytesStr::from(caller.to_string()));
        let target = SipUri::new(HostPort::from(gateway)).user(BytesStr::from_static("dialin"));
        let mut initiator = InviteInitiator::new(
            self.endpoint.clone(),
            NameAddr::uri(local_uri.clone()),
            Contact::new(NameAddr::uri(local_uri)),
            target,
        );
        initiator.support_timer = false;
        initiator.support_100rel = false;
        let mut invite = initiator.create_invite();
        invite
            .headers
            .insert_named(&ContentType(BytesStr::from_static("application/sdp")));
        invite.body = offer(rtp).into();
        initiator.send_invite(invite).await.context("INVITE")?;
        let (session, response) = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match initiator.receive().await? {
                    Response::Provisional(_) | Response::EarlyEvent => {}
                    Response::Failure(r) => {
                        bail!("the gateway refused the call: {}", r.line.code.into_u16())
                    }
                    Response::Session(s, r) => return Ok((s, r)),
                    Response::Early(mut early, ..) => loop {
                        // The 200 of an early dialog comes through it.
                        match early.receive().await? {
                            EarlyResponse::Provisional(..) => {}
                            EarlyResponse::Success(s, r) => return Ok((s, r)),
                            EarlyResponse::Terminated => bail!("the call ended before the answer"),
                        }
                    },
                    Response::Finished => bail!("the INVITE transaction ended without an answer"),
                }
            }
        })
        .await
        .context("no answer in time")??;
        let answer = parse_remote_sdp(&response.body).context("the gateway's SDP answer")?;
        check_answer(&answer)?;
        let mut ack = create_ack(&session.dialog, response.base_headers.cseq.cseq)
            .await
            .context("ACK")?;
        self.endpoint
            .send_outgoing_request(&mut ack)
            .await
            .context("ACK")?;
        initiator.set_acknowledge(&session, ack);
        let (hangup, hangup_rx) = oneshot::channel();
        let ended = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(drive(session, initiator, hangup_rx, ended.clone()));
        Ok(Call {
            remote_rtp: answer.rtp_addr,
            ended,
            hangup: Some(hangup),
            task,
        })
    }
}

/// Runs an answered call's session until either side hangs up. The INVITE transaction is kept
/// so a retransmitted 200 gets its ACK again.
async fn drive(
    mut session: InviteSession,
    mut initiator: InviteInitiator,
    mut hangup: oneshot::Receiver<()>,
    ended: Arc<AtomicBool>,
) {
    let mut transaction_done = false;
    loop {
        let hang_up = tokio::select! {
            _ = &mut hangup => true,
            r = initiator.receive(), if !transaction_done => {
                if !matches!(r, Ok(Response::Provisional(_) | Response::EarlyEvent | Response::Session(..))) {
                    transaction_done = true;
                }
                false
            }
            ev = session.drive() => match ev {
                Ok(InviteSessionEvent::Bye(bye)) => {
                    let _ = bye.process_default().await;
                    break;
                }
                Ok(InviteSessionEvent::RefreshNeeded(r)) => {
                    let _ = r.process_default().await;
                    false
                }
                Ok(InviteSessionEvent::ReInviteReceived(re)) => {
                    // The gateway never re-INVITEs; refuse one rather than guess its media.
                    if let Ok(response) = re.session.dialog.create_response(
                        &re.invite,
                        StatusCode::NOT_ACCEPTABLE_HERE,
                        None,
                    ) {
                        let _ = re.transaction.respond_failure(response).await;
                    }
                    false
                }
                Ok(InviteSessionEvent::Terminated) | Err(_) => break,
            },
        };
        if hang_up {
            let _ = tokio::time::timeout(BYE_TIMEOUT, session.terminate()).await;
            break;
        }
    }
    ended.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use klausur_sip::core::dtmf::TelephoneEventReceiver;
    use klausur_sip::core::rtp::parse;

    fn leg(keys: &str, ppm: u32) -> Leg {
        Leg::new(7, PCMA_PT, EVENT_PT, keys, Arc::new(AtomicU32::new(ppm)))
    }

    #[test]
    fn keys_arrive_once_each_as_rfc4733_events() {
        let mut l = leg("12#4#", 0);
        let mut rx = TelephoneEventReceiver::new();
        let mut digits = String::new();
        let mut out = Vec::new();
        let (mut last_seq, mut last_ts) = (None::<u16>, None::<u32>);
        let audio = [0x55u8; 160];
        let mut ticks = 0;
        while !l.talking() {
            assert_eq!(l.tick(&audio, &mut out), Sent::Packet);
            ticks += 1;
            let p = parse(&out).expect("RTP");
            if let Some(s) = last_seq {
                assert_eq!(p.sequence, s.wrapping_add(1), "sequence numbers run on");
            }
            last_seq = Some(p.sequence);
            if p.payload_type == EVENT_PT {
                if let Some(d) = rx
                    .on_packet(p.timestamp, p.marker, p.payload)
                    .expect("event")
                {
                    digits.push(d.to_char());
                }
            } else {
                assert_eq!(p.payload_type, PCMA_PT);
                assert_eq!(p.payload, &[ALAW_SILENCE; 160], "silence while dialing");
                if let Some(t) = last_ts {
                    assert_eq!(p.timestamp.wrapping_sub(t) % FRAME_8K, 0);
                }
                last_ts = Some(p.timestamp);
            }
        }
        assert_eq!(digits, "12#4#");
        assert_eq!(ticks, LEAD_IN_TICKS + 5 * KEY_TICKS);
        // Then the caller's audio.
        l.tick(&audio, &mut out);
        let p = parse(&out).expect("RTP");
        assert_eq!(p.payload_type, PCMA_PT);
        assert_eq!(p.payload, &audio);
    }

    #[test]
    fn loss_drops_about_the_share_asked_and_keeps_the_numbering() {
        let ppm = Arc::new(AtomicU32::new(0));
        let mut l = Leg::new(42, PCMA_PT, EVENT_PT, "", ppm.clone());
        let mut out = Vec::new();
        let audio = [0x55u8; 160];
        while !l.talking() {
            l.tick(&audio, &mut out);
        }
        for _ in 0..1000 {
            assert_eq!(l.tick(&audio, &mut out), Sent::Packet);
        }
        ppm.store(10_000, Ordering::Relaxed);
        let mut last = None::<u16>;
        let (mut got, mut holes) = (0u64, 0u64);
        for _ in 0..100_000 {
            if l.tick(&audio, &mut out) == Sent::Packet {
                let p = parse(&out).expect("RTP");
                if let Some(prev) = last {
                    holes += u64::from(p.sequence.wrapping_sub(prev).wrapping_sub(1));
                }
                last = Some(p.sequence);
                got += 1;
            } else {
                assert!(out.is_empty());
            }
        }
        // 1 % of 100,000: about 1,000 (binomial, sd ~31).
        assert!((850..=1150).contains(&l.dropped), "{}", l.dropped);
        assert_eq!(got + l.dropped, 100_000);
        // Every dropped packet is a hole in the numbering (but one at the very start or end).
        assert!(
            holes + 1 >= l.dropped && holes <= l.dropped,
            "{holes} {}",
            l.dropped
        );
    }

    #[test]
    fn the_offer_names_pcma_and_telephone_event() {
        let o = offer("127.0.0.1:30000".parse().expect("addr"));
        let parsed = parse_remote_sdp(o.as_bytes()).expect("our offer parses");
        assert_eq!(parsed.rtp_addr, "127.0.0.1:30000".parse().expect("addr"));
        check_answer(&parsed).expect("PCMA and telephone-event");
        let mut bad = parsed.clone();
        bad.formats.retain(|f| !f.is_telephone_event());
        assert!(check_answer(&bad).is_err());
    }
}
