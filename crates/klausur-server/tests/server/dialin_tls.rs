//! `klausur serve` with TLS and the dial-in gateway in the same process: the server's
//! certificate names its public host, not an address the gateway could dial, so the gateway
//! reaches the server over a plain listener on loopback. A sipp caller types number and PIN and
//! gets into the meeting and its encrypted group. The process makes no core dumps.

use std::process::Stdio;
use std::time::Duration;

use crate::dialin_calls::sipp;
use crate::process::{
    add_ada, base_cmd, dial_in_meeting, free_port, invite, start_until_listening,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gets_in_through_the_gateway_of_a_tls_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let cert =
        rcgen::generate_simple_self_signed(vec!["konferenz.example".to_string()]).expect("cert");
    std::fs::write(d.join("cert.pem"), cert.cert.pem()).expect("cert");
    std::fs::write(d.join("key.pem"), cert.key_pair.serialize_pem()).expect("key");
    let data = d.join("data");
    let data_s = data.to_str().expect("path").to_string();
    add_ada(&data);
    let m = dial_in_meeting(&data, None);
    let number = m["dial_in"]["meeting_number"]
        .as_str()
        .expect("number")
        .to_string();
    let id = m["id"].as_str().expect("id").to_string();
    let inv = invite(&data, None, &id, "Erika Musterfrau");
    let pin = inv["phone_pin"].as_str().expect("pin").to_string();

    let sip_port = sipp::free_udp_port();
    let log_path = d.join("server.log");
    let mut server = base_cmd();
    server
        .args(["--data-dir", &data_s, "serve", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--media-listen")
        .arg("127.0.0.1:0")
        .arg("--tls-cert")
        .arg(d.join("cert.pem"))
        .arg("--tls-key")
        .arg(d.join("key.pem"))
        .arg("--sip-listen")
        .arg(format!("127.0.0.1:{sip_port}"))
        .stderr(Stdio::from(std::fs::File::create(&log_path).expect("log")));
    let (srv, lines) = start_until_listening(server);
    assert!(
        lines.iter().any(|l| l.contains("listening on https://")),
        "{lines:?}"
    );

    // Decrypted telephone audio passes through this process: it makes no core dumps.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.0.id())).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit");
    assert!(
        core.split_whitespace().skip(4).take(2).all(|v| v == "0"),
        "core dumps are not off: {core}"
    );

    let call = sipp::start(
        &sipp::Call {
            keys: format!("{number}#{pin}#"),
            audio: true,
            stay: Duration::from_secs(6),
            end: sipp::End::CallerHangsUp,
            caller: "+4930123456789".into(),
        },
        format!("127.0.0.1:{sip_port}").parse().expect("addr"),
        "127.0.0.1",
        &d.join("sipp"),
    );
    let (code, trace) = tokio::task::spawn_blocking(move || call.wait(Duration::from_secs(90)))
        .await
        .expect("sipp");
    drop(srv);
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert_eq!(code, Some(0), "{trace}\n{log}");
    assert!(
        log.contains("in the meeting") && log.contains("in the encrypted group"),
        "the caller did not get into the meeting and its group: {log}"
    );
}
