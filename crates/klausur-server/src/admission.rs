//! Who may come in directly, and how they are shown: the meeting's security profile applied
//! to a staff session and/or a personal invitation.
//!
//! The facts are looked up in [`decide`]; the rule itself is the pure function [`standing`],
//! tested below for every profile and kind of arrival. Whether a profile accepts telephone
//! callers at all is the pure function [`dial_in_allowed`].
//!
//! # Invitation-token guesses
//!
//! Wherever an invitation token is presented (the WebSocket's `join`, `GET /api/invite/{token}`,
//! `POST /api/identity/credential`), a lookup that fails (unknown, revoked, expired, or for
//! another meeting) counts against the client's address: [`INVITATION_FAILURES_PER_WINDOW`] in
//! [`INVITATION_FAILURE_WINDOW`] ([`InvitationGuard`], through [`Source`]). Beyond that, a wrong
//! token from that address is refused with [`AdmissionError::TooManyInvalidInvitations`]
//! instead of saying what is wrong with it, while a correct token still works.
//!
//! Why a correct token still works: the tokens carry 256 random bits, so guessing one is
//! hopeless with or without a limit; what a limit adds is to end the scanning quickly and to stop
//! answering which tokens exist but were revoked or have expired. A limit that also refused
//! correct tokens would let one scanner lock out every real guest who shares its address (an
//! office behind NAT, or everyone behind a proxy whose address is not replaced by the client's),
//! which is the kind of limit issue 19 asks to avoid.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use klausur_proto::{JoinMethod, ParticipantKind, PhoneLeg, SecurityProfile};
use klausur_store::{BanSubject, Invitation, Meeting, Store, User};

use crate::auth::token_hash;
use crate::budget::AddressBudget;

/// What the database says about someone who wants to join, decided before the actor sees it.
#[derive(Debug, Clone)]
pub struct Standing {
    pub display_name: String,
    pub kind: ParticipantKind,
    /// Organiser or moderator of the meeting: never waits, not even when locked.
    pub moderator: bool,
    /// How they come in if the profile admits them directly; `None` = lobby.
    pub direct: Option<JoinMethod>,
    /// A moderator removed this account or invitation earlier.
    pub banned: bool,
    /// What a removal bans: the account or the invitation (lobby guests have nothing to ban).
    pub ban_subject: Option<BanSubject>,
    pub user_id: Option<i64>,
    /// The invitation's name, shown in the lobby list.
    pub invitation: Option<String>,
    /// A guest admitted from the lobby: their pass back into the running meeting.
    pub pass: Option<Pass>,
    /// For a returning pass holder: the account or invitation of the moderator who admitted
    /// them, whose client adds them to the encrypted group again.
    pub admitter: Option<BanSubject>,
    /// A telephone caller (kind `PhoneGateway`): the call's leg as everyone sees it.
    pub phone: Option<klausur_proto::PhoneLeg>,
    /// An invited guest's `rejoin_token`: the seat token this browser got in its last `joined`
    /// (see `Actor::seat_tokens`).
    pub seat_token: Option<String>,
}

/// A lobby guest's pass (stored: `klausur_store::GuestPass`), as the actor holds it.
#[derive(Debug, Clone)]
pub struct Pass {
    pub id: i64,
    /// The secret itself, for the holder's `joined`; only its hash is stored.
    pub token: String,
    pub muted: bool,
}

/// Static facts about a meeting when its actor starts.
#[derive(Debug, Clone)]
pub struct MeetingSeed {
    pub id: String,
    pub title: String,
    pub organiser: String,
    /// The organiser's account: the one role nobody can take away, the one who grants it.
    pub organiser_id: i64,
    pub profile: klausur_proto::SecurityProfile,
    /// Telephone callers can join (a dial-in number, and a profile that allows dial-in).
    pub dial_in: bool,
}

/// Failed invitation-token lookups allowed per client address in [`INVITATION_FAILURE_WINDOW`].
pub const INVITATION_FAILURES_PER_WINDOW: u32 = 20;
/// The window of [`INVITATION_FAILURES_PER_WINDOW`].
pub const INVITATION_FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The logged-in user of the connection, if any, and where it comes from.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub user: Option<User>,
    /// The client's address and the budget its failed invitation lookups count against; `None`
    /// counts nothing (callers that are not a client, such as tests of the rule).
    pub source: Option<Source>,
    /// The connection is a dial-in gateway's (over the in-process gateway's own listener, or
    /// with a gateway token): the only one whose dial-in tickets are accepted.
    pub gateway: bool,
}

impl Who {
    /// The connection of `user` (if logged in) from the client address `client`, whose failed
    /// invitation lookups count against `guard` (the server's, `AppState::invitation_guard`).
    pub fn from_client(guard: InvitationGuard, user: Option<User>, client: IpAddr) -> Who {
        Who {
            user,
            source: Some(Source::new(guard, client)),
            gateway: false,
        }
    }
}

/// The failed invitation-token lookups per client address (see the module documentation): a
/// handle to one shared [`AddressBudget`], kept in the server state.
#[derive(Debug, Clone)]
pub struct InvitationGuard(Arc<Mutex<AddressBudget>>);

impl InvitationGuard {
    /// A fresh budget of [`INVITATION_FAILURES_PER_WINDOW`] per [`INVITATION_FAILURE_WINDOW`].
    pub fn new() -> Self {
        Self::with_limit(INVITATION_FAILURES_PER_WINDOW, INVITATION_FAILURE_WINDOW)
    }

    pub fn with_limit(max: u32, window: Duration) -> Self {
        InvitationGuard(Arc::new(Mutex::new(AddressBudget::new(max, window))))
    }

    /// Counts one failed lookup from `client`; false if the address has failed too often.
    pub fn take_failure(&self, now: Instant, client: IpAddr) -> bool {
        self.0
            .lock()
            .map(|mut b| b.try_take(now, client))
            .unwrap_or(false)
    }

    /// What a failed lookup from `client` answers: `error` itself, or
    /// [`AdmissionError::TooManyInvalidInvitations`] once the address has failed too often.
    /// Other errors (not about the token) pass through uncounted.
    pub fn on_failure(
        &self,
        now: Instant,
        client: IpAddr,
        error: AdmissionError,
    ) -> AdmissionError {
        match error {
            AdmissionError::InvitationInvalid | AdmissionError::InvitationExpired => {
                if self.take_failure(now, client) {
                    error
                } else {
                    AdmissionError::TooManyInvalidInvitations
                }
            }
            other => other,
        }
    }
}

impl Default for InvitationGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// A client presenting an invitation token: its address and the guard its failures count
/// against.
#[derive(Debug, Clone)]
pub struct Source {
    pub client: IpAddr,
    guard: InvitationGuard,
}

impl Source {
    /// The client at `client`, counting against `guard` (the server's,
    /// `AppState::invitation_guard`).
    pub fn new(guard: InvitationGuard, client: IpAddr) -> Source {
        Source { client, guard }
    }

    /// [`invitation_for`], with a failure counted against this client.
    pub async fn invitation(
        &self,
        store: &Store,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Invitation, AdmissionError> {
        invitation_for(store, token, now)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Counts `error` if it is a failed token (see [`InvitationGuard::on_failure`]).
    pub fn failed(&self, error: AdmissionError) -> AdmissionError {
        self.guard.on_failure(Instant::now(), self.client, error)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("no such meeting")]
    MeetingNotFound,
    #[error("the meeting has ended")]
    MeetingEnded,
    #[error("this invitation is not valid (unknown, revoked, or for another meeting)")]
    InvitationInvalid,
    #[error("this invitation has expired")]
    InvitationExpired,
    #[error("display_name is required to join without an invitation")]
    NameRequired,
    #[error("this dial-in ticket is not valid (unknown, expired, or for another meeting)")]
    TicketInvalid,
    #[error("dial_in_ticket cannot be combined with invite_token or rejoin_token")]
    TicketCombined,
    #[error(
        "a dial-in ticket is accepted only from the dial-in gateway (over its own listener, or \
         with its token as Authorization: Bearer)"
    )]
    TicketNotFromGateway,
    #[error("this meeting does not accept telephone callers")]
    DialInNotAllowed,
    #[error(
        "too many invalid invitation links from this address; try again in 10 minutes (a valid \
         link still works)"
    )]
    TooManyInvalidInvitations,
    #[error("{}", crate::storage_fault::USER_MESSAGE)]
    StorageUnavailable,
    #[error("{}", crate::storage_fault::UNREACHABLE_MESSAGE)]
    DatabaseUnavailable,
    /// A cluster node cannot place the meeting now (see [`crate::cluster`]).
    #[error("{0}")]
    ClusterUnavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<klausur_store::StoreError> for AdmissionError {
    /// A store failure while admitting someone: the storage fault or the database that cannot
    /// be reached said as it is (and reported to the operator), anything else internal.
    fn from(e: klausur_store::StoreError) -> Self {
        match e {
            klausur_store::StoreError::Unwritable(fault, cause) => {
                crate::storage_fault::report(fault, &cause);
                AdmissionError::StorageUnavailable
            }
            klausur_store::StoreError::Unavailable(cause) => {
                crate::storage_fault::report_unreachable(&cause);
                AdmissionError::DatabaseUnavailable
            }
            other => AdmissionError::Internal(other.to_string()),
        }
    }
}

/// Whether a meeting of this profile accepts telephone callers: `internal` does, `strict` never
/// does (the phone leg is not end-to-end encrypted).
pub fn dial_in_allowed(profile: SecurityProfile) -> bool {
    match profile {
        SecurityProfile::Strict => false,
        SecurityProfile::Internal => true,
    }
}

/// Whether telephone callers can join the meeting: it has a dial-in number and its profile
/// allows dial-in (`MeetingInfo.dial_in`).
pub fn meeting_dial_in(meeting: &Meeting) -> bool {
    meeting.dial_in_number.is_some() && dial_in_allowed(meeting.profile)
}

/// A telephone caller arriving through the gateway, with the ticket's invitation (checked:
/// neither revoked nor expired) and the last digits of the caller's number.
#[derive(Debug, Clone)]
pub struct DialInArrival {
    pub invitation: Invitation,
    pub number_suffix: Option<String>,
}

/// Facts about one arrival, looked up from the database.
#[derive(Debug, Clone)]
pub struct Facts {
    pub profile: SecurityProfile,
    pub user: Option<User>,
    /// The user organises or moderates this meeting.
    pub user_is_moderator: bool,
    /// The user organises this meeting (a role nobody can take away, and nobody can remove).
    pub user_is_organiser: bool,
    /// The organiser invited this user as a colleague.
    pub user_is_invited: bool,
    pub invitation: Option<Invitation>,
    /// A moderator made the holder of this invitation a moderator during the meeting.
    pub invitation_is_moderator: bool,
    /// Display name of whoever created the invitation.
    pub invited_by: String,
    pub banned: bool,
    pub display_name: Option<String>,
    /// A telephone caller through the dial-in gateway, for `invitation`.
    pub phone: Option<PhoneLeg>,
}

/// The rule: who joins directly, as what, and how it is shown.
pub fn standing(f: &Facts) -> Result<Standing, AdmissionError> {
    if let Some(phone) = &f.phone {
        return phone_standing(f, phone);
    }
    let (kind, ban_subject, user_id) = match (&f.user, &f.invitation) {
        (Some(u), _) => (
            ParticipantKind::Staff,
            Some(BanSubject::User(u.id)),
            Some(u.id),
        ),
        (None, Some(inv)) => (
            ParticipantKind::InvitedGuest,
            Some(BanSubject::Invitation(inv.id)),
            None,
        ),
        (None, None) => (ParticipantKind::Guest, None, None),
    };
    // The account's or the invitation's name binds (as it does for credentials); only a lobby
    // guest chooses a name.
    let display_name = match (&f.display_name, &f.user, &f.invitation) {
        (_, Some(u), _) => u.display_name.clone(),
        (_, None, Some(inv)) => inv.name.clone(),
        (Some(n), None, None) => n.trim().to_string(),
        (None, None, None) => return Err(AdmissionError::NameRequired),
    };
    let moderator = (f.user.is_some() && f.user_is_moderator)
        || (f.user.is_none() && f.invitation.is_some() && f.invitation_is_moderator);
    let direct = if f.user.is_some()
        && (f.user_is_moderator || f.user_is_invited || f.profile == SecurityProfile::Internal)
    {
        Some(JoinMethod::StaffLogin)
    } else {
        f.invitation.as_ref().map(|inv| JoinMethod::Invitation {
            invitee: inv.name.clone(),
            invited_by: f.invited_by.clone(),
        })
    };
    Ok(Standing {
        display_name,
        kind,
        moderator,
        direct,
        // A removal keeps out moderators too (it ended their role); the organiser cannot be
        // removed, and an old record does not keep them out of their own meeting.
        banned: f.banned && !f.user_is_organiser,
        ban_subject,
        user_id,
        invitation: f.invitation.as_ref().map(|i| i.name.clone()),
        pass: None,
        admitter: None,
        phone: None,
        seat_token: None,
    })
}

/// A telephone caller stands like the invitee of their PIN, but in a seat of their own: kind
/// `phone_gateway`, named after the invitation, never a moderator (the phone has no way to
/// moderate), removed and let in again like the invitation. Only where the profile allows
/// dial-in.
fn phone_standing(f: &Facts, phone: &PhoneLeg) -> Result<Standing, AdmissionError> {
    if !dial_in_allowed(f.profile) {
        return Err(AdmissionError::DialInNotAllowed);
    }
    let inv = f.invitation.as_ref().ok_or(AdmissionError::TicketInvalid)?;
    Ok(Standing {
        display_name: inv.name.clone(),
        kind: ParticipantKind::PhoneGateway,
        moderator: false,
        direct: Some(JoinMethod::Invitation {
            invitee: inv.name.clone(),
            invited_by: f.invited_by.clone(),
        }),
        banned: f.banned,
        ban_subject: Some(BanSubject::Invitation(inv.id)),
        user_id: None,
        invitation: Some(inv.name.clone()),
        pass: None,
        admitter: None,
        phone: Some(phone.clone()),
        seat_token: None,
    })
}

/// The standing of a guest who comes back with the pass a moderator's admission gave them
/// (see `Store::create_guest_pass`): the name and role they had, shown as admitted by the same
/// moderator, and in without the lobby (unless the meeting is locked). `None` for a token that
/// is unknown, expired, or for another meeting: the guest then goes to the lobby as anyone.
pub async fn returning_guest(
    store: &Store,
    meeting_id: &str,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<Standing>, AdmissionError> {
    let pass = store
        .guest_pass_by_token_hash(&token_hash(token))
        .await
        .map_err(|e| AdmissionError::Internal(e.to_string()))?;
    let Some(pass) = pass.filter(|p| p.meeting_id == meeting_id && p.expires_at > now) else {
        return Ok(None);
    };
    Ok(Some(Standing {
        display_name: pass.display_name,
        kind: ParticipantKind::Guest,
        moderator: pass.moderator,
        direct: Some(JoinMethod::Lobby {
            admitted_by: pass.admitted_by,
        }),
        banned: false,
        ban_subject: None,
        user_id: None,
        invitation: None,
        pass: Some(Pass {
            id: pass.id,
            token: token.to_string(),
            muted: pass.muted,
        }),
        admitter: pass.admitter,
        phone: None,
        seat_token: None,
    }))
}

/// Validates an invitation token for a meeting.
pub async fn invitation_for(
    store: &Store,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Invitation, AdmissionError> {
    let inv = store
        .invitation_by_token_hash(&token_hash(token))
        .await
        .map_err(|e| AdmissionError::Internal(e.to_string()))?
        .ok_or(AdmissionError::InvitationInvalid)?;
    if inv.revoked_at.is_some() {
        return Err(AdmissionError::InvitationInvalid);
    }
    if inv.expires_at <= now {
        return Err(AdmissionError::InvitationExpired);
    }
    Ok(inv)
}

/// Looks up the facts and applies [`standing`]. With `dial_in` (a telephone caller through the
/// gateway) the ticket's invitation decides; the connection's login does not count.
pub async fn decide(
    store: &Store,
    who: &Who,
    meeting_id: &str,
    invite_token: Option<&str>,
    rejoin_token: Option<&str>,
    display_name: Option<String>,
    dial_in: Option<DialInArrival>,
) -> Result<(MeetingSeed, Standing), AdmissionError> {
    let internal = AdmissionError::from;
    if dial_in.is_some() && (invite_token.is_some() || rejoin_token.is_some()) {
        return Err(AdmissionError::TicketCombined);
    }
    let meeting = store
        .meeting(meeting_id)
        .await
        .map_err(internal)?
        .ok_or(AdmissionError::MeetingNotFound)?;
    if meeting.ended_at.is_some() {
        return Err(AdmissionError::MeetingEnded);
    }
    let now = Utc::now();
    let (invitation, phone) = match (invite_token, dial_in) {
        (_, Some(d)) => {
            if d.invitation.meeting_id != meeting.id {
                return Err(AdmissionError::TicketInvalid);
            }
            if !meeting_dial_in(&meeting) {
                return Err(AdmissionError::DialInNotAllowed);
            }
            let phone = PhoneLeg {
                number_suffix: d.number_suffix,
            };
            (Some(d.invitation), Some(phone))
        }
        (Some(t), None) => {
            // A failed lookup counts against the client (see the module documentation).
            let counted = |e: AdmissionError| match &who.source {
                Some(source) => source.failed(e),
                None => e,
            };
            let inv = invitation_for(store, t, now).await.map_err(counted)?;
            if inv.meeting_id != meeting.id {
                return Err(counted(AdmissionError::InvitationInvalid));
            }
            (Some(inv), None)
        }
        (None, None) => (None, None),
    };
    let user = who.user.clone().filter(|u| !u.disabled && phone.is_none());
    // A pass only stands for a lobby guest: an account or an invitation says who someone is.
    let returning = match rejoin_token {
        Some(t) if user.is_none() && invitation.is_none() => {
            returning_guest(store, &meeting.id, t, now).await?
        }
        _ => None,
    };
    let (user_is_moderator, user_is_invited) = match &user {
        Some(u) => (
            store
                .is_moderator(&meeting.id, u.id)
                .await
                .map_err(internal)?,
            store
                .colleague_invited(&meeting.id, u.id)
                .await
                .map_err(internal)?,
        ),
        None => (false, false),
    };
    let mut banned = false;
    if let Some(u) = &user {
        banned |= store
            .is_banned(&meeting.id, BanSubject::User(u.id))
            .await
            .map_err(internal)?;
    }
    if let Some(inv) = &invitation {
        banned |= store
            .is_banned(&meeting.id, BanSubject::Invitation(inv.id))
            .await
            .map_err(internal)?;
    }
    let invitation_is_moderator = match &invitation {
        Some(inv) => store
            .invitation_is_moderator(inv.id)
            .await
            .map_err(internal)?,
        None => false,
    };
    let invited_by = match &invitation {
        Some(inv) => store
            .user_by_id(inv.created_by)
            .await
            .map_err(internal)?
            .map(|u| u.display_name)
            .unwrap_or_default(),
        None => String::new(),
    };
    if let Some(inv) = &invitation {
        store
            .mark_invitation_used(inv.id, now)
            .await
            .map_err(internal)?;
    }
    let organiser = store
        .user_by_id(meeting.organiser_id)
        .await
        .map_err(internal)?
        .map(|u| u.display_name)
        .unwrap_or_default();
    let user_is_organiser = user.as_ref().is_some_and(|u| u.id == meeting.organiser_id);
    let facts = Facts {
        profile: meeting.profile,
        user,
        user_is_moderator,
        user_is_organiser,
        user_is_invited,
        invitation,
        invitation_is_moderator,
        invited_by,
        banned,
        display_name,
        phone,
    };
    let mut standing = match returning {
        Some(s) => s,
        None => standing(&facts)?,
    };
    // An invited guest's browser shows with its rejoin token that it held the seat before.
    if standing.kind == ParticipantKind::InvitedGuest {
        standing.seat_token = rejoin_token.map(str::to_string);
    }
    let dial_in = meeting_dial_in(&meeting);
    Ok((
        MeetingSeed {
            id: meeting.id,
            title: meeting.title,
            organiser,
            organiser_id: meeting.organiser_id,
            profile: meeting.profile,
            dial_in,
        },
        standing,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use klausur_store::{InvitationKind, Role};

    fn user(id: i64) -> User {
        User {
            id,
            username: format!("u{id}"),
            display_name: format!("User {id}"),
            role: Role::Staff,
            password_hash: String::new(),
            must_change_password: false,
            disabled: false,
            created_at: Utc::now(),
        }
    }

    fn invitation(id: i64) -> Invitation {
        Invitation {
            id,
            meeting_id: "m".into(),
            token_hash: String::new(),
            name: "Erika Gast".into(),
            kind: InvitationKind::Guest,
            user_id: None,
            created_by: 1,
            created_at: Utc::now(),
            expires_at: Utc::now(),
            revoked_at: None,
            last_used_at: None,
            phone_pin_hash: None,
        }
    }

    fn facts() -> Facts {
        Facts {
            profile: SecurityProfile::Strict,
            user: None,
            user_is_moderator: false,
            user_is_organiser: false,
            user_is_invited: false,
            invitation: None,
            invitation_is_moderator: false,
            invited_by: "Orga".into(),
            banned: false,
            display_name: None,
            phone: None,
        }
    }

    #[test]
    fn strict_profile_admits_only_named_people() {
        // Staff who is neither moderator nor invited waits.
        let s = standing(&Facts {
            user: Some(user(2)),
            ..facts()
        })
        .expect("ok");
        assert!(s.direct.is_none());
        assert_eq!(s.kind, ParticipantKind::Staff);
        // Invited colleague comes in by staff login.
        let s = standing(&Facts {
            user: Some(user(2)),
            user_is_invited: true,
            ..facts()
        })
        .expect("ok");
        assert_eq!(s.direct, Some(JoinMethod::StaffLogin));
        assert!(!s.moderator);
        // Moderator comes in and moderates.
        let s = standing(&Facts {
            user: Some(user(1)),
            user_is_moderator: true,
            ..facts()
        })
        .expect("ok");
        assert!(s.moderator);
        // An invitation admits directly, named after the invitation.
        let s = standing(&Facts {
            invitation: Some(invitation(5)),
            ..facts()
        })
        .expect("ok");
        assert_eq!(
            s.direct,
            Some(JoinMethod::Invitation {
                invitee: "Erika Gast".into(),
                invited_by: "Orga".into()
            })
        );
        assert_eq!(s.kind, ParticipantKind::InvitedGuest);
        assert_eq!(s.display_name, "Erika Gast");
        assert_eq!(s.ban_subject, Some(BanSubject::Invitation(5)));
        // Without anything: lobby, and a name is required.
        assert!(matches!(
            standing(&facts()),
            Err(AdmissionError::NameRequired)
        ));
        let s = standing(&Facts {
            display_name: Some(" Max ".into()),
            ..facts()
        })
        .expect("ok");
        assert!(s.direct.is_none());
        assert_eq!(s.display_name, "Max");
        assert_eq!(s.kind, ParticipantKind::Guest);
    }

    #[test]
    fn internal_profile_admits_all_staff() {
        let s = standing(&Facts {
            user: Some(user(2)),
            profile: SecurityProfile::Internal,
            ..facts()
        })
        .expect("ok");
        assert_eq!(s.direct, Some(JoinMethod::StaffLogin));
        let s = standing(&Facts {
            display_name: Some("X".into()),
            profile: SecurityProfile::Internal,
            ..facts()
        })
        .expect("ok");
        assert!(s.direct.is_none(), "guests without invitation still wait");
    }

    #[test]
    fn a_guest_made_moderator_comes_back_as_moderator() {
        let base = Facts {
            invitation: Some(invitation(5)),
            ..facts()
        };
        assert!(!standing(&base).expect("ok").moderator);
        let s = standing(&Facts {
            invitation_is_moderator: true,
            ..base.clone()
        })
        .expect("ok");
        assert!(s.moderator);
        assert_eq!(s.kind, ParticipantKind::InvitedGuest);
        // With a login, the account decides (the role is stored with the account).
        let s = standing(&Facts {
            user: Some(user(2)),
            invitation_is_moderator: true,
            ..base
        })
        .expect("ok");
        assert!(!s.moderator);
    }

    #[test]
    fn bans_apply_to_moderators_too_but_not_to_the_organiser() {
        let s = standing(&Facts {
            invitation: Some(invitation(5)),
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(s.banned);
        // A moderator who was removed stays out like anyone (the removal ended the role).
        let s = standing(&Facts {
            user: Some(user(1)),
            user_is_moderator: true,
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(s.banned);
        let s = standing(&Facts {
            invitation: Some(invitation(5)),
            invitation_is_moderator: true,
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(s.banned);
        // The organiser cannot be removed; a record of it does not keep them out.
        let s = standing(&Facts {
            user: Some(user(1)),
            user_is_moderator: true,
            user_is_organiser: true,
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(!s.banned && s.moderator);
    }

    #[test]
    fn an_invitation_names_its_holder_whatever_name_is_sent() {
        let s = standing(&Facts {
            invitation: Some(invitation(5)),
            display_name: Some("Olga Organisatorin".into()),
            ..facts()
        })
        .expect("ok");
        assert_eq!(s.display_name, invitation(5).name);
        // A lobby guest chooses.
        let s = standing(&Facts {
            display_name: Some("  Carla  ".into()),
            ..facts()
        })
        .expect("ok");
        assert_eq!(s.display_name, "Carla");
    }

    #[test]
    fn failed_tokens_count_per_address_and_only_failed_tokens_count() {
        let guard = InvitationGuard::with_limit(2, Duration::from_secs(600));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let fail = |at, ip| guard.on_failure(at, ip, AdmissionError::InvitationInvalid);
        assert!(matches!(fail(t0, a), AdmissionError::InvitationInvalid));
        assert!(matches!(
            guard.on_failure(t0, a, AdmissionError::InvitationExpired),
            AdmissionError::InvitationExpired
        ));
        // Other errors are not about the token: passed through, not counted.
        for _ in 0..5 {
            assert!(matches!(
                guard.on_failure(t0, a, AdmissionError::MeetingNotFound),
                AdmissionError::MeetingNotFound
            ));
        }
        assert!(matches!(
            fail(t0, a),
            AdmissionError::TooManyInvalidInvitations
        ));
        // Its reply (code `rate_limited`) is pinned in `meeting::signaling_error`'s table.
        // Negative controls: another address, and the next window.
        assert!(matches!(fail(t0, b), AdmissionError::InvitationInvalid));
        assert!(matches!(
            fail(t0 + Duration::from_secs(600), a),
            AdmissionError::InvitationInvalid
        ));
    }

    fn phone(suffix: Option<&str>) -> Option<PhoneLeg> {
        Some(PhoneLeg {
            number_suffix: suffix.map(str::to_string),
        })
    }

    #[test]
    fn only_the_internal_profile_allows_dial_in() {
        assert!(!dial_in_allowed(SecurityProfile::Strict));
        assert!(dial_in_allowed(SecurityProfile::Internal));
        let m = |profile, number: Option<&str>| Meeting {
            id: "m".into(),
            title: "T".into(),
            starts_at: None,
            organiser_id: 1,
            profile,
            created_at: Utc::now(),
            ended_at: None,
            dial_in_number: number.map(str::to_string),
        };
        assert!(meeting_dial_in(&m(
            SecurityProfile::Internal,
            Some("12345678")
        )));
        assert!(!meeting_dial_in(&m(
            SecurityProfile::Strict,
            Some("12345678")
        )));
        assert!(!meeting_dial_in(&m(SecurityProfile::Internal, None)));
    }

    #[test]
    fn a_caller_stands_as_the_invitee_in_a_phone_seat() {
        let base = Facts {
            profile: SecurityProfile::Internal,
            invitation: Some(invitation(5)),
            phone: phone(Some("4567")),
            ..facts()
        };
        let s = standing(&base).expect("ok");
        assert_eq!(s.kind, ParticipantKind::PhoneGateway);
        assert_eq!(s.display_name, "Erika Gast");
        assert_eq!(
            s.direct,
            Some(JoinMethod::Invitation {
                invitee: "Erika Gast".into(),
                invited_by: "Orga".into()
            })
        );
        assert_eq!(s.ban_subject, Some(BanSubject::Invitation(5)));
        assert_eq!(s.phone, phone(Some("4567")));
        assert_eq!(s.invitation.as_deref(), Some("Erika Gast"));
        assert!(!s.moderator && !s.banned);
        // A name the caller sends does not count.
        let s = standing(&Facts {
            display_name: Some("Mallory".into()),
            ..base.clone()
        })
        .expect("ok");
        assert_eq!(s.display_name, "Erika Gast");
        // Removed earlier: the lobby, like the invitation.
        assert!(
            standing(&Facts {
                banned: true,
                ..base.clone()
            })
            .expect("ok")
            .banned
        );
        // Never a moderator, even if the invitation's holder was made one (and so a removal
        // applies to the caller).
        let s = standing(&Facts {
            invitation_is_moderator: true,
            banned: true,
            ..base.clone()
        })
        .expect("ok");
        assert!(!s.moderator && s.banned);
        // Without an invitation there is no caller.
        assert!(matches!(
            standing(&Facts {
                invitation: None,
                ..base.clone()
            }),
            Err(AdmissionError::TicketInvalid)
        ));
        // The strict profile refuses callers; negative control: the same invitation without
        // the phone comes in.
        let strict = Facts {
            profile: SecurityProfile::Strict,
            ..base.clone()
        };
        assert!(matches!(
            standing(&strict),
            Err(AdmissionError::DialInNotAllowed)
        ));
        let browser = standing(&Facts {
            phone: None,
            ..strict
        })
        .expect("ok");
        assert_eq!(browser.kind, ParticipantKind::InvitedGuest);
        assert_eq!(browser.phone, None);
    }
}
