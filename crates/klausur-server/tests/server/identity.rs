//! The identity CA over HTTP: `GET /api/identity/ca` and `POST /api/identity/credential` for
//! staff, invitation holders and lobby guests. Every returned credential is decoded and verified
//! with klausur-e2ee against the key `/api/identity/ca` publishes; negative control: the same
//! credential fails against another CA key.

use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use chrono::{Duration, Utc};
use klausur_e2ee::{CredentialError, ParticipantKind, SignedCredential, SigningKey, VerifyingKey};
use klausur_proto::SecurityProfile;
use klausur_server::auth;
use klausur_store::{BanSubject, Role};
use serde_json::{json, Value};

use crate::common::TestServer;

fn now() -> StdDuration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

fn device(seed: u8) -> (VerifyingKey, String) {
    let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
    (key, hex::encode(key.to_bytes()))
}

async fn ca_key(srv: &TestServer) -> VerifyingKey {
    let v: Value = srv
        .anonymous()
        .get(format!("{}/api/identity/ca", srv.base))
        .send()
        .await
        .expect("ca")
        .json()
        .await
        .expect("json");
    let hex_key = v["public_key"].as_str().expect("public_key");
    let bytes: [u8; 32] = hex::decode(hex_key)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    VerifyingKey::from_bytes(&bytes).expect("key")
}

async fn post(
    srv: &TestServer,
    client: &reqwest::Client,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = client
        .post(format!("{}/api/identity/credential", srv.base))
        .json(&body);
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "error without code/message: {v}"
        );
    }
    (status, v)
}

/// Decodes the reply's credential and verifies it against the server's CA key.
async fn verified(srv: &TestServer, reply: &Value) -> SignedCredential {
    let ca = ca_key(srv).await;
    assert_eq!(reply["ca_public_key"], hex::encode(ca.to_bytes()));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(reply["credential"].as_str().expect("credential"))
        .expect("base64");
    let sc = SignedCredential::from_bytes(&bytes).expect("decode");
    sc.verify(&ca, now())
        .expect("verifies against the server's CA");
    // Negative control: another CA's key does not accept it.
    let other = SigningKey::from_bytes(&[0xAB; 32]).verifying_key();
    assert_eq!(sc.verify(&other, now()), Err(CredentialError::BadSignature));
    // About 60 minutes.
    let left = sc.credential.not_after as i64 - now().as_secs() as i64;
    assert!((3590..=3610).contains(&left), "valid for {left} s");
    assert_eq!(
        reply["not_after_ms"].as_u64(),
        Some(sc.credential.not_after * 1000)
    );
    assert!(sc.credential.not_before <= now().as_secs());
    sc
}

async fn meeting(srv: &TestServer, organiser: i64) -> String {
    srv.store
        .create_meeting(
            &auth::new_meeting_id(),
            "Ausschuss",
            None,
            organiser,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting")
        .id
}

async fn invitation(
    srv: &TestServer,
    meeting: &str,
    name: &str,
    by: i64,
    expires_in: Duration,
) -> (i64, String) {
    srv.guest_invitation(meeting, name, by, expires_in).await
}

#[tokio::test]
async fn staff_get_a_staff_credential_with_csrf_only() {
    let srv = TestServer::start().await;
    let ada = srv.user("ada", Role::Staff).await;
    let (client, csrf) = srv.login("ada").await;
    let (dev, dev_hex) = device(1);

    let (status, v) = post(&srv, &client, Some(&csrf), json!({"device_key": dev_hex})).await;
    assert_eq!(status, 200, "{v}");
    let sc = verified(&srv, &v).await;
    assert_eq!(sc.credential.kind, ParticipantKind::Staff);
    assert_eq!(sc.credential.user_id, format!("user:{}", ada.id));
    assert_eq!(sc.credential.display_name, "ada Name");
    assert_eq!(sc.credential.device_public_key, dev.to_bytes());

    // No CSRF token: refused.
    let (status, v) = post(&srv, &client, None, json!({"device_key": dev_hex})).await;
    assert_eq!(status, 403, "{v}");
    // Cross-origin: refused even with the token.
    let resp = client
        .post(format!("{}/api/identity/credential", srv.base))
        .header("X-CSRF-Token", &csrf)
        .header("Origin", "https://evil.example")
        .json(&json!({"device_key": dev_hex}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    // No session at all.
    let (status, _) = post(&srv, &srv.anonymous(), None, json!({"device_key": dev_hex})).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn disabled_accounts_get_nothing() {
    let srv = TestServer::start().await;
    let bob = srv.user("bob", Role::Staff).await;
    let (client, csrf) = srv.login("bob").await;
    // Disabled while the session still exists.
    srv.store
        .set_user_disabled(bob.id, true)
        .await
        .expect("disable");
    let (status, v) = post(
        &srv,
        &client,
        Some(&csrf),
        json!({"device_key": device(2).1}),
    )
    .await;
    assert_eq!(status, 401, "{v}");
}

#[tokio::test]
async fn invitation_holders_get_an_invited_guest_credential() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = meeting(&srv, olga.id).await;
    let (inv, token) = invitation(&srv, &m, "Gina Gast", olga.id, Duration::hours(1)).await;
    let (dev, dev_hex) = device(3);
    let anon = srv.anonymous();

    let (status, v) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": token}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let sc = verified(&srv, &v).await;
    assert_eq!(sc.credential.kind, ParticipantKind::InvitedGuest);
    assert_eq!(sc.credential.user_id, format!("invitation:{inv}"));
    assert_eq!(sc.credential.display_name, "Gina Gast");
    assert_eq!(sc.credential.device_public_key, dev.to_bytes());

    // The name comes from the invitation, not from the caller.
    let (status, _) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": token, "display_name": "Someone Else"}),
    )
    .await;
    assert_eq!(status, 400);
    // For another meeting: not valid.
    let (status, _) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": token, "meeting_id": "other-meeting"}),
    )
    .await;
    assert_eq!(status, 404);

    // A removed (banned) holder gets none while the removal stands ...
    let (rex, rex_token) = invitation(&srv, &m, "Rex Raus", olga.id, Duration::hours(1)).await;
    srv.store
        .add_ban(&m, BanSubject::Invitation(rex), "Olga", Utc::now())
        .await
        .expect("ban");
    let (status, v) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": rex_token}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "removed");
    // ... and gets one once a moderator let them in again (the admission lifts the removal).
    srv.store
        .remove_ban(&m, BanSubject::Invitation(rex))
        .await
        .expect("lift");
    let (status, v) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": rex_token}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        verified(&srv, &v).await.credential.user_id,
        format!("invitation:{rex}")
    );

    // Forged, revoked and expired invitations.
    let (status, _) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": auth::new_token().as_str()}),
    )
    .await;
    assert_eq!(status, 404);
    srv.store
        .revoke_invitation(&m, inv, Utc::now())
        .await
        .expect("revoke");
    let (status, _) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": token}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, old) = invitation(&srv, &m, "Otto Alt", olga.id, Duration::hours(-1)).await;
    let (status, v) = post(
        &srv,
        &anon,
        None,
        json!({"device_key": dev_hex, "invite_token": old}),
    )
    .await;
    assert_eq!(status, 410, "{v}");
}

#[tokio::test]
async fn lobby_guests_get_an_anonymous_guest_credential() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = meeting(&srv, olga.id).await;
    let (dev, dev_hex) = device(4);
    let anon = srv.anonymous();
    let body = json!({"device_key": dev_hex, "meeting_id": m, "display_name": "  Gustav  "});

    let (status, v) = post(&srv, &anon, None, body.clone()).await;
    assert_eq!(status, 200, "{v}");
    let first = verified(&srv, &v).await;
    assert_eq!(first.credential.kind, ParticipantKind::Guest);
    assert_eq!(first.credential.display_name, "Gustav");
    assert_eq!(first.credential.device_public_key, dev.to_bytes());
    let rest = first
        .credential
        .user_id
        .strip_prefix("guest:")
        .expect("guest: prefix");
    assert_eq!(rest.len(), 32);
    assert!(rest.chars().all(|c| c.is_ascii_hexdigit()));
    // Each guest credential names nobody: a fresh random id every time.
    let (_, v) = post(&srv, &anon, None, body).await;
    assert_ne!(
        verified(&srv, &v).await.credential.user_id,
        first.credential.user_id
    );

    for (bad, want) in [
        (json!({"device_key": dev_hex, "meeting_id": m}), 400),
        (
            json!({"device_key": dev_hex, "meeting_id": m, "display_name": "x".repeat(81)}),
            400,
        ),
        (
            json!({"device_key": dev_hex, "meeting_id": m, "display_name": "   "}),
            400,
        ),
        (
            json!({"device_key": dev_hex, "display_name": "Gustav"}),
            400,
        ),
        (
            json!({"device_key": dev_hex, "meeting_id": "no-such-meeting", "display_name": "Gustav"}),
            404,
        ),
    ] {
        let (status, v) = post(&srv, &anon, None, bad.clone()).await;
        assert_eq!(status, want, "{bad}: {v}");
    }
}

#[tokio::test]
async fn bad_device_keys_and_bad_requests_are_refused() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = meeting(&srv, olga.id).await;
    let (client, csrf) = srv.login("olga").await;
    let good = device(5).1;
    let mut small_order = [0u8; 32];
    small_order[0] = 1;
    for key in [
        good[..62].to_string(),
        format!("{good}00"),
        String::new(),
        "zz".repeat(32),
        hex::encode(small_order),
    ] {
        let (status, v) = post(&srv, &client, Some(&csrf), json!({"device_key": key})).await;
        assert_eq!(status, 400, "{key}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("device_key"),
            "{v}"
        );
    }
    // Unknown fields, a missing device key.
    let (status, _) = post(
        &srv,
        &client,
        Some(&csrf),
        json!({"device_key": good, "kind": "staff"}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = post(&srv, &client, Some(&csrf), json!({})).await;
    assert_eq!(status, 422);

    let anon = srv.anonymous();
    let url = format!("{}/api/identity/credential", srv.base);
    let body = json!({"device_key": good, "meeting_id": m, "display_name": "Gustav"});
    // Not JSON.
    let resp = anon
        .post(&url)
        .header("Content-Type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 415);
    // Not POST.
    let resp = anon.get(&url).send().await.expect("request");
    assert_eq!(resp.status(), 405);
    // Another origin.
    let resp = anon
        .post(&url)
        .header("Origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 403);
    // The same origin is fine.
    let resp = anon
        .post(&url)
        .header("Origin", srv.base.as_str())
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn guest_issuance_is_rate_limited_per_address() {
    let srv = TestServer::start_with(|c| c.identity.guest_credentials_per_15min = 2).await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = meeting(&srv, olga.id).await;
    let anon = srv.anonymous();
    let body = json!({"device_key": device(6).1, "meeting_id": m, "display_name": "Gustav"});
    for _ in 0..2 {
        let (status, v) = post(&srv, &anon, None, body.clone()).await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = post(&srv, &anon, None, body).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    // Staff and invitation holders are not affected.
    srv.user("ada", Role::Staff).await;
    let (client, csrf) = srv.login("ada").await;
    let (status, _) = post(
        &srv,
        &client,
        Some(&csrf),
        json!({"device_key": device(6).1}),
    )
    .await;
    assert_eq!(status, 200);
}
