//! Telephone dial-in, the server's side, end to end over HTTP and the meeting WebSocket: numbers
//! and PINs in the meeting and invitation API, the gateway API (token, answers, throttle,
//! tickets), a caller joining as kind `phone_gateway` in a seat of their own, and the caller's
//! credential. No SIP here: the tests play the gateway.

use std::time::{Duration, Instant};

use base64::Engine as _;
use klausur_e2ee::{SignedCredential, SigningKey, VerifyingKey};
use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, JoinMethod, LobbyEntry, LobbyReason, Participant,
    ParticipantKind, PhoneLeg, Role as PRole, ServerMsg,
};
use klausur_store::Role;
use serde_json::{json, Value};

use crate::common;
use crate::common::ws::{session_cookie, upgrade, Client};
use crate::common::TestServer;

/// The throttle's unit in these tests (one second in production).
const UNIT: Duration = Duration::from_millis(100);

struct Dial {
    srv: TestServer,
    olga_id: i64,
    olga: reqwest::Client,
    csrf: String,
    olga_cookie: String,
    /// The in-process gateway's token.
    token: String,
}

/// A server with a gateway in this process (a SIP listen address is configured; no SIP
/// listener runs in these tests) and the organiser Olga, logged in.
async fn dial() -> Dial {
    let srv = TestServer::start_with(|c| {
        c.dialin.udp = vec!["127.0.0.1:5060".parse().expect("addr")];
        c.dialin.phone_number = Some("+49 30 9999 0000".into());
        c.dialin_throttle_unit = UNIT;
    })
    .await;
    let olga = srv.user("olga", Role::Staff).await;
    let (client, csrf) = srv.login("olga").await;
    let olga_cookie = session_cookie(&srv, "olga").await;
    let token = srv.gateway_token();
    Dial {
        srv,
        olga_id: olga.id,
        olga: client,
        csrf,
        olga_cookie,
        token,
    }
}

impl Dial {
    /// Creates a meeting over HTTP; its JSON.
    async fn meeting(&self, profile: &str, dial_in: bool, starts_at: Option<String>) -> Value {
        let resp = self
            .olga
            .post(format!("{}/api/meetings", self.srv.base))
            .header("X-CSRF-Token", &self.csrf)
            .json(&json!({"title": "Bürgersprechstunde", "profile": profile,
                          "dial_in": dial_in, "starts_at": starts_at}))
            .send()
            .await
            .expect("create meeting");
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }

    /// Invites `name` over HTTP: the reply's JSON.
    async fn invite(&self, meeting: &Value, name: &str) -> Value {
        let resp = self
            .olga
            .post(format!(
                "{}/api/meetings/{}/invitations",
                self.srv.base,
                meeting["id"].as_str().expect("id")
            ))
            .header("X-CSRF-Token", &self.csrf)
            .json(&json!({"name": name, "kind": "guest"}))
            .send()
            .await
            .expect("invite");
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }

    /// `POST /api/dialin/calls` with `token`: status and body text.
    async fn call_with(&self, token: Option<&str>, body: Value) -> (u16, String) {
        let mut req = reqwest::Client::new()
            .post(format!("{}/api/dialin/calls", self.srv.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("call");
        (resp.status().as_u16(), resp.text().await.expect("text"))
    }

    /// The gateway checks `number` and `pin` for `caller`: the answer.
    async fn call(&self, number: &str, pin: &str, caller: &str) -> Value {
        let (status, text) = self
            .call_with(
                Some(&self.token),
                json!({"meeting_number": number, "pin": pin, "caller": caller,
                       "source": "127.0.0.1:5070"}),
            )
            .await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).expect("json")
    }

    /// A ticket for `pin` (which must admit).
    async fn ticket(&self, meeting: &Value, pin: &str, caller: &str) -> String {
        let v = self.call(&number(meeting), pin, caller).await;
        assert_eq!(v["result"], "admit", "{v}");
        v["ticket"].as_str().expect("ticket").to_string()
    }

    async fn end_call(&self, ticket: &str) -> u16 {
        reqwest::Client::new()
            .delete(format!("{}/api/dialin/calls/{ticket}", self.srv.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("delete")
            .status()
            .as_u16()
    }

    /// Olga in the meeting over the WebSocket.
    async fn olga_joins(&self, meeting: &Value) -> (Client, ServerMsg) {
        let mut c = Client::connect(&self.srv, Some(&self.olga_cookie)).await;
        let j = c.join(id(meeting), None, None).await;
        assert!(matches!(j, ServerMsg::Joined { .. }), "{j:?}");
        (c, j)
    }

    /// What the invitee of `invitation` is shown (`GET /api/invite/{token}`, no session): the
    /// body's text and its JSON.
    async fn invite_info(&self, invitation: &Value) -> (String, Value) {
        let token = invitation["token"].as_str().expect("token");
        let text = self
            .srv
            .anonymous()
            .get(format!("{}/api/invite/{token}", self.srv.base))
            .send()
            .await
            .expect("info")
            .text()
            .await
            .expect("text");
        let info = serde_json::from_str(&text).expect("json");
        (text, info)
    }
}

fn id(meeting: &Value) -> &str {
    meeting["id"].as_str().expect("id")
}

fn number(meeting: &Value) -> String {
    meeting["dial_in"]["meeting_number"]
        .as_str()
        .expect("dial-in number")
        .to_string()
}

fn pin(invitation: &Value) -> String {
    invitation["phone_pin"]
        .as_str()
        .expect("phone PIN")
        .to_string()
}

fn eight_digits(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Another PIN of eight digits than `pin`.
fn other_pin(pin: &str) -> String {
    let last = pin.as_bytes()[7];
    let changed = if last == b'9' {
        '0'
    } else {
        char::from(last + 1)
    };
    format!("{}{changed}", &pin[..7])
}

fn own(joined: &ServerMsg) -> Participant {
    match joined {
        ServerMsg::Joined {
            self_id,
            participants,
            ..
        } => participants
            .iter()
            .find(|p| &p.id == self_id)
            .expect("listed")
            .clone(),
        other => panic!("expected joined, got {other:?}"),
    }
}

fn phone(suffix: &str) -> Option<PhoneLeg> {
    Some(PhoneLeg {
        number_suffix: Some(suffix.into()),
    })
}

/// `msg` is an error with `code`.
fn assert_error(msg: &ServerMsg, code: ErrorCode) {
    assert!(
        matches!(msg, ServerMsg::Error { code: c, .. } if *c == code),
        "expected {code:?}: {msg:?}"
    );
}

/// Whether the meeting of the `joined` message offers dial-in.
fn offers_dial_in(joined: &ServerMsg) -> bool {
    match joined {
        ServerMsg::Joined { meeting, .. } => meeting.dial_in,
        other => panic!("expected joined, got {other:?}"),
    }
}

/// `gw` calls with `ticket` and waits in the lobby: the lobby as Olga then sees it.
async fn waits_in_lobby(
    olga: &mut Client,
    gw: &mut Client,
    meeting: &str,
    ticket: &str,
) -> Vec<LobbyEntry> {
    let w = gw.join_by_phone(meeting, ticket).await;
    assert!(matches!(w, ServerMsg::LobbyWait { .. }), "{w:?}");
    let ServerMsg::LobbyChanged { lobby, .. } = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await
    else {
        unreachable!()
    };
    lobby
}

#[tokio::test]
async fn the_gateway_api_needs_the_gateway_token() {
    let d = dial().await;
    let body = json!({"meeting_number": "12345678", "pin": "12345678", "caller": null,
                      "source": "127.0.0.1:5070"});
    for token in [None, Some(""), Some("wrong"), Some(&d.token[..42])] {
        let (status, text) = d.call_with(token, body.clone()).await;
        assert_eq!(status, 401, "{token:?}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    // Another scheme with the right token: refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/dialin/calls", d.srv.base))
        .header("Authorization", format!("Basic {}", d.token))
        .json(&body)
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .delete(format!(
            "{}/api/dialin/calls/{}",
            d.srv.base,
            "x".repeat(43)
        ))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 401);
    // Olga's session is no gateway.
    let resp = d
        .olga
        .post(format!("{}/api/dialin/calls", d.srv.base))
        .header("X-CSRF-Token", &d.csrf)
        .json(&body)
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 401);
    // Negative control: with the token the same request is answered.
    let (status, text) = d.call_with(Some(&d.token), body.clone()).await;
    assert_eq!(status, 200, "{text}");
    // A server without a gateway accepts no token at all, not even another server's.
    let plain = TestServer::start().await;
    assert!(plain.state.dialin.gateway_token().is_none());
    let resp = reqwest::Client::new()
        .post(format!("{}/api/dialin/calls", plain.base))
        .bearer_auth(&d.token)
        .json(&body)
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn numbers_and_pins_in_the_meeting_and_invitation_api() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let dial_in = &m["dial_in"];
    assert!(eight_digits(&number(&m)), "{m}");
    assert_eq!(dial_in["phone_number"], "+49 30 9999 0000");
    assert_eq!(dial_in["allowed"], true);
    let inv = d.invite(&m, "Erika Musterfrau").await;
    let p = pin(&inv);
    assert!(eight_digits(&p), "{inv}");
    assert_eq!(inv["invitation"]["has_phone_pin"], true);

    // Numbers differ between meetings, PINs between invitations.
    let m2 = d.meeting("internal", true, None).await;
    assert_ne!(number(&m), number(&m2));
    let inv2 = d.invite(&m, "Max Mustermann").await;
    assert_ne!(pin(&inv2), p);

    // The PIN is shown once: nowhere in the listings, nor in the invitee's own view.
    let base = &d.srv.base;
    let mid = id(&m);
    for (url, has_number) in [
        (format!("{base}/api/meetings/{mid}"), true),
        (format!("{base}/api/meetings/{mid}/invitations"), false),
        (format!("{base}/api/meetings"), true),
    ] {
        let text = d
            .olga
            .get(&url)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(!text.contains(&p), "{url}: {text}");
        assert_eq!(text.contains(&number(&m)), has_number, "{url}: {text}");
    }
    let detail: Value = d
        .olga
        .get(format!("{base}/api/meetings/{mid}"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["dial_in"], m["dial_in"]);
    assert_eq!(detail["invitations"][0]["has_phone_pin"], true);
    let (info_text, info) = d.invite_info(&inv).await;
    assert!(!info_text.contains(&p), "{info_text}");
    assert_eq!(
        info["dial_in"],
        json!({"meeting_number": number(&m), "phone_number": "+49 30 9999 0000"})
    );

    // Without dial-in: no number, no PIN.
    let plain = d.meeting("internal", false, None).await;
    assert_eq!(plain["dial_in"], Value::Null);
    let inv = d.invite(&plain, "Erika Musterfrau").await;
    assert_eq!(inv["phone_pin"], Value::Null);
    assert_eq!(inv["invitation"]["has_phone_pin"], false);
    let (_, info) = d.invite_info(&inv).await;
    assert_eq!(info["dial_in"], Value::Null);

    // Strict: a number and PINs, but calls are not allowed, and the invitee is not told to call.
    let strict = d.meeting("strict", true, None).await;
    assert!(eight_digits(&number(&strict)));
    assert_eq!(strict["dial_in"]["allowed"], false);
    let inv = d.invite(&strict, "Erika Musterfrau").await;
    assert!(eight_digits(&pin(&inv)));
    let (_, info) = d.invite_info(&inv).await;
    assert_eq!(info["dial_in"], Value::Null);
}

#[tokio::test]
async fn the_right_number_and_pin_admit_everything_wrong_looks_the_same() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let other = d.meeting("internal", true, None).await;
    let bert = d.invite(&other, "Bert Beispiel").await;
    let carl = d.invite(&m, "Carl Cousin").await;
    let n = number(&m);

    let v = d.call(&n, &pin(&erika), "+49 30 1234 5678").await;
    assert_eq!(v["result"], "admit", "{v}");
    let ticket = v["ticket"].as_str().expect("ticket");
    assert_eq!(ticket.len(), 43);
    assert_eq!(v["meeting_id"], m["id"]);
    assert_eq!(v["meeting_title"], "Bürgersprechstunde");
    assert_eq!(v["invitee"], "Erika Musterfrau");
    // The other meeting's own PIN works there (negative control for the case below).
    let v = d.call(&number(&other), &pin(&bert), "+49 30 2").await;
    assert_eq!(v["result"], "admit", "{v}");

    // Revoked and expired invitations.
    let carl_id = carl["invitation"]["id"].as_i64().expect("id");
    let resp = d
        .olga
        .delete(format!(
            "{}/api/meetings/{}/invitations/{carl_id}",
            d.srv.base,
            id(&m)
        ))
        .header("X-CSRF-Token", &d.csrf)
        .send()
        .await
        .expect("revoke");
    assert_eq!(resp.status(), 204);
    let expired_pin = "13572468";
    d.srv
        .store
        .create_invitation(klausur_store::NewInvitation {
            meeting_id: id(&m).into(),
            token_hash: "expired-invitation".into(),
            name: "Ex Pired".into(),
            kind: klausur_store::InvitationKind::Guest,
            user_id: None,
            created_by: d.olga_id,
            expires_at: chrono::Utc::now() - chrono::Duration::minutes(1),
            phone_pin_hash: Some(d.srv.state.dialin.pin_key().pin_hash(id(&m), expired_pin)),
        })
        .await
        .expect("expired invitation");
    let mut unknown = "10000000".to_string();
    while unknown == n || unknown == number(&other) {
        unknown = format!("{}", unknown.parse::<u64>().expect("digits") + 1);
    }
    let cases = [
        ("wrong PIN", n.clone(), other_pin(&pin(&erika))),
        ("unknown number", unknown, pin(&erika)),
        ("another meeting's PIN", n.clone(), pin(&bert)),
        ("revoked invitation", n.clone(), pin(&carl)),
        ("expired invitation", n.clone(), expired_pin.to_string()),
    ];
    for (i, (what, number, pin)) in cases.iter().enumerate() {
        let (status, text) = d
            .call_with(
                Some(&d.token),
                json!({"meeting_number": number, "pin": pin, "caller": format!("+49 40 {i}"),
                       "source": "127.0.0.1:5070"}),
            )
            .await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(text, r#"{"result":"wrong"}"#, "{what}");
    }

    // Malformed requests: 400 (422 for a body of the wrong shape), whatever the PIN.
    for body in [
        json!({"meeting_number": n, "pin": "12a45678", "caller": null, "source": "s"}),
        json!({"meeting_number": "", "pin": pin(&erika), "caller": null, "source": "s"}),
        json!({"meeting_number": "1".repeat(17), "pin": pin(&erika), "caller": null, "source": "s"}),
        json!({"meeting_number": n, "pin": pin(&erika), "caller": null, "source": ""}),
        json!({"meeting_number": n, "pin": pin(&erika), "caller": "x\u{7}", "source": "s"}),
        json!({"meeting_number": n, "pin": pin(&erika), "source": "s", "extra": 1}),
        json!({"meeting_number": n, "pin": pin(&erika)}),
    ] {
        let (status, text) = d.call_with(Some(&d.token), body.clone()).await;
        assert!(status == 400 || status == 422, "{body}: {status} {text}");
    }
}

#[tokio::test]
async fn a_strict_meeting_refuses_calls_and_its_lobby_never_hears_of_them() {
    let d = dial().await;
    let m = d.meeting("strict", true, None).await;
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let (mut olga, j) = d.olga_joins(&m).await;
    assert!(
        !offers_dial_in(&j),
        "the security panel must not offer dial-in"
    );
    let v = d.call(&number(&m), &pin(&erika), "+49 30 5").await;
    assert_eq!(v, json!({"result": "not_allowed"}));
    let v = d
        .call(&number(&m), &other_pin(&pin(&erika)), "+49 30 6")
        .await;
    assert_eq!(v, json!({"result": "wrong"}));
    olga.nothing_within(Duration::from_millis(500)).await;

    // Negative control: an internal meeting does offer dial-in.
    let internal = d.meeting("internal", true, None).await;
    let (_olga, j) = d.olga_joins(&internal).await;
    assert!(offers_dial_in(&j));
    // And one without a number does not.
    let plain = d.meeting("internal", false, None).await;
    let (_olga, j) = d.olga_joins(&plain).await;
    assert!(!offers_dial_in(&j));
}

#[tokio::test]
async fn pins_admit_from_half_an_hour_before_the_start_until_the_end() {
    let d = dial().await;
    let starts_at = chrono::Utc::now() + chrono::Duration::hours(2);
    let later = d
        .meeting("internal", true, Some(starts_at.to_rfc3339()))
        .await;
    let inv = d.invite(&later, "Erika Musterfrau").await;
    let v = d.call(&number(&later), &pin(&inv), "+49 30 7").await;
    assert_eq!(v["result"], "not_yet", "{v}");
    let said: chrono::DateTime<chrono::Utc> = v["starts_at"]
        .as_str()
        .expect("starts_at")
        .parse()
        .expect("rfc3339");
    assert_eq!(said.timestamp_millis(), starts_at.timestamp_millis());

    let soon = d
        .meeting(
            "internal",
            true,
            Some((chrono::Utc::now() + chrono::Duration::minutes(20)).to_rfc3339()),
        )
        .await;
    let inv = d.invite(&soon, "Erika Musterfrau").await;
    let v = d.call(&number(&soon), &pin(&inv), "+49 30 8").await;
    assert_eq!(v["result"], "admit", "{v}");
    let ticket = v["ticket"].as_str().expect("ticket").to_string();

    // A moderator ends the meeting: PINs answer `ended`, the ticket is void.
    let (mut olga, _) = d.olga_joins(&soon).await;
    olga.send(&ClientMsg::EndMeeting).await;
    olga.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    let v = d.call(&number(&soon), &pin(&inv), "+49 30 9").await;
    assert_eq!(v, json!({"result": "ended"}));
    let mut gw = Client::connect_as_gateway(&d.srv).await;
    let e = gw.join_by_phone(id(&soon), &ticket).await;
    assert_error(&e, ErrorCode::NotFound);
    // A wrong PIN stays wrong after the end.
    let v = d
        .call(&number(&soon), &other_pin(&pin(&inv)), "+49 30 9")
        .await;
    assert_eq!(v, json!({"result": "wrong"}));
}

#[tokio::test]
async fn repeated_failures_are_delayed_and_then_throttled() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let inv = d.invite(&m, "Erika Musterfrau").await;
    let wrong = other_pin(&pin(&inv));
    let mut delays = Vec::new();
    let mut throttled = None;
    for _ in 0..12 {
        let started = Instant::now();
        let v = d.call(&number(&m), &wrong, "+49 171 5550000").await;
        if v["result"] == "throttled" {
            throttled = Some(v);
            break;
        }
        assert_eq!(v["result"], "wrong", "{v}");
        delays.push(started.elapsed());
    }
    let v = throttled.expect("throttled within 12 attempts");
    // 3 free failures, then 1, 2, 4, 8, 16 units; the next would wait 32 (more than 30).
    assert_eq!(delays.len(), 8, "{delays:?}");
    for (i, delay) in delays.iter().enumerate().skip(3) {
        let least = UNIT * 2u32.pow(u32::try_from(i - 3).expect("small"));
        assert!(*delay >= least, "attempt {}: {delay:?} < {least:?}", i + 1);
    }
    let retry = v["retry_after_secs"].as_u64().expect("retry_after_secs");
    assert!((1..=900).contains(&retry), "{v}");
    // A throttled answer comes at once.
    let started = Instant::now();
    let v = d.call(&number(&m), &pin(&inv), "+49 171 5550000").await;
    assert_eq!(v["result"], "throttled", "the right PIN waits too: {v}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another meeting from another caller is not slowed down.
    let m2 = d.meeting("internal", true, None).await;
    let inv2 = d.invite(&m2, "Max Mustermann").await;
    let started = Instant::now();
    let v = d.call(&number(&m2), &pin(&inv2), "+49 171 5551111").await;
    assert_eq!(v["result"], "admit", "{v}");
    assert!(started.elapsed() < UNIT * 16);
}

#[tokio::test]
async fn a_caller_joins_in_a_seat_of_their_own_and_can_be_removed() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let mid = id(&m).to_string();
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let erika_inv = erika["invitation"]["id"].as_i64().expect("id");
    let (mut olga, olga_joined) = d.olga_joins(&m).await;
    let mut browser = Client::connect(&d.srv, None).await;
    let bj = browser
        .join(&mid, Some(erika["token"].as_str().expect("token")), None)
        .await;
    let browser_id = own(&bj).id;
    olga.until(|m| matches!(m, ServerMsg::ParticipantJoined { .. }))
        .await;

    let ticket = d.ticket(&m, &pin(&erika), "+49 30 1234 56789").await;
    let mut gw = Client::connect_as_gateway(&d.srv).await;
    let j = gw.join_by_phone(&mid, &ticket).await;
    let me = own(&j);
    assert_eq!(me.kind, ParticipantKind::PhoneGateway);
    assert_eq!(me.display_name, "Erika Musterfrau");
    assert_eq!(me.phone, phone("6789"));
    assert_eq!(me.role, PRole::Participant);
    assert_eq!(
        me.join_method,
        JoinMethod::Invitation {
            invitee: "Erika Musterfrau".into(),
            invited_by: "olga Name".into()
        }
    );
    assert!(offers_dial_in(&j));
    let ServerMsg::ParticipantJoined { participant } = olga
        .until(|m| matches!(m, ServerMsg::ParticipantJoined { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(participant, me);
    // Erika's browser stays: it hears of the caller and is not replaced.
    let n = browser
        .until(|m| {
            matches!(
                m,
                ServerMsg::ParticipantJoined { .. } | ServerMsg::Ended { .. }
            )
        })
        .await;
    assert!(
        matches!(n, ServerMsg::ParticipantJoined { .. }),
        "the call replaced the browser: {n:?}"
    );

    // The credential policy admits the caller's member directly: it lists the invitation.
    // (Olga creates the group as a browser would: its claim of leaf 0 must be signed by the
    // leaf's device key, whose credential is Olga's.)
    olga.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAE=".into(),
        continuity: None,
    })
    .await;
    let ServerMsg::MlsCreateGroup { group_id } = olga
        .until(|m| matches!(m, ServerMsg::MlsCreateGroup { .. }))
        .await
    else {
        unreachable!()
    };
    let mut olga_member =
        common::mls::device(&d.srv, &d.olga, Some(d.csrf.as_str()), json!({})).await;
    olga_member
        .create_group(group_id.as_bytes(), common::mls::now())
        .expect("create");
    olga.send(&common::mls::claim(
        &olga_member,
        &own(&olga_joined).id,
        true,
    ))
    .await;
    gw.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAI=".into(),
        continuity: None,
    })
    .await;
    let pending = olga
        .until(|m| {
            matches!(m, ServerMsg::MlsPending { joiners, .. }
                if joiners.iter().any(|j| j.participant_id == me.id))
        })
        .await;
    let ServerMsg::MlsPending { policy, .. } = pending else {
        unreachable!()
    };
    assert!(
        policy
            .direct_user_ids
            .contains(&format!("invitation:{erika_inv}")),
        "{policy:?}"
    );

    // A second call with the same PIN replaces the first call only.
    let ticket2 = d.ticket(&m, &pin(&erika), "+49 30 999 1111").await;
    let mut gw2 = Client::connect_as_gateway(&d.srv).await;
    let j2 = gw2.join_by_phone(&mid, &ticket2).await;
    let me2 = own(&j2);
    assert_eq!(me2.phone, phone("1111"));
    let e = gw.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    assert_eq!(
        e,
        ServerMsg::Ended {
            reason: EndReason::Replaced,
            by: None
        }
    );
    let ServerMsg::Joined { participants, .. } = &j2 else {
        unreachable!()
    };
    assert!(
        participants.iter().any(|p| p.id == browser_id),
        "the browser seat is still there: {participants:?}"
    );
    assert!(!participants.iter().any(|p| p.id == me.id));
    // The browser joining again (with the seat token of its `joined`) replaces the browser,
    // not the call.
    let ServerMsg::Joined {
        rejoin_token: Some(seat_token),
        ..
    } = &bj
    else {
        panic!("no seat token: {bj:?}")
    };
    let mut browser2 = Client::connect(&d.srv, None).await;
    browser2
        .send(&ClientMsg::Join {
            meeting_id: mid.clone(),
            invite_token: Some(erika["token"].as_str().expect("token").to_string()),
            display_name: None,
            rejoin_token: Some(seat_token.clone()),
            dial_in_ticket: None,
        })
        .await;
    let bj2 = browser2.next().await;
    let ServerMsg::Joined { participants, .. } = &bj2 else {
        panic!("{bj2:?}")
    };
    assert!(participants.iter().any(|p| p.id == me2.id));
    browser
        .until(|m| {
            matches!(
                m,
                ServerMsg::Ended {
                    reason: EndReason::Replaced,
                    ..
                }
            )
        })
        .await;

    // A moderator removes the caller: the call ends, the invitation waits in the lobby when it
    // calls again, marked removed; the browser stays in.
    olga.send(&ClientMsg::Remove {
        participant_id: me2.id.clone(),
    })
    .await;
    let e = gw2.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    assert!(
        matches!(
            e,
            ServerMsg::Ended {
                reason: EndReason::Removed,
                ..
            }
        ),
        "{e:?}"
    );
    let mut gw3 = Client::connect_as_gateway(&d.srv).await;
    let lobby = waits_in_lobby(&mut olga, &mut gw3, &mid, &ticket2).await;
    assert_eq!(lobby.len(), 1);
    assert_eq!(lobby[0].reason, LobbyReason::Removed);
    assert_eq!(lobby[0].kind, ParticipantKind::PhoneGateway);
    assert_eq!(lobby[0].phone, phone("1111"));
    assert_eq!(lobby[0].invitation.as_deref(), Some("Erika Musterfrau"));
    let left = browser2
        .until(|m| {
            matches!(
                m,
                ServerMsg::ParticipantLeft { .. } | ServerMsg::Ended { .. }
            )
        })
        .await;
    assert_eq!(
        left,
        ServerMsg::ParticipantLeft {
            participant_id: me2.id.clone(),
            reason: klausur_proto::LeaveReason::Removed
        }
    );
    gw3.send(&ClientMsg::Leave).await;

    // Moderating is not for the phone.
    let mut gw4 = Client::connect_as_gateway(&d.srv).await;
    let lobby = waits_in_lobby(&mut olga, &mut gw4, &mid, &ticket2).await;
    olga.send(&ClientMsg::Admit {
        participant_id: lobby[0].id.clone(),
    })
    .await;
    let j4 = gw4.until(|m| matches!(m, ServerMsg::Joined { .. })).await;
    let me4 = own(&j4);
    let ServerMsg::Joined { participants, .. } = &j4 else {
        unreachable!()
    };
    let browser2_id = own(&bj2).id;
    assert!(
        participants.iter().any(|p| p.id == browser2_id),
        "removing the caller removed the browser: {participants:?}"
    );
    olga.send(&ClientMsg::SetModerator {
        participant_id: me4.id.clone(),
        moderator: true,
    })
    .await;
    let e = olga.until(|m| matches!(m, ServerMsg::Error { .. })).await;
    assert_error(&e, ErrorCode::InvalidField);

    // The call is over: the ticket is void.
    assert_eq!(d.end_call(&ticket2).await, 204);
    assert_eq!(d.end_call(&ticket2).await, 404);
    let mut gw5 = Client::connect_as_gateway(&d.srv).await;
    let e = gw5.join_by_phone(&mid, &ticket2).await;
    assert_error(&e, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_caller_waits_in_the_lobby_of_a_locked_meeting() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let mid = id(&m).to_string();
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let (mut olga, _) = d.olga_joins(&m).await;
    olga.send(&ClientMsg::Lock { locked: true }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { .. }))
        .await;
    let ticket = d.ticket(&m, &pin(&erika), "+49 30 4567").await;
    let mut gw = Client::connect_as_gateway(&d.srv).await;
    let lobby = waits_in_lobby(&mut olga, &mut gw, &mid, &ticket).await;
    assert_eq!(lobby[0].reason, LobbyReason::Locked);
    assert_eq!(lobby[0].kind, ParticipantKind::PhoneGateway);
    assert_eq!(lobby[0].display_name, "Erika Musterfrau");
    assert_eq!(lobby[0].phone, phone("4567"));
    olga.send(&ClientMsg::Admit {
        participant_id: lobby[0].id.clone(),
    })
    .await;
    let j = gw.until(|m| matches!(m, ServerMsg::Joined { .. })).await;
    let me = own(&j);
    assert_eq!(me.kind, ParticipantKind::PhoneGateway);
    assert_eq!(me.phone, phone("4567"));
    assert_eq!(
        me.join_method,
        JoinMethod::Lobby {
            admitted_by: "olga Name".into()
        }
    );
}

#[tokio::test]
async fn tickets_are_for_their_meeting_only() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let other = d.meeting("internal", true, None).await;
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let ticket = d.ticket(&m, &pin(&erika), "+49 30 1").await;
    let mut gw = Client::connect_as_gateway(&d.srv).await;
    for e in [
        gw.join_by_phone(id(&other), &ticket).await,
        gw.join_by_phone(id(&m), &"x".repeat(43)).await,
    ] {
        assert_error(&e, ErrorCode::NotFound);
    }
    // A ticket with an invitation token besides: refused.
    gw.send(&ClientMsg::Join {
        meeting_id: id(&m).into(),
        invite_token: erika["token"].as_str().map(str::to_string),
        display_name: None,
        rejoin_token: None,
        dial_in_ticket: Some(ticket.clone()),
    })
    .await;
    let e = gw.next().await;
    assert_error(&e, ErrorCode::InvalidField);
    // A revoked invitation's ticket no longer joins.
    let inv_id = erika["invitation"]["id"].as_i64().expect("id");
    d.srv
        .store
        .revoke_invitation(id(&m), inv_id, chrono::Utc::now())
        .await
        .expect("revoke");
    let e = gw.join_by_phone(id(&m), &ticket).await;
    assert_error(&e, ErrorCode::NotFound);
}

fn device(seed: u8) -> (VerifyingKey, String) {
    let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
    (key, hex::encode(key.to_bytes()))
}

/// `POST /api/identity/credential` without a session, as the gateway (with its token), for the
/// device `dev_hex` with the dial-in `ticket`, and the fields of the object `more` besides: the
/// status and the JSON (if any).
async fn credential(d: &Dial, dev_hex: &str, ticket: &str, more: Value) -> (u16, Value) {
    let mut body = json!({"device_key": dev_hex, "dial_in_ticket": ticket});
    let (Some(fields), Value::Object(more)) = (body.as_object_mut(), more) else {
        panic!("the request body and the extra fields are objects");
    };
    fields.extend(more);
    let resp = d
        .srv
        .anonymous()
        .post(format!("{}/api/identity/credential", d.srv.base))
        .bearer_auth(&d.token)
        .json(&body)
        .send()
        .await
        .expect("credential");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A dial-in ticket is accepted only from the gateway: a `join` or a credential request with a
/// valid ticket over a connection without the gateway's token (or listener) is refused before
/// the ticket is looked up, with a message that says why; the same ticket from the gateway is
/// accepted (the control).
#[tokio::test]
async fn a_dial_in_ticket_is_accepted_only_from_the_gateway() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let ticket = d.ticket(&m, &pin(&erika), "+49 30 1").await;
    let (_, dev_hex) = device(9);
    // Not the gateway: a browser's connection, and one with a wrong token.
    let mut browser = Client::connect(&d.srv, None).await;
    let e = browser.join_by_phone(id(&m), &ticket).await;
    assert_error(&e, ErrorCode::Forbidden);
    let ServerMsg::Error { message, .. } = &e else {
        unreachable!()
    };
    assert!(
        message.contains("only from the dial-in gateway"),
        "{message}"
    );
    let wrong = upgrade(&d.srv, None, &[("authorization", "Bearer nope".into())]).await;
    assert!(
        matches!(wrong, Err((401, _))),
        "a wrong token is refused at once"
    );
    let resp = d
        .srv
        .anonymous()
        .post(format!("{}/api/identity/credential", d.srv.base))
        .json(&json!({"device_key": dev_hex, "dial_in_ticket": ticket}))
        .send()
        .await
        .expect("credential");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("only from the dial-in gateway")),
        "{v}"
    );
    // The control: the same ticket from the gateway.
    let (status, v) = credential(&d, &dev_hex, &ticket, json!({})).await;
    assert_eq!(status, 200, "{v}");
    let mut gw = Client::connect_as_gateway(&d.srv).await;
    let j = gw.join_by_phone(id(&m), &ticket).await;
    assert!(
        matches!(j, ServerMsg::LobbyWait { .. } | ServerMsg::Joined { .. }),
        "{j:?}"
    );
}

#[tokio::test]
async fn the_gateway_gets_the_callers_credential_with_the_ticket() {
    let d = dial().await;
    let m = d.meeting("internal", true, None).await;
    let other = d.meeting("internal", true, None).await;
    let erika = d.invite(&m, "Erika Musterfrau").await;
    let inv_id = erika["invitation"]["id"].as_i64().expect("id");
    let ticket = d.ticket(&m, &pin(&erika), "+49 30 1").await;
    let (dev, dev_hex) = device(5);

    let (status, v) = credential(&d, &dev_hex, &ticket, json!({})).await;
    assert_eq!(status, 200, "{v}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["credential"].as_str().expect("credential"))
        .expect("base64");
    let sc = SignedCredential::from_bytes(&bytes).expect("decode");
    let ca = d.srv.state.identity.public_key();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    sc.verify(&ca, now).expect("verifies");
    assert_eq!(
        sc.credential.kind,
        klausur_e2ee::ParticipantKind::PhoneGateway
    );
    assert_eq!(sc.credential.user_id, format!("invitation:{inv_id}"));
    assert_eq!(sc.credential.display_name, "Erika Musterfrau");
    assert_eq!(sc.credential.device_public_key, dev.to_bytes());
    // With the meeting named: the same.
    let (status, _) = credential(&d, &dev_hex, &ticket, json!({"meeting_id": m["id"]})).await;
    assert_eq!(status, 200);

    // Refused: another meeting, another name, an invitation token besides, an unknown ticket.
    for (more, refused) in [
        (json!({"meeting_id": other["id"]}), 404),
        (json!({"display_name": "Mallory"}), 400),
        (json!({"invite_token": erika["token"]}), 400),
    ] {
        let (status, v) = credential(&d, &dev_hex, &ticket, more.clone()).await;
        assert_eq!(status, refused, "{more}: {v}");
    }
    let (status, _) = credential(&d, &dev_hex, &"x".repeat(43), json!({})).await;
    assert_eq!(status, 404);
    // The meeting ended: gone.
    let ended_ticket = d
        .ticket(&other, &pin(&d.invite(&other, "Max").await), "1")
        .await;
    d.srv
        .store
        .set_meeting_ended(id(&other), chrono::Utc::now())
        .await
        .expect("end");
    let (status, _) = credential(&d, &dev_hex, &ended_ticket, json!({})).await;
    assert_eq!(status, 410);
    // The call is over: nothing more.
    assert_eq!(d.end_call(&ticket).await, 204);
    let (status, _) = credential(&d, &dev_hex, &ticket, json!({})).await;
    assert_eq!(status, 404);
}
