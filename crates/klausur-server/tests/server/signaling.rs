//! The meeting WebSocket end to end (without media): joining, the lobby, moderation, and
//! bad input that must get an error reply while the connection carries on.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, JoinMethod, LobbyReason, Role as PRole, SecurityProfile,
    ServerMsg,
};
use klausur_store::Role;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common;
use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

async fn invite(srv: &TestServer, meeting: &str, name: &str, by: i64) -> String {
    srv.guest_invitation(meeting, name, by, chrono::Duration::hours(1))
        .await
        .1
}

struct Setup {
    srv: TestServer,
    meeting: String,
    olga_cookie: String,
    gina: String,
    hans: String,
}

async fn setup() -> Setup {
    setup_with(|_| {}).await
}

/// Like [`setup`], on a server whose configuration `adjust` changed.
async fn setup_with(adjust: impl FnOnce(&mut klausur_server::config::Config)) -> Setup {
    let srv = TestServer::start_with(adjust).await;
    let olga = srv.user("olga", Role::Staff).await;
    srv.user("sam", Role::Staff).await;
    let m = srv
        .store
        .create_meeting(
            "m1",
            "Hauptausschuss",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
    let gina = invite(&srv, &m.id, "Gina Gast", olga.id).await;
    let hans = invite(&srv, &m.id, "Hans Hinz", olga.id).await;
    let olga_cookie = session_cookie(&srv, "olga").await;
    Setup {
        srv,
        meeting: m.id,
        olga_cookie,
        gina,
        hans,
    }
}

/// The organiser Olga and the invited guest Gina in the meeting; Gina's participant id.
async fn olga_and_gina(s: &Setup) -> (Client, Client, String) {
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    olga.join(&s.meeting, None, None).await;
    let mut gina = Client::connect(&s.srv, None).await;
    let gina_id = joined_id(&gina.join(&s.meeting, Some(&s.gina), None).await);
    (olga, gina, gina_id)
}

fn joined_id(m: &ServerMsg) -> String {
    match m {
        ServerMsg::Joined { self_id, .. } => self_id.clone(),
        other => panic!("expected joined, got {other:?}"),
    }
}

#[tokio::test]
async fn organiser_and_invitees_join_and_are_shown_how() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    let j = olga.join(&s.meeting, None, None).await;
    let ServerMsg::Joined {
        participants,
        meeting,
        ..
    } = &j
    else {
        panic!("{j:?}")
    };
    assert_eq!(meeting.title, "Hauptausschuss");
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].role, PRole::Moderator);
    assert_eq!(participants[0].join_method, JoinMethod::StaffLogin);

    let mut gina = Client::connect(&s.srv, None).await;
    let j = gina.join(&s.meeting, Some(&s.gina), None).await;
    let ServerMsg::Joined { participants, .. } = &j else {
        panic!("{j:?}")
    };
    let me = participants
        .iter()
        .find(|p| p.display_name == "Gina Gast")
        .expect("listed");
    assert_eq!(
        me.join_method,
        JoinMethod::Invitation {
            invitee: "Gina Gast".into(),
            invited_by: "olga Name".into()
        }
    );
    assert_eq!(me.role, PRole::Participant);
    let n = olga
        .until(|m| matches!(m, ServerMsg::ParticipantJoined { .. }))
        .await;
    let ServerMsg::ParticipantJoined { participant } = n else {
        unreachable!()
    };
    assert_eq!(participant.display_name, "Gina Gast");

    // A staff member who is neither organiser, moderator nor invited waits in the strict profile.
    let sam_cookie = session_cookie(&s.srv, "sam").await;
    let mut sam = Client::connect(&s.srv, Some(&sam_cookie)).await;
    assert!(matches!(
        sam.join(&s.meeting, None, None).await,
        ServerMsg::LobbyWait { .. }
    ));
}

#[tokio::test]
async fn lobby_admit_and_deny() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined_id(&olga.join(&s.meeting, None, None).await);

    let mut anon = Client::connect(&s.srv, None).await;
    // Without invitation a name is required.
    let e = anon.join(&s.meeting, None, None).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::InvalidField,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        anon.join(&s.meeting, None, Some("Max Muster")).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lc = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, arrived } = lc else {
        unreachable!()
    };
    assert!(arrived);
    assert_eq!(lobby.len(), 1);
    assert_eq!(lobby[0].display_name, "Max Muster");
    assert_eq!(lobby[0].reason, LobbyReason::Profile);

    // A waiting person can do nothing but wait.
    anon.send(&ClientMsg::MlsChat {
        id: 1,
        epoch: 0,
        message: "aGFsbG8=".into(),
    })
    .await;
    assert!(matches!(
        anon.next().await,
        ServerMsg::Error {
            code: ErrorCode::NotJoined,
            ..
        }
    ));

    olga.send(&ClientMsg::Admit {
        participant_id: lobby[0].id.clone(),
    })
    .await;
    let j = anon.next().await;
    let ServerMsg::Joined { participants, .. } = &j else {
        panic!("{j:?}")
    };
    let max = participants
        .iter()
        .find(|p| p.display_name == "Max Muster")
        .expect("listed");
    assert_eq!(
        max.join_method,
        JoinMethod::Lobby {
            admitted_by: "olga Name".into()
        }
    );

    let (mut other, id) = waits_in_lobby(&s, &mut olga, "Eve").await;
    olga.send(&ClientMsg::Deny { participant_id: id }).await;
    assert!(matches!(
        other.next().await,
        ServerMsg::Ended {
            reason: EndReason::Denied,
            ..
        }
    ));
}

#[tokio::test]
async fn removed_invitee_returns_to_the_lobby_and_lock_holds_invitees() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined_id(&olga.join(&s.meeting, None, None).await);
    let mut gina = Client::connect(&s.srv, None).await;
    let gid = joined_id(&gina.join(&s.meeting, Some(&s.gina), None).await);

    olga.send(&ClientMsg::Remove {
        participant_id: gid.clone(),
    })
    .await;
    let e = gina.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    assert!(
        matches!(
            e,
            ServerMsg::Ended {
                reason: EndReason::Removed,
                ..
            }
        ),
        "{e:?}"
    );
    let left = olga
        .until(|m| matches!(m, ServerMsg::ParticipantLeft { .. }))
        .await;
    assert!(matches!(
        left,
        ServerMsg::ParticipantLeft {
            reason: klausur_proto::LeaveReason::Removed,
            ..
        }
    ));

    // The same link now leads to the lobby, marked as removed.
    let mut again = Client::connect(&s.srv, None).await;
    assert!(matches!(
        again.join(&s.meeting, Some(&s.gina), None).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lc = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lc else {
        unreachable!()
    };
    assert_eq!(lobby[0].reason, LobbyReason::Removed);
    assert_eq!(lobby[0].invitation.as_deref(), Some("Gina Gast"));
    // Admitting again lifts the removal.
    olga.send(&ClientMsg::Admit {
        participant_id: lobby[0].id.clone(),
    })
    .await;
    joined_id(&again.next().await);

    // Locked: an invited guest waits, with the reason.
    olga.send(&ClientMsg::Lock { locked: true }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { meeting } if meeting.locked))
        .await;
    let mut hans = Client::connect(&s.srv, None).await;
    assert!(matches!(
        hans.join(&s.meeting, Some(&s.hans), None).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lc = olga
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lc else {
        unreachable!()
    };
    assert_eq!(lobby[0].reason, LobbyReason::Locked);
    // The organiser still gets in while locked (from a second tab it replaces the first).
    let mut olga2 = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined_id(&olga2.join(&s.meeting, None, None).await);
    assert!(matches!(
        olga.until(|m| matches!(m, ServerMsg::Ended { .. })).await,
        ServerMsg::Ended {
            reason: EndReason::Replaced,
            ..
        }
    ));
}

#[tokio::test]
async fn moderation_is_for_moderators_and_mute_end_work() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    let oid = joined_id(&olga.join(&s.meeting, None, None).await);
    let mut gina = Client::connect(&s.srv, None).await;
    let gid = joined_id(&gina.join(&s.meeting, Some(&s.gina), None).await);

    for msg in [
        ClientMsg::Remove {
            participant_id: oid.clone(),
        },
        ClientMsg::Lock { locked: true },
        ClientMsg::Mute {
            participant_id: oid.clone(),
            muted: true,
        },
        ClientMsg::EndMeeting,
        ClientMsg::SetModerator {
            participant_id: gid.clone(),
            moderator: true,
        },
    ] {
        gina.send(&msg).await;
        let e = gina.until(|m| matches!(m, ServerMsg::Error { .. })).await;
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

    olga.send(&ClientMsg::Mute {
        participant_id: gid.clone(),
        muted: true,
    })
    .await;
    let u = gina
        .until(|m| matches!(m, ServerMsg::ParticipantUpdated { .. }))
        .await;
    let ServerMsg::ParticipantUpdated { participant } = u else {
        unreachable!()
    };
    assert!(participant.muted_by_moderator && participant.audio_muted);

    olga.send(&ClientMsg::SetModerator {
        participant_id: gid.clone(),
        moderator: true,
    })
    .await;
    gina.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.role == PRole::Moderator)).await;

    olga.send(&ClientMsg::EndMeeting).await;
    let e = gina.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    assert!(matches!(
        e,
        ServerMsg::Ended {
            reason: EndReason::EndedByModerator,
            ..
        }
    ));
    // An ended meeting cannot be joined again.
    let mut late = Client::connect(&s.srv, None).await;
    let e = late.join(&s.meeting, Some(&s.hans), None).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_meeting_carries_on() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    joined_id(&olga.join(&s.meeting, None, None).await);
    let mut gina = Client::connect(&s.srv, None).await;
    joined_id(&gina.join(&s.meeting, Some(&s.gina), None).await);

    let cases: Vec<(String, ErrorCode)> = vec![
        ("not json".into(), ErrorCode::Malformed),
        (r#"{"type":"bogus"}"#.into(), ErrorCode::UnknownType),
        (r#"{"type":"mls_chat"}"#.into(), ErrorCode::Malformed),
        // Chat is end-to-end encrypted: only members of the meeting's MLS group can send it.
        (
            r#"{"type":"mls_chat","id":1,"epoch":0,"message":"AAE="}"#.into(),
            ErrorCode::Forbidden,
        ),
        // The plaintext chat of earlier versions is gone.
        (
            r#"{"type":"chat","text":"hallo"}"#.into(),
            ErrorCode::UnknownType,
        ),
        (
            format!(
                r#"{{"type":"mls_chat","id":1,"epoch":0,"message":"{}"}}"#,
                "x".repeat(1_100_000)
            ),
            ErrorCode::TooLarge,
        ),
        (
            r#"{"type":"offer","sdp":"garbage","sources":[]}"#.into(),
            ErrorCode::InvalidField,
        ),
        // The offer of a large meeting is not "too large": 200 KB of SDP reaches the SDP parser.
        (
            format!(
                r#"{{"type":"offer","sdp":"{}","sources":[]}}"#,
                "a=x\\r\\n".repeat(40_000)
            ),
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"admit","participant_id":"p999"}"#.into(),
            ErrorCode::Forbidden,
        ),
        (
            r#"{"type":"join","meeting_id":"m1"}"#.into(),
            ErrorCode::InvalidState,
        ),
    ];
    for (text, code) in cases {
        gina.raw(&text).await;
        let e = gina.until(|m| matches!(m, ServerMsg::Error { .. })).await;
        let ServerMsg::Error { code: got, message } = e else {
            unreachable!()
        };
        assert_eq!(got, code, "{}: {message}", &text[..text.len().min(60)]);
        assert!(!message.is_empty());
    }
    // Still in the meeting: a change of her media state reaches the others.
    gina.send(&ClientMsg::MediaState {
        audio_muted: true,
        video_muted: false,
        screen_sharing: false,
    })
    .await;
    olga.until(|m| {
        matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.audio_muted && !participant.video_muted)
    })
    .await;

    // A flood is rate limited without dropping the connection.
    for _ in 0..100 {
        gina.raw(r#"{"type":"ping"}"#).await;
    }
    gina.until(|m| {
        matches!(
            m,
            ServerMsg::Error {
                code: ErrorCode::RateLimited,
                ..
            }
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gina.send(&ClientMsg::MediaState {
        audio_muted: true,
        video_muted: true,
        screen_sharing: false,
    })
    .await;
    olga.until(
        |m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.video_muted),
    )
    .await;
}

/// A browser-like offer made by str0m: its own microphone and camera, and `receive` recvonly
/// audio and video m-lines each.
fn offer_with(receive: usize) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    for _ in 0..receive {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    }
    let (offer, _) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

async fn offer_error(c: &mut Client, sdp: String) -> Option<String> {
    c.raw(&serde_json::json!({"type": "offer", "sdp": sdp, "sources": []}).to_string())
        .await;
    match c
        .until(|m| matches!(m, ServerMsg::Error { .. } | ServerMsg::Answer { .. }))
        .await
    {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::InvalidField, "{message}");
            Some(message)
        }
        _ => None,
    }
}

#[tokio::test]
async fn offers_beyond_the_m_line_limits_are_refused_and_the_participant_stays() {
    let s = setup().await;
    let (mut olga, mut gina, _) = olga_and_gina(&s).await;

    // Over the protocol's limit: refused at the WebSocket edge, before any SDP is parsed.
    let lines = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(klausur_proto::MAX_OFFER_M_LINES + 1);
    let e = offer_error(&mut gina, format!("v=0\r\n{lines}")).await;
    let e = e.expect("refused");
    assert!(e.contains("m-lines"), "{e}");

    // Over the meeting's limit: a meeting of two has no use for 120 receive m-lines.
    let e = offer_error(&mut gina, offer_with(60))
        .await
        .expect("refused");
    assert!(
        e.contains("m-lines") && e.contains("this meeting allows"),
        "{e}"
    );

    // The counterpart: an offer that fits the meeting is answered, and Gina is still in.
    assert_eq!(offer_error(&mut gina, offer_with(2)).await, None);
    gina.send(&ClientMsg::MediaState {
        audio_muted: true,
        video_muted: false,
        screen_sharing: false,
    })
    .await;
    olga.until(
        |m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.audio_muted),
    )
    .await;
}

#[tokio::test]
async fn invalid_invitations_are_refused() {
    let s = setup().await;
    let mut c = Client::connect(&s.srv, None).await;
    let e = c.join(&s.meeting, Some("forged-token"), None).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    let e = c.join("no-such-meeting", None, Some("X")).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
    // A revoked invitation is refused.
    let inv = s
        .srv
        .store
        .list_invitations(&s.meeting)
        .await
        .expect("list")[0]
        .id;
    s.srv
        .store
        .revoke_invitation(&s.meeting, inv, Utc::now())
        .await
        .expect("revoke");
    let e = c.join(&s.meeting, Some(&s.gina), None).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::NotFound,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn cross_origin_websocket_is_refused() {
    let s = setup().await;
    for (origin, ok) in [
        ("https://evil.example".to_string(), false),
        (format!("http://{}", s.srv.addr), true),
    ] {
        let mut req = format!("ws://{}/api/ws", s.srv.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("origin", origin.parse().expect("header"));
        req.headers_mut()
            .insert("cookie", s.olga_cookie.parse().expect("header"));
        let result = tokio_tungstenite::connect_async(req).await;
        assert_eq!(result.is_ok(), ok, "origin {origin}");
    }
}

/// The server pings every WebSocket. A client whose network went away (it answers nothing, not
/// even the pings) leaves the meeting after `ws_idle`; a client that is only quiet (it sends no
/// messages but its WebSocket layer answers the pings) stays.
#[tokio::test]
async fn a_client_that_stops_answering_pings_leaves_a_quiet_one_stays() {
    let s = setup_with(|c| {
        c.ws_keepalive = Duration::from_millis(200);
        c.ws_idle = Duration::from_millis(1200);
    })
    .await;
    // Before Gina's last frame: the server drops her no sooner than `ws_idle` after this. (The
    // time since the setup below would not do: on a loaded machine her last frame may lie well
    // before its end.)
    let before_gina = std::time::Instant::now();
    let (mut olga, gina, gina_id) = olga_and_gina(&s).await;
    let mut hans = Client::connect(&s.srv, None).await;
    let hans_id = joined_id(&hans.join(&s.meeting, Some(&s.hans), None).await);

    // Gina's socket is no longer read, so her side never answers a ping (a dead network); Hans
    // reads (his WebSocket layer answers the pings) but sends nothing himself; Olga reads.
    let started = std::time::Instant::now();
    let mut pings = 0;
    let left = loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "nobody left within 5 s"
        );
        tokio::select! {
            frame = olga.ws.next() => {
                let frame = frame
                    .expect("Olga's connection ended: the server dropped a client that reads")
                    .expect("frame");
                if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                    if let ServerMsg::ParticipantLeft { participant_id, .. } =
                        serde_json::from_str::<ServerMsg>(t.as_str()).expect("server message")
                    {
                        break (participant_id, before_gina.elapsed());
                    }
                }
            }
            frame = hans.ws.next() => {
                if let Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) = frame {
                    pings += 1;
                }
            }
        }
    };
    assert_eq!(
        left.0, gina_id,
        "the silent network leaves, not the quiet client"
    );
    assert!(
        left.1 >= Duration::from_millis(1200),
        "left {:?} after a time before her last frame, before the idle time",
        left.1
    );
    assert!(pings >= 3, "Hans got {pings} pings");

    // Hans stays beyond several idle times as long as his pongs come.
    let until = std::time::Instant::now() + Duration::from_millis(3000);
    while std::time::Instant::now() < until {
        tokio::select! {
            frame = olga.ws.next() => {
                let frame = frame.expect("open").expect("frame");
                if let tokio_tungstenite::tungstenite::Message::Text(t) = frame {
                    let msg: ServerMsg = serde_json::from_str(t.as_str()).expect("server message");
                    assert!(
                        !matches!(&msg, ServerMsg::ParticipantLeft { participant_id, .. } if *participant_id == hans_id),
                        "Hans was dropped although he answered the pings"
                    );
                }
            }
            frame = hans.ws.next() => {
                assert!(matches!(frame, Some(Ok(_))), "Hans's connection ended: {frame:?}");
            }
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
    gina.close().await;
}

/// Waits until no meeting actor runs any more (the last one closed after its people left).
async fn no_meeting_running(srv: &TestServer) {
    for _ in 0..100 {
        if srv.state.registry.running() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("a meeting actor is still running");
}

/// A moderator's lock outlives a restart of the server: invited guests who come back wait in
/// the lobby, also after a lobby that emptied again. It goes when the meeting empties after
/// people were in it.
#[tokio::test]
async fn a_lock_survives_a_restart_and_goes_when_the_meeting_empties() {
    let s = setup().await;
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    olga.join(&s.meeting, None, None).await;
    olga.send(&ClientMsg::Lock { locked: true }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { meeting } if meeting.locked))
        .await;

    // The restart: every meeting ends with `server_shutdown`.
    s.srv.state.registry.shutdown_all().await;
    assert!(matches!(
        olga.until(|m| matches!(m, ServerMsg::Ended { .. })).await,
        ServerMsg::Ended {
            reason: EndReason::ServerShutdown,
            ..
        }
    ));
    drop(olga);
    no_meeting_running(&s.srv).await;

    // Gina comes back first: locked, so the lobby. She gives up; the lock stays.
    let mut gina = Client::connect(&s.srv, None).await;
    assert!(matches!(
        gina.join(&s.meeting, Some(&s.gina), None).await,
        ServerMsg::LobbyWait { .. }
    ));
    gina.send(&ClientMsg::Leave).await;
    gina.close().await;
    no_meeting_running(&s.srv).await;
    let mut hans = Client::connect(&s.srv, None).await;
    assert!(matches!(
        hans.join(&s.meeting, Some(&s.hans), None).await,
        ServerMsg::LobbyWait { .. }
    ));

    // The organiser comes back into the locked meeting; then she and Hans leave.
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    let j = olga.join(&s.meeting, None, None).await;
    let ServerMsg::Joined { meeting, .. } = &j else {
        panic!("{j:?}")
    };
    assert!(meeting.locked, "the lock outlived the restart");
    olga.send(&ClientMsg::Leave).await;
    hans.send(&ClientMsg::Leave).await;
    drop((olga, hans));
    no_meeting_running(&s.srv).await;

    // The meeting emptied after people were in it: the next invited guest comes straight in.
    let mut gina = Client::connect(&s.srv, None).await;
    let j = gina.join(&s.meeting, Some(&s.gina), None).await;
    let ServerMsg::Joined { meeting, .. } = &j else {
        panic!("expected joined, got {j:?}")
    };
    assert!(!meeting.locked);
}

/// The own entry of a `joined` message.
fn own(joined: &ServerMsg) -> klausur_proto::Participant {
    let ServerMsg::Joined {
        self_id,
        participants,
        ..
    } = joined
    else {
        panic!("expected joined, got {joined:?}")
    };
    participants
        .iter()
        .find(|p| &p.id == self_id)
        .expect("listed")
        .clone()
}

/// A guest made moderator stays one across a reconnect with the same invitation, and comes in
/// directly even while the meeting is locked; taken back, it stays taken back.
#[tokio::test]
async fn a_guest_made_moderator_stays_one_when_coming_back() {
    let s = setup().await;
    let (mut olga, gina, gina_id) = olga_and_gina(&s).await;
    olga.send(&ClientMsg::SetModerator {
        participant_id: gina_id.clone(),
        moderator: true,
    })
    .await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == gina_id && participant.role == PRole::Moderator))
        .await;
    olga.send(&ClientMsg::Lock { locked: true }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { meeting } if meeting.locked))
        .await;

    // Her connection breaks; she comes back with her invitation: a moderator, not in the lobby.
    gina.close().await;
    let mut gina = Client::connect(&s.srv, None).await;
    let j = gina.join(&s.meeting, Some(&s.gina), None).await;
    assert_eq!(own(&j).role, PRole::Moderator);
    let gina_id = joined_id(&j);

    olga.send(&ClientMsg::SetModerator {
        participant_id: gina_id.clone(),
        moderator: false,
    })
    .await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == gina_id && participant.role == PRole::Participant))
        .await;
    olga.send(&ClientMsg::Lock { locked: false }).await;
    olga.until(|m| matches!(m, ServerMsg::MeetingChanged { meeting } if !meeting.locked))
        .await;
    gina.close().await;
    let mut gina = Client::connect(&s.srv, None).await;
    let j = gina.join(&s.meeting, Some(&s.gina), None).await;
    assert_eq!(own(&j).role, PRole::Participant);
}

/// The moderator mutes (or unmutes) a participant and waits until the meeting says so.
async fn moderator_mutes(moderator: &mut Client, participant_id: &str, muted: bool) {
    moderator
        .send(&ClientMsg::Mute {
            participant_id: participant_id.to_owned(),
            muted,
        })
        .await;
    moderator
        .until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == participant_id && participant.muted_by_moderator == muted))
        .await;
}

/// A participant a moderator muted is still muted after coming back with the same invitation
/// (a reconnect or a reload), until a moderator lifts it; others are not affected.
#[tokio::test]
async fn a_mute_by_a_moderator_holds_across_a_reconnect() {
    let s = setup().await;
    let (mut olga, gina, gina_id) = olga_and_gina(&s).await;
    moderator_mutes(&mut olga, &gina_id, true).await;

    gina.close().await;
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert!(
        me.muted_by_moderator && me.audio_muted,
        "Gina came back unmuted"
    );
    let gina_id = me.id;
    // Hans, never muted, is not.
    let mut hans = Client::connect(&s.srv, None).await;
    assert!(!own(&hans.join(&s.meeting, Some(&s.hans), None).await).muted_by_moderator);

    moderator_mutes(&mut olga, &gina_id, false).await;
    gina.close().await;
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert!(!me.muted_by_moderator, "the lifted mute came back");
}

/// A moderator's mute outlives a restart of the server, and goes when the meeting empties.
#[tokio::test]
async fn a_mute_survives_a_restart_and_goes_when_the_meeting_empties() {
    let s = setup().await;
    let (mut olga, gina, gina_id) = olga_and_gina(&s).await;
    moderator_mutes(&mut olga, &gina_id, true).await;

    s.srv.state.registry.shutdown_all().await;
    olga.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    drop((olga, gina));
    no_meeting_running(&s.srv).await;

    // Gina comes back first, into a new meeting actor: still muted. Hans never was.
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert!(
        me.muted_by_moderator && me.audio_muted,
        "the restart lifted Gina's mute"
    );
    let mut hans = Client::connect(&s.srv, None).await;
    assert!(!own(&hans.join(&s.meeting, Some(&s.hans), None).await).muted_by_moderator);

    // Everyone leaves: the meeting is over for now, and so is the mute.
    gina.send(&ClientMsg::Leave).await;
    hans.send(&ClientMsg::Leave).await;
    drop((gina, hans));
    no_meeting_running(&s.srv).await;
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert!(!me.muted_by_moderator, "the mute outlived the meeting");
}

/// The pass a `joined` gives (a guest admitted from the lobby), if any.
fn rejoin_token(joined: &ServerMsg) -> Option<String> {
    match joined {
        ServerMsg::Joined { rejoin_token, .. } => rejoin_token.clone(),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// Someone without invitation named `name` waits in the lobby; their client and lobby id, as
/// the moderator sees it.
async fn waits_in_lobby(s: &Setup, moderator: &mut Client, name: &str) -> (Client, String) {
    let mut c = Client::connect(&s.srv, None).await;
    assert!(matches!(
        c.join(&s.meeting, None, Some(name)).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lc = moderator
        .until(|m| matches!(m, ServerMsg::LobbyChanged { arrived: true, .. }))
        .await;
    let ServerMsg::LobbyChanged { lobby, .. } = lc else {
        unreachable!()
    };
    (c, lobby[0].id.clone())
}

/// Max waits in the lobby and Olga admits him; his `joined`.
async fn max_admitted(s: &Setup, olga: &mut Client) -> (Client, ServerMsg) {
    let (mut max, id) = waits_in_lobby(s, olga, "Max Muster").await;
    olga.send(&ClientMsg::Admit { participant_id: id }).await;
    let j = max.until(|m| matches!(m, ServerMsg::Joined { .. })).await;
    lobby_emptied(olga).await;
    (max, j)
}

/// The client (participant `pid`) asks to join the encrypted group, is told to create it, and
/// does as a browser would: a device key with a credential from the server's identity CA
/// (`body` as for `POST /api/identity/credential`, sent by `http` with `csrf`), the group, and
/// its claim of leaf 0 signed by that key, with the group's GroupInfo (the server accepts a
/// claim only from the leaf's device key, for a credential that is the participant's); its id.
async fn creates_the_group(
    s: &Setup,
    c: &mut Client,
    pid: &str,
    (http, csrf, body): (reqwest::Client, Option<String>, serde_json::Value),
) -> String {
    c.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAE=".into(),
        continuity: None,
    })
    .await;
    let ServerMsg::MlsCreateGroup { group_id } = c
        .until(|m| matches!(m, ServerMsg::MlsCreateGroup { .. }))
        .await
    else {
        unreachable!()
    };
    let mut member = common::mls::device(&s.srv, &http, csrf.as_deref(), body).await;
    member
        .create_group(group_id.as_bytes(), common::mls::now())
        .expect("create");
    c.send(&common::mls::claim(&member, pid, true)).await;
    let ServerMsg::ParticipantUpdated { participant } = c
        .until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.leaf == Some(0)))
        .await
    else {
        unreachable!()
    };
    participant.id
}

/// The `admitted_by` of `id` in an `mls_pending`, if it lists them.
fn pending_admitter(m: &ServerMsg, id: &str) -> Option<Option<String>> {
    match m {
        ServerMsg::MlsPending { joiners, .. } => joiners
            .iter()
            .find(|j| j.participant_id == id)
            .map(|j| j.admitted_by.clone()),
        _ => None,
    }
}

/// Coming back with `pass` leads to the lobby; the guest then gives up.
async fn pass_leads_to_the_lobby(s: &Setup, moderator: &mut Client, pass: &str) {
    let mut c = Client::connect(&s.srv, None).await;
    assert!(
        matches!(
            c.rejoin(&s.meeting, pass, "Max Muster").await,
            ServerMsg::LobbyWait { .. }
        ),
        "the pass still let him in"
    );
    c.send(&ClientMsg::Leave).await;
    lobby_emptied(moderator).await;
}

/// Waits until the moderator sees an empty lobby.
async fn lobby_emptied(moderator: &mut Client) {
    moderator
        .until(|m| matches!(m, ServerMsg::LobbyChanged { lobby, .. } if lobby.is_empty()))
        .await;
}

/// A guest let in from the lobby gets a pass: with it a broken connection or a restart brings
/// them straight back in, under the name, role and mute they had, shown as admitted by the
/// same moderator. Leaving on purpose, removal, expiry and the meeting emptying end it; an
/// unknown pass is nobody's.
#[tokio::test]
async fn a_lobby_guest_comes_back_with_the_pass() {
    let s = setup().await;
    let (mut olga, _gina, _) = olga_and_gina(&s).await;
    let (max, j) = max_admitted(&s, &mut olga).await;
    let pass = rejoin_token(&j).expect("a lobby guest gets a pass");
    let max_id = own(&j).id;
    moderator_mutes(&mut olga, &max_id, true).await;

    // The connection breaks; Max comes back with the pass (the name he sends does not count).
    drop(max);
    let mut max = Client::connect(&s.srv, None).await;
    let j = max.rejoin(&s.meeting, &pass, "Mallory").await;
    let me = own(&j);
    assert_eq!(me.display_name, "Max Muster");
    assert_eq!(me.kind, klausur_proto::ParticipantKind::Guest);
    assert_eq!(
        me.join_method,
        JoinMethod::Lobby {
            admitted_by: "olga Name".into()
        }
    );
    assert!(me.muted_by_moderator, "the reconnect lifted Max's mute");
    assert_eq!(rejoin_token(&j).as_deref(), Some(pass.as_str()));

    // Olga's client adds him to the encrypted group again, but only with a continuity proof.
    let ServerMsg::Joined { participants, .. } = &j else {
        unreachable!()
    };
    let olga_pid = participants
        .iter()
        .find(|p| p.organiser)
        .expect("Olga")
        .id
        .clone();
    let (olga_http, olga_csrf) = s.srv.login("olga").await;
    let olga_id = creates_the_group(
        &s,
        &mut olga,
        &olga_pid,
        (olga_http, Some(olga_csrf), serde_json::json!({})),
    )
    .await;
    let max_id = own(&j).id;
    max.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAI=".into(),
        continuity: None,
    })
    .await;
    let m = olga.until(|m| pending_admitter(m, &max_id).is_some()).await;
    assert_eq!(
        pending_admitter(&m, &max_id),
        Some(None),
        "without a proof nobody is named to add him"
    );
    let proof = klausur_proto::MlsContinuity {
        previous_key: "ab".repeat(32),
        signature: "A".repeat(86) + "==",
    };
    max.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAI=".into(),
        continuity: Some(proof.clone()),
    })
    .await;
    let m = olga
        .until(|m| pending_admitter(m, &max_id) == Some(Some(olga_id.clone())))
        .await;
    let ServerMsg::MlsPending { joiners, .. } = &m else {
        unreachable!()
    };
    assert_eq!(joiners[0].continuity.as_ref(), Some(&proof));

    // An unknown pass is nobody's: the lobby, under the name given.
    let mut eve = Client::connect(&s.srv, None).await;
    assert!(matches!(
        eve.rejoin(&s.meeting, "not-a-pass", "Eve").await,
        ServerMsg::LobbyWait { .. }
    ));
    eve.send(&ClientMsg::Leave).await;

    // A restart: Max comes back first, into a new actor, straight in and still muted.
    s.srv.state.registry.shutdown_all().await;
    olga.until(|m| matches!(m, ServerMsg::Ended { .. })).await;
    drop((olga, max, _gina, eve));
    no_meeting_running(&s.srv).await;
    // Gina is back first and starts the new group; then Max, whose proof waits for Olga.
    let mut gina = Client::connect(&s.srv, None).await;
    let gina_pid = joined_id(&gina.join(&s.meeting, Some(&s.gina), None).await);
    creates_the_group(
        &s,
        &mut gina,
        &gina_pid,
        (
            s.srv.anonymous(),
            None,
            serde_json::json!({"invite_token": s.gina}),
        ),
    )
    .await;
    let mut max = Client::connect(&s.srv, None).await;
    let j = max.rejoin(&s.meeting, &pass, "Max Muster").await;
    let me = own(&j);
    assert!(me.muted_by_moderator, "the restart lifted Max's mute");
    max.send(&ClientMsg::MlsKeyPackage {
        key_package: "AAI=".into(),
        continuity: Some(proof.clone()),
    })
    .await;
    let m = gina.until(|m| pending_admitter(m, &me.id).is_some()).await;
    assert_eq!(pending_admitter(&m, &me.id), Some(None));
    // Olga comes back: from now on her client is the one to add him.
    let mut olga = Client::connect(&s.srv, Some(&s.olga_cookie)).await;
    let olga_id = joined_id(&olga.join(&s.meeting, None, None).await);
    gina.until(|m| pending_admitter(m, &me.id) == Some(Some(olga_id.clone())))
        .await;
    gina.send(&ClientMsg::Leave).await;
    gina.close().await;

    // Made a moderator, he comes back as one.
    olga.send(&ClientMsg::SetModerator {
        participant_id: me.id.clone(),
        moderator: true,
    })
    .await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantUpdated { participant } if participant.id == me.id && participant.role == PRole::Moderator))
        .await;
    drop(max);
    let mut max = Client::connect(&s.srv, None).await;
    let me = own(&max.rejoin(&s.meeting, &pass, "Max Muster").await);
    assert_eq!(me.role, PRole::Moderator, "the role was lost");

    // Leaving on purpose gives the pass up: next time it is the lobby.
    max.send(&ClientMsg::Leave).await;
    drop(max);
    pass_leads_to_the_lobby(&s, &mut olga, &pass).await;

    // A new pass; it ends when it expires (two minutes after a connection broke).
    let (max, j) = max_admitted(&s, &mut olga).await;
    let pass = rejoin_token(&j).expect("pass");
    drop(max);
    // The server notices the broken connection and gives the pass two minutes.
    let mut stored = None;
    for _ in 0..100 {
        let p = s
            .srv
            .store
            .guest_pass_by_token_hash(&klausur_server::auth::token_hash(&pass))
            .await
            .expect("store")
            .expect("the pass is kept after a broken connection");
        if p.expires_at - Utc::now() <= chrono::Duration::minutes(2) {
            stored = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stored.expect("the pass still runs for hours after the connection broke");
    assert!(stored.expires_at - Utc::now() > chrono::Duration::minutes(1));
    s.srv
        .store
        .set_guest_pass_expiry(stored.id, Utc::now() - chrono::Duration::seconds(1))
        .await
        .expect("store");
    pass_leads_to_the_lobby(&s, &mut olga, &pass).await;

    // Removed by a moderator: the pass is gone.
    let (max, j) = max_admitted(&s, &mut olga).await;
    let pass = rejoin_token(&j).expect("pass");
    olga.send(&ClientMsg::Remove {
        participant_id: own(&j).id,
    })
    .await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantLeft { .. }))
        .await;
    drop(max);
    pass_leads_to_the_lobby(&s, &mut olga, &pass).await;

    // The meeting empties: every pass goes with it.
    let (max, j) = max_admitted(&s, &mut olga).await;
    let pass = rejoin_token(&j).expect("pass");
    drop(max);
    olga.send(&ClientMsg::Leave).await;
    drop(olga);
    no_meeting_running(&s.srv).await;
    assert_eq!(
        s.srv
            .store
            .guest_pass_by_token_hash(&klausur_server::auth::token_hash(&pass))
            .await
            .expect("store"),
        None,
        "the pass outlived the meeting"
    );
}

/// Raised hands: everyone sees them with the time they went up (the order of requests to
/// speak); raising twice keeps the place; a participant lowers only their own, a moderator
/// anyone's.
#[tokio::test]
async fn raised_hands_are_shown_in_order_and_lowered_by_moderators() {
    let s = setup().await;
    let (mut olga, mut gina, gina_id) = olga_and_gina(&s).await;
    let mut hans = Client::connect(&s.srv, None).await;
    let hans_id = joined_id(&hans.join(&s.meeting, Some(&s.hans), None).await);
    let hand = |m: &ServerMsg, id: &str| match m {
        ServerMsg::ParticipantUpdated { participant } if participant.id == id => {
            Some(participant.hand_raised_at)
        }
        _ => None,
    };

    gina.send(&ClientMsg::RaiseHand { raised: true }).await;
    let m = olga.until(|m| hand(m, &gina_id).is_some()).await;
    let gina_at = hand(&m, &gina_id).flatten().expect("Gina's hand is up");
    tokio::time::sleep(Duration::from_millis(5)).await;
    hans.send(&ClientMsg::RaiseHand { raised: true }).await;
    let m = olga.until(|m| hand(m, &hans_id).is_some()).await;
    let hans_at = hand(&m, &hans_id).flatten().expect("Hans's hand is up");
    assert!(gina_at < hans_at, "the order of the hands is lost");
    // Raising again keeps Gina's place (no update goes out); Hans sees the same as Olga.
    gina.send(&ClientMsg::RaiseHand { raised: true }).await;
    let m = hans.until(|m| hand(m, &hans_id).is_some()).await;
    assert_eq!(hand(&m, &hans_id), Some(Some(hans_at)));

    // Hans cannot lower Gina's hand; a moderator can.
    hans.send(&ClientMsg::LowerHand {
        participant_id: gina_id.clone(),
    })
    .await;
    assert!(matches!(
        hans.until(|m| matches!(m, ServerMsg::Error { .. })).await,
        ServerMsg::Error {
            code: ErrorCode::Forbidden,
            ..
        }
    ));
    olga.send(&ClientMsg::LowerHand {
        participant_id: gina_id.clone(),
    })
    .await;
    // The next change of Gina's hand Olga sees is this one: raising again sent nothing.
    let m = olga.until(|m| hand(m, &gina_id).is_some()).await;
    assert_eq!(
        hand(&m, &gina_id),
        Some(None),
        "raising again moved the hand"
    );
    gina.until(|m| hand(m, &gina_id) == Some(None)).await;
    // Hans lowers his own.
    hans.send(&ClientMsg::RaiseHand { raised: false }).await;
    olga.until(|m| hand(m, &hans_id) == Some(None)).await;
    // Lowering someone not in the meeting is an error, and the meeting carries on.
    olga.send(&ClientMsg::LowerHand {
        participant_id: "p999".into(),
    })
    .await;
    assert!(matches!(
        olga.until(|m| matches!(m, ServerMsg::Error { .. })).await,
        ServerMsg::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    gina.send(&ClientMsg::RaiseHand { raised: true }).await;
    let m = olga.until(|m| hand(m, &gina_id).is_some()).await;
    let again = hand(&m, &gina_id).flatten().expect("up again");
    assert!(again > hans_at);

    // Her connection breaks: she comes back with her hand still up, in the same place.
    gina.close().await;
    olga.until(|m| matches!(m, ServerMsg::ParticipantLeft { participant_id, .. } if *participant_id == gina_id))
        .await;
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert_eq!(
        me.hand_raised_at,
        Some(again),
        "the reconnect lost her place"
    );
    // Leaving on purpose takes the hand down for good.
    gina.send(&ClientMsg::Leave).await;
    gina.close().await;
    let mut gina = Client::connect(&s.srv, None).await;
    let me = own(&gina.join(&s.meeting, Some(&s.gina), None).await);
    assert_eq!(me.hand_raised_at, None, "the hand outlived leaving");
}
