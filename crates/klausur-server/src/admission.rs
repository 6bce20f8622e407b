//! Who may come in directly, and how they are shown: the meeting's security profile applied
//! to a staff session and/or a personal invitation.
//!
//! The facts are looked up in [`decide`]; the rule itself is the pure function [`standing`],
//! tested below for every profile and kind of arrival.

use chrono::{DateTime, Utc};
use klausur_proto::{ErrorCode, JoinMethod, ParticipantKind, SecurityProfile};
use klausur_store::{BanSubject, Invitation, Store, User};

use crate::auth::token_hash;
use crate::meeting::{MeetingSeed, Pass, Standing};

/// The logged-in user of the connection, if any.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub user: Option<User>,
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
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdmissionError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AdmissionError::MeetingNotFound
            | AdmissionError::MeetingEnded
            | AdmissionError::InvitationInvalid
            | AdmissionError::InvitationExpired => ErrorCode::NotFound,
            AdmissionError::NameRequired => ErrorCode::InvalidField,
            AdmissionError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Facts about one arrival, looked up from the database.
#[derive(Debug, Clone)]
pub struct Facts {
    pub profile: SecurityProfile,
    pub user: Option<User>,
    /// The user organises or moderates this meeting.
    pub user_is_moderator: bool,
    /// The organiser invited this user as a colleague.
    pub user_is_invited: bool,
    pub invitation: Option<Invitation>,
    /// A moderator made the holder of this invitation a moderator during the meeting.
    pub invitation_is_moderator: bool,
    /// Display name of whoever created the invitation.
    pub invited_by: String,
    pub banned: bool,
    pub display_name: Option<String>,
}

/// The rule: who joins directly, as what, and how it is shown.
pub fn standing(f: &Facts) -> Result<Standing, AdmissionError> {
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
    let display_name = match (&f.display_name, &f.user, &f.invitation) {
        (Some(n), None, _) => n.trim().to_string(),
        (_, Some(u), _) => u.display_name.clone(),
        (None, None, Some(inv)) => inv.name.clone(),
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
        banned: f.banned && !moderator,
        ban_subject,
        user_id,
        invitation: f.invitation.as_ref().map(|i| i.name.clone()),
        pass: None,
        admitter: None,
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

/// Looks up the facts and applies [`standing`].
pub async fn decide(
    store: &Store,
    who: &Who,
    meeting_id: &str,
    invite_token: Option<&str>,
    rejoin_token: Option<&str>,
    display_name: Option<String>,
) -> Result<(MeetingSeed, Standing), AdmissionError> {
    let internal = |e: klausur_store::StoreError| AdmissionError::Internal(e.to_string());
    let meeting = store
        .meeting(meeting_id)
        .await
        .map_err(internal)?
        .ok_or(AdmissionError::MeetingNotFound)?;
    if meeting.ended_at.is_some() {
        return Err(AdmissionError::MeetingEnded);
    }
    let now = Utc::now();
    let invitation = match invite_token {
        Some(t) => {
            let inv = invitation_for(store, t, now).await?;
            if inv.meeting_id != meeting.id {
                return Err(AdmissionError::InvitationInvalid);
            }
            Some(inv)
        }
        None => None,
    };
    let user = who.user.clone().filter(|u| !u.disabled);
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
    let facts = Facts {
        profile: meeting.profile,
        user,
        user_is_moderator,
        user_is_invited,
        invitation,
        invitation_is_moderator,
        invited_by,
        banned,
        display_name,
    };
    let standing = match returning {
        Some(s) => s,
        None => standing(&facts)?,
    };
    Ok((
        MeetingSeed {
            id: meeting.id,
            title: meeting.title,
            organiser,
            profile: meeting.profile,
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
        }
    }

    fn facts() -> Facts {
        Facts {
            profile: SecurityProfile::Strict,
            user: None,
            user_is_moderator: false,
            user_is_invited: false,
            invitation: None,
            invitation_is_moderator: false,
            invited_by: "Orga".into(),
            banned: false,
            display_name: None,
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
    fn bans_apply_except_to_moderators() {
        let s = standing(&Facts {
            invitation: Some(invitation(5)),
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(s.banned);
        let s = standing(&Facts {
            user: Some(user(1)),
            user_is_moderator: true,
            banned: true,
            ..facts()
        })
        .expect("ok");
        assert!(!s.banned);
    }
}
