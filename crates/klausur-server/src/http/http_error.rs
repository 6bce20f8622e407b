//! The one place where an error becomes an HTTP reply.
//!
//! Handlers and extractors (in `api`, `extract`, `identity_api`, `dialin_api`, `client_addr`,
//! the test hooks, and the top-level `ca_service`) say *what* went wrong: a [`Refusal`] for the kinds of reply every part of the API shares, or their own typed errors
//! ([`crate::identity::CredentialError`], [`crate::identity::IssueError`],
//! [`crate::identity::ca_protocol::RequestError`], [`crate::admission::AdmissionError`],
//! [`klausur_store::StoreError`], [`crate::auth::PoolError`], axum's body rejections, and in
//! builds with the `test-hooks` feature `HookFailed`). Each becomes an [`ApiError`]
//! here, by a `From` conversion that picks the HTTP status and the stable code; no other module
//! builds a status code for an error. The body of every error reply is
//! `{"error": {"code": "<code>", "message": "<message>"}}`.
//!
//! Failures inside the server are logged here (or where they happen) and reach the client only
//! as `internal` / "internal error" (the test hooks excepted), storage faults as
//! `storage_unavailable` with [`crate::storage_fault::USER_MESSAGE`], and a database that cannot
//! be reached (for a read or a write) as `database_unavailable` with
//! [`crate::storage_fault::UNREACHABLE_MESSAGE`], both HTTP 503.

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use klausur_store::StoreError;
use serde_json::json;

use crate::admission::AdmissionError;
use crate::auth::PoolError;
use crate::identity::ca_protocol::RequestError;
use crate::identity::{CredentialError, IssueError};

/// An error reply: HTTP status, stable code, human message. Built only from the errors this
/// module converts (see the module documentation).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// The reply's HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reply's stable code (`error.code`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The reply's message (`error.message`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The kinds of refusal the API's handlers share. A variant with a message says it to the
/// client as given; the others have a fixed message (in the `From` conversion below).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A field of the request has a wrong value: 400 `invalid_field`.
    Invalid(String),
    /// No valid session: 401 `unauthenticated`, "log in first".
    Unauthenticated,
    /// A service's bearer token (the dial-in gateway's) is missing or wrong: 401
    /// `unauthorized`.
    Unauthorized(String),
    /// A login with a wrong user name or password: 401 `invalid_credentials`.
    BadLogin,
    /// A password change with a wrong current password: 403 `invalid_credentials`.
    WrongCurrentPassword,
    /// The account must set its own password first: 403 `password_change_required`.
    PasswordChangeRequired,
    /// Not allowed for this caller: 403 `forbidden`.
    Forbidden(String),
    /// The thing asked for does not exist (or is not the caller's to see): 404 `not_found`.
    NotFound(String),
    /// The request contradicts stored state: 409 `conflict`.
    Conflict(String),
    /// The meeting has ended: 410 `meeting_ended`.
    MeetingEnded,
    /// Too many requests of this kind from this client: 429 `rate_limited`.
    RateLimited(String),
    /// The client address has its most meeting WebSockets open: 429 `too_many_connections`.
    TooManyConnections(String),
    /// The server is busy; trying again soon is safe: 503 `busy`.
    Busy(String),
    /// The storage cannot be written: 503 `storage_unavailable`.
    StorageUnavailable,
    /// The database cannot be reached (down, restarting): 503 `database_unavailable`.
    DatabaseUnavailable,
    /// A failure inside the server (logged where it happened): 500 `internal`.
    Internal,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", m),
            Refusal::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "log in first")
            }
            Refusal::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m),
            Refusal::BadLogin => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "wrong user name or password",
            ),
            Refusal::WrongCurrentPassword => ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_credentials",
                "the current password is wrong",
            ),
            Refusal::PasswordChangeRequired => ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "change your password first",
            ),
            Refusal::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            Refusal::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            Refusal::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            Refusal::MeetingEnded => {
                ApiError::new(StatusCode::GONE, "meeting_ended", "the meeting has ended")
            }
            Refusal::RateLimited(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m)
            }
            Refusal::TooManyConnections(m) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", m)
            }
            Refusal::Busy(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", m),
            Refusal::StorageUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                crate::storage_fault::USER_MESSAGE,
            ),
            Refusal::DatabaseUnavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                crate::storage_fault::UNREACHABLE_MESSAGE,
            ),
            Refusal::Internal => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Refusal::NotFound("record not found".into()),
            StoreError::Conflict(m) => Refusal::Conflict(m),
            StoreError::Unwritable(fault, e) => {
                crate::storage_fault::report(fault, &e);
                Refusal::StorageUnavailable
            }
            StoreError::Unavailable(e) => {
                crate::storage_fault::report_unreachable(&e);
                Refusal::DatabaseUnavailable
            }
            other => {
                tracing::error!("storage error: {other}");
                Refusal::Internal
            }
        }
        .into()
    }
}

impl From<AdmissionError> for ApiError {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::InvitationExpired => {
                ApiError::new(StatusCode::GONE, "invitation_expired", e.to_string())
            }
            AdmissionError::Internal(m) => {
                tracing::error!("admission error: {m}");
                Refusal::Internal.into()
            }
            AdmissionError::DialInNotAllowed => Refusal::Forbidden(e.to_string()).into(),
            AdmissionError::TicketNotFromGateway => Refusal::Unauthorized(e.to_string()).into(),
            AdmissionError::StorageUnavailable => Refusal::StorageUnavailable.into(),
            AdmissionError::DatabaseUnavailable => Refusal::DatabaseUnavailable.into(),
            AdmissionError::ClusterUnavailable(m) => Refusal::Busy(m).into(),
            AdmissionError::TicketCombined | AdmissionError::NameRequired => {
                Refusal::Invalid(e.to_string()).into()
            }
            AdmissionError::TooManyInvalidInvitations => Refusal::RateLimited(e.to_string()).into(),
            AdmissionError::MeetingNotFound
            | AdmissionError::MeetingEnded
            | AdmissionError::InvitationInvalid
            | AdmissionError::TicketInvalid => Refusal::NotFound(e.to_string()).into(),
        }
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy => Refusal::Busy(e.to_string()),
            PoolError::Failed => Refusal::Internal,
        }
        .into()
    }
}

/// A JSON body that cannot be read (not JSON, wrong shape, too large, wrong content type):
/// `malformed`, with the status and text axum gives the rejection.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::new(e.status(), "malformed", e.body_text())
    }
}

/// A body that cannot be read at all (too large, broken): `malformed`, as for JSON.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError::new(e.status(), "malformed", e.body_text())
    }
}

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::Invalid(m) => Refusal::Invalid(m).into(),
            CredentialError::MeetingNotFound => Refusal::NotFound(e.to_string()).into(),
            CredentialError::MeetingEnded => Refusal::MeetingEnded.into(),
            CredentialError::Removed => {
                ApiError::new(StatusCode::FORBIDDEN, "removed", e.to_string())
            }
            CredentialError::TooManyFailures | CredentialError::TooManyGuests => {
                Refusal::RateLimited(e.to_string()).into()
            }
        }
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Internal(e) => {
                tracing::error!("credential issuance failed: {e:#}");
                Refusal::Internal.into()
            }
            IssueError::CaUnavailable(message) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "ca_unavailable", message)
            }
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Unauthorized => Refusal::Unauthorized(e.to_string()).into(),
            RequestError::RateLimited => Refusal::RateLimited(e.to_string()).into(),
            RequestError::Malformed => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed", e.to_string())
            }
            RequestError::InvalidField(m) => Refusal::Invalid(m).into(),
        }
    }
}

/// A test hook that failed inside says why (test builds only).
/// A test hook that failed inside; its reply says why (a test build only: no release build
/// tells a client what failed inside).
#[cfg(feature = "test-hooks")]
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct HookFailed(pub anyhow::Error);

/// A test hook that failed inside says why (test builds only).
#[cfg(feature = "test-hooks")]
impl From<HookFailed> for ApiError {
    fn from(e: HookFailed) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(e: impl Into<ApiError>) -> (StatusCode, &'static str, String) {
        let e = e.into();
        (e.status, e.code, e.message)
    }

    #[test]
    fn every_refusal_has_its_status_and_code() {
        let m = || "m".to_string();
        let table: Vec<(Refusal, StatusCode, &str)> = vec![
            (
                Refusal::Invalid(m()),
                StatusCode::BAD_REQUEST,
                "invalid_field",
            ),
            (
                Refusal::Unauthenticated,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                Refusal::Unauthorized(m()),
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                Refusal::BadLogin,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            ),
            (
                Refusal::WrongCurrentPassword,
                StatusCode::FORBIDDEN,
                "invalid_credentials",
            ),
            (
                Refusal::PasswordChangeRequired,
                StatusCode::FORBIDDEN,
                "password_change_required",
            ),
            (Refusal::Forbidden(m()), StatusCode::FORBIDDEN, "forbidden"),
            (Refusal::NotFound(m()), StatusCode::NOT_FOUND, "not_found"),
            (Refusal::Conflict(m()), StatusCode::CONFLICT, "conflict"),
            (Refusal::MeetingEnded, StatusCode::GONE, "meeting_ended"),
            (
                Refusal::RateLimited(m()),
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                Refusal::TooManyConnections(m()),
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
            ),
            (Refusal::Busy(m()), StatusCode::SERVICE_UNAVAILABLE, "busy"),
            (
                Refusal::StorageUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
            ),
            (
                Refusal::DatabaseUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                Refusal::Internal,
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (refusal, status, code) in table {
            let has_message = matches!(
                refusal,
                Refusal::Invalid(_)
                    | Refusal::Unauthorized(_)
                    | Refusal::Forbidden(_)
                    | Refusal::NotFound(_)
                    | Refusal::Conflict(_)
                    | Refusal::RateLimited(_)
                    | Refusal::TooManyConnections(_)
                    | Refusal::Busy(_)
            );
            let (s, c, message) = reply(refusal.clone());
            assert_eq!((s, c), (status, code), "{refusal:?}");
            // A message given is said as given; the fixed ones are never empty.
            if has_message {
                assert_eq!(message, "m", "{refusal:?}");
            } else {
                assert!(!message.is_empty(), "{refusal:?}");
            }
        }
        // The fixed messages, as clients and tests read them.
        assert_eq!(reply(Refusal::Unauthenticated).2, "log in first");
        assert_eq!(reply(Refusal::Internal).2, "internal error");
        assert_eq!(reply(Refusal::MeetingEnded).2, "the meeting has ended");
        assert_eq!(
            reply(Refusal::StorageUnavailable).2,
            crate::storage_fault::USER_MESSAGE
        );
        assert_eq!(
            reply(Refusal::DatabaseUnavailable).2,
            crate::storage_fault::UNREACHABLE_MESSAGE
        );
    }

    #[test]
    fn every_domain_error_has_its_status_and_code() {
        use StatusCode as S;
        let cases: Vec<(ApiError, StatusCode, &str)> = vec![
            (StoreError::NotFound.into(), S::NOT_FOUND, "not_found"),
            (
                StoreError::Conflict("taken".into()).into(),
                S::CONFLICT,
                "conflict",
            ),
            (
                StoreError::Unavailable(sqlx::Error::PoolTimedOut).into(),
                S::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                StoreError::Database(sqlx::Error::RowNotFound).into(),
                S::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                AdmissionError::MeetingNotFound.into(),
                S::NOT_FOUND,
                "not_found",
            ),
            (
                AdmissionError::MeetingEnded.into(),
                S::NOT_FOUND,
                "not_found",
            ),
            (
                AdmissionError::InvitationInvalid.into(),
                S::NOT_FOUND,
                "not_found",
            ),
            (
                AdmissionError::InvitationExpired.into(),
                S::GONE,
                "invitation_expired",
            ),
            (
                AdmissionError::NameRequired.into(),
                S::BAD_REQUEST,
                "invalid_field",
            ),
            (
                AdmissionError::TicketInvalid.into(),
                S::NOT_FOUND,
                "not_found",
            ),
            (
                AdmissionError::TicketCombined.into(),
                S::BAD_REQUEST,
                "invalid_field",
            ),
            (
                AdmissionError::DialInNotAllowed.into(),
                S::FORBIDDEN,
                "forbidden",
            ),
            (
                AdmissionError::TooManyInvalidInvitations.into(),
                S::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                AdmissionError::StorageUnavailable.into(),
                S::SERVICE_UNAVAILABLE,
                "storage_unavailable",
            ),
            (
                AdmissionError::DatabaseUnavailable.into(),
                S::SERVICE_UNAVAILABLE,
                "database_unavailable",
            ),
            (
                AdmissionError::Internal("x".into()).into(),
                S::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (PoolError::Busy.into(), S::SERVICE_UNAVAILABLE, "busy"),
            (
                PoolError::Failed.into(),
                S::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                CredentialError::Invalid("x".into()).into(),
                S::BAD_REQUEST,
                "invalid_field",
            ),
            (
                CredentialError::MeetingNotFound.into(),
                S::NOT_FOUND,
                "not_found",
            ),
            (
                CredentialError::MeetingEnded.into(),
                S::GONE,
                "meeting_ended",
            ),
            (CredentialError::Removed.into(), S::FORBIDDEN, "removed"),
            (
                CredentialError::TooManyFailures.into(),
                S::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                CredentialError::TooManyGuests.into(),
                S::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (
                IssueError::Internal(anyhow::anyhow!("x")).into(),
                S::INTERNAL_SERVER_ERROR,
                "internal",
            ),
            (
                IssueError::CaUnavailable("x".into()).into(),
                S::BAD_GATEWAY,
                "ca_unavailable",
            ),
            (
                RequestError::Unauthorized.into(),
                S::UNAUTHORIZED,
                "unauthorized",
            ),
            (
                RequestError::RateLimited.into(),
                S::TOO_MANY_REQUESTS,
                "rate_limited",
            ),
            (RequestError::Malformed.into(), S::BAD_REQUEST, "malformed"),
            (
                RequestError::InvalidField("x".into()).into(),
                S::BAD_REQUEST,
                "invalid_field",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!((e.status, e.code), (status, code), "{}", e.message);
        }
    }

    #[test]
    fn internal_failures_say_nothing_of_themselves() {
        let secret = "disk /var/lib/klausur/db: permission denied";
        for e in [
            ApiError::from(AdmissionError::Internal(secret.into())),
            ApiError::from(IssueError::Internal(anyhow::anyhow!(secret))),
            ApiError::from(PoolError::Failed),
        ] {
            assert_eq!(e.message, "internal error");
        }
        // Negative control: a refusal's own message does reach the client.
        assert_eq!(
            ApiError::from(IssueError::CaUnavailable("the CA refused".into())).message,
            "the CA refused"
        );
    }

    #[tokio::test]
    async fn the_body_is_an_error_object_with_code_and_message() {
        let resp = ApiError::from(Refusal::NotFound("meeting not found".into())).into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            v,
            json!({"error": {"code": "not_found", "message": "meeting not found"}})
        );
    }
}
