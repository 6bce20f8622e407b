//! `klausur audit verify` and `klausur audit export` as an operator or auditor uses them, on a
//! data directory whose database file is then tampered with directly: each change is named,
//! the exit status says so, and a noted head catches records cut off the end. The untouched
//! trail verifies (the negative control).

use std::path::Path;

use sqlx::{ConnectOptions, Connection};

use crate::process::run;

fn klausur(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let dir = dir.to_str().expect("utf-8 path");
    run(&[&["--data-dir", dir], args].concat(), stdin)
}

/// Runs raw SQL on the data directory's database file.
async fn tamper(dir: &Path, sql: &str) {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("klausur.sqlite3"))
        .connect()
        .await
        .expect("open the database file");
    sqlx::raw_sql(sql).execute(&mut conn).await.expect("tamper");
    conn.close().await.expect("close");
}

/// A data directory with a few records written by the administration commands.
fn with_records(d: &Path) {
    let (ok, _, err) = klausur(
        d,
        &[
            "user",
            "add",
            "ada",
            "--display-name",
            "Ada L",
            "--role",
            "admin",
        ],
        Some("a-long-password-1\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = klausur(
        d,
        &["user", "add", "bert", "--display-name", "Bert B"],
        Some("a-long-password-2\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = klausur(d, &["meeting", "create", "Rat", "--organiser", "ada"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = klausur(d, &["user", "disable", "bert"], None);
    assert!(ok, "{err}");
}

/// The head `SEQ:HASH` that `audit verify` printed.
fn head_of(out: &str) -> String {
    out.rsplit("head ").next().expect("head").trim().to_string()
}

#[tokio::test]
async fn verify_names_what_was_changed_and_export_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    with_records(d);

    let (ok, out, err) = klausur(d, &["audit", "verify"], None);
    assert!(ok, "{out} {err}");
    assert!(
        out.starts_with("audit trail intact: 4 records checked; head 4:"),
        "{out}"
    );
    let head = head_of(&out);

    let (ok, out, err) = klausur(d, &["audit", "export"], None);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|v| v["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "account.created",
            "account.created",
            "meeting.created",
            "account.disabled"
        ]
    );
    assert_eq!(lines[0]["actor"]["kind"], "operator");
    assert_eq!(lines[3]["details"]["target"]["name"], "bert");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);
    assert_eq!(
        format!("4:{}", lines[3]["hash"].as_str().unwrap_or_default()),
        head
    );
    // Incremental export to a file.
    let file = d.join("export.jsonl");
    let (ok, _, err) = klausur(
        d,
        &[
            "audit",
            "export",
            "--after",
            "2",
            "--output",
            file.to_str().expect("path"),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(err.contains("exported 2 audit records"), "{err}");
    let text = std::fs::read_to_string(&file).expect("file");
    assert_eq!(text.lines().count(), 2);

    // Changed, then removed: each named, exit status 1.
    tamper(d, "UPDATE audit_records SET details = '{}' WHERE seq = 2").await;
    let (ok, out, _) = klausur(d, &["audit", "verify"], None);
    assert!(!ok, "{out}");
    assert!(out.contains("record 2 was changed"), "{out}");
    assert!(out.contains("audit trail NOT intact"), "{out}");
    tamper(d, "DELETE FROM audit_records WHERE seq = 3").await;
    let (ok, out, _) = klausur(d, &["audit", "verify", "--json"], None);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["intact"], false);
    let problems = v["problems"].to_string();
    assert!(problems.contains("record 2 was changed"), "{problems}");
    assert!(problems.contains("record 3 is missing"), "{problems}");
}

#[tokio::test]
async fn a_noted_head_catches_records_cut_off_the_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    with_records(d);
    let (_, out, _) = klausur(d, &["audit", "verify"], None);
    let head = head_of(&out);
    let (ok, out, _) = klausur(d, &["audit", "verify", "--head", &head], None);
    assert!(ok, "{out}");
    tamper(d, "DELETE FROM audit_records WHERE seq = 4").await;
    // On its own the shorter trail looks whole; against the noted head it does not.
    let (ok, _, _) = klausur(d, &["audit", "verify"], None);
    assert!(ok);
    let (ok, out, _) = klausur(d, &["audit", "verify", "--head", &head], None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("record 4, noted earlier, is no longer in the trail"),
        "{out}"
    );
    // A malformed head is refused with the expected form.
    let (ok, _, err) = klausur(d, &["audit", "verify", "--head", "4"], None);
    assert!(!ok);
    assert!(err.contains("SEQ:HASH"), "{err}");
}
