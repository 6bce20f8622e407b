//! One behaviour suite for every backend. Each `async fn` below takes a fresh `&Store`;
//! `backend_suite!` runs all of them against one way of opening a store: SQLite in memory, in a
//! file, and a real PostgreSQL (a throwaway cluster the test process starts, see
//! `klausur_testbed::postgres`).

use klausur_testbed::postgres as engines;

use chrono::{DateTime, Duration, Utc};
use engines::{Engine, TestDb};
use klausur_proto::SecurityProfile;
use klausur_store::{
    BanSubject, InvitationKind, NewGuestPass, NewInvitation, Role, Store, StoreError, User,
};

type R = Result<(), StoreError>;

/// A fixed, millisecond-precise instant (the store keeps milliseconds).
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_123).expect("valid timestamp")
}

async fn staff(store: &Store, username: &str) -> Result<User, StoreError> {
    store
        .create_user(
            username,
            &format!("{username} display"),
            "$argon2id$x",
            Role::Staff,
            false,
        )
        .await
}

fn ids<T, K>(items: &[T], key: impl Fn(&T) -> K) -> Vec<K> {
    items.iter().map(key).collect()
}

async fn users(store: &Store) -> R {
    let before = Utc::now() - Duration::seconds(1);
    let alice = store
        .create_user("Alice", "Alice A.", "hash-1", Role::Admin, true)
        .await?;
    assert_eq!(alice.username, "Alice");
    assert_eq!(alice.display_name, "Alice A.");
    assert_eq!(alice.role, Role::Admin);
    assert_eq!(alice.password_hash, "hash-1");
    assert!(alice.must_change_password);
    assert!(!alice.disabled);
    assert!(alice.created_at >= before && alice.created_at <= Utc::now());

    // Same username in another case: taken.
    let dup = store
        .create_user("aLiCe", "Other", "hash-2", Role::Staff, false)
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let bob = store
        .create_user("bob", "Bob B.", "hash-3", Role::Staff, false)
        .await?;
    assert_ne!(alice.id, bob.id);

    // Look-ups.
    assert_eq!(store.user_by_id(alice.id).await?.as_ref(), Some(&alice));
    assert_eq!(store.user_by_id(bob.id + alice.id + 100).await?, None);
    assert_eq!(
        store.user_by_username("ALICE").await?.as_ref(),
        Some(&alice)
    );
    assert_eq!(
        store.user_by_username("bob").await?.map(|u| u.id),
        Some(bob.id)
    );
    assert_eq!(store.user_by_username("carol").await?, None);
    let all = store.list_users().await?;
    assert_eq!(ids(&all, |u| u.username.clone()), ["Alice", "bob"]);

    // Password change.
    store.set_password(alice.id, "hash-new", false).await?;
    let a = store.user_by_id(alice.id).await?.expect("alice exists");
    assert_eq!(a.password_hash, "hash-new");
    assert!(!a.must_change_password);
    store.set_password(bob.id, "hash-reset", true).await?;
    let b = store.user_by_id(bob.id).await?.expect("bob exists");
    assert_eq!(b.password_hash, "hash-reset");
    assert!(b.must_change_password);
    // Alice untouched by Bob's change.
    assert_eq!(
        store.user_by_id(alice.id).await?.map(|u| u.password_hash),
        Some("hash-new".to_owned())
    );
    let missing = store.set_password(9_999, "h", false).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // Admin count: enabled admins only.
    assert_eq!(store.count_admins().await?, 1);
    let carol = store
        .create_user("carol", "Carol", "h", Role::Admin, false)
        .await?;
    assert_eq!(store.count_admins().await?, 2);
    store.set_user_disabled(carol.id, true).await?;
    assert!(store.user_by_id(carol.id).await?.expect("carol").disabled);
    assert!(!store.user_by_id(alice.id).await?.expect("alice").disabled);
    assert_eq!(store.count_admins().await?, 1);
    store.set_user_disabled(carol.id, false).await?;
    assert!(!store.user_by_id(carol.id).await?.expect("carol").disabled);
    assert_eq!(store.count_admins().await?, 2);
    let missing = store.set_user_disabled(9_999, true).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    Ok(())
}

async fn sessions(store: &Store) -> R {
    let alice = staff(store, "alice").await?;
    let bob = staff(store, "bob").await?;
    let now = t0();
    let s = store
        .create_session("sid-a1", alice.id, "csrf-1", now + Duration::hours(1))
        .await?;
    assert_eq!(s.id_hash, "sid-a1");
    assert_eq!(s.user_id, alice.id);
    assert_eq!(s.csrf_token, "csrf-1");
    assert_eq!(s.expires_at, now + Duration::hours(1));

    // Valid before expiry, with the right user.
    let (got, user) = store
        .session_with_user("sid-a1", now)
        .await?
        .expect("session valid");
    assert_eq!(got, s);
    assert_eq!(user, alice);
    // Gone at and after expiry.
    let almost = now + Duration::hours(1) - Duration::milliseconds(1);
    assert!(store.session_with_user("sid-a1", almost).await?.is_some());
    assert!(store
        .session_with_user("sid-a1", now + Duration::hours(1))
        .await?
        .is_none());
    assert!(store.session_with_user("unknown", now).await?.is_none());

    // Session id hashes are unique; unknown users are refused.
    let dup = store
        .create_session("sid-a1", bob.id, "csrf-x", now + Duration::hours(1))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let orphan = store
        .create_session("sid-orphan", 9_999, "c", now + Duration::hours(1))
        .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");

    // delete_session removes only that session.
    store
        .create_session("sid-a2", alice.id, "csrf-2", now + Duration::hours(2))
        .await?;
    store
        .create_session("sid-b1", bob.id, "csrf-3", now + Duration::minutes(5))
        .await?;
    store.delete_session("sid-a1").await?;
    assert!(store.session_with_user("sid-a1", now).await?.is_none());
    assert!(store.session_with_user("sid-a2", now).await?.is_some());
    store.delete_session("sid-a1").await?; // again: no error

    // change_password ends every other session of the user, keeps the one named, and no one
    // else's.
    store
        .create_session("sid-a4", alice.id, "csrf-6", now + Duration::hours(2))
        .await?;
    store
        .change_password(alice.id, "hash-own", "sid-a2")
        .await?;
    assert!(store.session_with_user("sid-a4", now).await?.is_none());
    let (_, u) = store
        .session_with_user("sid-a2", now)
        .await?
        .expect("the session that changed it");
    assert_eq!(u.password_hash, "hash-own");
    assert!(!u.must_change_password);
    assert!(store.session_with_user("sid-b1", now).await?.is_some());
    let missing = store.change_password(9_999, "h", "sid-a2").await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // delete_sessions_of_user removes all of that user's and no one else's.
    store
        .create_session("sid-a3", alice.id, "csrf-4", now + Duration::hours(2))
        .await?;
    store.delete_sessions_of_user(alice.id).await?;
    assert!(store.session_with_user("sid-a2", now).await?.is_none());
    assert!(store.session_with_user("sid-a3", now).await?.is_none());
    let (_, u) = store
        .session_with_user("sid-b1", now)
        .await?
        .expect("bob's");
    assert_eq!(u.id, bob.id);

    // delete_expired_sessions counts and removes only expired ones.
    store
        .create_session("sid-b2", bob.id, "csrf-5", now + Duration::hours(3))
        .await?;
    let later = now + Duration::minutes(10);
    assert_eq!(store.delete_expired_sessions(later).await?, 1);
    assert_eq!(store.delete_expired_sessions(later).await?, 0);
    assert!(store.session_with_user("sid-b1", now).await?.is_none());
    assert!(store.session_with_user("sid-b2", later).await?.is_some());
    Ok(())
}

async fn meetings(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    let modr = staff(store, "moderator").await?;
    let stranger = staff(store, "stranger").await?;
    let start = t0() + Duration::days(1);

    let m1 = store
        .create_meeting(
            "m-1",
            "Budget",
            Some(start),
            org.id,
            SecurityProfile::Strict,
        )
        .await?;
    assert_eq!(m1.id, "m-1");
    assert_eq!(m1.title, "Budget");
    assert_eq!(m1.starts_at, Some(start));
    assert_eq!(m1.organiser_id, org.id);
    assert_eq!(m1.profile, SecurityProfile::Strict);
    assert_eq!(m1.ended_at, None);
    assert_eq!(store.meeting("m-1").await?.as_ref(), Some(&m1));
    assert_eq!(store.meeting("m-none").await?, None);

    // Newest first needs distinct creation milliseconds.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let m2 = store
        .create_meeting("m-2", "Staff", None, org.id, SecurityProfile::Internal)
        .await?;
    assert_eq!(m2.starts_at, None);
    assert_eq!(
        store.meeting("m-2").await?.map(|m| m.profile),
        Some(SecurityProfile::Internal)
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .create_meeting("m-3", "Other", None, stranger.id, SecurityProfile::Strict)
        .await?;

    let dup = store
        .create_meeting("m-1", "Again", None, org.id, SecurityProfile::Strict)
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let orphan = store
        .create_meeting("m-x", "No one", None, 9_999, SecurityProfile::Strict)
        .await;
    assert!(matches!(orphan, Err(StoreError::NotFound)), "{orphan:?}");

    // Moderators.
    store.add_moderator("m-1", modr.id).await?;
    store.add_moderator("m-1", modr.id).await?; // idempotent
    let mods = store.moderators("m-1").await?;
    assert_eq!(ids(&mods, |u| u.id), [modr.id]);
    assert!(store.moderators("m-2").await?.is_empty());
    let bad = store.add_moderator("m-none", modr.id).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    assert!(store.is_moderator("m-1", org.id).await?, "organiser");
    assert!(store.is_moderator("m-1", modr.id).await?, "added moderator");
    assert!(!store.is_moderator("m-1", stranger.id).await?, "stranger");
    assert!(!store.is_moderator("m-2", modr.id).await?, "other meeting");
    assert!(!store.is_moderator("m-none", org.id).await?);

    // Listing: organiser sees both of theirs (newest first), moderator only m-1, stranger only
    // their own.
    let for_org = store.list_meetings_for(org.id).await?;
    assert_eq!(ids(&for_org, |m| m.id.clone()), ["m-2", "m-1"]);
    let for_mod = store.list_meetings_for(modr.id).await?;
    assert_eq!(ids(&for_mod, |m| m.id.clone()), ["m-1"]);
    let for_stranger = store.list_meetings_for(stranger.id).await?;
    assert_eq!(ids(&for_stranger, |m| m.id.clone()), ["m-3"]);
    let all = store.list_all_meetings().await?;
    assert_eq!(ids(&all, |m| m.id.clone()), ["m-3", "m-2", "m-1"]);

    // Organiser also explicitly a moderator: listed once.
    store.add_moderator("m-1", org.id).await?;
    assert_eq!(store.list_meetings_for(org.id).await?.len(), 2);

    store.remove_moderator("m-1", modr.id).await?;
    assert!(!store.is_moderator("m-1", modr.id).await?);
    assert!(store.list_meetings_for(modr.id).await?.is_empty());
    store.remove_moderator("m-1", modr.id).await?; // again: no error

    // Ending.
    let end = t0() + Duration::days(2);
    store.set_meeting_ended("m-2", end).await?;
    assert_eq!(
        store.meeting("m-2").await?.and_then(|m| m.ended_at),
        Some(end)
    );
    assert_eq!(store.meeting("m-1").await?.and_then(|m| m.ended_at), None);
    let bad = store.set_meeting_ended("m-none", end).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    // Locking: per meeting, off by default, on and off again; unknown meetings are not locked.
    assert!(!store.meeting_locked("m-1").await?);
    store.set_meeting_locked("m-1", true).await?;
    assert!(store.meeting_locked("m-1").await?);
    assert!(!store.meeting_locked("m-2").await?, "other meeting");
    store.set_meeting_locked("m-1", false).await?;
    assert!(!store.meeting_locked("m-1").await?);
    assert!(!store.meeting_locked("m-none").await?);
    let bad = store.set_meeting_locked("m-none", true).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");
    Ok(())
}

fn new_invitation(
    meeting: &str,
    token_hash: &str,
    kind: InvitationKind,
    user: Option<i64>,
    by: i64,
) -> NewInvitation {
    NewInvitation {
        meeting_id: meeting.to_owned(),
        token_hash: token_hash.to_owned(),
        name: format!("Invitee {}", token_hash.trim_start_matches("th-")),
        kind,
        user_id: user,
        created_by: by,
        expires_at: t0() + Duration::days(7),
        phone_pin_hash: None,
    }
}

async fn invitations(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    let colleague = staff(store, "colleague").await?;
    store
        .create_meeting("m-1", "One", None, org.id, SecurityProfile::Strict)
        .await?;
    store
        .create_meeting("m-2", "Two", None, org.id, SecurityProfile::Strict)
        .await?;

    let guest = store
        .create_invitation(new_invitation(
            "m-1",
            "th-guest",
            InvitationKind::Guest,
            None,
            org.id,
        ))
        .await?;
    assert_eq!(guest.meeting_id, "m-1");
    assert_eq!(guest.token_hash, "th-guest");
    assert_eq!(guest.name, "Invitee guest");
    assert_eq!(guest.kind, InvitationKind::Guest);
    assert_eq!(guest.user_id, None);
    assert_eq!(guest.created_by, org.id);
    assert_eq!(guest.expires_at, t0() + Duration::days(7));
    assert_eq!(guest.revoked_at, None);
    assert_eq!(guest.last_used_at, None);

    let coll = store
        .create_invitation(new_invitation(
            "m-1",
            "th-coll",
            InvitationKind::Colleague,
            Some(colleague.id),
            org.id,
        ))
        .await?;
    assert_eq!(coll.kind, InvitationKind::Colleague);
    assert_eq!(coll.user_id, Some(colleague.id));
    let other = store
        .create_invitation(new_invitation(
            "m-2",
            "th-other",
            InvitationKind::Guest,
            None,
            org.id,
        ))
        .await?;

    // A guest made moderator keeps it with the invitation, until it is taken back.
    assert!(!store.invitation_is_moderator(guest.id).await?);
    store.set_invitation_moderator(guest.id, true).await?;
    assert!(store.invitation_is_moderator(guest.id).await?);
    assert!(
        !store.invitation_is_moderator(other.id).await?,
        "other invitation"
    );
    store.set_invitation_moderator(guest.id, false).await?;
    assert!(!store.invitation_is_moderator(guest.id).await?);
    assert!(!store.invitation_is_moderator(-1).await?);
    let bad = store.set_invitation_moderator(-1, true).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    // Lookups.
    assert_eq!(
        store.invitation_by_token_hash("th-guest").await?.as_ref(),
        Some(&guest)
    );
    assert_eq!(
        store.invitation_by_token_hash("th-coll").await?.as_ref(),
        Some(&coll)
    );
    assert_eq!(store.invitation_by_token_hash("th-none").await?, None);
    assert_eq!(store.invitation(coll.id).await?.as_ref(), Some(&coll));
    assert_eq!(store.invitation(other.id + 1_000).await?, None);
    let list = store.list_invitations("m-1").await?;
    assert_eq!(ids(&list, |i| i.id), [guest.id, coll.id]);
    assert_eq!(
        ids(&store.list_invitations("m-2").await?, |i| i.id),
        [other.id]
    );

    // Token hashes are unique; unknown meetings refused.
    let dup = store
        .create_invitation(new_invitation(
            "m-2",
            "th-guest",
            InvitationKind::Guest,
            None,
            org.id,
        ))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    let bad = store
        .create_invitation(new_invitation(
            "m-none",
            "th-new",
            InvitationKind::Guest,
            None,
            org.id,
        ))
        .await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    // Use.
    let used_at = t0() + Duration::minutes(3);
    store.mark_invitation_used(guest.id, used_at).await?;
    assert_eq!(
        store
            .invitation(guest.id)
            .await?
            .and_then(|i| i.last_used_at),
        Some(used_at)
    );
    assert_eq!(
        store
            .invitation(coll.id)
            .await?
            .and_then(|i| i.last_used_at),
        None
    );
    let bad = store.mark_invitation_used(other.id + 1_000, used_at).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    // Colleague invited until revoked.
    assert!(store.colleague_invited("m-1", colleague.id).await?);
    assert!(!store.colleague_invited("m-2", colleague.id).await?);
    assert!(!store.colleague_invited("m-1", org.id).await?);

    // Revoking in the wrong meeting: NotFound, and nothing revoked.
    let at = t0() + Duration::minutes(10);
    let wrong = store.revoke_invitation("m-2", coll.id, at).await;
    assert!(matches!(wrong, Err(StoreError::NotFound)), "{wrong:?}");
    assert_eq!(
        store.invitation(coll.id).await?.and_then(|i| i.revoked_at),
        None
    );
    let none = store.revoke_invitation("m-1", other.id + 1_000, at).await;
    assert!(matches!(none, Err(StoreError::NotFound)), "{none:?}");

    store.revoke_invitation("m-1", coll.id, at).await?;
    let revoked = store
        .invitation_by_token_hash("th-coll")
        .await?
        .expect("revoked invitation still found");
    assert_eq!(revoked.id, coll.id);
    assert_eq!(revoked.revoked_at, Some(at));
    assert!(!store.colleague_invited("m-1", colleague.id).await?);
    // Revoking again keeps the first time.
    store
        .revoke_invitation("m-1", coll.id, at + Duration::minutes(1))
        .await?;
    assert_eq!(
        store.invitation(coll.id).await?.and_then(|i| i.revoked_at),
        Some(at)
    );
    // Other invitations untouched.
    assert_eq!(
        store.invitation(guest.id).await?.and_then(|i| i.revoked_at),
        None
    );

    // Serialisation never carries the token hash.
    let json = serde_json::to_string(&revoked).expect("serialises");
    assert!(!json.contains("th-coll"), "{json}");
    assert!(json.contains("\"kind\":\"colleague\""), "{json}");
    Ok(())
}

/// Dial-in: numbers unique among meetings and found again; PIN hashes unique within a meeting,
/// listed only while their invitation admits (not revoked, not expired), never serialised.
async fn dial_in(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    let plain = store
        .create_meeting(
            "m-plain",
            "No phone",
            None,
            org.id,
            SecurityProfile::Internal,
        )
        .await?;
    assert_eq!(plain.dial_in_number, None);
    let m1 = store
        .create_meeting_with_dial_in_number(
            "m-1",
            "Phone",
            None,
            org.id,
            SecurityProfile::Internal,
            "12345678",
        )
        .await?;
    assert_eq!(m1.dial_in_number.as_deref(), Some("12345678"));
    assert_eq!(store.meeting("m-1").await?.as_ref(), Some(&m1));
    let m2 = store
        .create_meeting_with_dial_in_number(
            "m-2",
            "Phone 2",
            None,
            org.id,
            SecurityProfile::Strict,
            "87654321",
        )
        .await?;

    // The same number again: taken, said so, and no meeting created.
    let dup = store
        .create_meeting_with_dial_in_number(
            "m-3",
            "Again",
            None,
            org.id,
            SecurityProfile::Internal,
            "12345678",
        )
        .await;
    assert!(
        dup.as_ref().is_err_and(StoreError::is_dial_in_number_taken),
        "{dup:?}"
    );
    assert_eq!(store.meeting("m-3").await?, None);
    // A taken meeting id is not reported as a taken number.
    let dup = store
        .create_meeting_with_dial_in_number(
            "m-1",
            "Same id",
            None,
            org.id,
            SecurityProfile::Internal,
            "11112222",
        )
        .await;
    let err = dup.expect_err("id taken");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert!(!err.is_dial_in_number_taken(), "{err:?}");
    // Meetings without a number do not collide with each other.
    store
        .create_meeting(
            "m-plain-2",
            "No phone 2",
            None,
            org.id,
            SecurityProfile::Strict,
        )
        .await?;

    // Look-up by number.
    assert_eq!(
        store
            .meeting_by_dial_in_number("12345678")
            .await?
            .map(|m| m.id),
        Some("m-1".to_owned())
    );
    assert_eq!(
        store
            .meeting_by_dial_in_number("87654321")
            .await?
            .map(|m| m.id),
        Some(m2.id.clone())
    );
    assert_eq!(store.meeting_by_dial_in_number("00000000").await?, None);
    assert_eq!(store.meeting_by_dial_in_number("").await?, None);

    // PIN hashes.
    let with_pin = |token: &str, pin: Option<&str>, meeting: &str| NewInvitation {
        phone_pin_hash: pin.map(str::to_owned),
        ..new_invitation(meeting, token, InvitationKind::Guest, None, org.id)
    };
    let a = store
        .create_invitation(with_pin("th-a", Some("pin-a"), "m-1"))
        .await?;
    assert_eq!(a.phone_pin_hash.as_deref(), Some("pin-a"));
    assert!(a.has_phone_pin());
    let b = store
        .create_invitation(with_pin("th-b", Some("pin-b"), "m-1"))
        .await?;
    let no_pin = store
        .create_invitation(with_pin("th-none", None, "m-1"))
        .await?;
    assert!(!no_pin.has_phone_pin());
    let expired = store
        .create_invitation(NewInvitation {
            expires_at: t0() - Duration::minutes(1),
            ..with_pin("th-expired", Some("pin-expired"), "m-1")
        })
        .await?;
    // The same hash in another meeting is fine (a PIN hash covers its meeting anyway) ...
    let other = store
        .create_invitation(with_pin("th-other", Some("pin-a"), "m-2"))
        .await?;
    // ... but not in the same meeting: taken, said so, and nothing stored.
    let dup = store
        .create_invitation(with_pin("th-dup", Some("pin-b"), "m-1"))
        .await;
    assert!(
        dup.as_ref().is_err_and(StoreError::is_phone_pin_taken),
        "{dup:?}"
    );
    assert_eq!(store.invitation_by_token_hash("th-dup").await?, None);
    // A reused token hash is not reported as a taken PIN.
    let dup = store
        .create_invitation(with_pin("th-a", Some("pin-new"), "m-1"))
        .await
        .expect_err("token hash taken");
    assert!(matches!(dup, StoreError::Conflict(_)), "{dup:?}");
    assert!(!dup.is_phone_pin_taken(), "{dup:?}");

    let pins = |list: Vec<klausur_store::PhonePin>| {
        list.into_iter()
            .map(|p| (p.invitation_id, p.pin_hash))
            .collect::<Vec<_>>()
    };
    let now = t0();
    assert_eq!(
        pins(store.valid_phone_pins("m-1", now).await?),
        [(a.id, "pin-a".to_owned()), (b.id, "pin-b".to_owned())],
        "the expired invitation and the one without PIN are left out"
    );
    // Negative control: before it expired, the expired invitation's PIN counts.
    assert_eq!(
        store
            .valid_phone_pins("m-1", t0() - Duration::minutes(2))
            .await?
            .len(),
        3
    );
    assert_eq!(
        pins(store.valid_phone_pins("m-2", now).await?),
        [(other.id, "pin-a".to_owned())]
    );
    assert!(store.valid_phone_pins("m-plain", now).await?.is_empty());
    assert!(store.valid_phone_pins("m-none", now).await?.is_empty());
    // Expiry is exclusive: at `expires_at` the PIN no longer counts.
    assert!(store
        .valid_phone_pins("m-1", expired.expires_at)
        .await?
        .iter()
        .all(|p| p.invitation_id != expired.id));

    // Revoked: gone from the list.
    store.revoke_invitation("m-1", a.id, now).await?;
    assert_eq!(
        pins(store.valid_phone_pins("m-1", now).await?),
        [(b.id, "pin-b".to_owned())]
    );
    // The revoked invitation keeps its hash (it is still unique in the meeting).
    let again = store
        .create_invitation(with_pin("th-again", Some("pin-a"), "m-1"))
        .await;
    assert!(
        again.as_ref().is_err_and(StoreError::is_phone_pin_taken),
        "{again:?}"
    );

    // Serialisation never carries the PIN hash.
    let json = serde_json::to_string(&b).expect("serialises");
    assert!(!json.contains("pin-b"), "{json}");
    // Purging frees the number.
    store.set_meeting_ended("m-1", t0()).await?;
    assert_eq!(
        store
            .purge_ended_meetings_before(t0() + Duration::minutes(1))
            .await?,
        1
    );
    assert_eq!(store.meeting_by_dial_in_number("12345678").await?, None);
    store
        .create_meeting_with_dial_in_number(
            "m-4",
            "Reused number",
            None,
            org.id,
            SecurityProfile::Internal,
            "12345678",
        )
        .await?;
    Ok(())
}

async fn bans(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    store
        .create_meeting("m-1", "One", None, org.id, SecurityProfile::Strict)
        .await?;
    store
        .create_meeting("m-2", "Two", None, org.id, SecurityProfile::Strict)
        .await?;
    let at = t0();
    let user = BanSubject::User(42);
    let inv = BanSubject::Invitation(42);

    assert!(!store.is_banned("m-1", user).await?);
    store.add_ban("m-1", user, "Organiser", at).await?;
    store.add_ban("m-1", user, "Organiser", at).await?; // idempotent
    assert!(store.is_banned("m-1", user).await?);
    // Same id, other kind; same subject, other meeting: not banned.
    assert!(!store.is_banned("m-1", inv).await?);
    assert!(!store.is_banned("m-2", user).await?);

    store.add_ban("m-1", inv, "Organiser", at).await?;
    assert!(store.is_banned("m-1", inv).await?);

    store.remove_ban("m-1", user).await?;
    assert!(!store.is_banned("m-1", user).await?);
    assert!(store.is_banned("m-1", inv).await?, "other ban stays");
    store.remove_ban("m-1", user).await?; // again: no error

    let bad = store.add_ban("m-none", user, "x", at).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    // Mutes: per meeting and subject kind, set twice without harm, lifted one by one or all.
    assert!(store.muted("m-1").await?.is_empty());
    store.set_muted("m-1", user, true).await?;
    store.set_muted("m-1", user, true).await?; // idempotent
    store.set_muted("m-1", inv, true).await?;
    store.set_muted("m-2", BanSubject::User(7), true).await?;
    assert_eq!(store.muted("m-1").await?, vec![inv, user]);
    store.set_muted("m-1", inv, false).await?;
    store.set_muted("m-1", inv, false).await?; // again: no error
    assert_eq!(store.muted("m-1").await?, vec![user]);
    store.clear_mutes("m-1").await?;
    assert!(store.muted("m-1").await?.is_empty());
    assert_eq!(
        store.muted("m-2").await?,
        vec![BanSubject::User(7)],
        "other meeting"
    );
    assert!(store.muted("m-none").await?.is_empty());
    let bad = store.set_muted("m-none", user, true).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");
    Ok(())
}

async fn guest_passes(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    for id in ["m-1", "m-2"] {
        store
            .create_meeting(id, id, None, org.id, SecurityProfile::Strict)
            .await?;
    }
    let expires = t0() + Duration::minutes(2);
    let pass = |meeting: &str, hash: &str, admitter| NewGuestPass {
        meeting_id: meeting.into(),
        token_hash: hash.into(),
        display_name: "Gina Gast".into(),
        admitted_by: "Olga Ordner".into(),
        admitter,
        expires_at: expires,
    };
    let a = store
        .create_guest_pass(&pass("m-1", "h-a", Some(BanSubject::User(org.id))))
        .await?;
    let b = store
        .create_guest_pass(&pass("m-1", "h-b", Some(BanSubject::Invitation(9))))
        .await?;
    let c = store.create_guest_pass(&pass("m-2", "h-c", None)).await?;
    // The same token hash twice is refused (the hash is the lookup key).
    assert!(store
        .create_guest_pass(&pass("m-2", "h-a", None))
        .await
        .is_err());
    let bad = store.create_guest_pass(&pass("m-none", "h-x", None)).await;
    assert!(matches!(bad, Err(StoreError::NotFound)), "{bad:?}");

    let got = store
        .guest_pass_by_token_hash("h-a")
        .await?
        .expect("pass a");
    assert_eq!(got.id, a);
    assert_eq!(got.meeting_id, "m-1");
    assert_eq!(got.display_name, "Gina Gast");
    assert_eq!(got.admitted_by, "Olga Ordner");
    assert_eq!(got.admitter, Some(BanSubject::User(org.id)));
    assert!(!got.moderator && !got.muted);
    assert_eq!(got.expires_at, expires);
    assert_eq!(
        store
            .guest_pass_by_token_hash("h-b")
            .await?
            .map(|p| p.admitter),
        Some(Some(BanSubject::Invitation(9)))
    );
    assert_eq!(
        store
            .guest_pass_by_token_hash("h-c")
            .await?
            .map(|p| p.admitter),
        Some(None)
    );
    assert_eq!(store.guest_pass_by_token_hash("h-none").await?, None);

    let later = t0() + Duration::hours(12);
    store.set_guest_pass_expiry(a, later).await?;
    store.set_guest_pass_moderator(a, true).await?;
    store.set_guest_pass_muted(a, true).await?;
    let got = store
        .guest_pass_by_token_hash("h-a")
        .await?
        .expect("pass a");
    assert_eq!(got.expires_at, later);
    assert!(got.moderator && got.muted);
    store.set_guest_pass_muted(a, false).await?;
    assert!(
        !store
            .guest_pass_by_token_hash("h-a")
            .await?
            .expect("a")
            .muted
    );

    store.delete_guest_pass(a).await?;
    store.delete_guest_pass(a).await?; // again: no error
    assert_eq!(store.guest_pass_by_token_hash("h-a").await?, None);
    let gone = store.set_guest_pass_expiry(a, later).await;
    assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");

    // A meeting that empties loses its passes; the other meeting's stay.
    store.clear_guest_passes("m-1").await?;
    assert_eq!(store.guest_pass_by_token_hash("h-b").await?, None);
    assert_eq!(
        store.guest_pass_by_token_hash("h-c").await?.map(|p| p.id),
        Some(c)
    );
    assert_ne!(b, c);
    Ok(())
}

async fn purge(store: &Store) -> R {
    let org = staff(store, "organiser").await?;
    let modr = staff(store, "moderator").await?;
    for id in ["old", "recent", "running"] {
        store
            .create_meeting(id, id, None, org.id, SecurityProfile::Strict)
            .await?;
        store.add_moderator(id, modr.id).await?;
        store
            .create_invitation(new_invitation(
                id,
                &format!("th-{id}"),
                InvitationKind::Guest,
                None,
                org.id,
            ))
            .await?;
        store
            .add_ban(id, BanSubject::User(modr.id + 100), "Organiser", t0())
            .await?;
        store.set_muted(id, BanSubject::User(modr.id), true).await?;
        store
            .create_guest_pass(&NewGuestPass {
                meeting_id: id.into(),
                token_hash: format!("gp-{id}"),
                display_name: "Gina Gast".into(),
                admitted_by: "Organiser".into(),
                admitter: None,
                expires_at: t0(),
            })
            .await?;
    }
    let cutoff = t0();
    store
        .set_meeting_ended("old", cutoff - Duration::milliseconds(1))
        .await?;
    store.set_meeting_ended("recent", cutoff).await?;

    assert_eq!(store.purge_ended_meetings_before(cutoff).await?, 1);
    assert_eq!(store.meeting("old").await?, None);
    assert!(store.list_invitations("old").await?.is_empty());
    assert_eq!(store.invitation_by_token_hash("th-old").await?, None);
    assert!(store.moderators("old").await?.is_empty());
    assert!(
        !store
            .is_banned("old", BanSubject::User(modr.id + 100))
            .await?
    );
    assert!(store.muted("old").await?.is_empty());
    assert_eq!(store.guest_pass_by_token_hash("gp-old").await?, None);

    for id in ["recent", "running"] {
        assert!(store.meeting(id).await?.is_some(), "{id} kept");
        assert_eq!(store.list_invitations(id).await?.len(), 1, "{id}");
        assert_eq!(store.moderators(id).await?.len(), 1, "{id}");
        assert!(
            store.is_banned(id, BanSubject::User(modr.id + 100)).await?,
            "{id}"
        );
        assert_eq!(
            store.muted(id).await?,
            vec![BanSubject::User(modr.id)],
            "{id}"
        );
        assert!(
            store
                .guest_pass_by_token_hash(&format!("gp-{id}"))
                .await?
                .is_some(),
            "{id}"
        );
    }
    // Users are not meeting data.
    assert!(store.user_by_id(org.id).await?.is_some());
    assert_eq!(store.purge_ended_meetings_before(cutoff).await?, 0);
    // A meeting id freed by the purge can be used again.
    store
        .create_meeting("old", "Reused", None, org.id, SecurityProfile::Strict)
        .await?;
    assert_eq!(store.list_all_meetings().await?.len(), 3);
    Ok(())
}

macro_rules! backend_suite {
    ($backend:ident, $engine:expr) => {
        mod $backend {
            use super::*;

            async fn run<F, Fut>(test: F)
            where
                F: FnOnce(Store) -> Fut,
                Fut: std::future::Future<Output = R>,
            {
                let (store, _db) = $engine.fresh().await;
                test(store).await.expect("suite passes");
            }

            #[tokio::test]
            async fn users() {
                run(|s| async move { super::users(&s).await }).await
            }
            #[tokio::test]
            async fn sessions() {
                run(|s| async move { super::sessions(&s).await }).await
            }
            #[tokio::test]
            async fn meetings() {
                run(|s| async move { super::meetings(&s).await }).await
            }
            #[tokio::test]
            async fn invitations() {
                run(|s| async move { super::invitations(&s).await }).await
            }
            #[tokio::test]
            async fn dial_in() {
                run(|s| async move { super::dial_in(&s).await }).await
            }
            #[tokio::test]
            async fn bans() {
                run(|s| async move { super::bans(&s).await }).await
            }
            #[tokio::test]
            async fn guest_passes() {
                run(|s| async move { super::guest_passes(&s).await }).await
            }

            #[tokio::test]
            async fn purge() {
                run(|s| async move { super::purge(&s).await }).await
            }
            #[tokio::test]
            async fn user_serialisation_hides_password_hash() {
                run(|s| async move { super::user_serialisation_hides_password_hash(&s).await })
                    .await
            }
        }
    };
}

backend_suite!(sqlite_in_memory, Engine::SqliteMemory);
backend_suite!(sqlite_on_disk, Engine::SqliteFile);
backend_suite!(postgres, Engine::Postgres);

#[tokio::test]
async fn in_memory_stores_are_separate() -> R {
    let a = Store::open_sqlite_memory().await?;
    let b = Store::open_sqlite_memory().await?;
    staff(&a, "alice").await?;
    assert_eq!(b.user_by_username("alice").await?, None);
    // And one in-memory store keeps its data across calls (a single kept connection).
    assert!(a.user_by_username("alice").await?.is_some());
    Ok(())
}

/// Closing a store and opening its database again (the server restarted) keeps everything, and
/// running the migrations again is a no-op.
async fn reopening_keeps_data(store: Store, db: &TestDb) -> R {
    let (alice, invitation) = {
        let alice = staff(&store, "alice").await?;
        store
            .create_meeting("m-1", "Kept", None, alice.id, SecurityProfile::Internal)
            .await?;
        let inv = store
            .create_invitation(new_invitation(
                "m-1",
                "th-kept",
                InvitationKind::Guest,
                None,
                alice.id,
            ))
            .await?;
        if let TestDb::SqliteFile { path, .. } = db {
            // WAL mode: the write-ahead log sits beside the database while it is open.
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            assert!(std::path::Path::new(&wal).exists(), "WAL mode");
        }
        store.close().await;
        (alice, inv)
    };
    if let TestDb::SqliteFile { path, .. } = db {
        assert!(path.exists());
    }
    // Opening again runs the migrations again: must be a no-op that keeps the data.
    for _ in 0..2 {
        let store = db.open().await;
        assert_eq!(
            store.user_by_username("ALICE").await?.as_ref(),
            Some(&alice)
        );
        let m = store.meeting("m-1").await?.expect("meeting kept");
        assert_eq!(m.profile, SecurityProfile::Internal);
        assert_eq!(
            store.invitation_by_token_hash("th-kept").await?.as_ref(),
            Some(&invitation)
        );
        // Uniqueness still enforced after reopening.
        let dup = staff(&store, "Alice").await;
        assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
        store.close().await;
    }
    Ok(())
}

/// A file database under an unusual name keeps its data across reopening (the suite's
/// `reopening_keeps_data` on a file named otherwise).
#[tokio::test]
async fn reopening_a_file_database_keeps_data() -> R {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested-name.db");
    let store = Store::open_sqlite(&path).await?;
    reopening_keeps_data(store, &TestDb::SqliteFile { _dir: dir, path }).await
}

#[tokio::test]
async fn reopening_a_postgres_database_keeps_data() -> R {
    let (store, db) = Engine::Postgres.fresh().await;
    reopening_keeps_data(store, &db).await
}

/// The URL forms docs/operations.md names: TCP with a password (the suite's), and the unix
/// socket directory with the user in the query (peer or trust authentication, no password; the
/// port names the socket file, 5432 if left out).
#[tokio::test]
async fn postgres_opens_over_its_unix_socket() -> R {
    let (store, db) = Engine::Postgres.fresh().await;
    staff(&store, "alice").await?;
    let url = db.postgres_url().expect("postgres");
    let name = url.rsplit('/').next().expect("database name");
    let cluster = engines::cluster();
    let socket_url = format!(
        "postgres:///{name}?host={}&port={}&user={}",
        cluster.socket_dir().display(),
        cluster.port(),
        cluster.admin()
    );
    let summary = klausur_store::postgres_url_summary(&socket_url).expect("parses");
    assert!(summary.contains("socket directory"), "{summary}");
    let other = Store::open_postgres(&socket_url).await?;
    assert!(other.user_by_username("ALICE").await?.is_some());
    Ok(())
}

/// A URL that is not PostgreSQL's or does not parse, a server that is not there, a wrong
/// password: each an error naming the cause, never the password, and never a panic.
#[tokio::test]
async fn postgres_connection_problems_are_errors() {
    let (_store, db) = Engine::Postgres.fresh().await;
    let url = db.postgres_url().expect("postgres").to_owned();
    for bad in [
        "mysql://u:p@127.0.0.1/x",
        "postgres://u:p@[::1/x",
        "not a url",
    ] {
        let e = klausur_store::postgres_url_summary(bad).expect_err(bad);
        assert!(!e.contains(":p@"), "{e}");
    }
    let summary = klausur_store::postgres_url_summary(&url).expect("summary");
    let password = url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('@').next())
        .expect("password");
    assert!(!summary.contains(password), "{summary}");
    assert!(summary.contains("127.0.0.1"), "{summary}");
    // Nothing listens on port 1.
    let refused = Store::open_postgres("postgres://u:secret-pw@127.0.0.1:1/x")
        .await
        .expect_err("nothing listens there");
    assert!(!refused.to_string().contains("secret-pw"), "{refused}");
    assert!(refused.to_string().contains("refused"), "{refused}");
    let wrong = url.replace(password, "wrong-password");
    let denied = Store::open_postgres(&wrong)
        .await
        .expect_err("wrong password");
    assert!(
        denied
            .to_string()
            .contains("password authentication failed"),
        "{denied}"
    );
    assert!(!denied.to_string().contains("wrong-password"), "{denied}");
}

/// PostgreSQL stores no NUL character in text: such input is an error, not a panic (SQLite
/// keeps it).
#[tokio::test]
async fn postgres_refuses_a_nul_character_with_an_error() {
    let (store, _db) = Engine::Postgres.fresh().await;
    let e = store
        .create_user("nul\0name", "x", "h", Role::Staff, false)
        .await
        .expect_err("NUL refused");
    assert!(matches!(e, StoreError::Database(_)), "{e:?}");
}

/// SQLite's maintenance does nothing on PostgreSQL, which looks after its own log.
#[tokio::test]
async fn postgres_has_no_sqlite_maintenance() -> R {
    let (store, _db) = Engine::Postgres.fresh().await;
    assert!(store.checkpoint().await?);
    assert_eq!(store.integrity_problems().await?, Vec::<String>::new());
    Ok(())
}

async fn user_serialisation_hides_password_hash(store: &Store) -> R {
    let u = store
        .create_user("alice", "Alice", "secret-hash-value", Role::Admin, false)
        .await?;
    let json = serde_json::to_value(&u).expect("serialises");
    assert!(!json.to_string().contains("secret-hash-value"), "{json}");
    assert_eq!(json["role"], "admin");
    assert_eq!(json["username"], "alice");
    Ok(())
}

/// The write-ahead log does not grow with every write for as long as the server runs: a
/// checkpoint empties it and keeps everything. (Before, the log of a running server was never
/// reset: about 22 KB per meeting created, until the disk was full.)
#[tokio::test]
async fn a_checkpoint_empties_the_write_ahead_log_and_keeps_every_row() -> R {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("klausur.db");
    let wal = dir.path().join("klausur.db-wal");
    let store = Store::open_sqlite(&path).await?;
    let org = staff(&store, "org").await?;
    for i in 0..300 {
        store
            .create_meeting(
                &format!("m-{i}"),
                "Sitzung",
                None,
                org.id,
                SecurityProfile::Strict,
            )
            .await?;
    }
    let before = std::fs::metadata(&wal).expect("wal").len();
    assert!(before > 100_000, "the log holds the writes: {before} bytes");
    assert!(store.checkpoint().await?, "nothing else uses the log");
    assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
    assert_eq!(store.list_all_meetings().await?.len(), 300);
    assert_eq!(store.integrity_problems().await?, Vec::<String>::new());
    // And writes go on after it.
    store
        .create_meeting("m-after", "Danach", None, org.id, SecurityProfile::Strict)
        .await?;
    assert_eq!(store.list_all_meetings().await?.len(), 301);
    Ok(())
}

/// PostgreSQL restarted under an open store (its own cluster, which the test stops): while it
/// is down, reads and writes fail within a few seconds with [`StoreError::Unavailable`] and the
/// refused write is not there afterwards; once it is up again the same store works, with every
/// write it acknowledged before.
#[tokio::test]
async fn postgres_restarted_under_the_store_is_unavailable_meanwhile_and_works_again() -> R {
    let cluster = engines::private_cluster();
    let url = cluster.create_database().await;
    let store = Store::open_postgres(&url).await?;
    let org = staff(&store, "org").await?;
    for i in 0..3 {
        store
            .create_meeting(
                &format!("m-{i}"),
                "Vorher",
                None,
                org.id,
                SecurityProfile::Strict,
            )
            .await?;
    }

    cluster.stop();
    let started = std::time::Instant::now();
    let read = store.list_all_meetings().await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let write = store
        .create_meeting(
            "m-down",
            "Währenddessen",
            None,
            org.id,
            SecurityProfile::Strict,
        )
        .await;
    assert!(
        matches!(write, Err(StoreError::Unavailable(_))),
        "{write:?}"
    );
    // Bounded by the pool's acquire timeout (5 s each), with room for a loaded machine.
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");

    cluster.start_again();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let meetings = loop {
        match store.list_all_meetings().await {
            Ok(m) => break m,
            Err(StoreError::Unavailable(e)) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not work again after the restart: {e}"),
        }
    };
    let mut ids: Vec<_> = meetings.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["m-0", "m-1", "m-2"],
        "every acknowledged write, no refused one"
    );
    store
        .create_meeting("m-after", "Danach", None, org.id, SecurityProfile::Strict)
        .await?;
    assert_eq!(store.list_all_meetings().await?.len(), 4);
    Ok(())
}

/// The codes PostgreSQL itself sends are read as the store documents: a connection the server
/// terminates (57P01, as in a shutdown) is [`StoreError::Unavailable`], a statement it refuses
/// (a syntax error, negative control) is not.
#[tokio::test]
async fn a_connection_postgres_terminates_is_unavailable() {
    use sqlx::Connection as _;
    let url = engines::cluster().create_database().await;
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let e = sqlx::query("SELEC 1")
        .execute(&mut conn)
        .await
        .expect_err("syntax error");
    assert!(matches!(StoreError::from(e), StoreError::Database(_)));
    let e = sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
        .execute(&mut conn)
        .await
        .expect_err("terminated");
    let e = StoreError::from(e);
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
}
