//! The monitoring endpoint `GET /metrics` (docs/operations.md, "Monitoring"): off without a
//! token, only the token opens it, its figures follow what happens (a meeting, a WebSocket, a
//! failed login, a wrong dial-in PIN), and a real Prometheus scrapes a served `klausur` with the
//! token while a scrape job with a wrong token is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use klausur_store::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;
use crate::process::{free_port, init_token, serve_cmd, start, Proc};

const TOKEN: &str = "a-scrape-token-of-forty-characters-01234";

/// One sample's value (`series value`), the series written exactly as the text format does.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// One series' value in `GET {base}/metrics` read with `token`; `None` if the request fails or
/// the series is not there.
pub async fn metric(base: &str, token: &str, series: &str) -> Option<f64> {
    let text = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    sample(&text, series)
}

/// Waits until `series` in `GET {base}/metrics` reads `want`, at most 30 s (else fails, saying
/// `what` did not happen).
pub async fn until_metric(base: &str, token: &str, series: &str, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(base, token, series).await != Some(want) {
        assert!(Instant::now() < deadline, "{what}: {series} is not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token file in `dir` holding `token`, for `[metrics] token_file`.
pub fn token_file(dir: &Path, token: &str) -> std::path::PathBuf {
    let file = dir.join("metrics.token");
    std::fs::write(&file, format!("{token}\n")).expect("metrics token");
    file
}

async fn scrape(srv: &TestServer, auth: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(format!("{}/metrics", srv.base));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.expect("GET /metrics")
}

async fn figures(srv: &TestServer) -> String {
    let r = scrape(srv, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.expect("body")
}

/// Scrapes until `series` reads `want` (the meeting actor and the connection registry settle
/// asynchronously), at most 10 s; the last text otherwise.
async fn until_reads(srv: &TestServer, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = figures(srv).await;
        if sample(&text, series) == Some(want) || Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn only_the_token_opens_the_figures_and_they_follow_the_server() {
    let srv = TestServer::start().await;
    // Off: no token configured, so nothing opens it.
    let r = scrape(&srv, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("[metrics] token_file"),
        "{body}"
    );

    assert!(srv
        .state
        .metrics
        .set_token(&Zeroizing::new(TOKEN.to_string())));
    // Without the token, with another one, or with the token not as a bearer: refused.
    for auth in [
        None,
        Some("Bearer a-scrape-token-of-forty-characters-01235".to_string()),
        Some(TOKEN.to_string()),
        Some(format!("Basic {TOKEN}")),
    ] {
        let r = scrape(&srv, auth.as_deref()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"klausur metrics\"")
        );
        assert!(!r.text().await.expect("body").contains("klausur_"));
    }
    // An administrator's session does not open it either.
    srv.user("root", Role::Admin).await;
    let root = session_cookie(&srv, "root").await;
    let r = reqwest::Client::new()
        .get(format!("{}/metrics", srv.base))
        .header("cookie", &root)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = scrape(&srv, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text().await.expect("body");
    assert_eq!(
        sample(&text, "klausur_meetings_running"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "klausur_websocket_connections"), Some(0.0));
    assert_eq!(
        sample(&text, "klausur_metrics_refused_scrapes_total"),
        Some(5.0)
    );
    assert_eq!(sample(&text, "klausur_database_reachable"), Some(1.0));
    let workers = sample(&text, "klausur_media_workers").expect("workers");
    assert_eq!(workers as usize, srv.state.config.media_workers);
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 0.0));
    assert!(text.contains(&format!(
        "klausur_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));

    // A meeting with its organiser in it.
    let olga = srv.user("olga", Role::Staff).await;
    let meeting = srv.strict_meeting("m1", olga.id).await;
    let cookie = session_cookie(&srv, "olga").await;
    let mut client = Client::connect(&srv, Some(&cookie)).await;
    let joined = client.join(&meeting.id, None, None).await;
    assert!(
        matches!(joined, klausur_proto::ServerMsg::Joined { .. }),
        "{joined:?}"
    );
    let text = until_reads(&srv, "klausur_meetings_running", 1.0).await;
    assert_eq!(
        sample(&text, "klausur_meetings_running"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "klausur_websocket_connections"), Some(1.0));

    // A failed login, counted by its reason.
    let before = sample(
        &text,
        "klausur_login_failures_total{reason=\"wrong_password\"}",
    );
    assert_eq!(before, Some(0.0), "{text}");
    let r = reqwest::Client::new()
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "olga", "password": "not-her-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let text = figures(&srv).await;
    assert_eq!(
        sample(
            &text,
            "klausur_login_failures_total{reason=\"wrong_password\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "klausur_login_failures_total{reason=\"unknown_user\"}"
        ),
        Some(0.0)
    );

    // The WebSocket closes: the figure goes back.
    client.close().await;
    let text = until_reads(&srv, "klausur_websocket_connections", 0.0).await;
    assert_eq!(
        sample(&text, "klausur_websocket_connections"),
        Some(0.0),
        "{text}"
    );
}

#[tokio::test]
async fn dial_in_pin_checks_are_counted_by_result() {
    let srv = TestServer::start_with(|c| {
        // A gateway in this process (no SIP listener runs in the test; it plays the gateway).
        c.dialin.udp = vec!["127.0.0.1:5060".parse().expect("addr")];
        c.dialin_throttle_unit = Duration::from_millis(10);
    })
    .await;
    srv.state
        .metrics
        .set_token(&Zeroizing::new(TOKEN.to_string()));
    let gateway = srv.gateway_token();
    let text = figures(&srv).await;
    for result in ["wrong", "throttled", "admit"] {
        let series = format!("klausur_dialin_pin_checks_total{{result=\"{result}\"}}");
        assert_eq!(sample(&text, &series), Some(0.0), "{text}");
    }
    // Three guesses at a number that does not exist.
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(format!("{}/api/dialin/calls", srv.base))
            .bearer_auth(&gateway)
            .json(&json!({"meeting_number": "12345678", "pin": "87654321",
                          "caller": "+49301234", "source": "127.0.0.1:5070"}))
            .send()
            .await
            .expect("check");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let text = figures(&srv).await;
    let read = |result: &str| {
        sample(
            &text,
            &format!("klausur_dialin_pin_checks_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    assert!(read("wrong") >= 1.0, "{text}");
    assert_eq!(read("wrong") + read("throttled"), 3.0, "{text}");
    assert_eq!(read("admit"), 0.0, "{text}");
}

/// Prometheus's HTTP API: the vector result of an instant query.
async fn query(http: &reqwest::Client, prometheus: &str, q: &str) -> Vec<Value> {
    let r = http
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await;
    let Ok(r) = r else { return Vec::new() };
    let body: Value = r.json().await.unwrap_or_default();
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The value of the single series an instant query returns, if it returns one.
async fn single(http: &reqwest::Client, prometheus: &str, q: &str) -> Option<f64> {
    let result = query(http, prometheus, q).await;
    match result.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

fn prometheus_config(dir: &Path, target: &str, token_file: &Path) -> std::path::PathBuf {
    let wrong = dir.join("wrong.token");
    std::fs::write(&wrong, "not-the-token-but-forty-characters-long-x\n").expect("wrong token");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: klausur\n\
         \x20   authorization:\n\
         \x20     credentials_file: {token}\n\
         \x20   static_configs:\n\
         \x20     - targets: ['{target}']\n\
         \x20 - job_name: klausur-wrong-token\n\
         \x20   authorization:\n\
         \x20     credentials_file: {wrong}\n\
         \x20   static_configs:\n\
         \x20     - targets: ['{target}']\n",
        token = token_file.display(),
        wrong = wrong.display(),
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).expect("prometheus.yml");
    path
}

#[tokio::test]
async fn prometheus_scrapes_a_served_klausur_with_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("metrics.token");
    init_token(&token_file);
    let config = dir.path().join("klausur.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\ntoken_file = {:?}\n",
            token_file.display().to_string()
        ),
    )
    .expect("config");
    let port = free_port();
    let mut cmd = serve_cmd(&dir.path().join("data"), port);
    cmd.arg("--config").arg(&config);
    let (_server, _) = start(cmd, &dir.path().join("klausur.log"));
    let target = format!("127.0.0.1:{port}");

    // Prometheus's own linter finds nothing in what the server writes.
    let token = std::fs::read_to_string(&token_file).expect("token");
    let text = reqwest::Client::new()
        .get(format!("http://{target}/metrics"))
        .bearer_auth(token.trim())
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(text.contains("klausur_media_workers"), "{text}");
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus`; scripts/setup.sh installs it)");
    {
        use std::io::Write as _;
        let mut stdin = promtool.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
    }
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let prometheus_port = free_port();
    let prometheus_config = prometheus_config(dir.path(), &target, &token_file);
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _prometheus = Proc(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", prometheus_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's `prometheus`; scripts/setup.sh installs it)"),
    );
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let http = reqwest::Client::new();

    // Both jobs scraped at least twice: the one with the token is up, the other is refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut up, mut refused, mut workers) = (None, None, None);
    while Instant::now() < deadline {
        up = single(&http, &prometheus, "up{job=\"klausur\"}").await;
        refused = single(&http, &prometheus, "up{job=\"klausur-wrong-token\"}").await;
        workers = single(&http, &prometheus, "klausur_media_workers{job=\"klausur\"}").await;
        let scrapes = single(
            &http,
            &prometheus,
            "count_over_time(up{job=\"klausur-wrong-token\"}[1m])",
        )
        .await;
        if up == Some(1.0) && workers.is_some() && scrapes.is_some_and(|n| n >= 2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    assert_eq!(up, Some(1.0), "the scrape with the token failed:\n{log}");
    assert_eq!(
        refused,
        Some(0.0),
        "the scrape with a wrong token was not refused"
    );
    assert!(workers.is_some_and(|w| w >= 1.0), "{workers:?}");
    // What Prometheus stored is what the server counts: the wrong job's refusals.
    let counted = single(
        &http,
        &prometheus,
        "klausur_metrics_refused_scrapes_total{job=\"klausur\"}",
    )
    .await;
    assert!(counted.is_some_and(|n| n >= 1.0), "{counted:?}");
    let rss = single(
        &http,
        &prometheus,
        "process_resident_memory_bytes{job=\"klausur\"}",
    )
    .await;
    assert!(rss.is_some_and(|b| b > 1e6), "{rss:?}");
    assert_eq!(
        single(
            &http,
            &prometheus,
            "klausur_meetings_running{job=\"klausur\"}"
        )
        .await,
        Some(0.0)
    );
}

/// The alert rules shipped in docs/monitoring: Prometheus's own tool checks them and runs their
/// tests (each alert fires when it should and is silent before), and every series they name is
/// one the server writes.
#[test]
fn the_shipped_alert_rules_pass_promtool_and_name_only_real_series() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/monitoring");
    for args in [
        ["check", "rules", "klausur-alerts.yml"],
        ["test", "rules", "klausur-alerts.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's `prometheus`; scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Everything a node can report, the optional parts included.
    let snapshot = klausur_server::metrics::Snapshot {
        workers: vec![Default::default()],
        process: klausur_server::metrics::ProcessFigures::read(),
        sip: Some(Default::default()),
        cluster: Some(Default::default()),
        ..Default::default()
    };
    let text = klausur_server::metrics::render(&snapshot);
    let written: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let rules = std::fs::read_to_string(dir.join("klausur-alerts.yml")).expect("rules");
    let mut named = std::collections::BTreeSet::new();
    for start in ["klausur_", "process_"] {
        for (i, _) in rules.match_indices(start) {
            let name: String = rules[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            named.insert(name);
        }
    }
    assert!(named.len() >= 8, "{named:?}");
    for name in &named {
        assert!(
            written.contains(name.as_str()),
            "the rules name {name}, which the server does not write: {written:?}"
        );
    }
}
