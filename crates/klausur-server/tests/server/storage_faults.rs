//! A full disk and an unwritable database (issue 19, "Faults"): the user gets a clear answer,
//! the operator a clear log line or start error, and nothing is lost or half-written.
//!
//! The data directory is a real size-limited tmpfs that the test mounts (and fills, or mounts
//! read-only), with `klausur serve` running on it as a separate process.
//!
//! - A full volume: writes are refused with HTTP 503 `storage_unavailable` and a message that
//!   says nothing was changed (before: 500 "internal error"); reads keep working; the log says
//!   what is wrong and what to do; once space is freed, writes work again without a restart;
//!   every meeting written before is there, none of the refused ones, and SQLite finds the file
//!   sound. Negative control: the same writes succeed before the disk is full and after.
//! - A read-only data directory: `klausur serve` and the administration commands stop with an
//!   error that names the directory and the cause (before: SQLite's "unable to open database
//!   file", three times over); writable again, the same server starts with its data.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::process::{add_ada, free_port, run, serve_cmd, start_until_listening, PASSWORD};

/// A tmpfs of `size` mounted on a directory for the test's lifetime (unmounted when dropped).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "klausur-test"],
            dir,
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Remounts it read-only (`true`) or read-write.
    fn read_only(&self, ro: bool) {
        let opts = if ro { "remount,ro" } else { "remount,rw" };
        mount(&["-o", opts], &self.0);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str], dir: &Path) {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mount {args:?} {} failed (the storage tests mount a tmpfs and need root): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a file in `dir` until the volume is full; the file's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            return path;
        }
    }
}

/// The titles of every meeting in `store`, in the store's order.
pub(crate) async fn meeting_titles(store: &klausur_store::Store) -> Vec<String> {
    store
        .list_all_meetings()
        .await
        .expect("meetings")
        .into_iter()
        .map(|m| m.title)
        .collect()
}

/// Ada's HTTP client, logged in: (client, CSRF token).
pub(crate) async fn login(base: &str) -> (reqwest::Client, String) {
    login_as(base, "ada").await
}

/// `name`'s HTTP client (password [`PASSWORD`]), logged in at `base`: (client, CSRF token).
pub(crate) async fn login_as(base: &str, name: &str) -> (reqwest::Client, String) {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let resp = http
        .post(format!("{base}/api/login"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200, "login as {name} at {base}");
    let v: Value = resp.json().await.expect("json");
    (http, v["csrf_token"].as_str().expect("csrf").to_string())
}

/// POST /api/meetings with `title`: (status, body).
pub(crate) async fn create(
    http: &reqwest::Client,
    base: &str,
    csrf: &str,
    title: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{base}/api/meetings"))
        .header("X-CSRF-Token", csrf)
        .json(&json!({"title": title}))
        .send()
        .await
        .expect("create meeting");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The titles of Ada's meetings (GET /api/meetings must answer 200).
async fn titles(http: &reqwest::Client, base: &str) -> Vec<String> {
    let resp = http
        .get(format!("{base}/api/meetings"))
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200, "reading works");
    let v: Value = resp.json().await.expect("json");
    let list = v
        .as_array()
        .or_else(|| v["meetings"].as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|m| m["title"].as_str().map(str::to_string))
        .collect()
}

/// Waits up to 10 s for `needle` in the file `log`; its text.
pub(crate) fn log_with(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_reads_go_on_and_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let volume = Tmpfs::mount(&data, "24m");
    add_ada(&data);
    let log = dir.path().join("server.log");
    let port = free_port();
    let mut cmd = serve_cmd(&data, port);
    cmd.stderr(Stdio::from(std::fs::File::create(&log).expect("log")));
    let (mut server, _) = start_until_listening(cmd);
    let base = format!("http://127.0.0.1:{port}");
    let (http, csrf) = login(&base).await;

    // Negative control: with space, a meeting is created.
    let (status, body) = create(&http, &base, &csrf, "Vor dem Fehler").await;
    assert!(status < 300, "{status} {body}");

    // The volume fills up. SQLite appends to its write-ahead log, so some writes may still fit
    // in space the log already holds; then they are refused.
    let filler = fill(&data);
    let mut written = vec!["Vor dem Fehler".to_string()];
    let mut refused = None;
    for i in 0..2000 {
        let title = format!("Sitzung {i}");
        let (status, body) = create(&http, &base, &csrf, &title).await;
        match status {
            200..=299 => written.push(title),
            503 => {
                refused = Some((title, body));
                break;
            }
            _ => panic!("a write on a full disk: {status} {body}"),
        }
    }
    let (refused_title, body) = refused.expect("no write was refused on a full disk");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot save") && message.contains("Nothing was changed"),
        "{message}"
    );
    // Again: still refused, still clear.
    let (status, body) = create(&http, &base, &csrf, "Noch ein Versuch").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_unavailable");

    // Reads go on; the operator is told what is wrong and what to do.
    let seen = titles(&http, &base).await;
    for t in &written {
        assert!(seen.contains(t), "{t} is listed while the disk is full");
    }
    let text = log_with(&log, "the database cannot be written");
    let line = text
        .lines()
        .find(|l| l.contains("the database cannot be written"))
        .unwrap_or_else(|| panic!("no operator line in the log:\n{text}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("free space on the volume"), "{line}");

    // Space again: writes work without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let (status, body) = create(&http, &base, &csrf, "Nach dem Fehler").await;
    assert!(status < 300, "after the space is freed: {status} {body}");
    written.push("Nach dem Fehler".into());

    let seen = titles(&http, &base).await;
    for t in &written {
        assert!(seen.contains(t), "{t} was kept");
    }
    assert!(!seen.contains(&refused_title), "a refused write appeared");
    assert!(!seen.contains(&"Noch ein Versuch".to_string()));

    // The server stops; the file it leaves is sound and holds everything.
    let _ = server.0.kill();
    let _ = server.0.wait();
    let store = klausur_store::Store::open_sqlite(&data.join("klausur.sqlite3"))
        .await
        .expect("open after the fault");
    assert_eq!(
        store.integrity_problems().await.expect("check"),
        Vec::<String>::new()
    );
    let stored = meeting_titles(&store).await;
    assert_eq!(stored.len(), written.len(), "{stored:?}");
    drop(store);
    drop(volume);
}

#[test]
fn a_read_only_data_directory_stops_the_start_with_an_error_that_says_so() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let volume = Tmpfs::mount(&data, "16m");
    add_ada(&data);
    volume.read_only(true);

    // `klausur serve` ends at once with the directory and the cause.
    let port = free_port();
    let out = serve_cmd(&data, port)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let path = data.to_str().expect("utf-8 path");
    assert!(
        err.contains(&format!("the data directory {path} is not writable"))
            && err.contains("Read-only file system")
            && err.contains("mount its volume read-write"),
        "{err}"
    );
    assert!(!err.contains("unable to open database file"), "{err}");

    // So does an administration command.
    let (ok, _, err) = run(
        &[
            "--data-dir",
            path,
            "user",
            "add",
            "bob",
            "--display-name",
            "Bob",
            "--permanent-password",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(!ok);
    assert!(err.contains("is not writable"), "{err}");

    // Negative control: writable again, the same data directory serves, with Ada's account.
    volume.read_only(false);
    let mut cmd = serve_cmd(&data, port);
    cmd.stderr(Stdio::null());
    let (_server, lines) = start_until_listening(cmd);
    assert!(
        lines.iter().any(|l| l.contains("listening on")),
        "{lines:?}"
    );
    let (ok, out, err) = run(&["--data-dir", path, "user", "list", "--json"], None);
    assert!(ok, "{err}");
    assert!(out.contains("\"ada\""), "{out}");
}
