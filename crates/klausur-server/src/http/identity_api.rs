//! The identity routes: `GET /api/identity/ca` (the CA public key) and
//! `POST /api/identity/credential` (a short-lived credential for the caller's device key; see
//! [`crate::identity`] for who gets which kind). The issuance itself is
//! [`crate::identity::IdentityIssuer`]; this module checks the request, who asks and their
//! budget, and records the issuance in the audit trail.

use std::time::Instant;

use axum::extract::{FromRequestParts as _, State};
use axum::http::{HeaderMap, Method, Request};
use axum::Json;
use chrono::Utc;
use klausur_e2ee::ParticipantKind;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;

use crate::admission;
use crate::http::dialin_api::ticket_invitation;
use crate::http::extract::{check_origin, Body, Staff};
use crate::http::http_error::ApiError;
use crate::identity::{parse_device_key, CredentialError, CREDENTIAL_MINUTES};
use crate::names::validate_display_name;
use crate::state::AppState;

fn bad_request(message: impl Into<String>) -> ApiError {
    CredentialError::Invalid(message.into()).into()
}

/// `GET /api/identity/ca`: the CA public key clients verify credentials against.
pub async fn ca_info(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "public_key": state.identity.public_key_hex() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialReq {
    device_key: String,
    #[serde(default)]
    invite_token: Option<String>,
    #[serde(default)]
    meeting_id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    dial_in_ticket: Option<String>,
}

/// A credential for an invitation whose holder a moderator removed from the meeting is refused
/// while the removal stands.
async fn refuse_if_removed(
    state: &AppState,
    inv: &klausur_store::Invitation,
) -> Result<(), ApiError> {
    let removed = state
        .store
        .is_banned(
            &inv.meeting_id,
            klausur_store::BanSubject::Invitation(inv.id),
        )
        .await?;
    if removed {
        return Err(CredentialError::Removed.into());
    }
    Ok(())
}

fn meeting_gone() -> ApiError {
    CredentialError::MeetingEnded.into()
}

/// `POST /api/identity/credential`: a short-lived credential for the caller's device key; see
/// the module documentation for who gets which kind.
pub async fn issue_credential(
    State(state): State<AppState>,
    crate::http::client_addr::ClientIp(client): crate::http::client_addr::ClientIp,
    gateway: Option<axum::Extension<crate::dialin::GatewayListener>>,
    headers: HeaderMap,
    Body(req): Body<CredentialReq>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_origin(&state.config, &headers)?;
    let device_key = parse_device_key(&req.device_key).map_err(bad_request)?;
    let (user_id, display_name, kind) = match (&req.invite_token, &req.meeting_id) {
        _ if req.dial_in_ticket.is_some() => {
            if req.invite_token.is_some() || req.display_name.is_some() {
                return Err(bad_request(
                    "dial_in_ticket cannot be combined with invite_token or display_name: the \
                     ticket's invitation names the caller",
                ));
            }
            // Only the dial-in gateway presents tickets (as for a `join`).
            let from_gateway = gateway.is_some()
                || crate::http::dialin_api::presents_gateway_token(&state, &headers) == Some(true);
            if !from_gateway {
                return Err(admission::AdmissionError::TicketNotFromGateway.into());
            }
            let ticket = req.dial_in_ticket.as_deref().unwrap_or_default();
            let (_, inv) = ticket_invitation(&state, ticket, req.meeting_id.as_deref()).await?;
            let m = state
                .store
                .meeting(&inv.meeting_id)
                .await?
                .ok_or(CredentialError::MeetingNotFound)?;
            if m.ended_at.is_some() {
                return Err(meeting_gone());
            }
            if !admission::meeting_dial_in(&m) {
                return Err(admission::AdmissionError::DialInNotAllowed.into());
            }
            refuse_if_removed(&state, &inv).await?;
            (
                format!("invitation:{}", inv.id),
                inv.name,
                ParticipantKind::PhoneGateway,
            )
        }
        (Some(token), meeting_id) => {
            if req.display_name.is_some() {
                return Err(bad_request(
                    "display_name cannot be chosen with an invitation: the invitation names the guest",
                ));
            }
            // Failed lookups count against the address (admission::InvitationGuard).
            let source = admission::Source::new(state.invitation_guard(), client);
            let inv = source.invitation(&state.store, token, Utc::now()).await?;
            if meeting_id.as_ref().is_some_and(|m| *m != inv.meeting_id) {
                return Err(source
                    .failed(admission::AdmissionError::InvitationInvalid)
                    .into());
            }
            let m = state
                .store
                .meeting(&inv.meeting_id)
                .await?
                .ok_or(CredentialError::MeetingNotFound)?;
            if m.ended_at.is_some() {
                return Err(meeting_gone());
            }
            // A removed holder gets none until a moderator lets them in again (the admission
            // lifts the removal; the client asks for its credential once it is in).
            refuse_if_removed(&state, &inv).await?;
            (
                format!("invitation:{}", inv.id),
                inv.name,
                ParticipantKind::InvitedGuest,
            )
        }
        (None, Some(meeting_id)) => {
            let name = req
                .display_name
                .as_deref()
                .ok_or_else(|| bad_request("display_name is required for a guest credential"))?;
            let name = validate_display_name(name).map_err(bad_request)?;
            // The meeting first: a request for one that does not exist or has ended spends a
            // budget of its own, never the one of the guests of real meetings.
            let refusal = match state.store.meeting(meeting_id).await? {
                None => Some(CredentialError::MeetingNotFound.into()),
                Some(m) if m.ended_at.is_some() => Some(meeting_gone()),
                Some(_) => None,
            };
            let now = Instant::now();
            if let Some(refusal) = refusal {
                let allowed = state
                    .guest_credential_limiter
                    .lock()
                    .map(|mut l| l.try_take_failure(now, client))
                    .unwrap_or(false);
                return Err(if allowed {
                    refusal
                } else {
                    CredentialError::TooManyFailures.into()
                });
            }
            let allowed = state
                .guest_credential_limiter
                .lock()
                .map(|mut l| l.try_take(now, client))
                .unwrap_or(false);
            if !allowed {
                return Err(CredentialError::TooManyGuests.into());
            }
            let mut random = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut random);
            (
                format!("guest:{}", hex::encode(random)),
                name,
                ParticipantKind::Guest,
            )
        }
        (None, None) => {
            if req.display_name.is_some() {
                return Err(bad_request(
                    "display_name needs meeting_id (guest credential)",
                ));
            }
            // The session extractor needs the method and headers only.
            let mut request = Request::new(());
            *request.method_mut() = Method::POST;
            *request.headers_mut() = headers;
            let (mut parts, ()) = request.into_parts();
            let Staff(user) = Staff::from_request_parts(&mut parts, &state).await?;
            (
                format!("user:{}", user.id),
                user.display_name,
                ParticipantKind::Staff,
            )
        }
    };
    let issued = state
        .identity
        .issue(
            &user_id,
            &display_name,
            kind,
            &device_key,
            CREDENTIAL_MINUTES,
        )
        .await?;
    let mut entry = crate::audit::Entry::new(
        crate::audit::kind::CREDENTIAL_ISSUED,
        klausur_store::AuditActor::new(
            match kind {
                ParticipantKind::Staff => "user",
                ParticipantKind::PhoneGateway => "phone",
                _ => "guest",
            },
            Some(user_id.clone()),
            Some(display_name.clone()),
        ),
    )
    .details(json!({
        "participant_kind": kind,
        "device_key": hex::encode(device_key.as_bytes()),
        "not_after_ms": issued.not_after_ms,
    }));
    if let Some(meeting) = &req.meeting_id {
        entry = entry.meeting(&crate::audit::bounded(meeting, 64));
    }
    state.audit.record(entry).await;
    tracing::info!(kind = ?kind, "identity credential issued");
    Ok(Json(json!({
        "credential": issued.base64,
        "ca_public_key": state.identity.public_key_hex(),
        "not_after_ms": issued.not_after_ms,
    })))
}
