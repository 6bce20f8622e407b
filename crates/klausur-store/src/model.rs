//! The types the store hands out.

use chrono::{DateTime, Utc};
use klausur_proto::SecurityProfile;
use serde::Serialize;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages accounts and sees every meeting.
    Admin,
    /// A member of staff: organises meetings and invites people.
    Staff,
}

impl Role {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Staff => "staff",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "staff" => Some(Role::Staff),
            _ => None,
        }
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    /// As created; unique regardless of case.
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// The password hash (argon2id PHC string, made by the caller). Never serialised.
    #[serde(skip)]
    pub password_hash: String,
    pub must_change_password: bool,
    /// A disabled account must not log in; the store does not enforce this.
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A login session. The session id itself is a secret of the browser: only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Meeting {
    pub id: String,
    pub title: String,
    pub starts_at: Option<DateTime<Utc>>,
    pub organiser_id: i64,
    pub profile: SecurityProfile,
    pub created_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The number telephone callers type in to reach this meeting (8 digits, unique among
    /// meetings), if it was created with dial-in.
    pub dial_in_number: Option<String>,
}

/// Who an invitation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationKind {
    /// Someone from outside, known only by the name on the invitation.
    Guest,
    /// A member of staff, usually bound to their account ([`Invitation::user_id`]).
    Colleague,
}

impl InvitationKind {
    /// The text stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationKind::Guest => "guest",
            InvitationKind::Colleague => "colleague",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "guest" => Some(InvitationKind::Guest),
            "colleague" => Some(InvitationKind::Colleague),
            _ => None,
        }
    }
}

/// A personal invitation to a meeting. The token is a secret of the invitee: only its hash is
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invitation {
    pub id: i64,
    pub meeting_id: String,
    /// Hash of the invitation token (made by the caller). Never serialised.
    #[serde(skip)]
    pub token_hash: String,
    /// The invitee's name as the inviter wrote it.
    pub name: String,
    pub kind: InvitationKind,
    /// For colleague invitations bound to a staff account.
    pub user_id: Option<i64>,
    pub created_by: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The keyed hash of the invitee's phone PIN (made by the caller), for invitations of a
    /// meeting with a dial-in number. Never serialised.
    #[serde(skip)]
    pub phone_pin_hash: Option<String>,
}

impl Invitation {
    /// Whether the invitee has a phone PIN (the PIN itself is never stored).
    pub fn has_phone_pin(&self) -> bool {
        self.phone_pin_hash.is_some()
    }
}

/// What [`Store::create_invitation`](crate::Store::create_invitation) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitation {
    pub meeting_id: String,
    /// Hash of the token; the token itself never reaches the store.
    pub token_hash: String,
    pub name: String,
    pub kind: InvitationKind,
    pub user_id: Option<i64>,
    pub created_by: i64,
    pub expires_at: DateTime<Utc>,
    /// The keyed hash of the invitee's phone PIN, if the meeting has a dial-in number; the PIN
    /// itself never reaches the store. Unique within the meeting.
    pub phone_pin_hash: Option<String>,
}

/// The phone PIN of an invitation that admits now (see
/// [`Store::valid_phone_pins`](crate::Store::valid_phone_pins)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonePin {
    pub invitation_id: i64,
    /// The keyed hash of the PIN, as stored.
    pub pin_hash: String,
}

/// A lobby guest's pass back into a running meeting (see [`Store::create_guest_pass`]). The
/// token is a secret of the guest's browser tab: only its hash is stored.
///
/// [`Store::create_guest_pass`]: crate::Store::create_guest_pass
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPass {
    pub id: i64,
    pub meeting_id: String,
    pub display_name: String,
    /// Name of the moderator who admitted the guest from the lobby.
    pub admitted_by: String,
    /// That moderator's account or invitation, if they had one.
    pub admitter: Option<BanSubject>,
    pub moderator: bool,
    pub muted: bool,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What [`Store::create_guest_pass`](crate::Store::create_guest_pass) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGuestPass {
    pub meeting_id: String,
    /// Hash of the token; the token itself never reaches the store.
    pub token_hash: String,
    pub display_name: String,
    pub admitted_by: String,
    pub admitter: Option<BanSubject>,
    pub expires_at: DateTime<Utc>,
}

/// Someone a moderator removed from a meeting (and keeps out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum BanSubject {
    /// A staff account (by user id).
    User(i64),
    /// Whoever holds this invitation (by invitation id).
    Invitation(i64),
}

impl BanSubject {
    /// `(subject_kind, subject_id)` as stored.
    pub(crate) fn parts(self) -> (&'static str, i64) {
        match self {
            BanSubject::User(id) => ("user", id),
            BanSubject::Invitation(id) => ("invitation", id),
        }
    }

    /// The subject stored as `(subject_kind, subject_id)`; `None` for an unknown kind.
    pub(crate) fn from_parts(kind: &str, id: i64) -> Option<Self> {
        match kind {
            "user" => Some(BanSubject::User(id)),
            "invitation" => Some(BanSubject::Invitation(id)),
            _ => None,
        }
    }
}

pub(crate) fn profile_str(p: SecurityProfile) -> &'static str {
    match p {
        SecurityProfile::Strict => "strict",
        SecurityProfile::Internal => "internal",
    }
}

pub(crate) fn parse_profile(s: &str) -> Option<SecurityProfile> {
    match s {
        "strict" => Some(SecurityProfile::Strict),
        "internal" => Some(SecurityProfile::Internal),
        _ => None,
    }
}
