//! The client address behind a reverse proxy (issue 19, "Limits that can be turned against
//! users"): behind the TLS proxy that docs/operations.md recommends every client shares the
//! proxy's address, so per-address limits became global. With `[server] trusted_proxies`, the
//! address a trusted proxy forwards in `X-Forwarded-For` is the client: two clients behind the
//! proxy are limited separately (login tries, guest credentials, meeting WebSockets).
//!
//! Negative controls: without the setting the header is ignored, so a forged one does not
//! escape a limit; nor does one sent by a peer that is not a trusted proxy, nor what a client
//! writes left of the address the proxy appended; a header that cannot be read counts for the
//! proxy. Tests run on loopback: the test client at 127.0.0.1 plays the proxy, and 127.0.0.2 a
//! computer that is not one.

use std::net::IpAddr;

use klausur_proto::SecurityProfile;
use klausur_store::Role;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common;
use crate::common::{TestServer, PASSWORD};

const LIMIT: u32 = 3;
const WRONG: &str = "wrong-password-123";

async fn server(trusted: &[&str]) -> TestServer {
    let trusted: Vec<ipnet::IpNet> = trusted
        .iter()
        .map(|a| a.parse::<IpAddr>().expect("ip").into())
        .collect();
    let srv = TestServer::start_with(|c| {
        c.login_attempts_per_15min = LIMIT;
        c.trusted_proxies = klausur_server::config::TrustedProxies::new(trusted);
    })
    .await;
    srv.user("admin", Role::Admin).await;
    srv
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

/// A login of `admin` from `http` with `X-Forwarded-For: forwarded` (if given): the status.
async fn login(
    srv: &TestServer,
    http: &reqwest::Client,
    forwarded: Option<&str>,
    password: &str,
) -> u16 {
    let mut req = http
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "admin", "password": password}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.expect("login").status().as_u16()
}

/// Spends the login tries of `admin` from `forwarded` (through the proxy at 127.0.0.1).
async fn use_up_tries(srv: &TestServer, forwarded: Option<&str>) {
    let proxy = client_from("127.0.0.1");
    for _ in 0..LIMIT {
        assert_eq!(login(srv, &proxy, forwarded, WRONG).await, 401);
    }
    assert_eq!(login(srv, &proxy, forwarded, WRONG).await, 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_two_clients_are_limited_separately() {
    let srv = server(&["127.0.0.1"]).await;
    let proxy = client_from("127.0.0.1");
    use_up_tries(&srv, Some("198.51.100.7")).await;
    assert_eq!(
        login(&srv, &proxy, Some("198.51.100.7"), PASSWORD).await,
        429,
        "that client stays limited"
    );
    // What a client writes itself stands left of what the proxy appends, and is not read.
    assert_eq!(
        login(&srv, &proxy, Some("203.0.113.9, 198.51.100.7"), PASSWORD).await,
        429
    );
    // Another client behind the same proxy has tries of its own.
    assert_eq!(login(&srv, &proxy, Some("198.51.100.8"), WRONG).await, 401);
    assert_eq!(
        login(&srv, &proxy, Some("198.51.100.8"), PASSWORD).await,
        200
    );
}

#[tokio::test]
async fn without_trusted_proxies_a_forged_header_does_not_escape_the_limit() {
    let srv = server(&[]).await;
    let proxy = client_from("127.0.0.1");
    use_up_tries(&srv, Some("198.51.100.7")).await;
    assert_eq!(login(&srv, &proxy, Some("198.51.100.8"), WRONG).await, 429);
    assert_eq!(
        login(&srv, &proxy, Some("198.51.100.8"), PASSWORD).await,
        429,
        "the header is ignored: the peer is the client"
    );
    // Negative control: another computer is not affected.
    assert_eq!(
        login(&srv, &client_from("127.0.0.2"), None, PASSWORD).await,
        200
    );
}

#[tokio::test]
async fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_sends() {
    let srv = server(&["127.0.0.1"]).await;
    let other = client_from("127.0.0.2");
    for _ in 0..LIMIT {
        assert_eq!(login(&srv, &other, Some("198.51.100.7"), WRONG).await, 401);
    }
    assert_eq!(
        login(&srv, &other, Some("198.51.100.8"), PASSWORD).await,
        429
    );
}

#[tokio::test]
async fn a_header_that_cannot_be_read_counts_for_the_proxy() {
    let srv = server(&["127.0.0.1"]).await;
    let proxy = client_from("127.0.0.1");
    use_up_tries(&srv, Some("198.51.100.7, not-an-address")).await;
    assert_eq!(
        login(&srv, &proxy, None, PASSWORD).await,
        429,
        "the proxy's own"
    );
    // Negative control: a client the proxy names properly is not affected.
    assert_eq!(
        login(&srv, &proxy, Some("198.51.100.7"), PASSWORD).await,
        200
    );
}

/// A lobby guest's credential for `meeting` asked through the proxy for `forwarded`: the status.
async fn guest_credential(srv: &TestServer, meeting: &str, forwarded: &str) -> u16 {
    let device = klausur_e2ee::SigningKey::from_bytes(&[8; 32]).verifying_key();
    client_from("127.0.0.1")
        .post(format!("{}/api/identity/credential", srv.base))
        .header("x-forwarded-for", forwarded)
        .json(&json!({
            "device_key": hex::encode(device.to_bytes()),
            "meeting_id": meeting,
            "display_name": "Gustav",
        }))
        .send()
        .await
        .expect("credential")
        .status()
        .as_u16()
}

#[tokio::test]
async fn guest_credentials_count_per_forwarded_client() {
    for trusted in [true, false] {
        let srv = TestServer::start_with(|c| {
            c.identity.guest_credentials_per_15min = 2;
            if trusted {
                c.trusted_proxies =
                    klausur_server::config::TrustedProxies::new(vec!["127.0.0.1/32"
                        .parse()
                        .expect("net")]);
            }
        })
        .await;
        let olga = srv.user("olga", Role::Staff).await;
        let m = srv
            .store
            .create_meeting(
                "sprechstunde01",
                "Sprechstunde",
                None,
                olga.id,
                SecurityProfile::Strict,
            )
            .await
            .expect("meeting");
        for _ in 0..2 {
            assert_eq!(guest_credential(&srv, &m.id, "198.51.100.7").await, 200);
        }
        assert_eq!(guest_credential(&srv, &m.id, "198.51.100.7").await, 429);
        let other = guest_credential(&srv, &m.id, "198.51.100.8").await;
        if trusted {
            assert_eq!(other, 200, "another client behind the proxy");
        } else {
            assert_eq!(other, 429, "without trusted proxies the header is ignored");
        }
    }
}

/// Opens a meeting WebSocket through the proxy for `forwarded`: the upgrade's HTTP status.
async fn websocket(srv: &TestServer, forwarded: &str) -> (u16, Option<common::ws::Client>) {
    let mut req = format!("ws://{}/api/ws", srv.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", forwarded.parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => (resp.status().as_u16(), Some(common::ws::Client { ws })),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn meeting_websockets_count_per_forwarded_client() {
    let srv = TestServer::start_with(|c| {
        c.max_websockets_per_address = 2;
        c.trusted_proxies =
            klausur_server::config::TrustedProxies::new(vec!["127.0.0.1/32".parse().expect("net")]);
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let (status, ws) = websocket(&srv, "198.51.100.7").await;
        assert_eq!(status, 101);
        open.push(ws);
    }
    assert_eq!(websocket(&srv, "198.51.100.7").await.0, 429);
    assert_eq!(
        websocket(&srv, "198.51.100.8").await.0,
        101,
        "another client behind the proxy"
    );
}
