//! Telephone dial-in end to end, with real SIP callers (Debian's sipp) and the gateway running
//! beside the server as in `klausur serve --sip-listen`: the caller types the meeting number
//! and PIN as RFC 4733 events, is added to the meeting's encrypted group by a member's client
//! (a native participant here; the browser tests do the same in Chromium), is heard through
//! the encrypted path, and leaves; wrong PINs, a strict meeting, removal and moderation.

mod baresip;
mod maintenance;
mod reconnect;
// Also the caller of the dial-in tests of the command line and of TLS (`dialin_cli`,
// `dialin_tls`, `dialin_remote_tls`).
pub mod sipp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use klausur_client::driver::{
    self, AudioFrame, AudioSink, ClientEvent, ClientHandle, ClientOptions,
};
use klausur_client::session::{Event, JoinAs};
use klausur_e2ee::ParticipantKind as CredKind;
use klausur_proto::{ClientMsg, Participant, ParticipantKind, SecurityProfile};
use klausur_server::dialin;
use klausur_server::dialin::sip_gateway;
use klausur_sip::core::codec::{OpusDecoder, OpusEncoder, OpusSettings};
use klausur_sip::driver::caller::audio_level;
use klausur_store::{Invitation, InvitationKind, Meeting, NewInvitation, Role};
use tokio::sync::mpsc;

use sipp::{Call, End};

use crate::common::{self, TestServer};
use crate::process::free_port_block;

const WAIT: Duration = Duration::from_secs(40);

/// A server with the gateway in this process, an organiser, and helpers for meetings.
struct Dial {
    srv: TestServer,
    gateway: Option<klausur_sip::driver::RunningGateway>,
    sip: SocketAddr,
    olga: i64,
    tmp: tempfile::TempDir,
    /// The TCP relay the gateway reaches the server through, if the test wants to cut it.
    relay: Option<reconnect::Relay>,
}

impl Drop for Dial {
    fn drop(&mut self) {
        if let Some(gw) = self.gateway.take() {
            // Ends the calls' tasks; the runtime is going away anyway.
            drop(gw);
        }
    }
}

/// A free block of RTP ports, from an even one, for this test's gateway (tests run in
/// parallel).
fn rtp_ports() -> std::ops::RangeInclusive<u16> {
    let base = (free_port_block(101) + 1) & !1;
    base..=base + 99
}

/// The token the tests' `GET /metrics` presents.
const METRICS_TOKEN: &str = "the-dial-in-tests-scrape-token-0123456789";

async fn dial() -> Dial {
    dial_with(false, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

/// A server and its gateway; with `relayed`, the gateway reaches the server (HTTP and
/// WebSocket; media goes straight) through a [`reconnect::Relay`] the test can cut. The
/// gateway takes SIP and RTP on `telephony` (127.0.0.1, or ::1 for a SIP trunk over IPv6).
async fn dial_with(relayed: bool, telephony: IpAddr) -> Dial {
    let srv = TestServer::start_with(|c| {
        c.dialin.udp = vec![SocketAddr::new(telephony, 0)];
        c.dialin.phone_number = Some("+49 30 9999 0000".into());
        c.dialin.rtp_address = telephony;
        c.dialin.rtp_ports = rtp_ports();
        c.dialin.max_calls = 10;
        c.dialin_throttle_unit = Duration::from_millis(100);
    })
    .await;
    let mut setup = srv.state.dialin.gateway_setup().expect("gateway setup");
    let relay = if relayed {
        let relay = reconnect::Relay::start(srv.addr).await;
        setup.server_url = format!("http://{}", relay.addr);
        Some(relay)
    } else {
        None
    };
    let gateway = sip_gateway::start_in_process(setup).await.expect("gateway");
    // As `klausur serve` does: the monitoring endpoint reads the gateway's counters.
    srv.state.metrics.set_sip(gateway.stats_source());
    srv.state
        .metrics
        .set_token(&zeroize::Zeroizing::new(METRICS_TOKEN.to_string()));
    let sip = gateway
        .sip_addrs()
        .into_iter()
        .map(|(_, a)| a)
        .next()
        .expect("a SIP address");
    let olga = srv.user("olga", Role::Staff).await.id;
    Dial {
        srv,
        gateway: Some(gateway),
        sip,
        olga,
        tmp: tempfile::tempdir().expect("tmp"),
        relay,
    }
}

impl Dial {
    /// One series' value in the server's `GET /metrics`.
    async fn metric(&self, series: &str) -> Option<f64> {
        crate::metrics::metric(&self.srv.base, METRICS_TOKEN, series).await
    }

    async fn meeting(&self, id: &str, profile: SecurityProfile) -> Meeting {
        dialin::create_meeting_with_dial_in(
            &self.srv.store,
            id,
            "Ortsbeirat",
            None,
            self.olga,
            profile,
        )
        .await
        .expect("meeting")
    }

    /// An invitation with its token and PIN.
    async fn invite(&self, meeting: &Meeting, name: &str) -> (Invitation, String, String) {
        let token = klausur_server::auth::new_token().to_string();
        let (inv, pin) = dialin::create_invitation(
            &self.srv.store,
            self.srv.state.dialin.pin_key(),
            meeting,
            NewInvitation {
                meeting_id: meeting.id.clone(),
                token_hash: klausur_server::auth::token_hash(&token),
                name: name.into(),
                kind: InvitationKind::Guest,
                user_id: None,
                created_by: self.olga,
                expires_at: chrono::Utc::now() + chrono::Duration::hours(2),
                phone_pin_hash: None,
            },
        )
        .await
        .expect("invitation");
        (inv, token, pin.expect("a PIN").to_string())
    }

    fn call(&self, name: &str, call: &Call) -> sipp::Sipp {
        let local = self.sip.ip().to_string();
        sipp::start(call, self.sip, &local, &self.tmp.path().join(name))
    }
}

/// A native participant standing in for a browser: it is a member of the encrypted group,
/// adds whom the policy admits, and reports what it sees.
struct Member {
    handle: ClientHandle,
    audio: mpsc::Receiver<AudioFrame>,
    codes: Vec<String>,
    participants: Vec<Participant>,
    roster: Vec<klausur_e2ee::RosterEntry>,
    heard: HashMap<String, usize>,
    /// Decoded audio (48 kHz) per participant.
    pcm: HashMap<String, Vec<i16>>,
    decoders: HashMap<String, OpusDecoder>,
    /// A tone this member sends as its microphone, and when the next frame is due.
    tone: Option<(OpusEncoder, f64, u64, tokio::time::Instant)>,
    in_group: bool,
}

fn member(d: &Dial, meeting: &str, token: String) -> Member {
    let (tx, audio) = mpsc::channel(4096);
    let handle = driver::spawn(ClientOptions {
        server: d.srv.base.clone(),
        meeting_id: meeting.into(),
        join: JoinAs::Invitation(token),
        publish_audio: true,
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        client_id: 1,
        audio: Some(AudioSink {
            tx,
            filter: Arc::new(|_| true),
        }),
        tls: None,
        gateway_token: None,
    });
    Member {
        handle,
        audio,
        codes: Vec::new(),
        participants: Vec::new(),
        roster: Vec::new(),
        heard: HashMap::new(),
        pcm: HashMap::new(),
        decoders: HashMap::new(),
        tone: None,
        in_group: false,
    }
}

impl Member {
    fn pump(&mut self) {
        while let Ok(e) = self.handle.events.try_recv() {
            match e {
                ClientEvent::Session(Event::SecurityCode(c)) => self.codes.push(c),
                ClientEvent::Session(Event::InGroup) => self.in_group = true,
                ClientEvent::Session(Event::Participants(p)) => self.participants = p,
                ClientEvent::Session(Event::Roster(r)) => self.roster = r,
                ClientEvent::Failed(e) => panic!("the member failed: {e}"),
                _ => {}
            }
        }
        while let Ok(f) = self.audio.try_recv() {
            let dec = self
                .decoders
                .entry(f.participant_id.clone())
                .or_insert_with(|| OpusDecoder::new().expect("decoder"));
            if let Ok(pcm) = dec.decode(&f.opus) {
                // A frame carries sound when its level is above -50 dBov (silence, and the
                // gateway's encoded silence, decode far below that).
                if audio_level(pcm) < 50 {
                    *self.heard.entry(f.participant_id.clone()).or_default() += 1;
                }
                self.pcm
                    .entry(f.participant_id)
                    .or_default()
                    .extend_from_slice(pcm);
            }
        }
        // The own tone, one 20 ms frame at a time.
        let now = tokio::time::Instant::now();
        if let Some((enc, freq, n, next)) = self.tone.as_mut() {
            while *next <= now {
                let frame: Vec<i16> = (0..960u64)
                    .map(|i| {
                        let t = (*n * 960 + i) as f64 / 48_000.0;
                        ((2.0 * std::f64::consts::PI * *freq * t).sin() * 9000.0) as i16
                    })
                    .collect();
                *n += 1;
                *next += Duration::from_millis(20);
                if let Ok(opus) = enc.encode(&frame) {
                    self.handle.send_audio(opus.to_vec(), 40);
                }
            }
        }
    }

    /// Sends a sine of `freq` Hz as the microphone from now on.
    fn speak(&mut self, freq: f64) {
        let enc = OpusEncoder::new(48_000, OpusSettings::default()).expect("encoder");
        self.tone = Some((enc, freq, 0, tokio::time::Instant::now()));
    }

    /// The share of `freq` in the last `secs` of what this member heard from `pid`.
    fn share(&self, pid: &str, freq: f64, secs: f64) -> f64 {
        let pcm = self.pcm.get(pid).map(Vec::as_slice).unwrap_or(&[]);
        let n = (48_000.0 * secs) as usize;
        baresip::tone_share(&pcm[pcm.len().saturating_sub(n)..], 48_000.0, freq)
    }

    /// Keeps the member going (events, audio, its tone) for `d`.
    async fn run_for(&mut self, d: Duration) {
        let end = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < end {
            self.pump();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn phone(&self) -> Option<&Participant> {
        self.participants
            .iter()
            .find(|p| p.kind == ParticipantKind::PhoneGateway)
    }

    fn phone_in_roster(&self) -> bool {
        self.roster
            .iter()
            .any(|e| e.credential.kind == CredKind::PhoneGateway)
    }

    async fn until(&mut self, what: &str, f: impl Fn(&Member) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.pump();
            if f(self) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A meeting of `profile` with a dial-in number, and Max, a native member, in its encrypted
/// group; `callers` are invited too: their PINs, in order.
async fn meeting_with_max(
    d: &Dial,
    id: &str,
    profile: SecurityProfile,
    callers: &[&str],
) -> (Meeting, String, Member, Vec<String>) {
    let m = d.meeting(id, profile).await;
    let number = m.dial_in_number.clone().expect("number");
    let (_, max_token, _) = d.invite(&m, "Max Mitglied").await;
    let mut pins = Vec::new();
    for name in callers {
        pins.push(d.invite(&m, name).await.2);
    }
    let mut max = member(d, &m.id, max_token);
    max.until("Max in the group", |m| m.in_group).await;
    (m, number, max, pins)
}

/// A server and its gateway ([`dial_with`]: `relayed`, SIP and RTP on `telephony`), a meeting
/// with Max in its group, and Erika calling in (sipp, speaking with `audio`, staying `stay_s`
/// seconds, ending by `end`) until she is in the group: the server, Max, the call and Erika's
/// participant id.
async fn erika_in_meeting(
    relayed: bool,
    telephony: IpAddr,
    meeting_id: &str,
    audio: bool,
    stay_s: u64,
    end: End,
) -> (Dial, Member, sipp::Sipp, String) {
    let d = dial_with(relayed, telephony).await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        meeting_id,
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let sipp = d.call(
        "erika",
        &Call {
            keys: format!("{number}#{}#", pins[0]),
            audio,
            stay: Duration::from_secs(stay_s),
            end,
            caller: "+4930123456789".into(),
        },
    );
    let first = max.caller_in_group().await;
    (d, max, sipp, first)
}

/// baresip playing `tone` calls the gateway and types `keys` (in a blocking task).
async fn baresip_calls(d: &Dial, name: &str, tone: f64, keys: String) -> baresip::Baresip {
    let phone = baresip::Baresip::start(&d.tmp.path().join(name), tone);
    let gateway = d.sip;
    tokio::task::spawn_blocking(move || {
        phone.call(gateway, &keys);
        phone
    })
    .await
    .expect("baresip")
}

impl Member {
    /// Waits until a caller is in the list, claims its leaf and is in the roster; its id.
    async fn caller_in_group(&mut self) -> String {
        self.until("the caller in the group", |m| {
            m.phone().is_some_and(|p| p.leaf.is_some()) && m.phone_in_roster()
        })
        .await;
        self.phone().expect("phone").id.clone()
    }
}

/// Test 1 of the issue with a native member: the caller types number and PIN, is added to the
/// encrypted group (new security code), is shown as a phone participant with the last four
/// digits, is heard, hangs up after a while; then it is gone from the list and the roster and
/// the code changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_joins_is_heard_and_leaves() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000001",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];
    let codes_before = max.codes.len();

    let sipp = d.call(
        "erika",
        &Call {
            keys: format!("{number}#{erika_pin}#"),
            audio: true,
            stay: Duration::from_secs(12),
            end: End::CallerHangsUp,
            caller: "+4930123456789".into(),
        },
    );
    max.until(
        "the caller in the list and the roster, claiming its leaf",
        |m| m.phone().is_some_and(|p| p.leaf.is_some()) && m.phone_in_roster(),
    )
    .await;
    let phone = max.phone().cloned().expect("phone participant");
    assert_eq!(phone.display_name, "Erika Musterfrau");
    assert_eq!(
        phone
            .phone
            .as_ref()
            .and_then(|p| p.number_suffix.clone())
            .as_deref(),
        Some("6789"),
        "only the last four digits"
    );
    assert!(
        max.codes.len() > codes_before,
        "the security code changed when the caller joined"
    );
    let entry = max
        .roster
        .iter()
        .find(|e| e.credential.kind == CredKind::PhoneGateway)
        .expect("roster entry");
    assert_eq!(entry.credential.display_name, "Erika Musterfrau");
    assert_eq!(
        Some(entry.leaf_index),
        phone.leaf,
        "the caller's leaf claim matches the roster"
    );

    // The caller's voice (sip-tester's A-law speech) arrives decrypted at the member.
    let pid = phone.id.clone();
    max.until("the caller's audio", |m| {
        m.heard.get(&pid).copied().unwrap_or(0) > 50
    })
    .await;
    // The monitoring counts the call and its PIN check.
    assert_eq!(d.metric("klausur_dialin_calls_active").await, Some(1.0));
    assert_eq!(
        d.metric("klausur_dialin_calls_answered_total").await,
        Some(1.0)
    );
    assert_eq!(
        d.metric("klausur_dialin_pin_checks_total{result=\"admit\"}")
            .await,
        Some(1.0)
    );

    let codes_while = max.codes.len();
    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(90)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "sipp failed:\n{trace}");
    max.until("the caller gone", |m| {
        m.phone().is_none() && !m.phone_in_roster()
    })
    .await;
    assert!(
        max.codes.len() > codes_while,
        "the security code changed when the caller left"
    );
    let (base, series) = (&d.srv.base, "klausur_dialin_calls_active");
    crate::metrics::until_metric(base, METRICS_TOKEN, series, 0.0, "the call ends").await;
}

/// A SIP trunk over IPv6 (the gateway's SIP and RTP on ::1, sipp calling from ::1): the caller
/// types number and PIN, joins the encrypted group and is heard, and the call ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_ipv6_joins_and_is_heard() {
    let (d, mut max, sipp, pid) = erika_in_meeting(
        false,
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        "dialmeetipv60001",
        true,
        8,
        End::CallerHangsUp,
    )
    .await;
    assert!(d.sip.is_ipv6(), "the gateway listens on {}", d.sip);
    max.until("the caller's audio over IPv6", |m| {
        m.heard.get(&pid).copied().unwrap_or(0) > 50
    })
    .await;
    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(90)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "sipp failed:\n{trace}");
    // The gateway's answer (the 200 OK to the INVITE, in sipp's message log) puts its RTP on
    // the IPv6 address.
    let answer = trace
        .split("message received")
        .find(|m| m.contains("SIP/2.0 200 OK") && m.contains("CSeq: 1 INVITE"))
        .unwrap_or_else(|| panic!("no 200 OK to the INVITE in sipp's log:\n{trace}"));
    assert!(
        answer.contains("c=IN IP6 ::1"),
        "the gateway's SDP answer names its IPv6 address:\n{answer}"
    );
    max.until("the caller gone", |m| {
        m.phone().is_none() && !m.phone_in_roster()
    })
    .await;
}

/// Test 5: the strict profile refuses the call after the PIN; the meeting never sees the
/// caller, and the gateway hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_meeting_refuses_the_caller_after_the_pin() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000002",
        SecurityProfile::Strict,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];

    let sipp = d.call(
        "strict",
        &Call {
            keys: format!("{number}#{erika_pin}#"),
            audio: false,
            stay: Duration::from_secs(40),
            end: End::GatewayHangsUp,
            caller: "+4930111122223".into(),
        },
    );
    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(90)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "the gateway did not hang up:\n{trace}");
    max.pump();
    assert!(max.phone().is_none(), "the meeting saw the caller");
}

/// Test 4: three wrong entries end the call (the gateway hangs up), the right PIN of another
/// meeting does not work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_entries_end_the_call() {
    let d = dial().await;
    let m = d
        .meeting("dialmeet00000003", SecurityProfile::Internal)
        .await;
    let other = d
        .meeting("dialmeet00000004", SecurityProfile::Internal)
        .await;
    let number = m.dial_in_number.clone().expect("number");
    let (_, max_token, _) = d.invite(&m, "Max Mitglied").await;
    let (_, _, other_pin) = d.invite(&other, "Fremde Person").await;
    let mut max = member(&d, &m.id, max_token);
    max.until("Max in the group", |m| m.in_group).await;

    let wrong = if other_pin.starts_with('9') {
        "11111111"
    } else {
        "99999999"
    };
    let sipp = d.call(
        "wrong",
        &Call {
            // The other meeting's PIN, then two wrong ones.
            keys: format!("{number}#{other_pin}# {number}#{wrong}# {number}#{wrong}#"),
            audio: false,
            stay: Duration::from_secs(60),
            end: End::GatewayHangsUp,
            caller: "+4930555566667".into(),
        },
    );
    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(120)))
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "the gateway did not hang up after three tries:\n{trace}"
    );
    max.pump();
    assert!(max.phone().is_none(), "a wrong PIN got into the meeting");
}

/// The share of `freq` in the last `secs` of baresip's recording (8 kHz), and the whole length.
fn heard_share(heard: &[i16], freq: f64, secs: f64) -> f64 {
    let n = (8000.0 * secs) as usize;
    baresip::tone_share(&heard[heard.len().saturating_sub(n)..], 8000.0, freq)
}

/// Test 2 with a native member: audio both ways through the encrypted path. baresip plays
/// 1000 Hz, the member 500 Hz. The member hears 1000 Hz from the caller (decrypted with the
/// caller's gateway member's keys); baresip hears 500 Hz and not its own 1000 Hz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_and_a_member_hear_each_other_and_the_caller_no_echo() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000005",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];
    max.speak(500.0);

    let phone_rx = baresip_calls(&d, "erika", 1000.0, format!("{number}#{erika_pin}#")).await;
    max.caller_in_group().await;
    // The joined prompt (15 s) plays over the meeting; listen after it.
    max.run_for(Duration::from_secs(22)).await;
    let pid = max.phone().expect("phone").id.clone();
    let (s1000, s500) = (max.share(&pid, 1000.0, 2.0), max.share(&pid, 500.0, 2.0));
    let heard = tokio::task::spawn_blocking(move || {
        phone_rx.hangup();
        std::thread::sleep(Duration::from_secs(1));
        let heard = phone_rx.heard();
        (heard, phone_rx)
    })
    .await
    .expect("baresip");
    let (heard, phone_rx) = heard;
    assert!(
        s1000 > 0.4,
        "the member hears the caller's 1000 Hz (share {s1000:.3})"
    );
    assert!(
        s500 < 0.05,
        "the member does not hear itself (share {s500:.3})"
    );
    assert!(
        heard.len() > 8000 * 20,
        "baresip recorded {} samples: {}",
        heard.len(),
        phone_rx.log()
    );
    let (h500, h1000) = (
        heard_share(&heard, 500.0, 3.0),
        heard_share(&heard, 1000.0, 3.0),
    );
    assert!(
        h500 > 0.3,
        "the caller hears the member's 500 Hz (share {h500:.3})"
    );
    assert!(
        h1000 < 0.02,
        "the caller hears no echo of its own 1000 Hz (share {h1000:.4})"
    );
}

/// Test 3: a second caller in the same meeting. Each caller hears the other and the member and
/// not itself; the member hears both callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_callers_hear_each_other_and_the_member() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000006",
        SecurityProfile::Internal,
        &["Anna Anruferin", "Bernd Anrufer"],
    )
    .await;
    let (pin_a, pin_b) = (&pins[0], &pins[1]);
    max.speak(500.0);

    let gateway = d.sip;
    let a = baresip::Baresip::start(&d.tmp.path().join("anna"), 1000.0);
    let b = baresip::Baresip::start(&d.tmp.path().join("bernd"), 1800.0);
    let (ka, kb) = (format!("{number}#{pin_a}#"), format!("{number}#{pin_b}#"));
    let da = tokio::task::spawn_blocking(move || {
        a.call(gateway, &ka);
        a
    });
    let db = tokio::task::spawn_blocking(move || {
        b.call(gateway, &kb);
        b
    });
    max.until("both callers in the group", |m| {
        m.participants
            .iter()
            .filter(|p| p.kind == ParticipantKind::PhoneGateway && p.leaf.is_some())
            .count()
            == 2
            && m.roster
                .iter()
                .filter(|e| e.credential.kind == CredKind::PhoneGateway)
                .count()
                == 2
    })
    .await;
    let (a, b) = (da.await.expect("anna"), db.await.expect("bernd"));
    max.run_for(Duration::from_secs(22)).await;
    let id_of = |name: &str| {
        max.participants
            .iter()
            .find(|p| p.display_name == name)
            .map(|p| p.id.clone())
            .expect("caller")
    };
    let (pa, pb) = (id_of("Anna Anruferin"), id_of("Bernd Anrufer"));
    let (m_a, m_b) = (max.share(&pa, 1000.0, 2.0), max.share(&pb, 1800.0, 2.0));
    let (heard_a, heard_b, a, b) = tokio::task::spawn_blocking(move || {
        a.hangup();
        b.hangup();
        std::thread::sleep(Duration::from_secs(1));
        (a.heard(), b.heard(), a, b)
    })
    .await
    .expect("baresip");
    assert!(
        m_a > 0.4 && m_b > 0.4,
        "the member hears both callers ({m_a:.3}, {m_b:.3})"
    );
    assert!(heard_a.len() > 8000 * 20, "{}", a.log());
    assert!(heard_b.len() > 8000 * 20, "{}", b.log());
    for (who, heard, own, other) in [
        ("Anna", &heard_a, 1000.0, 1800.0),
        ("Bernd", &heard_b, 1800.0, 1000.0),
    ] {
        let (s_member, s_other, s_own) = (
            heard_share(heard, 500.0, 3.0),
            heard_share(heard, other, 3.0),
            heard_share(heard, own, 3.0),
        );
        assert!(s_member > 0.15, "{who} hears the member ({s_member:.3})");
        assert!(
            s_other > 0.15,
            "{who} hears the other caller ({s_other:.3})"
        );
        assert!(s_own < 0.02, "{who} does not hear itself ({s_own:.4})");
    }
}

/// The organiser Olga in the meeting over a plain signaling connection (a moderator's
/// commands; she sends no media and takes no part in the encrypted group). Messages to send go
/// in the channel; what the server says is read and dropped.
async fn moderator(d: &Dial, meeting: &str) -> mpsc::UnboundedSender<ClientMsg> {
    let cookie = common::ws::session_cookie(&d.srv, "olga").await;
    let mut olga = common::ws::Client::connect(&d.srv, Some(&cookie)).await;
    let joined = olga.join(meeting, None, None).await;
    assert!(
        matches!(joined, klausur_proto::ServerMsg::Joined { .. }),
        "{joined:?}"
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<ClientMsg>();
    tokio::spawn(async move {
        use futures::StreamExt as _;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => olga.send(&m).await,
                    None => break,
                },
                f = olga.ws.next() => if f.is_none() { break },
            }
        }
    });
    tx
}

/// Test 6, mute: a moderator mutes the caller and no more of its audio reaches the member;
/// lifting the mute leaves the caller muted (as in the browser) until it presses *6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_mutes_a_caller_and_the_caller_unmutes_after_the_lift() {
    let d = dial().await;
    let (m, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000007",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];
    let olga = moderator(&d, &m.id).await;

    let phone = baresip_calls(&d, "erika", 1000.0, format!("{number}#{erika_pin}#")).await;
    let pid = max.caller_in_group().await;
    max.until("the caller's audio", |m| {
        m.heard.get(&pid).copied().unwrap_or(0) > 25
    })
    .await;

    olga.send(ClientMsg::Mute {
        participant_id: pid.clone(),
        muted: true,
    })
    .expect("olga");
    max.until("the caller shown muted by a moderator", |m| {
        m.phone().is_some_and(|p| p.muted_by_moderator)
    })
    .await;
    max.run_for(Duration::from_secs(1)).await;
    let muted_at = max.heard.get(&pid).copied().unwrap_or(0);
    max.run_for(Duration::from_secs(3)).await;
    let after = max.heard.get(&pid).copied().unwrap_or(0);
    assert!(
        after <= muted_at + 2,
        "audio still arrives while muted: {muted_at} -> {after}"
    );

    // Lifted: the caller is still muted by itself until *6.
    olga.send(ClientMsg::Mute {
        participant_id: pid.clone(),
        muted: false,
    })
    .expect("olga");
    max.until("the moderator mute lifted", |m| {
        m.phone().is_some_and(|p| !p.muted_by_moderator)
    })
    .await;
    max.run_for(Duration::from_secs(3)).await;
    let lifted = max.heard.get(&pid).copied().unwrap_or(0);
    assert!(
        lifted <= after + 2,
        "the caller was unmuted without pressing *6"
    );
    let phone = tokio::task::spawn_blocking(move || {
        assert!(phone.command("sndcode", "*"));
        std::thread::sleep(Duration::from_millis(400));
        assert!(phone.command("sndcode", "6"));
        phone
    })
    .await
    .expect("baresip");
    max.until("the caller's audio again after *6", |m| {
        m.heard.get(&pid).copied().unwrap_or(0) > lifted + 25
            && m.phone().is_some_and(|p| !p.audio_muted)
    })
    .await;
    tokio::task::spawn_blocking(move || phone.hangup())
        .await
        .expect("baresip");
}

/// Test 6, removal: a moderator removes the caller; the gateway hangs up (sipp receives BYE),
/// the caller's member leaves the encrypted group and the keys rotate (a new security code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderator_removes_a_caller_the_call_ends_and_the_keys_rotate() {
    let d = dial().await;
    let (m, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000008",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];
    let olga = moderator(&d, &m.id).await;

    let sipp = d.call(
        "removed",
        &Call {
            keys: format!("{number}#{erika_pin}#"),
            audio: false,
            stay: Duration::from_secs(60),
            end: End::GatewayHangsUp,
            caller: "+4930123450000".into(),
        },
    );
    let pid = max.caller_in_group().await;
    let codes = max.codes.len();
    olga.send(ClientMsg::Remove {
        participant_id: pid,
    })
    .expect("olga");
    max.until("the caller gone from list and roster", |m| {
        m.phone().is_none() && !m.phone_in_roster()
    })
    .await;
    assert!(
        max.codes.len() > codes,
        "the keys rotated (new security code)"
    );
    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(90)))
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "sipp did not receive the gateway's BYE:\n{trace}"
    );
}

/// Test 7: malformed SIP, an INVITE from an address outside the allow list and a flood of
/// INVITEs are refused or dropped, and a call already running keeps its audio throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sip_and_floods_leave_a_running_call_alone() {
    let d = dial().await;
    let (_, number, mut max, pins) = meeting_with_max(
        &d,
        "dialmeet00000009",
        SecurityProfile::Internal,
        &["Erika Musterfrau"],
    )
    .await;
    let erika_pin = &pins[0];

    let phone = baresip_calls(&d, "erika", 1000.0, format!("{number}#{erika_pin}#")).await;
    let pid = max.caller_in_group().await;
    max.until("the caller's audio", |m| {
        m.heard.get(&pid).copied().unwrap_or(0) > 25
    })
    .await;
    let before = max.heard.get(&pid).copied().unwrap_or(0);

    // Garbage and a broken INVITE over UDP.
    let raw = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    for junk in [
        &b"\x00\x01garbage\xff"[..],
        b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n",
        b"INVITE sip:dialin@127.0.0.1 SIP/2.0\r\nContent-Length: 99999\r\n\r\nv=0",
    ] {
        raw.send_to(junk, d.sip).expect("send");
    }
    // An INVITE from outside the allow list (127.0.0.2), and a flood of INVITEs from the
    // trunk's own address: 40 calls at 20 per second.
    let dir = d.tmp.path().to_path_buf();
    let gw = d.sip.to_string();
    let refused = tokio::task::spawn_blocking(move || {
        let run = |ip: &str, calls: &str, rate: &str, name: &str| {
            std::fs::create_dir_all(dir.join(name)).expect("dir");
            std::process::Command::new("sipp")
                .current_dir(dir.join(name))
                .args([
                    &gw,
                    "-sn",
                    "uac",
                    "-i",
                    ip,
                    "-p",
                    &sipp::free_udp_port().to_string(),
                    "-m",
                    calls,
                    "-r",
                    rate,
                    "-timeout",
                    "40s",
                    "-timeout_error",
                    "-nostdin",
                    "-trace_stat",
                    "-trace_err",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.code())
                .expect("sipp")
        };
        (
            run("127.0.0.2", "1", "1", "stranger"),
            run("127.0.0.1", "40", "20", "flood"),
        )
    });
    // Meanwhile the running call goes on.
    while !refused.is_finished() {
        max.run_for(Duration::from_millis(200)).await;
    }
    let (stranger, flood) = refused.await.expect("sipp");
    assert_ne!(
        stranger,
        Some(0),
        "a call from outside the allow list got through"
    );
    assert_ne!(flood, Some(0), "every call of the flood got through");
    max.run_for(Duration::from_secs(2)).await;
    let after = max.heard.get(&pid).copied().unwrap_or(0);
    assert!(
        after > before + 100,
        "the running call lost its audio during the attacks: {before} -> {after} frames"
    );
    assert!(
        max.phone().is_some(),
        "the running call is still in the meeting"
    );
    let stats = d.gateway.as_ref().expect("gateway").stats();
    assert!(
        stats.not_allowed > 0,
        "the stranger was not refused: {stats:?}"
    );
    assert!(
        stats.rate_limited > 0,
        "the flood was not limited: {stats:?}"
    );
    assert!(
        stats.dropped + stats.stateless_replies > 0,
        "the garbage went unnoticed: {stats:?}"
    );
    tokio::task::spawn_blocking(move || phone.hangup())
        .await
        .expect("baresip");
}
