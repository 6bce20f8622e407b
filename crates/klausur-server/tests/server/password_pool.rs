//! Password hashing off the async workers (issue 19, "Limits that can be turned against
//! users"): 144 logins per second ran argon2 on both worker threads and delayed signaling to
//! 121 ms. Logins, password changes and new accounts now hash and check on a bounded blocking
//! pool: while every worker is busy they wait in a bounded queue, beyond it they are answered
//! 503 "busy" (and the refused login does not count as a try), and signaling goes on meanwhile.
//!
//! Deterministic, without timing: the test holds the pool's only worker with a job of its own
//! and observes the queue through the pool's counters. The server runs on the test's
//! single-threaded runtime, so a WebSocket that answers while a password job runs shows that
//! the job is not on the runtime's thread. Negative controls: once the worker is free, the
//! waiting login and the refused ones succeed.

use std::time::Duration;

use klausur_proto::{ClientMsg, ServerMsg};
use klausur_store::Role;
use serde_json::json;

use crate::common::ws::Client;
use crate::common::{TestServer, PASSWORD};

async fn login(srv: &TestServer, username: &str, password: &str) -> (u16, String) {
    let resp = srv
        .anonymous()
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("login");
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code)
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

/// Occupies the pool's worker until the returned sender is used (or dropped).
async fn hold_the_worker(
    srv: &TestServer,
) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let pool = srv.state.passwords.clone();
    let job = tokio::spawn(async move {
        let _ = pool.run(move || held.recv()).await;
    });
    let pool = srv.state.passwords.clone();
    eventually("the test's job runs", || pool.running() == 1).await;
    (release, job)
}

#[tokio::test]
async fn logins_wait_for_a_password_worker_and_signaling_goes_on() {
    let srv = TestServer::start_with(|c| {
        c.password_workers = 1;
        c.password_queue = 1;
        c.login_attempts_per_15min = 2;
    })
    .await;
    srv.user("olga", Role::Staff).await;
    srv.user("sam", Role::Staff).await;
    let mut ws = Client::connect(&srv, None).await;

    let (release, holder) = hold_the_worker(&srv).await;
    let waiting = {
        let base = srv.base.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/api/login"))
                .json(&json!({"username": "olga", "password": PASSWORD}))
                .send()
                .await
                .expect("login")
                .status()
                .as_u16()
        })
    };
    let pool = srv.state.passwords.clone();
    eventually("Olga's login waits for the worker", || pool.waiting() == 1).await;
    // The queue is full: the next login is told to come back, at once.
    assert_eq!(
        login(&srv, "sam", PASSWORD).await,
        (503, "busy".to_string())
    );
    // Signaling goes on while a password job runs and another waits.
    ws.send(&ClientMsg::Ping).await;
    assert!(matches!(ws.next().await, ServerMsg::Pong));
    assert!(!waiting.is_finished(), "Olga's login still waits");

    release.send(()).expect("release");
    holder.await.expect("holder");
    assert_eq!(waiting.await.expect("login"), 200);
    // The refused login did not count as one of Sam's tries: two wrong ones, then the limit.
    assert_eq!(login(&srv, "sam", "wrong-password-1").await.0, 401);
    assert_eq!(login(&srv, "sam", "wrong-password-1").await.0, 401);
    assert_eq!(login(&srv, "sam", "wrong-password-1").await.0, 429);
    // Negative control: with the worker free, Sam's real login passes (from elsewhere).
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let status = elsewhere
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "sam", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .status();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn password_changes_and_new_accounts_use_the_pool_too() {
    let srv = TestServer::start_with(|c| {
        c.password_workers = 1;
        c.password_queue = 0;
    })
    .await;
    srv.user("ada", Role::Admin).await;
    let (ada, csrf) = srv.login("ada").await;
    let change = || {
        ada.post(format!("{}/api/password", srv.base))
            .header("x-csrf-token", &csrf)
            .json(&json!({"current_password": PASSWORD, "new_password": "another-long-password-9"}))
            .send()
    };
    let create = || {
        ada.post(format!("{}/api/users", srv.base))
            .header("x-csrf-token", &csrf)
            .json(&json!({
                "username": "neu",
                "display_name": "Neu",
                "password": "a-new-users-long-password",
                "role": "staff",
            }))
            .send()
    };

    let (release, holder) = hold_the_worker(&srv).await;
    assert_eq!(change().await.expect("change").status(), 503);
    assert_eq!(create().await.expect("create").status(), 503);
    release.send(()).expect("release");
    holder.await.expect("holder");
    // Negative control: with the worker free both work.
    assert_eq!(create().await.expect("create").status(), 201);
    assert_eq!(change().await.expect("change").status(), 204);
}
