//! A klausur server running in-process on loopback ports, with a fresh in-memory database.
#![allow(dead_code)]

pub mod mls;
pub mod native;
pub mod ws;

use std::net::SocketAddr;

use klausur_e2ee::{IdentityCa, SigningKey};
use klausur_server::config::{Config, Overrides};
use klausur_server::dialin::{DialIn, PinKey};
use klausur_server::http::api;
use klausur_server::state::AppState;
use klausur_server::{auth, media};
use klausur_store::{Role, Store, User};

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub store: Store,
    pub base: String,
}

pub const PASSWORD: &str = "a-long-test-password";

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestServer::start`], with the configuration adjusted by `adjust`. The identity CA
    /// and the dial-in PIN key get fresh random keys that live in memory only.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let store = Store::open_sqlite_memory().await.expect("store");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            media_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let mut config = Config::load(None, &overrides).expect("config");
        adjust(&mut config);
        let (media, _) = media::start(klausur_server::server::media_config(&config))
            .await
            .expect("media");
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let identity_ca = IdentityCa::new(SigningKey::from_bytes(&seed));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // As `klausur serve` does: the configuration names the address actually bound.
        config.listen = addr;
        let dialin = DialIn::new(&config, PinKey::random(), None, format!("http://{addr}"));
        let state = AppState::new(config, store.clone(), media, identity_ca, dialin);
        let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TestServer {
            addr,
            state,
            store,
            base: format!("http://{addr}"),
        }
    }

    /// Like [`TestServer::start_with`], served as `klausur serve` serves
    /// ([`klausur_server::server::serve_api`]: HTTP/1.1 with the header timeout, HTTPS when
    /// `adjust` sets TLS files; then `base` is `https://localhost:<port>`).
    pub async fn start_served_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let store = Store::open_sqlite_memory().await.expect("store");
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".into()),
            media_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        let mut config = Config::load(None, &overrides).expect("config");
        adjust(&mut config);
        let (media, _) = media::start(klausur_server::server::media_config(&config))
            .await
            .expect("media");
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let identity_ca = IdentityCa::new(SigningKey::from_bytes(&seed));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        config.listen = addr;
        let base = match config.tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let dialin = DialIn::new(&config, PinKey::random(), None, format!("http://{addr}"));
        let state = AppState::new(config, store.clone(), media, identity_ca, dialin);
        let serving = state.clone();
        tokio::spawn(async move {
            let _ =
                klausur_server::server::serve_api(serving, listener, axum_server::Handle::new())
                    .await;
        });
        TestServer {
            addr,
            state,
            store,
            base,
        }
    }

    pub async fn user(&self, username: &str, role: Role) -> User {
        // One hash of the test password serves every account (argon2 is slow in a debug build).
        static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let hash = HASH.get_or_init(|| auth::hash_password(PASSWORD).expect("hash"));
        self.store
            .create_user(username, &format!("{username} Name"), hash, role, false)
            .await
            .expect("create user")
    }

    /// A session of `user_id` made directly in the store, without a login (the password check
    /// is argon2, slow in a debug build and not what most tests are about): the `Cookie` header
    /// value and the session's CSRF token.
    pub async fn session(&self, user_id: i64) -> (String, String) {
        let token = auth::new_token();
        let csrf = auth::new_token();
        self.store
            .create_session(
                &auth::token_hash(&token),
                user_id,
                &csrf,
                chrono::Utc::now() + chrono::Duration::hours(2),
            )
            .await
            .expect("session");
        (
            format!("{}={}", api::SESSION_COOKIE, token.as_str()),
            csrf.to_string(),
        )
    }

    /// An HTTP client that sends `cookie` (see [`TestServer::session`]) with every request.
    pub fn client_with_cookie(cookie: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::COOKIE, cookie.parse().expect("cookie"));
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// A logged-in HTTP client: returns it with its CSRF token.
    pub async fn login(&self, username: &str) -> (reqwest::Client, String) {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client");
        let resp = client
            .post(format!("{}/api/login", self.base))
            .json(&serde_json::json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(resp.status(), 200, "login of {username}");
        let v: serde_json::Value = resp.json().await.expect("json");
        let csrf = v["csrf_token"].as_str().expect("csrf").to_string();
        (client, csrf)
    }

    /// The meeting `id` ("Hauptausschuss", strict profile, no start time) organised by user
    /// `organiser`, made in the store.
    pub async fn strict_meeting(&self, id: &str, organiser: i64) -> klausur_store::Meeting {
        self.store
            .create_meeting(
                id,
                "Hauptausschuss",
                None,
                organiser,
                klausur_proto::SecurityProfile::Strict,
            )
            .await
            .expect("meeting")
    }

    /// A guest invitation to `meeting` created by user `by`, valid for `valid`; returns its id
    /// and token.
    pub async fn guest_invitation(
        &self,
        meeting: &str,
        name: &str,
        by: i64,
        valid: chrono::Duration,
    ) -> (i64, String) {
        let token = auth::new_token().to_string();
        let inv = self
            .store
            .create_invitation(klausur_store::NewInvitation {
                meeting_id: meeting.into(),
                token_hash: auth::token_hash(&token),
                name: name.into(),
                kind: klausur_store::InvitationKind::Guest,
                user_id: None,
                created_by: by,
                expires_at: chrono::Utc::now() + valid,
                phone_pin_hash: None,
            })
            .await
            .expect("invitation");
        (inv.id, token)
    }

    /// The in-process dial-in gateway's token (the server must have been started with
    /// `[dialin]` listening).
    pub fn gateway_token(&self) -> String {
        self.state
            .dialin
            .gateway_token()
            .expect("an in-process gateway token: start the server with [dialin] udp")
            .to_string()
    }

    pub fn anonymous(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("client")
    }
}

/// Reads from `stream` until it is closed (Ok, with the time it took) or `limit` passes.
pub fn wait_closed<S: std::io::Read>(
    stream: &mut S,
    limit: std::time::Duration,
    set_timeout: impl Fn(&mut S, std::time::Duration),
) -> Result<std::time::Duration, String> {
    let start = std::time::Instant::now();
    set_timeout(stream, std::time::Duration::from_millis(100));
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(n) => {
                return Err(format!(
                    "answered: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ))
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if start.elapsed() > limit {
                    return Err(format!("still open after {:?}", start.elapsed()));
                }
            }
            // A reset is a close too.
            Err(_) => return Ok(start.elapsed()),
        }
    }
}

/// The read timeout setter of a plain TCP stream, for [`wait_closed`].
pub fn tcp_timeout(s: &mut std::net::TcpStream, d: std::time::Duration) {
    s.set_read_timeout(Some(d)).expect("timeout");
}
