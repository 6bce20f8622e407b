//! The first administrator's one-time password (issue 19, "Other defects"): it was printed to
//! standard output, which under systemd is the journal. Now `klausur serve` writes it to
//! `<data_dir>/initial-admin-password` (mode 0600) and prints only that path; the file is removed
//! once the password has been changed at the first login.
//!
//! Negative controls: the file's password logs in (it is the real one); the file stays while the
//! password is unchanged, longer than the server's polling interval, so it is the change that
//! removes it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use klausur_server::server::{INITIAL_PASSWORD_FILE, INITIAL_PASSWORD_POLL};
use serde_json::json;

use crate::process::{assert_owner_only, free_port, serve_cmd, start_until_listening};

#[tokio::test]
async fn the_one_time_password_is_in_a_private_file_that_goes_once_it_is_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut cmd = serve_cmd(&data, port);
    cmd.stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
    let (_server, lines) = start_until_listening(cmd);

    // The file: owner-only, one line with the password; stdout names it.
    let file = data.join(INITIAL_PASSWORD_FILE);
    assert_owner_only(&file);
    let text = std::fs::read_to_string(&file).expect("password file");
    let password = text.trim().to_string();
    assert_eq!(text, format!("{password}\n"));
    assert!(password.len() >= 16, "{password}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(file.to_str().expect("utf-8 path"))),
        "stdout names the file: {lines:?}"
    );

    // It logs in, and must be changed.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let resp = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["user"]["must_change_password"], true);
    let csrf = v["csrf_token"].as_str().expect("csrf").to_string();

    // Negative control: unchanged, the file stays (longer than the server's polling interval).
    tokio::time::sleep(INITIAL_PASSWORD_POLL + Duration::from_millis(1500)).await;
    assert!(file.exists(), "removed before the password was changed");

    let resp = http
        .post(format!("{base}/api/password"))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({"current_password": password, "new_password": "a-new-long-password-7"}))
        .send()
        .await
        .expect("password");
    assert_eq!(resp.status(), 204);
    let deadline = Instant::now() + INITIAL_PASSWORD_POLL * 5;
    while file.exists() {
        assert!(
            Instant::now() < deadline,
            "the file is still there after the change"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Neither standard output nor the log ever held the password.
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(!logged.contains(&password), "{logged}");
    assert!(lines.iter().all(|l| !l.contains(&password)), "{lines:?}");
}
