//! The HTTP API (`/api/...`), the WebSocket upgrade and the static web client.
//!
//! Authorization is decided by the extractors [`Session`] (any logged-in account, also one
//! that must still change its password), [`Staff`] (a logged-in account ready to work) and
//! [`Admin`]; per-meeting rights by [`can_manage`]. State-changing requests need the session's
//! CSRF token in `X-CSRF-Token` and a same-origin `Origin`; cookies are HttpOnly and
//! SameSite=Strict. Handlers return typed errors ([`Refusal`] and the errors of the parts they
//! call); they become JSON replies in exactly one place, [`crate::http::http_error`].
//!
//! Per-address limits take the client address from [`ClientIp`] (behind trusted proxies, the
//! forwarded one). Passwords are checked and hashed on [`auth::PasswordPool`], never on the
//! async workers. Ending a session ends its meeting WebSockets too ([`crate::connections`]):
//! logout those of the session, disabling an account and changing its password those of the
//! account (a password change keeps the session that made it, HTTP and WebSockets, and ends
//! every other session of the account).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, on, MethodFilter};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use klausur_proto::SecurityProfile;
use klausur_store::{AuditActor, InvitationKind, NewInvitation, Role, User};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admission::{self, Who};
use crate::audit::{self, Entry};
use crate::auth;
use crate::connections::{Live, Owner, Refused};
use crate::dialin::DialInView;
use crate::http::client_addr::ClientIp;
pub use crate::http::http_error::ApiError;
use crate::http::http_error::Refusal;
use crate::names::{validate_display_name, validate_title, validate_username};
use crate::state::AppState;

use crate::http::extract::{check_origin, cookie_value, ready_user};
pub use crate::http::extract::{
    Admin, Body, MaybeUser, Session, Staff, CSRF_HEADER, SESSION_COOKIE,
};
use crate::http::web::api_not_found;

/// The API's routes, built from one table so that the list of routes ([`routes`]) and the
/// router that serves them cannot differ.
struct RouteTable {
    router: Router<AppState>,
    routes: Vec<(Method, &'static str)>,
}

impl RouteTable {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| unreachable!("the table names only GET, POST and DELETE"));
        // A second method on the same path joins the first one's method router.
        self.router = self.router.route(path, on(filter, handler));
        self.routes.push((method, path));
        self
    }
}

/// Every route of the API and the handler that serves it (test hooks aside: they exist only
/// in builds with the `test-hooks` feature, see [`crate::http::test_hooks`]).
fn route_table() -> RouteTable {
    use Method as M;
    RouteTable {
        router: Router::new(),
        routes: Vec::new(),
    }
    .add(M::GET, "/api/session", session)
    .add(M::POST, "/api/login", login)
    .add(M::POST, "/api/logout", logout)
    .add(M::POST, "/api/password", change_password)
    .add(M::GET, "/api/users", list_users)
    .add(M::POST, "/api/users", create_user)
    .add(M::POST, "/api/users/{id}/disable", disable_user)
    .add(M::GET, "/api/status", server_status)
    .add(M::GET, "/api/audit", crate::http::audit_api::list)
    .add(M::GET, "/api/audit/verify", crate::http::audit_api::verify)
    .add(M::GET, "/api/meetings", list_meetings)
    .add(M::POST, "/api/meetings", create_meeting)
    .add(M::GET, "/api/meetings/{id}", meeting_detail)
    .add(M::GET, "/api/meetings/{id}/invitations", list_invitations)
    .add(M::POST, "/api/meetings/{id}/invitations", create_invitation)
    .add(
        M::DELETE,
        "/api/meetings/{id}/invitations/{iid}",
        revoke_invitation,
    )
    .add(M::POST, "/api/meetings/{id}/moderators", add_moderator)
    .add(M::GET, "/api/meetings/{id}/public", meeting_public)
    .add(M::GET, "/api/invite/{token}", invite_info)
    .add(
        M::GET,
        "/api/identity/ca",
        crate::http::identity_api::ca_info,
    )
    .add(
        M::POST,
        "/api/identity/credential",
        crate::http::identity_api::issue_credential,
    )
    .add(
        M::POST,
        "/api/dialin/calls",
        crate::http::dialin_api::post_call,
    )
    .add(
        M::DELETE,
        "/api/dialin/calls/{ticket}",
        crate::http::dialin_api::delete_call,
    )
    .add(M::GET, "/api/ws", ws_upgrade)
    .add(M::GET, "/healthz", healthz)
    .add(M::GET, "/metrics", crate::http::metrics_api::scrape)
}

/// The method and path of every route the API serves, in the order of the table (what the
/// authorization test checks every route against: a route without an entry there fails it).
pub fn routes() -> Vec<(Method, &'static str)> {
    route_table().routes
}

pub fn router(state: AppState) -> Router {
    let api = route_table()
        .router
        .route("/api/{*rest}", any(api_not_found));
    #[cfg(feature = "test-hooks")]
    let api = crate::http::test_hooks::routes(api);
    crate::http::web::with_static(api, &state.config).with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// What an administrator (and a monitoring system signed in as one) sees of the running
/// server: live meetings, WebSocket connections, the media worker's rooms and peers and its
/// packet counters, and the process's resident memory.
#[derive(Serialize)]
struct ServerStatus {
    meetings_running: usize,
    /// Stopped with a drain time, the server lets its meetings finish before it stops.
    draining: bool,
    connections: usize,
    rooms: usize,
    peers: usize,
    forwarded_packets: u64,
    received_datagrams: u64,
    unroutable_datagrams: u64,
    /// ICE-TCP: open connections, connections closed for bad framing, packets dropped because a
    /// connection's send queue was full.
    tcp_connections: usize,
    tcp_refused_frames: u64,
    tcp_dropped_packets: u64,
    /// Each media worker's rooms, peers, forwarded packets and restarts, in worker order.
    media_workers: Vec<WorkerStatus>,
    /// Resident memory of the process in bytes (Linux; absent elsewhere).
    memory_rss_bytes: Option<u64>,
    /// Audit records that could not be written since the start (see [`crate::audit`]).
    audit_write_failures: u64,
    /// This node's id in a cluster (`[cluster] node_id`); absent for a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

/// One media worker in [`ServerStatus`].
#[derive(Serialize)]
struct WorkerStatus {
    rooms: usize,
    peers: usize,
    forwarded_packets: u64,
    restarts: u64,
}

async fn server_status(State(state): State<AppState>, Admin(_): Admin) -> Json<ServerStatus> {
    let workers = state.media.worker_stats().await;
    let media = crate::media::MediaStats::total(&workers);
    Json(ServerStatus {
        meetings_running: state.registry.running(),
        draining: state.registry.draining(),
        connections: state.connections.len(),
        rooms: media.rooms,
        peers: media.peers,
        forwarded_packets: media.forwarded_packets,
        received_datagrams: media.received_datagrams,
        unroutable_datagrams: media.unroutable_datagrams,
        tcp_connections: media.tcp_connections,
        tcp_refused_frames: media.tcp_refused_frames,
        tcp_dropped_packets: media.tcp_dropped_packets,
        media_workers: workers
            .iter()
            .map(|w| WorkerStatus {
                rooms: w.rooms,
                peers: w.peers,
                forwarded_packets: w.forwarded_packets,
                restarts: w.restarts,
            })
            .collect(),
        memory_rss_bytes: crate::metrics::resident_memory(),
        audit_write_failures: state.audit.failures(),
        node: state.cluster.as_ref().map(|c| c.node_id().to_string()),
    })
}

#[derive(Serialize)]
struct UserView {
    id: i64,
    username: String,
    display_name: String,
    role: Role,
    disabled: bool,
    must_change_password: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role,
            disabled: u.disabled,
            must_change_password: u.must_change_password,
        }
    }
}

async fn session(s: Session) -> Json<serde_json::Value> {
    Json(json!({"user": UserView::from(&s.user), "csrf_token": s.csrf_token}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginReq {
    username: String,
    password: String,
}

fn session_cookie(state: &AppState, token: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.config.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    Body(req): Body<LoginReq>,
) -> Result<Response, ApiError> {
    check_origin(&state.config, &headers)?;
    let username = req.username.trim().to_lowercase();
    let keys = auth::login_keys(&username, client);
    let now = Instant::now();
    // The attempt counts from here (concurrent guesses cannot pass the limit while earlier
    // ones are still being checked); a success takes it back.
    let allowed = state
        .login_limiter
        .lock()
        .map(|mut l| l.begin(now, &keys))
        .unwrap_or(false);
    if !allowed {
        state.metrics.login_failed("throttled");
        return Err(Refusal::RateLimited(
            "too many failed logins from this address; try again in 15 minutes".into(),
        )
        .into());
    }
    let user = state.store.user_by_username(&username).await?;
    let checked = match &user {
        Some(u) if !u.disabled => {
            state
                .passwords
                .verify(&req.password, &u.password_hash)
                .await
        }
        _ => state.passwords.burn(&req.password).await.map(|()| false),
    };
    let ok = match checked {
        Ok(ok) => ok,
        Err(e) => {
            // Not checked (the server was too busy): the attempt does not count.
            if let Ok(mut l) = state.login_limiter.lock() {
                l.abandoned(&keys);
            }
            return Err(e.into());
        }
    };
    let user = match (ok, user) {
        (true, Some(u)) => u,
        (_, user) => {
            let reason = match &user {
                None => "unknown_user",
                Some(u) if u.disabled => "account_disabled",
                Some(_) => "wrong_password",
            };
            state.metrics.login_failed(reason);
            let actor = match &user {
                Some(u) => audit::user(u),
                None => AuditActor::new("anonymous", None, Some(audit::bounded(&username, 64))),
            };
            state
                .audit
                .record(
                    Entry::new(audit::kind::LOGIN_FAILED, actor)
                        .source(client)
                        .details(json!({ "reason": reason })),
                )
                .await;
            tracing::info!("failed login");
            return Err(Refusal::BadLogin.into());
        }
    };
    if let Ok(mut l) = state.login_limiter.lock() {
        l.succeeded(&keys);
    }
    let token = auth::new_token();
    let csrf = auth::new_token();
    let hours = state.config.session_hours;
    state
        .store
        .create_session(
            &auth::token_hash(&token),
            user.id,
            &csrf,
            Utc::now() + Duration::hours(hours),
        )
        .await?;
    state
        .audit
        .record(Entry::new(audit::kind::LOGIN_SUCCEEDED, audit::user(&user)).source(client))
        .await;
    tracing::info!(user_id = user.id, "login");
    let mut resp =
        Json(json!({"user": UserView::from(&user), "csrf_token": csrf.as_str()})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&state, &token, hours * 3600),
    );
    Ok(resp)
}

async fn logout(State(state): State<AppState>, s: Session) -> Result<Response, ApiError> {
    state.store.delete_session(&s.id_hash).await?;
    // The session's meeting WebSockets end with it (after the store: see crate::connections).
    let ended = state.connections.end_session(s.user.id, &s.id_hash);
    state
        .audit
        .record(Entry::new(audit::kind::LOGOUT, audit::user(&s.user)))
        .await;
    tracing::info!(user_id = s.user.id, websockets = ended, "logout");
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordReq {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    s: Session,
    Body(req): Body<PasswordReq>,
) -> Result<StatusCode, ApiError> {
    // The current password is a password check like a login's, and counts the same.
    let keys = auth::login_keys(&s.user.username, client);
    let allowed = state
        .login_limiter
        .lock()
        .map(|mut l| l.begin(Instant::now(), &keys))
        .unwrap_or(false);
    if !allowed {
        return Err(Refusal::RateLimited(
            "too many wrong passwords from this address; try again in 15 minutes".into(),
        )
        .into());
    }
    let checked = state
        .passwords
        .verify(&req.current_password, &s.user.password_hash)
        .await;
    let right = match checked {
        Ok(right) => right,
        Err(e) => {
            if let Ok(mut l) = state.login_limiter.lock() {
                l.abandoned(&keys);
            }
            return Err(e.into());
        }
    };
    if !right {
        state
            .audit
            .record(
                Entry::new(audit::kind::PASSWORD_CHANGE_FAILED, audit::user(&s.user))
                    .source(client)
                    .details(json!({ "reason": "wrong_password" })),
            )
            .await;
        return Err(Refusal::WrongCurrentPassword.into());
    }
    if let Ok(mut l) = state.login_limiter.lock() {
        l.succeeded(&keys);
    }
    validate_new_password(&req.new_password)?;
    if req.new_password == req.current_password {
        return Err(
            Refusal::Invalid("the new password must differ from the current one".into()).into(),
        );
    }
    let hash = state.passwords.hash(&req.new_password).await?;
    // Every other session of the account ends, with its meeting WebSockets; the one that made
    // the change (it knew the password) stays, under the same cookie and CSRF token. Both in one
    // transaction: a failure leaves the old password and every session as they were.
    state
        .store
        .change_password(s.user.id, &hash, &s.id_hash)
        .await?;
    let ended = state.connections.end_user(s.user.id, Some(&s.id_hash));
    state
        .audit
        .record(
            Entry::new(audit::kind::PASSWORD_CHANGED, audit::user(&s.user))
                .details(json!({ "other_sessions_ended": true })),
        )
        .await;
    tracing::info!(user_id = s.user.id, websockets = ended, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

fn validate_new_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < auth::MIN_PASSWORD_CHARS {
        return Err(ApiError::from(Refusal::Invalid(format!(
            "the new password must have at least {} characters",
            auth::MIN_PASSWORD_CHARS
        ))));
    }
    if p.len() > 1024 {
        return Err(Refusal::Invalid("the new password is too long".into()).into());
    }
    Ok(())
}

async fn list_users(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store.list_users().await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserReq {
    username: String,
    display_name: String,
    password: String,
    role: Role,
}

async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Body(req): Body<CreateUserReq>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let username = validate_username(&req.username).map_err(Refusal::Invalid)?;
    let display_name = validate_display_name(&req.display_name).map_err(Refusal::Invalid)?;
    validate_new_password(&req.password)?;
    let hash = state.passwords.hash(&req.password).await?;
    let user = state
        .store
        .create_user(&username, &display_name, &hash, req.role, true)
        .await?;
    state
        .audit
        .record(
            Entry::new(audit::kind::USER_CREATED, audit::user(&admin))
                .details(json!({ "target": audit::user_target(&user), "role": user.role })),
        )
        .await;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

async fn disable_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<i64>,
) -> Result<StatusCode, ApiError> {
    if id == admin.id {
        return Err(Refusal::Invalid("you cannot disable your own account".into()).into());
    }
    let target = state
        .store
        .user_by_id(id)
        .await?
        .ok_or_else(|| Refusal::NotFound("user not found".into()))?;
    state.store.set_user_disabled(id, true).await?;
    state
        .audit
        .record(
            Entry::new(audit::kind::USER_DISABLED, audit::user(&admin))
                .details(json!({ "target": audit::user_target(&target) })),
        )
        .await;
    state.store.delete_sessions_of_user(id).await?;
    // Its meeting WebSockets end too (after the store: see crate::connections).
    let ended = state.connections.end_user(id, None);
    tracing::info!(user_id = id, websockets = ended, "account disabled");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct PersonRef {
    id: i64,
    display_name: String,
}

#[derive(Serialize)]
struct MeetingView {
    id: String,
    title: String,
    starts_at: Option<DateTime<Utc>>,
    organiser: PersonRef,
    profile: SecurityProfile,
    is_moderator: bool,
    ended: bool,
    /// The meeting's dial-in number, if it has one.
    dial_in: Option<DialInView>,
}

async fn meeting_view(
    state: &AppState,
    m: klausur_store::Meeting,
    viewer: &User,
) -> Result<MeetingView, ApiError> {
    let organiser = state.store.user_by_id(m.organiser_id).await?;
    let is_moderator = state.store.is_moderator(&m.id, viewer.id).await?;
    let dial_in = DialInView::of(&m, &state.config.dialin);
    Ok(MeetingView {
        id: m.id,
        title: m.title,
        starts_at: m.starts_at,
        organiser: PersonRef {
            id: m.organiser_id,
            display_name: organiser.map(|u| u.display_name).unwrap_or_default(),
        },
        profile: m.profile,
        is_moderator,
        ended: m.ended_at.is_some(),
        dial_in,
    })
}

async fn list_meetings(
    State(state): State<AppState>,
    Staff(user): Staff,
) -> Result<Json<Vec<MeetingView>>, ApiError> {
    let meetings = if user.role == Role::Admin {
        state.store.list_all_meetings().await?
    } else {
        state.store.list_meetings_for(user.id).await?
    };
    let mut out = Vec::with_capacity(meetings.len());
    for m in meetings {
        out.push(meeting_view(&state, m, &user).await?);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateMeetingReq {
    title: String,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    profile: SecurityProfile,
    /// Give the meeting a dial-in number.
    #[serde(default)]
    dial_in: bool,
}

async fn create_meeting(
    State(state): State<AppState>,
    Staff(user): Staff,
    Body(req): Body<CreateMeetingReq>,
) -> Result<(StatusCode, Json<MeetingView>), ApiError> {
    let title = validate_title(&req.title).map_err(Refusal::Invalid)?;
    let title = title.as_str();
    let id = auth::new_meeting_id();
    let m = if req.dial_in {
        crate::dialin::create_meeting_with_dial_in(
            &state.store,
            &id,
            title,
            req.starts_at,
            user.id,
            req.profile,
        )
        .await?
    } else {
        state
            .store
            .create_meeting(&id, title, req.starts_at, user.id, req.profile)
            .await?
    };
    state
        .audit
        .record(
            Entry::new(audit::kind::MEETING_CREATED, audit::user(&user))
                .meeting(&m.id)
                .details(json!({
                    "title": m.title,
                    "profile": m.profile,
                    "dial_in": m.dial_in_number.is_some(),
                })),
        )
        .await;
    tracing::info!(meeting = %m.id, user_id = user.id, "meeting created");
    Ok((
        StatusCode::CREATED,
        Json(meeting_view(&state, m, &user).await?),
    ))
}

/// Whether `user` may manage the meeting (organiser, moderator, administrator). Returns the
/// meeting; a meeting the user may not see is reported as not found.
pub async fn can_manage(
    state: &AppState,
    meeting_id: &str,
    user: &User,
) -> Result<klausur_store::Meeting, ApiError> {
    let m = state
        .store
        .meeting(meeting_id)
        .await?
        .ok_or_else(|| Refusal::NotFound("meeting not found".into()))?;
    if user.role == Role::Admin || state.store.is_moderator(&m.id, user.id).await? {
        Ok(m)
    } else {
        Err(
            Refusal::Forbidden("only the meeting's organiser and moderators may do this".into())
                .into(),
        )
    }
}

#[derive(Serialize)]
struct InvitationView {
    id: i64,
    name: String,
    kind: InvitationKind,
    user_id: Option<i64>,
    expires_at: DateTime<Utc>,
    revoked: bool,
    last_used_at: Option<DateTime<Utc>>,
    /// The invitee has a phone PIN (shown once, when the invitation was created).
    has_phone_pin: bool,
}

impl From<&klausur_store::Invitation> for InvitationView {
    fn from(i: &klausur_store::Invitation) -> Self {
        InvitationView {
            id: i.id,
            name: i.name.clone(),
            kind: i.kind,
            user_id: i.user_id,
            expires_at: i.expires_at,
            revoked: i.revoked_at.is_some(),
            last_used_at: i.last_used_at,
            has_phone_pin: i.has_phone_pin(),
        }
    }
}

async fn meeting_detail(
    State(state): State<AppState>,
    Staff(user): Staff,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = can_manage(&state, &id, &user).await?;
    let moderators: Vec<PersonRef> = state
        .store
        .moderators(&m.id)
        .await?
        .into_iter()
        .map(|u| PersonRef {
            id: u.id,
            display_name: u.display_name,
        })
        .collect();
    let invitations: Vec<InvitationView> = state
        .store
        .list_invitations(&m.id)
        .await?
        .iter()
        .map(InvitationView::from)
        .collect();
    let view = meeting_view(&state, m, &user).await?;
    let mut v = serde_json::to_value(view).unwrap_or_default();
    v["moderators"] = json!(moderators);
    v["invitations"] = json!(invitations);
    Ok(Json(v))
}

async fn list_invitations(
    State(state): State<AppState>,
    Staff(user): Staff,
    Path(id): Path<String>,
) -> Result<Json<Vec<InvitationView>>, ApiError> {
    let m = can_manage(&state, &id, &user).await?;
    let list = state.store.list_invitations(&m.id).await?;
    Ok(Json(list.iter().map(InvitationView::from).collect()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInvitationReq {
    name: String,
    kind: InvitationKind,
    #[serde(default)]
    user_id: Option<i64>,
    #[serde(default)]
    expires_in_hours: Option<i64>,
}

/// The base of links the server hands out (invitations): `server.public_url`, or else this
/// server's own address. Without `public_url` the request's `Host` is taken only when it names
/// this server itself (its listen address, or a loopback name with its port): a forged `Host`
/// must not turn an invitation into a link to another site.
fn base_url(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(u) = &state.config.public_url {
        return Ok(u.trim_end_matches('/').to_string());
    }
    let listen = state.config.listen;
    let scheme = if state.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        None => Ok(format!("{scheme}://{listen}")),
        Some(h) if host_is_this_server(h, listen) => Ok(format!("{scheme}://{h}")),
        Some(h) => Err(ApiError::from(Refusal::Invalid(format!(
            "the link cannot be built from the request's host {h:?}: set server.public_url to \
             the address people use to reach this server"
        )))),
    }
}

/// Whether a `Host` header names the server listening on `listen`: its own address, or (when it
/// listens on loopback or on every address) a loopback name or address, with its port.
fn host_is_this_server(host: &str, listen: SocketAddr) -> bool {
    let Some((name, port)) = host.rsplit_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(listen.port()) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip == listen.ip()
                || (ip.is_loopback() && (listen.ip().is_loopback() || listen.ip().is_unspecified()))
        }
        Err(_) => {
            name.eq_ignore_ascii_case("localhost")
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    }
}

async fn create_invitation(
    State(state): State<AppState>,
    Staff(user): Staff,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<CreateInvitationReq>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let m = can_manage(&state, &id, &user).await?;
    if m.ended_at.is_some() {
        return Err(Refusal::Invalid("the meeting has ended".into()).into());
    }
    let mut name = validate_display_name(&req.name).map_err(Refusal::Invalid)?;
    let user_id = match (req.kind, req.user_id) {
        (InvitationKind::Colleague, Some(uid)) => {
            let colleague = state
                .store
                .user_by_id(uid)
                .await?
                .filter(|u| !u.disabled)
                .ok_or_else(|| Refusal::Invalid("user_id names no active account".into()))?;
            name = colleague.display_name;
            Some(uid)
        }
        (InvitationKind::Colleague, None) => {
            return Err(Refusal::Invalid("a colleague invitation needs user_id".into()).into())
        }
        (InvitationKind::Guest, Some(_)) => {
            return Err(Refusal::Invalid("a guest invitation has no user_id".into()).into())
        }
        (InvitationKind::Guest, None) => None,
    };
    let hours = req
        .expires_in_hours
        .unwrap_or(state.config.invitation_hours);
    if !(1..=24 * 365).contains(&hours) {
        return Err(Refusal::Invalid("expires_in_hours must be between 1 and 8760".into()).into());
    }
    let token = auth::new_token();
    let (inv, phone_pin) = crate::dialin::create_invitation(
        &state.store,
        state.dialin.pin_key(),
        &m,
        NewInvitation {
            meeting_id: m.id.clone(),
            token_hash: auth::token_hash(&token),
            name,
            kind: req.kind,
            user_id,
            created_by: user.id,
            expires_at: Utc::now() + Duration::hours(hours),
            phone_pin_hash: None,
        },
    )
    .await?;
    let link = format!("{}/j/{}", base_url(&state, &headers)?, token.as_str());
    state
        .audit
        .record(audit::invitation_created(
            audit::user(&user),
            &inv,
            phone_pin.is_some(),
        ))
        .await;
    tracing::info!(meeting = %m.id, invitation = inv.id, "invitation created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "invitation": InvitationView::from(&inv),
            "token": token.as_str(),
            "link": link,
            "phone_pin": phone_pin.as_deref().map(String::as_str),
        })),
    ))
}

async fn revoke_invitation(
    State(state): State<AppState>,
    Staff(user): Staff,
    Path((id, iid)): Path<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    let m = can_manage(&state, &id, &user).await?;
    state
        .store
        .revoke_invitation(&m.id, iid, Utc::now())
        .await?;
    state
        .audit
        .record(
            Entry::new(audit::kind::INVITATION_REVOKED, audit::user(&user))
                .meeting(&m.id)
                .details(json!({ "invitation": iid })),
        )
        .await;
    tracing::info!(meeting = %m.id, invitation = iid, "invitation revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddModeratorReq {
    user_id: i64,
}

async fn add_moderator(
    State(state): State<AppState>,
    Staff(user): Staff,
    Path(id): Path<String>,
    Body(req): Body<AddModeratorReq>,
) -> Result<StatusCode, ApiError> {
    let m = can_manage(&state, &id, &user).await?;
    // As in the meeting (`set_moderator`): only the organiser grants moderation, or an
    // administrator; a moderator does not make more moderators.
    if m.organiser_id != user.id && user.role != Role::Admin {
        return Err(Refusal::Forbidden("only the organiser grants moderation".into()).into());
    }
    let target = state
        .store
        .user_by_id(req.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| Refusal::Invalid("user_id names no active account".into()))?;
    state.store.add_moderator(&m.id, req.user_id).await?;
    state
        .audit
        .record(
            Entry::new(audit::kind::MODERATOR_ADDED, audit::user(&user))
                .meeting(&m.id)
                .details(json!({ "target": audit::user_target(&target) })),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn meeting_public(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = state
        .store
        .meeting(&id)
        .await?
        .ok_or_else(|| Refusal::NotFound("meeting not found".into()))?;
    if m.ended_at.is_some() {
        return Err(Refusal::MeetingEnded.into());
    }
    Ok(Json(json!({"id": m.id, "title": m.title})))
}

async fn invite_info(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Path(token): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // A failed lookup counts against the client's address (admission::InvitationGuard).
    let inv = admission::Source::new(state.invitation_guard(), client)
        .invitation(&state.store, &token, Utc::now())
        .await?;
    let m = state
        .store
        .meeting(&inv.meeting_id)
        .await?
        .ok_or_else(|| Refusal::NotFound("meeting not found".into()))?;
    if m.ended_at.is_some() {
        return Err(Refusal::MeetingEnded.into());
    }
    // The number to call, where callers are accepted (the PIN is the invitee's to know).
    let dial_in = DialInView::of(&m, &state.config.dialin)
        .filter(|d| d.allowed)
        .map(|d| json!({"meeting_number": d.meeting_number, "phone_number": d.phone_number}));
    Ok(Json(json!({
        "meeting_id": m.id,
        "meeting_title": m.title,
        "invitee_name": inv.name,
        "kind": inv.kind,
        "dial_in": dial_in,
    })))
}

async fn ws_upgrade(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    gateway: Option<axum::Extension<crate::dialin::GatewayListener>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Cross-site WebSocket hijacking: a page elsewhere must not join with our cookies.
    check_origin(&state.config, &headers)?;
    // Counted against the client's address, except a dial-in gateway's (one connection per
    // call): over the in-process gateway's own listener, or with a gateway token. A wrong token
    // is refused rather than counted, so that a misconfigured gateway says so at once.
    let gateway_token = match crate::http::dialin_api::presents_gateway_token(&state, &headers) {
        Some(false) => {
            tracing::warn!("meeting WebSocket with a wrong gateway token refused");
            return Err(Refusal::Unauthorized(
                "wrong gateway token (a meeting WebSocket carries none, or the gateway's)".into(),
            )
            .into());
        }
        Some(true) => true,
        None => false,
    };
    let counted = (gateway.is_none() && !gateway_token).then_some(client);
    let (user, live) = open_connection(&state, &headers, counted).await?;
    let mut who = Who::from_client(state.invitation_guard(), user, client);
    who.gateway = gateway.is_some() || gateway_token;
    Ok(ws
        .max_message_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| crate::http::ws::serve(state, socket, who, live)))
}

/// Registers a meeting WebSocket ([`crate::connections`]) from `counted` (the client address it
/// counts against, if any) with the request's session, if valid: its user and the registration.
/// Refused with 429 when the address has its maximum open.
async fn open_connection(
    state: &AppState,
    headers: &HeaderMap,
    counted: Option<std::net::IpAddr>,
) -> Result<(Option<User>, Live), ApiError> {
    let session = cookie_value(headers, SESSION_COOKIE).map(auth::token_hash);
    // A session that ends between its lookup and the registration is looked up again.
    for _ in 0..3 {
        let seen = state.connections.generation();
        let user = match &session {
            Some(id_hash) => ready_user(state, id_hash).await?,
            None => None,
        };
        let owner = user
            .as_ref()
            .zip(session.as_ref())
            .map(|(u, id_hash)| Owner {
                user_id: u.id,
                session: id_hash.clone(),
            });
        match state.connections.open(counted, owner, seen) {
            Ok(live) => return Ok((user, live)),
            Err(Refused::TooMany) => {
                return Err(Refusal::TooManyConnections(format!(
                    "this address has {} meeting connections open, the most allowed; close one \
                     first",
                    state.config.max_websockets_per_address
                ))
                .into())
            }
            Err(Refused::Stale) => continue,
        }
    }
    Err(Refusal::Busy("the server is busy; try again in a moment".into()).into())
}
