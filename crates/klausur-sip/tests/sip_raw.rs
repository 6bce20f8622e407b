//! The SIP endpoint against raw bytes over UDP, TCP and TLS: garbage, broken and unwanted
//! requests get a 400 (or another refusal) or are dropped, and the endpoint keeps answering.

mod sip_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use klausur_sip::driver::sip::{SipConfig, SipEndpoint, SipError, SipTransport, TlsIdentity};
use sip_support::{config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;
use tokio_rustls::rustls;
use zeroize::Zeroizing;

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 6000 RTP/AVP 0\r\n";

fn request(method: &str, target: SocketAddr, branch: &str, extra: &str, body: &str) -> String {
    format!(
        "{method} sip:100@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{branch};rport\r\n\
         From: <sip:+4930111@127.0.0.1>;tag=t{branch}\r\n\
         To: <sip:100@{target}>\r\n\
         Call-ID: {branch}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:+4930111@127.0.0.1:5999>\r\n\
         Max-Forwards: 70\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends `msg` and returns the status code of the answer, or `None` if none came within
/// `wait` (100 Trying is skipped).
async fn exchange(
    socket: &UdpSocket,
    target: SocketAddr,
    msg: &[u8],
    wait: Duration,
) -> Option<u16> {
    socket.send_to(msg, target).await.expect("send");
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let (n, _) = timeout(
            deadline - tokio::time::Instant::now(),
            socket.recv_from(&mut buf),
        )
        .await
        .ok()?
        .ok()?;
        let status = status_of(&buf[..n]);
        if status != Some(100) {
            return status;
        }
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

const ANSWER: Duration = Duration::from_secs(10);
const SILENCE: Duration = Duration::from_millis(700);

#[tokio::test]
async fn malformed_udp_is_answered_400_or_dropped_and_the_endpoint_carries_on() {
    let mut gw = start(config()).await;
    let target = gw.udp;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");

    // Garbage: dropped.
    for junk in [
        &b"hello"[..],
        b"\x00\x01\x02\xff",
        b"INVITE\r\n\r\n",
        &[b'A'; 3000],
    ] {
        assert_eq!(exchange(&socket, target, junk, SILENCE).await, None);
    }
    // Without Call-ID no response can be addressed: dropped.
    let no_call_id =
        request("INVITE", target, "a1", "", SDP).replace("Call-ID: a1@127.0.0.1\r\n", "");
    assert_eq!(
        exchange(&socket, target, no_call_id.as_bytes(), SILENCE).await,
        None
    );
    // Broken SDP, broken header, CSeq out of range: 400.
    let bad_sdp = request(
        "INVITE",
        target,
        "a2",
        "Content-Type: application/sdp\r\n",
        "v=0\r\nm=audio x\r\n",
    );
    assert_eq!(
        exchange(&socket, target, bad_sdp.as_bytes(), ANSWER).await,
        Some(400)
    );
    let bad_header = request(
        "INVITE",
        target,
        "a3",
        "no colon here\r\nContent-Type: application/sdp\r\n",
        SDP,
    );
    assert_eq!(
        exchange(&socket, target, bad_header.as_bytes(), ANSWER).await,
        Some(400)
    );
    let big_cseq = request("OPTIONS", target, "a4", "", "")
        .replace("CSeq: 1 OPTIONS", "CSeq: 3000000000 OPTIONS");
    assert_eq!(
        exchange(&socket, target, big_cseq.as_bytes(), ANSWER).await,
        Some(400)
    );
    // Not for us: 404. REFER and REGISTER: 405. Unknown method: 501.
    let elsewhere = request("OPTIONS", target, "a5", "", "").replace(
        &format!("OPTIONS sip:100@{target}"),
        "OPTIONS sip:100@192.0.2.1",
    );
    assert_eq!(
        exchange(&socket, target, elsewhere.as_bytes(), ANSWER).await,
        Some(404)
    );
    let refer = request("REFER", target, "a6", "Refer-To: <sip:1@192.0.2.1>\r\n", "");
    assert_eq!(
        exchange(&socket, target, refer.as_bytes(), ANSWER).await,
        Some(405)
    );
    let register = request("REGISTER", target, "a7", "", "");
    assert_eq!(
        exchange(&socket, target, register.as_bytes(), ANSWER).await,
        Some(405)
    );
    let unknown = request("FROBNICATE", target, "a8", "", "");
    assert_eq!(
        exchange(&socket, target, unknown.as_bytes(), ANSWER).await,
        Some(501)
    );
    // A PBX keep-alive ping gets its pong.
    socket.send_to(b"\r\n\r\n", target).await.expect("send");
    let mut pong = [0u8; 16];
    let (n, _) = timeout(ANSWER, socket.recv_from(&mut pong))
        .await
        .expect("pong")
        .expect("recv");
    assert_eq!(&pong[..n], b"\r\n");

    // Still alive: OPTIONS gets 200.
    let options = request("OPTIONS", target, "a9", "", "");
    assert_eq!(
        exchange(&socket, target, options.as_bytes(), ANSWER).await,
        Some(200)
    );
    assert!(gw.calls.try_recv().is_err(), "nothing became a call");
    let stats = gw.endpoint.stats();
    assert!(stats.dropped >= 5, "{stats:?}");
    assert!(stats.stateless_replies >= 7, "{stats:?}");
}

#[tokio::test]
async fn strangers_get_403_for_invite_and_nothing_else() {
    let mut gw = start(config()).await;
    let target = gw.udp;
    let stranger = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let options = request("OPTIONS", target, "b1", "", "");
    assert_eq!(
        exchange(&stranger, target, options.as_bytes(), SILENCE).await,
        None
    );
    let invite = request(
        "INVITE",
        target,
        "b2",
        "Content-Type: application/sdp\r\n",
        SDP,
    );
    assert_eq!(
        exchange(&stranger, target, invite.as_bytes(), ANSWER).await,
        Some(403)
    );
    // Negative control: the same OPTIONS from the trunk's address is answered.
    let trunk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    assert_eq!(
        exchange(&trunk, target, options.as_bytes(), ANSWER).await,
        Some(200)
    );
    assert!(gw.calls.try_recv().is_err());

    // TCP from a stranger: the connection is closed before anything is read.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut tcp = socket.connect(gw.tcp).await.expect("connect");
    let _ = tcp.write_all(options.as_bytes()).await;
    let mut buf = [0u8; 64];
    let read = timeout(ANSWER, tcp.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "no answer: {read:?}");
}

async fn tcp_exchange(
    stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin),
    msg: &[u8],
) -> Option<u16> {
    stream.write_all(msg).await.ok()?;
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    loop {
        let n = timeout(ANSWER, stream.read(&mut buf[have..]))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        have += n;
        let text = String::from_utf8_lossy(&buf[..have]).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let status = status_of(text.as_bytes());
            if status == Some(100) {
                buf.copy_within(end + 4..have, 0);
                have -= end + 4;
                continue;
            }
            return status;
        }
    }
}

#[tokio::test]
async fn tcp_garbage_closes_only_that_connection() {
    let gw = start(config()).await;
    // Allowed peer, unframeable stream (bad Content-Length): closed.
    let mut bad = TcpStream::connect(gw.tcp).await.expect("connect");
    bad.write_all(b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nContent-Length: nope\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let read = timeout(ANSWER, bad.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Another connection works, with requests split across writes and pipelined.
    let mut good = TcpStream::connect(gw.tcp).await.expect("connect");
    let options = request("OPTIONS", gw.tcp, "c1", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let (a, b) = options.split_at(20);
    good.write_all(a.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(tcp_exchange(&mut good, b.as_bytes()).await, Some(200));
    let refer = request("REFER", gw.tcp, "c2", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    assert_eq!(tcp_exchange(&mut good, refer.as_bytes()).await, Some(405));
}

#[tokio::test]
async fn tls_listener_answers_options() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let mut cfg = config();
    cfg.tcp.clear();
    cfg.tls = vec!["127.0.0.1:0".parse().expect("addr")];
    cfg.tls_identity = Some(TlsIdentity {
        cert_chain_pem: cert.cert.pem().into_bytes(),
        key_pem: Zeroizing::new(cert.key_pair.serialize_pem().into_bytes()),
    });
    let (endpoint, _calls) = SipEndpoint::start(cfg).await.expect("starts");
    let addr = endpoint.local_addr(SipTransport::Tls).expect("tls bound");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = timeout(ANSWER, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let options = request("OPTIONS", addr, "d1", "", "").replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    assert_eq!(tcp_exchange(&mut tls, options.as_bytes()).await, Some(200));
}

#[tokio::test]
async fn configuration_errors() {
    let none = SipConfig {
        udp: vec![],
        ..SipConfig::default()
    };
    assert!(matches!(
        SipEndpoint::start(none).await,
        Err(SipError::NoListenAddress)
    ));
    let tls_without_cert = SipConfig {
        udp: vec![],
        tls: vec!["127.0.0.1:0".parse().expect("addr")],
        ..SipConfig::default()
    };
    assert!(matches!(
        SipEndpoint::start(tls_without_cert).await,
        Err(SipError::Config(_))
    ));
    let bad_pem = SipConfig {
        udp: vec![],
        tls: vec!["127.0.0.1:0".parse().expect("addr")],
        tls_identity: Some(TlsIdentity {
            cert_chain_pem: b"not pem".to_vec(),
            key_pem: Zeroizing::new(b"not pem".to_vec()),
        }),
        ..SipConfig::default()
    };
    assert!(matches!(
        SipEndpoint::start(bad_pem).await,
        Err(SipError::Tls(_))
    ));
    let mut zero = config();
    zero.limits.max_calls = 0;
    assert!(matches!(
        SipEndpoint::start(zero).await,
        Err(SipError::Config(_))
    ));
}

/// A node being taken out of service (`SipCallGate::refuse_new_calls`): a new INVITE is
/// answered 503, so that the trunk tries its next target, while the call in progress stays.
#[tokio::test]
async fn a_closed_call_gate_answers_new_calls_503_and_keeps_the_call_in_progress() {
    let mut gw = start(config()).await;
    let target = gw.udp;
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let invite = |branch: &str| {
        request(
            "INVITE",
            target,
            branch,
            "Content-Type: application/sdp\r\n",
            SDP,
        )
    };
    // Before: a new call reaches the application.
    socket
        .send_to(invite("g1").as_bytes(), target)
        .await
        .expect("send");
    let in_progress = sip_support::next_call(&mut gw.calls).await;
    let gate = gw.endpoint.call_gate();
    assert_eq!(gate.active_calls(), 1);

    gate.refuse_new_calls();
    socket
        .send_to(invite("g2").as_bytes(), target)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65_536];
    let answer = loop {
        let (n, _) = timeout(ANSWER, socket.recv_from(&mut buf))
            .await
            .expect("an answer in time")
            .expect("recv");
        if status_of(&buf[..n]) != Some(100) {
            break String::from_utf8_lossy(&buf[..n]).to_string();
        }
    };
    assert_eq!(status_of(answer.as_bytes()), Some(503), "{answer}");
    // The trunk acknowledges the refusal (with the To tag of the answer), which ends the
    // refused call's transaction.
    let to = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("To in the answer");
    let ack = request("ACK", target, "g2", "", "").replace(&format!("To: <sip:100@{target}>"), to);
    socket.send_to(ack.as_bytes(), target).await.expect("send");
    assert!(
        !matches!(timeout(SILENCE, gw.calls.recv()).await, Ok(Some(_))),
        "the refused call never reaches the application"
    );
    // The refused call's place is given back (at once, or when its transaction is done); the
    // call in progress keeps its own.
    let deadline = tokio::time::Instant::now() + ANSWER;
    while gate.active_calls() != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls in progress: {}",
            gate.active_calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(in_progress);
}
