//! `klausur identity-ca serve`: the identity CA as a small HTTP service of its own, so that the
//! media server can run without the CA key (`[identity] remote_url`, see [`crate::identity`]).
//!
//! - `GET /public-key` (public) → `{"public_key": "<hex>"}`.
//! - `POST /issue` with `Authorization: Bearer <token>` and
//!   `{"user_id", "display_name", "kind", "device_key" (hex), "valid_minutes"}` →
//!   `{"credential" (base64), "ca_public_key" (hex), "not_after_ms"}`.
//!
//! Every field is checked as `klausur identity-ca issue` checks it; a bad one is a 400
//! `{"error": {"code": "invalid_field", "message": "<field>: ..."}}`, a missing or wrong token a
//! 401, more than the configured issuances in a minute a 429. Every issuance is logged (kind,
//! user id, lifetime, client address; never the device key or the token): that log, kept on the
//! CA's host, is what separating the CA from the media server buys.
//!
//! The token file holds one line of at least [`MIN_TOKEN_CHARS`](crate::identity::ca_protocol::MIN_TOKEN_CHARS) printable characters;
//! `klausur identity-ca init-token` writes a new random one with mode 0600.
//!
//! # Facing hostile callers
//!
//! Anyone who reaches the port can send requests without the token. Each is refused (401), but
//! the warning about it is written at most once per [`REFUSAL_LOG_INTERVAL`], with the number of
//! refusals not written since the last line (`not_logged`); so is the warning about the
//! issuance rate. The HTTP server speaks HTTP/1.1 only (its callers are klausur servers) and
//! closes a connection whose request headers have not arrived within
//! [`HEADER_READ_TIMEOUT`] of the connection's start or of the previous request, so
//! half-sent headers do not keep connections open; under TLS, the handshake has ten seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap};
use axum::routing::{get, post};
use axum::{Json, Router};
use klausur_e2ee::{IdentityCa, ParticipantKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::TlsFiles;
use crate::http::api::ApiError;
use crate::http::http_error::Refusal;
use crate::identity;
use crate::identity::ca_protocol::{check_request, load_token_file, IssueResponse, RequestError};

/// Default for `--max-issues-per-minute`.
pub const DEFAULT_ISSUES_PER_MINUTE: u32 = 600;
/// Request bodies larger than this are refused.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A connection whose request headers are not complete this long after it opened (or after the
/// previous answer) is closed. The callers are klausur servers, which send a request at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The warnings anyone can cause (a request without the token, the rate limit) are written at
/// most once per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// `klausur identity-ca serve`, validated.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub key_file: PathBuf,
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub tls: Option<TlsFiles>,
    pub issues_per_minute: u32,
}

impl ServiceConfig {
    /// Checks the flags: a listen address, TLS files (both or none, existing), the same rule as
    /// `klausur serve` for plain HTTP on a non-loopback address, and the rate.
    pub fn new(
        key_file: PathBuf,
        listen: &str,
        token_file: PathBuf,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        danger_plain_http: bool,
        issues_per_minute: u32,
    ) -> anyhow::Result<ServiceConfig> {
        let listen: SocketAddr = listen.parse().map_err(|_| {
            anyhow::anyhow!(
                "--listen {listen:?} is not an address with port, like \"127.0.0.1:8443\""
            )
        })?;
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => {
                for (flag, p) in [("--tls-cert", &cert), ("--tls-key", &key)] {
                    if !p.is_file() {
                        bail!("{flag}: file {} does not exist", p.display());
                    }
                }
                Some(TlsFiles { cert, key })
            }
            (None, None) => None,
            (Some(_), None) => bail!("--tls-key is missing (--tls-cert is given)"),
            (None, Some(_)) => bail!("--tls-cert is missing (--tls-key is given)"),
        };
        if tls.is_none() && !listen.ip().is_loopback() && !danger_plain_http {
            bail!(
                "--listen {listen} is not a loopback address and no TLS certificate is given; \
                 pass --tls-cert and --tls-key (or --danger-plain-http if a TLS proxy in front \
                 of the CA terminates TLS)"
            );
        }
        if !(1..=1_000_000).contains(&issues_per_minute) {
            bail!("--max-issues-per-minute must be between 1 and 1000000");
        }
        Ok(ServiceConfig {
            key_file,
            listen,
            token_file,
            tls,
            issues_per_minute,
        })
    }
}

/// Issuances allowed in fixed one-minute windows, for all callers together (the caller is a
/// handful of media servers, not the public).
#[derive(Debug)]
struct MinuteLimiter {
    max: u32,
    window_start: Instant,
    count: u32,
}

impl MinuteLimiter {
    fn try_take(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= Duration::from_secs(60) {
            self.window_start = now;
            self.count = 0;
        }
        if self.count >= self.max {
            return false;
        }
        self.count += 1;
        true
    }
}

/// Writes a kind of log line at most once per interval: sans-IO, the caller passes the time and
/// writes the line when told to.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    not_logged: u64,
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            last: None,
            not_logged: 0,
        }
    }

    /// One event at `now`: `Some(n)` if a line is due (with `n` events not logged since the
    /// previous line), `None` if this one is not to be logged.
    pub(crate) fn note(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.not_logged = self.not_logged.saturating_add(1);
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.not_logged))
            }
        }
    }
}

struct Inner {
    ca: IdentityCa,
    public_key_hex: String,
    token_hash: Zeroizing<[u8; 32]>,
    limiter: Mutex<MinuteLimiter>,
    /// The warning about requests without a valid token.
    unauthorized_log: Mutex<LogLimiter>,
    /// The warning about the issuance rate limit.
    rate_limit_log: Mutex<LogLimiter>,
}

/// Whether a line limited by `limiter` is due now: `Some(n)` with the lines not written since.
fn log_due(limiter: &Mutex<LogLimiter>) -> Option<u64> {
    limiter.lock().ok().and_then(|mut l| l.note(Instant::now()))
}

#[derive(Clone)]
struct CaState(Arc<Inner>);

/// Compares the presented token with the configured one in constant time (both are hashed
/// first, so neither content nor length leaks through timing).
/// The CA service's routes, for `serve` and for tests.
fn router(state: CaState) -> Router {
    Router::new()
        .route("/public-key", get(public_key))
        .route("/issue", post(issue))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn public_key(State(state): State<CaState>) -> Json<Value> {
    Json(json!({ "public_key": state.0.public_key_hex }))
}

fn kind_name(kind: ParticipantKind) -> &'static str {
    match kind {
        ParticipantKind::Staff => "staff",
        ParticipantKind::InvitedGuest => "invited_guest",
        ParticipantKind::Guest => "guest",
        ParticipantKind::PhoneGateway => "phone_gateway",
    }
}

async fn issue(
    State(state): State<CaState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let presented = crate::auth::bearer(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let authorized = presented.is_some_and(|t| crate::auth::token_matches(&state.0.token_hash, t));
    if !authorized {
        if let Some(not_logged) = log_due(&state.0.unauthorized_log) {
            tracing::warn!(
                client = %peer,
                not_logged,
                "identity CA: request without a valid token refused (at most one such line a \
                 minute; not_logged counts the others since the last one)"
            );
        }
        return Err(RequestError::Unauthorized.into());
    }
    let allowed = state
        .0
        .limiter
        .lock()
        .map(|mut l| l.try_take(Instant::now()))
        .unwrap_or(false);
    if !allowed {
        if let Some(not_logged) = log_due(&state.0.rate_limit_log) {
            tracing::warn!(
                client = %peer,
                not_logged,
                "identity CA: issuance rate limit reached (at most one such line a minute)"
            );
        }
        return Err(RequestError::RateLimited.into());
    }
    let body = body?;
    let req = check_request(&body).inspect_err(|e| {
        tracing::info!(client = %peer, "identity CA: request refused: {e}");
    })?;
    let issued = identity::issue(
        &state.0.ca,
        &req.user_id,
        &req.display_name,
        req.kind,
        &req.device_key,
        req.valid_minutes,
    )
    .map_err(|e| {
        tracing::error!("identity CA: issuance failed: {e:#}");
        Refusal::Internal
    })?;
    // The audit record: who got which identity, from which caller. Never the device key or token.
    tracing::info!(
        kind = kind_name(req.kind),
        user_id = %req.user_id,
        valid_minutes = req.valid_minutes,
        not_after_ms = issued.not_after_ms,
        client = %peer,
        "identity CA: credential issued"
    );
    Ok(Json(json!(IssueResponse {
        credential: issued.base64,
        ca_public_key: state.0.public_key_hex.clone(),
        not_after_ms: issued.not_after_ms,
    })))
}

/// Runs the CA service until SIGTERM or Ctrl-C.
pub async fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    let ca = identity::load_key_file(&config.key_file)?;
    let token = load_token_file(&config.token_file)?;
    let mut token_hash = Zeroizing::new([0u8; 32]);
    token_hash.copy_from_slice(&Sha256::digest(token.as_bytes()));
    drop(token);
    let public_key_hex = identity::public_key_hex(&ca);
    let state = CaState(Arc::new(Inner {
        ca,
        public_key_hex: public_key_hex.clone(),
        token_hash,
        limiter: Mutex::new(MinuteLimiter {
            max: config.issues_per_minute,
            window_start: Instant::now(),
            count: 0,
        }),
        unauthorized_log: Mutex::new(LogLimiter::new(REFUSAL_LOG_INTERVAL)),
        rate_limit_log: Mutex::new(LogLimiter::new(REFUSAL_LOG_INTERVAL)),
    }));
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();

    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        crate::server::wait_for_signal().await;
        tracing::info!("identity CA: shutting down");
        shutdown_handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });

    let (listener, local, scheme) =
        crate::server::bind_listener(config.listen, config.tls.as_ref())?;
    println!("klausur identity-ca: listening on {scheme}://{local} (public key {public_key_hex})");
    tracing::info!(
        listen = %local,
        public_key = %public_key_hex,
        issues_per_minute = config.issues_per_minute,
        "identity CA started"
    );
    // HTTP/1.1 only, with the header-read timeout (see the module documentation).
    crate::server::serve_http(
        listener,
        config.tls.as_ref(),
        handle,
        app,
        HEADER_READ_TIMEOUT,
    )
    .await?;
    tracing::info!("identity CA stopped");
    println!("klausur identity-ca: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use klausur_e2ee::SigningKey;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    /// The reply to a request `check_request` refuses.
    fn refused(body: &[u8]) -> ApiError {
        check_request(body).err().expect("refused").into()
    }

    fn good() -> Value {
        json!({
            "user_id": "user:1",
            "display_name": " Ada ",
            "kind": "staff",
            "device_key": hex::encode(SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes()),
            "valid_minutes": 60,
        })
    }

    #[test]
    fn a_good_request_passes() {
        let c = check_request(&body(good())).expect("valid");
        assert_eq!(c.user_id, "user:1");
        assert_eq!(c.display_name, "Ada");
        assert_eq!(c.kind, ParticipantKind::Staff);
        assert_eq!(c.valid_minutes, 60);
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(&str, Value)> = vec![
            ("user_id", json!("has space")),
            ("user_id", json!("")),
            ("user_id", json!(5)),
            ("display_name", json!("")),
            ("display_name", json!("x".repeat(500))),
            ("kind", json!("admin")),
            ("device_key", json!("abcd")),
            ("device_key", json!("zz".repeat(32))),
            ("valid_minutes", json!(0)),
            ("valid_minutes", json!(1441)),
            ("valid_minutes", json!(-5)),
            ("valid_minutes", json!("60")),
        ];
        for (field, value) in cases {
            let mut v = good();
            v[field] = value.clone();
            let err = refused(&body(v));
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{field} {value}");
            assert_eq!(err.code(), "invalid_field");
            assert!(
                err.message().starts_with(field),
                "{field}: {}",
                err.message()
            );
        }
        for field in [
            "user_id",
            "display_name",
            "kind",
            "device_key",
            "valid_minutes",
        ] {
            let mut v = good();
            v.as_object_mut().expect("object").remove(field);
            let err = refused(&body(v));
            assert!(err.message().starts_with(field), "{}", err.message());
        }
        let mut v = good();
        v["extra"] = json!(1);
        let err = refused(&body(v));
        assert!(err.message().starts_with("extra"), "{}", err.message());
        let err = refused(b"[1,2]");
        assert_eq!(err.code(), "malformed");
        let err = refused(b"\xff");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_limiter_resets_every_minute() {
        let t0 = Instant::now();
        let mut l = MinuteLimiter {
            max: 2,
            window_start: t0,
            count: 0,
        };
        assert!(l.try_take(t0));
        assert!(l.try_take(t0));
        assert!(!l.try_take(t0 + Duration::from_secs(59)));
        assert!(l.try_take(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_count_of_the_others() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(l.note(t0), Some(0), "the first is logged");
        for i in 1..=1000u64 {
            assert_eq!(l.note(t0 + Duration::from_millis(i)), None, "{i}");
        }
        assert_eq!(l.note(t0 + Duration::from_secs(59)), None);
        // The next line after the interval counts those not logged.
        assert_eq!(l.note(t0 + Duration::from_secs(60)), Some(1001));
        assert_eq!(l.note(t0 + Duration::from_secs(61)), None);
        assert_eq!(l.note(t0 + Duration::from_secs(200)), Some(1));
        // Negative control: events an interval apart are each logged.
        let mut l = LogLimiter::new(Duration::from_secs(60));
        for i in 0..5u64 {
            assert_eq!(l.note(t0 + Duration::from_secs(60 * i)), Some(0), "{i}");
        }
    }
}
