//! One rule for every place a name or title enters (issue 19: names and titles accepted bidi
//! overrides, zero-width characters and a trailing "(Sie)", lobby names and titles control
//! characters): the lobby's join, invitations, accounts, guest credentials and meeting titles
//! all refuse them with a message that says what is wrong, and accept ordinary names, with
//! runs of spaces folded so two names that look the same are the same.

use klausur_proto::{ErrorCode, SecurityProfile, ServerMsg};
use klausur_store::Role;
use serde_json::{json, Value};

use crate::common;
use crate::common::ws::Client;
use crate::common::TestServer;

/// Names that must not enter: a direction override (reads "Olga Ordner" backwards and turns
/// what follows), a zero-width space, the viewer's own marker, a control character.
const BAD_NAMES: [&str; 5] = [
    "Olga \u{202E}rendrO",
    "Ol\u{200B}ga Ordner",
    "Olga Ordner (Sie)",
    "Olga\u{0007}",
    "Olga\u{2066}Ordner\u{2069}",
];

async fn setup() -> (TestServer, String) {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = srv
        .store
        .create_meeting(
            "m1",
            "Hauptausschuss",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
    (srv, m.id)
}

async fn join_error(srv: &TestServer, meeting: &str, name: &str) -> ServerMsg {
    let mut c = Client::connect(srv, None).await;
    c.join(meeting, None, Some(name)).await
}

#[tokio::test]
async fn the_lobby_refuses_names_that_lie_and_takes_ordinary_ones_folded() {
    let (srv, meeting) = setup().await;
    for bad in BAD_NAMES {
        let m = join_error(&srv, &meeting, bad).await;
        assert!(
            matches!(&m, ServerMsg::Error { code: ErrorCode::InvalidField, message } if message.contains("display_name")),
            "{bad:?}: {m:?}"
        );
    }
    // The permitted counterpart: an ordinary name waits in the lobby, as the list will show it.
    let mut carla = Client::connect(&srv, None).await;
    let m = carla.join(&meeting, None, Some("  Carla   Gast ")).await;
    assert!(matches!(m, ServerMsg::LobbyWait { .. }), "{m:?}");
    let mut olga =
        Client::connect(&srv, Some(&common::ws::session_cookie(&srv, "olga").await)).await;
    let j = olga.join(&meeting, None, None).await;
    let ServerMsg::Joined { lobby, .. } = j else {
        panic!("{j:?}")
    };
    assert_eq!(lobby[0].display_name, "Carla Gast");
}

/// A valid device key (hex), so that only the name can be what is wrong.
fn device_key() -> String {
    hex::encode(
        klausur_e2ee::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .to_bytes(),
    )
}

async fn post(client: &reqwest::Client, csrf: &str, url: String, body: Value) -> (u16, Value) {
    let resp = client
        .post(url)
        .header("X-CSRF-Token", csrf)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn invitations_accounts_titles_and_guest_credentials_follow_the_same_rule() {
    let (srv, meeting) = setup().await;
    srv.user("admin", Role::Admin).await;
    let (olga, csrf) = srv.login("olga").await;
    let (admin, admin_csrf) = srv.login("admin").await;
    let base = &srv.base;
    for bad in BAD_NAMES {
        let (status, v) = post(
            &olga,
            &csrf,
            format!("{base}/api/meetings/{meeting}/invitations"),
            json!({"name": bad, "kind": "guest"}),
        )
        .await;
        assert_eq!(status, 400, "invitation {bad:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("name")),
            "{v}"
        );
        let (status, v) = post(
            &admin,
            &admin_csrf,
            format!("{base}/api/users"),
            json!({"username": "neu", "display_name": bad, "password": "a-long-enough-password-1", "role": "staff"}),
        )
        .await;
        assert_eq!(status, 400, "account {bad:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("name")),
            "{v}"
        );
        let (status, v) = post(
            &srv.anonymous(),
            "",
            format!("{base}/api/identity/credential"),
            json!({"device_key": device_key(), "meeting_id": meeting, "display_name": bad}),
        )
        .await;
        assert_eq!(status, 400, "guest credential {bad:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("name")),
            "{v}"
        );
    }
    for bad_title in [
        "Haupt\u{202E}ausschuss",
        "Haupt\u{0000}ausschuss",
        "Titel\u{200B}",
    ] {
        let (status, v) = post(
            &olga,
            &csrf,
            format!("{base}/api/meetings"),
            json!({"title": bad_title}),
        )
        .await;
        assert_eq!(status, 400, "title {bad_title:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("title")),
            "{v}"
        );
    }
    // The permitted counterparts, cleaned the same way everywhere.
    let (status, v) = post(
        &olga,
        &csrf,
        format!("{base}/api/meetings/{meeting}/invitations"),
        json!({"name": " Gina   Gast ", "kind": "guest"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["invitation"]["name"], "Gina Gast");
    let (status, v) = post(
        &olga,
        &csrf,
        format!("{base}/api/meetings"),
        json!({"title": "Bauausschuss  –  Sitzung"}),
    )
    .await;
    assert!(status == 200 || status == 201, "{status}: {v}");
    assert_eq!(v["title"], "Bauausschuss – Sitzung");
    // An account with an ordinary name is created (the refusals above were about the name).
    let (status, v) = post(
        &admin,
        &admin_csrf,
        format!("{base}/api/users"),
        json!({"username": "neu", "display_name": "Nora  Neu", "password": "a-long-enough-password-1", "role": "staff"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["display_name"], "Nora Neu");
    let (status, v) = post(
        &srv.anonymous(),
        "",
        format!("{base}/api/identity/credential"),
        json!({"device_key": device_key(), "meeting_id": meeting, "display_name": "Carla  Gast"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}
