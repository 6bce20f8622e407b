//! The MLS delivery service over a real meeting WebSocket, with real MLS clients (klausur-e2ee)
//! holding credentials from the server's identity CA: the first member creates the group, a
//! member adds an invitee, exactly one commit wins an epoch, a lobby guest is pending with the
//! moderator who admitted them, non-members cannot commit, a removed member cannot decrypt
//! what is sent afterwards, a participant cannot claim another's leaf, and key packages are
//! bounded in size and rate.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use klausur_e2ee::{CommitOutput, Event, Member, StreamId};
use klausur_proto::{ClientMsg, ErrorCode, SecurityProfile, ServerMsg};
use klausur_store::Role;
use serde_json::json;

use crate::common::mls::{claim, device, now};
use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

fn joined_id(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Joined { self_id, .. } => self_id.clone(),
        other => panic!("not joined: {other:?}"),
    }
}

async fn key_package(c: &mut Client, m: &Member) {
    c.send(&ClientMsg::MlsKeyPackage {
        key_package: B64.encode(m.key_package().expect("kp")),
        continuity: None,
    })
    .await;
}

/// Sends a commit made at `epoch` (with its Welcome for `welcome_for`, if any).
async fn send_commit(c: &mut Client, epoch: u64, out: &CommitOutput, welcome_for: &[&str]) {
    c.send(&ClientMsg::MlsCommit {
        epoch,
        commit: B64.encode(&out.commit),
        welcome: out.welcome.as_ref().map(|w| B64.encode(w)),
        welcome_for: welcome_for.iter().map(|s| s.to_string()).collect(),
    })
    .await;
}

/// The next `mls_commit_result`: (epoch, accepted).
async fn commit_result(c: &mut Client) -> (u64, bool) {
    match c
        .until(|m| matches!(m, ServerMsg::MlsCommitResult { .. }))
        .await
    {
        ServerMsg::MlsCommitResult { epoch, accepted } => (epoch, accepted),
        _ => unreachable!(),
    }
}

/// Sends `msg` and expects an error reply with `code`.
async fn expect_error(c: &mut Client, msg: &ClientMsg, code: ErrorCode) {
    c.send(msg).await;
    match c.until(|m| matches!(m, ServerMsg::Error { .. })).await {
        ServerMsg::Error { code: got, message } => assert_eq!(got, code, "{message}"),
        _ => unreachable!(),
    }
}

fn pending(msg: &ServerMsg) -> bool {
    matches!(msg, ServerMsg::MlsPending { joiners, .. } if !joiners.is_empty())
}

/// A new strict meeting `meeting_id` organised by Olga, who is first in the meeting room: she is
/// asked to create the group, does, and claims leaf 0. Sam is a staff user, not invited.
struct OlgasGroup {
    srv: TestServer,
    meeting: String,
    olga_user_id: i64,
    olga: Client,
    olga_pid: String,
    olga_dev: Member,
}

async fn olgas_group(meeting_id: &str, title: &str) -> OlgasGroup {
    let srv = TestServer::start().await;
    let olga_user = srv.user("olga", Role::Staff).await;
    srv.user("sam", Role::Staff).await;
    let meeting = srv
        .store
        .create_meeting(
            meeting_id,
            title,
            None,
            olga_user.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting")
        .id;
    let (olga_http, olga_csrf) = srv.login("olga").await;
    let mut olga_dev = device(&srv, &olga_http, Some(&olga_csrf), json!({})).await;
    let mut olga = Client::connect(&srv, Some(&session_cookie(&srv, "olga").await)).await;
    let olga_pid = joined_id(&olga.join(&meeting, None, None).await);
    key_package(&mut olga, &olga_dev).await;
    let ServerMsg::MlsCreateGroup { group_id } = olga
        .until(|m| matches!(m, ServerMsg::MlsCreateGroup { .. }))
        .await
    else {
        unreachable!()
    };
    assert!(
        group_id.starts_with(&format!("{meeting_id}/")),
        "{group_id}"
    );
    olga_dev
        .create_group(group_id.as_bytes(), now())
        .expect("create");
    olga.send(&claim(&olga_dev, &olga_pid, true)).await;
    let up = olga
        .until(|m| matches!(m, ServerMsg::ParticipantUpdated { .. }))
        .await;
    let olga_subject = format!("user:{}", olga_user.id);
    assert!(
        matches!(&up, ServerMsg::ParticipantUpdated { participant }
            if participant.leaf == Some(0)
                && participant.credential_user_id.as_deref() == Some(olga_subject.as_str())),
        "{up:?}"
    );
    OlgasGroup {
        srv,
        meeting,
        olga_user_id: olga_user.id,
        olga,
        olga_pid,
        olga_dev,
    }
}

#[tokio::test]
async fn delivery_service_orders_commits_and_relays_welcomes() {
    // Olga (organiser) is first: she is asked to create the group.
    let OlgasGroup {
        srv,
        meeting,
        olga_user_id,
        mut olga,
        mut olga_dev,
        ..
    } = olgas_group("m1", "Hauptausschuss").await;
    let (gina_inv, gina_token) = srv
        .guest_invitation(
            &meeting,
            "Gina Gast",
            olga_user_id,
            chrono::Duration::hours(1),
        )
        .await;

    // Gina (invitee) joins and waits in the pending list with the policy that admits her.
    let gina_http = srv.anonymous();
    let mut gina_dev = device(&srv, &gina_http, None, json!({"invite_token": gina_token})).await;
    let mut gina = Client::connect(&srv, None).await;
    assert!(matches!(
        gina.join(&meeting, Some(&gina_token), None).await,
        ServerMsg::Joined { .. }
    ));
    // Before she is added, she cannot commit or claim membership.
    expect_error(
        &mut gina,
        &ClientMsg::MlsCommit {
            epoch: 0,
            commit: "QQ==".into(),
            welcome: None,
            welcome_for: vec![],
        },
        ErrorCode::Forbidden,
    )
    .await;
    key_package(&mut gina, &gina_dev).await;
    let ServerMsg::MlsPending { joiners, policy } = olga.until(pending).await else {
        unreachable!()
    };
    assert_eq!(joiners.len(), 1);
    assert_eq!(joiners[0].admitted_by, None);
    assert!(policy
        .direct_user_ids
        .contains(&format!("invitation:{gina_inv}")));
    assert!(policy
        .direct_user_ids
        .contains(&format!("user:{olga_user_id}")));
    assert!(!policy.staff_direct);
    let gina_pid = joiners[0].participant_id.clone();

    let kp = B64.decode(&joiners[0].key_package).expect("base64");
    let out = olga_dev.add(&[kp], now()).expect("add");
    send_commit(&mut olga, 0, &out, &[&gina_pid]).await;
    assert_eq!(commit_result(&mut olga).await, (0, true));
    olga_dev.merge_pending_commit(now()).expect("merge");
    let ServerMsg::MlsWelcome { welcome, epoch } = gina
        .until(|m| matches!(m, ServerMsg::MlsWelcome { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(epoch, 1);
    gina_dev
        .join_from_welcome(&B64.decode(welcome).expect("base64"), now())
        .expect("welcome");
    assert_eq!(
        gina_dev.security_code().expect("code"),
        olga_dev.security_code().expect("code")
    );
    let gina_leaf = gina_dev.leaf_index().expect("leaf");
    gina.send(&claim(&gina_dev, &gina_pid, false)).await;

    // Both commit for epoch 1: Olga's arrives first and wins, Gina's loses and she processes
    // Olga's instead. They end in the same epoch with the same code.
    let o = olga_dev.update_own_leaf().expect("update");
    send_commit(&mut olga, 1, &o, &[]).await;
    assert_eq!(commit_result(&mut olga).await, (1, true));
    olga_dev.merge_pending_commit(now()).expect("merge");
    let g = gina_dev.update_own_leaf().expect("update");
    send_commit(&mut gina, 1, &g, &[]).await;
    // In order on Gina's connection: Olga's winning commit, then her own loss.
    let ServerMsg::MlsCommit {
        epoch,
        commit,
        from_id,
    } = gina
        .until(|m| matches!(m, ServerMsg::MlsCommit { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(epoch, 1);
    assert_eq!(from_id, "p1");
    assert_eq!(commit_result(&mut gina).await, (1, false));
    gina_dev.discard_pending_commit().expect("discard");
    let ev = gina_dev
        .process_message(&B64.decode(commit).expect("base64"), now())
        .expect("process");
    assert!(matches!(ev, Event::EpochChanged(_)), "{ev:?}");
    assert_eq!(
        gina_dev.security_code().expect("code"),
        olga_dev.security_code().expect("code")
    );
    let frame = olga_dev
        .encrypt_frame(StreamId::CAMERA, b"", b"hello council")
        .expect("encrypt");
    assert!(gina_dev.decrypt_frame(&frame, now()).is_ok());

    // Chat is an MLS application message: Gina's reaches Olga, who decrypts it; the server
    // relays ciphertext and tells Gina it was relayed.
    let text = "Vertraulich: Haushaltsentwurf, Seite 12";
    let sealed = gina_dev
        .encrypt_application(text.as_bytes())
        .expect("encrypt");
    gina.send(&ClientMsg::MlsChat {
        id: 1,
        epoch: 2,
        message: B64.encode(&sealed),
    })
    .await;
    let ServerMsg::MlsChat {
        epoch,
        message,
        from_id,
        ..
    } = olga.until(|m| matches!(m, ServerMsg::MlsChat { .. })).await
    else {
        unreachable!()
    };
    assert_eq!((epoch, from_id.as_str()), (2, gina_pid.as_str()));
    assert!(!message.contains(&B64.encode(text.as_bytes())[..16]));
    let (sender, data) = olga_dev
        .decrypt_application(&B64.decode(&message).expect("base64"))
        .expect("decrypt");
    assert_eq!((sender, data.as_slice()), (gina_leaf, text.as_bytes()));
    assert!(matches!(
        gina.until(|m| matches!(m, ServerMsg::MlsChatResult { .. }))
            .await,
        ServerMsg::MlsChatResult {
            id: 1,
            accepted: true
        }
    ));
    // Chat of an epoch that is over is not relayed; its author is told so.
    gina.send(&ClientMsg::MlsChat {
        id: 2,
        epoch: 1,
        message: B64.encode(&sealed),
    })
    .await;
    assert!(matches!(
        gina.until(|m| matches!(m, ServerMsg::MlsChatResult { .. }))
            .await,
        ServerMsg::MlsChatResult {
            id: 2,
            accepted: false
        }
    ));

    // Sam (staff, not invited) waits in the lobby; Olga admits him; his key package is pending
    // with Olga as the moderator who admitted him, and the policy does not name him.
    let (sam_http, sam_csrf) = srv.login("sam").await;
    let sam_dev = device(&srv, &sam_http, Some(&sam_csrf), json!({})).await;
    let mut sam = Client::connect(&srv, Some(&session_cookie(&srv, "sam").await)).await;
    admitted_from_lobby(&mut olga, &mut sam, &meeting, None).await;
    key_package(&mut sam, &sam_dev).await;
    let ServerMsg::MlsPending { joiners, policy } = olga.until(pending).await else {
        unreachable!()
    };
    assert_eq!(joiners[0].admitted_by.as_deref(), Some("p1"));
    let sam_id = &sam_dev.credential().credential.user_id;
    assert!(sam_id.starts_with("user:"), "{sam_id}");
    assert!(!policy.direct_user_ids.contains(sam_id));
    // A pending client cannot claim a leaf, nor chat.
    expect_error(
        &mut sam,
        &ClientMsg::MlsMember {
            leaf: 5,
            epoch: 2,
            signature: B64.encode([0u8; 64]),
            group_info: None,
        },
        ErrorCode::InvalidState,
    )
    .await;
    expect_error(
        &mut sam,
        &ClientMsg::MlsChat {
            id: 1,
            epoch: 2,
            message: B64.encode(b"not for the group"),
        },
        ErrorCode::Forbidden,
    )
    .await;

    // `admit` for someone already in the meeting hands a waiting joiner to this moderator (for
    // a joiner whose admitting moderator left); for a group member it is refused, and only
    // moderators may send it.
    olga.send(&ClientMsg::Admit {
        participant_id: joiners[0].participant_id.clone(),
    })
    .await;
    let ServerMsg::MlsPending { joiners: again, .. } = olga.until(pending).await else {
        unreachable!()
    };
    assert_eq!(again[0].admitted_by.as_deref(), Some("p1"));
    olga.send(&ClientMsg::Admit {
        participant_id: gina_pid.clone(),
    })
    .await;
    let ServerMsg::Error { code, message } =
        olga.until(|m| matches!(m, ServerMsg::Error { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(code, ErrorCode::InvalidState);
    assert!(message.contains("not waiting to be added"), "{message}");
    expect_error(
        &mut gina,
        &ClientMsg::Admit {
            participant_id: joiners[0].participant_id.clone(),
        },
        ErrorCode::Forbidden,
    )
    .await;

    // Gina leaves; Olga removes her leaf; Gina's device cannot read what follows.
    gina.send(&ClientMsg::Leave).await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantLeft { participant_id, .. } if *participant_id == gina_pid))
        .await;
    let r = olga_dev.remove(&[gina_leaf]).expect("remove");
    send_commit(&mut olga, 2, &r, &[]).await;
    assert_eq!(commit_result(&mut olga).await, (2, true));
    olga_dev.merge_pending_commit(now()).expect("merge");
    let frame = olga_dev
        .encrypt_frame(StreamId::CAMERA, b"", b"after the removal")
        .expect("encrypt");
    assert!(
        gina_dev.decrypt_frame(&frame, now()).is_err(),
        "a removed member must not decrypt frames of the next epoch"
    );
}

/// The next `mls_pending` with joiners: (participant id, admitted_by) of the first.
async fn first_pending(c: &mut Client) -> (String, Option<String>) {
    match c.until(pending).await {
        ServerMsg::MlsPending { joiners, .. } => (
            joiners[0].participant_id.clone(),
            joiners[0].admitted_by.clone(),
        ),
        _ => unreachable!(),
    }
}

/// Adds the first pending joiner: commit, result, merge, Welcome to the joiner.
async fn add_first_pending(
    adder: &mut Client,
    adder_dev: &mut Member,
    joiner: &mut Client,
    joiner_dev: &mut Member,
) {
    let ServerMsg::MlsPending { joiners, .. } = adder.until(pending).await else {
        unreachable!()
    };
    let epoch = adder_dev.epoch().expect("epoch");
    let kp = B64.decode(&joiners[0].key_package).expect("base64");
    let out = adder_dev.add(&[kp], now()).expect("add");
    send_commit(adder, epoch, &out, &[&joiners[0].participant_id]).await;
    assert_eq!(commit_result(adder).await, (epoch, true));
    adder_dev.merge_pending_commit(now()).expect("merge");
    let ServerMsg::MlsWelcome { welcome, epoch } = joiner
        .until(|m| matches!(m, ServerMsg::MlsWelcome { .. }))
        .await
    else {
        unreachable!()
    };
    joiner_dev
        .join_from_welcome(&B64.decode(welcome).expect("base64"), now())
        .expect("welcome");
    assert_eq!(joiner_dev.epoch().expect("epoch"), epoch);
    joiner
        .send(&claim(joiner_dev, &joiners[0].participant_id, false))
        .await;
}

/// Olga and Sam in the group of a new strict meeting (id `meeting_id`): Olga (organiser)
/// creates it, Sam (staff, not invited) comes through the lobby, Olga admits and adds him.
struct OlgaAndSam {
    srv: TestServer,
    meeting: String,
    olga: Client,
    olga_dev: Member,
    sam: Client,
    sam_pid: String,
    sam_dev: Member,
}

/// `person` (connected, not joined) joins `meeting` as `name` (or by its session), waits in
/// the lobby, and `moderator` admits them; returns their participant id.
async fn admitted_from_lobby(
    moderator: &mut Client,
    person: &mut Client,
    meeting: &str,
    name: Option<&str>,
) -> String {
    assert!(matches!(
        person.join(meeting, None, name).await,
        ServerMsg::LobbyWait { .. }
    ));
    let ServerMsg::LobbyChanged { lobby, .. } = moderator
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if !lobby.is_empty()))
        .await
    else {
        unreachable!()
    };
    moderator
        .send(&ClientMsg::Admit {
            participant_id: lobby[0].id.clone(),
        })
        .await;
    person
        .until(|m| matches!(m, ServerMsg::Joined { .. }))
        .await;
    lobby[0].id.clone()
}

async fn olga_and_sam(meeting_id: &str) -> OlgaAndSam {
    let OlgasGroup {
        srv,
        meeting,
        mut olga,
        mut olga_dev,
        ..
    } = olgas_group(meeting_id, "Ältestenrat").await;
    let (sam_http, sam_csrf) = srv.login("sam").await;
    let mut sam_dev = device(&srv, &sam_http, Some(&sam_csrf), json!({})).await;
    let mut sam = Client::connect(&srv, Some(&session_cookie(&srv, "sam").await)).await;
    let sam_pid = admitted_from_lobby(&mut olga, &mut sam, &meeting, None).await;
    key_package(&mut sam, &sam_dev).await;
    add_first_pending(&mut olga, &mut olga_dev, &mut sam, &mut sam_dev).await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == sam_pid && participant.leaf == Some(1)))
        .await;
    OlgaAndSam {
        srv,
        meeting,
        olga,
        olga_dev,
        sam,
        sam_pid,
        sam_dev,
    }
}

#[tokio::test]
async fn a_guest_whose_admitting_moderator_left_is_admitted_by_another() {
    // Olga admits Sam from the lobby, adds him, and makes him a moderator.
    let OlgaAndSam {
        srv,
        meeting,
        mut olga,
        mut sam,
        sam_pid,
        ..
    } = olga_and_sam("m2").await;
    olga.send(&ClientMsg::SetModerator {
        participant_id: sam_pid.clone(),
        moderator: true,
    })
    .await;
    sam.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == sam_pid && participant.role == klausur_proto::Role::Moderator))
        .await;

    // A guest without invitation waits in the lobby; Olga admits him and leaves before his
    // browser has sent its key package (or after, having reloaded: her client forgot him).
    let gus_dev = device(
        &srv,
        &srv.anonymous(),
        None,
        json!({"meeting_id": meeting, "display_name": "Gus Gast"}),
    )
    .await;
    let mut gus = Client::connect(&srv, None).await;
    let gus_pid = admitted_from_lobby(&mut olga, &mut gus, &meeting, Some("Gus Gast")).await;
    olga.send(&ClientMsg::Leave).await;
    sam.until(|m| matches!(m, ServerMsg::ParticipantLeft { participant_id, .. } if participant_id == "p1"))
        .await;

    // His key package is not tied to Olga any more: Sam's client sees him waiting for a
    // moderator, admits him, and is then the one to add him.
    key_package(&mut gus, &gus_dev).await;
    assert_eq!(first_pending(&mut sam).await, (gus_pid.clone(), None));
    sam.send(&ClientMsg::Admit {
        participant_id: gus_pid.clone(),
    })
    .await;
    assert_eq!(
        first_pending(&mut sam).await,
        (gus_pid.clone(), Some(sam_pid.clone()))
    );
}

#[tokio::test]
async fn a_commit_the_others_cannot_process_is_voided_over_the_websocket() {
    // (`_srv` keeps the server running to the end of the test.)
    let OlgaAndSam {
        srv: _srv,
        mut olga,
        mut olga_dev,
        mut sam,
        sam_pid,
        mut sam_dev,
        ..
    } = olga_and_sam("m3").await;

    // Garbage is refused outright now: it does not verify against the group's public state.
    sam.send(&ClientMsg::MlsCommit {
        epoch: 1,
        commit: B64.encode(b"not an MLS commit at all"),
        welcome: None,
        welcome_for: vec![],
    })
    .await;
    match sam.until(|m| matches!(m, ServerMsg::Error { .. })).await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::InvalidField);
            assert!(message.contains("does not verify"), "{message}");
        }
        _ => unreachable!(),
    }
    assert_eq!(commit_result(&mut sam).await, (1, false));

    // What the server cannot check: Sam commits a leaf update the server accepts, but Olga's
    // clock finds his credential expired (a member whose credential ran out): she cannot
    // process it.
    let update = sam_dev.update_own_leaf().expect("update");
    send_commit(&mut sam, 1, &update, &[]).await;
    assert_eq!(commit_result(&mut sam).await, (1, true));
    let ServerMsg::MlsCommit { epoch, commit, .. } = olga
        .until(|m| matches!(m, ServerMsg::MlsCommit { .. }))
        .await
    else {
        unreachable!()
    };
    let two_hours_on = now() + Duration::from_secs(2 * 3600);
    assert!(olga_dev
        .process_message(&B64.decode(commit).expect("base64"), two_hours_on)
        .is_err());
    // She says so; as the only other member she is the majority: the commit is voided.
    olga.send(&ClientMsg::MlsCommitRejected { epoch }).await;
    assert!(matches!(
        sam.until(|m| matches!(m, ServerMsg::MlsReset { .. })).await,
        ServerMsg::MlsReset { epoch: 1 }
    ));
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == sam_pid && participant.leaf.is_none()))
        .await;
    // The group and the server's view of it are back in epoch 1: Olga's own commit for it
    // verifies and wins.
    let update = olga_dev.update_own_leaf().expect("update");
    send_commit(&mut olga, 1, &update, &[]).await;
    assert_eq!(commit_result(&mut olga).await, (1, true));
    // Sam is no member any more until added again: he cannot chat.
    expect_error(
        &mut sam,
        &ClientMsg::MlsChat {
            id: 1,
            epoch: 2,
            message: B64.encode(b"x"),
        },
        ErrorCode::Forbidden,
    )
    .await;
}

/// Issue 19: an invited guest announced the organiser's MLS leaf as its own, the server relayed
/// it, and when the guest left, the other clients removed the organiser from the group. Now
/// the server refuses such a claim (and a commit removing a leaf whose holder is present); the
/// organiser's own claim, and the guest's claim of its own leaf, are accepted.
#[tokio::test]
async fn a_guest_cannot_claim_the_organisers_leaf_over_the_websocket() {
    let OlgasGroup {
        srv,
        meeting,
        olga_user_id,
        mut olga,
        olga_pid,
        mut olga_dev,
    } = olgas_group("m4", "Personalrat").await;
    let (_, gina_token) = srv
        .guest_invitation(
            &meeting,
            "Gina Gast",
            olga_user_id,
            chrono::Duration::hours(1),
        )
        .await;
    let mut gina_dev = device(
        &srv,
        &srv.anonymous(),
        None,
        json!({"invite_token": gina_token}),
    )
    .await;
    let mut gina = Client::connect(&srv, None).await;
    let gina_pid = joined_id(&gina.join(&meeting, Some(&gina_token), None).await);
    key_package(&mut gina, &gina_dev).await;
    let ServerMsg::MlsPending { joiners, .. } = olga.until(pending).await else {
        unreachable!()
    };
    let out = olga_dev
        .add(&[B64.decode(&joiners[0].key_package).expect("b64")], now())
        .expect("add");
    send_commit(&mut olga, 0, &out, &[&gina_pid]).await;
    assert_eq!(commit_result(&mut olga).await, (0, true));
    olga_dev.merge_pending_commit(now()).expect("merge");
    let ServerMsg::MlsWelcome { welcome, .. } = gina
        .until(|m| matches!(m, ServerMsg::MlsWelcome { .. }))
        .await
    else {
        unreachable!()
    };
    gina_dev
        .join_from_welcome(&B64.decode(welcome).expect("b64"), now())
        .expect("join");

    // Gina claims leaf 0, Olga's: signed by her own device key, and with Olga's claim copied.
    let mine = claim(&gina_dev, &gina_pid, false);
    let ClientMsg::MlsMember { signature, .. } = &mine else {
        unreachable!()
    };
    let theirs = claim(&olga_dev, &olga_pid, false);
    let ClientMsg::MlsMember {
        signature: olgas_signature,
        ..
    } = &theirs
    else {
        unreachable!()
    };
    for sig in [signature, olgas_signature] {
        gina.send(&ClientMsg::MlsMember {
            leaf: 0,
            epoch: 1,
            signature: sig.clone(),
            group_info: None,
        })
        .await;
        match gina.until(|m| matches!(m, ServerMsg::Error { .. })).await {
            ServerMsg::Error { code, message } => {
                assert_eq!(code, ErrorCode::Forbidden, "{message}");
                assert!(message.contains("leaf claim refused"), "{message}");
            }
            _ => unreachable!(),
        }
    }
    // Negative control: her claim of her own leaf is accepted, with her invitation's id; and
    // Olga still holds leaf 0 (her claim again changes nothing and is not refused).
    gina.send(&mine).await;
    let ServerMsg::ParticipantUpdated { participant } = olga
        .until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == gina_pid))
        .await
    else {
        unreachable!()
    };
    assert_eq!(participant.leaf, Some(1));
    assert!(
        participant
            .credential_user_id
            .as_deref()
            .is_some_and(|u| u.starts_with("invitation:")),
        "{participant:?}"
    );
    olga.send(&theirs).await;
    olga.send(&ClientMsg::Ping).await;
    let m = olga
        .until(|m| matches!(m, ServerMsg::Pong | ServerMsg::Error { .. }))
        .await;
    assert_eq!(m, ServerMsg::Pong, "Olga's own claim was refused");

    // Nor can Gina's client remove Olga, who is in the meeting, by a commit.
    let mut gina_dev = gina_dev;
    let rm = gina_dev.remove(&[0]).expect("remove");
    send_commit(&mut gina, 1, &rm, &[]).await;
    match gina.until(|m| matches!(m, ServerMsg::Error { .. })).await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("removes leaf 0"), "{message}");
        }
        _ => unreachable!(),
    }
    assert_eq!(commit_result(&mut gina).await, (1, false));
    gina_dev.discard_pending_commit().expect("discard");
    // Olga's commit for epoch 1 is next: the group did not move.
    let up = olga_dev.update_own_leaf().expect("update");
    send_commit(&mut olga, 1, &up, &[]).await;
    assert_eq!(commit_result(&mut olga).await, (1, true));
}

/// MLS key packages are bounded: five guests sending 8 MB/s made the server send 36 MB/s to
/// each member. A key package over 2 KiB is refused, and so is a fourth in a burst (code
/// `rate_limited`); a member's pending list keeps one entry per participant.
#[tokio::test]
async fn key_packages_are_bounded_in_size_and_rate() {
    let OlgasGroup {
        srv,
        meeting,
        olga_user_id,
        mut olga,
        ..
    } = olgas_group("m5", "Bauausschuss").await;
    let (_, token) = srv
        .guest_invitation(
            &meeting,
            "Gina Gast",
            olga_user_id,
            chrono::Duration::hours(1),
        )
        .await;
    let gina_dev = device(&srv, &srv.anonymous(), None, json!({"invite_token": token})).await;
    let mut gina = Client::connect(&srv, None).await;
    let gina_pid = joined_id(&gina.join(&meeting, Some(&token), None).await);

    // 8 MB, or just over 2 KiB: too large.
    let too_large = ClientMsg::MlsKeyPackage {
        key_package: B64.encode(vec![7u8; 2 * 1024 + 1]),
        continuity: None,
    };
    expect_error(&mut gina, &too_large, ErrorCode::TooLarge).await;
    // Negative control: her real key package (about 420 bytes) is relayed; so is a second one,
    // which replaces the first in the list.
    for _ in 0..2 {
        key_package(&mut gina, &gina_dev).await;
        let ServerMsg::MlsPending { joiners, .. } = olga.until(pending).await else {
            unreachable!()
        };
        assert_eq!(joiners.len(), 1, "one entry per participant");
        assert_eq!(joiners[0].participant_id, gina_pid);
        assert!(joiners[0].key_package.len() < 1024);
    }
    // That was three in a row: the fourth is refused.
    let kp = ClientMsg::MlsKeyPackage {
        key_package: B64.encode(gina_dev.key_package().expect("kp")),
        continuity: None,
    };
    gina.send(&kp).await;
    match gina.until(|m| matches!(m, ServerMsg::Error { .. })).await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(message.contains("too many key packages"), "{message}");
        }
        _ => unreachable!(),
    }
    // Olga heard of none of the refused ones.
    olga.send(&ClientMsg::Ping).await;
    let m = olga
        .until(|m| matches!(m, ServerMsg::Pong | ServerMsg::MlsPending { .. }))
        .await;
    assert_eq!(m, ServerMsg::Pong);
}
