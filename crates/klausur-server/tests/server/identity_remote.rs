//! The identity CA run apart from the media server, as an operator runs it: `klausur identity-ca
//! serve` as one child process on a loopback port, `klausur serve` with `[identity] remote_url`
//! as another. A staff credential obtained over HTTP from the server verifies against the public
//! key of the CA's key file; the server's data directory holds no CA key; the CA logs the
//! issuance without the device key or the token.
//!
//! Negative controls: a wrong token is a 401 at the CA and a 502 `ca_unavailable` at the server;
//! a server whose CA cannot be reached does not start; the CA refuses plain HTTP on a public
//! address.
//!
//! Over TLS (the CA with `--tls-cert`/`--tls-key`, the server with `identity.remote_tls_ca_cert`):
//! the server starts and gets credentials issued; without that root, or with another one, it
//! does not start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use klausur_e2ee::{ParticipantKind, SignedCredential, SigningKey};
use serde_json::json;

use crate::process::{
    add_ada, assert_owner_only, base_cmd, ca_cmd, ca_init_token, files_under, free_port, init_ca,
    init_token, run, serve_cmd, start, Proc, PASSWORD,
};

/// Runs `cmd` expecting it to exit (with failure) within 30 s; returns its stderr.
fn expect_exit_failure(mut cmd: Command, log: &Path) -> String {
    let file = std::fs::File::create(log).expect("log file");
    cmd.stdout(Stdio::null()).stderr(Stdio::from(file));
    let mut proc = Proc(cmd.spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.0.try_wait().expect("wait") {
            assert!(!status.success(), "exited successfully");
            return std::fs::read_to_string(log).expect("log");
        }
        assert!(Instant::now() < deadline, "still running after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn server_cmd(data: &Path, config: &Path, port: u16) -> Command {
    let mut cmd = serve_cmd(data, port);
    cmd.arg("--config").arg(config);
    cmd
}

fn remote_config(dir: &Path, name: &str, ca_port: u16, token_file: &Path) -> PathBuf {
    let config = dir.join(name);
    std::fs::write(
        &config,
        format!(
            "[identity]\nremote_url = \"http://127.0.0.1:{ca_port}\"\nremote_token_file = {:?}\n",
            token_file.to_str().expect("utf-8 path")
        ),
    )
    .expect("config");
    config
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

async fn login(base: &str) -> (reqwest::Client, String) {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let resp = client
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200, "login");
    let v: serde_json::Value = resp.json().await.expect("json");
    (client, v["csrf_token"].as_str().expect("csrf").to_string())
}

/// The credential of an issuance response (`{"credential": base64, ...}`), decoded.
fn decode_credential(v: &serde_json::Value) -> SignedCredential {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["credential"].as_str().expect("credential"))
        .expect("base64");
    SignedCredential::from_bytes(&bytes).expect("decode")
}

/// Logs in as ada at the server `base` and has a credential issued for `device`: the response
/// (200) and its credential.
async fn staff_credential(
    base: &str,
    device: &klausur_e2ee::VerifyingKey,
) -> (serde_json::Value, SignedCredential) {
    let (client, csrf) = login(base).await;
    let resp = client
        .post(format!("{base}/api/identity/credential"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"device_key": hex::encode(device.to_bytes())}))
        .send()
        .await
        .expect("credential");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("json");
    let sc = decode_credential(&v);
    (v, sc)
}

#[tokio::test]
async fn the_server_issues_through_a_remote_ca_and_holds_no_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let ca_dir = d.join("ca");
    let key_file = ca_dir.join("identity-ca.key");
    let ca_token = ca_dir.join("ca.token");

    // The CA's host: key and token, both mode 0600.
    let pk_hex = init_ca(&key_file, &ca_token);
    let token = std::fs::read_to_string(&ca_token).expect("token");
    let token = token.trim().to_string();
    assert!(token.len() >= 32, "{token}");
    assert_owner_only(&ca_token);
    // The CA key's public key, read from the key file itself.
    let ca_public = klausur_server::identity::load_key_file(&key_file)
        .expect("key file")
        .public_key();
    assert_eq!(hex::encode(ca_public.to_bytes()), pk_hex);

    let ca_port = free_port();
    let ca_log = d.join("ca.log");
    let (ca, lines) = start(ca_cmd(&key_file, ca_port, &ca_token), &ca_log);
    assert!(lines.iter().any(|l| l.contains(&pk_hex)), "{lines:?}");
    let ca_base = format!("http://127.0.0.1:{ca_port}");
    let http = reqwest::Client::new();

    // The CA service on its own.
    let v: serde_json::Value = http
        .get(format!("{ca_base}/public-key"))
        .send()
        .await
        .expect("public key")
        .json()
        .await
        .expect("json");
    assert_eq!(v["public_key"], pk_hex.as_str());
    let device = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let device_hex = hex::encode(device.to_bytes());
    let good = json!({
        "user_id": "gateway:1", "display_name": "Telefon", "kind": "phone_gateway",
        "device_key": device_hex, "valid_minutes": 30,
    });
    let resp = http
        .post(format!("{ca_base}/issue"))
        .json(&good)
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 401, "no token");
    let resp = http
        .post(format!("{ca_base}/issue"))
        .bearer_auth("x".repeat(43))
        .json(&good)
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 401, "wrong token");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "unauthorized");
    let mut bad = good.clone();
    bad["device_key"] = json!("abcd");
    let resp = http
        .post(format!("{ca_base}/issue"))
        .bearer_auth(&token)
        .json(&bad)
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 400);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("device_key"),
        "{v}"
    );
    let resp = http
        .post(format!("{ca_base}/issue"))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 400);
    let resp = http
        .post(format!("{ca_base}/issue"))
        .bearer_auth(&token)
        .body("x".repeat(20_000))
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.expect("json error");
    assert_eq!(v["error"]["code"], "malformed");
    let resp = http
        .post(format!("{ca_base}/issue"))
        .bearer_auth(&token)
        .json(&good)
        .send()
        .await
        .expect("issue");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("json");
    let sc = decode_credential(&v);
    sc.verify(&ca_public, now()).expect("verifies");
    assert_eq!(sc.credential.kind, ParticipantKind::PhoneGateway);
    assert_eq!(
        v["not_after_ms"].as_u64(),
        Some(sc.credential.not_after * 1000)
    );

    // The media server's host: an account, the token (its own copy), the configuration.
    let data = d.join("data");
    add_ada(&data);
    let server_token = d.join("server.token");
    std::fs::copy(&ca_token, &server_token).expect("copy token");
    let config = remote_config(d, "klausur.toml", ca_port, &server_token);
    let port = free_port();
    let (server, lines) = start(server_cmd(&data, &config, port), &d.join("server.log"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("holds no CA key") && l.contains(&pk_hex)),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains("created identity CA key")));
    let base = format!("http://127.0.0.1:{port}");

    let v: serde_json::Value = reqwest::get(format!("{base}/api/identity/ca"))
        .await
        .expect("ca")
        .json()
        .await
        .expect("json");
    assert_eq!(v["public_key"], pk_hex.as_str());

    let staff_device = SigningKey::from_bytes(&[4; 32]).verifying_key();
    let (v, sc) = staff_credential(&base, &staff_device).await;
    assert_eq!(v["ca_public_key"], pk_hex.as_str());
    sc.verify(&ca_public, now())
        .expect("verifies against the key file's public key");
    assert_eq!(sc.credential.kind, ParticipantKind::Staff);
    assert!(
        sc.credential.user_id.starts_with("user:"),
        "{}",
        sc.credential.user_id
    );
    assert_eq!(sc.credential.display_name, "Ada L");
    assert_eq!(sc.credential.device_public_key, staff_device.to_bytes());
    let left = sc.credential.not_after as i64 - now().as_secs() as i64;
    assert!((3590..=3610).contains(&left), "valid for {left} s");
    // Negative control: another key does not verify it.
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    assert!(sc.verify(&other, now()).is_err());

    // No CA key anywhere in the server's data directory.
    assert!(!data.join("identity-ca.key").exists());
    for f in files_under(&data) {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes
                .windows(b"klausur-identity-ca-v1".len())
                .any(|w| w == b"klausur-identity-ca-v1"),
            "{} looks like a CA key file",
            f.display()
        );
    }
    drop(server);

    // Negative control: a server with a wrong token starts (the public key is public) but gets
    // no credential: the CA answers 401, the server 502 `ca_unavailable`.
    let wrong_token = d.join("wrong.token");
    init_token(&wrong_token);
    let config = remote_config(d, "wrong.toml", ca_port, &wrong_token);
    let port = free_port();
    let (server, _) = start(server_cmd(&data, &config, port), &d.join("server2.log"));
    let base = format!("http://127.0.0.1:{port}");
    let (client, csrf) = login(&base).await;
    let resp = client
        .post(format!("{base}/api/identity/credential"))
        .header("x-csrf-token", &csrf)
        .json(&json!({"device_key": hex::encode(staff_device.to_bytes())}))
        .send()
        .await
        .expect("credential");
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "ca_unavailable");
    let message = v["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("identity CA") && message.contains("401"),
        "{message}"
    );
    drop(server);
    drop(ca);

    // The CA's log: every issuance with kind and user id, never the device key or the token.
    let log = std::fs::read_to_string(&ca_log).expect("ca log");
    let issued: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("credential issued"))
        .collect();
    assert_eq!(issued.len(), 2, "{log}");
    assert!(
        issued[0].contains("phone_gateway") && issued[0].contains("gateway:1"),
        "{log}"
    );
    assert!(
        issued[1].contains("staff") && issued[1].contains(&sc.credential.user_id),
        "{log}"
    );
    assert!(log.contains("without a valid token"), "{log}");
    let wrong = std::fs::read_to_string(&wrong_token).expect("token");
    for secret in [
        token.as_str(),
        wrong.trim(),
        device_hex.as_str(),
        &hex::encode(staff_device.to_bytes()),
    ] {
        assert!(!log.contains(secret), "the CA log contains a secret: {log}");
    }
    // Negative control for that search: the public key is in the log.
    assert!(log.contains(&pk_hex), "{log}");
}

#[test]
fn a_server_whose_ca_is_unreachable_does_not_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let token = d.join("t.token");
    init_token(&token);
    // Nothing listens on this port.
    let config = remote_config(d, "klausur.toml", free_port(), &token);
    let data = d.join("data");
    let err = expect_exit_failure(server_cmd(&data, &config, free_port()), &d.join("s.log"));
    assert!(
        err.contains("cannot get the public key of the identity CA"),
        "{err}"
    );
    assert!(!data.join("identity-ca.key").exists());

    // Both a key file and a remote CA: refused, naming the key.
    let both = d.join("both.toml");
    std::fs::write(
        &both,
        format!(
            "[identity]\nca_key_file = \"/tmp/x.key\"\nremote_url = \"http://127.0.0.1:1\"\nremote_token_file = {:?}\n",
            token.to_str().expect("path")
        ),
    )
    .expect("write");
    let (ok, _, err) = run(&["check-config", both.to_str().expect("path")], None);
    assert!(!ok);
    assert!(err.contains("identity.remote_url"), "{err}");
}

#[test]
fn the_ca_service_refuses_plain_http_on_a_public_address() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let key = d.join("ca.key");
    let token = d.join("ca.token");
    init_ca(&key, &token);
    let (ok, _, err) = ca_init_token(&token);
    assert!(!ok, "an existing token was overwritten");
    assert!(err.contains("already exists"), "{err}");

    let mut cmd = base_cmd();
    cmd.args(["identity-ca", "serve", "--key-file"])
        .arg(&key)
        .args(["--listen", "0.0.0.0:0", "--token-file"])
        .arg(&token);
    let err = expect_exit_failure(cmd, &d.join("ca.log"));
    assert!(err.contains("not a loopback address"), "{err}");

    // A token file that is too short is refused at start.
    std::fs::write(&token, "short\n").expect("write");
    let err = expect_exit_failure(ca_cmd(&key, free_port(), &token), &d.join("ca2.log"));
    assert!(err.contains("at least 32"), "{err}");
}

/// A test CA and a certificate for `localhost` and 127.0.0.1 signed by it, as PEM files in
/// `dir`: (root certificate, server certificate, server key).
fn tls_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let pki = klausur_testbed::pki::issue(dir, name).unwrap_or_else(|e| panic!("{e}"));
    (pki.ca, pki.cert, pki.key)
}

#[tokio::test]
async fn the_server_reaches_its_ca_over_tls_with_the_configured_root() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let key_file = d.join("identity-ca.key");
    let token = d.join("ca.token");
    let pk_hex = init_ca(&key_file, &token);
    let ca_public = klausur_server::identity::load_key_file(&key_file)
        .expect("key file")
        .public_key();
    let (root, cert, key) = tls_files(d, "ca");
    let (other_root, _, _) = tls_files(d, "other");

    let ca_port = free_port();
    let ca_log = d.join("ca.log");
    let mut cmd = ca_cmd(&key_file, ca_port, &token);
    cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
    let (_ca, _) = start(cmd, &ca_log);

    // The CA speaks TLS with that certificate, and nothing else on that port.
    let pem = std::fs::read(&root).expect("root");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");
    let v: serde_json::Value = trusting
        .get(format!("https://localhost:{ca_port}/public-key"))
        .send()
        .await
        .expect("public key over TLS")
        .json()
        .await
        .expect("json");
    assert_eq!(v["public_key"], pk_hex.as_str());
    assert!(
        reqwest::get(format!("http://127.0.0.1:{ca_port}/public-key"))
            .await
            .map_or(true, |r| !r.status().is_success()),
        "the CA answered plain HTTP on its TLS port"
    );

    let config_with = |name: &str, root: Option<&Path>| {
        let config = d.join(name);
        let mut text = format!(
            "[identity]\nremote_url = \"https://localhost:{ca_port}\"\nremote_token_file = {:?}\n",
            token.to_str().expect("utf-8 path")
        );
        if let Some(root) = root {
            text.push_str(&format!(
                "remote_tls_ca_cert = {:?}\n",
                root.to_str().expect("utf-8 path")
            ));
        }
        std::fs::write(&config, text).expect("config");
        config
    };

    // Negative controls: without the CA's root (the system's roots only), or with another
    // root, the server cannot verify the CA and does not start.
    for (name, r) in [
        ("no-root.toml", None),
        ("other-root.toml", Some(&other_root)),
    ] {
        let config = config_with(name, r.map(PathBuf::as_path));
        let data = d.join(format!("data-{name}"));
        let err = expect_exit_failure(
            server_cmd(&data, &config, free_port()),
            &d.join(format!("{name}.log")),
        );
        assert!(
            err.contains("cannot get the public key of the identity CA"),
            "{name}: {err}"
        );
    }

    // With the root: the server starts, holding no CA key, and gets a credential issued.
    let data = d.join("data");
    add_ada(&data);
    let config = config_with("klausur.toml", Some(&root));
    let port = free_port();
    let (_server, lines) = start(server_cmd(&data, &config, port), &d.join("server.log"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("holds no CA key") && l.contains(&pk_hex)),
        "{lines:?}"
    );
    let base = format!("http://127.0.0.1:{port}");
    let device = SigningKey::from_bytes(&[5; 32]).verifying_key();
    let (_, sc) = staff_credential(&base, &device).await;
    sc.verify(&ca_public, now()).expect("verifies");
    assert_eq!(sc.credential.display_name, "Ada L");
    let log = std::fs::read_to_string(&ca_log).expect("ca log");
    assert!(log.contains("credential issued"), "{log}");
}
