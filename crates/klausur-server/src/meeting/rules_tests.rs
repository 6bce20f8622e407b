//! The meeting's rules in simulated time: each test drives [`Meeting`] with inputs, answers its
//! requests as a driver would, and checks the outputs and their order.

use std::time::{Duration, Instant};

use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, JoinMethod, LobbyReason, ParticipantKind, Role,
    SecurityProfile, ServerMsg,
};
use klausur_room::PeerId;
use klausur_store::BanSubject;

use super::*;

fn seed() -> MeetingSeed {
    MeetingSeed {
        id: "m1".into(),
        title: "Rat".into(),
        organiser: "Olga".into(),
        organiser_id: 1,
        profile: SecurityProfile::Strict,
        dial_in: false,
    }
}

fn staff(uid: i64, name: &str, moderator: bool) -> Standing {
    Standing {
        display_name: name.into(),
        kind: ParticipantKind::Staff,
        moderator,
        direct: Some(JoinMethod::StaffLogin),
        banned: false,
        ban_subject: Some(BanSubject::User(uid)),
        user_id: Some(uid),
        invitation: None,
        pass: None,
        admitter: None,
        phone: None,
        seat_token: None,
    }
}

/// A guest with neither account nor invitation: waits in the lobby.
fn guest(name: &str) -> Standing {
    Standing {
        display_name: name.into(),
        kind: ParticipantKind::Guest,
        moderator: false,
        direct: None,
        banned: false,
        ban_subject: None,
        user_id: None,
        invitation: None,
        pass: None,
        admitter: None,
        phone: None,
        seat_token: None,
    }
}

/// Drives a meeting as its driver would: answers requests at once, keeps everything else.
struct Sim {
    m: Meeting,
    now: Now,
    out: Vec<Output>,
    requests: Vec<Request>,
    media_ok: bool,
    pass_ok: bool,
    next_pass: i64,
}

impl Sim {
    fn new(locked: bool) -> Sim {
        Sim {
            m: Meeting::new(seed(), locked, []),
            now: Now {
                mono: Instant::now(),
                wall: chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("present"),
            },
            out: Vec::new(),
            requests: Vec::new(),
            media_ok: true,
            pass_ok: true,
            next_pass: 100,
        }
    }

    fn run(&mut self) {
        while let Some(o) = self.m.poll_output() {
            match o {
                Output::Request(r) => {
                    self.requests.push(r.clone());
                    let answer = match r {
                        Request::AddMediaPeer(peer) => Input::MediaAdded {
                            peer,
                            ok: self.media_ok,
                        },
                        Request::GuestPass { peer, .. } => {
                            self.next_pass += 1;
                            Input::GuestPass {
                                peer,
                                pass: self.pass_ok.then(|| Pass {
                                    id: self.next_pass,
                                    token: format!("pass{}", self.next_pass),
                                    muted: false,
                                }),
                            }
                        }
                        Request::Policy => Input::Policy {
                            direct_user_ids: Vec::new(),
                        },
                    };
                    self.m.handle(self.now, answer);
                }
                other => self.out.push(other),
            }
        }
    }

    fn input(&mut self, input: Input) {
        self.m.handle(self.now, input);
        self.run();
    }

    fn join(&mut self, standing: Standing) -> PeerId {
        let peer = self.m.allocate_peer();
        self.input(Input::Join {
            peer,
            standing,
            token: format!("seat{peer}"),
        });
        peer
    }

    fn msg(&mut self, peer: PeerId, msg: ClientMsg) {
        self.input(Input::Msg { peer, msg });
    }

    fn advance(&mut self, by: Duration) {
        self.now.mono += by;
        self.now.wall += chrono::Duration::from_std(by).expect("present");
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }
}

fn sent_to(out: &[Output], peer: PeerId) -> Vec<&ServerMsg> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p, msg) if *p == peer => Some(msg),
            _ => None,
        })
        .collect()
}

fn audit_kinds(out: &[Output]) -> Vec<String> {
    out.iter()
        .filter_map(|o| match o {
            Output::Audit(e) => Some(e.record().kind.clone()),
            _ => None,
        })
        .collect()
}

fn error_code(msg: &ServerMsg) -> Option<ErrorCode> {
    match msg {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[test]
fn joining_asks_for_media_first_and_a_failure_keeps_them_out() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    assert_eq!(sim.requests, vec![Request::AddMediaPeer(olga)]);
    assert!(sim.m.is_member(olga));
    let out = sim.take();
    assert!(matches!(
        sent_to(&out, olga)[..],
        [ServerMsg::Joined { .. }]
    ));
    // Recorded before anyone is told.
    let audit_at = out
        .iter()
        .position(|o| matches!(o, Output::Audit(_)))
        .expect("present");
    let joined_at = out
        .iter()
        .position(|o| matches!(o, Output::Send(..)))
        .expect("present");
    assert!(audit_at < joined_at);

    sim.media_ok = false;
    let bert = sim.join(staff(2, "Bert", false));
    let out = sim.take();
    assert!(!sim.m.is_member(bert) && !sim.m.is_waiting(bert));
    assert_eq!(
        sent_to(&out, bert)
            .iter()
            .map(|m| error_code(m))
            .collect::<Vec<_>>(),
        vec![Some(ErrorCode::Internal)]
    );
    assert!(
        sent_to(&out, olga).is_empty(),
        "Olga was told of a join that failed"
    );
    assert!(audit_kinds(&out).is_empty());
}

#[test]
fn inputs_wait_while_a_command_waits_for_its_answer() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    sim.take();
    // Bert's join waits for the media peer; Olga's lock comes meanwhile.
    let bert = sim.m.allocate_peer();
    sim.m.handle(
        sim.now,
        Input::Join {
            peer: bert,
            standing: staff(2, "Bert", false),
            token: "t".into(),
        },
    );
    assert!(sim.m.suspended());
    sim.m.handle(
        sim.now,
        Input::Msg {
            peer: olga,
            msg: ClientMsg::Lock { locked: true },
        },
    );
    assert!(
        !sim.m.locked(),
        "the lock went ahead of the join it came after"
    );
    let mut early = Vec::new();
    while let Some(o) = sim.m.poll_output() {
        early.push(o);
    }
    assert!(matches!(early[..], [Output::Request(Request::AddMediaPeer(p))] if p == bert));
    sim.input(Input::MediaAdded {
        peer: bert,
        ok: true,
    });
    assert!(sim.m.locked() && sim.m.is_member(bert));
    // Bert is in before the lock, and told of it.
    let out = sim.take();
    let to_bert = sent_to(&out, bert);
    assert!(matches!(to_bert[0], ServerMsg::Joined { .. }));
    assert!(matches!(to_bert[1], ServerMsg::MeetingChanged { meeting } if meeting.locked));
}

#[test]
fn only_moderators_change_the_meeting() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let bert = sim.join(staff(2, "Bert", false));
    let carl = sim.join(staff(3, "Carl", false));
    let gast = sim.join(guest("Gast"));
    sim.take();
    let commands = [
        ClientMsg::Lock { locked: true },
        ClientMsg::Remove {
            participant_id: participant_id(carl),
        },
        ClientMsg::Admit {
            participant_id: participant_id(gast),
        },
        ClientMsg::Deny {
            participant_id: participant_id(gast),
        },
        ClientMsg::Mute {
            participant_id: participant_id(carl),
            muted: true,
        },
        ClientMsg::SetModerator {
            participant_id: participant_id(bert),
            moderator: true,
        },
        ClientMsg::EndMeeting,
    ];
    for cmd in commands {
        let name = cmd.type_name();
        sim.msg(bert, cmd);
        let out = sim.take();
        assert!(
            matches!(&out[..], [Output::Send(p, ServerMsg::Error { code: ErrorCode::Forbidden, .. })] if *p == bert),
            "{name} from a participant: {out:?}"
        );
    }
    assert!(!sim.m.locked() && sim.m.is_member(carl) && sim.m.is_waiting(gast));
    assert!(!sim.m.is_moderator(bert));
    // The negative control: the moderator's lock does change it.
    sim.msg(olga, ClientMsg::Lock { locked: true });
    assert!(sim.m.locked());
    assert_eq!(audit_kinds(&sim.take()), vec!["meeting.locked"]);
}

#[test]
fn a_removed_participant_is_banned_and_comes_back_only_through_the_lobby() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let bert = sim.join(staff(2, "Bert", false));
    sim.take();
    sim.msg(
        olga,
        ClientMsg::Remove {
            participant_id: participant_id(bert),
        },
    );
    assert!(!sim.m.is_member(bert));
    let out = sim.take();
    assert_eq!(
        audit_kinds(&out),
        vec!["participant.removed", "participant.left"]
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Store(StoreOp::AddBan {
            subject: BanSubject::User(2),
            ..
        })
    )));
    assert!(matches!(
        sent_to(&out, bert)[..],
        [ServerMsg::Ended {
            reason: EndReason::Removed,
            ..
        }]
    ));
    // The removal is recorded before Bert or anyone else is told.
    let first_send = out
        .iter()
        .position(|o| matches!(o, Output::Send(..)))
        .expect("present");
    assert!(matches!(out[0], Output::Audit(_)) && first_send > 0);
    // Back with the ban the database now holds: the lobby, as "removed".
    let mut banned = staff(2, "Bert", false);
    banned.banned = true;
    let again = sim.join(banned);
    assert!(sim.m.is_waiting(again) && !sim.m.is_member(again));
    let out = sim.take();
    assert!(sent_to(&out, olga).iter().any(|m| matches!(m,
        ServerMsg::LobbyChanged { lobby, .. } if lobby[0].reason == LobbyReason::Removed)));
    // The organiser cannot be removed, not even by another moderator.
    let mod2 = sim.join(staff(4, "Dora", true));
    sim.take();
    sim.msg(
        mod2,
        ClientMsg::Remove {
            participant_id: participant_id(olga),
        },
    );
    assert!(sim.m.is_member(olga));
}

#[test]
fn lobby_lists_reach_moderators_at_most_every_interval() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    sim.take();
    let first = sim.join(guest("G1"));
    let lists = |out: &[Output]| {
        sent_to(out, olga)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::LobbyChanged { lobby, .. } => Some(lobby.len()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(lists(&sim.take()), vec![1]);
    let due = sim.m.poll_timeout();
    assert!(due.is_none(), "nothing held back yet");
    for i in 0..5 {
        sim.advance(Duration::from_millis(50));
        sim.join(guest(&format!("G{i}")));
    }
    assert_eq!(
        lists(&sim.take()),
        Vec::<usize>::new(),
        "a list per arrival"
    );
    let due = sim.m.poll_timeout().expect("a list held back");
    assert_eq!(
        due,
        sim.now.mono - Duration::from_millis(250) + LOBBY_NOTICE_INTERVAL
    );
    sim.advance(Duration::from_millis(250));
    sim.m.handle_timeout(sim.now);
    sim.run();
    assert_eq!(lists(&sim.take()), vec![6]);
    assert!(sim.m.poll_timeout().is_none());
    assert!(sim.m.is_waiting(first));
}

#[test]
fn an_admitted_guest_gets_a_pass_or_comes_in_without_one() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let gast = sim.join(guest("Gast"));
    sim.take();
    sim.msg(
        olga,
        ClientMsg::Admit {
            participant_id: participant_id(gast),
        },
    );
    assert!(sim.m.is_member(gast));
    let Some(Request::GuestPass { pass, .. }) = sim
        .requests
        .iter()
        .find(|r| matches!(r, Request::GuestPass { .. }))
    else {
        panic!("no pass asked for");
    };
    assert_eq!(pass.admitted_by, "Olga");
    assert_eq!(pass.admitter, Some(BanSubject::User(1)));
    let out = sim.take();
    assert_eq!(
        audit_kinds(&out),
        vec!["lobby.admitted", "participant.joined"]
    );
    assert!(
        matches!(sent_to(&out, gast)[..], [ServerMsg::Joined { rejoin_token: Some(t), .. }] if t == "pass101")
    );
    // The store fails: admitted all the same, without a pass to come back with.
    sim.pass_ok = false;
    let other = sim.join(guest("Other"));
    sim.take();
    sim.msg(
        olga,
        ClientMsg::Admit {
            participant_id: participant_id(other),
        },
    );
    assert!(sim.m.is_member(other));
    let out = sim.take();
    assert!(matches!(
        sent_to(&out, other)[..],
        [ServerMsg::Joined {
            rejoin_token: None,
            ..
        }]
    ));
    assert!(sent_to(&out, olga).iter().any(|m| matches!(m, ServerMsg::ParticipantJoined { participant } if participant.role == Role::Participant)));
}

#[test]
fn an_emptied_meeting_forgets_its_lock_and_a_shutdown_keeps_it() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    sim.msg(olga, ClientMsg::Lock { locked: true });
    sim.msg(olga, ClientMsg::Leave);
    assert_eq!(sim.m.life(), Life::Empty);
    sim.take();
    sim.m.close();
    sim.run();
    let stored: Vec<StoreOp> = sim
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Output::Store(op) => Some(op),
            _ => None,
        })
        .collect();
    assert_eq!(
        stored,
        vec![
            StoreOp::Locked(false),
            StoreOp::ClearMutes,
            StoreOp::ClearPasses
        ]
    );

    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    sim.msg(olga, ClientMsg::Lock { locked: true });
    sim.input(Input::Shutdown);
    assert_eq!(sim.m.life(), Life::Over);
    sim.take();
    sim.m.close();
    sim.run();
    assert!(sim.take().is_empty(), "a shutdown cleared stored state");
    // Nothing is taken after the end.
    sim.input(Input::Msg {
        peer: olga,
        msg: ClientMsg::Ping,
    });
    assert!(sim.take().is_empty());
}

#[test]
fn joined_carries_turn_credentials_from_the_join_time_only_with_turn() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let out = sim.take();
    assert!(matches!(
        sent_to(&out, olga)[..],
        [ServerMsg::Joined { ice_servers, .. }] if ice_servers.is_empty()
    ));

    let turn = crate::turn::TurnConfig {
        urls: vec!["turns:turn.example:443?transport=tcp".into()],
        secret: b"a-secret-shared-with-coturn".to_vec(),
        credential_lifetime: Duration::from_secs(600),
    };
    let mut sim = Sim::new(false);
    sim.m = Meeting::new(seed(), false, []).with_turn(Some(std::sync::Arc::new(turn.clone())));
    let olga = sim.join(staff(1, "Olga", true));
    let out = sim.take();
    let [ServerMsg::Joined {
        self_id,
        ice_servers,
        ..
    }] = &sent_to(&out, olga)[..]
    else {
        panic!("joined expected");
    };
    // Valid for the lifetime from the wall-clock time of the join (the simulation's).
    let expected = turn.credentials(self_id, 1_800_000_000);
    assert_eq!(expected.username, format!("1800000600:{self_id}"));
    assert_eq!(ice_servers, &vec![expected]);
}

#[test]
fn a_member_whose_media_the_room_dropped_is_told_at_once() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let paul = sim.join(staff(2, "Paul", false));
    sim.take();
    // Media that never connected: the client sees its own connection fail, nothing is said
    // (being told would make it join again and again).
    sim.input(Input::Room(klausur_room::RoomEvent::Disconnected(paul)));
    assert!(sent_to(&sim.take(), paul).is_empty());
    sim.input(Input::Room(klausur_room::RoomEvent::Connected(paul)));
    sim.input(Input::Room(klausur_room::RoomEvent::Disconnected(paul)));
    let out = sim.take();
    assert_eq!(sent_to(&out, paul), vec![&ServerMsg::MediaLost]);
    // Nobody else hears of it, and Paul stays in the meeting until his client leaves.
    assert!(sent_to(&out, olga).is_empty(), "{out:?}");
    assert!(sim.m.is_member(paul));
    // Told once per connection; a peer that is no member (already gone) is not told anything.
    sim.input(Input::Room(klausur_room::RoomEvent::Disconnected(paul)));
    assert!(sent_to(&sim.take(), paul).is_empty());
    sim.input(Input::Room(klausur_room::RoomEvent::Connected(paul)));
    sim.msg(paul, ClientMsg::Leave);
    sim.take();
    sim.input(Input::Room(klausur_room::RoomEvent::Disconnected(paul)));
    assert!(sent_to(&sim.take(), paul).is_empty());
}

/// The `spotlight` of the last `meeting_changed` sent to `peer` in `out` (`None`: none sent).
fn spotlight_told(out: &[Output], peer: PeerId) -> Option<Option<String>> {
    sent_to(out, peer).into_iter().rev().find_map(|m| match m {
        ServerMsg::MeetingChanged { meeting } => Some(meeting.spotlight.clone()),
        _ => None,
    })
}

#[test]
fn a_moderator_shows_someone_large_to_everyone_while_they_are_there_and_again_when_they_come_back()
{
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let ines = sim.join(staff(2, "Ines", false));
    let bert = sim.join(staff(3, "Bert", false));
    sim.take();
    let show = |id: Option<String>| ClientMsg::Spotlight { participant_id: id };

    // Not a participant's to decide.
    sim.msg(bert, show(Some(participant_id(ines))));
    let out = sim.take();
    assert!(
        matches!(&out[..], [Output::Send(p, ServerMsg::Error { code: ErrorCode::Forbidden, .. })] if *p == bert),
        "{out:?}"
    );

    // The moderator shows Ines large: everyone is told, and it is recorded.
    sim.msg(olga, show(Some(participant_id(ines))));
    let out = sim.take();
    for p in [olga, ines, bert] {
        assert_eq!(spotlight_told(&out, p), Some(Some(participant_id(ines))));
    }
    assert_eq!(audit_kinds(&out), vec!["meeting.spotlight"]);

    // Nobody of that id: an error to the moderator, nothing changes.
    sim.msg(olga, show(Some("p999".into())));
    let out = sim.take();
    assert!(sent_to(&out, olga).iter().any(|m| error_code(m).is_some()));
    assert_eq!(spotlight_told(&out, bert), None);
    assert!(audit_kinds(&out).is_empty());

    // Ines goes: nobody is shown large. She comes back (a new connection): large again.
    sim.msg(ines, ClientMsg::Leave);
    let out = sim.take();
    assert_eq!(spotlight_told(&out, bert), Some(None));
    let ines_again = sim.join(staff(2, "Ines", false));
    let out = sim.take();
    assert_eq!(
        spotlight_told(&out, bert),
        Some(Some(participant_id(ines_again)))
    );

    // Someone arriving now learns it from `joined`.
    let carl = sim.join(staff(4, "Carl", false));
    let out = sim.take();
    assert!(
        matches!(sent_to(&out, carl)[0], ServerMsg::Joined { meeting, .. } if meeting.spotlight == Some(participant_id(ines_again)))
    );

    // Nobody any more.
    sim.msg(olga, show(None));
    let out = sim.take();
    assert_eq!(spotlight_told(&out, carl), Some(None));
    assert_eq!(audit_kinds(&out), vec!["meeting.spotlight"]);
}

#[test]
fn a_server_being_taken_out_of_service_tells_everyone_when_the_meeting_is_interrupted() {
    let mut sim = Sim::new(false);
    let olga = sim.join(staff(1, "Olga", true));
    let gast = sim.join(guest("Gast"));
    sim.take();
    let maintenance = |out: &[Output], peer| -> Vec<u64> {
        sent_to(out, peer)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::Maintenance { in_ms } => Some(*in_ms),
                _ => None,
            })
            .collect()
    };
    // Nothing is said before.
    let bernd = sim.join(staff(2, "Bernd", false));
    assert!(maintenance(&sim.take(), bernd).is_empty());

    let at = sim.now.mono + Duration::from_secs(600);
    sim.input(Input::Maintenance { at });
    let out = sim.take();
    // Everyone in the meeting and in the lobby, once, with the time left; nothing else.
    for peer in [olga, bernd, gast] {
        assert_eq!(maintenance(&out, peer), vec![600_000], "peer {peer}");
    }
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(sim.m.life(), Life::Running, "the meeting goes on");

    // Someone arriving later hears it right after `joined`, with the time left then; a
    // guest right after `lobby_wait`.
    sim.advance(Duration::from_secs(240));
    let clara = sim.join(staff(3, "Clara", false));
    let out = sim.take();
    let to_clara = sent_to(&out, clara);
    let joined = (to_clara.iter())
        .position(|m| matches!(m, ServerMsg::Joined { .. }))
        .expect("joined");
    assert!(
        matches!(
            to_clara[joined + 1],
            ServerMsg::Maintenance { in_ms: 360_000 }
        ),
        "{to_clara:?}"
    );
    assert!(
        maintenance(&out, olga).is_empty(),
        "the others are not told again"
    );
    let gustav = sim.join(guest("Gustav"));
    let to_gustav = sim.take();
    assert!(
        matches!(
            sent_to(&to_gustav, gustav)[..],
            [
                ServerMsg::LobbyWait { .. },
                ServerMsg::Maintenance { in_ms: 360_000 }
            ]
        ),
        "{to_gustav:?}"
    );
    // Past the time (the server is about to end it): zero, never a wrap-around.
    sim.advance(Duration::from_secs(400));
    let late = sim.join(staff(4, "Dora", false));
    assert_eq!(maintenance(&sim.take(), late), vec![0]);
}
