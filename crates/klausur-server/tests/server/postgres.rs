//! `klausur` on PostgreSQL: `--database`, `KLAUSUR_DATABASE` and `[storage] database` choose
//! it; the server starts on it, bootstraps the first administrator there and the administration
//! commands reach the same database; a URL that is wrong or a database that cannot be reached
//! stops the start with a message that names it (never its password) instead of a panic. The
//! PostgreSQL is the store's throwaway test cluster (`klausur-store/tests/engines`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use klausur_store::Store;

use crate::process::{
    add_ada_with, base_cmd, free_port, run, serve_cmd, start_until_listening, PASSWORD,
};

#[path = "../../../klausur-store/tests/engines/mod.rs"]
mod engines;

#[tokio::test]
async fn serves_from_postgres_and_the_commands_reach_the_same_database() {
    let url = engines::cluster().create_database().await;
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    // An account added by the command line before the first start ...
    add_ada_with(&["--data-dir", d, "--database", &url]);
    // ... is there for the server, which takes its database from the environment here.
    let port = free_port();
    let mut cmd = serve_cmd(&data, port);
    cmd.env("KLAUSUR_DATABASE", &url).stderr(Stdio::null());
    let (_server, lines) = start_until_listening(cmd);
    assert!(
        lines.iter().any(|l| l.contains("one-time password is in")),
        "{lines:?}"
    );
    assert!(
        !data.join("klausur.sqlite3").exists(),
        "no SQLite database beside PostgreSQL"
    );
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let login = http
        .post(format!("http://127.0.0.1:{port}/api/login"))
        .json(&serde_json::json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert!(login.status().is_success(), "{}", login.status());
    // What the server and the command wrote is in PostgreSQL.
    let store = Store::open_postgres(&url).await.expect("open");
    let users = store.list_users().await.expect("users");
    let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["ada", "admin"]);
    let (ok, out, err) = run(
        &[
            "--data-dir",
            d,
            "--database",
            &url,
            "user",
            "list",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("\"ada\"") && out.contains("\"admin\""),
        "{out}"
    );
}

#[test]
fn a_bad_or_unreachable_database_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    let config = dir.path().join("klausur.toml");
    std::fs::write(
        &config,
        "[storage]\ndatabase = \"postgres://klausur:s3cret@127.0.0.1:1/klausur\"\n",
    )
    .expect("write");
    let listen = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("stderr");
    // `klausur serve` with `extra` flags, which must end within 30 s: its status and stderr.
    let serve = |extra: &[&str]| {
        let mut child = base_cmd()
            .args(["--data-dir", d])
            .args(extra)
            .args(["serve", "--listen", &listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("run");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("klausur serve {extra:?} did not stop: it started without its database");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, std::fs::read_to_string(&log).expect("stderr"))
    };
    // Nothing listens on port 1 (from the config file).
    let (status, err) = serve(&["--config", config.to_str().expect("utf-8")]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot open the PostgreSQL database \"klausur\" at 127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    // Not a PostgreSQL URL, a URL that does not parse (on the command line).
    for bad in [
        "mysql://klausur:s3cret@db/klausur",
        "postgres://klausur:s3cret@[::1/x",
    ] {
        let (status, err) = serve(&["--database", bad]);
        assert_eq!(status.code(), Some(1), "{bad}: {err}");
        assert!(err.contains("storage.database"), "{bad}: {err}");
        assert!(!err.contains("s3cret"), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
    }
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn copy_to_postgres_takes_the_sqlite_state_along() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    // Without a SQLite database, or without PostgreSQL configured: clear refusals.
    let url = engines::cluster().create_database().await;
    let (ok, _, err) = run(
        &["--data-dir", d, "--database", &url, "copy-to-postgres"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("no SQLite database to copy from"), "{err}");
    add_ada_with(&["--data-dir", d]);
    let (ok, _, err) = run(&["--data-dir", d, "copy-to-postgres"], None);
    assert!(!ok);
    assert!(err.contains("no PostgreSQL database to copy into"), "{err}");
    // Copied: the account is in PostgreSQL, with its password hash (ada can log in there).
    let (ok, out, err) = run(
        &["--data-dir", d, "--database", &url, "copy-to-postgres"],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("users: 1 rows"), "{out}");
    let store = Store::open_postgres(&url).await.expect("open");
    let ada = store
        .user_by_username("ada")
        .await
        .expect("query")
        .expect("ada copied");
    let sqlite = Store::open_sqlite(&data.join("klausur.sqlite3"))
        .await
        .expect("open");
    let before = sqlite
        .user_by_username("ada")
        .await
        .expect("query")
        .expect("ada");
    assert_eq!(ada, before);
    // Again into the same database: refused, nothing doubled.
    let (ok, _, err) = run(
        &["--data-dir", d, "--database", &url, "copy-to-postgres"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("holds data already"), "{err}");
    assert_eq!(store.list_users().await.expect("users").len(), 1);
}
