//! The audit trail as the server writes it: a meeting's moderation recorded with who decided
//! (and a refused command not recorded as done), and administrators reading it over HTTP with
//! filters, pages, clear errors and the chain verified.

use std::time::Duration;

use klausur_proto::{ClientMsg, ErrorCode, SecurityProfile, ServerMsg};
use klausur_store::{AuditRecord, Role};
use serde_json::{json, Value};

use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

/// The meeting's records once one of kind `last` exists (the meeting writes its records after
/// each command; this waits for that, bounded).
async fn records_until(srv: &TestServer, meeting: &str, last: &str) -> Vec<AuditRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = srv.store.audit_after(0, 1000).await.expect("records");
        let mine: Vec<AuditRecord> = all
            .into_iter()
            .filter(|r| r.meeting_id.as_deref() == Some(meeting))
            .collect();
        if mine.iter().any(|r| r.kind == last) {
            return mine;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {last} record; have {:?}",
            mine.iter().map(|r| &r.kind).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lobby_entry(c: &mut Client, name: &str) -> String {
    let m = c
        .until(|m| match m {
            ServerMsg::LobbyChanged { lobby, .. } => lobby.iter().any(|e| e.display_name == name),
            _ => false,
        })
        .await;
    match m {
        ServerMsg::LobbyChanged { lobby, .. } => lobby
            .into_iter()
            .find(|e| e.display_name == name)
            .map(|e| e.id)
            .expect("entry"),
        _ => unreachable!(),
    }
}

fn actor_name(r: &AuditRecord) -> Option<&str> {
    r.actor.name.as_deref()
}

fn target_name(r: &AuditRecord) -> Option<String> {
    r.details()["target"]["name"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn moderation_is_recorded_with_who_decided() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
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
    let cookie = session_cookie(&srv, "olga").await;
    let mut o = Client::connect(&srv, Some(&cookie)).await;
    assert!(matches!(
        o.join(&m.id, None, None).await,
        ServerMsg::Joined { .. }
    ));
    let mut lars = Client::connect(&srv, None).await;
    assert!(matches!(
        lars.join(&m.id, None, Some("Lars Lobby")).await,
        ServerMsg::LobbyWait { .. }
    ));
    let lars_id = lobby_entry(&mut o, "Lars Lobby").await;
    let mut dora = Client::connect(&srv, None).await;
    assert!(matches!(
        dora.join(&m.id, None, Some("Dora Draussen")).await,
        ServerMsg::LobbyWait { .. }
    ));
    let dora_id = lobby_entry(&mut o, "Dora Draussen").await;
    o.send(&ClientMsg::Admit {
        participant_id: lars_id.clone(),
    })
    .await;
    lars.until(|m| matches!(m, ServerMsg::Joined { .. })).await;
    o.send(&ClientMsg::Deny {
        participant_id: dora_id,
    })
    .await;
    // A participant's moderator command is refused, and not recorded as done.
    lars.send(&ClientMsg::Lock { locked: true }).await;
    let e = lars.until(|m| matches!(m, ServerMsg::Error { .. })).await;
    assert!(
        matches!(
            e,
            ServerMsg::Error {
                code: ErrorCode::Forbidden,
                ..
            }
        ),
        "{e:?}"
    );
    for msg in [
        ClientMsg::Lock { locked: true },
        ClientMsg::Lock { locked: false },
        ClientMsg::Mute {
            participant_id: lars_id.clone(),
            muted: true,
        },
        ClientMsg::SetModerator {
            participant_id: lars_id.clone(),
            moderator: true,
        },
        ClientMsg::SetModerator {
            participant_id: lars_id.clone(),
            moderator: false,
        },
        ClientMsg::Remove {
            participant_id: lars_id.clone(),
        },
        ClientMsg::EndMeeting,
    ] {
        o.send(&msg).await;
    }

    let records = records_until(&srv, &m.id, "meeting.ended").await;
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let expected = [
        "participant.joined",
        "lobby.entered",
        "lobby.entered",
        "lobby.admitted",
        "participant.joined",
        "lobby.denied",
        "meeting.locked",
        "meeting.unlocked",
        "participant.muted",
        "role.moderator_granted",
        "role.moderator_revoked",
        "participant.removed",
        "participant.left",
        "meeting.ended",
    ];
    assert_eq!(kinds, expected, "the meeting's records in order");
    let by_kind = |k: &str| {
        records
            .iter()
            .filter(|r| r.kind == k)
            .collect::<Vec<&AuditRecord>>()
    };
    // Who decided: the organiser, by account (and the name shown in the meeting); whom it
    // concerned: by the name shown.
    for k in [
        "lobby.admitted",
        "lobby.denied",
        "meeting.locked",
        "participant.muted",
        "role.moderator_granted",
        "participant.removed",
        "meeting.ended",
    ] {
        let r = by_kind(k)[0];
        assert_eq!(r.actor.kind, "user", "{k}");
        assert_eq!(
            r.actor.id.as_deref(),
            Some(olga.id.to_string().as_str()),
            "{k}"
        );
        assert_eq!(actor_name(r), Some("olga Name"), "{k}");
    }
    assert_eq!(
        target_name(by_kind("lobby.admitted")[0]).as_deref(),
        Some("Lars Lobby")
    );
    assert_eq!(
        target_name(by_kind("lobby.denied")[0]).as_deref(),
        Some("Dora Draussen")
    );
    assert_eq!(
        target_name(by_kind("participant.removed")[0]).as_deref(),
        Some("Lars Lobby")
    );
    let entered: Vec<Option<&str>> = by_kind("lobby.entered")
        .iter()
        .map(|r| actor_name(r))
        .collect();
    assert_eq!(entered, [Some("Lars Lobby"), Some("Dora Draussen")]);
    assert_eq!(by_kind("lobby.entered")[0].details()["reason"], "profile");
    let left = by_kind("participant.left")[0];
    assert_eq!(actor_name(left), Some("Lars Lobby"));
    assert_eq!(left.details()["reason"], "removed");
    // The admitted guest holds a pass: that is their identity in the trail.
    let joined = by_kind("participant.joined");
    assert_eq!(joined[1].actor.kind, "guest");
    assert!(
        joined[1]
            .actor
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with("pass:")),
        "{:?}",
        joined[1].actor
    );
    assert_eq!(joined[1].details()["join_method"]["method"], "lobby");
    // The whole trail verifies.
    let verdict = srv.store.verify_audit(None).await.expect("verify");
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
}

async fn get(c: &reqwest::Client, url: String) -> (u16, Value) {
    let r = c.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

#[tokio::test]
async fn administrators_read_filter_and_verify_the_trail() {
    let srv = TestServer::start().await;
    let admin = srv.user("ada", Role::Admin).await;
    let (cookie, _) = srv.session(admin.id).await;
    let c = TestServer::client_with_cookie(&cookie);
    // Records of several kinds, two meetings.
    let audit = &srv.state.audit;
    for i in 0..5 {
        audit
            .record(
                klausur_server::audit::Entry::new(
                    klausur_server::audit::kind::LOGIN_FAILED,
                    klausur_store::AuditActor::new("anonymous", None, Some(format!("user{i}"))),
                )
                .source("192.0.2.1".parse().expect("ip")),
            )
            .await;
    }
    for (i, meeting) in ["m-a", "m-b", "m-a"].iter().enumerate() {
        audit
            .record(
                klausur_server::audit::Entry::new(
                    klausur_server::audit::kind::MEETING_LOCKED,
                    klausur_server::audit::user(&admin),
                )
                .meeting(meeting)
                .details(json!({ "i": i })),
            )
            .await;
    }
    let base = &srv.base;
    let (status, v) = get(&c, format!("{base}/api/audit")).await;
    assert_eq!(status, 200, "{v}");
    let all = v["records"].as_array().expect("records");
    assert_eq!(all.len(), 8);
    assert!(v.get("next_before").is_none(), "one page: {v}");
    assert_eq!(all[0]["kind"], "meeting.locked", "newest first");
    assert_eq!(all[7]["source"], "192.0.2.1");
    assert_eq!(all[0]["details"]["i"], 2, "details as JSON");
    assert!(all[0]["hash"].as_str().is_some_and(|h| h.len() == 64));

    let (_, v) = get(&c, format!("{base}/api/audit?kind=login")).await;
    assert_eq!(v["records"].as_array().map(Vec::len), Some(5));
    let (_, v) = get(&c, format!("{base}/api/audit?meeting=m-a")).await;
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2));
    let (_, v) = get(&c, format!("{base}/api/audit?q=USER3")).await;
    let found = v["records"].as_array().expect("records");
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["actor"]["name"], "user3");
    // Pages.
    let (_, p1) = get(&c, format!("{base}/api/audit?limit=3")).await;
    let next = p1["next_before"].as_i64().expect("a next page");
    let (_, p2) = get(&c, format!("{base}/api/audit?limit=3&before={next}")).await;
    let seqs = |v: &Value| -> Vec<i64> {
        v["records"]
            .as_array()
            .expect("records")
            .iter()
            .filter_map(|r| r["seq"].as_i64())
            .collect()
    };
    assert_eq!(seqs(&p1).len(), 3);
    assert_eq!(seqs(&p2).len(), 3);
    assert!(seqs(&p2).iter().all(|s| *s < next));
    // A last page that is exactly full says no page follows.
    let (_, q1) = get(&c, format!("{base}/api/audit?limit=4")).await;
    let next = q1["next_before"].as_i64().expect("a next page");
    let (_, q2) = get(&c, format!("{base}/api/audit?limit=4&before={next}")).await;
    assert_eq!(seqs(&q2).len(), 4);
    assert!(q2.get("next_before").is_none(), "the last page: {q2}");
    // Wrong parameters say what is wrong.
    for (query, needle) in [
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("since=yesterday", "since"),
        ("colour=blue", "colour"),
        (
            "since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z",
            "since",
        ),
    ] {
        let (status, v) = get(&c, format!("{base}/api/audit?{query}")).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{query}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{query}: {message}");
    }
    // The chain, checked now.
    let (status, v) = get(&c, format!("{base}/api/audit/verify")).await;
    assert_eq!(status, 200);
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["records"], 8);
    let head = v["head"].as_str().expect("head").to_string();
    assert!(head.starts_with("8:"), "{head}");
    // Against a noted head: the right one holds, another hash or a record not there does not.
    let (_, v) = get(&c, format!("{base}/api/audit/verify?head={head}")).await;
    assert_eq!(v["intact"], true, "{v}");
    let other = format!("8:{}", "0".repeat(64));
    let (_, v) = get(&c, format!("{base}/api/audit/verify?head={other}")).await;
    assert_eq!(v["intact"], false, "{v}");
    assert!(
        v["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("rewritten")),
        "{v}"
    );
    let beyond = format!("9:{}", "0".repeat(64));
    let (_, v) = get(&c, format!("{base}/api/audit/verify?head={beyond}")).await;
    assert!(
        v["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("cut off")),
        "{v}"
    );
    let (status, v) = get(&c, format!("{base}/api/audit/verify?head=8")).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SEQ:HASH")),
        "{v}"
    );
    // Staff read nothing of it.
    let staff = srv.user("stefan", Role::Staff).await;
    let (cookie, _) = srv.session(staff.id).await;
    let (status, _) = get(
        &TestServer::client_with_cookie(&cookie),
        format!("{base}/api/audit"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn housekeeping_deletes_what_is_past_its_time_and_records_it() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    let ended_at = chrono::Utc::now();
    srv.store
        .create_meeting("old", "Alt", None, olga.id, SecurityProfile::Strict)
        .await
        .expect("meeting");
    srv.store
        .set_meeting_ended("old", ended_at)
        .await
        .expect("ended");
    srv.state
        .audit
        .record_at(
            klausur_server::audit::Entry::new(
                klausur_server::audit::kind::MEETING_ENDED,
                klausur_server::audit::user(&olga),
            )
            .meeting("old"),
            ended_at,
        )
        .await;
    let config = &srv.state.config;
    assert_eq!(config.ended_meetings_days, 90);
    assert_eq!(config.audit_retention_days, 90);
    // Before the time: nothing goes.
    let early = ended_at + chrono::Duration::days(89);
    klausur_server::server::housekeeping(&srv.store, &srv.state.audit, config, early).await;
    assert!(srv.store.meeting("old").await.expect("read").is_some());
    assert_eq!(
        srv.store.audit_after(0, 100).await.expect("records").len(),
        1
    );
    // After it: the meeting and the old record go, and both deletions are recorded.
    let late = ended_at + chrono::Duration::days(91);
    klausur_server::server::housekeeping(&srv.store, &srv.state.audit, config, late).await;
    assert!(srv.store.meeting("old").await.expect("read").is_none());
    let kinds: Vec<String> = srv
        .store
        .audit_after(0, 100)
        .await
        .expect("records")
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, ["meeting.deleted", "audit.deleted"]);
    let verdict = srv.store.verify_audit(None).await.expect("verify");
    assert!(verdict.is_intact(), "{:?}", verdict.problems);
}
