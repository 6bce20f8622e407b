//! The one place where a refusal on the meeting WebSocket becomes the `error` message its
//! sender receives.
//!
//! The parts that judge client messages return a [`Refusal`] (the delivery service
//! [`super::delivery`], the meeting actor, the frame checks of the WebSocket in `http::ws`)
//! or their own typed errors ([`AdmissionError`] for a `join`, the protocol's [`DecodeError`]
//! for a frame that is not a message), which become a [`Refusal`] here. A [`Refusal`] becomes a
//! [`ServerMsg::Error`] by its `From` conversion below and nowhere else; the connection and the
//! meeting carry on after it.

use klausur_proto::{DecodeError, ErrorCode, ServerMsg};

use crate::admission::AdmissionError;

/// A refused client message: the error code and the message for its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub ErrorCode, pub String);

impl From<Refusal> for ServerMsg {
    fn from(Refusal(code, message): Refusal) -> ServerMsg {
        ServerMsg::error(code, message)
    }
}

/// A frame that is not a client message: the code and message the protocol's decoder gives.
impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Refusal(e.code, e.message)
    }
}

/// A `join` that admission refuses.
impl From<AdmissionError> for Refusal {
    fn from(e: AdmissionError) -> Self {
        let code = match e {
            AdmissionError::MeetingNotFound
            | AdmissionError::MeetingEnded
            | AdmissionError::InvitationInvalid
            | AdmissionError::InvitationExpired
            | AdmissionError::TicketInvalid => ErrorCode::NotFound,
            AdmissionError::NameRequired | AdmissionError::TicketCombined => {
                ErrorCode::InvalidField
            }
            AdmissionError::DialInNotAllowed | AdmissionError::TicketNotFromGateway => {
                ErrorCode::Forbidden
            }
            AdmissionError::TooManyInvalidInvitations => ErrorCode::RateLimited,
            AdmissionError::StorageUnavailable => ErrorCode::StorageUnavailable,
            AdmissionError::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
            AdmissionError::ClusterUnavailable(_) => ErrorCode::ClusterUnavailable,
            AdmissionError::Internal(detail) => {
                // The detail (a store error's text) is for the operator's log, not the client.
                tracing::error!("join failed: {detail}");
                return Refusal(ErrorCode::Internal, "internal error".into());
            }
        };
        Refusal(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_admission_error_has_its_code() {
        let table = [
            (AdmissionError::MeetingNotFound, ErrorCode::NotFound),
            (AdmissionError::MeetingEnded, ErrorCode::NotFound),
            (AdmissionError::InvitationInvalid, ErrorCode::NotFound),
            (AdmissionError::InvitationExpired, ErrorCode::NotFound),
            (AdmissionError::NameRequired, ErrorCode::InvalidField),
            (AdmissionError::TicketInvalid, ErrorCode::NotFound),
            (AdmissionError::TicketCombined, ErrorCode::InvalidField),
            (AdmissionError::DialInNotAllowed, ErrorCode::Forbidden),
            (AdmissionError::TicketNotFromGateway, ErrorCode::Forbidden),
            (
                AdmissionError::TooManyInvalidInvitations,
                ErrorCode::RateLimited,
            ),
            (
                AdmissionError::StorageUnavailable,
                ErrorCode::StorageUnavailable,
            ),
            (
                AdmissionError::DatabaseUnavailable,
                ErrorCode::DatabaseUnavailable,
            ),
        ];
        for (e, code) in table {
            let message = e.to_string();
            assert_eq!(Refusal::from(e), Refusal(code, message));
        }
        // An internal failure's detail stays in the log (negative control: it is in the
        // error's own text).
        let internal = AdmissionError::Internal("database is locked at /var/lib/x".into());
        assert!(internal.to_string().contains("/var/lib/x"));
        assert_eq!(
            Refusal::from(internal),
            Refusal(ErrorCode::Internal, "internal error".into())
        );
    }

    #[test]
    fn a_refusal_is_an_error_message_with_its_code_and_message() {
        let msg = ServerMsg::from(Refusal(
            ErrorCode::Forbidden,
            "lock is for moderators".into(),
        ));
        assert_eq!(
            msg,
            ServerMsg::Error {
                code: ErrorCode::Forbidden,
                message: "lock is for moderators".into(),
            }
        );
        let wire: serde_json::Value = serde_json::from_str(&msg.encode()).expect("json");
        assert_eq!(
            wire,
            serde_json::json!({
                "type": "error",
                "code": "forbidden",
                "message": "lock is for moderators",
            })
        );
    }

    #[test]
    fn a_frame_that_is_no_message_is_refused_as_the_decoder_says() {
        let e = klausur_proto::ClientMsg::decode("{").expect_err("not json");
        let (code, message) = (e.code, e.message.clone());
        assert_eq!(code, ErrorCode::Malformed);
        assert_eq!(Refusal::from(e), Refusal(code, message));
    }
}
