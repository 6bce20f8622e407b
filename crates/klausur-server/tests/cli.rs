//! The `klausur` binary as an operator uses it: first start without configuration, the
//! administration commands with `--json`, `check-config`, and graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod process;

use process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_klausur");

fn klausur(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn admin_commands_speak_json() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (ok, out, err) = klausur(
        d,
        &["user", "add", "ada", "--display-name", "Ada L", "--json"],
        Some("a-long-password-1\n"),
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(v["username"], "ada");
    let (ok, _, err) = klausur(
        d,
        &["user", "add", "ada", "--display-name", "Again"],
        Some("a-long-password-1\n"),
    );
    assert!(!ok);
    assert!(
        err.contains("ada") || err.to_lowercase().contains("exists") || err.contains("conflict"),
        "{err}"
    );
    let (ok, _, err) = klausur(
        d,
        &["user", "add", "bob", "--display-name", "Bob"],
        Some("short\n"),
    );
    assert!(!ok);
    assert!(err.contains("at least 12"), "{err}");

    let (ok, out, err) = klausur(
        d,
        &[
            "meeting",
            "create",
            "Bauausschuss",
            "--organiser",
            "ada",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let m: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(m["profile"], "strict");

    let (ok, out, err) = klausur(
        d,
        &["invite", "create", &id, "--name", "Erika Gast", "--json"],
        None,
    );
    assert!(ok, "{err}");
    let inv: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let link = inv["link"].as_str().expect("link");
    let token = inv["token"].as_str().expect("token");
    assert!(link.ends_with(&format!("/j/{token}")), "{link}");
    assert!(token.len() >= 43, "at least 256 bits: {token}");

    let (ok, out, _) = klausur(d, &["meeting", "list", "--json"], None);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(list[0]["id"], id.as_str());

    let (ok, out, _) = klausur(d, &["user", "disable", "ada", "--json"], None);
    assert!(ok);
    assert!(out.contains("\"disabled\":true"), "{out}");
    let (ok, out, _) = klausur(d, &["user", "list", "--json"], None);
    assert!(ok);
    let users: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(users[0]["disabled"], true);
}

#[test]
fn check_config_names_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = \"127.0.0.1:9000\"\n").expect("write");
    let (ok, out, err) = klausur(
        dir.path(),
        &["check-config", good.to_str().expect("utf8")],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("ok"));
    let cases = [
        ("[server]\nlisten = \"127.0.0.1\"\n", "server.listen"),
        (
            "[server]\nlisten = \"0.0.0.0:80\"\n[media]\npublic_ip = \"192.0.2.1\"\n",
            "server.listen",
        ),
        ("[media]\npublic_ip = \"not-an-ip\"\n", "media.public_ip"),
        (
            "[security]\nsession_hours = 99999\n",
            "security.session_hours",
        ),
        ("[server]\nlistn = \"x\"\n", "listn"),
        ("this is not toml", "bad.toml"),
    ];
    for (text, key) in cases {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let (ok, _, err) = klausur(
            dir.path(),
            &["check-config", bad.to_str().expect("utf8")],
            None,
        );
        assert!(!ok, "{text} must be refused");
        assert!(err.contains(key), "{text}: {err}");
    }
}

#[tokio::test]
async fn first_start_without_configuration_and_graceful_shutdown() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let port = free_port();
    let media = free_port();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--media-listen",
            &format!("127.0.0.1:{media}"),
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut password = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(p) = line.split("one-time password: ").nth(1) {
                password = Some(p.trim().to_string());
            }
            if line.contains("listening on") {
                break;
            }
        }
    }
    let password = password.expect("first start prints a one-time password");
    assert!(
        data.join("klausur.sqlite3").is_file(),
        "database created in the data directory"
    );

    // The one-time password works once and forces a change.
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let v: serde_json::Value = http
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    assert_eq!(v["user"]["must_change_password"], true);
    assert_eq!(v["user"]["role"], "admin");

    // Someone in a meeting is told when the server stops.
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "meeting",
            "create",
            "Sitzung",
            "--organiser",
            "admin",
            "--json",
        ])
        .output()
        .expect("meeting");
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/ws"))
        .await
        .expect("ws");
    let join =
        serde_json::json!({"type": "join", "meeting_id": m["id"], "display_name": "Wartende"});
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("send");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("reply");
    assert!(format!("{first:?}").contains("lobby_wait"), "{first:?}");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let ended = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("ended");
    assert!(
        format!("{ended:?}").contains("server_shutdown"),
        "{ended:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit: {status:?}");

    // A second start finds the administrator and prints no new password.
    let mut again = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--media-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(again.stdout.take().expect("stdout")).lines();
    let first_line = lines.next().expect("line").expect("utf8");
    assert!(first_line.contains("listening on"), "{first_line}");
    let _ = again.kill();
    let _ = again.wait();
}

#[tokio::test]
async fn serves_https_with_rustls_and_secure_cookies() {
    let dir = tempfile::tempdir().expect("tmp");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write");
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--media-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut password = String::new();
    for line in BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
    {
        if let Some(p) = line.split("one-time password: ").nth(1) {
            password = p.trim().to_string();
        }
        if line.contains("listening on https://") {
            break;
        }
    }
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("root");
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve(
            "localhost",
            format!("127.0.0.1:{port}").parse().expect("addr"),
        )
        .build()
        .expect("client");
    let resp = client
        .post(format!("https://localhost:{port}/api/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("https login");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii");
    assert!(cookie.contains("; Secure"), "{cookie}");
}
