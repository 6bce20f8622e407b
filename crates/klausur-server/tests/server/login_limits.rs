//! Password guessing (issue 19, "Limits that can be turned against users"): wrong passwords
//! from one address no longer lock the account for its owner elsewhere; concurrent guesses
//! cannot slip past the limit; and the current password of `/api/password` counts like a
//! login. Clients use distinct loopback source addresses (127.0.0.2, 127.0.0.3) as distinct
//! computers.

use std::net::IpAddr;

use klausur_store::Role;
use serde_json::json;

use crate::common::{TestServer, PASSWORD};

const LIMIT: u32 = 10;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn login(srv: &TestServer, client: &reqwest::Client, password: &str) -> u16 {
    client
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("login")
        .status()
        .as_u16()
}

async fn server() -> TestServer {
    let srv = TestServer::start_with(|c| c.login_attempts_per_15min = LIMIT).await;
    srv.user("admin", Role::Admin).await;
    srv
}

#[tokio::test]
async fn guesses_from_one_address_do_not_lock_the_owner_elsewhere() {
    let srv = server().await;
    let mallory = client_from("127.0.0.2");
    for _ in 0..LIMIT {
        assert_eq!(login(&srv, &mallory, "wrong-password-123").await, 401);
    }
    assert_eq!(login(&srv, &mallory, "wrong-password-123").await, 429);
    assert_eq!(
        login(&srv, &mallory, PASSWORD).await,
        429,
        "that address stays locked for this account"
    );
    let owner = client_from("127.0.0.3");
    assert_eq!(
        login(&srv, &owner, PASSWORD).await,
        200,
        "the owner elsewhere gets in"
    );
}

#[tokio::test]
async fn concurrent_guesses_cannot_pass_the_limit() {
    let srv = server().await;
    let mallory = client_from("127.0.0.2");
    let guesses = (0..4 * LIMIT).map(|_| login(&srv, &mallory, "wrong-password-123"));
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked, LIMIT as usize, "{statuses:?}");
    assert_eq!(refused, 3 * LIMIT as usize, "{statuses:?}");
}

#[tokio::test]
async fn the_current_password_cannot_be_guessed_without_limit() {
    let srv = server().await;
    let client = client_from("127.0.0.2");
    assert_eq!(login(&srv, &client, PASSWORD).await, 200);
    // The session's CSRF token, from the login answer of a second login.
    let v: serde_json::Value = client
        .post(format!("{}/api/login", srv.base))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let csrf = v["csrf_token"].as_str().expect("csrf").to_string();
    let change = |current: &'static str| {
        let client = client.clone();
        let csrf = csrf.clone();
        let url = format!("{}/api/password", srv.base);
        async move {
            client
                .post(url)
                .header("X-CSRF-Token", csrf)
                .json(&json!({"current_password": current, "new_password": "another-long-password-9"}))
                .send()
                .await
                .expect("password")
                .status()
                .as_u16()
        }
    };
    for _ in 0..LIMIT {
        assert_eq!(change("wrong-password-123").await, 403);
    }
    assert_eq!(change("wrong-password-123").await, 429);
}
