//! Telephone dial-in end to end, with real SIP callers (Debian's sipp) and the gateway running
//! beside the server as in `klausur serve --sip-listen`: the caller types the meeting number
//! and PIN as RFC 4733 events, is added to the meeting's encrypted group by a member's client
//! (a native participant here; the browser tests do the same in Chromium), is heard through
//! the encrypted path, and leaves; wrong PINs, a strict meeting, removal and moderation.

#[path = "../common/mod.rs"]
mod common;
mod sipp;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use klausur_client::driver::{
    self, AudioFrame, AudioSink, ClientEvent, ClientHandle, ClientOptions,
};
use klausur_client::session::{Event, JoinAs};
use klausur_e2ee::ParticipantKind as CredKind;
use klausur_proto::{Participant, ParticipantKind, SecurityProfile};
use klausur_server::dialin;
use klausur_server::sip_gateway;
use klausur_store::{Invitation, InvitationKind, Meeting, NewInvitation, Role};
use tokio::sync::mpsc;

use sipp::{Call, End};

const WAIT: Duration = Duration::from_secs(40);

/// A server with the gateway in this process, an organiser, and helpers for meetings.
struct Dial {
    srv: TestServer,
    gateway: Option<klausur_sip::driver::RunningGateway>,
    sip: SocketAddr,
    olga: i64,
    tmp: tempfile::TempDir,
}

impl Drop for Dial {
    fn drop(&mut self) {
        if let Some(gw) = self.gateway.take() {
            // Ends the calls' tasks; the runtime is going away anyway.
            drop(gw);
        }
    }
}

/// A free block of even RTP ports for this test's gateway (tests run in parallel).
fn rtp_ports() -> std::ops::RangeInclusive<u16> {
    loop {
        let base = sipp::free_udp_port() & !1;
        if base > 40_000 && base < 60_000 {
            return base..=base + 99;
        }
    }
}

async fn dial() -> Dial {
    let srv = TestServer::start_with(|c| {
        c.dialin.udp = vec!["127.0.0.1:0".parse().expect("addr")];
        c.dialin.phone_number = Some("+49 30 9999 0000".into());
        c.dialin.rtp_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        c.dialin.rtp_ports = rtp_ports();
        c.dialin.max_calls = 10;
        c.dialin_throttle_unit = Duration::from_millis(100);
    })
    .await;
    let setup = srv.state.dialin.gateway_setup().expect("gateway setup");
    let gateway = sip_gateway::start_in_process(setup).await.expect("gateway");
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
    }
}

impl Dial {
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
        sipp::start(call, self.sip, "127.0.0.1", &self.tmp.path().join(name))
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
    });
    Member {
        handle,
        audio,
        codes: Vec::new(),
        participants: Vec::new(),
        roster: Vec::new(),
        heard: HashMap::new(),
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
            // Opus frames of more than a few bytes carry sound (silence encodes to ~3 bytes).
            if f.opus.len() > 20 {
                *self.heard.entry(f.participant_id).or_default() += 1;
            }
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

/// Test 1 of the issue with a native member: the caller types number and PIN, is added to the
/// encrypted group (new security code), is shown as a phone participant with the last four
/// digits, is heard, hangs up after a while; then it is gone from the list and the roster and
/// the code changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_joins_is_heard_and_leaves() {
    let d = dial().await;
    let m = d
        .meeting("dialmeet00000001", SecurityProfile::Internal)
        .await;
    let number = m.dial_in_number.clone().expect("number");
    let (_, max_token, _) = d.invite(&m, "Max Mitglied").await;
    let (_, _, erika_pin) = d.invite(&m, "Erika Musterfrau").await;

    let mut max = member(&d, &m.id, max_token);
    max.until("Max in the group", |m| m.in_group).await;
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
}

/// Test 5: the strict profile refuses the call after the PIN; the meeting never sees the
/// caller, and the gateway hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_meeting_refuses_the_caller_after_the_pin() {
    let d = dial().await;
    let m = d.meeting("dialmeet00000002", SecurityProfile::Strict).await;
    let number = m.dial_in_number.clone().expect("number");
    let (_, max_token, _) = d.invite(&m, "Max Mitglied").await;
    let (_, _, erika_pin) = d.invite(&m, "Erika Musterfrau").await;
    let mut max = member(&d, &m.id, max_token);
    max.until("Max in the group", |m| m.in_group).await;

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
