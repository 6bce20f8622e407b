//! Logs never contain passwords, session or invitation tokens, invitation links, chat text,
//! phone PINs, callers' numbers, dial-in numbers, dial-in tickets or the gateway token. All
//! server log output at debug level is captured while a full flow runs (first admin, login,
//! password change, meeting, invitation, join, chat; a dial-in meeting, a wrong and a right PIN,
//! the caller's credential, join and hang-up), then searched for the secrets. Negative control:
//! the same search finds secrets that are deliberately logged.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn leaks(log: &str, secrets: &[&str]) -> Vec<String> {
    secrets
        .iter()
        .filter(|s| !s.is_empty() && log.contains(*s))
        .map(|s| s.chars().take(6).collect::<String>() + "…")
        .collect()
}

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");

    let srv = common::TestServer::start_with(|c| {
        c.dialin.udp = vec!["127.0.0.1:5060".parse().expect("addr")];
    })
    .await;
    srv.user("olga", klausur_store::Role::Staff).await;
    let (client, csrf) = srv.login("olga").await;
    let new_password = "the-secret-new-password";
    let r = client
        .post(format!("{}/api/password", srv.base))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"current_password": common::PASSWORD, "new_password": new_password}))
        .send()
        .await
        .expect("password");
    assert_eq!(r.status(), 204);
    // A failed login with a password that must not be logged either.
    let wrong = "wrong-password-that-is-secret";
    let r = srv
        .anonymous()
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "olga", "password": wrong}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 401);
    let m: serde_json::Value = client
        .post(format!("{}/api/meetings", srv.base))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"title": "Vertraulich"}))
        .send()
        .await
        .expect("meeting")
        .json()
        .await
        .expect("json");
    let meeting = m["id"].as_str().expect("id").to_string();
    let inv: serde_json::Value = client
        .post(format!("{}/api/meetings/{meeting}/invitations", srv.base))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": "Gina Gast", "kind": "guest"}))
        .send()
        .await
        .expect("invite")
        .json()
        .await
        .expect("json");
    let token = inv["token"].as_str().expect("token").to_string();
    let link = inv["link"].as_str().expect("link").to_string();
    let r = srv
        .anonymous()
        .get(format!("{}/api/invite/{token}", srv.base))
        .send()
        .await
        .expect("info");
    assert_eq!(r.status(), 200);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/ws", srv.addr))
        .await
        .expect("ws");
    let chat = "streng vertrauliche Haushaltszahlen 4711";
    let chat_b64 = B64.encode(chat);
    for msg in [
        json!({"type": "join", "meeting_id": meeting, "invite_token": token, "display_name": null}),
        // Chat is end-to-end encrypted; a client outside the group that sends a chat payload
        // (here: the text itself, base64) is refused, and nothing of it reaches the log.
        json!({"type": "mls_chat", "id": 1, "epoch": 0, "message": chat_b64}),
        json!({"type": "leave"}),
    ] {
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .expect("send");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ws.next()).await;
    }

    // Dial-in: a meeting with a number, a PIN, a wrong and a right try, the caller's
    // credential, the join and the hang-up.
    let gateway_token = srv.gateway_token();
    let m: serde_json::Value = client
        .post(format!("{}/api/meetings", srv.base))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"title": "Telefonrunde", "profile": "internal", "dial_in": true}))
        .send()
        .await
        .expect("meeting")
        .json()
        .await
        .expect("json");
    let phone_meeting = m["id"].as_str().expect("id").to_string();
    let number = m["dial_in"]["meeting_number"]
        .as_str()
        .expect("number")
        .to_string();
    let inv: serde_json::Value = client
        .post(format!(
            "{}/api/meetings/{phone_meeting}/invitations",
            srv.base
        ))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"name": "Erika Musterfrau", "kind": "guest"}))
        .send()
        .await
        .expect("invite")
        .json()
        .await
        .expect("json");
    let pin = inv["phone_pin"].as_str().expect("pin").to_string();
    let wrong_pin = if pin == "99999999" {
        "99999998"
    } else {
        "99999999"
    };
    let caller = "+49 30 5550 1234";
    let caller_digits = "493055501234";
    let gateway = reqwest::Client::new();
    let mut ticket = String::new();
    for try_pin in [wrong_pin, pin.as_str()] {
        let v: serde_json::Value = gateway
            .post(format!("{}/api/dialin/calls", srv.base))
            .bearer_auth(&gateway_token)
            .json(
                &json!({"meeting_number": number, "pin": try_pin, "caller": caller,
                          "source": "192.0.2.7:5060"}),
            )
            .send()
            .await
            .expect("call")
            .json()
            .await
            .expect("json");
        if let Some(t) = v["ticket"].as_str() {
            ticket = t.to_string();
        }
    }
    assert_eq!(ticket.len(), 43, "the right PIN was admitted");
    let device = hex::encode(
        klausur_e2ee::SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .to_bytes(),
    );
    let r = gateway
        .post(format!("{}/api/identity/credential", srv.base))
        .bearer_auth(&gateway_token)
        .json(&json!({"device_key": device, "dial_in_ticket": ticket}))
        .send()
        .await
        .expect("credential");
    assert_eq!(r.status(), 200);
    let mut request = format!("ws://{}/api/ws", srv.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {gateway_token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("ws");
    let join = json!({"type": "join", "meeting_id": phone_meeting, "dial_in_ticket": ticket});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("send");
    let joined = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
        .await
        .expect("answer")
        .expect("open")
        .expect("frame");
    assert!(joined.to_string().contains("\"joined\""), "{joined}");
    ws.send(Message::Text(json!({"type": "leave"}).to_string().into()))
        .await
        .expect("send");
    let r = gateway
        .delete(format!("{}/api/dialin/calls/{ticket}", srv.base))
        .bearer_auth(&gateway_token)
        .send()
        .await
        .expect("hang up");
    assert_eq!(r.status(), 204);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert!(
        log.contains("invitation created"),
        "the flow was logged at all: {log}"
    );
    assert!(
        log.contains("dial-in call admitted") && log.contains("wrong number or PIN"),
        "the dial-in flow was logged at all: {log}"
    );
    let secrets = [
        common::PASSWORD,
        new_password,
        wrong,
        csrf.as_str(),
        token.as_str(),
        link.as_str(),
        chat,
        chat_b64.as_str(),
        pin.as_str(),
        wrong_pin,
        caller,
        caller_digits,
        // Not even the caller's number without the country code.
        &caller_digits[2..],
        ticket.as_str(),
        gateway_token.as_str(),
        number.as_str(),
    ];
    let found = leaks(&log, &secrets);
    assert!(found.is_empty(), "secrets in the log: {found:?}");
    // Display names are for the audit trail only, not the operational log.
    let names = ["Gina Gast", "Erika Musterfrau", "olga Name"];
    let found = leaks(&log, &names);
    assert!(found.is_empty(), "display names in the log: {found:?}");

    // The audit trail: the flow is in it (names and addresses where the event needs them),
    // none of the secrets are (the dial-in number is: which number was dialled is evidence).
    let records = srv.store.audit_after(0, 1000).await.expect("audit");
    let trail: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("json") + "\n")
        .collect();
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    for kind in [
        "login.succeeded",
        "login.failed",
        "account.password_changed",
        "meeting.created",
        "invitation.created",
        "dialin.attempt",
        "encryption.credential_issued",
        "participant.joined",
        "participant.left",
    ] {
        assert!(kinds.contains(&kind), "{kind} recorded: {kinds:?}");
    }
    let failed = records
        .iter()
        .find(|r| r.kind == "login.failed")
        .expect("failed login");
    assert_eq!(failed.source.as_deref(), Some("127.0.0.1"));
    assert_eq!(failed.details()["reason"], "wrong_password");
    let attempts: Vec<Value> = records
        .iter()
        .filter(|r| r.kind == "dialin.attempt")
        .map(|r| r.details()["result"].clone())
        .collect();
    assert_eq!(attempts, [json!("wrong"), json!("admit")]);
    for name in names {
        assert!(trail.contains(name), "{name} in the audit trail");
    }
    let audit_secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| *s != number.as_str())
        .collect();
    let found = leaks(&trail, &audit_secrets);
    assert!(found.is_empty(), "secrets in the audit trail: {found:?}");
    assert!(
        srv.store
            .verify_audit(None)
            .await
            .expect("verify")
            .is_intact(),
        "the trail verifies"
    );
    // Negative control: a secret written into a record is found.
    srv.state
        .audit
        .record(
            klausur_server::audit::Entry::new("test.leak", klausur_store::AuditActor::system())
                .details(json!({ "oops": pin })),
        )
        .await;
    let records = srv.store.audit_after(0, 1000).await.expect("audit");
    let trail: String = records
        .iter()
        .map(|r| serde_json::to_string(r).expect("json"))
        .collect();
    assert_eq!(leaks(&trail, &audit_secrets).len(), 1);

    // Negative control: secrets that are logged are found.
    tracing::info!("debug dump: {token}");
    tracing::info!("dial-in dump: {pin} from {caller_digits} with {ticket}");
    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert_eq!(leaks(&log, &secrets).len(), 5);
}
