//! The `klausur` binary as an operator uses it: first start without configuration, the
//! administration commands with `--json`, `check-config`, and graceful shutdown on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::process::{free_port, run, serve_cmd, start_until_listening, Proc};

/// `klausur --data-dir <dir> <args>` with `stdin`: (success, stdout trimmed, stderr).
fn klausur(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let dir = dir.to_str().expect("utf-8 path");
    run(&[&["--data-dir", dir], args].concat(), stdin)
}

/// `klausur serve` with the data directory `data` on `127.0.0.1:<port>`, run in `cwd` with
/// stderr discarded and changed by `adjust`, until it listens: the process and its stdout lines
/// so far.
fn serve(
    cwd: &Path,
    data: &Path,
    port: u16,
    adjust: impl FnOnce(&mut Command),
) -> (Proc, Vec<String>) {
    let mut cmd = serve_cmd(data, port);
    cmd.current_dir(cwd).stderr(Stdio::null());
    adjust(&mut cmd);
    start_until_listening(cmd)
}

/// The first administrator's one-time password: in the file of the data directory `data` that a
/// line of the server's stdout `lines` names (the password itself is never printed).
fn one_time_password(data: &Path, lines: &[String]) -> Option<String> {
    let file = data.join(klausur_server::server::INITIAL_PASSWORD_FILE);
    let path = file.to_str()?;
    let named = lines
        .iter()
        .any(|l| l.contains("one-time password is in") && l.contains(path));
    let password = std::fs::read_to_string(&file).ok()?.trim().to_string();
    assert!(
        lines.iter().all(|l| !l.contains(&password)),
        "the password is printed: {lines:?}"
    );
    named.then_some(password)
}

/// `klausur meeting create Bauausschuss --organiser ada --json` in `dir`: the meeting as JSON.
fn create_meeting(dir: &Path) -> serde_json::Value {
    let (ok, out, err) = klausur(
        dir,
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
    serde_json::from_str(out.trim()).expect("json")
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

    let m = create_meeting(d);
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(m["profile"], "strict");

    // The one rule for names and titles holds on the command line too.
    for args in [
        vec![
            "meeting",
            "create",
            "Bau\u{202E}ausschuss",
            "--organiser",
            "ada",
        ],
        vec!["invite", "create", &id, "--name", "Erika Gast (Sie)"],
        vec!["invite", "create", &id, "--name", "Eri\u{200B}ka"],
    ] {
        let (ok, _, err) = klausur(d, &args, None);
        assert!(!ok, "{args:?} was accepted");
        assert!(
            err.contains("name") || err.contains("title"),
            "{args:?}: {err}"
        );
    }
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
    let (mut child, lines) = serve(dir.path(), &data, port, |_| {});
    let password =
        one_time_password(&data, &lines).expect("first start writes a one-time password");
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
    let (ok, out, err) = klausur(
        &data,
        &[
            "meeting",
            "create",
            "Sitzung",
            "--organiser",
            "admin",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let m: serde_json::Value = serde_json::from_str(&out).expect("json");
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
        .args(["-TERM", &child.0.id().to_string()])
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
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "clean exit: {status:?}");

    // A second start finds the administrator and makes no new password: the one not yet
    // changed is still in its file, and the first line says so.
    let (_again, lines) = serve(dir.path(), &data, free_port(), |_| {});
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("is still in"), "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains(&password)), "{lines:?}");
    let kept = std::fs::read_to_string(data.join(klausur_server::server::INITIAL_PASSWORD_FILE))
        .expect("the file is kept until the password is changed");
    assert_eq!(kept.trim(), password);
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
    let (child, lines) = serve(dir.path(), &dir.path().join("data"), port, |cmd| {
        cmd.arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path);
    });
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("listening on https://")),
        "{lines:?}"
    );
    let password = one_time_password(&dir.path().join("data"), &lines)
        .expect("a one-time password on the first start");
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
    drop(child);
    assert_eq!(resp.status(), 200);
    // Under TLS: HSTS on every answer, and the API's answers are never cached.
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        header("strict-transport-security").starts_with("max-age="),
        "HSTS"
    );
    assert_eq!(header("cache-control"), "no-store");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[test]
fn backup_writes_a_copy_that_restores_into_a_fresh_data_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    let live = dir.path().join("live");
    let (ok, _, err) = klausur(
        &live,
        &["user", "add", "ada", "--display-name", "Ada L"],
        Some("a-long-password-1\n"),
    );
    assert!(ok, "{err}");
    let meeting = create_meeting(&live);
    let backup = dir.path().join("klausur-backup.sqlite3");
    let backup_arg = backup.to_str().expect("utf-8 path");
    let (ok, out, err) = klausur(&live, &["backup", backup_arg], None);
    assert!(ok, "{err}");
    assert!(out.contains("backup written to"), "{out}");
    // Never over an existing file.
    let (ok, _, err) = klausur(&live, &["backup", backup_arg], None);
    assert!(!ok);
    assert!(err.contains("exists already"), "{err}");

    // Restored into a data directory of its own: the account and the meeting are there.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    std::fs::copy(&backup, fresh.join("klausur.sqlite3")).expect("restore");
    let (ok, out, err) = klausur(&fresh, &["user", "list", "--json"], None);
    assert!(ok, "{err}");
    assert!(out.contains("\"ada\""), "{out}");
    let (ok, out, err) = klausur(&fresh, &["meeting", "list", "--json"], None);
    assert!(ok, "{err}");
    let id = meeting["id"].as_str().expect("id");
    assert!(out.contains(id), "{out}");
    // The control: an empty data directory has neither.
    let empty = dir.path().join("empty");
    let (ok, out, err) = klausur(&empty, &["meeting", "list", "--json"], None);
    assert!(ok, "{err}");
    assert!(!out.contains(id), "{out}");
}

#[test]
fn migrate_brings_a_fresh_data_directory_to_the_current_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let (ok, out, err) = klausur(dir.path(), &["migrate"], None);
    assert!(ok, "{err}");
    let migrations: Vec<_> = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../klausur-store/migrations/sqlite"),
    )
    .expect("the store's migrations")
    .filter_map(|e| e.ok()?.file_name().into_string().ok())
    .collect();
    assert!(!migrations.is_empty());
    for m in &migrations {
        let version = m.split('_').next().expect("version");
        assert!(out.contains(version), "{version} not listed: {out}");
    }
    assert!(
        out.contains(&format!("{} migrations applied", migrations.len())),
        "{out}"
    );
    // Again: nothing left to do, the same list.
    let (ok, again, err) = klausur(dir.path(), &["migrate"], None);
    assert!(ok, "{err}");
    assert_eq!(again, out);
    assert!(dir.path().join("klausur.sqlite3").is_file());
}

/// `KLAUSUR_LOG_FORMAT=json`: every line of the log is one JSON object with a timestamp, a
/// level, a target and a message, the event's fields beside them (for Loki, Graylog,
/// Elasticsearch); what the text log keeps out (here a password tried) stays out. Another
/// value stops the start with a message that names it. The control: the text log's lines are
/// not JSON.
#[tokio::test]
async fn the_log_speaks_json_lines_when_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    let tried = "a-password-someone-tried";
    let mut logs = Vec::new();
    for format in ["json", "text"] {
        let port = free_port();
        let log = dir.path().join(format!("{format}.log"));
        let mut cmd = serve_cmd(&dir.path().join(format!("data-{format}")), port);
        cmd.env("KLAUSUR_LOG_FORMAT", format)
            .stderr(std::fs::File::create(&log).expect("log"));
        let (server, _) = start_until_listening(cmd);
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/api/login"))
            .json(&serde_json::json!({"username": "nobody", "password": tried}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 401);
        // The failed login is logged before the answer goes out; the process ends here.
        drop(server);
        logs.push(std::fs::read_to_string(&log).expect("log"));
    }
    let (json, text) = (&logs[0], &logs[1]);
    let mut messages = Vec::new();
    for line in json.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k}: {line}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(field("timestamp")).is_ok(),
            "{line}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&field("level")),
            "{line}"
        );
        assert!(field("target").starts_with("klausur"), "{line}");
        messages.push((
            field("level").to_string(),
            field("message").to_string(),
            v.clone(),
        ));
    }
    assert!(
        messages
            .iter()
            .any(|(level, m, _)| level == "INFO" && m == "failed login"),
        "{json}"
    );
    // Fields stand beside the message: the start line names the listen address.
    let started = messages
        .iter()
        .find(|(_, m, _)| m == "klausur started")
        .unwrap_or_else(|| panic!("{json}"));
    assert!(started.2["listen"]
        .as_str()
        .is_some_and(|l| l.starts_with("127.0.0.1:")));
    assert!(!json.contains(tried), "{json}");
    // The control: the default is text, not JSON.
    assert!(text.contains("failed login"), "{text}");
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{text}"
    );

    let out = crate::process::base_cmd()
        .args([
            "--data-dir",
            dir.path().join("x").to_str().expect("path"),
            "serve",
        ])
        .env("KLAUSUR_LOG_FORMAT", "xml")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KLAUSUR_LOG_FORMAT=\"xml\"") && err.contains("\"json\""),
        "{err}"
    );
}
