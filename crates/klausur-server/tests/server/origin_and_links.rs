//! The server's own origin and its links (issue 19, "Other defects"): the Origin check compares
//! the scheme too (an `https://` page was accepted by the `http://` server, its WebSocket and its
//! login), and without `public_url` an invitation's link is never built from a forged `Host`.
//! Each refusal has its permitted counterpart beside it.

use klausur_proto::SecurityProfile;
use klausur_store::Role;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common;
use crate::common::TestServer;

async fn login_status(srv: &TestServer, origin: &str) -> u16 {
    srv.anonymous()
        .post(format!("{}/api/login", srv.base))
        .header("Origin", origin)
        .json(&json!({"username": "olga", "password": common::PASSWORD}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

async fn websocket_accepted(srv: &TestServer, origin: &str) -> bool {
    let mut req = format!("ws://{}/api/ws", srv.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Origin", origin.parse().expect("header"));
    tokio_tungstenite::connect_async(req).await.is_ok()
}

#[tokio::test]
async fn the_origin_must_match_in_scheme_too() {
    let srv = TestServer::start().await;
    srv.user("olga", Role::Staff).await;
    let own = format!("http://{}", srv.addr);
    let https = format!("https://{}", srv.addr);
    assert_eq!(
        login_status(&srv, &https).await,
        403,
        "an https page is another origin"
    );
    assert!(!websocket_accepted(&srv, &https).await);
    assert_eq!(
        login_status(&srv, &own).await,
        200,
        "the server's own origin"
    );
    assert!(websocket_accepted(&srv, &own).await);
}

#[tokio::test]
async fn behind_a_tls_proxy_the_public_url_is_the_origin() {
    let srv =
        TestServer::start_with(|c| c.public_url = Some("https://Konferenz.Stadt.example/".into()))
            .await;
    srv.user("olga", Role::Staff).await;
    assert_eq!(
        login_status(&srv, "https://konferenz.stadt.example").await,
        200
    );
    assert_eq!(
        login_status(&srv, "http://konferenz.stadt.example").await,
        403
    );
    assert_eq!(
        login_status(&srv, "https://konferenz.stadt.example.evil.example").await,
        403
    );
}

async fn invite(srv: &TestServer, host: Option<&str>) -> (u16, Value) {
    let (client, csrf) = srv.login("olga").await;
    let mut req = client
        .post(format!("{}/api/meetings/m1/invitations", srv.base))
        .header("X-CSRF-Token", csrf)
        .json(&json!({"name": "Gina Gast", "kind": "guest"}));
    if let Some(h) = host {
        req = req.header("Host", h);
    }
    let resp = req.send().await.expect("invite");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn with_meeting(srv: &TestServer) {
    let olga = srv.user("olga", Role::Staff).await;
    srv.store
        .create_meeting(
            "m1",
            "Hauptausschuss",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
}

#[tokio::test]
async fn an_invitation_link_never_comes_from_a_forged_host() {
    let srv = TestServer::start().await;
    with_meeting(&srv).await;
    let (status, v) = invite(&srv, Some("evil.example")).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("public_url")),
        "{v}"
    );
    // The server's own address, and a loopback name with its port: taken as sent.
    let (status, v) = invite(&srv, None).await;
    assert_eq!(status, 201, "{v}");
    assert!(
        v["link"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("http://{}/j/", srv.addr))),
        "{v}"
    );
    let localhost = format!("localhost:{}", srv.addr.port());
    let (status, v) = invite(&srv, Some(&localhost)).await;
    assert_eq!(status, 201, "{v}");
    assert!(
        v["link"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("http://{localhost}/j/"))),
        "{v}"
    );

    // With public_url the link is always that, whatever the Host.
    let srv =
        TestServer::start_with(|c| c.public_url = Some("https://konferenz.stadt.example".into()))
            .await;
    with_meeting(&srv).await;
    let (status, v) = invite(&srv, Some("evil.example")).await;
    assert_eq!(status, 201, "{v}");
    assert!(
        v["link"]
            .as_str()
            .is_some_and(|l| l.starts_with("https://konferenz.stadt.example/j/")),
        "{v}"
    );
}
