//! A fault in one meeting's media stays in that meeting. The media core of meeting A panics
//! (through the test hook, as a bug in the room core or str0m would): the native clients of
//! meeting B keep hearing each other, A's media connections are reported gone, and A's
//! participants, joining again, hear each other in A's new media core. Before the containment,
//! the panic ended the one media thread and with it the media of every meeting.
//!
//! A failing media worker is restarted: with two workers, meetings A and B are placed one on
//! each; A's worker panics outside any room (as a bug in the worker loop would): B, on the other
//! worker, keeps hearing, A's media connections are reported gone, the worker runs on with a
//! new core for A, and A's participants, joining again, hear each other on it.
//!
//! Needs the `test-hooks` build: `cargo test -p klausur-server --features test-hooks --test
//! media_faults`.
#![cfg(feature = "test-hooks")]

mod common;

use std::time::Duration;

use common::native::{hear_each_other, pair, until, Client, WAIT};
use common::TestServer;
use klausur_client::session::JoinAs;
use klausur_proto::SecurityProfile;
use klausur_store::Role;

async fn guest(srv: &TestServer, meeting: &str, name: &str, owner: i64) -> String {
    srv.guest_invitation(meeting, name, owner, chrono::Duration::hours(1))
        .await
        .1
}

/// Meetings A and B with two native clients each, both hearing each other; A's ids 1 and 2,
/// B's 3 and 4. Returns A's invitations too, to join again.
async fn two_meetings(srv: &TestServer) -> ((Client, Client), (Client, Client), (String, String)) {
    let olga = srv.user("olga", Role::Staff).await;
    for id in ["faultmeeting0001", "faultmeeting0002"] {
        srv.store
            .create_meeting(id, "Fault", None, olga.id, SecurityProfile::Strict)
            .await
            .expect("meeting");
    }
    let (a1, a2) = (
        guest(srv, "faultmeeting0001", "Anna Gast", olga.id).await,
        guest(srv, "faultmeeting0001", "Arne Gast", olga.id).await,
    );
    let (b1, b2) = (
        guest(srv, "faultmeeting0002", "Berta Gast", olga.id).await,
        guest(srv, "faultmeeting0002", "Bodo Gast", olga.id).await,
    );
    let (mut anna, mut arne) = pair(
        srv,
        "faultmeeting0001",
        JoinAs::Invitation(a1.clone()),
        JoinAs::Invitation(a2.clone()),
        (1, 2),
    )
    .await;
    let (mut berta, mut bodo) = pair(
        srv,
        "faultmeeting0002",
        JoinAs::Invitation(b1),
        JoinAs::Invitation(b2),
        (3, 4),
    )
    .await;
    hear_each_other(&mut anna, &mut arne, 20, "meeting A before").await;
    hear_each_other(&mut berta, &mut bodo, 20, "meeting B before").await;
    assert_eq!(srv.state.media.stats().await.peers, 4);
    ((anna, arne), (berta, bodo), (a1, a2))
}

/// Meeting A's participants leave and join again with their invitations (ids 5 and 6): they
/// hear each other in A's new media core, and meeting B still hears itself.
async fn join_a_again(
    srv: &TestServer,
    (anna, arne): (Client, Client),
    (a1, a2): (String, String),
    (berta, bodo): (&mut Client, &mut Client),
) {
    anna.handle.leave();
    arne.handle.leave();
    let (mut anna, mut arne) = pair(
        srv,
        "faultmeeting0001",
        JoinAs::Invitation(a1),
        JoinAs::Invitation(a2),
        (5, 6),
    )
    .await;
    hear_each_other(&mut anna, &mut arne, 20, "meeting A after joining again").await;
    hear_each_other(berta, bodo, 20, "meeting B at the end").await;
}

/// Waits until the media counters summed over the workers show `peers` peers.
async fn peers_become(srv: &TestServer, peers: usize) -> klausur_server::media::MediaStats {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = srv.state.media.stats().await;
        if stats.peers == peers {
            return stats;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_media_worker_is_restarted_and_the_other_carries_on() {
    let srv = TestServer::start_with(|c| c.media_workers = 2).await;
    let ((mut anna, mut arne), (mut berta, mut bodo), (a1, a2)) = two_meetings(&srv).await;
    // One meeting on each worker, each on its own port, both forwarding.
    let before = srv.state.media.worker_stats().await;
    assert_eq!(before.len(), 2);
    for (i, w) in before.iter().enumerate() {
        assert_eq!((w.rooms, w.peers), (1, 2), "worker {i}: {w:?}");
        assert!(w.forwarded_packets > 0, "worker {i} forwards: {w:?}");
    }
    let addrs = srv.state.media.addresses();
    assert_ne!(addrs[0].port(), addrs[1].port());

    let response = srv
        .anonymous()
        .post(format!(
            "{}/api/test/meetings/faultmeeting0001/panic-media-worker",
            srv.base
        ))
        .send()
        .await
        .expect("hook");
    assert!(response.status().is_success(), "{}", response.status());

    // Meeting B, on the other worker, carries on.
    hear_each_other(
        &mut berta,
        &mut bodo,
        50,
        "meeting B after A's worker failed",
    )
    .await;
    // A's media connections are gone; A's worker was restarted once and keeps A's room.
    let stats = peers_become(&srv, 2).await;
    assert_eq!((stats.rooms, stats.restarts), (2, 1), "{stats:?}");
    let after = srv.state.media.worker_stats().await;
    let failed = after
        .iter()
        .position(|w| w.restarts == 1)
        .expect("the failed worker counts its restart");
    assert_eq!((after[failed].rooms, after[failed].peers), (1, 0));
    assert_eq!(
        (
            after[1 - failed].rooms,
            after[1 - failed].peers,
            after[1 - failed].restarts
        ),
        (1, 2, 0)
    );
    // Counters go on over the restart.
    assert!(after[failed].forwarded_packets >= before[failed].forwarded_packets);

    // A's clients are told at once that their media is gone (and would join again by
    // themselves, as the browser does); B's are not.
    until(
        &mut [&mut anna, &mut arne],
        "meeting A told its media is lost",
        |c| c.iter().all(|c| c.media_lost == 1),
    )
    .await;
    berta.pump();
    bodo.pump();
    assert_eq!((berta.media_lost, bodo.media_lost), (0, 0));

    // A's participants join again and hear each other on the restarted worker.
    join_a_again(&srv, (anna, arne), (a1, a2), (&mut berta, &mut bodo)).await;
    let end = srv.state.media.worker_stats().await;
    assert_eq!(end[failed].peers, 2, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_media_core_stays_in_its_meeting() {
    // One worker: the rooms share it, and only the failed one is affected.
    let srv = TestServer::start_with(|c| c.media_workers = 1).await;
    let ((anna, arne), (mut berta, mut bodo), (a1, a2)) = two_meetings(&srv).await;

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
    let stats = peers_become(&srv, 2).await;
    assert_eq!(stats.rooms, 2);

    // A's participants join again and hear each other in A's new media core.
    join_a_again(&srv, (anna, arne), (a1, a2), (&mut berta, &mut bodo)).await;
}
