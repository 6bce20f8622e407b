//! Dial-in with the `klausur` binary as an operator runs it: `meeting create --dial-in --json`
//! and `invite create --json` print the number and the PIN, the database holds no PIN in the
//! clear, and a server configured for a remote gateway (`[dialin] gateway_token_file`) with a
//! remote identity CA admits a call and has the caller's credential issued by that CA.
//! `klausur sip-gateway` runs on its own and admits a caller (sipp), and says what is missing.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use klausur_e2ee::{ParticipantKind, SignedCredential, SigningKey};
use serde_json::{json, Value};

use crate::dialin_calls::sipp;
use crate::metrics::until_metric;
use crate::process::{
    add_ada, assert_owner_only, base_cmd, ca_cmd, dial_in_meeting, files_under, free_port, init_ca,
    init_token, invite, json, run, serve_cmd, start,
};

fn eight_digits(v: &Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(
        s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()),
        "not 8 digits: {s}"
    );
    s.to_string()
}

/// Whether any file of the database (`klausur.sqlite3` with its WAL) contains `needle`.
fn in_database(data: &Path, needle: &[u8]) -> bool {
    files_under(data)
        .iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("klausur.sqlite3"))
        })
        .any(|p| {
            std::fs::read(p)
                .expect("read")
                .windows(needle.len())
                .any(|w| w == needle)
        })
}

#[test]
fn the_cli_prints_number_and_pin_and_the_database_holds_no_pin() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    add_ada(&data);
    let m = dial_in_meeting(&data, None);
    let number = eight_digits(&m["dial_in"]["meeting_number"]);
    assert_eq!(m["dial_in"]["allowed"], true);
    assert_eq!(m["dial_in"]["phone_number"], Value::Null);
    let meeting_id = m["id"].as_str().expect("id").to_string();

    let inv = invite(&data, None, &meeting_id, "Erika Musterfrau");
    let pin = eight_digits(&inv["phone_pin"]);
    assert!(inv["token"].as_str().expect("token").len() >= 43);
    let inv2 = invite(&data, None, &meeting_id, "Max Mustermann");
    assert_ne!(eight_digits(&inv2["phone_pin"]), pin);
    // Without --json the operator reads the PIN too.
    let (ok, out, err) = run(
        &[
            "--data-dir",
            data.to_str().expect("path"),
            "invite",
            "create",
            &meeting_id,
            "--name",
            "Olaf Ohnejson",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains(&number) && out.contains("PIN"), "{out}");

    // Listed with its number; a meeting without dial-in has none, nor PINs.
    let list = json(&data, None, &["meeting", "list"]);
    assert_eq!(list[0]["dial_in"]["meeting_number"], number.as_str());
    let plain = json(
        &data,
        None,
        &["meeting", "create", "Ohne Telefon", "--organiser", "ada"],
    );
    assert_eq!(plain["dial_in"], Value::Null);
    let plain_inv = invite(
        &data,
        None,
        plain["id"].as_str().expect("id"),
        "Erika Musterfrau",
    );
    assert_eq!(plain_inv["phone_pin"], Value::Null);
    // The strict profile: a number, but calls are not allowed.
    let strict = json(
        &data,
        None,
        &[
            "meeting",
            "create",
            "Streng",
            "--organiser",
            "ada",
            "--dial-in",
        ],
    );
    eight_digits(&strict["dial_in"]["meeting_number"]);
    assert_eq!(strict["dial_in"]["allowed"], false);

    // The PIN key: 32 bytes, mode 0600, in the data directory.
    let key_file = data.join("dialin-pin.key");
    assert_eq!(std::fs::read(&key_file).expect("key file").len(), 32);
    assert_owner_only(&key_file);

    // The database holds the PIN's keyed hash, never the PIN.
    assert!(
        in_database(&data, "Erika Musterfrau".as_bytes()),
        "negative control: the search finds the invitee's name"
    );
    let key = klausur_server::dialin::PinKey::load(&key_file).expect("key");
    assert!(
        in_database(&data, key.pin_hash(&meeting_id, &pin).as_bytes()),
        "the PIN's hash is stored"
    );
    assert!(
        !in_database(&data, pin.as_bytes()),
        "the PIN is in the database"
    );
    assert!(!in_database(&data, &std::fs::read(&key_file).expect("key")));
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

#[tokio::test]
async fn a_remote_gateway_is_admitted_and_its_caller_credentialed_by_the_remote_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    // The CA on its own.
    let key_file = d.join("identity-ca.key");
    let ca_token = d.join("ca.token");
    let pk_hex = init_ca(&key_file, &ca_token);
    let ca_port = free_port();
    let (_ca, _) = start(ca_cmd(&key_file, ca_port, &ca_token), &d.join("ca.log"));

    // The server: a remote CA and a remote gateway's token.
    let gateway_token = d.join("gateway.token");
    let token = init_token(&gateway_token);
    let config = d.join("klausur.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\nremote_url = \"http://127.0.0.1:{ca_port}\"\nremote_token_file = {:?}\n\
             [dialin]\nphone_number = \"+49 30 9999 0000\"\ngateway_token_file = {:?}\n",
            ca_token.to_str().expect("path"),
            gateway_token.to_str().expect("path"),
        ),
    )
    .expect("config");
    let (ok, _, err) = run(&["check-config", config.to_str().expect("path")], None);
    assert!(ok, "{err}");
    let data = d.join("data");
    add_ada(&data);
    let m = dial_in_meeting(&data, Some(&config));
    assert_eq!(m["dial_in"]["phone_number"], "+49 30 9999 0000");
    let number = eight_digits(&m["dial_in"]["meeting_number"]);
    let meeting_id = m["id"].as_str().expect("id").to_string();
    let inv = invite(&data, Some(&config), &meeting_id, "Erika Musterfrau");
    let pin = eight_digits(&inv["phone_pin"]);

    let port = free_port();
    let sip_port = free_port();
    let mut server = serve_cmd(&data, port);
    server
        .arg("--config")
        .arg(&config)
        .args(["--sip-listen", &format!("127.0.0.1:{sip_port}")]);
    let server_log = d.join("server.log");
    let (srv, _) = start(server, &server_log);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let call = |token: String, pin: String| {
        let http = http.clone();
        let url = format!("{base}/api/dialin/calls");
        let number = number.clone();
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"meeting_number": number, "pin": pin,
                              "caller": "+49 170 1234567", "source": "192.0.2.1:5060"}))
                .send()
                .await
                .expect("call")
        }
    };
    assert_eq!(call("x".repeat(43), pin.clone()).await.status(), 401);
    let resp = call(token.clone(), pin.clone()).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["result"], "admit", "{v}");
    assert_eq!(v["invitee"], "Erika Musterfrau");
    let ticket = v["ticket"].as_str().expect("ticket").to_string();

    let device = SigningKey::from_bytes(&[6; 32]).verifying_key();
    let resp = http
        .post(format!("{base}/api/identity/credential"))
        .bearer_auth(&token)
        .json(&json!({"device_key": hex::encode(device.to_bytes()), "dial_in_ticket": ticket}))
        .send()
        .await
        .expect("credential");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["ca_public_key"], pk_hex.as_str());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["credential"].as_str().expect("credential"))
        .expect("base64");
    let sc = SignedCredential::from_bytes(&bytes).expect("decode");
    let ca_public = klausur_server::identity::load_key_file(&key_file)
        .expect("key")
        .public_key();
    sc.verify(&ca_public, now()).expect("verifies");
    assert_eq!(sc.credential.kind, ParticipantKind::PhoneGateway);
    assert_eq!(
        sc.credential.user_id,
        format!("invitation:{}", inv["id"].as_i64().expect("id"))
    );
    assert_eq!(sc.credential.display_name, "Erika Musterfrau");
    // `klausur sip-gateway` on its own host (here: its own process): a caller through it types
    // the number and PIN, is admitted by the server and joins the meeting.
    let gw_sip = sipp::free_udp_port();
    // ... with its own monitoring endpoint.
    let metrics_port = free_port();
    let metrics_base = format!("http://127.0.0.1:{metrics_port}");
    let metrics_token = "the-gateway-scrape-token-0123456789abcdef";
    let mut gw = base_cmd();
    gw.args([
        "sip-gateway",
        "--server",
        &base,
        "--token-file",
        gateway_token.to_str().expect("path"),
        "--sip-listen",
        &format!("127.0.0.1:{gw_sip}"),
        "--metrics-listen",
        &format!("127.0.0.1:{metrics_port}"),
    ])
    .env(
        "KLAUSUR_METRICS_TOKEN_FILE",
        crate::metrics::token_file(d, metrics_token),
    );
    let gateway_log = d.join("gateway.log");
    let (gateway, _) = start(gw, &gateway_log);
    let gateway_metric =
        |series: &'static str| crate::metrics::metric(&metrics_base, metrics_token, series);
    assert_eq!(
        gateway_metric("klausur_dialin_calls_active").await,
        Some(0.0)
    );
    let refused = reqwest::Client::new()
        .get(format!("{metrics_base}/metrics"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(refused.status(), 401);
    let caller = sipp::start(
        &sipp::Call {
            keys: format!("{number}#{pin}#"),
            audio: false,
            stay: std::time::Duration::from_secs(4),
            end: sipp::End::CallerHangsUp,
            caller: "+4917012345678".into(),
        },
        format!("127.0.0.1:{gw_sip}").parse().expect("addr"),
        "127.0.0.1",
        &d.join("sipp"),
    );
    // The call shows in the gateway's monitoring while it lasts.
    let active = "klausur_dialin_calls_active";
    until_metric(&metrics_base, metrics_token, active, 1.0, "the call shows").await;
    let (code, trace) =
        tokio::task::spawn_blocking(move || caller.wait(std::time::Duration::from_secs(90)))
            .await
            .expect("sipp");
    assert_eq!(code, Some(0), "{trace}");
    until_metric(&metrics_base, metrics_token, active, 0.0, "the call ends").await;
    assert_eq!(
        gateway_metric("klausur_dialin_calls_answered_total").await,
        Some(1.0)
    );
    assert_eq!(
        gateway_metric("klausur_metrics_refused_scrapes_total").await,
        Some(1.0)
    );
    drop(gateway);
    let glog = std::fs::read_to_string(&gateway_log).expect("gateway log");
    assert!(
        glog.contains("joining the meeting"),
        "the remote gateway's caller did not join: {glog}"
    );
    for secret in [pin.as_str(), "12345678", token.as_str()] {
        assert!(
            !glog.contains(secret),
            "the gateway's log holds a secret: {glog}"
        );
    }
    drop(srv);

    // The server's log: no PIN, no caller number, no ticket, no token.
    let log = std::fs::read_to_string(&server_log).expect("log");
    assert!(log.contains("dial-in call admitted"), "{log}");
    for secret in [&pin, "1701234567", "1234567", &ticket, &token, &number] {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }

    // `klausur sip-gateway`: what is missing or unsafe is refused.
    let (ok, _, err) = run(&["sip-gateway", "--server", &base], None);
    assert!(!ok);
    assert!(err.contains("--token-file"), "{err}");
    let (ok, _, err) = run(
        &[
            "sip-gateway",
            "--server",
            "http://192.0.2.1:8080",
            "--token-file",
            gateway_token.to_str().expect("path"),
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("in clear"), "{err}");
    let (ok, _, err) = run(
        &[
            "sip-gateway",
            "--server",
            &base,
            "--token-file",
            gateway_token.to_str().expect("path"),
            "--sip-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert!(!ok);
    assert!(err.contains("[metrics] token_file"), "{err}");
}

#[test]
fn check_config_names_bad_dialin_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    for (text, key) in [
        ("[dialin]\nudp = [\"nope\"]\n", "dialin.udp"),
        ("[dialin]\nallow = [\"everyone\"]\n", "dialin.allow"),
        ("[dialin]\nlanguage = \"fr\"\n", "dialin.language"),
        (
            "[dialin]\ngateway_token_file = \"/nonexistent/t\"\n",
            "dialin.gateway_token_file",
        ),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).expect("write");
        let (ok, _, err) = run(&["check-config", file.to_str().expect("path")], None);
        assert!(!ok, "{text}");
        assert!(err.contains(key), "{text}: {err}");
    }
}
