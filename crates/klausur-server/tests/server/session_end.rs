//! Ending a session ends its meeting WebSockets (issue 19, "Access that does not hold"): a
//! disabled moderator used to keep her WebSocket and still locked the meeting and admitted
//! lobby guests. Now disabling an account, logging out and changing the password close the
//! WebSockets they concern (close code 1008, "session ended"); the participant leaves the
//! meeting as after a broken connection, and a lock or admit sent after the HTTP answer has no
//! effect.
//!
//! Negative controls: another moderator still locks and admits; a logout ends only that
//! session's WebSockets; a password change keeps the session that made it (HTTP and
//! WebSockets) and ends the account's others.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use klausur_proto::{ClientMsg, ErrorCode, JoinMethod, LeaveReason, SecurityProfile, ServerMsg};
use klausur_store::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::common::ws::Client;
use crate::common::TestServer;

const MEETING: &str = "ratssitzung0001";

/// A session: its cookie (`name=value`) and CSRF token.
struct Login {
    cookie: String,
    csrf: String,
}

async fn login(srv: &TestServer, username: &str) -> Login {
    let resp = srv
        .anonymous()
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": username, "password": common::PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200, "login of {username}");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .expect("cookie")
        .to_string();
    let v: serde_json::Value = resp.json().await.expect("json");
    let csrf = v["csrf_token"].as_str().expect("csrf").to_string();
    Login { cookie, csrf }
}

/// A POST with the session's cookie and CSRF token: the status.
async fn post(srv: &TestServer, session: &Login, path: &str, body: serde_json::Value) -> u16 {
    srv.anonymous()
        .post(format!("{}{path}", srv.base))
        .header("cookie", &session.cookie)
        .header("x-csrf-token", &session.csrf)
        .json(&body)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

/// `GET /api/session` with the session's cookie: the status.
async fn session_status(srv: &TestServer, session: &Login) -> u16 {
    srv.anonymous()
        .get(format!("{}/api/session", srv.base))
        .header("cookie", &session.cookie)
        .send()
        .await
        .expect("session")
        .status()
        .as_u16()
}

/// The organiser Olga and the moderator Mia in the meeting, and Max waiting in its lobby.
struct Meeting {
    srv: TestServer,
    mia_id: i64,
    mia_cookie: String,
    gina: String,
    olga: Client,
    mia: Client,
    mia_pid: String,
    max: Client,
    max_lobby_id: String,
}

fn self_id(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Joined { self_id, .. } => self_id.clone(),
        other => panic!("expected joined, got {other:?}"),
    }
}

async fn meeting(mia_session: &str) -> Meeting {
    meeting_on(TestServer::start().await, mia_session).await
}

/// [`meeting`] on `srv`, where Mia joins with the cookie `mia_session` (of the user "mia",
/// created beforehand by the caller) or, if empty, a login of her own.
async fn meeting_on(srv: TestServer, mia_session: &str) -> Meeting {
    let olga = match srv.store.user_by_username("olga").await.expect("lookup") {
        Some(u) => u,
        None => srv.user("olga", Role::Staff).await,
    };
    let mia = match srv.store.user_by_username("mia").await.expect("lookup") {
        Some(u) => u,
        None => srv.user("mia", Role::Staff).await,
    };
    srv.store
        .create_meeting(MEETING, "Rat", None, olga.id, SecurityProfile::Strict)
        .await
        .expect("meeting");
    srv.store
        .add_moderator(MEETING, mia.id)
        .await
        .expect("moderator");
    let (_, gina) = srv
        .guest_invitation(MEETING, "Gina Gast", olga.id, chrono::Duration::hours(1))
        .await;
    let olga_cookie = login(&srv, "olga").await.cookie;
    let mia_cookie = if mia_session.is_empty() {
        login(&srv, "mia").await.cookie
    } else {
        mia_session.to_string()
    };
    let mut olga_ws = Client::connect(&srv, Some(&olga_cookie)).await;
    self_id(&olga_ws.join(MEETING, None, None).await);
    let mut mia_ws = Client::connect(&srv, Some(&mia_cookie)).await;
    let j = mia_ws.join(MEETING, None, None).await;
    let ServerMsg::Joined { participants, .. } = &j else {
        panic!("{j:?}")
    };
    let mia_pid = self_id(&j);
    assert!(
        participants
            .iter()
            .any(|p| p.id == mia_pid && p.role == klausur_proto::Role::Moderator),
        "Mia is a moderator: {participants:?}"
    );
    let mut max = Client::connect(&srv, None).await;
    assert!(matches!(
        max.join(MEETING, None, Some("Max Muster")).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lc = olga_ws
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if !lobby.is_empty()))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lc else {
        unreachable!()
    };
    let max_lobby_id = lobby[0].id.clone();
    Meeting {
        srv,
        mia_id: mia.id,
        mia_cookie,
        gina,
        olga: olga_ws,
        mia: mia_ws,
        mia_pid,
        max,
        max_lobby_id,
    }
}

/// Mia, right after the HTTP answer that ended her session, locks the meeting and admits Max
/// (the frames may or may not reach the server: they must not take effect).
async fn mia_tries_to_moderate(m: &mut Meeting) {
    for msg in [
        ClientMsg::Lock { locked: true },
        ClientMsg::Admit {
            participant_id: m.max_lobby_id.clone(),
        },
    ] {
        let text = serde_json::to_string(&msg).expect("encode");
        let _ = m.mia.ws.send(Message::Text(text.into())).await;
    }
}

/// Mia's WebSocket is closed by the server with 1008 "session ended", within 5 s.
async fn closed_for_session_end(ws: &mut Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.ws.next()).await {
            Err(_) => panic!("the WebSocket is still open 5 s after the session ended"),
            Ok(Some(Ok(Message::Close(frame)))) => {
                let frame = frame.expect("a close frame with a reason");
                assert_eq!(frame.code, CloseCode::Policy);
                assert_eq!(frame.reason.as_str(), "session ended");
                return;
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let msg: ServerMsg = serde_json::from_str(t.as_str()).expect("message");
                assert!(
                    !matches!(msg, ServerMsg::MeetingChanged { .. }),
                    "nothing Mia sent took effect: {msg:?}"
                );
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("ended without a close frame: {other:?}"),
        }
    }
}

/// Mia has left (as after a broken connection), her lock and admit took no effect, and Olga
/// still moderates.
async fn mia_is_out_and_olga_moderates(mut m: Meeting) {
    let left = m
        .olga
        .until(|msg| matches!(msg, ServerMsg::ParticipantLeft { participant_id, .. } if *participant_id == m.mia_pid))
        .await;
    assert!(
        matches!(
            left,
            ServerMsg::ParticipantLeft {
                reason: LeaveReason::Disconnected,
                ..
            }
        ),
        "{left:?}"
    );
    // Not locked: an invited guest comes straight in.
    let mut gina = Client::connect(&m.srv, None).await;
    self_id(&gina.join(MEETING, Some(&m.gina), None).await);
    // Max still waits: it is Olga who admits him.
    m.olga
        .send(&ClientMsg::Admit {
            participant_id: m.max_lobby_id.clone(),
        })
        .await;
    let j = m
        .max
        .until(|msg| matches!(msg, ServerMsg::Joined { .. }))
        .await;
    let ServerMsg::Joined {
        participants,
        self_id,
        ..
    } = &j
    else {
        unreachable!()
    };
    let me = participants
        .iter()
        .find(|p| p.id == *self_id)
        .expect("listed");
    assert_eq!(
        me.join_method,
        JoinMethod::Lobby {
            admitted_by: "olga Name".into()
        }
    );
    // Negative control: the other moderator still locks.
    m.olga.send(&ClientMsg::Lock { locked: true }).await;
    m.olga
        .until(|msg| matches!(msg, ServerMsg::MeetingChanged { meeting } if meeting.locked))
        .await;
}

/// A WebSocket answers a `ping` (it is open and read).
async fn answers_ping(c: &mut Client) {
    c.send(&ClientMsg::Ping).await;
    assert!(matches!(
        c.until(|m| matches!(m, ServerMsg::Pong)).await,
        ServerMsg::Pong
    ));
}

#[tokio::test]
async fn a_disabled_moderator_is_disconnected_and_can_no_longer_moderate() {
    let mut m = meeting("").await;
    m.srv.user("ada", Role::Admin).await;
    let ada = login(&m.srv, "ada").await;
    let path = format!("/api/users/{}/disable", m.mia_id);
    assert_eq!(post(&m.srv, &ada, &path, json!({})).await, 204);
    mia_tries_to_moderate(&mut m).await;
    closed_for_session_end(&mut m.mia).await;
    // Her cookie no longer makes her staff: without a name she cannot even wait in the lobby.
    let mut again = Client::connect(&m.srv, Some(&m.mia_cookie)).await;
    assert!(matches!(
        again.join(MEETING, None, None).await,
        ServerMsg::Error {
            code: ErrorCode::InvalidField,
            ..
        }
    ));
    mia_is_out_and_olga_moderates(m).await;
}

#[tokio::test]
async fn a_logout_ends_that_sessions_websockets_only() {
    let srv = TestServer::start().await;
    srv.user("mia", Role::Staff).await;
    let in_meeting = login(&srv, "mia").await;
    let elsewhere = login(&srv, "mia").await;
    let mut m = meeting_on(srv, &in_meeting.cookie).await;
    // A WebSocket of Mia's other session (not in a meeting).
    let mut other = Client::connect(&m.srv, Some(&elsewhere.cookie)).await;
    answers_ping(&mut other).await;

    assert_eq!(
        post(&m.srv, &in_meeting, "/api/logout", json!({})).await,
        204
    );
    mia_tries_to_moderate(&mut m).await;
    closed_for_session_end(&mut m.mia).await;
    // Negative control: the other session and its WebSocket go on.
    answers_ping(&mut other).await;
    assert_eq!(session_status(&m.srv, &elsewhere).await, 200);
    assert_eq!(session_status(&m.srv, &in_meeting).await, 401);
    mia_is_out_and_olga_moderates(m).await;
}

#[tokio::test]
async fn a_password_change_ends_the_accounts_other_sessions_and_their_websockets() {
    let srv = TestServer::start().await;
    srv.user("mia", Role::Staff).await;
    let in_meeting = login(&srv, "mia").await;
    let changer = login(&srv, "mia").await;
    let mut m = meeting_on(srv, &in_meeting.cookie).await;
    // A WebSocket of the session that changes the password (not in a meeting).
    let mut own = Client::connect(&m.srv, Some(&changer.cookie)).await;
    answers_ping(&mut own).await;

    let body = json!({
        "current_password": common::PASSWORD,
        "new_password": "another-long-password-9",
    });
    assert_eq!(post(&m.srv, &changer, "/api/password", body).await, 204);
    mia_tries_to_moderate(&mut m).await;
    closed_for_session_end(&mut m.mia).await;
    assert_eq!(
        session_status(&m.srv, &in_meeting).await,
        401,
        "the other session ended"
    );
    // Negative control: the session that made the change goes on, HTTP and WebSocket.
    assert_eq!(session_status(&m.srv, &changer).await, 200);
    answers_ping(&mut own).await;
    mia_is_out_and_olga_moderates(m).await;
}

#[tokio::test]
async fn a_websocket_notices_its_account_disabled_by_another_process() {
    let srv = TestServer::start_with(|c| c.ws_session_check = Duration::from_millis(200)).await;
    let mut m = meeting_on(srv, "").await;
    // As `klausur user disable` does, in a process of its own: only the database changes.
    m.srv
        .store
        .set_user_disabled(m.mia_id, true)
        .await
        .expect("disable");
    m.srv
        .store
        .delete_sessions_of_user(m.mia_id)
        .await
        .expect("sessions");
    closed_for_session_end(&mut m.mia).await;
    // Negative control (in there): Olga's connection, whose session is valid, goes on.
    mia_is_out_and_olga_moderates(m).await;
}
