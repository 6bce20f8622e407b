//! Authorization of every HTTP route against every kind of caller: anonymous, a lobby guest
//! (no invitation, a display name), an invited guest, staff, a moderator, an administrator, a
//! removed participant and a participant of another meeting; plus CSRF and origin checks.
//!
//! The route list comes from the server itself ([`klausur_server::http::api::routes`], the table the
//! router is built from): a route without a case here fails [`every_route_against_every_actor`],
//! and so does a case for a route that no longer exists. What each of them may do once in a
//! meeting (the signaling messages) is `tests/server/signaling_authz.rs`.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use klausur_proto::SecurityProfile;
use klausur_server::auth;
use klausur_store::{BanSubject, Role};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common;
use crate::common::TestServer;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Actor {
    Anonymous,
    /// Knows the meeting's link, has no invitation: waits in the lobby under a name.
    LobbyGuest,
    Guest,
    Staff,
    Moderator,
    Admin,
    /// Holds an invitation whose holder a moderator removed from the meeting.
    Removed,
    /// Holds an invitation to another meeting.
    Outsider,
}

const ACTORS: [Actor; 8] = [
    Actor::Anonymous,
    Actor::LobbyGuest,
    Actor::Guest,
    Actor::Staff,
    Actor::Moderator,
    Actor::Admin,
    Actor::Removed,
    Actor::Outsider,
];

struct Fixture {
    srv: TestServer,
    meeting: String,
    organiser: i64,
    guest_token: String,
    removed_token: String,
    outsider_token: String,
    /// Each actor's HTTP client, CSRF token and session cookie (the last two for accounts).
    clients: Vec<(Actor, reqwest::Client, Option<String>, Option<String>)>,
}

impl Fixture {
    /// The actor's own invitation token, if it has one.
    fn own_token(&self, actor: Actor) -> &str {
        match actor {
            Actor::Guest => &self.guest_token,
            Actor::Removed => &self.removed_token,
            Actor::Outsider => &self.outsider_token,
            _ => "no-token-for-this-actor",
        }
    }
}

async fn invitation(srv: &TestServer, meeting: &str, name: &str, by: i64) -> (i64, String) {
    srv.guest_invitation(meeting, name, by, Duration::hours(1))
        .await
}

async fn fixture() -> Fixture {
    let srv = TestServer::start().await;
    // The monitoring endpoint is on (a token configured) and still refuses every actor: only
    // the token opens it (tests/server/metrics.rs).
    srv.state.metrics.set_token(&zeroize::Zeroizing::new(
        "a-scrape-token-nobody-here-presents-0123".to_string(),
    ));
    let root = srv.user("root", Role::Admin).await;
    let olga = srv.user("olga", Role::Staff).await;
    let mo = srv.user("mo", Role::Staff).await;
    let sam = srv.user("sam", Role::Staff).await;
    let otto = srv.user("otto", Role::Staff).await;
    let m = srv
        .store
        .create_meeting("meet1", "Ausschuss", None, olga.id, SecurityProfile::Strict)
        .await
        .expect("meeting");
    let other = srv
        .store
        .create_meeting("meet2", "Beirat", None, otto.id, SecurityProfile::Strict)
        .await
        .expect("other meeting");
    srv.store.add_moderator(&m.id, mo.id).await.expect("mod");
    let (_, guest_token) = invitation(&srv, &m.id, "Gina Gast", olga.id).await;
    let (rex, removed_token) = invitation(&srv, &m.id, "Rex Raus", olga.id).await;
    let (_, outsider_token) = invitation(&srv, &other.id, "Oda Anders", otto.id).await;
    srv.store
        .add_ban(&m.id, BanSubject::Invitation(rex), "Mo", Utc::now())
        .await
        .expect("ban");
    // Sessions made in the store (logging in is tested on its own, below).
    let mut clients = Vec::new();
    for a in ACTORS {
        let user = match a {
            Actor::Staff => Some(sam.id),
            Actor::Moderator => Some(mo.id),
            Actor::Admin => Some(root.id),
            _ => None,
        };
        let (client, csrf, cookie) = match user {
            Some(id) => {
                let (cookie, csrf) = srv.session(id).await;
                (
                    TestServer::client_with_cookie(&cookie),
                    Some(csrf),
                    Some(cookie),
                )
            }
            None => (srv.anonymous(), None, None),
        };
        clients.push((a, client, csrf, cookie));
    }
    Fixture {
        srv,
        meeting: m.id,
        organiser: olga.id,
        guest_token,
        removed_token,
        outsider_token,
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
        // A message is one readable sentence (a string continued without `\` keeps the
        // indentation's spaces).
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.contains("  "),
            "{path}: spaces in the message: {message:?}"
        );
    }
    (status, v)
}

/// A request's body: the same for everyone, or what each actor would naturally send.
enum Body {
    None,
    Same(Value),
    PerActor(fn(Actor, &Fixture) -> Value),
}

/// One request against every actor: the route (as the server's table names it), the path with
/// placeholders (`MEETING`, `OWN`: the actor's own invitation token, `NEWUSER`: a fresh account,
/// `NEWINV`: a fresh invitation to the meeting, each made for this request), and the status each
/// actor must get, in the order of [`ACTORS`].
struct Case {
    method: Method,
    route: &'static str,
    path: &'static str,
    body: Body,
    expect: [u16; 8],
}

fn case(method: Method, route: &'static str, body: Body, expect: [u16; 8]) -> Case {
    Case {
        method,
        route,
        path: route,
        body,
        expect,
    }
}

fn device_key() -> String {
    hex::encode(
        klausur_e2ee::SigningKey::from_bytes(&[8; 32])
            .verifying_key()
            .to_bytes(),
    )
}

/// Each actor's own way to ask for an identity credential: a lobby guest by name for the
/// meeting, invitation holders with their token, staff by their session, anonymous with
/// nothing.
fn credential_request(actor: Actor, f: &Fixture) -> Value {
    match actor {
        Actor::LobbyGuest => {
            json!({"device_key": device_key(), "meeting_id": f.meeting, "display_name": "Lotte Lobby"})
        }
        Actor::Guest | Actor::Removed | Actor::Outsider => {
            json!({"device_key": device_key(), "invite_token": f.own_token(actor), "meeting_id": f.meeting})
        }
        _ => json!({"device_key": device_key()}),
    }
}

/// The cases, per route of the server's table. Status per actor:
/// anonymous, lobby guest, guest, staff, moderator, admin, removed, outsider.
fn cases(sam: i64) -> Vec<Case> {
    use Method as M;
    vec![
        case(
            M::GET,
            "/api/session",
            Body::None,
            [401, 401, 401, 200, 200, 200, 401, 401],
        ),
        case(
            M::POST,
            "/api/login",
            Body::PerActor(
                |a, _| json!({"username": format!("nobody-{a:?}"), "password": "wrong-password-x"}),
            ),
            [401; 8],
        ),
        case(
            M::POST,
            "/api/password",
            Body::Same(
                json!({"current_password": "wrong-password-x", "new_password": "something-long-enough"}),
            ),
            [401, 401, 401, 403, 403, 403, 401, 401],
        ),
        case(
            M::GET,
            "/api/users",
            Body::None,
            [401, 401, 401, 403, 403, 200, 401, 401],
        ),
        case(
            M::POST,
            "/api/users",
            Body::PerActor(
                |a, _| json!({"username": format!("neu-{a:?}").to_lowercase(), "display_name": "Neu", "password": "long-enough-password", "role": "staff"}),
            ),
            [401, 401, 401, 403, 403, 201, 401, 401],
        ),
        Case {
            method: M::POST,
            route: "/api/users/{id}/disable",
            path: "/api/users/NEWUSER/disable",
            body: Body::None,
            expect: [401, 401, 401, 403, 403, 204, 401, 401],
        },
        case(
            M::GET,
            "/api/status",
            Body::None,
            [401, 401, 401, 403, 403, 200, 401, 401],
        ),
        case(
            M::GET,
            "/api/audit",
            Body::None,
            [401, 401, 401, 403, 403, 200, 401, 401],
        ),
        case(
            M::GET,
            "/api/audit/verify",
            Body::None,
            [401, 401, 401, 403, 403, 200, 401, 401],
        ),
        case(
            M::GET,
            "/api/meetings",
            Body::None,
            [401, 401, 401, 200, 200, 200, 401, 401],
        ),
        case(
            M::POST,
            "/api/meetings",
            Body::Same(json!({"title": "Neu"})),
            [401, 401, 401, 201, 201, 201, 401, 401],
        ),
        Case {
            method: M::GET,
            route: "/api/meetings/{id}",
            path: "/api/meetings/MEETING",
            body: Body::None,
            expect: [401, 401, 401, 403, 200, 200, 401, 401],
        },
        Case {
            method: M::GET,
            route: "/api/meetings/{id}/invitations",
            path: "/api/meetings/MEETING/invitations",
            body: Body::None,
            expect: [401, 401, 401, 403, 200, 200, 401, 401],
        },
        Case {
            method: M::POST,
            route: "/api/meetings/{id}/invitations",
            path: "/api/meetings/MEETING/invitations",
            body: Body::Same(json!({"name": "Neuer Gast", "kind": "guest"})),
            expect: [401, 401, 401, 403, 201, 201, 401, 401],
        },
        Case {
            method: M::DELETE,
            route: "/api/meetings/{id}/invitations/{iid}",
            path: "/api/meetings/MEETING/invitations/NEWINV",
            body: Body::None,
            expect: [401, 401, 401, 403, 204, 204, 401, 401],
        },
        Case {
            method: M::POST,
            route: "/api/meetings/{id}/moderators",
            path: "/api/meetings/MEETING/moderators",
            body: Body::Same(json!({"user_id": sam})),
            // Only the organiser (or an administrator) grants moderation.
            expect: [401, 401, 401, 403, 403, 204, 401, 401],
        },
        Case {
            method: M::GET,
            route: "/api/meetings/{id}/public",
            path: "/api/meetings/MEETING/public",
            body: Body::None,
            expect: [200; 8],
        },
        Case {
            method: M::GET,
            route: "/api/meetings/{id}/public",
            path: "/api/meetings/nonexistent/public",
            body: Body::None,
            expect: [404; 8],
        },
        Case {
            method: M::GET,
            route: "/api/invite/{token}",
            path: "/api/invite/OWN",
            body: Body::None,
            // Each holder sees their own invitation, the removed one too (the page says she must
            // wait for a moderator); nobody else has one.
            expect: [404, 404, 200, 404, 404, 404, 200, 200],
        },
        Case {
            method: M::GET,
            route: "/api/invite/{token}",
            path: "/api/invite/not-a-token",
            body: Body::None,
            expect: [404; 8],
        },
        case(M::GET, "/api/identity/ca", Body::None, [200; 8]),
        case(
            M::POST,
            "/api/identity/credential",
            Body::PerActor(credential_request),
            // The outsider's invitation is for the other meeting: refused like a wrong token.
            [401, 200, 200, 200, 200, 200, 403, 404],
        ),
        // The dial-in gateway's API: the gateway token only, never a session or invitation.
        case(
            M::POST,
            "/api/dialin/calls",
            Body::Same(
                json!({"meeting_number": "12345678", "pin": "12345678", "caller": null, "source": "x"}),
            ),
            [401; 8],
        ),
        Case {
            method: M::DELETE,
            route: "/api/dialin/calls/{ticket}",
            path: "/api/dialin/calls/OWN",
            body: Body::None,
            expect: [401; 8],
        },
        // Open to everyone: who joins what is decided by the signaling
        // (tests/server/signaling_authz.rs).
        case(M::GET, "/api/ws", Body::None, [101; 8]),
        case(M::GET, "/healthz", Body::None, [200; 8]),
        // Monitoring: the `[metrics] token_file` token only, never a session.
        case(M::GET, "/metrics", Body::None, [401; 8]),
        // Last: it ends the sessions the cases above use.
        case(
            M::POST,
            "/api/logout",
            Body::None,
            [401, 401, 401, 204, 204, 204, 401, 401],
        ),
    ]
}

/// The status of a WebSocket upgrade on `/api/ws` with `cookie` (a session, or none).
async fn upgrade_status(f: &Fixture, cookie: Option<&str>) -> u16 {
    let headers: Vec<(&str, String)> = cookie
        .map(|c| ("cookie", c.to_string()))
        .into_iter()
        .collect();
    match common::ws::upgrade(&f.srv, None, &headers).await {
        Ok(_) => 101,
        Err((status, _)) => status,
    }
}

#[tokio::test]
async fn every_route_against_every_actor() {
    let f = fixture().await;
    let sam = f
        .srv
        .store
        .user_by_username("sam")
        .await
        .expect("q")
        .expect("sam");
    let cases = cases(sam.id);

    // Every route of the server has a case, and every case a route.
    let served: BTreeSet<(String, String)> = klausur_server::http::api::routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let covered: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.method.to_string(), c.route.to_string()))
        .collect();
    let missing: Vec<_> = served.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without an authorization case: {missing:?}"
    );
    let stale: Vec<_> = covered.difference(&served).collect();
    assert!(
        stale.is_empty(),
        "cases for routes the server no longer has: {stale:?}"
    );

    let mut wrong = Vec::new();
    for c in &cases {
        for (i, (actor, client, csrf, cookie)) in f.clients.iter().enumerate() {
            let mut p = c
                .path
                .replace("MEETING", &f.meeting)
                .replace("OWN", f.own_token(*actor));
            if p.contains("NEWUSER") {
                let u = f.srv.user(&format!("target-{i}"), Role::Staff).await;
                p = p.replace("NEWUSER", &u.id.to_string());
            }
            if p.contains("NEWINV") {
                let (id, _) = invitation(&f.srv, &f.meeting, "Zoe Ziel", f.organiser).await;
                p = p.replace("NEWINV", &id.to_string());
            }
            let status = if c.route == "/api/ws" {
                upgrade_status(&f, cookie.as_deref()).await
            } else {
                let body = match &c.body {
                    Body::None => None,
                    Body::Same(v) => Some(v.clone()),
                    Body::PerActor(make) => Some(make(*actor, &f)),
                };
                call(&f, client, csrf.as_deref(), c.method.clone(), &p, body)
                    .await
                    .0
            };
            if status != c.expect[i] {
                wrong.push(format!(
                    "{} {p} as {actor:?}: {status}, expected {}",
                    c.method, c.expect[i]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "authorization mismatches:\n{}",
        wrong.join("\n")
    );

    // Anything else under /api/ is a clear 404 for everyone.
    for (actor, client, csrf, _) in &f.clients {
        let (status, _) = call(
            &f,
            client,
            csrf.as_deref(),
            Method::GET,
            "/api/nonexistent",
            None,
        )
        .await;
        assert_eq!(status, 404, "/api/nonexistent as {actor:?}");
    }
}

#[tokio::test]
async fn admin_routes_and_revocation() {
    let f = fixture().await;
    let m = f.meeting.clone();
    let new_user = json!({"username": "neu", "display_name": "Neu", "password": "long-enough-password", "role": "staff"});
    for (actor, client, csrf, _) in &f.clients {
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
    for (actor, client, csrf, _) in &f.clients {
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
