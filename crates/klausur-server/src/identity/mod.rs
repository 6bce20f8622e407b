//! The identity layer: the CA's key file, credential issuance (local, or through the remote CA
//! service's client [`RemoteCa`]), the CA service's protocol ([`ca_protocol`]) and the
//! per-address limits of guest credentials.
//!
//! May call `admission`, `budget`, `names`, `config`, `auth` and `audit`; never the HTTP layer,
//! the state or the server. Its HTTP routes, `GET /api/identity/ca` and
//! `POST /api/identity/credential`, are `http::identity_api`; the CA as a service of its own is
//! the top-level `ca_service`.
//!
//! The CA signs [`SignedCredential`]s (see `klausur-e2ee`) that bind a user id, a display name,
//! a [`ParticipantKind`] and a device's Ed25519 key for a short time. Whoever holds the CA key can
//! mint credentials for anyone; docs/e2ee.md says what that means for trust.
//!
//! # Key file format (version 1)
//!
//! A text file of exactly two lines, each ended by `\n`:
//!
//! ```text
//! klausur-identity-ca-v1
//! <64 lowercase hex digits: the 32-byte Ed25519 secret key (seed)>
//! ```
//!
//! It is created with mode 0600 and never overwritten unless asked (`--force`). Reading accepts
//! upper-case hex and a missing final newline, nothing else.
//!
//! # Who gets which credential
//!
//! The body of `POST /api/identity/credential` says which identity is asked for:
//!
//! | body | caller | kind | user id | display name |
//! |---|---|---|---|---|
//! | `device_key` only | staff session (+ CSRF) | `staff` | `user:<id>` | the account's |
//! | `invite_token` | holder of a valid invitation | `invited_guest` | `invitation:<id>` | the invitation's |
//! | `meeting_id` + `display_name` | anyone (lobby guest) | `guest` | `guest:<128 random bits, hex>` | chosen by the guest |
//! | `dial_in_ticket` (+ `meeting_id`) | the dial-in gateway, for a caller it got a ticket for | `phone_gateway` | `invitation:<id>` | the invitation's |
//!
//! A guest credential names nobody: the name is self-chosen and the user id is random, so
//! clients show such a member as an unverified guest. Credentials are valid for
//! [`CREDENTIAL_MINUTES`] (from one minute before issuance, to tolerate clock skew).
//!
//! # Limits per client address
//!
//! [`IssueLimiter`] holds them. A lobby guest's request looks the meeting up first: for an open
//! meeting it spends the guests' budget (`identity.guest_credentials_per_15min`), for one that
//! does not exist or has ended a stricter budget of its own ([`GUEST_FAILURES_PER_15MIN`]), so
//! probing never locks out the real guests who share the prober's address. A failed invitation
//! token counts as in every other place a token is presented ([`admission::InvitationGuard`]).
//!
//! # Local or remote CA
//!
//! [`IdentityIssuer`] says who signs: the server itself with its key file (`Local`), or a CA
//! service elsewhere (`Remote`, `[identity] remote_url`; the top-level `ca_service` module). In remote
//! mode the server makes the same checks, then asks the CA to sign and verifies the answer
//! against the CA key it fetched at start; a CA that cannot be reached or refuses makes the
//! request a 502 `ca_unavailable`.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use klausur_e2ee::{IdentityCa, ParticipantKind, SignedCredential, SigningKey, VerifyingKey};
use rand::RngCore;
use zeroize::Zeroizing;

pub mod ca_protocol;

use crate::admission;
use crate::budget::AddressBudget;

/// First line of a key file.
pub const KEY_FILE_MAGIC: &str = "klausur-identity-ca-v1";
/// Lifetime of a credential issued over HTTP, and the CLI's default.
pub const CREDENTIAL_MINUTES: u64 = 60;
/// The longest lifetime `klausur identity-ca issue` accepts.
pub const MAX_CREDENTIAL_MINUTES: u64 = 24 * 60;
/// `not_before` lies this far before issuance, for clients whose clocks are a little behind.
pub const CLOCK_SKEW_SECS: u64 = 60;
/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_BYTES: usize = 200;

/// The CA key as hex (what clients pin or fetch from `GET /api/identity/ca`).
pub fn public_key_hex(ca: &IdentityCa) -> String {
    hex::encode(ca.public_key().to_bytes())
}

fn key_file_text(secret: &[u8; 32]) -> Zeroizing<String> {
    let mut hex_secret = Zeroizing::new([0u8; 64]);
    // Cannot fail: the output buffer has exactly twice the input's length.
    let _ = hex::encode_to_slice(secret, hex_secret.as_mut());
    let mut text = Zeroizing::new(String::with_capacity(KEY_FILE_MAGIC.len() + 66));
    text.push_str(KEY_FILE_MAGIC);
    text.push('\n');
    text.push_str(std::str::from_utf8(hex_secret.as_ref()).unwrap_or_default());
    text.push('\n');
    text
}

fn parse_key_file(text: &str) -> anyhow::Result<IdentityCa> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n');
    if lines.next() != Some(KEY_FILE_MAGIC) {
        bail!("not a klausur identity CA key file (first line must be {KEY_FILE_MAGIC})");
    }
    let secret_hex = lines.next().unwrap_or("");
    if lines.next().is_some() {
        bail!("unexpected content after the secret key line");
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(secret_hex.trim_end_matches('\r'), secret.as_mut())
        .map_err(|_| anyhow::anyhow!("the second line must be 64 hex digits (the secret key)"))?;
    Ok(IdentityCa::new(SigningKey::from_bytes(&secret)))
}

/// Reads a key file. Warns (in the log) if it is readable by group or others.
pub fn load_key_file(path: &Path) -> anyhow::Result<IdentityCa> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read identity CA key file {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the identity CA key file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    parse_key_file(&text).with_context(|| format!("identity CA key file {}", path.display()))
}

fn create_0600(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

fn write_new(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let mut f = create_0600(path)?;
    let written = f.write_all(content).and_then(|()| f.sync_all());
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Why [`write_secret_file`] failed.
#[derive(Debug)]
pub(crate) enum WriteSecretError {
    /// The file exists and `force` was not given.
    Exists,
    Other(anyhow::Error),
}

/// Writes a secret file with mode 0600 (creating its directory). Refuses an existing file
/// unless `force`, in which case the file is replaced atomically.
pub(crate) fn write_secret_file(
    path: &Path,
    content: impl AsRef<[u8]>,
    force: bool,
) -> Result<(), WriteSecretError> {
    let content = content.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))
            .map_err(WriteSecretError::Other)?;
    }
    if !force {
        return match write_new(path, content) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(WriteSecretError::Exists)
            }
            Err(e) => Err(WriteSecretError::Other(
                anyhow::Error::new(e).context(format!("cannot create {}", path.display())),
            )),
        };
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{:016x}", rand::rngs::OsRng.next_u64()));
    let tmp = PathBuf::from(tmp_name);
    write_new(&tmp, content)
        .with_context(|| format!("cannot create {}", tmp.display()))
        .map_err(WriteSecretError::Other)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteSecretError::Other(
            anyhow::Error::new(e).context(format!("cannot replace {}", path.display())),
        ));
    }
    Ok(())
}

/// Creates a new CA key at `path` (mode 0600). Refuses an existing file unless `force`, in which
/// case the file is replaced atomically.
pub fn create_key_file(path: &Path, force: bool) -> anyhow::Result<IdentityCa> {
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(secret.as_mut());
    let text = key_file_text(&secret);
    match write_secret_file(path, text.as_bytes(), force) {
        Ok(()) => Ok(IdentityCa::new(SigningKey::from_bytes(&secret))),
        Err(WriteSecretError::Exists) => bail!(
            "{} already exists; refusing to overwrite a CA key (pass --force to replace it, \
             which invalidates every credential it issued)",
            path.display()
        ),
        Err(WriteSecretError::Other(e)) => Err(e),
    }
}

/// For `klausur serve`: loads the key file, creating it (mode 0600) if it does not exist.
/// Returns the CA and whether the file was created.
pub fn load_or_create(path: &Path) -> anyhow::Result<(IdentityCa, bool)> {
    if path.exists() {
        return Ok((load_key_file(path)?, false));
    }
    match create_key_file(path, false) {
        Ok(ca) => Ok((ca, true)),
        // Another process created it in the meantime.
        Err(_) if path.exists() => Ok((load_key_file(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Parses a device's Ed25519 public key: 64 hex digits naming a valid, not small-order point.
pub fn parse_device_key(s: &str) -> Result<VerifyingKey, String> {
    let s = s.trim();
    let mut bytes = [0u8; 32];
    if s.len() != 64 {
        return Err(format!(
            "device_key must be 64 hex digits (a 32-byte Ed25519 public key), got {} characters",
            s.chars().count()
        ));
    }
    hex::decode_to_slice(s, &mut bytes)
        .map_err(|_| "device_key must be hex (0-9, a-f)".to_string())?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| "device_key is not a valid Ed25519 public key".to_string())?;
    if key.is_weak() {
        return Err("device_key is a weak (small-order) Ed25519 key".into());
    }
    Ok(key)
}

/// Checks a user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no whitespace or control characters.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > MAX_USER_ID_BYTES
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        Err(format!(
            "user id must be 1 to {MAX_USER_ID_BYTES} bytes without spaces or control characters"
        ))
    } else {
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An issued credential in its transport form.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credential: SignedCredential,
    /// `SignedCredential::to_bytes`, standard base64 with padding.
    pub base64: String,
    /// Exclusive end of validity, milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

/// Issues a credential valid from [`CLOCK_SKEW_SECS`] ago for `minutes` minutes from now.
pub fn issue(
    ca: &IdentityCa,
    user_id: &str,
    display_name: &str,
    kind: ParticipantKind,
    device_key: &VerifyingKey,
    minutes: u64,
) -> anyhow::Result<Issued> {
    let now = unix_now();
    let not_after = now + minutes * 60;
    let credential = ca
        .issue(
            user_id,
            display_name,
            kind,
            device_key,
            now.saturating_sub(CLOCK_SKEW_SECS),
            not_after,
        )
        .map_err(|e| anyhow::anyhow!("cannot issue the credential: {e}"))?;
    let bytes = credential
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("cannot encode the credential: {e}"))?;
    Ok(Issued {
        credential,
        base64: base64::engine::general_purpose::STANDARD.encode(bytes),
        not_after_ms: not_after * 1000,
    })
}

/// Who signs the credentials `POST /api/identity/credential` hands out.
pub enum IdentityIssuer {
    /// The server holds the CA key (`[identity] ca_key_file`, the default).
    Local(IdentityCa),
    /// A CA service elsewhere (`[identity] remote_url`); the server holds no CA key.
    Remote(RemoteCa),
}

impl From<IdentityCa> for IdentityIssuer {
    fn from(ca: IdentityCa) -> Self {
        IdentityIssuer::Local(ca)
    }
}

/// Why a credential could not be issued.
#[derive(Debug)]
pub enum IssueError {
    /// A local failure (logged; the caller sees "internal error").
    Internal(anyhow::Error),
    /// The remote CA did not issue: unreachable, refused, or answered something that does not
    /// verify. The message is safe to show to the caller; details are logged.
    CaUnavailable(String),
}

impl IdentityIssuer {
    /// The CA public key clients verify credentials against.
    pub fn public_key(&self) -> VerifyingKey {
        match self {
            IdentityIssuer::Local(ca) => ca.public_key(),
            IdentityIssuer::Remote(r) => r.public_key,
        }
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key().to_bytes())
    }

    /// The CA key, if the server holds it.
    pub fn local_ca(&self) -> Option<&IdentityCa> {
        match self {
            IdentityIssuer::Local(ca) => Some(ca),
            IdentityIssuer::Remote(_) => None,
        }
    }

    /// Signs (locally or by asking the remote CA) a credential valid for `minutes`.
    pub async fn issue(
        &self,
        user_id: &str,
        display_name: &str,
        kind: ParticipantKind,
        device_key: &VerifyingKey,
        minutes: u64,
    ) -> Result<Issued, IssueError> {
        match self {
            IdentityIssuer::Local(ca) => {
                issue(ca, user_id, display_name, kind, device_key, minutes)
                    .map_err(IssueError::Internal)
            }
            IdentityIssuer::Remote(r) => {
                r.issue(user_id, display_name, kind, device_key, minutes)
                    .await
            }
        }
    }
}

/// Timeout for every request to the remote CA.
pub const REMOTE_CA_TIMEOUT: Duration = Duration::from_secs(5);

/// The client of a CA service (`klausur identity-ca serve`, the top-level `ca_service` module).
pub struct RemoteCa {
    base_url: String,
    token: Zeroizing<String>,
    public_key: VerifyingKey,
    client: reqwest::Client,
}

impl RemoteCa {
    /// Reads the token and fetches the CA's public key (`GET /public-key`); fails if the CA
    /// cannot be reached, so that a misconfigured server does not start.
    pub async fn connect(config: &crate::config::RemoteCaConfig) -> anyhow::Result<RemoteCa> {
        let token = ca_protocol::load_token_file(&config.token_file)
            .context("identity.remote_token_file")?;
        let mut builder = reqwest::Client::builder()
            .timeout(REMOTE_CA_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.tls_ca_cert {
            let pem = std::fs::read(path).with_context(|| {
                format!("cannot read identity.remote_tls_ca_cert {}", path.display())
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!(
                    "identity.remote_tls_ca_cert {} is not a PEM certificate",
                    path.display()
                )
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .context("cannot build the HTTP client for the identity CA")?;
        let url = format!("{}/public-key", config.url);
        let unreachable = || {
            format!(
                "cannot get the public key of the identity CA at {} (identity.remote_url); is \
                 `klausur identity-ca serve` running there?",
                config.url
            )
        };
        let resp = client.get(&url).send().await.with_context(unreachable)?;
        if !resp.status().is_success() {
            bail!("{}: HTTP {}", unreachable(), resp.status());
        }
        let v: serde_json::Value = resp.json().await.with_context(unreachable)?;
        let public_key = v["public_key"]
            .as_str()
            .and_then(|h| <[u8; 32]>::try_from(hex::decode(h).ok()?).ok())
            .and_then(|b| VerifyingKey::from_bytes(&b).ok())
            .with_context(|| format!("{}: the answer holds no valid public_key", unreachable()))?;
        Ok(RemoteCa {
            base_url: config.url.clone(),
            token,
            public_key,
            client,
        })
    }

    /// Asks the CA to sign, then checks that the answer is a credential for exactly what was
    /// asked, signed by the key fetched at start.
    async fn issue(
        &self,
        user_id: &str,
        display_name: &str,
        kind: ParticipantKind,
        device_key: &VerifyingKey,
        minutes: u64,
    ) -> Result<Issued, IssueError> {
        let fail = |public: &str, detail: String| {
            tracing::error!(ca = %self.base_url, "identity CA did not issue: {detail}");
            IssueError::CaUnavailable(format!(
                "the identity CA did not issue the credential: {public}"
            ))
        };
        let req = ca_protocol::IssueRequest {
            user_id: user_id.to_string(),
            display_name: display_name.to_string(),
            kind,
            device_key: hex::encode(device_key.to_bytes()),
            valid_minutes: minutes,
        };
        let resp = self
            .client
            .post(format!("{}/issue", self.base_url))
            .bearer_auth(self.token.as_str())
            .json(&req)
            .send()
            .await
            .map_err(|e| {
                fail(
                    "it is unreachable or did not answer in time",
                    format!("{e}"),
                )
            })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            let public = match status.as_u16() {
                401 => "it refused the server's token (HTTP 401)".to_string(),
                429 => "it is rate-limited; try again in a minute (HTTP 429)".to_string(),
                _ => format!("it answered HTTP {}", status.as_u16()),
            };
            return Err(fail(&public, format!("HTTP {status}: {body}")));
        }
        let answer: ca_protocol::IssueResponse = resp
            .json()
            .await
            .map_err(|e| fail("its answer is malformed", format!("{e}")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&answer.credential)
            .map_err(|e| fail("its answer is malformed", format!("credential base64: {e}")))?;
        let credential = SignedCredential::from_bytes(&bytes)
            .map_err(|e| fail("its answer is malformed", format!("credential: {e}")))?;
        credential
            .verify(&self.public_key, Duration::from_secs(unix_now()))
            .map_err(|e| {
                fail(
                    "its credential does not verify against the CA key fetched at start (was the key replaced? restart the server)",
                    format!("{e}"),
                )
            })?;
        let c = &credential.credential;
        if c.user_id != user_id
            || c.display_name != display_name
            || c.kind != kind
            || c.device_public_key != device_key.to_bytes()
        {
            return Err(fail(
                "its credential does not name what was asked",
                "claims differ from the request".into(),
            ));
        }
        Ok(Issued {
            not_after_ms: c.not_after * 1000,
            base64: answer.credential,
            credential,
        })
    }
}

/// Requests per address and 15 minutes for a guest credential to a meeting that does not exist
/// or has ended, before such requests are answered 429. Stricter than the budget for real
/// guests (`identity.guest_credentials_per_15min`), and separate from it: probing does not
/// spend the real guests' budget.
pub const GUEST_FAILURES_PER_15MIN: u32 = 20;

/// The limits of `POST /api/identity/credential` and of invitation links per client address,
/// kept together in the server state (`state::Inner::guest_credential_limiter`):
///
/// - `guests`: guest credentials issued for an open meeting (`guest_credentials_per_15min`);
/// - `failures`: guest credential requests for a meeting that does not exist or has ended
///   ([`GUEST_FAILURES_PER_15MIN`]), counted apart so that they never spend `guests`;
/// - `invitations`: failed invitation-token lookups wherever a token is presented (see
///   [`admission::InvitationGuard`]); a handle, shared with the WebSocket's join.
///
/// The meeting is looked up before either guest budget is touched, so which budget a request
/// spends depends on what it asked for.
#[derive(Debug)]
pub struct IssueLimiter {
    guests: AddressBudget,
    failures: AddressBudget,
    invitations: admission::InvitationGuard,
}

impl IssueLimiter {
    /// `max_per_window` guest credentials per address in `window`; the other budgets take their
    /// constants.
    pub fn new(max_per_window: u32, window: Duration) -> Self {
        IssueLimiter {
            guests: AddressBudget::new(max_per_window, window),
            failures: AddressBudget::new(GUEST_FAILURES_PER_15MIN, Duration::from_secs(15 * 60)),
            invitations: admission::InvitationGuard::new(),
        }
    }

    /// Counts one guest credential for `ip`; false if its budget for the window is spent.
    pub fn try_take(&mut self, now: Instant, ip: IpAddr) -> bool {
        self.guests.try_take(now, ip)
    }

    /// Counts one request for a meeting that does not exist or has ended; false if the
    /// address has made too many.
    pub fn try_take_failure(&mut self, now: Instant, ip: IpAddr) -> bool {
        self.failures.try_take(now, ip)
    }

    /// The invitation-token guard (a handle to the one shared budget).
    pub fn invitations(&self) -> admission::InvitationGuard {
        self.invitations.clone()
    }
}

/// Builds the limiter from the configuration.
pub fn guest_limiter(config: &crate::config::Config) -> Mutex<IssueLimiter> {
    Mutex::new(IssueLimiter::new(
        config.identity.guest_credentials_per_15min,
        Duration::from_secs(15 * 60),
    ))
}

/// Why `POST /api/identity/credential` refuses, beyond the errors of the session, the store and
/// admission it passes on. `http::http_error` makes the replies.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A field is wrong, or fields that exclude each other were combined.
    #[error("{0}")]
    Invalid(String),
    #[error("meeting not found")]
    MeetingNotFound,
    #[error("the meeting has ended")]
    MeetingEnded,
    /// A moderator removed the invitation's holder from the meeting.
    #[error(
        "a moderator removed this invitation's holder from the meeting: a credential follows \
         once a moderator lets them in again"
    )]
    Removed,
    /// The address asked too often for meetings that do not exist or have ended.
    #[error(
        "too many requests for meetings that do not exist or have ended from this address; try \
         again in 15 minutes"
    )]
    TooManyFailures,
    /// The address has spent its guest-credential budget.
    #[error("too many guest credentials from this address; try again in 15 minutes")]
    TooManyGuests,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_roundtrip_and_strictness() {
        let secret = [5u8; 32];
        let text = key_file_text(&secret);
        assert_eq!(
            text.as_str(),
            format!("{KEY_FILE_MAGIC}\n{}\n", "05".repeat(32))
        );
        let ca = parse_key_file(&text).expect("parse");
        assert_eq!(
            ca.public_key(),
            SigningKey::from_bytes(&secret).verifying_key()
        );
        assert!(parse_key_file(text.trim_end()).is_ok());
        assert!(parse_key_file(&format!("{}extra\n", text.as_str())).is_err());
        assert!(parse_key_file(&format!("other-v1\n{}\n", "05".repeat(32))).is_err());
        assert!(parse_key_file(&format!("{KEY_FILE_MAGIC}\n{}\n", "05".repeat(31))).is_err());
        assert!(parse_key_file(&format!("{KEY_FILE_MAGIC}\n{}\n", "zz".repeat(32))).is_err());
    }

    #[test]
    fn device_keys_are_checked() {
        let good = hex::encode(SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes());
        assert!(parse_device_key(&good).is_ok());
        assert!(parse_device_key(&good[..62]).is_err());
        assert!(parse_device_key(&format!("{good}00")).is_err());
        assert!(parse_device_key(&"zz".repeat(32)).is_err());
        // The identity point has small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_device_key(&hex::encode(identity)).is_err());
    }

    #[test]
    fn limiter_counts_per_address_and_recovers() {
        let mut l = IssueLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(l.try_take(t0, a));
        assert!(l.try_take(t0, a));
        assert!(!l.try_take(t0, a));
        assert!(l.try_take(t0, b));
        assert!(l.try_take(t0 + Duration::from_secs(61), a));
        // One /64 is one budget.
        let v6a: IpAddr = "2001:db8::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8::2".parse().expect("ip");
        assert!(l.try_take(t0, v6a));
        assert!(l.try_take(t0, v6b));
        assert!(!l.try_take(t0, v6a));
    }

    #[test]
    fn failures_spend_a_budget_of_their_own() {
        let mut l = IssueLimiter::new(2, Duration::from_secs(900));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..GUEST_FAILURES_PER_15MIN {
            assert!(l.try_take_failure(t0, a));
        }
        assert!(!l.try_take_failure(t0, a), "probing is limited");
        // The guests' budget is untouched, and still limited (negative control).
        assert!(l.try_take(t0, a));
        assert!(l.try_take(t0, a));
        assert!(!l.try_take(t0, a));
    }

    #[test]
    fn issued_credentials_verify_for_about_an_hour() {
        let ca = IdentityCa::new(SigningKey::from_bytes(&[1; 32]));
        let dev = SigningKey::from_bytes(&[2; 32]).verifying_key();
        let issued = issue(&ca, "user:1", "Ada", ParticipantKind::Staff, &dev, 60).expect("issue");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&issued.base64)
            .expect("b64");
        let sc = SignedCredential::from_bytes(&bytes).expect("decode");
        let now = Duration::from_secs(unix_now());
        assert!(sc.verify(&ca.public_key(), now).is_ok());
        assert!(sc
            .verify(&ca.public_key(), now + Duration::from_secs(3601))
            .is_err());
        assert_eq!(sc.credential.not_after * 1000, issued.not_after_ms);
    }
}
