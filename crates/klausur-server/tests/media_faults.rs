//! A fault in one meeting's media stays in that meeting. The media core of meeting A panics
//! (through the test hook, as a bug in the room core or str0m would): the native clients of
//! meeting B keep hearing each other, A's media connections are reported gone, and A's
//! participants, joining again, hear each other in A's new media core. Before the containment,
//! the panic ended the one media thread and with it the media of every meeting.
//!
//! Needs the `test-hooks` build: `cargo test -p klausur-server --features test-hooks --test
//! media_faults`.
#![cfg(feature = "test-hooks")]

mod common;

use std::time::Duration;

use common::native::{pair, Client, WAIT};
use common::TestServer;
use klausur_client::session::JoinAs;
use klausur_proto::SecurityProfile;
use klausur_store::Role;

/// Both clients send audio until each has received `frames` more frames from the other.
async fn hear_each_other(a: &mut Client, b: &mut Client, frames: usize, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut got_a, mut got_b) = (0, 0);
    let mut n: u32 = 0;
    while got_a < frames || got_b < frames {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: audio did not flow ({got_a} and {got_b} frames)"
        );
        n += 1;
        a.handle.send_audio(format!("a-{n}").into_bytes(), 40);
        b.handle.send_audio(format!("b-{n}").into_bytes(), 40);
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.pump();
        b.pump();
        while a.audio.try_recv().is_ok() {
            got_a += 1;
        }
        while b.audio.try_recv().is_ok() {
            got_b += 1;
        }
    }
}

async fn guest(srv: &TestServer, meeting: &str, name: &str, owner: i64) -> String {
    srv.guest_invitation(meeting, name, owner, chrono::Duration::hours(1))
        .await
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_media_core_stays_in_its_meeting() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    for id in ["faultmeeting0001", "faultmeeting0002"] {
        srv.store
            .create_meeting(id, "Fault", None, olga.id, SecurityProfile::Strict)
            .await
            .expect("meeting");
    }
    let (a1, a2) = (
        guest(&srv, "faultmeeting0001", "Anna Gast", olga.id).await,
        guest(&srv, "faultmeeting0001", "Arne Gast", olga.id).await,
    );
    let (b1, b2) = (
        guest(&srv, "faultmeeting0002", "Berta Gast", olga.id).await,
        guest(&srv, "faultmeeting0002", "Bodo Gast", olga.id).await,
    );
    let (mut anna, mut arne) = pair(
        &srv,
        "faultmeeting0001",
        JoinAs::Invitation(a1.clone()),
        JoinAs::Invitation(a2.clone()),
        (1, 2),
    )
    .await;
    let (mut berta, mut bodo) = pair(
        &srv,
        "faultmeeting0002",
        JoinAs::Invitation(b1),
        JoinAs::Invitation(b2),
        (3, 4),
    )
    .await;
    hear_each_other(&mut anna, &mut arne, 20, "meeting A before").await;
    hear_each_other(&mut berta, &mut bodo, 20, "meeting B before").await;
    assert_eq!(srv.state.media.stats().await.peers, 4);

    let response = srv
        .anonymous()
        .post(format!(
            "{}/api/test/meetings/faultmeeting0001/panic-media",
            srv.base
        ))
        .send()
        .await
        .expect("hook");
    assert!(response.status().is_success(), "{}", response.status());

    // Meeting B carries on.
    hear_each_other(&mut berta, &mut bodo, 50, "meeting B after A's panic").await;
    // A's media connections are gone (both rooms stay open).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = srv.state.media.stats().await;
        if stats.peers == 2 {
            assert_eq!(stats.rooms, 2);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A's participants join again and hear each other in A's new media core.
    anna.handle.leave();
    arne.handle.leave();
    let (mut anna, mut arne) = pair(
        &srv,
        "faultmeeting0001",
        JoinAs::Invitation(a1),
        JoinAs::Invitation(a2),
        (5, 6),
    )
    .await;
    hear_each_other(&mut anna, &mut arne, 20, "meeting A after joining again").await;
    hear_each_other(&mut berta, &mut bodo, 20, "meeting B at the end").await;
}
