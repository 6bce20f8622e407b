//! `klausur` on PostgreSQL: `--database`, `KLAUSUR_DATABASE` and `[storage] database` choose
//! it; the server starts on it, bootstraps the first administrator there and the administration
//! commands reach the same database; a URL that is wrong or a database that cannot be reached
//! stops the start with a message that names it (never its password) instead of a panic. The
//! PostgreSQL is the store's throwaway test cluster (`klausur-store/tests/engines`).
//!
//! PostgreSQL restarted under a running server (issue 22, on a cluster of that test's own,
//! which it stops and starts): meanwhile every request that needs the database, a read as
//! much as a write, is answered within seconds with HTTP 503 `database_unavailable` and a
//! message that says so (before: 500 "internal error"); the server keeps running and answers
//! what needs no database; the operator's log names the database (not its password) and what
//! to do; once PostgreSQL is up again, requests succeed without a restart, with every write
//! acknowledged before and none of those refused.

use std::process::Stdio;
use std::time::{Duration, Instant};

use klausur_store::Store;
use serde_json::Value;

use crate::process::{
    add_ada_with, base_cmd, free_port, run, serve_cmd, start_until_listening, PASSWORD,
};
use crate::storage_faults::{create, log_with, login, meeting_titles};

pub(crate) use klausur_testbed::postgres as engines;

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

/// GET `url` with `http`, which must answer within 30 s: (status, JSON body or null).
async fn get(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} got no answer: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The titles in a GET /api/meetings body.
fn titles(body: &Value) -> Vec<String> {
    body.as_array()
        .or_else(|| body["meetings"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m["title"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts that `body` is the refusal of a database that cannot be reached.
fn assert_database_unavailable(what: &str, status: u16, body: &Value) {
    assert_eq!(status, 503, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "database_unavailable",
        "{what}: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot reach its database")
            && message.contains("Nothing was changed")
            && message.contains("try again"),
        "{what}: {message}"
    );
}

#[tokio::test]
async fn postgres_restarted_requests_fail_clearly_meanwhile_and_succeed_afterwards() {
    let cluster = engines::private_cluster();
    let url = cluster.create_database().await;
    let password = url
        .split_once("klausur_test:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(pw, _)| pw.to_owned())
        .expect("the URL has a password");
    let Served {
        _dir,
        log,
        mut server,
        base,
        http,
        csrf,
    } = serve_on(&url).await;

    // Writes the server acknowledges before the restart.
    let mut written = Vec::new();
    for i in 0..3 {
        let title = format!("Vor dem Neustart {i}");
        let (status, body) = create(&http, &base, &csrf, &title).await;
        assert!(status < 300, "{status} {body}");
        written.push(title);
    }

    cluster.stop();
    // A read and a write: each refused clearly, within seconds (the pool's acquire timeout),
    // not after a hang.
    let started = Instant::now();
    let (status, body) = get(&http, &format!("{base}/api/meetings")).await;
    assert_database_unavailable("a read", status, &body);
    let refused = "Während des Neustarts";
    let (status, body) = create(&http, &base, &csrf, refused).await;
    assert_database_unavailable("a write", status, &body);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "the refusals took {took:?}");
    // The server runs on and answers what needs no database.
    assert!(
        server.0.try_wait().expect("wait").is_none(),
        "the server ended"
    );
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    // The monitoring says so too, and counts the refusals.
    assert_eq!(metric(&base, "klausur_database_reachable").await, Some(0.0));
    let counted = metric(
        &base,
        "klausur_database_refused_requests_total{reason=\"unreachable\"}",
    )
    .await;
    assert!(counted.is_some_and(|n| n >= 2.0), "{counted:?}");
    // The operator is told which database, and what to do; never its password.
    let text = log_with(&log, "cannot be reached");
    let line = text
        .lines()
        .find(|l| l.contains("cannot be reached"))
        .unwrap_or_else(|| panic!("no operator line in the log:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("at 127.0.0.1:{}", cluster.port())),
        "{line}"
    );
    assert!(line.contains("check that PostgreSQL is running"), "{line}");
    assert!(!text.contains(&password), "the password is in the log");
    assert!(!text.contains("panicked"), "{text}");

    // PostgreSQL is back on the same port: requests succeed again, without a restart.
    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let (status, body) = get(&http, &format!("{base}/api/meetings")).await;
        match status {
            200 => break titles(&body),
            503 if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => panic!("after the restart: {status} {body}"),
        }
    };
    for t in &written {
        assert!(
            seen.contains(t),
            "{t} was acknowledged and is gone: {seen:?}"
        );
    }
    assert!(
        !seen.iter().any(|t| t == refused),
        "a refused write appeared"
    );
    // ... and the operator is told that it is over, once.
    let text = log_with(&log, "answers again");
    let back: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("answers again"))
        .collect();
    assert_eq!(back.len(), 1, "one line when it is over:\n{text}");
    assert!(
        back[0].contains(&format!("at 127.0.0.1:{}", cluster.port()))
            && back[0].contains("requests were refused meanwhile"),
        "{}",
        back[0]
    );
    assert_eq!(metric(&base, "klausur_database_reachable").await, Some(1.0));
    let (status, body) = create(&http, &base, &csrf, "Nach dem Neustart").await;
    assert!(status < 300, "a write after the restart: {status} {body}");
    written.push("Nach dem Neustart".into());
    assert!(
        server.0.try_wait().expect("wait").is_none(),
        "the server ended"
    );

    // And in PostgreSQL itself: exactly the acknowledged writes.
    let store = Store::open_postgres(&url).await.expect("open");
    let mut stored = meeting_titles(&store).await;
    stored.sort();
    written.sort();
    assert_eq!(stored, written);
}

/// A PostgreSQL that accepts no writes (a standby, or `default_transaction_read_only` as here):
/// every change is refused clearly (`storage_unavailable`, "Nothing was changed"), reads go on,
/// and the operator's line names the database and says to point klausur at the primary or make
/// it writable; once it is writable again, changes succeed without a restart. The control is
/// the write before: the same request succeeds on the writable database.
#[tokio::test]
async fn a_read_only_postgres_refuses_changes_clearly_and_reads_go_on() {
    let pg = engines::cluster();
    let url = pg.create_database().await;
    let name = url.rsplit('/').next().expect("db name").to_string();
    let Served {
        _dir,
        log,
        mut server,
        base,
        http,
        csrf,
    } = serve_on(&url).await;
    let (status, body) = create(&http, &base, &csrf, "Vor dem Umschalten").await;
    assert!(status < 300, "the control: {status} {body}");

    // The database becomes read-only for every new session; the server's are ended, so its
    // pool connects again and gets the new default.
    read_only(&url, &name, true).await;
    let (status, body) = create(&http, &base, &csrf, "Während schreibgeschützt").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Nothing was changed"), "{message}");
    let refused = metric(
        &base,
        "klausur_database_refused_requests_total{reason=\"unwritable\"}",
    )
    .await;
    assert!(
        refused.is_some_and(|n| n >= 1.0),
        "the refused write counted: {refused:?}"
    );
    let (status, body) = get(&http, &format!("{base}/api/meetings")).await;
    assert_eq!(status, 200, "a read while read-only: {body}");
    assert_eq!(titles(&body), ["Vor dem Umschalten"]);
    let text = log_with(&log, "cannot be written");
    let line = text
        .lines()
        .find(|l| l.contains("cannot be written"))
        .unwrap_or_else(|| panic!("no operator line in the log:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("accepts no writes") && line.contains("point klausur at the primary"),
        "{line}"
    );
    assert!(!line.contains("data directory"), "{line}");

    // Writable again: changes succeed, without a restart of klausur.
    read_only(&url, &name, false).await;
    let (status, body) = create(&http, &base, &csrf, "Nach dem Umschalten").await;
    assert!(status < 300, "after: {status} {body}");
    assert!(
        server.0.try_wait().expect("wait").is_none(),
        "the server ended"
    );
    let store = Store::open_postgres(&url).await.expect("open");
    let mut stored = meeting_titles(&store).await;
    stored.sort();
    assert_eq!(stored, ["Nach dem Umschalten", "Vor dem Umschalten"]);
}

/// Makes database `name` read-only (or writable again) for new sessions, and ends the sessions
/// open on it, other than this one.
async fn read_only(url: &str, name: &str, on: bool) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.expect("connect");
    let setting = if on { "on" } else { "off" };
    // This session may have started read-only itself: it writes all the same.
    sqlx::raw_sql("SET default_transaction_read_only = off")
        .execute(&mut admin)
        .await
        .expect("set");
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {name} SET default_transaction_read_only = {setting}"
    ))
    .execute(&mut admin)
    .await
    .expect("alter database");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&mut admin)
    .await
    .expect("end the sessions");
    admin.close().await.expect("close");
}

/// A `klausur serve` on the PostgreSQL database at `url`, its log in a file, Ada logged in.
struct Served {
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    server: crate::process::Proc,
    base: String,
    http: reqwest::Client,
    csrf: String,
}

/// The token of the served servers' `GET /metrics`.
const METRICS_TOKEN: &str = "the-postgres-tests-scrape-token-01234567";

async fn metric(base: &str, series: &str) -> Option<f64> {
    crate::metrics::metric(base, METRICS_TOKEN, series).await
}

async fn serve_on(url: &str) -> Served {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf-8");
    add_ada_with(&["--data-dir", d, "--database", url]);
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut cmd = serve_cmd(&data, port);
    cmd.env("KLAUSUR_DATABASE", url)
        .env(
            "KLAUSUR_METRICS_TOKEN_FILE",
            crate::metrics::token_file(dir.path(), METRICS_TOKEN),
        )
        .stderr(std::fs::File::create(&log).expect("log"));
    let (server, _) = start_until_listening(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let (http, csrf) = login(&base).await;
    Served {
        _dir: dir,
        log,
        server,
        base,
        http,
        csrf,
    }
}
