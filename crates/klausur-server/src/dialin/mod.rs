//! The dial-in layer, the server's side of telephone dial-in: meeting numbers and phone PINs, the
//! PIN key, the throttle of the gateway API, the verdict on a caller's PIN, the tickets with
//! which the gateway joins a meeting for a caller, and where the SIP gateway is started
//! (`sip_gateway`).
//!
//! May call `admission`, `identity` (its secret files), `config`, `auth` and `audit`; never the
//! HTTP layer, the state or the server. The gateway API's routes (`POST /api/dialin/calls`,
//! `DELETE /api/dialin/calls/{ticket}`) are `http::dialin_api`.
//!
//! # Numbers and PINs
//!
//! A meeting created with dial-in gets a number of [`MEETING_NUMBER_DIGITS`] random digits,
//! unique among meetings ([`create_meeting_with_dial_in`], drawn again on a collision). Every
//! invitation of such a meeting gets a personal PIN of [`PIN_DIGITS`] random digits, unique
//! within the meeting ([`create_invitation`]), shown once when the invitation is created. The
//! store keeps only `HMAC-SHA256(pin_key, meeting_id || ":" || pin)` in hex ([`PinKey`]); the
//! key lives in `<data_dir>/dialin-pin.key` (32 random bytes, mode 0600), outside the database,
//! so that a copy of the database alone does not let anyone try PINs offline. A PIN admits from
//! 30 minutes before the meeting's start (from its creation without a start time) until the
//! meeting ends, and never after its invitation expired or was revoked ([`verdict`]).
//!
//! # The gateway API
//!
//! Only the gateway calls it, with `Authorization: Bearer <gateway token>` ([`GatewayTokens`]:
//! the in-process gateway's random token made at start, and the token of `[dialin]
//! gateway_token_file` for a remote gateway), compared in constant time; anything else is a 401.
//! `POST /api/dialin/calls` checks a meeting number and PIN and answers `admit` (with a
//! ticket), `wrong`, `not_allowed`, `not_yet`, `ended` or `throttled`. A wrong number, a wrong
//! PIN, the PIN of another meeting and the PIN of an expired or revoked invitation all get the
//! same `wrong`, and cost the same work: the PIN's HMAC is always computed and compared in
//! constant time against every valid PIN hash of the meeting (a dummy for an unknown number).
//!
//! # Throttle
//!
//! [`Throttle`] counts failures per meeting number and per source (the caller's number if the
//! trunk gave one, else the address the gateway reports) in a sliding window of 15 minutes:
//! after 3 failures each further attempt for that key waits `2^(n-3)` seconds (n failures)
//! before it is checked; one that would have to wait more than 30 seconds is answered
//! `throttled` at once. An attempt counts as a failure from the moment it is let through, so
//! that attempts made in parallel queue behind each other; a right PIN takes its count back and
//! clears the source's failures. The rule is pure (time is an argument) and keeps at most
//! [`THROTTLE_MAX_KEYS`] keys.
//!
//! # Tickets
//!
//! An admitted call gets a ticket: a random 256-bit token (base64url, 43 characters) kept in
//! memory with the invitation, the meeting and the last four digits of the caller's number
//! ([`Tickets`]). With it the gateway joins the meeting over the WebSocket (`join` with
//! `dial_in_ticket`) and gets the caller's end-to-end encryption credential (`POST
//! /api/identity/credential` with `dial_in_ticket`). It is valid for [`TICKET_LIFETIME`], until
//! the gateway deletes it (the call is over) or until the meeting ends; it may join again (a
//! reconnect of the gateway).
//!
//! # Privacy
//!
//! No PIN, meeting number, caller number or ticket is ever logged. The caller's number is kept
//! only as its last four digits, in the participant's `phone.number_suffix` (and, in memory
//! while the throttle window lasts, as a throttle key).
//!
//! # Structure
//!
//! The decisions are pure and tested here: [`verdict`] (what a PIN that matched means now),
//! [`match_pin`], [`Throttle`] and [`Tickets`] (both take `now`), [`GatewayTokens`]. The HTTP
//! handlers `post_call` and `delete_call` (`http::dialin_api`) only gather the facts (store, clock), sleep what
//! the throttle says and turn the decisions into replies. The throttle is written here rather
//! than taken from a rate-limiting crate: those limit a rate of requests (token buckets, GCRA),
//! while this rule is an exponential delay after counted failures with a hard refusal beyond
//! 30 seconds, a success that clears one key, and a bounded table.

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use klausur_proto::SecurityProfile;
use klausur_store::{Invitation, Meeting, NewInvitation, PhonePin, Store, StoreError};
use rand::{Rng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

pub mod sip_gateway;

use crate::admission::dial_in_allowed;
use crate::config::{Config, DialInConfig};

/// Digits of a meeting's dial-in number.
pub const MEETING_NUMBER_DIGITS: usize = 8;
/// Digits of a phone PIN.
pub const PIN_DIGITS: usize = 8;
/// Longest meeting number and PIN the gateway API accepts, in digits.
pub const MAX_ENTRY_DIGITS: usize = 16;
/// How long before a meeting's start its PINs admit callers.
pub const EARLY_ADMISSION: chrono::Duration = chrono::Duration::minutes(30);
/// How long a ticket is valid unless deleted earlier.
pub const TICKET_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most tickets kept; beyond, the oldest are forgotten (the gateway's calls are fewer).
pub const MAX_TICKETS: usize = 20_000;
/// Most throttle keys kept; beyond, the longest quiet ones are forgotten.
pub const THROTTLE_MAX_KEYS: usize = 50_000;
/// Name of the PIN key file in the data directory.
pub const PIN_KEY_FILE: &str = "dialin-pin.key";
/// Draws of a new number or PIN before giving up (a collision is already rare).
const MAX_DRAWS: usize = 32;

// ----- the PIN key -----

/// The server-held key under which phone PINs are hashed. Zeroized when dropped; never printed.
#[derive(Clone)]
pub struct PinKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for PinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PinKey(..)")
    }
}

impl PinKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PinKey {
        PinKey(Zeroizing::new(bytes))
    }

    /// A fresh random key that lives in memory only (tests).
    pub fn random() -> PinKey {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        PinKey(key)
    }

    /// The stored form of `pin` for `meeting_id`: HMAC-SHA256(key, meeting_id || ":" || pin),
    /// lower-case hex (64 characters).
    pub fn pin_hash(&self, meeting_id: &str, pin: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(meeting_id.as_bytes());
        mac.update(b":");
        mac.update(pin.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// HMAC-SHA256(key, label || ":" || data) in hex: a seal on a value the nodes of a
    /// cluster share through Redis (a dial-in ticket), which a writer of Redis without the key
    /// cannot make. Labels contain a `-`, which no meeting id does, so a seal is never a PIN's
    /// stored form.
    pub fn seal(&self, label: &str, data: &str) -> String {
        debug_assert!(label.contains('-'));
        self.pin_hash(label, data)
    }

    /// The key file's path in the data directory.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(PIN_KEY_FILE)
    }

    /// Reads a key file: exactly 32 bytes. Warns (in the log) if it is readable by group or
    /// others.
    pub fn load(path: &Path) -> anyhow::Result<PinKey> {
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("cannot read the dial-in PIN key file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = file.metadata() {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        file = %path.display(),
                        "the dial-in PIN key file is readable by other users; chmod 600 it"
                    );
                }
            }
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(33));
        file.by_ref()
            .take(33)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the dial-in PIN key file {}", path.display()))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "the dial-in PIN key file {} must hold exactly 32 bytes; it was damaged or is \
                 another file (restore it from the backup: without it no phone PIN works)",
                path.display()
            )
        })?;
        Ok(PinKey::from_bytes(key))
    }

    /// Loads the key file, creating it (32 random bytes, mode 0600) if it does not exist.
    /// Returns the key and whether the file was created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(PinKey, bool)> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        let key = PinKey::random();
        match crate::identity::write_secret_file(path, key.0.as_ref(), false) {
            Ok(()) => Ok((key, true)),
            // Another process created it in the meantime.
            Err(crate::identity::WriteSecretError::Exists) => Ok((Self::load(path)?, false)),
            Err(crate::identity::WriteSecretError::Other(e)) => {
                Err(e.context("cannot create the dial-in PIN key file"))
            }
        }
    }
}

// ----- numbers and PINs -----

/// `n` random decimal digits (uniform; leading zeros allowed).
fn random_digits(n: usize) -> Zeroizing<String> {
    let mut rng = rand::rngs::OsRng;
    Zeroizing::new(
        (0..n)
            .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
            .collect(),
    )
}

/// A new meeting dial-in number (not a secret: it is shown with every invitation).
pub fn new_meeting_number() -> String {
    random_digits(MEETING_NUMBER_DIGITS).to_string()
}

/// A new phone PIN (a secret of the invitee: shown once, stored only as its hash).
pub fn new_pin() -> Zeroizing<String> {
    random_digits(PIN_DIGITS)
}

/// Creates a meeting with a dial-in number, drawing the number again while it is another
/// meeting's.
pub async fn create_meeting_with_dial_in(
    store: &Store,
    id: &str,
    title: &str,
    starts_at: Option<DateTime<Utc>>,
    organiser_id: i64,
    profile: SecurityProfile,
) -> Result<Meeting, StoreError> {
    let mut last = None;
    for _ in 0..MAX_DRAWS {
        let number = new_meeting_number();
        match store
            .create_meeting_with_dial_in_number(
                id,
                title,
                starts_at,
                organiser_id,
                profile,
                &number,
            )
            .await
        {
            Err(e) if e.is_dial_in_number_taken() => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Conflict("no free dial-in number".into())))
}

/// Creates an invitation; if its meeting has a dial-in number, with a new phone PIN (drawn again
/// while it is another invitation's of the meeting), which is returned: it is shown once and
/// stored only as its hash. `new.phone_pin_hash` is ignored.
pub async fn create_invitation(
    store: &Store,
    key: &PinKey,
    meeting: &Meeting,
    new: NewInvitation,
) -> Result<(Invitation, Option<Zeroizing<String>>), StoreError> {
    if meeting.dial_in_number.is_none() {
        let inv = store
            .create_invitation(NewInvitation {
                phone_pin_hash: None,
                ..new
            })
            .await?;
        return Ok((inv, None));
    }
    let mut last = None;
    for _ in 0..MAX_DRAWS {
        let pin = new_pin();
        let attempt = NewInvitation {
            phone_pin_hash: Some(key.pin_hash(&meeting.id, &pin)),
            ..new.clone()
        };
        match store.create_invitation(attempt).await {
            Ok(inv) => return Ok((inv, Some(pin))),
            Err(e) if e.is_phone_pin_taken() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| StoreError::Conflict("no free phone PIN".into())))
}

/// A meeting's dial-in as meeting JSON shows it (`dial_in`), `None` without a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DialInView {
    pub meeting_number: String,
    /// What users dial (`[dialin] phone_number`), if configured.
    pub phone_number: Option<String>,
    /// The meeting's profile accepts calls.
    pub allowed: bool,
}

impl DialInView {
    pub fn of(meeting: &Meeting, config: &DialInConfig) -> Option<DialInView> {
        meeting.dial_in_number.as_ref().map(|n| DialInView {
            meeting_number: n.clone(),
            phone_number: config.phone_number.clone(),
            allowed: dial_in_allowed(meeting.profile),
        })
    }
}

/// The last four digits of a caller's number (fewer if it has fewer); `None` without digits.
pub fn number_suffix(caller: &str) -> Option<String> {
    let digits: Vec<char> = caller.chars().filter(char::is_ascii_digit).collect();
    let start = digits.len().saturating_sub(4);
    let suffix: String = digits.get(start..).unwrap_or_default().iter().collect();
    (!suffix.is_empty()).then_some(suffix)
}

// ----- the decision -----

/// The answer to a meeting number and PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In: the caller is this invitation's invitee.
    Admit { invitation_id: i64 },
    /// Unknown number, wrong PIN, PIN of another meeting, invalid invitation: all the same.
    Wrong,
    /// Right PIN, but the meeting's profile refuses dial-in.
    NotAllowed,
    /// Right PIN, too early: PINs admit from this time.
    NotYet { starts_at: DateTime<Utc> },
    /// Right PIN, but the meeting has ended.
    Ended,
}

impl Verdict {
    /// The PIN was right (whatever came of it): the throttle takes the attempt back.
    pub fn pin_was_right(&self) -> bool {
        !matches!(self, Verdict::Wrong)
    }
}

/// The rule: `matched` is the invitation whose PIN matched (see [`match_pin`]), `meeting` the
/// meeting of the number, if any.
pub fn verdict(meeting: Option<&Meeting>, matched: Option<i64>, now: DateTime<Utc>) -> Verdict {
    let (Some(meeting), Some(invitation_id)) = (meeting, matched) else {
        return Verdict::Wrong;
    };
    if meeting.ended_at.is_some() {
        return Verdict::Ended;
    }
    if !dial_in_allowed(meeting.profile) {
        return Verdict::NotAllowed;
    }
    if let Some(starts_at) = meeting.starts_at {
        if now < starts_at - EARLY_ADMISSION {
            return Verdict::NotYet { starts_at };
        }
    }
    Verdict::Admit { invitation_id }
}

/// The invitation among `pins` whose hash is `key`'s hash of `pin` for `meeting_id`. Compares
/// against every entry in constant time, without stopping at a match.
pub fn match_pin(key: &PinKey, meeting_id: &str, pin: &str, pins: &[PhonePin]) -> Option<i64> {
    let ours = key.pin_hash(meeting_id, pin);
    let mut found = subtle::Choice::from(0u8);
    let mut id = 0i64;
    for p in pins {
        // Stored hashes are 64 hex digits; another length never matches (and is no secret).
        let same = if p.pin_hash.len() == ours.len() {
            ours.as_bytes().ct_eq(p.pin_hash.as_bytes())
        } else {
            subtle::Choice::from(0u8)
        };
        id.conditional_assign(&p.invitation_id, same);
        found |= same;
    }
    bool::from(found).then_some(id)
}

// ----- the throttle -----

/// The throttle's figures (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    /// Failures in the window that cost nothing.
    pub free: u32,
    /// The delay after `free + k` failures is `unit * 2^k`.
    pub unit: Duration,
    /// An attempt that would wait longer than this is refused.
    pub max_wait: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
}

impl ThrottleRule {
    /// 3 free failures, then 1, 2, 4, ... seconds, at most 30 s, over 15 minutes; `unit`
    /// replaces the second (tests shorten it).
    pub fn standard(unit: Duration) -> ThrottleRule {
        ThrottleRule {
            free: 3,
            unit,
            max_wait: unit * 30,
            window: Duration::from_secs(15 * 60),
        }
    }

    /// The wait after `failures` failures; `None` if it is longer than `max_wait`.
    pub fn wait(&self, failures: usize) -> Option<Duration> {
        let over = u32::try_from(failures)
            .unwrap_or(u32::MAX)
            .checked_sub(self.free);
        let Some(over) = over else {
            return Some(Duration::ZERO);
        };
        let wait = 2u32
            .checked_pow(over)
            .and_then(|f| self.unit.checked_mul(f))?;
        (wait <= self.max_wait).then_some(wait)
    }
}

/// What the throttle says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleVerdict {
    /// Check it after waiting this long (it counts as a failure until [`Throttle::forgive`]).
    Check { after: Duration },
    /// Refuse it now; an attempt has a chance again in this long.
    Throttled { retry_after: Duration },
}

/// Failures per key in a sliding window (see the module documentation). Pure: time is an
/// argument. Its keys hold callers' numbers: `Debug` shows only how many there are.
pub struct Throttle {
    rule: ThrottleRule,
    max_keys: usize,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("rule", &self.rule)
            .field("keys", &self.failures.len())
            .finish()
    }
}

impl Throttle {
    pub fn new(rule: ThrottleRule, max_keys: usize) -> Throttle {
        Throttle {
            rule,
            max_keys: max_keys.max(1),
            failures: HashMap::new(),
        }
    }

    /// Keys remembered now (for tests of the memory bound).
    pub fn keys(&self) -> usize {
        self.failures.len()
    }

    fn forget_old(&mut self, now: Instant) {
        let window = self.rule.window;
        self.failures.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
            !times.is_empty()
        });
    }

    /// An attempt for `keys` (meeting number and source) at `now`. If it may be checked, it is
    /// counted as a failure of every key from now on.
    pub fn attempt(&mut self, now: Instant, keys: &[&str]) -> ThrottleVerdict {
        self.forget_old(now);
        let mut after = Duration::ZERO;
        let mut retry_after = None::<Duration>;
        for key in keys {
            let times = self.failures.get(*key);
            let n = times.map_or(0, VecDeque::len);
            match self.rule.wait(n) {
                Some(w) => after = after.max(w),
                None => {
                    // It may be tried again once enough failures aged out for a wait the
                    // rule allows.
                    let allowed = (0..n).rev().find(|m| self.rule.wait(*m).is_some());
                    let must_expire = n - allowed.unwrap_or(0);
                    let at = times
                        .and_then(|t| t.get(must_expire.saturating_sub(1)))
                        .map_or(now, |t| *t + self.rule.window);
                    let wait = at
                        .saturating_duration_since(now)
                        .max(Duration::from_secs(1));
                    retry_after = Some(retry_after.map_or(wait, |r| r.max(wait)));
                }
            }
        }
        if let Some(retry_after) = retry_after {
            return ThrottleVerdict::Throttled { retry_after };
        }
        for key in keys {
            if !self.failures.contains_key(*key) && self.failures.len() >= self.max_keys {
                self.evict_one();
            }
            self.failures
                .entry((*key).to_string())
                .or_default()
                .push_back(now);
        }
        ThrottleVerdict::Check { after }
    }

    /// Forgets the key whose newest failure is the oldest (the table is full).
    fn evict_one(&mut self) {
        let quietest = self
            .failures
            .iter()
            .min_by_key(|(_, times)| times.back().copied())
            .map(|(k, _)| k.clone());
        if let Some(k) = quietest {
            self.failures.remove(&k);
        }
    }

    /// The attempt let through by [`Throttle::attempt`] had the right PIN: it is no failure of
    /// the meeting number, and the source's failures are forgotten.
    pub fn forgive(&mut self, number_key: &str, source_key: &str) {
        if let Some(times) = self.failures.get_mut(number_key) {
            times.pop_back();
            if times.is_empty() {
                self.failures.remove(number_key);
            }
        }
        self.failures.remove(source_key);
    }
}

// ----- tickets -----

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub invitation_id: i64,
    pub meeting_id: String,
    /// The last four digits of the caller's number, if the trunk gave one.
    pub number_suffix: Option<String>,
}

/// The tickets of admitted calls, by the SHA-256 of the ticket (the ticket itself is the
/// gateway's secret). Pure: time is an argument. `Debug` shows only how many there are.
pub struct Tickets {
    lifetime: Duration,
    max: usize,
    by_hash: HashMap<[u8; 32], (Ticket, Instant)>,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("valid", &self.by_hash.len())
            .finish_non_exhaustive()
    }
}

fn ticket_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tickets {
    pub fn new(lifetime: Duration, max: usize) -> Tickets {
        Tickets {
            lifetime,
            max: max.max(1),
            by_hash: HashMap::new(),
        }
    }

    /// Issues a ticket for `ticket` at `now`; returns the token (43 characters).
    pub fn issue(&mut self, now: Instant, ticket: Ticket) -> Zeroizing<String> {
        let lifetime = self.lifetime;
        self.by_hash
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < lifetime);
        while self.by_hash.len() >= self.max {
            let oldest = self
                .by_hash
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.by_hash.remove(&k),
                None => break,
            };
        }
        let token = crate::auth::new_token();
        self.by_hash.insert(ticket_key(&token), (ticket, now));
        token
    }

    /// What `token` stands for, if it is valid at `now`.
    pub fn get(&mut self, now: Instant, token: &str) -> Option<Ticket> {
        let key = ticket_key(token);
        let (ticket, at) = self.by_hash.get(&key)?;
        if now.saturating_duration_since(*at) >= self.lifetime {
            self.by_hash.remove(&key);
            return None;
        }
        Some(ticket.clone())
    }

    /// Voids `token` (the call is over); false if it was not valid.
    pub fn void(&mut self, now: Instant, token: &str) -> bool {
        let valid = self.get(now, token).is_some();
        self.by_hash.remove(&ticket_key(token));
        valid
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

// ----- the gateway token -----

/// The tokens a gateway may present: the in-process gateway's (random, made at start when a
/// SIP listen address is configured) and the remote gateways' (`[dialin] gateway_token_file`).
/// Stored as SHA-256 digests besides the in-process token itself (which the in-process gateway
/// is handed); compared in constant time.
pub struct GatewayTokens {
    in_process: Option<Zeroizing<String>>,
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for GatewayTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayTokens")
            .field("in_process", &self.in_process.is_some())
            .field("tokens", &self.digests.len())
            .finish()
    }
}

impl GatewayTokens {
    /// `in_process`: a token for a gateway in this process; `remote`: the token of
    /// `[dialin] gateway_token_file`. The in-process gateway's token is random, except on a
    /// node of a cluster (`shared`), where it is the remote token: its calls join meetings
    /// that run on other nodes, which know that token and not this process's.
    pub fn new(in_process: bool, remote: Option<Zeroizing<String>>) -> GatewayTokens {
        Self::with(in_process, remote, false)
    }

    fn with(in_process: bool, remote: Option<Zeroizing<String>>, shared: bool) -> GatewayTokens {
        let in_process = match (in_process, shared, &remote) {
            (false, _, _) => None,
            (true, true, Some(token)) => Some(token.clone()),
            (true, _, _) => Some(crate::auth::new_token()),
        };
        let digests = in_process
            .iter()
            .chain(remote.iter())
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        GatewayTokens {
            in_process,
            digests,
        }
    }

    /// Whether `presented` is one of the tokens (constant time in the token's content).
    pub fn accepts(&self, presented: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut ok = subtle::Choice::from(0u8);
        for d in &self.digests {
            ok |= d.ct_eq(&h);
        }
        bool::from(ok)
    }

    /// The in-process gateway's token, if there is an in-process gateway.
    pub fn in_process(&self) -> Option<&Zeroizing<String>> {
        self.in_process.as_ref()
    }
}

// ----- the server's dial-in state -----

/// What a gateway needs to run: its `[dialin]` configuration, the base URL of the server it
/// serves, which certificates of that server it trusts and the token to present there. For the
/// gateway in `klausur serve`:
/// [`DialIn::gateway_setup`]; for `klausur sip-gateway`: built from its command line (see
/// `sip_gateway`).
#[derive(Clone)]
pub struct GatewaySetup {
    pub config: DialInConfig,
    /// Base URL of the server (`http://127.0.0.1:8080`, no trailing `/`).
    pub server_url: String,
    /// The gateway token (never logged).
    pub token: Zeroizing<String>,
    /// For an `https://` server: the TLS trust of the gateway's HTTP requests and meeting
    /// WebSockets (`None`: the web roots). `klausur sip-gateway --ca-file` (or `[dialin]
    /// server_ca_file`) adds an organisation's own CA; the in-process gateway talks plain HTTP
    /// over loopback and needs none.
    pub server_tls: Option<klausur_client::driver::TlsConfig>,
}

impl std::fmt::Debug for GatewaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySetup")
            .field("server_url", &self.server_url)
            .field("own_ca", &self.server_tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The server's dial-in state (in `state::AppState`): the PIN key, the gateway tokens, the tickets
/// and the throttle.
#[derive(Debug)]
pub struct DialIn {
    pin_key: PinKey,
    /// The tokens a gateway presents (checked by the gateway API, `http::dialin_api`).
    pub(crate) tokens: GatewayTokens,
    server_url: String,
    config: DialInConfig,
    /// The tickets of admitted callers.
    pub(crate) tickets: Mutex<Tickets>,
    /// The throttle of PIN attempts.
    pub(crate) throttle: Mutex<Throttle>,
}

impl DialIn {
    /// `pin_key` from [`PinKey::load_or_create`]; `remote_token` from `[dialin]
    /// gateway_token_file`; `server_url` is where this server can be reached from its own host
    /// (see [`self_url`]). Makes the in-process gateway's token if the configuration names a
    /// SIP listen address.
    pub fn new(
        config: &Config,
        pin_key: PinKey,
        remote_token: Option<Zeroizing<String>>,
        server_url: String,
    ) -> DialIn {
        DialIn {
            pin_key,
            tokens: GatewayTokens::with(
                config.dialin.gateway_enabled(),
                remote_token,
                config.cluster.is_some(),
            ),
            server_url,
            config: config.dialin.clone(),
            tickets: Mutex::new(Tickets::new(TICKET_LIFETIME, MAX_TICKETS)),
            throttle: Mutex::new(Throttle::new(
                ThrottleRule::standard(config.dialin_throttle_unit),
                THROTTLE_MAX_KEYS,
            )),
        }
    }

    /// For `klausur serve`: loads (or creates) `<data_dir>/dialin-pin.key` and the remote
    /// gateway token file, if configured.
    pub fn load(config: &Config, server_url: String) -> anyhow::Result<DialIn> {
        let path = PinKey::path_in(&config.data_dir);
        let (pin_key, created) = PinKey::load_or_create(&path)?;
        if created {
            tracing::info!(file = %path.display(), "created the dial-in PIN key");
        }
        let remote = match &config.dialin.gateway_token_file {
            Some(f) => Some(
                crate::identity::ca_protocol::load_token_file(f)
                    .context("dialin.gateway_token_file")?,
            ),
            None => None,
        };
        Ok(DialIn::new(config, pin_key, remote, server_url))
    }

    pub fn pin_key(&self) -> &PinKey {
        &self.pin_key
    }

    /// The server's own base URL, for a gateway in this process.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The in-process gateway's token, when a SIP listen address is configured.
    pub fn gateway_token(&self) -> Option<&Zeroizing<String>> {
        self.tokens.in_process()
    }

    /// Everything the in-process gateway needs; `None` when no SIP listen address is
    /// configured (no gateway in this process).
    pub fn gateway_setup(&self) -> Option<GatewaySetup> {
        Some(GatewaySetup {
            config: self.config.clone(),
            server_url: self.server_url.clone(),
            token: self.tokens.in_process()?.clone(),
            server_tls: None,
        })
    }

    /// What a valid ticket stands for, now.
    pub fn ticket(&self, token: &str) -> Option<Ticket> {
        self.tickets
            .lock()
            .ok()
            .and_then(|mut t| t.get(Instant::now(), token))
    }
}

/// Marks requests that came over the in-process dial-in gateway's own loopback listener (an
/// [`axum::Extension`] on that listener's router).
#[derive(Debug, Clone, Copy)]
pub struct GatewayListener;

/// The base URL under which the server listening on `local` reaches itself: the address itself,
/// or loopback for an unspecified one (`0.0.0.0`, `::`). `https` when the server terminates TLS
/// itself (a gateway then has to trust its certificate for that address).
pub fn self_url(local: std::net::SocketAddr, tls: bool) -> String {
    let ip = match local.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", std::net::SocketAddr::new(ip, local.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting(profile: SecurityProfile) -> Meeting {
        Meeting {
            id: "m".into(),
            title: "T".into(),
            starts_at: None,
            organiser_id: 1,
            profile,
            created_at: Utc::now(),
            ended_at: None,
            dial_in_number: Some("12345678".into()),
        }
    }

    #[test]
    fn pin_hashes_are_keyed_and_bound_to_the_meeting() {
        let k = PinKey::from_bytes([7; 32]);
        let h = k.pin_hash("m1", "12345678");
        assert_eq!(h.len(), 64);
        assert!(h
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(h, k.pin_hash("m1", "12345678"), "deterministic");
        assert_ne!(h, k.pin_hash("m2", "12345678"), "another meeting");
        assert_ne!(h, k.pin_hash("m1", "12345679"), "another PIN");
        assert_ne!(
            h,
            PinKey::from_bytes([8; 32]).pin_hash("m1", "12345678"),
            "another key"
        );
        // The separator: meeting "m1" with PIN "2" is not meeting "m" with PIN "12".
        assert_ne!(k.pin_hash("m1", "2"), k.pin_hash("m", "12"));
        // RFC 4231 test case 2 checks the construction itself: HMAC-SHA256("Jefe", "what do
        // ya want for nothing?").
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").expect("any key length");
        mac.update(b"what do ya want ");
        mac.update(b"for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn digits_are_digits() {
        for _ in 0..50 {
            let n = new_meeting_number();
            assert_eq!(n.len(), MEETING_NUMBER_DIGITS);
            assert!(n.bytes().all(|b| b.is_ascii_digit()), "{n}");
            let p = new_pin();
            assert_eq!(p.len(), PIN_DIGITS);
            assert!(p.bytes().all(|b| b.is_ascii_digit()));
        }
        // Random: 50 draws of 8 digits do not repeat (a collision has odds of about 1 in 80000).
        let mut seen: Vec<String> = (0..50).map(|_| new_meeting_number()).collect();
        seen.sort();
        seen.dedup();
        assert!(seen.len() >= 49);
    }

    #[test]
    fn caller_numbers_are_cut_to_four_digits() {
        assert_eq!(number_suffix("+49 30 1234-5678").as_deref(), Some("5678"));
        assert_eq!(number_suffix("004930123456789").as_deref(), Some("6789"));
        assert_eq!(number_suffix("123").as_deref(), Some("123"));
        assert_eq!(number_suffix("anonymous"), None);
        assert_eq!(number_suffix(""), None);
    }

    #[test]
    fn pins_match_in_any_position_and_only_their_own() {
        let k = PinKey::from_bytes([1; 32]);
        let pins: Vec<PhonePin> = [(10, "11111111"), (11, "22222222"), (12, "33333333")]
            .iter()
            .map(|(id, pin)| PhonePin {
                invitation_id: *id,
                pin_hash: k.pin_hash("m", pin),
            })
            .collect();
        assert_eq!(match_pin(&k, "m", "11111111", &pins), Some(10));
        assert_eq!(match_pin(&k, "m", "22222222", &pins), Some(11));
        assert_eq!(match_pin(&k, "m", "33333333", &pins), Some(12));
        assert_eq!(match_pin(&k, "m", "44444444", &pins), None);
        assert_eq!(match_pin(&k, "other", "11111111", &pins), None);
        assert_eq!(
            match_pin(&PinKey::from_bytes([2; 32]), "m", "11111111", &pins),
            None
        );
        assert_eq!(match_pin(&k, "m", "11111111", &[]), None);
        let odd = [PhonePin {
            invitation_id: 1,
            pin_hash: "abc".into(),
        }];
        assert_eq!(match_pin(&k, "m", "11111111", &odd), None);
    }

    #[test]
    fn the_verdict_follows_profile_time_and_end() {
        let now = Utc::now();
        let internal = meeting(SecurityProfile::Internal);
        assert_eq!(
            verdict(Some(&internal), Some(5), now),
            Verdict::Admit { invitation_id: 5 }
        );
        assert_eq!(verdict(Some(&internal), None, now), Verdict::Wrong);
        assert_eq!(verdict(None, Some(5), now), Verdict::Wrong);
        let strict = meeting(SecurityProfile::Strict);
        assert_eq!(verdict(Some(&strict), Some(5), now), Verdict::NotAllowed);
        assert_eq!(verdict(Some(&strict), None, now), Verdict::Wrong);
        // From 30 minutes before the start.
        let starts_at = now + chrono::Duration::minutes(31);
        let later = Meeting {
            starts_at: Some(starts_at),
            ..internal.clone()
        };
        assert_eq!(
            verdict(Some(&later), Some(5), now),
            Verdict::NotYet { starts_at }
        );
        assert_eq!(
            verdict(Some(&later), Some(5), now + chrono::Duration::minutes(1)),
            Verdict::Admit { invitation_id: 5 }
        );
        // Ended: before anything else.
        let ended = Meeting {
            ended_at: Some(now),
            ..later
        };
        assert_eq!(verdict(Some(&ended), Some(5), now), Verdict::Ended);
        let ended_strict = Meeting {
            ended_at: Some(now),
            ..strict
        };
        assert_eq!(verdict(Some(&ended_strict), Some(5), now), Verdict::Ended);
        assert!(!Verdict::Wrong.pin_was_right());
        assert!(Verdict::Ended.pin_was_right());
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_rule_doubles_from_the_fourth_failure_and_caps_at_30_s() {
        let r = ThrottleRule::standard(S);
        let waits: Vec<Option<u64>> = (0..10).map(|n| r.wait(n).map(|d| d.as_secs())).collect();
        assert_eq!(
            waits,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                None,
                None
            ]
        );
        assert_eq!(r.wait(usize::MAX), None);
        assert_eq!(r.window, Duration::from_secs(900));
    }

    fn checks(v: ThrottleVerdict) -> Duration {
        match v {
            ThrottleVerdict::Check { after } => after,
            other => panic!("expected a check, got {other:?}"),
        }
    }

    #[test]
    fn failures_delay_then_throttle_and_age_out() {
        let mut t = Throttle::new(ThrottleRule::standard(S), 100);
        let t0 = Instant::now();
        let keys = ["number:1", "source:a"];
        let mut waits = Vec::new();
        for i in 0..8 {
            waits.push(checks(t.attempt(t0 + S * i, &keys)).as_secs());
        }
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 16]);
        // The ninth would wait 32 s: refused at once, until the oldest failure is 15 minutes
        // old (then 7 remain: a 16 s wait).
        let at = t0 + S * 8;
        match t.attempt(at, &keys) {
            ThrottleVerdict::Throttled { retry_after } => {
                assert_eq!(retry_after, Duration::from_secs(900 - 8));
            }
            other => panic!("{other:?}"),
        }
        // A refused attempt counts nothing.
        assert!(matches!(
            t.attempt(at, &keys),
            ThrottleVerdict::Throttled { .. }
        ));
        let after_first = t0 + Duration::from_secs(900);
        assert_eq!(checks(t.attempt(after_first, &keys)), S * 16);
        // Another number from another source: not affected.
        assert_eq!(
            checks(t.attempt(at, &["number:2", "source:b"])),
            Duration::ZERO
        );
        // After 15 quiet minutes everything is forgotten.
        let quiet = after_first + Duration::from_secs(901);
        assert_eq!(checks(t.attempt(quiet, &keys)), Duration::ZERO);
        assert_eq!(t.keys(), 2, "old keys are forgotten");
    }

    #[test]
    fn either_key_throttles() {
        let mut t = Throttle::new(ThrottleRule::standard(S), 100);
        let t0 = Instant::now();
        // Five failures on one number from different sources ...
        for i in 0..5 {
            checks(t.attempt(t0, &["number:1", &format!("source:{i}")]));
        }
        // ... slow down a new source on that number (n = 5: 4 s) ...
        assert_eq!(checks(t.attempt(t0, &["number:1", "source:new"])), S * 4);
        // ... but not on another number.
        assert_eq!(
            checks(t.attempt(t0, &["number:2", "source:other"])),
            Duration::ZERO
        );
        // And one source's failures on many numbers slow it down on any number.
        for i in 0..4 {
            checks(t.attempt(t0, &[&format!("number:x{i}"), "caller:5678"]));
        }
        assert_eq!(
            checks(t.attempt(t0, &["number:fresh", "caller:5678"])),
            S * 2
        );
    }

    #[test]
    fn a_right_pin_clears_the_source_and_takes_its_attempt_back() {
        let mut t = Throttle::new(ThrottleRule::standard(S), 100);
        let t0 = Instant::now();
        let keys = ["number:1", "caller:42"];
        for _ in 0..4 {
            checks(t.attempt(t0, &keys));
        }
        // The fifth attempt waits 2 s and has the right PIN.
        assert_eq!(checks(t.attempt(t0, &keys)), S * 2);
        t.forgive("number:1", "caller:42");
        // The source starts afresh; the number keeps its four failures (n = 4: 2 s).
        assert_eq!(
            checks(t.attempt(t0, &["number:9", "caller:42"])),
            Duration::ZERO
        );
        assert_eq!(checks(t.attempt(t0, &["number:1", "caller:7"])), S * 2);
        // Negative control: without forgiving, the source would wait.
        let mut u = Throttle::new(ThrottleRule::standard(S), 100);
        for _ in 0..5 {
            checks(u.attempt(t0, &keys));
        }
        assert_eq!(checks(u.attempt(t0, &["number:9", "caller:42"])), S * 4);
    }

    #[test]
    fn parallel_attempts_queue_behind_each_other() {
        // Attempts let through count at once: ten attempts arriving together do not all get
        // the free ones.
        let mut t = Throttle::new(ThrottleRule::standard(S), 100);
        let t0 = Instant::now();
        let waits: Vec<u64> = (0..8)
            .map(|i| checks(t.attempt(t0, &["number:1", &format!("source:{i}")])).as_secs())
            .collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 16]);
        assert!(matches!(
            t.attempt(t0, &["number:1", "source:x"]),
            ThrottleVerdict::Throttled { .. }
        ));
    }

    #[test]
    fn the_throttle_memory_is_bounded() {
        let mut t = Throttle::new(ThrottleRule::standard(S), 10);
        let t0 = Instant::now();
        for i in 0..100u32 {
            checks(t.attempt(
                t0 + Duration::from_millis(u64::from(i)),
                &[&format!("number:{i}"), &format!("source:{i}")],
            ));
            assert!(t.keys() <= 10, "{} keys", t.keys());
        }
        // The newest keys are the ones kept.
        for _ in 0..3 {
            checks(t.attempt(t0 + S, &["number:99", "source:x"]));
        }
        assert_eq!(checks(t.attempt(t0 + S, &["number:99", "source:y"])), S * 2);
    }

    #[test]
    fn tickets_are_valid_for_their_lifetime_until_voided() {
        let mut tickets = Tickets::new(Duration::from_secs(3600), 3);
        let t0 = Instant::now();
        let ticket = Ticket {
            invitation_id: 7,
            meeting_id: "m".into(),
            number_suffix: Some("4567".into()),
        };
        let a = tickets.issue(t0, ticket.clone());
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(tickets.get(t0, &a), Some(ticket.clone()));
        // Again (a reconnect of the gateway).
        assert_eq!(
            tickets.get(t0 + Duration::from_secs(3599), &a),
            Some(ticket.clone())
        );
        assert_eq!(tickets.get(t0, "not-a-ticket"), None);
        assert_eq!(tickets.get(t0 + Duration::from_secs(3600), &a), None);
        assert!(tickets.is_empty(), "an expired ticket is forgotten");

        let b = tickets.issue(t0, ticket.clone());
        assert_ne!(*a, *b);
        assert!(tickets.void(t0, &b));
        assert_eq!(tickets.get(t0, &b), None);
        assert!(!tickets.void(t0, &b), "twice");
        // At most `max`: the oldest go first.
        let first = tickets.issue(t0, ticket.clone());
        for i in 1..=3 {
            tickets.issue(t0 + Duration::from_secs(i), ticket.clone());
        }
        assert_eq!(tickets.len(), 3);
        assert_eq!(tickets.get(t0 + Duration::from_secs(5), &first), None);
    }

    #[test]
    fn gateway_tokens_accept_only_their_own() {
        let remote = Zeroizing::new("r".repeat(43));
        let tokens = GatewayTokens::new(true, Some(remote.clone()));
        let own = tokens.in_process().expect("in-process token").clone();
        assert_eq!(own.len(), 43);
        assert!(tokens.accepts(&own));
        assert!(tokens.accepts(&remote));
        assert!(!tokens.accepts(""));
        assert!(!tokens.accepts(&"r".repeat(42)));
        assert!(!tokens.accepts(&own[..42]));
        let none = GatewayTokens::new(false, None);
        // A node of a cluster: its own gateway presents the shared token.
        let shared = GatewayTokens::with(true, Some(remote.clone()), true);
        assert_eq!(
            shared.in_process().map(|t| t.as_str()),
            Some(remote.as_str())
        );
        assert!(shared.accepts(&remote));
        assert!(none.in_process().is_none());
        assert!(!none.accepts(""));
        assert!(!none.accepts(&own));
        assert!(!format!("{tokens:?}").contains(own.as_str()));
    }

    #[test]
    fn the_pin_key_file_is_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = PinKey::path_in(dir.path());
        let (k1, created) = PinKey::load_or_create(&path).expect("create");
        assert!(created);
        assert_eq!(std::fs::read(&path).expect("read").len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let (k2, created) = PinKey::load_or_create(&path).expect("load");
        assert!(!created);
        assert_eq!(k1.pin_hash("m", "1"), k2.pin_hash("m", "1"));
        std::fs::write(&path, [1u8; 31]).expect("write");
        let err = PinKey::load(&path).expect_err("short").to_string();
        assert!(err.contains("exactly 32 bytes"), "{err}");
        std::fs::write(&path, [1u8; 33]).expect("write");
        assert!(PinKey::load(&path).is_err());
        let err = PinKey::load(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("dial-in PIN key"), "{err}");
        assert_eq!(format!("{k1:?}"), "PinKey(..)");
    }

    #[test]
    fn self_urls_use_loopback_for_unspecified_addresses() {
        let u = |s: &str, tls| self_url(s.parse().expect("addr"), tls);
        assert_eq!(u("0.0.0.0:8080", false), "http://127.0.0.1:8080");
        assert_eq!(u("[::]:8443", true), "https://[::1]:8443");
        assert_eq!(u("192.0.2.1:80", false), "http://192.0.2.1:80");
    }
}
