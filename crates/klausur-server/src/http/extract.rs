//! The request extractors of the API: the JSON body ([`Body`]), the session and its user
//! ([`Session`], [`Staff`], [`Admin`], [`MaybeUser`]) and the origin check of state-changing
//! requests (`check_origin`). Each refuses with an [`ApiError`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::Json;
use chrono::{DateTime, Utc};
use klausur_store::{Role, User};

use crate::auth;
use crate::config::Config;
use crate::http::http_error::{ApiError, Refusal};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "klausur_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// JSON body extractor whose rejection is an [`ApiError`] that says what is wrong.
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(e.into()),
        }
    }
}

pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Rejects a cross-origin request: the `Origin` header, when present, must be this server's
/// own origin, scheme included: the server's scheme (https with TLS) and the host the request
/// was sent to, or the origin of `server.public_url` (behind a proxy that terminates TLS). An
/// `https://` page is not this `http://` server. (Browsers send `Origin` on every POST,
/// DELETE and WebSocket request.)
pub(crate) fn check_origin(config: &Config, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let own = (!host.is_empty()).then(|| origin_of(&format!("{scheme}://{host}")));
    let public = config.public_url.as_deref().map(origin_of);
    if own.is_some_and(|o| o == origin) || public.is_some_and(|o| o == origin) {
        Ok(())
    } else {
        Err(Refusal::Forbidden(
            "cross-origin request refused (behind a proxy that terminates TLS, set \
             server.public_url to the address browsers use)"
                .into(),
        )
        .into())
    }
}

/// The origin of a URL as a browser writes it: scheme and authority, lower case, without a
/// path and without the scheme's default port.
fn origin_of(url: &str) -> String {
    let url = url.to_ascii_lowercase();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url.as_str()));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = match scheme {
        "https" => authority.strip_suffix(":443").unwrap_or(authority),
        "http" => authority.strip_suffix(":80").unwrap_or(authority),
        _ => authority,
    };
    format!("{scheme}://{authority}")
}

/// Any logged-in account (also one that must still change its password).
pub struct Session {
    pub user: User,
    pub id_hash: String,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauth = || ApiError::from(Refusal::Unauthenticated);
        let token = cookie_value(&parts.headers, SESSION_COOKIE).ok_or_else(unauth)?;
        let id_hash = auth::token_hash(token);
        let (session, user) = state
            .store
            .session_with_user(&id_hash, Utc::now())
            .await?
            .ok_or_else(unauth)?;
        if user.disabled {
            return Err(unauth());
        }
        if parts.method != Method::GET && parts.method != Method::HEAD {
            check_origin(&state.config, &parts.headers)?;
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sent.is_empty() || sent != session.csrf_token {
                return Err(Refusal::Forbidden("missing or wrong X-CSRF-Token".into()).into());
            }
        }
        Ok(Session {
            user,
            id_hash,
            csrf_token: session.csrf_token,
            expires_at: session.expires_at,
        })
    }
}

/// A logged-in account that has set its own password.
pub struct Staff(pub User);

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let s = Session::from_request_parts(parts, state).await?;
        if s.user.must_change_password {
            return Err(Refusal::PasswordChangeRequired.into());
        }
        Ok(Staff(s.user))
    }
}

/// An administrator.
pub struct Admin(pub User);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Staff(user) = Staff::from_request_parts(parts, state).await?;
        if user.role != Role::Admin {
            return Err(Refusal::Forbidden("administrators only".into()).into());
        }
        Ok(Admin(user))
    }
}

/// The session's user if there is a valid session, for public routes.
pub struct MaybeUser(pub Option<User>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match cookie_value(&parts.headers, SESSION_COOKIE) {
            Some(token) => Ok(MaybeUser(
                ready_user(state, &auth::token_hash(token)).await?,
            )),
            None => Ok(MaybeUser(None)),
        }
    }
}

/// The user of the session `id_hash` if it is valid and the account ready to work (enabled,
/// own password set).
pub(crate) async fn ready_user(state: &AppState, id_hash: &str) -> Result<Option<User>, ApiError> {
    let found = state.store.session_with_user(id_hash, Utc::now()).await?;
    Ok(found
        .map(|(_, u)| u)
        .filter(|u| !u.disabled && !u.must_change_password))
}
