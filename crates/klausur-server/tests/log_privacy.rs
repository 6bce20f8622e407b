//! Logs never contain passwords, session or invitation tokens, invitation links or chat text.
//! All server log output at debug level is captured while a full flow runs (first admin,
//! login, password change, meeting, invitation, join, chat), then searched for the secrets.
//! Negative control: the same search finds a secret that is deliberately logged.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::json;
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

    let srv = common::TestServer::start().await;
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
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert!(
        log.contains("invitation created"),
        "the flow was logged at all: {log}"
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
    ];
    let found = leaks(&log, &secrets);
    assert!(found.is_empty(), "secrets in the log: {found:?}");

    // Negative control: a secret that is logged is found.
    tracing::info!("debug dump: {token}");
    let log = String::from_utf8_lossy(&capture.0.lock().expect("lock")).to_string();
    assert_eq!(leaks(&log, &secrets).len(), 1);
}
