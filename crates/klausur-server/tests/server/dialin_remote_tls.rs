//! `klausur sip-gateway` on a host of its own, for a `klausur serve` with TLS whose certificate
//! comes from the city's own CA (not one of the web roots): with `--ca-file` naming that CA the
//! gateway reaches the server over HTTPS and the meeting WebSocket over `wss://`, and a sipp
//! caller who types the meeting number and PIN gets into the meeting and its encrypted group.
//! The same gateway without `--ca-file` does not trust the server: the caller is not admitted,
//! the gateway hangs up and its log says why. A `--ca-file` (or `[dialin] server_ca_file`) that
//! cannot be used stops `klausur sip-gateway` at start with a message naming the file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::dialin_calls::sipp;
use crate::process::{
    add_ada, base_cmd, dial_in_meeting, free_port, init_token, invite, run, start,
    start_until_listening, Proc,
};

/// How long a caller may take to get into the meeting and its group (the machine may be busy).
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

/// The city's own root CA (`ca.pem`) and the server's certificate it issued for `localhost`
/// and 127.0.0.1 (`cert.pem`, `key.pem`), in `dir`.
fn city_pki(dir: &Path) {
    let pki = klausur_testbed::pki::issue(dir, "city").unwrap_or_else(|e| panic!("{e}"));
    for (from, to) in [
        (pki.ca, "ca.pem"),
        (pki.cert, "cert.pem"),
        (pki.key, "key.pem"),
    ] {
        std::fs::rename(from, dir.join(to)).expect("rename");
    }
}

/// `klausur sip-gateway` for `server` with the token file `token`, listening for SIP on
/// `127.0.0.1:<sip_port>`, trusting `ca_file` if given; started (it said it listens), its
/// stderr in `log`.
fn gateway(server: &str, token: &Path, ca_file: Option<&Path>, sip_port: u16, log: &Path) -> Proc {
    let mut cmd = base_cmd();
    cmd.args(["sip-gateway", "--server", server, "--token-file"])
        .arg(token)
        .args(["--sip-listen", &format!("127.0.0.1:{sip_port}")]);
    if let Some(f) = ca_file {
        cmd.arg("--ca-file").arg(f);
    }
    start(cmd, log).0
}

/// Waits until the file `log` contains every one of `needles` (true), or `limit` passed.
fn wait_for_log(log: &Path, needles: &[&str], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if needles.iter().all(|n| text.contains(n)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a test needs of the running server.
struct Rig {
    dir: tempfile::TempDir,
    base: String,
    number: String,
    pin: String,
    token_file: PathBuf,
    token: String,
    server_log: PathBuf,
    _server: Proc,
}

/// The city's PKI, a meeting with dial-in (internal profile) and an invitation with a PIN, and
/// `klausur serve` with TLS (the city CA's certificate) that expects a remote gateway's token.
fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    city_pki(d);
    let data = d.join("data");
    add_ada(&data);
    let m = dial_in_meeting(&data, None);
    let number = m["dial_in"]["meeting_number"]
        .as_str()
        .expect("number")
        .to_string();
    let id = m["id"].as_str().expect("id").to_string();
    let inv = invite(&data, None, &id, "Erika Musterfrau");
    let pin = inv["phone_pin"].as_str().expect("pin").to_string();

    let token_file = d.join("gateway.token");
    let token = init_token(&token_file);
    let config = d.join("klausur.toml");
    std::fs::write(
        &config,
        format!(
            "[dialin]\ngateway_token_file = {:?}\n",
            token_file.to_str().expect("path")
        ),
    )
    .expect("config");
    let port = free_port();
    let server_log = d.join("server.log");
    let mut server = base_cmd();
    server
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--media-listen")
        .arg("127.0.0.1:0")
        .arg("--tls-cert")
        .arg(d.join("cert.pem"))
        .arg("--tls-key")
        .arg(d.join("key.pem"))
        .stderr(Stdio::from(
            std::fs::File::create(&server_log).expect("log"),
        ));
    let (server, lines) = start_until_listening(server);
    assert!(
        lines.iter().any(|l| l.contains("listening on https://")),
        "{lines:?}"
    );
    Rig {
        base: format!("https://127.0.0.1:{port}"),
        number,
        pin,
        token_file,
        token,
        server_log,
        _server: server,
        dir,
    }
}

/// A caller who types the meeting number and PIN, then stays up to `stay` (or until the
/// gateway hangs up, with `end`).
fn caller(r: &Rig, sip_port: u16, end: sipp::End, stay: Duration, name: &str) -> sipp::Sipp {
    sipp::start(
        &sipp::Call {
            keys: format!("{}#{}#", r.number, r.pin),
            audio: false,
            stay,
            end,
            caller: "+4930123456789".into(),
        },
        format!("127.0.0.1:{sip_port}").parse().expect("addr"),
        "127.0.0.1",
        &r.dir.path().join(name),
    )
}

/// The gateway's log holds neither the PIN, nor the caller's number, nor the token.
fn assert_no_secrets(r: &Rig, log: &str) {
    for secret in [r.pin.as_str(), "30123456789", r.token.as_str()] {
        assert!(
            !log.contains(secret),
            "the gateway's log holds a secret: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_gateway_trusts_the_city_ca_of_a_tls_server_only_with_ca_file() {
    let r = rig();
    let d = r.dir.path();

    // Negative control: without --ca-file the gateway trusts the web roots only, not the
    // city's CA. The caller is not admitted: the gateway says so and hangs up.
    let sip_plain = sipp::free_udp_port();
    let plain_log = d.join("gateway-plain.log");
    let plain = gateway(&r.base, &r.token_file, None, sip_plain, &plain_log);
    let call = caller(
        &r,
        sip_plain,
        sipp::End::GatewayHangsUp,
        Duration::from_secs(90),
        "sipp-plain",
    );
    let (code, trace) = tokio::task::spawn_blocking(move || call.wait(Duration::from_secs(180)))
        .await
        .expect("sipp");
    drop(plain);
    let log = std::fs::read_to_string(&plain_log).expect("log");
    assert_eq!(code, Some(0), "the gateway did not hang up: {trace}\n{log}");
    assert!(
        log.contains("the dial-in API failed") && log.contains("UnknownIssuer"),
        "the gateway does not say that it cannot trust the server: {log}"
    );
    assert!(log.contains("ending (TechnicalError)"), "{log}");
    assert!(!log.contains("joining the meeting"), "{log}");
    assert_no_secrets(&r, &log);
    let server_log = std::fs::read_to_string(&r.server_log).expect("log");
    assert!(
        !server_log.contains("dial-in call admitted"),
        "the server admitted a call it never checked: {server_log}"
    );

    // With --ca-file: the dial-in API over HTTPS, the credential over HTTPS and the meeting
    // WebSocket over wss:// all trust the city's CA. The caller stays until the gateway's
    // client is in the meeting and its encrypted group.
    let sip_port = sipp::free_udp_port();
    let gw_log = d.join("gateway.log");
    let gw = gateway(
        &r.base,
        &r.token_file,
        Some(&d.join("ca.pem")),
        sip_port,
        &gw_log,
    );
    let call = caller(
        &r,
        sip_port,
        sipp::End::CallerHangsUp,
        JOIN_DEADLINE + Duration::from_secs(60),
        "sipp",
    );
    let log_path = gw_log.clone();
    let joined = tokio::task::spawn_blocking(move || {
        wait_for_log(
            &log_path,
            &["in the meeting", "in the encrypted group"],
            JOIN_DEADLINE,
        )
    })
    .await
    .expect("wait");
    drop(call);
    drop(gw);
    let log = std::fs::read_to_string(&gw_log).expect("log");
    let server_log = std::fs::read_to_string(&r.server_log).expect("log");
    assert!(
        joined,
        "the caller did not get into the meeting and its group: {log}\n{server_log}"
    );
    assert!(!log.contains("the dial-in API failed"), "{log}");
    assert!(server_log.contains("dial-in call admitted"), "{server_log}");
    assert_no_secrets(&r, &log);
}

#[test]
fn a_ca_file_that_cannot_be_used_stops_the_gateway_and_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let token = d.join("gateway.token");
    init_token(&token);
    let token = token.to_str().expect("path");
    let sip = format!("127.0.0.1:{}", sipp::free_udp_port());
    let not_pem = d.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "this is no certificate\n").expect("write");
    let missing = d.join("missing-city-ca.pem");
    for (file, needle) in [(&missing, "cannot read"), (&not_pem, "no certificate")] {
        let file = file.to_str().expect("path");
        let (ok, _, err) = run(
            &[
                "sip-gateway",
                "--server",
                "https://127.0.0.1:9",
                "--token-file",
                token,
                "--ca-file",
                file,
                "--sip-listen",
                &sip,
            ],
            None,
        );
        assert!(!ok, "started with --ca-file {file}");
        assert!(
            err.contains("--ca-file") && err.contains(file) && err.contains(needle),
            "{err}"
        );
    }

    // The same from the configuration file: a file that is missing is refused when the
    // configuration is read, one without a certificate when the gateway starts.
    for (file, needle) in [
        (&missing, "dialin.server_ca_file"),
        (&not_pem, "[dialin] server_ca_file"),
    ] {
        let config = d.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[dialin]\nserver_ca_file = {:?}\n",
                file.to_str().expect("path")
            ),
        )
        .expect("config");
        let (ok, _, err) = run(
            &[
                "--config",
                config.to_str().expect("path"),
                "sip-gateway",
                "--server",
                "https://127.0.0.1:9",
                "--token-file",
                token,
                "--sip-listen",
                &sip,
            ],
            None,
        );
        assert!(!ok, "started with server_ca_file {}", file.display());
        assert!(
            err.contains(needle) && err.contains(file.to_str().expect("path")),
            "{err}"
        );
    }
}
