//! Dual-stack media (`[media] public_ipv6`, issue 21 "every network"): one media worker on
//! `[::]` takes IPv4 and IPv6 on the same port and announces a host candidate of each family.
//! A native participant whose media socket speaks IPv4 only (127.0.0.1) and one that speaks
//! IPv6 only (::1) join one encrypted meeting and hear each other through it. Negative control:
//! without `public_ipv6` the IPv6-only participant gets no media, and the IPv4 one still does
//! (an IPv4 sender reaches a `[::]` socket as `::ffff:127.0.0.1`, which the worker must take as
//! 127.0.0.1).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use klausur_client::session::JoinAs;
use klausur_proto::SecurityProfile;
use klausur_store::Role;

use crate::common::native::{start_bound, until, Client, WAIT};
use crate::common::TestServer;

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A server whose media worker listens on `[::]`, announcing 127.0.0.1 and, with `ipv6`, ::1;
/// a meeting with invitations for `names`.
async fn dual_stack(ipv6: bool, names: &[&str]) -> (TestServer, Vec<String>) {
    let srv = TestServer::start_with(|c| {
        c.media_listen = "[::]:0".parse().expect("addr");
        c.media_public_ip = V4;
        c.media_public_ipv6 = ipv6.then_some(V6);
    })
    .await;
    let olga = srv.user("olga", Role::Staff).await;
    srv.store
        .create_meeting(
            "dualstackmeet001",
            "Zwei Netze",
            None,
            olga.id,
            SecurityProfile::Strict,
        )
        .await
        .expect("meeting");
    let mut tokens = Vec::new();
    for name in names {
        let (_, t) = srv
            .guest_invitation(
                "dualstackmeet001",
                name,
                olga.id,
                chrono::Duration::hours(1),
            )
            .await;
        tokens.push(t);
    }
    (srv, tokens)
}

/// Starts the participant with invitation `token`, media on `ip`, and waits until the
/// encrypted group has it (and everyone in `others`).
async fn join(
    srv: &TestServer,
    token: String,
    id: u64,
    ip: IpAddr,
    others: &mut [&mut Client],
) -> Client {
    let mut c = start_bound(
        &srv.base,
        "dualstackmeet001",
        JoinAs::Invitation(token),
        id,
        None,
        ip,
    );
    let mut all: Vec<&mut Client> = others.iter_mut().map(|c| &mut **c).collect();
    all.push(&mut c);
    until(&mut all, "in the encrypted group", |cs| {
        cs.iter().all(|c| c.in_group)
            && cs
                .windows(2)
                .all(|w| w[0].codes.last() == w[1].codes.last())
    })
    .await;
    c
}

/// Both send numbered frames for up to `limit`; returns how many frames each received (by
/// client id), stopping early once each of `expect` has 20.
async fn exchange(
    clients: &mut [(u64, &mut Client)],
    limit: Duration,
    expect: &[u64],
) -> HashMap<u64, usize> {
    let mut got: HashMap<u64, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut n: u32 = 0;
    let enough = |got: &HashMap<u64, usize>| {
        !expect.is_empty()
            && expect
                .iter()
                .all(|id| got.get(id).copied().unwrap_or(0) >= 20)
    };
    while tokio::time::Instant::now() < deadline && !enough(&got) {
        n += 1;
        for (id, c) in clients.iter_mut() {
            c.handle.send_audio(format!("{id}-{n}").into_bytes(), 40);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (id, c) in clients.iter_mut() {
            c.pump();
            while c.audio.try_recv().is_ok() {
                *got.entry(*id).or_default() += 1;
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv4_and_an_ipv6_participant_hear_each_other_through_one_dual_stack_worker() {
    let (srv, mut tokens) = dual_stack(true, &["Erika Vier", "Max Sechs"]).await;
    let max_token = tokens.pop().expect("token");
    let mut erika = join(&srv, tokens.pop().expect("token"), 1, V4, &mut []).await;
    let mut max = join(&srv, max_token, 2, V6, &mut [&mut erika]).await;
    let got = exchange(&mut [(1, &mut erika), (2, &mut max)], WAIT, &[1, 2]).await;
    assert!(
        got.get(&1).copied().unwrap_or(0) >= 20,
        "Erika (IPv4) hears Max (IPv6): {got:?}"
    );
    assert!(
        got.get(&2).copied().unwrap_or(0) >= 20,
        "Max (IPv6) hears Erika (IPv4): {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_ipv6_address_announced_an_ipv6_only_participant_gets_no_media() {
    let (srv, mut tokens) = dual_stack(false, &["Erika Vier", "Hans Vier", "Max Sechs"]).await;
    let max_token = tokens.pop().expect("token");
    let hans_token = tokens.pop().expect("token");
    let mut erika = join(&srv, tokens.pop().expect("token"), 1, V4, &mut []).await;
    let mut hans = join(&srv, hans_token, 2, V4, &mut [&mut erika]).await;
    let mut max = join(&srv, max_token, 3, V6, &mut [&mut erika, &mut hans]).await;
    // The two on IPv4 hear each other through the `[::]` socket; Max, in the group as well,
    // has no candidate of his family and hears nothing, nor is he heard.
    let got = exchange(
        &mut [(1, &mut erika), (2, &mut hans), (3, &mut max)],
        Duration::from_secs(8),
        &[],
    )
    .await;
    assert!(got.get(&1).copied().unwrap_or(0) >= 20, "{got:?}");
    assert!(got.get(&2).copied().unwrap_or(0) >= 20, "{got:?}");
    assert_eq!(got.get(&3).copied().unwrap_or(0), 0, "{got:?}");
}
