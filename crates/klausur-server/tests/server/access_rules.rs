//! Access that must hold against the meeting's own participants (the outside attack's findings
//! of issue 19, "Access that does not hold"): a removed moderator stays out like anyone, the
//! organiser's role and seat cannot be taken, only the organiser grants moderation, and an
//! invitation's name binds whatever name its holder sends. Each test failed on the code before
//! the fix; each has the permitted counterpart beside it (the negative control).

use klausur_proto::{ClientMsg, ErrorCode, Role as PRole, SecurityProfile, ServerMsg};
use klausur_store::Role;

use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

struct Setup {
    srv: TestServer,
    meeting: String,
    olga_cookie: String,
    gina: String,
    hans: String,
}

async fn setup() -> Setup {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = srv
        .store
        .create_meeting(
            "m1",
            "Hauptausschuss",
            None,
            olga.id,
            SecurityProfile::Internal,
        )
        .await
        .expect("meeting");
    let invite = |name: &'static str| {
        let srv = &srv;
        let id = m.id.clone();
        async move {
            srv.guest_invitation(&id, name, olga.id, chrono::Duration::hours(1))
                .await
                .1
        }
    };
    let gina = invite("Gina Gast").await;
    let hans = invite("Hans Hinz").await;
    let olga_cookie = session_cookie(&srv, "olga").await;
    Setup {
        srv,
        meeting: m.id,
        olga_cookie,
        gina,
        hans,
    }
}

fn joined(m: &ServerMsg) -> klausur_proto::Participant {
    match m {
        ServerMsg::Joined {
            self_id,
            participants,
            ..
        } => participants
            .iter()
            .find(|p| &p.id == self_id)
            .cloned()
            .expect("own entry"),
        other => panic!("expected joined, got {other:?}"),
    }
}

async fn forbidden(c: &mut Client, msg: ClientMsg) {
    c.send(&msg).await;
    let e = c.until(|m| matches!(m, ServerMsg::Error { .. })).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{msg:?}: {e:?}"
    );
}

/// Olga makes `who` a moderator and waits until everyone is told.
async fn make_moderator(olga: &mut Client, id: &str, moderator: bool) {
    olga.send(&ClientMsg::SetModerator {
        participant_id: id.to_string(),
        moderator,
    })
    .await;
    let want = if moderator {
        PRole::Moderator
    } else {
        PRole::Participant
    };
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == id && participant.role == want))
        .await;
}

/// A moderator whom the organiser removed comes back with her link to the lobby, marked as
/// removed, not as moderator; let in again, she is a participant and cannot lock.
#[tokio::test]
async fn a_removed_moderator_stays_out_and_loses_the_role() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined(&olga.join(&s.meeting, None, None).await);
    let mut gina = Client::connect(&s.srv, None).await;
    let gid = joined(&gina.join(&s.meeting, Some(&s.gina), None).await).id;
    make_moderator(&mut olga, &gid, true).await;

    olga.send(&ClientMsg::Remove {
        participant_id: gid.clone(),
    })
    .await;
    gina.until(|m| matches!(m, ServerMsg::Ended { .. })).await;

    let mut again = Client::connect(&s.srv, None).await;
    let back = again.join(&s.meeting, Some(&s.gina), None).await;
    assert!(
        matches!(back, ServerMsg::LobbyWait { .. }),
        "a removed moderator must not come straight back: {back:?}"
    );
    let lobby = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lobby else {
        unreachable!()
    };
    olga.send(&ClientMsg::Admit {
        participant_id: lobby[0].id.clone(),
    })
    .await;
    let me = joined(&again.next().await);
    assert_eq!(me.role, PRole::Participant, "the removal ended the role");
    forbidden(&mut again, ClientMsg::Lock { locked: true }).await;
}

/// Only the organiser grants and revokes moderation, and nobody takes the organiser's role or
/// seat: a guest made moderator can moderate (mute), but cannot demote or remove the organiser
/// nor make others moderators.
#[tokio::test]
async fn the_organisers_role_and_seat_cannot_be_taken() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    let oid = joined(&olga.join(&s.meeting, None, None).await).id;
    let mut gina = Client::connect(&s.srv, None).await;
    let gid = joined(&gina.join(&s.meeting, Some(&s.gina), None).await).id;
    let mut hans = Client::connect(&s.srv, None).await;
    let hid = joined(&hans.join(&s.meeting, Some(&s.hans), None).await).id;
    make_moderator(&mut olga, &gid, true).await;

    // Gina moderates: she can mute Hans (the permitted counterpart)...
    gina.send(&ClientMsg::Mute {
        participant_id: hid.clone(),
        muted: true,
    })
    .await;
    gina.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == hid && participant.muted_by_moderator))
        .await;
    // ... but not demote or remove Olga, nor grant moderation.
    forbidden(
        &mut gina,
        ClientMsg::SetModerator {
            participant_id: oid.clone(),
            moderator: false,
        },
    )
    .await;
    forbidden(
        &mut gina,
        ClientMsg::Remove {
            participant_id: oid.clone(),
        },
    )
    .await;
    forbidden(
        &mut gina,
        ClientMsg::SetModerator {
            participant_id: hid.clone(),
            moderator: true,
        },
    )
    .await;
    // Olga cannot give up her own role either, and is still the organiser who grants it.
    forbidden(
        &mut olga,
        ClientMsg::SetModerator {
            participant_id: oid.clone(),
            moderator: false,
        },
    )
    .await;
    make_moderator(&mut olga, &gid, false).await;
    // Olga is still in, still moderator: she can lock.
    olga.send(&ClientMsg::Lock { locked: true }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { meeting } if meeting.locked))
        .await;
}

/// The invitation for "Gina Gast" joins as Gina Gast, whatever name the join message carries;
/// a lobby guest's own name still counts.
#[tokio::test]
async fn an_invitation_joins_under_its_own_name() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined(&olga.join(&s.meeting, None, None).await);
    let mut gina = Client::connect(&s.srv, None).await;
    let me = joined(&gina.join(&s.meeting, Some(&s.gina), Some("olga")).await);
    assert_eq!(me.display_name, "Gina Gast");

    let mut carla = Client::connect(&s.srv, None).await;
    assert!(matches!(
        carla.join(&s.meeting, None, Some("Carla Gast")).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lobby = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lobby else {
        unreachable!()
    };
    assert_eq!(lobby[0].display_name, "Carla Gast");
}

/// Joins with an invitation and, if given, the seat token of an earlier `joined`.
async fn join_with_token(s: &Setup, token: &str, seat_token: Option<&str>) -> (Client, ServerMsg) {
    let mut c = Client::connect(&s.srv, None).await;
    c.send(&ClientMsg::Join {
        meeting_id: s.meeting.clone(),
        invite_token: Some(token.to_string()),
        display_name: None,
        rejoin_token: seat_token.map(str::to_string),
        dial_in_ticket: None,
    })
    .await;
    let first = c.next().await;
    (c, first)
}

fn seat_token(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Joined {
            rejoin_token: Some(t),
            ..
        } => t.clone(),
        other => panic!("expected joined with a seat token, got {other:?}"),
    }
}

async fn lobby_entry(olga: &mut Client) -> klausur_proto::LobbyEntry {
    match olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if !lobby.is_empty()))
        .await
    {
        ServerMsg::LobbyChanged { mut lobby, .. } => lobby.remove(0),
        _ => unreachable!(),
    }
}

async fn replaced(c: &mut Client) {
    c.until(|m| {
        matches!(
            m,
            ServerMsg::Ended {
                reason: klausur_proto::EndReason::Replaced,
                ..
            }
        )
    })
    .await;
}

#[tokio::test]
async fn a_second_join_with_the_same_invitation_waits_for_a_moderator() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    olga.join(&s.meeting, None, None).await;
    let (mut gina, first) = join_with_token(&s, &s.gina, None).await;
    let gina_token = seat_token(&first);

    // Someone else with Gina's link: waits in the lobby, Gina is told and stays.
    let (mut other, first) = join_with_token(&s, &s.gina, None).await;
    assert!(matches!(first, ServerMsg::LobbyWait { .. }), "{first:?}");
    gina.until(|m| matches!(m, ServerMsg::InvitationContested))
        .await;
    let entry = lobby_entry(&mut olga).await;
    assert_eq!(entry.reason, klausur_proto::LobbyReason::InvitationInUse);
    assert_eq!(entry.display_name, "Gina Gast");
    // A wrong seat token is no better than none. (One entry per seat waits: the later
    // arrival takes the earlier one's place in the lobby.)
    let (mut other2, first) = join_with_token(&s, &s.gina, Some("not-the-token")).await;
    assert!(matches!(first, ServerMsg::LobbyWait { .. }), "{first:?}");
    replaced(&mut other).await;
    gina.send(&ClientMsg::Ping).await;
    gina.until(|m| matches!(m, ServerMsg::Pong)).await;
    let entry = match olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if lobby.len() == 1 && lobby[0].id != entry.id))
        .await
    {
        ServerMsg::LobbyChanged { mut lobby, .. } => lobby.remove(0),
        _ => unreachable!(),
    };
    assert_eq!(entry.reason, klausur_proto::LobbyReason::InvitationInUse);

    // Denied, the other goes; Gina stays.
    olga.send(&ClientMsg::Deny {
        participant_id: entry.id.clone(),
    })
    .await;
    other2
        .until(|m| {
            matches!(
                m,
                ServerMsg::Ended {
                    reason: klausur_proto::EndReason::Denied,
                    ..
                }
            )
        })
        .await;

    // Gina's own browser coming back (with its seat token) takes the seat over at once.
    let (mut gina2, first) = join_with_token(&s, &s.gina, Some(&gina_token)).await;
    let gina2_token = seat_token(&first);
    replaced(&mut gina).await;
    olga.until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if lobby.is_empty()))
        .await;

    // Admitted by the moderator, the other takes the seat: Gina makes way.
    let (mut other, first) = join_with_token(&s, &s.gina, None).await;
    assert!(matches!(first, ServerMsg::LobbyWait { .. }), "{first:?}");
    let entry = match olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if lobby.len() == 1 && lobby[0].id != entry.id))
        .await
    {
        ServerMsg::LobbyChanged { mut lobby, .. } => lobby.remove(0),
        _ => unreachable!(),
    };
    assert_eq!(entry.reason, klausur_proto::LobbyReason::InvitationInUse);
    olga.send(&ClientMsg::Admit {
        participant_id: entry.id,
    })
    .await;
    other.until(|m| matches!(m, ServerMsg::Joined { .. })).await;
    replaced(&mut gina2).await;
    assert_ne!(gina2_token, gina_token);
}
