//! The dial-in gateway's routes: `POST /api/dialin/calls` (a caller's meeting number and PIN,
//! throttled, answered with a verdict and, for a right PIN, a ticket) and
//! `DELETE /api/dialin/calls/{ticket}`, plus the lookups of a ticket that the credential route
//! and the WebSocket make. The rules themselves (PINs, throttle, tickets, verdicts) are
//! [`crate::dialin`]'s; this module checks the request and who presents it.

use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use klausur_store::{Invitation, PhonePin, StoreError};
use serde::Deserialize;
use serde_json::json;

use crate::admission::AdmissionError;
use crate::dialin::{
    match_pin, number_suffix, verdict, ThrottleVerdict, Ticket, Verdict, MAX_ENTRY_DIGITS,
};
use crate::http::extract::Body;
use crate::http::http_error::{ApiError, Refusal};
use crate::state::AppState;

/// Whether a request presents a gateway token: `None` without an `Authorization` header, else
/// whether it is `Bearer` with one of the gateway tokens.
pub fn presents_gateway_token(state: &AppState, headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::AUTHORIZATION)?;
    let presented = crate::auth::bearer(value.to_str().ok()).unwrap_or("");
    Some(!presented.is_empty() && state.dialin.tokens.accepts(presented))
}

/// Checks the gateway's bearer token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if presents_gateway_token(state, headers) == Some(true) {
        Ok(())
    } else {
        tracing::warn!("dial-in API: request without a valid gateway token refused");
        Err(Refusal::Unauthorized("missing or wrong gateway token".into()).into())
    }
}

/// `POST /api/dialin/calls`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallReq {
    meeting_number: String,
    pin: String,
    #[serde(default)]
    caller: Option<String>,
    source: String,
}

fn digits(field: &str, s: &str) -> Result<(), Refusal> {
    if s.is_empty() || s.len() > MAX_ENTRY_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        Err(Refusal::Invalid(format!(
            "{field} must be 1 to {MAX_ENTRY_DIGITS} digits"
        )))
    } else {
        Ok(())
    }
}

fn short_text(field: &str, s: &str, max: usize) -> Result<(), Refusal> {
    if s.chars().count() > max || s.chars().any(char::is_control) {
        Err(Refusal::Invalid(format!(
            "{field} must be at most {max} characters without control characters"
        )))
    } else {
        Ok(())
    }
}

/// The throttle keys of an attempt: the meeting number, and the caller's number if the trunk
/// gave one, else the source address.
fn throttle_keys(req: &CallReq) -> (String, String) {
    let number = format!("number:{}", req.meeting_number);
    let caller_digits: String = req
        .caller
        .as_deref()
        .map(|c| c.chars().filter(char::is_ascii_digit).collect())
        .unwrap_or_default();
    let source = if caller_digits.is_empty() {
        format!("source:{}", req.source)
    } else {
        format!("caller:{caller_digits}")
    };
    (number, source)
}

/// A meeting id no meeting has (for the comparison work of an unknown number).
const NO_MEETING: &str = "-";

/// Records a checked dial-in attempt: the meeting number typed, the meeting it names (if any),
/// the result, the caller's signalling address and the last digits of the calling number (as
/// the roster shows them). Never the PIN. Throttled attempts are not checked and not recorded
/// one by one (the throttle bounds how many are checked).
async fn record_attempt(state: &AppState, req: &CallReq, meeting: Option<&str>, result: &str) {
    let mut entry = crate::audit::Entry::new(
        crate::audit::kind::DIALIN_ATTEMPT,
        klausur_store::AuditActor::new(
            "phone",
            None,
            req.caller.as_deref().and_then(number_suffix),
        ),
    )
    .details(json!({ "meeting_number": req.meeting_number, "result": result }));
    if let Some(id) = meeting {
        entry = entry.meeting(id);
    }
    if let Ok(ip) = req.source.parse::<std::net::IpAddr>() {
        entry = entry.source(ip);
    } else if let Some(ip) = req
        .source
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
    {
        entry = entry.source(ip);
    }
    state.audit.record(entry).await;
}

/// `POST /api/dialin/calls`: checks a meeting number and PIN for the gateway.
pub async fn post_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Body(req): Body<CallReq>,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    digits("meeting_number", &req.meeting_number)?;
    digits("pin", &req.pin)?;
    if let Some(c) = &req.caller {
        short_text("caller", c, 64)?;
    }
    if req.source.is_empty() {
        return Err(Refusal::Invalid("source is required".into()).into());
    }
    short_text("source", &req.source, 100)?;
    let (number_key, source_key) = throttle_keys(&req);
    let throttled = state
        .dialin
        .throttle
        .lock()
        .map(|mut t| t.attempt(Instant::now(), &[&number_key, &source_key]))
        .unwrap_or(ThrottleVerdict::Throttled {
            retry_after: Duration::from_secs(1),
        });
    let after = match throttled {
        ThrottleVerdict::Check { after } => after,
        ThrottleVerdict::Throttled { retry_after } => {
            tracing::info!("dial-in check: throttled");
            state.metrics.dialin_checked("throttled");
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            return Ok(Json(
                json!({"result": "throttled", "retry_after_secs": secs.max(1)}),
            ));
        }
    };
    if !after.is_zero() {
        tokio::time::sleep(after).await;
    }

    let now = Utc::now();
    let meeting = state
        .store
        .meeting_by_dial_in_number(&req.meeting_number)
        .await?;
    let meeting_id = meeting.as_ref().map_or(NO_MEETING, |m| m.id.as_str());
    // The same work for an unknown number: the query, the HMAC, a comparison.
    let mut pins = state.store.valid_phone_pins(meeting_id, now).await?;
    if meeting.is_none() {
        pins.push(PhonePin {
            invitation_id: 0,
            pin_hash: hex::encode([0u8; 32]),
        });
    }
    let matched = match_pin(state.dialin.pin_key(), meeting_id, &req.pin, &pins);
    let matched = matched.filter(|_| meeting.is_some());
    let verdict = verdict(meeting.as_ref(), matched, now);
    if verdict.pin_was_right() {
        if let Ok(mut t) = state.dialin.throttle.lock() {
            t.forgive(&number_key, &source_key);
        }
    }
    let result = match (&verdict, &meeting) {
        (Verdict::Admit { .. }, Some(_)) => "admit",
        (Verdict::NotYet { .. }, _) => "not_yet",
        (Verdict::NotAllowed, _) => "not_allowed",
        (Verdict::Ended, _) => "ended",
        _ => "wrong",
    };
    state.metrics.dialin_checked(result);
    record_attempt(
        &state,
        &req,
        meeting.as_ref().map(|m| m.id.as_str()),
        result,
    )
    .await;
    let (meeting, invitation_id) = match (verdict, meeting) {
        (Verdict::Admit { invitation_id }, Some(m)) => (m, invitation_id),
        (Verdict::NotYet { starts_at }, _) => {
            tracing::info!("dial-in check: too early");
            return Ok(Json(json!({"result": "not_yet", "starts_at": starts_at})));
        }
        (Verdict::NotAllowed, _) => {
            tracing::info!("dial-in check: the meeting's profile refuses dial-in");
            return Ok(Json(json!({"result": "not_allowed"})));
        }
        (Verdict::Ended, _) => {
            tracing::info!("dial-in check: the meeting has ended");
            return Ok(Json(json!({"result": "ended"})));
        }
        _ => {
            tracing::info!("dial-in check: wrong number or PIN");
            return Ok(Json(json!({"result": "wrong"})));
        }
    };
    let invitation = state
        .store
        .invitation(invitation_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let ticket = Ticket {
        invitation_id,
        meeting_id: meeting.id.clone(),
        number_suffix: req.caller.as_deref().and_then(number_suffix),
    };
    let shared = ticket.clone();
    let token = state
        .dialin
        .tickets
        .lock()
        .map(|mut t| t.issue(Instant::now(), ticket))
        .map_err(|_| Refusal::Internal)?;
    // On a node of a cluster the meeting may run on another node, which takes the call's join.
    if let Some(cluster) = &state.cluster {
        cluster
            .share_ticket(&token, &shared, state.dialin.pin_key())
            .await;
    }
    tracing::info!(meeting = %meeting.id, invitation = invitation_id, "dial-in call admitted");
    Ok(Json(json!({
        "result": "admit",
        "ticket": token.as_str(),
        "meeting_id": meeting.id,
        "meeting_title": meeting.title,
        "invitee": invitation.name,
    })))
}

/// `DELETE /api/dialin/calls/{ticket}`: the call is over.
pub async fn delete_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(ticket): UrlPath<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let mut voided = state
        .dialin
        .tickets
        .lock()
        .map(|mut t| t.void(Instant::now(), &ticket))
        .unwrap_or(false);
    if let Some(cluster) = &state.cluster {
        voided |= cluster.void_ticket(&ticket).await;
    }
    if voided {
        tracing::info!("dial-in call ended");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Refusal::NotFound("no such call".into()).into())
    }
}

/// The ticket's invitation, checked for a join or a credential: the ticket is valid (and for
/// `meeting_id` if given), the invitation neither revoked nor expired.
pub async fn ticket_invitation(
    state: &AppState,
    token: &str,
    meeting_id: Option<&str>,
) -> Result<(Ticket, Invitation), AdmissionError> {
    let mut ticket = state.dialin.ticket(token);
    if let (None, Some(cluster)) = (&ticket, &state.cluster) {
        // Issued by another node of the cluster, whose gateway took the call.
        ticket = cluster.shared_ticket(token, state.dialin.pin_key()).await;
    }
    let ticket = ticket
        .filter(|t| meeting_id.is_none_or(|m| m == t.meeting_id))
        .ok_or(AdmissionError::TicketInvalid)?;
    let inv = state
        .store
        .invitation(ticket.invitation_id)
        .await
        .map_err(|e| AdmissionError::Internal(e.to_string()))?
        .filter(|i| i.meeting_id == ticket.meeting_id && i.revoked_at.is_none())
        .ok_or(AdmissionError::InvitationInvalid)?;
    if inv.expires_at <= Utc::now() {
        return Err(AdmissionError::InvitationExpired);
    }
    Ok((ticket, inv))
}
