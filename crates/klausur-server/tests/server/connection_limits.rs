//! Connection limits (issue 19, "Limits that can be turned against users"): 1,500 meeting
//! WebSockets from one source stayed open, slow partial headers kept connections open for
//! ever, and binary WebSocket frames skipped the rate limit.
//!
//! - One client address has at most `max_websockets_per_address` meeting WebSockets open; the
//!   next upgrade is refused with 429 (negative controls: another address is accepted, and a
//!   closed connection makes room).
//! - A connection that has not sent a complete request head within the header timeout is
//!   closed, in the clear and under TLS (negative controls: a complete request is answered; a
//!   half-sent connection is still open shortly after it was opened).
//! - Every WebSocket frame counts against the rate limit: a flood of binary frames gets
//!   `rate_limited` (negative control: the first ones are still refused as `malformed`).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use klausur_proto::{ErrorCode, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::common::ws::Client;
use crate::common::{tcp_timeout, wait_closed, TestServer};

const CAP: u32 = 3;

/// Opens a meeting WebSocket from 127.0.0.`n` (see [`Client::try_connect_from`]).
async fn websocket_from(srv: &TestServer, n: u8) -> Result<Client, (u16, String)> {
    Client::try_connect_from(srv, Ipv4Addr::new(127, 0, 0, n)).await
}

#[tokio::test]
async fn the_websocket_beyond_the_cap_is_refused_and_another_address_is_not() {
    let srv = TestServer::start_with(|c| c.max_websockets_per_address = CAP).await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(websocket_from(&srv, 1).await.expect("within the cap"));
    }
    let refused = websocket_from(&srv, 1).await.err();
    assert_eq!(
        refused,
        Some((429, "too_many_connections".to_string())),
        "the one beyond the cap"
    );
    // Negative control: another address is not affected.
    let mut other = websocket_from(&srv, 2).await.expect("another address");
    other.send(&klausur_proto::ClientMsg::Ping).await;
    assert!(matches!(other.next().await, ServerMsg::Pong));
    // A closed connection makes room (once the server has seen it close).
    let mut first = open.remove(0);
    first.ws.close(None).await.expect("close");
    let conns = srv.state.connections.clone();
    for _ in 0..500 {
        if conns.open_from("127.0.0.1".parse().expect("ip")) < CAP {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    websocket_from(&srv, 1).await.expect("room again");
}

const HEADER_TIMEOUT: Duration = Duration::from_millis(1500);
const HALF: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
const WHOLE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn half_sent_headers_are_closed_after_the_timeout() {
    let srv = TestServer::start_served_with(|c| c.http_header_timeout = HEADER_TIMEOUT).await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        let mut half = TcpStream::connect(addr).expect("connect");
        half.write_all(HALF).expect("write");
        let mut silent = TcpStream::connect(addr).expect("connect");
        // Negative control: a complete request on another connection is answered.
        let mut whole = TcpStream::connect(addr).expect("connect");
        whole.write_all(WHOLE).expect("write");
        let mut answer = String::new();
        whole.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Negative control: the half-sent connection is not closed at once.
        let early = wait_closed(&mut half, Duration::from_millis(300), tcp_timeout);
        assert!(
            early.as_ref().is_err_and(|e| e.starts_with("still open")),
            "{early:?}"
        );
        let limit = HEADER_TIMEOUT + Duration::from_secs(10);
        wait_closed(&mut half, limit, tcp_timeout).expect("half-sent headers");
        wait_closed(&mut silent, limit, tcp_timeout).expect("a connection that sends nothing");
    })
    .await
    .expect("test");
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr` that trusts `cert` (DER), its handshake done.
fn tls_connect(addr: SocketAddr, cert: &[u8]) -> Tls {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).expect("connect"));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

fn tls_timeout(s: &mut Tls, d: Duration) {
    s.sock.set_read_timeout(Some(d)).expect("timeout");
}

#[tokio::test]
async fn under_tls_half_sent_headers_are_closed_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write");
    let srv = TestServer::start_served_with(|c| {
        c.http_header_timeout = HEADER_TIMEOUT;
        c.tls = Some(klausur_server::config::TlsFiles {
            cert: cert_path,
            key: key_path,
        });
    })
    .await;
    let addr = srv.addr;
    let der = cert.cert.der().to_vec();
    tokio::task::spawn_blocking(move || {
        let mut half = tls_connect(addr, &der);
        // HTTP/1.1 is the only protocol offered.
        assert_eq!(half.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        half.write_all(HALF).expect("write");
        half.flush().expect("flush");
        // A handshake, then nothing.
        let mut silent = tls_connect(addr, &der);
        // Negative control: a complete request is answered.
        let mut whole = tls_connect(addr, &der);
        whole.write_all(WHOLE).expect("write");
        whole.flush().expect("flush");
        let mut answer = Vec::new();
        let _ = whole.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Negative control: the half-sent connection is not closed at once.
        let early = wait_closed(&mut half, Duration::from_millis(300), tls_timeout);
        assert!(
            early.as_ref().is_err_and(|e| e.starts_with("still open")),
            "{early:?}"
        );
        let limit = HEADER_TIMEOUT + Duration::from_secs(10);
        wait_closed(&mut half, limit, tls_timeout).expect("half-sent headers under TLS");
        wait_closed(&mut silent, limit, tls_timeout).expect("nothing sent under TLS");
    })
    .await
    .expect("test");
}

#[tokio::test]
async fn a_flood_of_binary_frames_is_rate_limited() {
    let srv = TestServer::start().await;
    let mut c = Client::connect(&srv, None).await;
    let frames = 200;
    for i in 0..frames {
        c.ws.send(Message::Binary(vec![i as u8; 16].into()))
            .await
            .expect("send");
    }
    let (mut malformed, mut limited) = (0, 0);
    for _ in 0..frames {
        match c.next().await {
            ServerMsg::Error {
                code: ErrorCode::Malformed,
                ..
            } => malformed += 1,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("unexpected: {other:?}"),
        }
    }
    // The burst allows 60 frames; 200 in a row would need seven seconds to pass.
    assert!(limited > 0, "{malformed} malformed, {limited} rate limited");
    assert!(malformed > 0, "the first ones are answered as before");
    assert!(malformed < frames, "{malformed} malformed");
}

/// Opens a meeting WebSocket from 127.0.0.1 with `Authorization: Bearer token`: the status of
/// the upgrade (101 when it opened; the socket stays open while `open` holds it).
async fn websocket_with_token(
    srv: &TestServer,
    token: &str,
    open: &mut Vec<common::ws::Ws>,
) -> u16 {
    let headers = [("authorization", format!("Bearer {token}"))];
    match common::ws::upgrade(srv, None, &headers).await {
        Ok(ws) => {
            open.push(ws);
            101
        }
        Err((status, _)) => status,
    }
}

/// A remote dial-in gateway carries many calls from one address: its meeting WebSockets, which
/// present the gateway token, do not count against the per-address cap. Negative controls: a
/// wrong token is refused, and without a token the cap holds for the same address.
#[tokio::test]
async fn a_gateway_with_its_token_is_not_held_to_the_per_address_cap() {
    let srv = TestServer::start_with(|c| {
        c.max_websockets_per_address = CAP;
        c.dialin.udp = vec!["127.0.0.1:5060".parse().expect("addr")];
    })
    .await;
    let token = srv.gateway_token();
    let mut open = Vec::new();
    for i in 0..CAP * 3 {
        assert_eq!(
            websocket_with_token(&srv, &token, &mut open).await,
            101,
            "call {i} of the gateway"
        );
    }
    assert_eq!(
        websocket_with_token(&srv, "not-the-gateway-token", &mut open).await,
        401,
        "a wrong token"
    );
    let mut plain = Vec::new();
    for _ in 0..CAP {
        plain.push(websocket_from(&srv, 1).await.expect("within the cap"));
    }
    assert_eq!(
        websocket_from(&srv, 1).await.err(),
        Some((429, "too_many_connections".to_string())),
        "without the token, the cap holds"
    );
}
