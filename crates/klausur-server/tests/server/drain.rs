//! A single `klausur serve` stopped with `[server] drain_seconds` (docs/operations.md,
//! "Stopping gently"): SIGTERM lets the running meeting go on, in its encrypted group with
//! media; everyone in it, and everyone who joins meanwhile (a new meeting too: a single server
//! refuses nobody), is told when the interruption comes at the latest (`maintenance`); at the
//! end of the drain time the meeting ends with `server_shutdown` and the server stops cleanly.
//! A second SIGTERM stops it at once. Native clients (`klausur-client`: real MLS, SFrame and
//! WebRTC) against the real binary. (The cluster's side, a node that lets its meeting finish
//! while new meetings go to another node, is in `cluster.rs`.)

use std::time::{Duration, Instant};

use klausur_client::session::JoinAs;

use crate::cluster::{meeting_with_guests, one_group};
use crate::common::native::{hear_each_other, start_at, until, Client, WAIT};
use crate::process::{add_ada, free_port, run, serve_cmd, start, terminate, wait_exit, Proc};

/// `klausur serve` with `KLAUSUR_DRAIN_SECONDS=drain`, Ada (staff) added: the process, its base
/// URL and the directory it keeps its data and log in.
fn serve_draining(drain: u64) -> (Proc, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    add_ada(&data);
    let port = free_port();
    let mut cmd = serve_cmd(&data, port);
    cmd.env("KLAUSUR_DRAIN_SECONDS", drain.to_string());
    let (proc, _) = start(cmd, &dir.path().join("server.log"));
    (proc, format!("http://127.0.0.1:{port}"), dir)
}

/// Pumps `c` until it has stopped, and returns why.
async fn stopped(c: &mut Client, what: &str) -> String {
    until(&mut [&mut *c], what, |c| c[0].stopped.is_some()).await;
    c.stopped.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_keeps_its_meeting_until_the_drain_time_is_over() {
    const DRAIN: u64 = 15;
    let (mut server, base, _dir) = serve_draining(DRAIN);
    let (id, tokens) = meeting_with_guests(&base, "Ausschuss", 3).await;
    let join = |i: usize| {
        start_at(&base, &id, JoinAs::Invitation(tokens[i].clone()), i as u64).expect_to_stop()
    };
    let (mut a, mut b) = (join(0), join(1));
    one_group(&mut [&mut a, &mut b], "two in one group").await;
    assert!(a.maintenance.is_empty(), "nothing said before the stop");

    terminate(&server);
    let signalled = Instant::now();
    until(&mut [&mut a, &mut b], "both told of the maintenance", |c| {
        c.iter().all(|x| !x.maintenance.is_empty())
    })
    .await;
    for c in [&a, &b] {
        let left = c.maintenance[0];
        assert!(
            (1..=DRAIN * 1000).contains(&left),
            "{left} ms left of {DRAIN} s"
        );
    }
    // Someone joining meanwhile gets in, into the same group, and is told too.
    let mut c = join(2);
    one_group(&mut [&mut a, &mut b, &mut c], "three in one group").await;
    until(&mut [&mut c], "the latecomer told", |c| {
        !c[0].maintenance.is_empty()
    })
    .await;
    assert!(c.maintenance[0] <= a.maintenance[0], "{:?}", c.maintenance);
    hear_each_other(&mut a, &mut c, 10, "while the server drains").await;
    // A meeting that starts meanwhile starts (there is no other server to take it), and its
    // participant is told as well.
    let (other, other_tokens) = meeting_with_guests(&base, "Sprechstunde", 1).await;
    let mut d = start_at(
        &base,
        &other,
        JoinAs::Invitation(other_tokens[0].clone()),
        3,
    )
    .expect_to_stop();
    until(
        &mut [&mut d],
        "a new meeting's participant in its group and told",
        |c| c[0].in_group && !c[0].maintenance.is_empty(),
    )
    .await;
    assert!(
        [&a, &b, &c, &d].iter().all(|x| x.stopped.is_none()),
        "nobody was ended before the drain time was over"
    );

    // The drain time is over: the meeting ends for everyone as at a restart, not before.
    for x in [&mut a, &mut b, &mut c, &mut d] {
        let why = stopped(x, "ended at the end of the drain time").await;
        assert_eq!(why, "ended: Some(ServerShutdown)");
    }
    let after = signalled.elapsed();
    assert!(
        after >= Duration::from_secs(DRAIN) - Duration::from_millis(500),
        "ended {after:?} after the signal, before the {DRAIN} s were over"
    );
    let status = wait_exit(&mut server, WAIT).expect("the server stops");
    assert!(status.success(), "a clean stop: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_a_draining_server_at_once() {
    let (mut server, base, dir) = serve_draining(3600);
    let (id, tokens) = meeting_with_guests(&base, "Ausschuss", 1).await;
    let mut a = start_at(&base, &id, JoinAs::Invitation(tokens[0].clone()), 1).expect_to_stop();
    until(&mut [&mut a], "in the group", |c| c[0].in_group).await;
    terminate(&server);
    until(&mut [&mut a], "told of the maintenance", |c| {
        !c[0].maintenance.is_empty()
    })
    .await;
    assert!(a.maintenance[0] > 3_000_000, "{:?}", a.maintenance);
    assert!(a.stopped.is_none());

    terminate(&server);
    assert_eq!(
        stopped(&mut a, "ended by the second signal").await,
        "ended: Some(ServerShutdown)"
    );
    let status = wait_exit(&mut server, WAIT).expect("the server stops, not after an hour");
    assert!(status.success(), "a clean stop: {status:?}");
    let log = std::fs::read_to_string(dir.path().join("server.log")).expect("log");
    assert!(log.contains("a second signal: stopping now"), "{log}");
    // The audit trail records the drain: when, with what running, for how long at most.
    let data = dir.path().join("data");
    let (ok, out, err) = run(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "audit",
            "export",
        ],
        None,
    );
    assert!(ok, "{err}");
    let drains: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["kind"] == "server.draining")
        .collect();
    assert_eq!(drains.len(), 1, "{out}");
    let details = &drains[0]["details"];
    assert_eq!(
        (&details["meetings"], &details["drain_seconds"]),
        (&serde_json::json!(1), &serde_json::json!(3600)),
        "{details}"
    );
}
