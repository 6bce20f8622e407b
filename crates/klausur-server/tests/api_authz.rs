//! Authorization of every HTTP route against anonymous, guest (invitation holder), staff,
//! moderator, administrator and a removed participant; plus CSRF and origin checks.

mod common;

use chrono::{Duration, Utc};
use common::TestServer;
use klausur_proto::SecurityProfile;
use klausur_server::auth;
use klausur_store::{BanSubject, Role};
use reqwest::Method;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Actor {
    Anonymous,
    Guest,
    Staff,
    Moderator,
    Admin,
    Removed,
}

const ACTORS: [Actor; 6] = [
    Actor::Anonymous,
    Actor::Guest,
    Actor::Staff,
    Actor::Moderator,
    Actor::Admin,
    Actor::Removed,
];

struct Fixture {
    srv: TestServer,
    meeting: String,
    guest_token: String,
    removed_token: String,
    clients: Vec<(Actor, reqwest::Client, Option<String>)>,
}

async fn invitation(srv: &TestServer, meeting: &str, name: &str, by: i64) -> (i64, String) {
    srv.guest_invitation(meeting, name, by, Duration::hours(1))
        .await
}

async fn fixture() -> Fixture {
    let srv = TestServer::start().await;
    srv.user("root", Role::Admin).await;
    let olga = srv.user("olga", Role::Staff).await;
    let mo = srv.user("mo", Role::Staff).await;
    srv.user("sam", Role::Staff).await;
    let m = srv
        .store
        .create_meeting("meet1", "Ausschuss", None, olga.id, SecurityProfile::Strict)
        .await
        .expect("meeting");
    srv.store.add_moderator(&m.id, mo.id).await.expect("mod");
    let (_, guest_token) = invitation(&srv, &m.id, "Gina Gast", olga.id).await;
    let (rex, removed_token) = invitation(&srv, &m.id, "Rex Raus", olga.id).await;
    srv.store
        .add_ban(&m.id, BanSubject::Invitation(rex), "Mo", Utc::now())
        .await
        .expect("ban");
    let mut clients = Vec::new();
    for a in ACTORS {
        let (client, csrf) = match a {
            Actor::Staff => {
                let (c, t) = srv.login("sam").await;
                (c, Some(t))
            }
            Actor::Moderator => {
                let (c, t) = srv.login("mo").await;
                (c, Some(t))
            }
            Actor::Admin => {
                let (c, t) = srv.login("root").await;
                (c, Some(t))
            }
            _ => (srv.anonymous(), None),
        };
        clients.push((a, client, csrf));
    }
    Fixture {
        srv,
        meeting: m.id,
        guest_token,
        removed_token,
        clients,
    }
}

async fn call(
    f: &Fixture,
    client: &reqwest::Client,
    csrf: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, format!("{}{}", f.srv.base, path));
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path}: error without code/message: {text}"
        );
    }
    (status, v)
}

/// Expected status per actor, in the order of [`ACTORS`].
type Row = (Method, &'static str, Option<Value>, [u16; 6]);

#[tokio::test]
async fn every_route_against_every_actor() {
    let f = fixture().await;
    let m = f.meeting.clone();
    let g = f.guest_token.clone();
    let r = f.removed_token.clone();
    let sam = f
        .srv
        .store
        .user_by_username("sam")
        .await
        .expect("q")
        .expect("sam");
    let inv_ids: Vec<i64> = f
        .srv
        .store
        .list_invitations(&m)
        .await
        .expect("list")
        .iter()
        .map(|i| i.id)
        .collect();
    let _ = inv_ids;

    //                                             anon guest staff mod  admin removed
    let rows: Vec<Row> = vec![
        (
            Method::GET,
            "/api/session",
            None,
            [401, 401, 200, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/users",
            None,
            [401, 401, 403, 403, 200, 401],
        ),
        (
            Method::GET,
            "/api/meetings",
            None,
            [401, 401, 200, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/meetings",
            Some(json!({"title": "Neu"})),
            [401, 401, 201, 201, 201, 401],
        ),
        (
            Method::GET,
            "/api/meetings/MEETING",
            None,
            [401, 401, 403, 200, 200, 401],
        ),
        (
            Method::GET,
            "/api/meetings/MEETING/invitations",
            None,
            [401, 401, 403, 200, 200, 401],
        ),
        (
            Method::POST,
            "/api/meetings/MEETING/invitations",
            Some(json!({"name": "Neuer Gast", "kind": "guest"})),
            [401, 401, 403, 201, 201, 401],
        ),
        (
            Method::POST,
            "/api/meetings/MEETING/moderators",
            Some(json!({"user_id": sam.id})),
            [401, 401, 403, 204, 204, 401],
        ),
        (Method::GET, "/api/meetings/MEETING/public", None, [200; 6]),
        (
            Method::GET,
            "/api/meetings/nonexistent/public",
            None,
            [404; 6],
        ),
        (
            Method::GET,
            "/api/invite/OWN",
            None,
            [404, 200, 404, 404, 404, 200],
        ),
        (Method::GET, "/api/invite/not-a-token", None, [404; 6]),
        (
            Method::POST,
            "/api/password",
            Some(
                json!({"current_password": "wrong-password-x", "new_password": "something-long-enough"}),
            ),
            [401, 401, 403, 403, 403, 401],
        ),
        // The dial-in gateway's API: the gateway token only, never a session or invitation.
        (
            Method::POST,
            "/api/dialin/calls",
            Some(
                json!({"meeting_number": "12345678", "pin": "12345678", "caller": null, "source": "x"}),
            ),
            [401; 6],
        ),
        (Method::DELETE, "/api/dialin/calls/OWN", None, [401; 6]),
        (Method::GET, "/api/nonexistent", None, [404; 6]),
    ];
    for (method, path, body, expected) in rows {
        for (i, (actor, client, csrf)) in f.clients.iter().enumerate() {
            let own = match actor {
                Actor::Guest => g.as_str(),
                Actor::Removed => r.as_str(),
                _ => "no-token-for-this-actor",
            };
            let p = path.replace("MEETING", &m).replace("OWN", own);
            let (status, _) = call(
                &f,
                client,
                csrf.as_deref(),
                method.clone(),
                &p,
                body.clone(),
            )
            .await;
            assert_eq!(status, expected[i], "{method} {p} as {actor:?}");
        }
    }
}

#[tokio::test]
async fn admin_routes_and_revocation() {
    let f = fixture().await;
    let m = f.meeting.clone();
    let new_user = json!({"username": "neu", "display_name": "Neu", "password": "long-enough-password", "role": "staff"});
    for (actor, client, csrf) in &f.clients {
        let (status, _) = call(
            &f,
            client,
            csrf.as_deref(),
            Method::POST,
            "/api/users",
            Some(new_user.clone()),
        )
        .await;
        let expected = match actor {
            Actor::Admin => 201,
            Actor::Staff | Actor::Moderator => 403,
            _ => 401,
        };
        assert_eq!(status, expected, "POST /api/users as {actor:?}");
    }
    let neu = f
        .srv
        .store
        .user_by_username("neu")
        .await
        .expect("q")
        .expect("created");
    assert!(
        neu.must_change_password,
        "accounts made by an admin start with a forced change"
    );
    let inv = f.srv.store.list_invitations(&m).await.expect("list")[0].id;
    for (actor, client, csrf) in &f.clients {
        let disable = format!("/api/users/{}/disable", neu.id);
        let (s1, _) = call(&f, client, csrf.as_deref(), Method::POST, &disable, None).await;
        let revoke = format!("/api/meetings/{m}/invitations/{inv}");
        let (s2, _) = call(&f, client, csrf.as_deref(), Method::DELETE, &revoke, None).await;
        match actor {
            Actor::Admin => {
                assert_eq!(s1, 204);
                assert_eq!(s2, 204);
            }
            Actor::Moderator => {
                assert_eq!(s1, 403);
                assert_eq!(s2, 204);
            }
            Actor::Staff => {
                assert_eq!(s1, 403);
                assert_eq!(s2, 403);
            }
            _ => {
                assert_eq!(s1, 401);
                assert_eq!(s2, 401);
            }
        }
    }
    // A revoked invitation no longer opens anything.
    let (status, _) = call(
        &f,
        &f.srv.anonymous(),
        None,
        Method::GET,
        &format!("/api/invite/{}", f.guest_token),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // A disabled account cannot log in.
    let resp = f
        .srv
        .anonymous()
        .post(format!("{}/api/login", f.srv.base))
        .json(&json!({"username": "neu", "password": "long-enough-password"}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn state_changes_need_csrf_token_and_same_origin() {
    let f = fixture().await;
    let (client, csrf) = f.srv.login("mo").await;
    let url = format!("{}/api/meetings", f.srv.base);
    // Negative controls: without token, with a wrong token, from another origin.
    let no_token = client
        .post(&url)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .expect("req");
    assert_eq!(no_token.status(), 403);
    let wrong = client
        .post(&url)
        .header("X-CSRF-Token", "forged")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .expect("req");
    assert_eq!(wrong.status(), 403);
    let cross = client
        .post(&url)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", "https://evil.example")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .expect("req");
    assert_eq!(cross.status(), 403);
    let ok = client
        .post(&url)
        .header("X-CSRF-Token", &csrf)
        .header("Origin", f.srv.base.clone())
        .json(&json!({"title": "x"}))
        .send()
        .await
        .expect("req");
    assert_eq!(ok.status(), 201);
}

#[tokio::test]
async fn session_cookie_is_httponly_and_strict() {
    let f = fixture().await;
    let resp = f
        .srv
        .anonymous()
        .post(format!("{}/api/login", f.srv.base))
        .json(&json!({"username": "sam", "password": common::PASSWORD}))
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .expect("cookie")
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        !cookie.contains("Secure"),
        "no Secure on plain loopback HTTP: {cookie}"
    );
}

#[tokio::test]
async fn login_is_rate_limited_and_forced_password_change_blocks_work() {
    let f = fixture().await;
    let c = f.srv.anonymous();
    let url = format!("{}/api/login", f.srv.base);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let s = c
            .post(&url)
            .json(&json!({"username": "sam", "password": "wrong password!"}))
            .send()
            .await
            .expect("req")
            .status()
            .as_u16();
        statuses.push(s);
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[11], 429, "{statuses:?}");
    // Even the right password is refused while limited.
    let s = c
        .post(&url)
        .json(&json!({"username": "sam", "password": common::PASSWORD}))
        .send()
        .await
        .expect("req")
        .status();
    assert_eq!(s, 429);

    // An account that must change its password can do nothing else.
    let hash = auth::hash_password(common::PASSWORD).expect("hash");
    f.srv
        .store
        .create_user("fresh", "Fresh", &hash, Role::Staff, true)
        .await
        .expect("user");
    let (client, csrf) = f.srv.login("fresh").await;
    let (s, v) = call(&f, &client, Some(&csrf), Method::GET, "/api/meetings", None).await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["code"], "password_change_required");
    let (s, _) = call(
        &f,
        &client,
        Some(&csrf),
        Method::POST,
        "/api/password",
        Some(json!({"current_password": common::PASSWORD, "new_password": "short"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(
        &f,
        &client,
        Some(&csrf),
        Method::POST,
        "/api/password",
        Some(json!({"current_password": common::PASSWORD, "new_password": "a brand new password"})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(&f, &client, Some(&csrf), Method::GET, "/api/meetings", None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn malformed_bodies_get_clear_errors() {
    let f = fixture().await;
    let (client, csrf) = f.srv.login("mo").await;
    let resp = client
        .post(format!("{}/api/meetings", f.srv.base))
        .header("X-CSRF-Token", &csrf)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("json");
    assert_eq!(v["error"]["code"], "malformed");
    let (s, v) = call(
        &f,
        &client,
        Some(&csrf),
        Method::POST,
        "/api/meetings",
        Some(json!({"title": ""})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("title"));
    let (s, _) = call(
        &f,
        &client,
        Some(&csrf),
        Method::POST,
        &format!("/api/meetings/{}/invitations", f.meeting),
        Some(json!({"name": "x", "kind": "emperor"})),
    )
    .await;
    assert_eq!(s, 422);
}
