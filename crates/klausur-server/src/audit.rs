//! The audit trail as the server writes it: which security events are recorded, with what,
//! and the retention period. The records, their hash chain and their verification are
//! `klausur_store::audit`'s; this module owns the vocabulary ([`kind`]) and the rule of what a
//! record may hold.
//!
//! # What a record holds, and what it never holds
//!
//! * **Who** ([`AuditActor`]): a user's id and username, a guest's invitation or pass id and the
//!   name they were shown under, a caller's leg, or the server itself. Display names are kept
//!   here and nowhere else: the operational log (`tracing`) carries ids only.
//! * **Where from**, only where the event needs it: the client address of a login and a failed
//!   login, the signalling address of a dial-in attempt.
//! * **Never**: passwords, session ids, invitation tokens, PINs, CSRF tokens, pass tokens, media,
//!   chat. A test (`tests/server/audit.rs`) reads every record a run of the server wrote and fails
//!   on any of the secrets that run used.
//!
//! # When a record cannot be written
//!
//! The event has already happened (a login was answered, a moderator's command was carried
//! out): the record is written before the reply where the handler can wait for it, and a
//! failure is logged at ERROR (without personal data) and counted in `GET /api/status`
//! (`audit_write_failures`). A full disk stops the writes of the operations themselves too.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use klausur_store::{AuditActor, NewAuditRecord, Store, User};
use serde_json::{json, Value};

/// The kinds of record, dotted `family.event`; `GET /api/audit?kind=family` selects a family.
pub mod kind {
    /// The server started (with the trail's record count at start, for continuity).
    pub const SERVER_STARTED: &str = "server.started";
    /// Its operator stopped the server with a drain time (`[server] drain_seconds`): it lets
    /// its meetings finish first (with the meetings and calls running then, and the time).
    pub const SERVER_DRAINING: &str = "server.draining";
    pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
    /// A login was refused: unknown user, wrong password, disabled account, or too many tries.
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const LOGOUT: &str = "login.logout";
    pub const PASSWORD_CHANGED: &str = "account.password_changed";
    /// A password change was refused because the current password was wrong.
    pub const PASSWORD_CHANGE_FAILED: &str = "account.password_change_failed";
    pub const USER_CREATED: &str = "account.created";
    pub const USER_DISABLED: &str = "account.disabled";
    pub const MEETING_CREATED: &str = "meeting.created";
    pub const MODERATOR_ADDED: &str = "meeting.moderator_added";
    pub const MEETING_LOCKED: &str = "meeting.locked";
    pub const MEETING_UNLOCKED: &str = "meeting.unlocked";
    /// A moderator showed a participant large to everyone, or nobody any more.
    pub const SPOTLIGHT: &str = "meeting.spotlight";
    pub const MEETING_ENDED: &str = "meeting.ended";
    /// Meetings that ended longer ago than `[storage] ended_meetings_days` were deleted.
    pub const MEETINGS_DELETED: &str = "meeting.deleted";
    pub const INVITATION_CREATED: &str = "invitation.created";
    pub const INVITATION_REVOKED: &str = "invitation.revoked";
    /// Someone arrived in the lobby and waits for a moderator.
    pub const LOBBY_ENTERED: &str = "lobby.entered";
    pub const LOBBY_ADMITTED: &str = "lobby.admitted";
    pub const LOBBY_DENIED: &str = "lobby.denied";
    /// A participant came into the meeting (roster change, with how).
    pub const PARTICIPANT_JOINED: &str = "participant.joined";
    /// A participant left (roster change, with why).
    pub const PARTICIPANT_LEFT: &str = "participant.left";
    pub const PARTICIPANT_REMOVED: &str = "participant.removed";
    pub const PARTICIPANT_MUTED: &str = "participant.muted";
    pub const PARTICIPANT_UNMUTED: &str = "participant.unmuted";
    pub const ROLE_GRANTED: &str = "role.moderator_granted";
    pub const ROLE_REVOKED: &str = "role.moderator_revoked";
    /// The encrypted group moved to a new epoch (members added or removed), as the server
    /// relayed it.
    pub const ENCRYPTION_EPOCH: &str = "encryption.epoch";
    /// An end-to-end identity credential was issued.
    pub const CREDENTIAL_ISSUED: &str = "encryption.credential_issued";
    /// A telephone caller's attempt: which meeting number, and whether the PIN was accepted.
    pub const DIALIN_ATTEMPT: &str = "dialin.attempt";
}

/// One record about to be written.
#[derive(Debug, Clone)]
pub struct Entry(NewAuditRecord);

impl Entry {
    pub fn new(kind: &str, actor: AuditActor) -> Entry {
        Entry(NewAuditRecord {
            kind: kind.into(),
            actor,
            meeting_id: None,
            source: None,
            details: json!({}),
        })
    }

    pub fn meeting(mut self, id: &str) -> Entry {
        self.0.meeting_id = Some(id.to_owned());
        self
    }

    /// The client address; only for events that need one (logins, dial-in attempts).
    pub fn source(mut self, ip: IpAddr) -> Entry {
        self.0.source = Some(ip.to_string());
        self
    }

    /// The record as it will be written.
    pub fn record(&self) -> &NewAuditRecord {
        &self.0
    }

    /// Details as a JSON object (replaces earlier details).
    pub fn details(mut self, details: Value) -> Entry {
        self.0.details = details;
        self
    }
}

/// Writes the audit trail. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    store: Store,
    failures: Arc<AtomicU64>,
}

impl Audit {
    pub fn new(store: Store) -> Audit {
        Audit {
            store,
            failures: Arc::default(),
        }
    }

    /// Writes `entry` now; a failure is logged and counted (see the module docs).
    pub async fn record(&self, entry: Entry) {
        self.record_at(entry, Utc::now()).await;
    }

    /// Writes `entry` at time `at`.
    pub async fn record_at(&self, entry: Entry, at: DateTime<Utc>) {
        let kind = entry.0.kind.clone();
        if let Err(e) = self.store.append_audit(entry.0, at).await {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(kind, "audit record not written: {e}");
        }
    }

    /// Records that could not be written since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Deletes the records older than `days` before `now` (recorded by the store itself as
    /// `audit.deleted`); returns how many.
    pub async fn apply_retention(&self, days: u32, now: DateTime<Utc>) -> u64 {
        let cutoff = now - chrono::Duration::days(i64::from(days));
        match self
            .store
            .purge_audit_before(cutoff, now, AuditActor::system())
            .await
        {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(deleted = n, days, "audit records past retention deleted");
                }
                n
            }
            Err(e) => {
                tracing::error!("audit retention failed: {e}");
                0
            }
        }
    }
}

/// The record of an invitation `actor` created (over HTTP or at the command line); whether it
/// has a phone PIN, never the PIN or the token.
pub fn invitation_created(
    actor: AuditActor,
    inv: &klausur_store::Invitation,
    phone_pin: bool,
) -> Entry {
    Entry::new(kind::INVITATION_CREATED, actor)
        .meeting(&inv.meeting_id)
        .details(json!({
            "invitation": inv.id,
            "kind": inv.kind,
            "name": inv.name,
            "user_id": inv.user_id,
            "expires_at": inv.expires_at,
            "phone_pin": phone_pin,
        }))
}

/// A signed-in user as an actor.
pub fn user(u: &User) -> AuditActor {
    AuditActor::new("user", Some(u.id.to_string()), Some(u.username.clone()))
}

/// A user as the target of an action, in a record's details.
pub fn user_target(u: &User) -> Value {
    json!({"kind": "user", "id": u.id.to_string(), "name": u.username})
}

/// An actor as the target of an action, in a record's details.
pub fn target(a: &AuditActor) -> Value {
    serde_json::to_value(a).unwrap_or(Value::Null)
}

/// Keeps at most `max` characters of text an anonymous caller chose (a user name typed at the
/// login), so a record cannot be made arbitrarily large.
pub fn bounded(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
