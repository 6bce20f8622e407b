//! The audit trail for administrators over HTTP: `GET /api/audit` (filtered, newest first, in
//! pages) and `GET /api/audit/verify` (the chain checked now). Administrators only; what the
//! records hold is [`crate::audit`]'s.

use axum::extract::State;
use axum::http::Uri;
use axum::Json;
use chrono::{DateTime, Utc};
use klausur_store::{AuditFilter, AuditRecord};
use serde::{Deserialize, Serialize};

use crate::http::extract::Admin;
use crate::http::http_error::ApiError;
use crate::http::http_error::Refusal;
use crate::state::AppState;

/// Records per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    kind: Option<String>,
    meeting: Option<String>,
    q: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    before: Option<i64>,
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct Page {
    records: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    Refusal::Invalid(message.into()).into()
}

/// A query string parsed into `T`, or an error that says which parameter is wrong.
fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| invalid(format!("query: {}", e.body_text())))
}

/// A filter text field: trimmed, empty as absent, at most `max` characters.
fn text(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    match value {
        Some(v) if v.chars().count() > max => {
            Err(invalid(format!("{field} must be at most {max} characters")))
        }
        Some(v) if v.chars().any(char::is_control) => Err(invalid(format!(
            "{field} must not contain control characters"
        ))),
        other => Ok(other),
    }
}

/// `GET /api/audit?kind=&meeting=&q=&since=&until=&before=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    Admin(_): Admin,
    uri: Uri,
) -> Result<Json<Page>, ApiError> {
    let q: ListQuery = query(&uri)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=klausur_store::AUDIT_PAGE_MAX).contains(&limit) {
        return Err(invalid(format!(
            "limit must be between 1 and {}",
            klausur_store::AUDIT_PAGE_MAX
        )));
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if since > until {
            return Err(invalid("since must not be after until"));
        }
    }
    let filter = AuditFilter {
        kind: text("kind", q.kind, 64)?,
        meeting_id: text("meeting", q.meeting, 64)?,
        text: text("q", q.q, 100)?,
        since: q.since,
        until: q.until,
        before_seq: q.before,
        // One more than the page: whether another page follows.
        limit: limit + 1,
    };
    let mut records = state.store.audit_records(&filter).await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_before = records.last().filter(|_| more).map(|r| r.seq);
    Ok(Json(Page {
        records,
        next_before,
    }))
}

#[derive(Serialize)]
pub struct Verification {
    intact: bool,
    records: u64,
    /// The last record as `SEQ:HASH`: note it; `klausur audit verify --head` checks later that
    /// the trail still holds it (nothing cut off, nothing rewritten).
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<String>,
    problems: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyQuery {
    head: Option<String>,
}

/// `GET /api/audit/verify[?head=SEQ:HASH]`: the chain checked from the retention anchor to the
/// newest record, and against a head noted earlier if one is given.
pub async fn verify(
    State(state): State<AppState>,
    Admin(_): Admin,
    uri: Uri,
) -> Result<Json<Verification>, ApiError> {
    let q: VerifyQuery = query(&uri)?;
    let head = match q.head.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
        Some(h) => Some(
            h.parse::<klausur_store::audit::Head>()
                .map_err(|e| invalid(format!("head: {e}")))?,
        ),
        None => None,
    };
    let verdict = state.store.verify_audit(head).await?;
    Ok(Json(Verification {
        intact: verdict.is_intact(),
        records: verdict.records,
        head: verdict.head.map(|h| format!("{}:{}", h.seq, h.hash)),
        problems: verdict.problems.iter().map(ToString::to_string).collect(),
    }))
}
