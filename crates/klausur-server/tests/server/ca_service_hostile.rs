//! The separate identity CA service (`klausur identity-ca serve`) facing callers without its
//! token (issue 19, "Other defects"): a burst of unauthenticated requests is refused one by one
//! (401) but written to the log a bounded number of times, not once per request; and a
//! connection whose request headers never complete is closed after the header-read timeout.
//!
//! Negative controls: the first refusal is logged; a complete request on a connection of its
//! own is answered; a half-sent connection is still open shortly after it was opened (so it is
//! the timeout that closes it).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use klausur_server::ca_service::HEADER_READ_TIMEOUT;

use crate::common::{tcp_timeout, wait_closed};
use crate::process::{ca_cmd, free_port, init_ca, start};

const REFUSAL_LINE: &str = "request without a valid token refused";

#[tokio::test]
async fn unauthenticated_bursts_are_refused_without_flooding_the_log() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let key_file = d.join("identity-ca.key");
    let token_file = d.join("ca.token");
    init_ca(&key_file, &token_file);
    let port = free_port();
    let log = d.join("ca.log");
    let (_ca, _) = start(ca_cmd(&key_file, port, &token_file), &log);
    let url = format!("http://127.0.0.1:{port}/issue");
    let http = reqwest::Client::new();

    let burst = 300;
    let requests = (0..burst).map(|i| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let req = http.post(url).json(&serde_json::json!({}));
            // Half without a token, half with a wrong one.
            let req = if i % 2 == 0 {
                req
            } else {
                req.bearer_auth("x".repeat(43))
            };
            req.send().await.expect("request").status().as_u16()
        }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");

    // Let the log reach the file.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    let lines = text.lines().filter(|l| l.contains(REFUSAL_LINE)).count();
    assert!(lines >= 1, "the first refusal is logged: {text}");
    assert!(
        lines <= 2,
        "{burst} refusals wrote {lines} log lines, not one or two: {text}"
    );
    // The token itself never appears.
    let token = std::fs::read_to_string(&token_file).expect("token");
    assert!(!text.contains(token.trim()), "{text}");
}

#[test]
fn half_sent_headers_are_closed_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let key_file = d.join("identity-ca.key");
    let token_file = d.join("ca.token");
    init_ca(&key_file, &token_file);
    let port = free_port();
    let (_ca, _) = start(ca_cmd(&key_file, port, &token_file), &d.join("ca.log"));

    // Headers begun and never finished, and a connection that sends nothing at all.
    let mut half = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    half.write_all(b"GET /public-key HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("write");
    let mut silent = TcpStream::connect(("127.0.0.1", port)).expect("connect");

    // Negative control: a complete request on another connection is answered.
    let mut whole = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    whole
        .write_all(b"GET /public-key HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    whole.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Negative control: the half-sent connection is not closed at once.
    let early = wait_closed(&mut half, Duration::from_millis(1000), tcp_timeout);
    assert!(
        early.as_ref().is_err_and(|e| e.starts_with("still open")),
        "{early:?}"
    );
    let limit = HEADER_READ_TIMEOUT + Duration::from_secs(10);
    let closed = wait_closed(&mut half, limit, tcp_timeout).expect("half-sent headers");
    assert!(closed <= limit, "{closed:?}");
    wait_closed(&mut silent, limit, tcp_timeout).expect("a connection that sends nothing");
}
