//! `klausur identity-ca` as an operator runs it apart from the server: `init` (mode 0600, no
//! overwrite without `--force`), `public-key`, and `issue`, whose output is verified offline with
//! klausur-e2ee. Negative control: the credential fails against another CA's key.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use klausur_e2ee::{CredentialError, ParticipantKind, SignedCredential, SigningKey, VerifyingKey};

use crate::process::{assert_owner_only, free_port, run, serve_cmd, start_until_listening, Proc};

/// `klausur identity-ca <args>`: (success, stdout trimmed, stderr).
fn klausur(args: &[&str]) -> (bool, String, String) {
    run(&[&["identity-ca"], args].concat(), None)
}

fn key_of(hex_key: &str) -> VerifyingKey {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    VerifyingKey::from_bytes(&bytes).expect("key")
}

fn now() -> std::time::Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

#[test]
fn init_issue_and_verify_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let key_file = dir.path().join("ca").join("identity-ca.key");
    let kf = key_file.to_str().expect("utf-8 path");

    let (ok, out, err) = klausur(&["init", "--key-file", kf, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let pk_hex = v["public_key"].as_str().expect("public_key").to_string();
    assert_eq!(pk_hex.len(), 64);

    assert_owner_only(&key_file);
    let text = std::fs::read_to_string(&key_file).expect("read");
    assert!(text.starts_with("klausur-identity-ca-v1\n"), "format");
    assert_eq!(text.lines().count(), 2);

    // No overwrite without --force; the key is unchanged.
    let (ok, _, err) = klausur(&["init", "--key-file", kf]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&key_file).expect("read"), text);

    let (ok, out, err) = klausur(&["public-key", "--key-file", kf]);
    assert!(ok, "{err}");
    assert_eq!(out, pk_hex);
    let (ok, out, err) = klausur(&["public-key", "--key-file", kf, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["public_key"], pk_hex.as_str());

    let device = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let device_hex = hex::encode(device.to_bytes());
    let (ok, out, err) = klausur(&[
        "issue",
        "--key-file",
        kf,
        "--user-id",
        "gateway:1",
        "--display-name",
        "Telefon",
        "--kind",
        "phone_gateway",
        "--device-key",
        &device_hex,
        "--valid-minutes",
        "30",
    ]);
    assert!(ok, "{err}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&out)
        .expect("base64 on stdout");
    let sc = SignedCredential::from_bytes(&bytes).expect("decode");
    let ca = key_of(&pk_hex);
    sc.verify(&ca, now()).expect("verifies with the CA key");
    assert_eq!(sc.credential.kind, ParticipantKind::PhoneGateway);
    assert_eq!(sc.credential.user_id, "gateway:1");
    assert_eq!(sc.credential.display_name, "Telefon");
    assert_eq!(sc.credential.device_public_key, device.to_bytes());
    let left = sc.credential.not_after as i64 - now().as_secs() as i64;
    assert!((1790..=1810).contains(&left), "valid for {left} s");
    // Negative control: another CA key does not accept it.
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    assert_eq!(sc.verify(&other, now()), Err(CredentialError::BadSignature));

    // --json, the default lifetime and an underscore kind.
    let (ok, out, err) = klausur(&[
        "issue",
        "--key-file",
        kf,
        "--user-id",
        "invitation:5",
        "--display-name",
        "Gina Gast",
        "--kind",
        "invited_guest",
        "--device-key",
        &device_hex,
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["kind"], "invited_guest");
    assert_eq!(v["ca_public_key"], pk_hex.as_str());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["credential"].as_str().expect("credential"))
        .expect("base64");
    let sc = SignedCredential::from_bytes(&bytes).expect("decode");
    sc.verify(&ca, now()).expect("verifies");
    assert_eq!(sc.credential.kind, ParticipantKind::InvitedGuest);
    assert_eq!(
        v["not_after_ms"].as_u64(),
        Some(sc.credential.not_after * 1000)
    );
    let left = sc.credential.not_after as i64 - now().as_secs() as i64;
    assert!((3590..=3610).contains(&left), "valid for {left} s");

    // Refusals: bad device key, too long a lifetime, unknown kind.
    let base = [
        "issue",
        "--key-file",
        kf,
        "--user-id",
        "u",
        "--display-name",
        "N",
        "--kind",
        "staff",
    ];
    for extra in [
        vec!["--device-key", "abcd"],
        vec!["--device-key", &"zz".repeat(32)],
        vec!["--device-key", &device_hex, "--valid-minutes", "1441"],
        vec!["--device-key", &device_hex, "--valid-minutes", "0"],
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let (ok, _, err) = klausur(&args);
        assert!(!ok, "{extra:?} accepted");
        assert!(
            err.contains("device_key") || err.contains("valid-minutes"),
            "{err}"
        );
    }
    let (ok, _, _) = klausur(&[
        "issue",
        "--key-file",
        kf,
        "--user-id",
        "u",
        "--display-name",
        "N",
        "--kind",
        "admin",
        "--device-key",
        &device_hex,
    ]);
    assert!(!ok);

    // --force replaces the key (mode stays 0600).
    let (ok, out, err) = klausur(&["init", "--key-file", kf, "--force"]);
    assert!(ok, "{err}");
    assert_ne!(out, pk_hex);
    assert_owner_only(&key_file);
    let (_, now_pk, _) = klausur(&["public-key", "--key-file", kf]);
    assert_eq!(now_pk, out);
}

#[test]
fn a_broken_key_file_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let key_file = dir.path().join("bad.key");
    std::fs::write(&key_file, "something else\n").expect("write");
    let (ok, _, err) = klausur(&["public-key", "--key-file", key_file.to_str().expect("path")]);
    assert!(!ok);
    assert!(err.contains("klausur-identity-ca-v1"), "{err}");
    let (ok, _, err) = klausur(&[
        "public-key",
        "--key-file",
        dir.path().join("missing.key").to_str().expect("path"),
    ]);
    assert!(!ok);
    assert!(err.contains("cannot read"), "{err}");
}

/// Starts `klausur serve`, waits until it listens, returns it with its base URL and the lines
/// it printed before.
fn serve(data: &Path, config: Option<&Path>) -> (Proc, String, Vec<String>) {
    let port = free_port();
    let mut cmd = serve_cmd(data, port);
    cmd.stderr(std::process::Stdio::null());
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let (server, lines) = start_until_listening(cmd);
    (server, format!("http://127.0.0.1:{port}"), lines)
}

async fn served_ca_key(base: &str) -> String {
    let v: serde_json::Value = reqwest::get(format!("{base}/api/identity/ca"))
        .await
        .expect("ca")
        .json()
        .await
        .expect("json");
    v["public_key"].as_str().expect("public_key").to_string()
}

#[tokio::test]
async fn serve_creates_or_uses_the_configured_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");

    // First start: the key is created in the data directory with mode 0600.
    let (child, base, lines) = serve(&data, None);
    let key_file = data.join("identity-ca.key");
    let served = served_ca_key(&base).await;
    drop(child);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("created identity CA key") && l.contains(&served)),
        "{lines:?}"
    );
    assert_owner_only(&key_file);
    let (ok, pk, err) = klausur(&["public-key", "--key-file", key_file.to_str().expect("path")]);
    assert!(ok, "{err}");
    assert_eq!(pk, served);

    // Second start: the same key, nothing created.
    let (child, base, lines) = serve(&data, None);
    let again = served_ca_key(&base).await;
    drop(child);
    assert_eq!(again, served);
    assert!(!lines.iter().any(|l| l.contains("created identity CA key")));

    // A key made with `identity-ca init` elsewhere, configured with [identity] ca_key_file.
    let other = dir.path().join("ca.key");
    let (ok, other_pk, err) = klausur(&["init", "--key-file", other.to_str().expect("path")]);
    assert!(ok, "{err}");
    let config = dir.path().join("klausur.toml");
    std::fs::write(
        &config,
        format!(
            "[identity]\nca_key_file = {:?}\n",
            other.to_str().expect("path")
        ),
    )
    .expect("config");
    let (child, base, _) = serve(&data, Some(&config));
    let configured = served_ca_key(&base).await;
    drop(child);
    assert_eq!(configured, other_pk);
}
