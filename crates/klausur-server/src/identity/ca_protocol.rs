//! The protocol of the identity CA service (`klausur identity-ca serve`, the top-level
//! `ca_service` module): the body and answer of `POST /issue`, the check of a request field by
//! field, and the bearer token file both sides read. Pure apart from the token files; the
//! service and [`super::RemoteCa`] (its client) both build on it.

use std::path::Path;

use anyhow::{bail, Context};
use klausur_e2ee::ParticipantKind;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::names::validate_display_name;

/// Shortest accepted token, in characters.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The body of `POST /issue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueRequest {
    pub user_id: String,
    pub display_name: String,
    pub kind: ParticipantKind,
    /// 64 hex digits.
    pub device_key: String,
    pub valid_minutes: u64,
}

/// The answer of `POST /issue`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssueResponse {
    /// `SignedCredential::to_bytes`, standard base64.
    pub credential: String,
    pub ca_public_key: String,
    pub not_after_ms: u64,
}

/// Writes a new random token (256 bits) to `path` with mode 0600. Refuses an existing file
/// unless `force`, in which case the file is replaced atomically.
pub fn create_token_file(path: &Path, force: bool) -> anyhow::Result<()> {
    let token = crate::auth::new_token();
    let mut text = Zeroizing::new(String::with_capacity(token.len() + 1));
    text.push_str(&token);
    text.push('\n');
    super::write_secret_file(path, text.as_bytes(), force).map_err(|e| match e {
        super::WriteSecretError::Exists => anyhow::anyhow!(
            "{} already exists; refusing to overwrite a token (pass --force to replace it; the \
             servers using the old one must get the new one)",
            path.display()
        ),
        super::WriteSecretError::Other(e) => e,
    })
}

/// Reads a token file: its first line, at least [`MIN_TOKEN_CHARS`] printable ASCII characters.
/// Warns (in the log) if the file is readable by group or others.
pub fn load_token_file(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the token file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() < MIN_TOKEN_CHARS || !line.chars().all(|c| c.is_ascii_graphic()) {
        bail!(
            "the token file {} must hold one line of at least {MIN_TOKEN_CHARS} printable \
             characters without spaces (`klausur identity-ca init-token` makes one)",
            path.display()
        );
    }
    Ok(Zeroizing::new(line.to_string()))
}

/// Why `POST /issue` is refused; `http::http_error` makes the replies.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The bearer token is missing or wrong.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// More issuances this minute than the service allows.
    #[error("too many credentials this minute; try again shortly")]
    RateLimited,
    /// The body is not a JSON object.
    #[error("the body must be a JSON object")]
    Malformed,
    /// A field is missing, unknown or wrong; the message starts with its name.
    #[error("{0}")]
    InvalidField(String),
}

fn invalid(field: &str, message: impl Into<String>) -> RequestError {
    let message = message.into();
    let message = if message.starts_with(field) {
        message
    } else {
        format!("{field}: {message}")
    };
    RequestError::InvalidField(message)
}

fn string_field<'a>(body: &'a Map<String, Value>, field: &str) -> Result<&'a str, RequestError> {
    match body.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(field, "must be a string")),
        None => Err(invalid(field, "is missing")),
    }
}

/// A request to `POST /issue` that passed [`check_request`].
pub struct Checked {
    pub user_id: String,
    pub display_name: String,
    pub kind: ParticipantKind,
    pub device_key: klausur_e2ee::VerifyingKey,
    pub valid_minutes: u64,
}

/// Validates the body of `POST /issue` field by field, as `identity-ca issue` does.
pub fn check_request(body: &[u8]) -> Result<Checked, RequestError> {
    let body: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| RequestError::Malformed)?;
    const FIELDS: [&str; 5] = [
        "user_id",
        "display_name",
        "kind",
        "device_key",
        "valid_minutes",
    ];
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        let shown: String = unknown.chars().take(40).collect();
        return Err(invalid(&shown, "unknown field"));
    }
    let user_id = string_field(&body, "user_id")?;
    super::validate_user_id(user_id).map_err(|e| invalid("user_id", e))?;
    let display_name = validate_display_name(string_field(&body, "display_name")?)
        .map_err(|e| invalid("display_name", e))?;
    let kind = serde_json::from_value::<ParticipantKind>(Value::String(
        string_field(&body, "kind")?.to_string(),
    ))
    .map_err(|_| {
        invalid(
            "kind",
            "must be one of staff, invited_guest, guest, phone_gateway",
        )
    })?;
    let device_key = super::parse_device_key(string_field(&body, "device_key")?)
        .map_err(|e| invalid("device_key", e))?;
    let range = format!(
        "must be a whole number from 1 to {}",
        super::MAX_CREDENTIAL_MINUTES
    );
    let valid_minutes = match body.get("valid_minutes") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("valid_minutes", range.clone()))?,
        None => return Err(invalid("valid_minutes", "is missing")),
    };
    if !(1..=super::MAX_CREDENTIAL_MINUTES).contains(&valid_minutes) {
        return Err(invalid("valid_minutes", range));
    }
    Ok(Checked {
        user_id: user_id.to_string(),
        display_name,
        kind,
        device_key,
        valid_minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t");
        create_token_file(&path, false).expect("create");
        let t = load_token_file(&path).expect("load");
        assert!(t.len() >= MIN_TOKEN_CHARS);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = create_token_file(&path, false).expect_err("exists");
        assert!(err.to_string().contains("already exists"), "{err}");
        create_token_file(&path, true).expect("force");
        assert_ne!(*load_token_file(&path).expect("load"), *t);
        std::fs::write(&path, "short\n").expect("write");
        assert!(load_token_file(&path).is_err());
        std::fs::write(&path, format!("{} x\n", "a".repeat(40))).expect("write");
        assert!(load_token_file(&path).is_err());
    }
}
