//! A SQLite database written by an earlier release must open in every later one, with
//! everything in it (issue 22: the embedded database is the default, and an upgrade must never
//! lose a city's meetings, invitations, accounts or audit trail).
//!
//! `tests/fixtures/sqlite-2026-12-06.sqlite` was written by [`write_the_fixture`] at the schema
//! of 2026-12-06 (migrations up to `20261204000000_audit`). The check opens a copy with today's
//! code (which applies the later migrations) and finds every row. When a release changes the
//! schema, keep this fixture and add the release's own: run
//! `cargo test -p klausur-store --test fixture -- --ignored write_the_fixture` with
//! `KLAUSUR_FIXTURE_OUT=tests/fixtures/sqlite-<date>.sqlite`, and a check for it like the one
//! below.
//!
//! The same contents check a backup (`Store::backup_sqlite`, `klausur backup`): restored into a
//! fresh directory, it holds every row.

use klausur_testbed::postgres as engines;

use chrono::{DateTime, Duration, Utc};
use klausur_proto::SecurityProfile;
use klausur_store::{
    AuditActor, AuditFilter, BanSubject, InvitationKind, NewAuditRecord, NewGuestPass,
    NewInvitation, Role, Store, StoreError,
};
use serde_json::json;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sqlite-2026-12-06.sqlite"
);

/// The fixture's clock: every timestamp in it is this instant plus some minutes.
fn t(minutes: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_796_000_000_000).expect("valid timestamp")
        + Duration::minutes(minutes)
}

/// What the fixture holds: two staff accounts and an administrator, a meeting with a dial-in
/// number, an extra moderator, invitations (one revoked, one used, one with a phone PIN), a
/// ban, a mute, a lock, a guest pass, an ended meeting, a login session and audit records.
async fn fill(store: &Store) -> Result<(), StoreError> {
    let admin = store
        .create_user("admin", "Ada Admin", "$argon2id$admin", Role::Admin, false)
        .await?;
    let clerk = store
        .create_user(
            "Schmidt",
            "Sabine Schmidt",
            "$argon2id$clerk",
            Role::Staff,
            true,
        )
        .await?;
    let council = store
        .create_user(
            "mueller",
            "Jonas Müller",
            "$argon2id$council",
            Role::Staff,
            false,
        )
        .await?;
    store.set_user_disabled(council.id, true).await?;
    store
        .create_session("session-hash", clerk.id, "csrf-token", t(60 * 24 * 400))
        .await?;
    store
        .create_meeting_with_dial_in_number(
            "m-council",
            "Ratssitzung (nicht öffentlich)",
            Some(t(60)),
            clerk.id,
            SecurityProfile::Internal,
            "4711",
        )
        .await?;
    store.add_moderator("m-council", admin.id).await?;
    let invitation = |token: &str, name: &str, kind, user_id, pin: Option<&str>| NewInvitation {
        meeting_id: "m-council".into(),
        token_hash: token.into(),
        name: name.into(),
        kind,
        user_id,
        created_by: clerk.id,
        expires_at: t(60 * 24 * 400),
        phone_pin_hash: pin.map(str::to_owned),
    };
    let guest = store
        .create_invitation(invitation(
            "tok-guest",
            "Erika Gast",
            InvitationKind::Guest,
            None,
            Some("pin-hash-1"),
        ))
        .await?;
    let colleague = store
        .create_invitation(invitation(
            "tok-colleague",
            "Jonas Müller",
            InvitationKind::Colleague,
            Some(council.id),
            None,
        ))
        .await?;
    let revoked = store
        .create_invitation(invitation(
            "tok-revoked",
            "Max Ehemals",
            InvitationKind::Guest,
            None,
            None,
        ))
        .await?;
    store
        .revoke_invitation("m-council", revoked.id, t(5))
        .await?;
    store.mark_invitation_used(guest.id, t(61)).await?;
    store.set_invitation_moderator(colleague.id, true).await?;
    store
        .add_ban(
            "m-council",
            BanSubject::Invitation(revoked.id),
            "Sabine Schmidt",
            t(62),
        )
        .await?;
    store
        .set_muted("m-council", BanSubject::Invitation(guest.id), true)
        .await?;
    store.set_meeting_locked("m-council", true).await?;
    store
        .create_guest_pass(&NewGuestPass {
            meeting_id: "m-council".into(),
            token_hash: "pass-hash".into(),
            display_name: "Lena Lobby".into(),
            admitted_by: "Sabine Schmidt".into(),
            admitter: Some(BanSubject::User(clerk.id)),
            expires_at: t(60 * 24 * 400),
        })
        .await?;
    store
        .create_meeting(
            "m-ended",
            "Bauausschuss",
            None,
            admin.id,
            SecurityProfile::Strict,
        )
        .await?;
    store.set_meeting_ended("m-ended", t(30)).await?;
    for (i, kind) in ["login.succeeded", "lobby.admitted", "meeting.locked"]
        .into_iter()
        .enumerate()
    {
        store
            .append_audit(
                NewAuditRecord {
                    kind: kind.into(),
                    actor: AuditActor::new(
                        "user",
                        Some(clerk.id.to_string()),
                        Some("Sabine Schmidt".into()),
                    ),
                    meeting_id: (i > 0).then(|| "m-council".to_owned()),
                    source: (i == 0).then(|| "192.0.2.7".to_owned()),
                    details: json!({ "n": i }),
                },
                t(61 + i as i64),
            )
            .await?;
    }
    Ok(())
}

#[tokio::test]
#[ignore = "writes the fixture; run when a release changes the schema (module docs)"]
async fn write_the_fixture() -> Result<(), StoreError> {
    let out = std::env::var("KLAUSUR_FIXTURE_OUT").expect("KLAUSUR_FIXTURE_OUT: where to write");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("klausur.db");
    let store = Store::open_sqlite(&path).await?;
    fill(&store).await?;
    // Everything into the database file: the write-ahead log copied in and emptied.
    assert!(store.checkpoint().await?, "the log was still in use");
    store.close().await;
    std::fs::copy(&path, out).expect("copy the database");
    Ok(())
}

/// Finds everything [`fill`] wrote in `store`, and an intact audit chain.
async fn check(store: &Store) -> Result<(), StoreError> {
    assert!(store.integrity_problems().await?.is_empty());

    let users = store.list_users().await?;
    let names: Vec<_> = users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let admin = store.user_by_username("ADMIN").await?.expect("admin");
    assert_eq!(
        (admin.display_name.as_str(), admin.role),
        ("Ada Admin", Role::Admin)
    );
    assert_eq!(admin.password_hash, "$argon2id$admin");
    let clerk = store.user_by_username("schmidt").await?.expect("clerk");
    assert_eq!(
        clerk.username, "Schmidt",
        "the spelling it was created with"
    );
    assert!(clerk.must_change_password);
    let council = store.user_by_username("mueller").await?.expect("council");
    assert!(council.disabled);
    assert_eq!(store.count_admins().await?, 1);
    let session = store
        .session_with_user("session-hash", t(0))
        .await?
        .expect("the session");
    assert_eq!(session.0.user_id, clerk.id);

    let meeting = store.meeting("m-council").await?.expect("the meeting");
    assert_eq!(meeting.title, "Ratssitzung (nicht öffentlich)");
    assert_eq!(meeting.starts_at, Some(t(60)));
    assert_eq!(meeting.profile, SecurityProfile::Internal);
    assert_eq!(meeting.organiser_id, clerk.id);
    assert_eq!(meeting.dial_in_number.as_deref(), Some("4711"));
    assert!(meeting.ended_at.is_none());
    assert_eq!(
        store.meeting_by_dial_in_number("4711").await?.map(|m| m.id),
        Some("m-council".to_owned())
    );
    assert!(store.is_moderator("m-council", admin.id).await?);
    assert!(store.meeting_locked("m-council").await?);
    let ended = store.meeting("m-ended").await?.expect("the ended meeting");
    assert_eq!(ended.ended_at, Some(t(30)));
    assert_eq!(ended.profile, SecurityProfile::Strict);

    let invitations = store.list_invitations("m-council").await?;
    assert_eq!(invitations.len(), 3);
    let guest = store
        .invitation_by_token_hash("tok-guest")
        .await?
        .expect("the guest's invitation");
    assert_eq!(
        (guest.name.as_str(), guest.kind),
        ("Erika Gast", InvitationKind::Guest)
    );
    assert_eq!(guest.last_used_at, Some(t(61)));
    assert_eq!(guest.phone_pin_hash.as_deref(), Some("pin-hash-1"));
    let pins = store.valid_phone_pins("m-council", t(70)).await?;
    assert_eq!(pins.len(), 1, "{pins:?}");
    let colleague = store
        .invitation_by_token_hash("tok-colleague")
        .await?
        .expect("the colleague's invitation");
    assert_eq!(colleague.user_id, Some(council.id));
    assert!(store.invitation_is_moderator(colleague.id).await?);
    assert!(store.colleague_invited("m-council", council.id).await?);
    let revoked = store
        .invitation_by_token_hash("tok-revoked")
        .await?
        .expect("the revoked invitation");
    assert_eq!(revoked.revoked_at, Some(t(5)));
    assert!(
        store
            .is_banned("m-council", BanSubject::Invitation(revoked.id))
            .await?
    );
    assert_eq!(
        store.muted("m-council").await?,
        vec![BanSubject::Invitation(guest.id)]
    );
    let pass = store
        .guest_pass_by_token_hash("pass-hash")
        .await?
        .expect("the guest pass");
    assert_eq!(pass.display_name, "Lena Lobby");
    assert_eq!(pass.admitter, Some(BanSubject::User(clerk.id)));

    let records = store
        .audit_records(&AuditFilter {
            limit: 100,
            ..AuditFilter::default()
        })
        .await?;
    let kinds: Vec<_> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for kind in ["login.succeeded", "lobby.admitted", "meeting.locked"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let verdict = store.verify_audit(None).await?;
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
    assert_eq!(verdict.records, 3);
    Ok(())
}

#[tokio::test]
async fn a_database_of_2026_12_06_opens_with_everything_in_it() -> Result<(), StoreError> {
    // A copy: opening migrates it, and the fixture stays as that release wrote it.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("klausur.db");
    std::fs::copy(FIXTURE, &path).expect("the fixture is in the repository");
    let store = Store::open_sqlite(&path).await?;
    check(&store).await?;
    // Every migration of this release applied, the fixture's and the later ones.
    let sqlite_migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .expect("migrations")
            .count();
    assert_eq!(store.applied_migrations().await?.len(), sqlite_migrations);
    let clerk = store.user_by_username("schmidt").await?.expect("clerk");

    // And it takes new writes after the upgrade, the audit chain continuing.
    store
        .create_meeting("m-new", "Neu", None, clerk.id, SecurityProfile::Internal)
        .await?;
    store
        .append_audit(
            NewAuditRecord {
                kind: "meeting.created".into(),
                actor: AuditActor::new("user", Some(clerk.id.to_string()), None),
                meeting_id: Some("m-new".into()),
                source: None,
                details: json!({}),
            },
            t(100),
        )
        .await?;
    let verdict = store.verify_audit(None).await?;
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
    assert_eq!(verdict.records, 4);
    Ok(())
}

#[tokio::test]
async fn a_backup_restores_into_a_fresh_data_directory_with_everything() -> Result<(), StoreError> {
    let live = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&live.path().join("klausur.db")).await?;
    fill(&store).await?;
    let backups = tempfile::tempdir().expect("temp dir");
    let backup = backups.path().join("klausur-backup.sqlite3");
    store.backup_sqlite(&backup).await?;
    // Written after the backup: not in it.
    let admin = store.user_by_username("admin").await?.expect("admin");
    store
        .create_meeting("m-later", "Später", None, admin.id, SecurityProfile::Strict)
        .await?;
    // A backup never overwrites a file.
    assert!(store.backup_sqlite(&backup).await.is_err());

    // Restored: the file copied into an empty data directory.
    let fresh = tempfile::tempdir().expect("temp dir");
    let restored_path = fresh.path().join("klausur.db");
    std::fs::copy(&backup, &restored_path).expect("restore");
    let restored = Store::open_sqlite(&restored_path).await?;
    check(&restored).await?;
    assert!(restored.meeting("m-later").await?.is_none());
    assert!(store.meeting("m-later").await?.is_some());
    Ok(())
}

/// PostgreSQL's backup is the engine's own tools (docs/operations.md): `pg_dump` of a store's
/// database, `pg_restore` into an empty one, and the restored store holds every row.
#[tokio::test]
async fn a_postgres_store_restores_from_pg_dump_with_everything() -> Result<(), StoreError> {
    let cluster = engines::cluster();
    let live = cluster.create_database().await;
    let store = Store::open_postgres(&live).await?;
    fill(&store).await?;
    let dir = tempfile::tempdir().expect("temp dir");
    let dump = dir.path().join("klausur.dump");
    let out = std::process::Command::new(engines::client_tool("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(format!("--dbname={live}"))
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Written after the dump: not in it.
    let admin = store.user_by_username("admin").await?.expect("admin");
    store
        .create_meeting("m-later", "Später", None, admin.id, SecurityProfile::Strict)
        .await?;
    store.close().await;

    let fresh = cluster.create_database().await;
    let out = std::process::Command::new(engines::client_tool("pg_restore"))
        .args(["--no-owner", "--exit-on-error"])
        .arg(format!("--dbname={fresh}"))
        .arg(&dump)
        .output()
        .expect("run pg_restore");
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = Store::open_postgres(&fresh).await?;
    check(&restored).await?;
    let postgres_migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .expect("migrations")
            .count();
    assert_eq!(
        restored.applied_migrations().await?.len(),
        postgres_migrations
    );
    assert!(restored.meeting("m-later").await?.is_none());
    // The restored store takes writes (its sequences continued, not reset).
    let clerk = restored.user_by_username("schmidt").await?.expect("clerk");
    restored
        .create_user("neu", "Neu", "$argon2id$neu", Role::Staff, false)
        .await?;
    restored
        .create_meeting("m-after", "Danach", None, clerk.id, SecurityProfile::Strict)
        .await?;
    assert_eq!(restored.list_users().await?.len(), 4);
    Ok(())
}

/// A city that grows from the embedded SQLite to PostgreSQL takes everything along
/// (`Store::copy_to_postgres`, `klausur copy-to-postgres`): ids, timestamps, the audit chain.
#[tokio::test]
async fn a_sqlite_store_copied_into_postgres_holds_everything() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::open_sqlite(&dir.path().join("klausur.db")).await?;
    fill(&sqlite).await?;
    let pg = Store::open_postgres(&engines::cluster().create_database().await).await?;
    let copied = sqlite.copy_to_postgres(&pg).await?;
    let count = |t: &str| copied.iter().find(|(n, _)| *n == t).map(|(_, c)| *c);
    assert_eq!(count("users"), Some(3));
    assert_eq!(count("invitations"), Some(3));
    assert_eq!(count("audit_records"), Some(3));
    check(&pg).await?;
    // New rows continue the ids (a new account is not refused for a taken id).
    let user = pg
        .create_user("neu", "Neu", "$argon2id$neu", Role::Staff, false)
        .await?;
    let max_copied = sqlite.list_users().await?.iter().map(|u| u.id).max();
    assert!(
        Some(user.id) > max_copied,
        "{} after {max_copied:?}",
        user.id
    );
    // Only into an empty database: a second copy is refused, and adds nothing.
    let err = sqlite.copy_to_postgres(&pg).await.expect_err("refused");
    assert!(err.to_string().contains("holds data already"), "{err}");
    assert_eq!(pg.list_users().await?.len(), 4);
    // And only from SQLite into PostgreSQL.
    assert!(pg.copy_to_postgres(&sqlite).await.is_err());
    Ok(())
}
