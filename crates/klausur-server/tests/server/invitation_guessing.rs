//! Invitation-token guesses (issue 19, "Limits, each with a test: ... invitation-token
//! guesses"): failed lookups count per client address wherever a token is presented — the
//! WebSocket's `join`, `GET /api/invite/{token}` and `POST /api/identity/credential` — and
//! after [`INVITATION_FAILURES_PER_WINDOW`] a wrong token from that address is refused with
//! `rate_limited` on all three, while a correct token from the same address still works.
//!
//! Negative controls: the first failures answer what is wrong (404, or 410 for an expired
//! link); another address is not affected. Clients use distinct loopback source addresses
//! (127.0.0.2, 127.0.0.3) as distinct computers.

use std::net::IpAddr;

use chrono::Duration;
use klausur_proto::{ErrorCode, SecurityProfile, ServerMsg};
use klausur_server::admission::INVITATION_FAILURES_PER_WINDOW;
use klausur_server::auth;
use klausur_store::Role;
use serde_json::{json, Value};

use crate::common::ws::Client;
use crate::common::TestServer;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// A signaling connection from the source address `ip`.
async fn ws_from(srv: &TestServer, ip: &str) -> Client {
    Client::connect_from(srv, ip.parse().expect("ip")).await
}

/// `GET /api/invite/{token}`: status and error code (if any).
async fn invite_info(srv: &TestServer, http: &reqwest::Client, token: &str) -> (u16, Value) {
    let resp = http
        .get(format!("{}/api/invite/{token}", srv.base))
        .send()
        .await
        .expect("invite");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `POST /api/identity/credential` with an invitation token: status and body.
async fn credential(srv: &TestServer, http: &reqwest::Client, token: &str) -> (u16, Value) {
    let device = klausur_e2ee::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let resp = http
        .post(format!("{}/api/identity/credential", srv.base))
        .json(&json!({"device_key": hex::encode(device.to_bytes()), "invite_token": token}))
        .send()
        .await
        .expect("credential");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn error_code(msg: &ServerMsg) -> Option<ErrorCode> {
    match msg {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn wrong_token(i: usize) -> String {
    format!("{}{i}", auth::new_token().as_str())
}

#[tokio::test]
async fn wrong_tokens_are_limited_per_address_and_a_correct_one_still_works() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let meeting = srv
        .store
        .create_meeting(
            &auth::new_meeting_id(),
            "Bauausschuss",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting")
        .id;
    let (_, token) = srv
        .guest_invitation(&meeting, "Gast Carla", olga.id, Duration::hours(2))
        .await;
    let (_, expired) = srv
        .guest_invitation(&meeting, "Gast Alt", olga.id, Duration::hours(-1))
        .await;

    let mallory = client_from("127.0.0.2");
    let mut mallory_ws = ws_from(&srv, "127.0.0.2").await;
    let limit = INVITATION_FAILURES_PER_WINDOW as usize;
    // The failures within the limit say what is wrong, on every surface that takes a token;
    // they share one count. An expired link counts as a failure too.
    for i in 0..limit {
        match i % 3 {
            0 => {
                let (status, v) = invite_info(&srv, &mallory, &wrong_token(i)).await;
                assert_eq!(status, 404, "{i}: {v}");
            }
            1 => {
                let (status, v) = credential(&srv, &mallory, &wrong_token(i)).await;
                assert_eq!(status, 404, "{i}: {v}");
            }
            _ if i == 2 => {
                let (status, v) = invite_info(&srv, &mallory, &expired).await;
                assert_eq!(status, 410, "{i}: {v}");
                assert_eq!(v["error"]["code"], "invitation_expired");
            }
            _ => {
                let reply = mallory_ws.join(&meeting, Some(&wrong_token(i)), None).await;
                assert_eq!(
                    error_code(&reply),
                    Some(ErrorCode::NotFound),
                    "{i}: {reply:?}"
                );
            }
        }
    }

    // Beyond the limit a wrong token is refused on all three, without saying what is wrong.
    let (status, v) = invite_info(&srv, &mallory, &wrong_token(100)).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let (status, v) = invite_info(&srv, &mallory, &expired).await;
    assert_eq!((status, &v["error"]["code"]), (429, &json!("rate_limited")));
    let (status, v) = credential(&srv, &mallory, &wrong_token(101)).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let reply = mallory_ws
        .join(&meeting, Some(&wrong_token(102)), None)
        .await;
    assert_eq!(
        error_code(&reply),
        Some(ErrorCode::RateLimited),
        "{reply:?}"
    );

    // A correct token from the same address still works, everywhere.
    let (status, v) = invite_info(&srv, &mallory, &token).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["invitee_name"], "Gast Carla");
    let (status, v) = credential(&srv, &mallory, &token).await;
    assert_eq!(status, 200, "{v}");
    let mut carla = ws_from(&srv, "127.0.0.2").await;
    let reply = carla.join(&meeting, Some(&token), None).await;
    assert!(
        matches!(reply, ServerMsg::Joined { .. }),
        "the invited guest comes in: {reply:?}"
    );

    // Negative control: another address is not affected by these failures.
    let other = client_from("127.0.0.3");
    let (status, v) = invite_info(&srv, &other, &wrong_token(200)).await;
    assert_eq!(status, 404, "{v}");
    let mut other_ws = ws_from(&srv, "127.0.0.3").await;
    let reply = other_ws.join(&meeting, Some(&wrong_token(201)), None).await;
    assert_eq!(error_code(&reply), Some(ErrorCode::NotFound), "{reply:?}");
}
