//! The gateway's client of the server's dial-in API (`POST /api/dialin/calls`, `DELETE
//! /api/dialin/calls/{ticket}`; docs/protocol.md): it asks whether a meeting number and PIN
//! admit a caller, and says when a call is over. Every request carries the gateway token.
//!
//! The PIN and the caller's full number travel only in the request body; nothing here logs
//! them. The ticket travels in the path of `DELETE`: errors of that request carry no URL.
//!
//! Over `https://` the client trusts what the gateway's TLS configuration trusts (the web roots,
//! or also an operator's own CA: [`klausur_client::driver::tls_config`]), the same as the
//! callers' meeting clients.

use std::time::Duration;

use klausur_client::driver::{self as client, TlsConfig};
use serde::Deserialize;
use zeroize::Zeroizing;

/// How long a check may take (the server delays answers after failures by at most 30 s).
const CHECK_TIMEOUT: Duration = Duration::from_secs(45);

/// The server's answer to a caller's meeting number and PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Admitted: join the meeting with this ticket.
    Admit {
        ticket: Ticket,
        meeting_id: String,
        meeting_title: String,
        invitee: String,
    },
    /// The number or the PIN is wrong (the server does not say which).
    Wrong,
    /// Right number and PIN, but the meeting's profile refuses dial-in.
    NotAllowed,
    /// Right PIN, but too early.
    NotYet,
    /// The meeting has ended.
    Ended,
    /// Too many failures: try again later.
    Throttled,
}

/// A dial-in ticket: a secret, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket(pub String);

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticket(..)")
    }
}

/// Errors talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the server cannot be reached: {}", client::error_chain(.0))]
    Http(#[from] reqwest::Error),
    #[error("HTTP client: {0}")]
    Client(#[from] client::DriverError),
    #[error("the server refused the gateway: {0}")]
    Refused(String),
    #[error("the server's answer is not usable: {0}")]
    BadAnswer(String),
}

#[derive(Deserialize)]
struct CheckAnswer {
    result: String,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    meeting_id: Option<String>,
    #[serde(default)]
    meeting_title: Option<String>,
    #[serde(default)]
    invitee: Option<String>,
}

/// The server's dial-in API, as the gateway uses it.
#[derive(Clone)]
pub struct DialInApi {
    http: reqwest::Client,
    server: String,
    tls: Option<TlsConfig>,
    token: Zeroizing<String>,
}

impl std::fmt::Debug for DialInApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialInApi")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl DialInApi {
    /// `server` is the base URL (`http://127.0.0.1:8080`), `token` the gateway token, `tls`
    /// which server certificates to trust (`None`: the web roots).
    pub fn new(
        server: &str,
        token: Zeroizing<String>,
        tls: Option<TlsConfig>,
    ) -> Result<DialInApi, ApiError> {
        let http = client::http_client(tls.as_ref(), CHECK_TIMEOUT)?;
        Ok(DialInApi {
            http,
            server: server.trim_end_matches('/').to_string(),
            tls,
            token,
        })
    }

    /// The server's base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The gateway token; the callers' meeting clients present it on their WebSocket upgrade,
    /// so that many calls from one gateway do not meet the server's per-address limit.
    pub fn token(&self) -> &Zeroizing<String> {
        &self.token
    }

    /// Which server certificates are trusted (`None`: the web roots); the callers' meeting
    /// clients trust the same.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.tls.as_ref()
    }

    /// Asks whether `meeting_number` and `pin` admit the caller. `caller` is the caller's
    /// number as the trunk gave it, `source` the trunk's address.
    pub async fn check(
        &self,
        meeting_number: &str,
        pin: &str,
        caller: Option<&str>,
        source: &str,
    ) -> Result<CheckOutcome, ApiError> {
        let body = serde_json::json!({
            "meeting_number": meeting_number,
            "pin": pin,
            "caller": caller,
            "source": source,
        });
        let resp = self
            .http
            .post(format!("{}/api/dialin/calls", self.server))
            .bearer_auth(self.token.as_str())
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(ApiError::Refused(format!("HTTP {status}")));
        }
        let answer: CheckAnswer = resp
            .json()
            .await
            .map_err(|e| ApiError::BadAnswer(e.to_string()))?;
        Ok(match answer.result.as_str() {
            "admit" => {
                let (Some(ticket), Some(meeting_id)) = (answer.ticket, answer.meeting_id) else {
                    return Err(ApiError::BadAnswer(
                        "admit without ticket or meeting".into(),
                    ));
                };
                CheckOutcome::Admit {
                    ticket: Ticket(ticket),
                    meeting_id,
                    meeting_title: answer.meeting_title.unwrap_or_default(),
                    invitee: answer.invitee.unwrap_or_default(),
                }
            }
            "wrong" => CheckOutcome::Wrong,
            "not_allowed" => CheckOutcome::NotAllowed,
            "not_yet" => CheckOutcome::NotYet,
            "ended" => CheckOutcome::Ended,
            "throttled" => CheckOutcome::Throttled,
            other => {
                return Err(ApiError::BadAnswer(format!(
                    "unknown result {:?}",
                    other.chars().take(20).collect::<String>()
                )))
            }
        })
    }

    /// The call is over: the ticket is void.
    pub async fn end(&self, ticket: &Ticket) -> Result<(), ApiError> {
        let resp = self
            .http
            .delete(format!("{}/api/dialin/calls/{}", self.server, ticket.0))
            .bearer_auth(self.token.as_str())
            .send()
            .await
            // The URL holds the ticket.
            .map_err(reqwest::Error::without_url)?;
        if resp.status().is_success() || resp.status() == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(ApiError::Refused(format!("HTTP {}", resp.status())))
        }
    }
}
