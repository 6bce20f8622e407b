//! The native meeting client (`klausur-client`) against a real server: two invited guests join
//! with their own device keys and credentials, form the meeting's encrypted group (the second
//! is added by the first's client under the meeting's policy), agree on the security code and
//! hear each other's SFrame-encrypted audio through the media server (each only the other's),
//! and the code changes again when one leaves.

use std::collections::HashMap;
use std::time::Duration;

use klausur_client::session::JoinAs;
use klausur_proto::SecurityProfile;
use klausur_store::Role;

use crate::common::native::{pair, until, WAIT};
use crate::common::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_clients_form_the_group_and_hear_each_other() {
    let srv = TestServer::start().await;
    let olga = srv.user("olga", Role::Staff).await;
    srv.store
        .create_meeting(
            "nativemeet000001",
            "Native",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
    let (_, erika) = srv
        .guest_invitation(
            "nativemeet000001",
            "Erika Gast",
            olga.id,
            chrono::Duration::hours(1),
        )
        .await;
    let (_, max) = srv
        .guest_invitation(
            "nativemeet000001",
            "Max Gast",
            olga.id,
            chrono::Duration::hours(1),
        )
        .await;

    let (mut a, mut b) = pair(
        &srv,
        "nativemeet000001",
        JoinAs::Invitation(erika),
        JoinAs::Invitation(max),
        (1, 2),
    )
    .await;
    assert!(
        a.codes.len() >= 2,
        "Erika's security code changed when Max joined: {:?}",
        a.codes
    );

    // Both send "audio" (distinct bytes per sender and frame); each receives the other's,
    // decrypted, and never its own.
    let ids: HashMap<u64, String> = [(1, a.self_id.clone()), (2, b.self_id.clone())]
        .into_iter()
        .map(|(k, v)| (k, v.expect("joined")))
        .collect();
    let mut got: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n: u32 = 0;
    while got.get(&1).map_or(0, Vec::len) < 20 || got.get(&2).map_or(0, Vec::len) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "audio did not flow: {got:?}"
        );
        n += 1;
        a.handle.send_audio(format!("erika-{n}").into_bytes(), 40);
        b.handle.send_audio(format!("max-{n}").into_bytes(), 40);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (id, c) in [(1u64, &mut a), (2, &mut b)] {
            c.pump();
            while let Ok(f) = c.audio.try_recv() {
                let other = if id == 1 { &ids[&2] } else { &ids[&1] };
                assert_eq!(&f.participant_id, other, "only the other's audio arrives");
                got.entry(id).or_default().push(f.opus);
            }
        }
    }
    assert!(
        got[&1].iter().all(|f| f.starts_with(b"max-")),
        "{:?}",
        &got[&1][..3]
    );
    assert!(got[&2].iter().all(|f| f.starts_with(b"erika-")));

    // Leaving changes the group: Erika's code changes again.
    let before = a.codes.len();
    b.handle.leave();
    until(&mut [&mut a], "a new code after Max left", |c| {
        c[0].codes.len() > before
    })
    .await;
}
