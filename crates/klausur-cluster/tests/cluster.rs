//! The cluster against a real Redis (`klausur_testbed::redis` starts one per test): placement over
//! three nodes, takeover after a node dies, what a non-owner can and cannot do, a Redis
//! restart under held leases, and values klausur did not write.
//!
//! Waits poll for a lasting state with a generous bound; nothing depends on a sleep being
//! long enough.

use klausur_testbed::redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use klausur_cluster::Keys;
use klausur_cluster::{
    Cluster, Error, LeaseAction, LeaseTimer, Load, MeetingId, Node, NodeId, RenewResult, Settings,
    Timing,
};

fn node_id(s: &str) -> NodeId {
    NodeId::new(s).expect("node id")
}

fn meeting(i: usize) -> MeetingId {
    MeetingId::new(format!("meeting-{i}")).expect("meeting id")
}

fn settings(ttl_ms: u64) -> Settings {
    let ttl = Duration::from_millis(ttl_ms);
    Settings {
        keys: Keys::new("klausur-test").expect("prefix"),
        timing: Timing::new(ttl, ttl).expect("timing"),
        // Each test's Redis was started a moment ago; the wait for a young Redis has a test
        // of its own.
        settle: false,
        ..Settings::default()
    }
}

async fn connect(redis: &redis::Redis, id: &str, settings: &Settings) -> Cluster {
    connect_to(&redis.url(), id, settings)
        .await
        .expect("connect")
}

async fn connect_to(url: &str, id: &str, settings: &Settings) -> Result<Cluster, Error> {
    let node = Node::new(
        node_id(id),
        format!("https://{id}.example:8443"),
        vec!["192.0.2.10:40000".parse().expect("addr")],
    )
    .expect("node");
    Cluster::connect_with(url, node, settings.clone()).await
}

/// A raw connection to the test Redis, past the cluster: what an operator (or a mistake)
/// could do.
async fn raw(redis: &redis::Redis) -> ::redis::aio::MultiplexedConnection {
    ::redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// Polls `check` until it holds, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} in vain for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Heartbeats for `cluster` every third of its node TTL until the task is aborted.
fn keep_beating(cluster: Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let _ = cluster.heartbeat(Load::default()).await;
            tokio::time::sleep(cluster.settings().timing.heartbeat_every()).await;
        }
    })
}

/// One step of what the server's lease keeper does: poll the timer, renew if it says so.
/// The renewal's result, if one was sent; panics if the timer says the lease is lost.
async fn keep(
    cluster: &Cluster,
    timer: &mut LeaseTimer,
    lease: &mut klausur_cluster::Lease,
) -> Option<RenewResult> {
    keep_or_lose(cluster, timer, lease)
        .await
        .unwrap_or_else(|reason| panic!("the lease was lost: {reason}"))
}

/// [`keep`] that reports a loss (the timer's reason) instead of panicking on it.
async fn keep_or_lose(
    cluster: &Cluster,
    timer: &mut LeaseTimer,
    lease: &mut klausur_cluster::Lease,
) -> Result<Option<RenewResult>, String> {
    match timer.poll(Instant::now()) {
        LeaseAction::Renew => {
            let r = cluster.renew_result(lease).await;
            timer.handle_renew(Instant::now(), r);
            Ok(Some(r))
        }
        LeaseAction::Wait(_) => Ok(None),
        LeaseAction::Stop(reason) => Err(format!("{reason:?}")),
    }
}

/// A tiny deterministic generator for the entry nodes (no seeding from the clock: a failure
/// repeats).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Issue 22, test 1: three nodes, 20 meetings placed from random entry nodes: every meeting
/// has exactly one owner that every node agrees on, and no node holds more than twice the
/// meetings of another.
#[tokio::test]
async fn three_nodes_share_twenty_meetings() {
    let redis = redis::start();
    let s = settings(10_000);
    let nodes = [
        connect(&redis, "node-a", &s).await,
        connect(&redis, "node-b", &s).await,
        connect(&redis, "node-c", &s).await,
    ];
    let mut served: BTreeMap<NodeId, u32> = BTreeMap::new();
    for n in &nodes {
        n.heartbeat(Load::default()).await.expect("heartbeat");
        served.insert(n.node().id().clone(), 0);
    }
    assert_eq!(nodes[0].nodes().await.expect("nodes").len(), 3);

    let mut rng = Lcg(22);
    for i in 0..20 {
        let entry = &nodes[rng.next(3)];
        let p = entry.place(&meeting(i)).await.expect("place");
        assert!(p.placed_now, "meeting {i} was not placed before");
        let owner = nodes
            .iter()
            .find(|n| *n.node().id() == p.owner)
            .expect("the owner is one of the nodes");
        assert_eq!(p.node.as_ref(), Some(owner.node()), "the redirect target");
        if p.owner == *entry.node().id() {
            assert!(
                p.lease.is_some(),
                "placed on the entry node: it holds the lease"
            );
        } else {
            // The participant is sent to the owner, which picks the lease up.
            assert!(p.lease.is_none());
            let lease = owner.adopt(&meeting(i)).await.expect("adopt");
            assert_eq!(lease.expect("placed there").owner(), owner.node().id());
            assert!(entry.adopt(&meeting(i)).await.expect("adopt").is_none());
        }
        let count = served.get_mut(&p.owner).expect("known node");
        *count += 1;
        let load = Load {
            draining: false,
            meetings: *count,
            participants: *count * 3,
            capacity: None,
        };
        owner.heartbeat(load).await.expect("heartbeat");
    }

    // Exactly one owner per meeting, the same from every node, and placing again changes
    // nothing.
    let mut owners: BTreeMap<NodeId, u32> = BTreeMap::new();
    for i in 0..20 {
        let owner = nodes[0]
            .owner(&meeting(i))
            .await
            .expect("owner")
            .expect("placed");
        for n in &nodes {
            assert_eq!(
                n.owner(&meeting(i)).await.expect("owner").as_ref(),
                Some(&owner)
            );
            let again = n.place(&meeting(i)).await.expect("place again");
            assert_eq!(again.owner, owner);
            assert!(!again.placed_now);
        }
        *owners.entry(owner).or_insert(0) += 1;
    }
    assert_eq!(owners, served);
    assert_eq!(nodes[1].leases_per_node().await.expect("count"), served);
    let max = *owners.values().max().expect("owners");
    // A node with no meeting at all would make the ratio infinite.
    let min = if owners.len() == 3 {
        *owners.values().min().expect("owners")
    } else {
        0
    };
    assert!(max <= 2 * min, "unbalanced: {owners:?}");
}

/// Placement counts the leases a node holds, not only its last heartbeat: meetings placed in
/// a burst, before any owner published its new load, still spread.
#[tokio::test]
async fn a_burst_of_placements_spreads_before_loads_are_published() {
    let redis = redis::start();
    let s = settings(10_000);
    let a = connect(&redis, "node-a", &s).await;
    let b = connect(&redis, "node-b", &s).await;
    let c = connect(&redis, "node-c", &s).await;
    for n in [&a, &b, &c] {
        n.heartbeat(Load::default()).await.expect("heartbeat");
    }
    for i in 0..9 {
        a.place(&meeting(i)).await.expect("place");
    }
    let counts = a.leases_per_node().await.expect("count");
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{counts:?}"
    );
}

/// Of three nodes acquiring one meeting at the same moment, exactly one gets it; the same for
/// three placing it at once (all three agree on the owner).
#[tokio::test]
async fn acquisition_is_atomic() {
    let redis = redis::start();
    let s = settings(10_000);
    let a = connect(&redis, "node-a", &s).await;
    let b = connect(&redis, "node-b", &s).await;
    let c = connect(&redis, "node-c", &s).await;
    for i in 0..20 {
        let m = meeting(i);
        let (ra, rb, rc) = tokio::join!(a.acquire(&m), b.acquire(&m), c.acquire(&m));
        let won: Vec<NodeId> = [ra, rb, rc]
            .into_iter()
            .filter_map(|r| r.expect("acquire"))
            .map(|l| l.owner().clone())
            .collect();
        assert_eq!(won.len(), 1, "meeting {i}: {won:?} all acquired it");
        assert_eq!(a.owner(&m).await.expect("owner").as_ref(), Some(&won[0]));
    }
    for i in 20..30 {
        let m = meeting(i);
        let (pa, pb, pc) = tokio::join!(a.place(&m), b.place(&m), c.place(&m));
        let (pa, pb, pc) = (pa.expect("place"), pb.expect("place"), pc.expect("place"));
        assert_eq!(
            (&pa.owner, &pb.owner),
            (&pc.owner, &pc.owner),
            "meeting {i}"
        );
        let placed = [&pa, &pb, &pc].iter().filter(|p| p.placed_now).count();
        assert_eq!(placed, 1, "meeting {i}: placed by {placed} nodes");
    }
}

/// A node that stops heartbeating and renewing: its key and its leases expire after the TTL,
/// and another node's placement takes its meetings over. Its own lease timer has told it to
/// stop by then, and its old leases can no longer be renewed.
#[tokio::test]
async fn a_dead_nodes_meetings_are_taken_over() {
    let redis = redis::start();
    let s = settings(1500);
    let a = Arc::new(connect(&redis, "node-a", &s).await);
    let b = Arc::new(connect(&redis, "node-b", &s).await);
    let beat_a = keep_beating(a.clone());
    let beat_b = keep_beating(b.clone());
    wait_for("both nodes live", Duration::from_secs(20), || async {
        b.nodes().await.is_ok_and(|n| n.len() == 2)
    })
    .await;

    let mut leases = Vec::new();
    for i in 0..3 {
        let lease = a
            .acquire(&meeting(i))
            .await
            .expect("acquire")
            .expect("free");
        leases.push((LeaseTimer::new(s.timing, lease.sent_at()), lease));
    }
    for i in 0..3 {
        let p = b.place(&meeting(i)).await.expect("place");
        assert_eq!(p.owner, *a.node().id(), "a serves it while alive");
    }

    // node-a dies: no heartbeat, no renewal.
    beat_a.abort();
    let first_acquired = leases[0].1.sent_at();
    wait_for(
        "node-a's key and leases expire",
        Duration::from_secs(30),
        || async {
            let live = b.nodes().await.expect("nodes");
            let mut owned = false;
            for i in 0..3 {
                owned |= b.owner(&meeting(i)).await.expect("owner").is_some();
            }
            live.len() == 1 && !owned
        },
    )
    .await;
    // Not before the TTL (Redis counts from when it executed the SET, after it was sent).
    assert!(
        first_acquired.elapsed() >= Duration::from_millis(1400),
        "expired too early"
    );

    for i in 0..3 {
        let p = b.place(&meeting(i)).await.expect("place");
        assert_eq!(p.owner, *b.node().id(), "taken over");
        assert!(p.placed_now && p.lease.is_some());
    }
    for (timer, lease) in &mut leases {
        assert!(matches!(timer.poll(Instant::now()), LeaseAction::Stop(_)));
        assert_eq!(a.renew(lease).await.expect("renew"), RenewResult::TakenOver);
        assert!(!a.release(lease).await.expect("release"));
    }
    for i in 0..3 {
        assert_eq!(
            b.owner(&meeting(i)).await.expect("owner").as_ref(),
            Some(b.node().id())
        );
    }
    beat_b.abort();
}

/// Renewing keeps a lease alive past its TTL; a lease handle that is not the current one
/// (another node's now, or an older acquisition of the same node) renews and releases
/// nothing, and does not extend the current holder's TTL.
#[tokio::test]
async fn only_the_holder_renews_and_releases() {
    let redis = redis::start();
    let s = settings(2000);
    let a = connect(&redis, "node-a", &s).await;
    let b = connect(&redis, "node-b", &s).await;
    let mut raw = raw(&redis).await;
    let m = meeting(1);
    let key = s.keys.lease(&m);
    let pttl = |raw: &mut ::redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        let key = key.clone();
        async move {
            ::redis::cmd("PTTL")
                .arg(&key)
                .query_async::<i64>(&mut raw)
                .await
                .expect("PTTL")
        }
    };

    // The holder keeps its lease for over two TTLs by renewing every third of one.
    let mut lease_a = a.acquire(&m).await.expect("acquire").expect("free");
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        assert_eq!(
            a.renew(&mut lease_a).await.expect("renew"),
            RenewResult::Renewed
        );
        tokio::time::sleep(s.timing.renew_every()).await;
    }
    assert_eq!(
        b.owner(&m).await.expect("owner").as_ref(),
        Some(a.node().id())
    );
    assert!(b.acquire(&m).await.expect("acquire").is_none(), "held");

    // node-b's stale handle: b held the meeting once, released it, a holds it now.
    let m2 = meeting(2);
    let key2 = s.keys.lease(&m2);
    let mut stale_b = b.acquire(&m2).await.expect("acquire").expect("free");
    assert!(b.release(&stale_b).await.expect("release"));
    let lease_a2 = a
        .acquire(&m2)
        .await
        .expect("acquire")
        .expect("free after release");
    let value_before: String = ::redis::cmd("GET")
        .arg(&key2)
        .query_async(&mut raw)
        .await
        .expect("GET");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ttl_before: i64 = ::redis::cmd("PTTL")
        .arg(&key2)
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert_eq!(
        b.renew(&mut stale_b).await.expect("renew"),
        RenewResult::TakenOver
    );
    let ttl_after: i64 = ::redis::cmd("PTTL")
        .arg(&key2)
        .query_async(&mut raw)
        .await
        .expect("PTTL");
    assert!(
        ttl_after <= ttl_before,
        "not extended: {ttl_before} -> {ttl_after}"
    );
    assert!(
        !b.release(&stale_b).await.expect("release"),
        "released another's lease"
    );
    let value_after: String = ::redis::cmd("GET")
        .arg(&key2)
        .query_async(&mut raw)
        .await
        .expect("GET");
    assert_eq!(value_after, value_before, "the holder's lease is untouched");
    assert_eq!(
        a.owner(&m2).await.expect("owner").as_ref(),
        Some(a.node().id())
    );
    drop(lease_a2);

    // An older acquisition of the same node is not the current one either: a's first lease
    // on meeting 1 expires, a acquires it again, and the old handle renews nothing.
    let old = lease_a.clone();
    wait_for(
        "a's lease on meeting 1 expires",
        Duration::from_secs(30),
        || async { a.owner(&m).await.expect("owner").is_none() },
    )
    .await;
    let new = a.acquire(&m).await.expect("acquire").expect("free");
    let mut old = old;
    let before = pttl(&mut raw).await;
    assert_eq!(
        a.renew(&mut old).await.expect("renew"),
        RenewResult::TakenOver
    );
    assert!(pttl(&mut raw).await <= before);
    assert!(!a.release(&old).await.expect("release"));
    assert!(
        a.release(&new).await.expect("release"),
        "the current one releases"
    );
    assert_eq!(a.owner(&m).await.expect("owner"), None);
}

/// Issue 22, test 3 at the library's level: Redis restarted (empty) under held leases.
/// Meanwhile every request fails with `Unavailable`, and the lease timers keep the meetings
/// (the outage is shorter than the TTL); afterwards heartbeats recover, each owner takes its
/// leases back, and placement works again.
#[tokio::test]
async fn a_redis_restart_is_bridged() {
    let redis = redis::start();
    let s = settings(5000);
    let a = connect(&redis, "node-a", &s).await;
    let b = connect(&redis, "node-b", &s).await;
    a.heartbeat(Load::default()).await.expect("heartbeat");
    b.heartbeat(Load::default()).await.expect("heartbeat");
    let mut held = Vec::new();
    for i in 0..3 {
        let lease = a
            .acquire(&meeting(i))
            .await
            .expect("acquire")
            .expect("free");
        held.push((LeaseTimer::new(s.timing, lease.sent_at()), lease));
    }

    redis.stop();
    let m9 = meeting(9);
    assert!(matches!(
        a.heartbeat(Load::default()).await,
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(b.nodes().await, Err(Error::Unavailable(_))));
    assert!(matches!(b.place(&m9).await, Err(Error::Unavailable(_))));
    assert!(matches!(
        b.owner(&meeting(0)).await,
        Err(Error::Unavailable(_))
    ));
    for (timer, lease) in &mut held {
        assert!(matches!(a.renew(lease).await, Err(Error::Unavailable(_))));
        // What the server's keeper does meanwhile: renewals that cannot reach Redis are
        // retried, and the meeting is served on within the TTL.
        let r = keep(&a, timer, lease).await;
        assert!(matches!(r, None | Some(RenewResult::Unreachable)), "{r:?}");
        assert!(
            timer.is_held(Instant::now()),
            "still serving during the outage"
        );
    }
    let nobody = Node::new(node_id("node-x"), "https://x.example", vec![]).expect("node");
    assert!(matches!(
        Cluster::connect_with(&redis.url(), nobody, s.clone()).await,
        Err(Error::Unavailable(_))
    ));

    redis.start_again();
    wait_for("heartbeats recover", Duration::from_secs(30), || async {
        a.heartbeat(Load::default()).await.is_ok() && b.heartbeat(Load::default()).await.is_ok()
    })
    .await;
    // The keeper goes on: Redis kept nothing, so its next renewal takes each lease back,
    // the ones after it renew it; the meetings were held all along.
    let mut results: Vec<Vec<RenewResult>> = vec![Vec::new(); held.len()];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !results.iter().all(|r| r.contains(&RenewResult::Renewed)) {
        assert!(Instant::now() < deadline, "no renewals: {results:?}");
        for ((timer, lease), results) in held.iter_mut().zip(&mut results) {
            if let Some(r) = keep(&a, timer, lease).await {
                results.push(r);
            }
            assert!(
                timer.is_held(Instant::now()),
                "the meeting went on: {results:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for results in &results {
        let first_success = results.iter().find(|r| **r != RenewResult::Unreachable);
        assert_eq!(first_success, Some(&RenewResult::Reacquired), "{results:?}");
    }
    for i in 0..3 {
        assert_eq!(
            b.owner(&meeting(i)).await.expect("owner").as_ref(),
            Some(a.node().id())
        );
    }
    a.heartbeat(Load::default()).await.expect("heartbeat");
    b.heartbeat(Load::default()).await.expect("heartbeat");
    assert_eq!(b.nodes().await.expect("nodes").len(), 2);
    let p = b.place(&m9).await.expect("placement recovers");
    assert!(p.placed_now);
    assert_eq!(
        p.owner,
        *b.node().id(),
        "node-a holds three meetings, node-b none"
    );
}

/// Captures what the crate logs, for the test that checks a warning is written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Values klausur did not write under its keys: node keys are left out of the live nodes with
/// a warning, a lease that cannot be read is an error of its own (never a panic, never
/// silently overwritten), a key of the wrong type is a refused command.
#[tokio::test]
async fn malformed_values_are_reported_not_panicked_on() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let redis = redis::start();
    let s = settings(10_000);
    let a = connect(&redis, "node-a", &s).await;
    a.heartbeat(Load::default()).await.expect("heartbeat");
    let mut raw = raw(&redis).await;
    let good_b = {
        let b = connect(&redis, "node-b", &s).await;
        b.heartbeat(Load::default()).await.expect("heartbeat");
        let v: Vec<u8> = ::redis::cmd("GET")
            .arg("klausur-test:node:node-b")
            .query_async(&mut raw)
            .await
            .expect("GET");
        v
    };
    let raw_for_set = raw.clone();
    let set = |key: &str, value: Vec<u8>| {
        let mut raw = raw_for_set.clone();
        let key = key.to_owned();
        async move {
            ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async::<()>(&mut raw)
                .await
                .expect("SET");
        }
    };
    set("klausur-test:node:garbage", b"\xff\x00not json".to_vec()).await;
    set("klausur-test:node:node-c", good_b.clone()).await; // node-b's value under node-c's key
    set("klausur-test:node:bad:id", good_b).await;
    set(
        "klausur-test:node:v2",
        br#"{"v":2,"anything":true}"#.to_vec(),
    )
    .await;
    ::redis::cmd("LPUSH")
        .arg("klausur-test:node:a-list")
        .arg("x")
        .query_async::<()>(&mut raw)
        .await
        .expect("LPUSH");

    let live: Vec<String> = a
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .map(|r| r.node.id().to_string())
        .collect();
    assert_eq!(live, vec!["node-a", "node-b"]);
    let log = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(
        log.contains("ignoring a node key klausur cannot read"),
        "{log}"
    );
    assert!(
        log.contains("klausur-test:node:garbage") && log.contains("version 2"),
        "{log}"
    );

    // A lease value that is not one of ours: an error of its own, and it is not overwritten.
    let m = meeting(1);
    set(&s.keys.lease(&m), b"node-a".to_vec()).await;
    assert!(matches!(a.owner(&m).await, Err(Error::Malformed { .. })));
    assert!(matches!(a.place(&m).await, Err(Error::Malformed { .. })));
    assert!(a.acquire(&m).await.expect("acquire").is_none());
    assert!(a.adopt(&m).await.is_err());
    let err = a.owner(&m).await.expect_err("malformed").to_string();
    assert!(
        !err.contains("meeting-1"),
        "the meeting id stays out of the message: {err}"
    );
    assert!(a.leases_per_node().await.expect("count").is_empty());

    // A lease key of the wrong type.
    let m2 = meeting(2);
    ::redis::cmd("HSET")
        .arg(s.keys.lease(&m2))
        .arg("f")
        .arg("v")
        .query_async::<()>(&mut raw)
        .await
        .expect("HSET");
    assert!(matches!(a.owner(&m2).await, Err(Error::Refused(_))));
    assert!(matches!(a.place(&m2).await, Err(Error::Refused(_))));
    assert!(a.leases_per_node().await.is_ok());
}

/// Over `rediss://` the cluster speaks TLS and checks Redis's certificate against the CA it is
/// given: with the CA that issued it, placement works (and lands in the Redis behind the TLS
/// port); with another CA, with the system's roots (which do not hold the test CA), or with
/// `#insecure`, it does not connect at all.
#[tokio::test]
async fn over_tls_redis_must_show_a_certificate_of_the_given_ca() {
    let redis = redis::Redis::try_start_tls().unwrap_or_else(|e| panic!("{e}"));
    let url = redis.tls_url().expect("a TLS port");
    let ca_file = redis.tls_ca().expect("a test CA");
    let mut s = settings(10_000);
    s.tls_roots = Some(std::fs::read(ca_file).expect("read the CA"));
    let a = connect_to(&url, "node-a", &s)
        .await
        .unwrap_or_else(|e| panic!("connect over TLS: {e}"));
    a.heartbeat(Load::default()).await.expect("heartbeat");
    let placed = a.place(&meeting(1)).await.expect("place over TLS");
    assert_eq!(placed.owner, node_id("node-a"));
    // The same Redis seen through its plain port holds what went over TLS.
    let check = connect(&redis, "node-b", &settings(10_000)).await;
    assert_eq!(
        check.owner(&meeting(1)).await.expect("owner"),
        Some(node_id("node-a"))
    );

    // Negative controls: a certificate the client does not trust is refused.
    let other_dir = tempfile::tempdir().expect("tmp");
    let other = klausur_testbed::pki::issue(other_dir.path(), "other").expect("other CA");
    let mut wrong = settings(10_000);
    wrong.tls_roots = Some(std::fs::read(&other.ca).expect("read the other CA"));
    for (what, settings, target) in [
        ("another CA", wrong, url.clone()),
        ("the system's roots", settings(10_000), url.clone()),
        ("#insecure", s.clone(), format!("{url}#insecure")),
    ] {
        match connect_to(&target, "node-c", &settings).await {
            Ok(_) => panic!("connected over TLS with {what}"),
            Err(e) => {
                let e = e.to_string();
                let says = if what == "#insecure" {
                    "#insecure"
                } else {
                    "certificate"
                };
                assert!(e.contains(says), "with {what}: {e}");
                eprintln!("refused as it should be, with {what}: {e}");
            }
        }
    }
    // A CA for a plain redis:// URL is a mistake, not silently ignored.
    let err = connect_to(&redis.url(), "node-d", &s)
        .await
        .err()
        .expect("a CA with redis://")
        .to_string();
    assert!(err.contains("not rediss://"), "{err}");
}

/// A Redis restarted under a running meeting comes back empty; until the meeting's owner
/// renews, its lease is free. A node asked to place the meeting in that moment must not take it
/// from its owner: placement waits until Redis has run for a lease TTL (`Error::Settling`), by
/// when the owner has taken its lease back, and then finds the owner. Negative control: without
/// the wait, the other node places the meeting on itself, and the owner's next renewal finds
/// it taken over.
#[tokio::test]
async fn after_a_redis_restart_a_running_meeting_is_not_placed_anew() {
    let redis = redis::start();
    for settle in [true, false] {
        let s = Settings {
            settle,
            ..settings(3000)
        };
        let a = connect(&redis, "node-a", &s).await;
        let b = connect(&redis, "node-b", &s).await;
        let m = meeting(if settle { 1 } else { 2 });
        wait_for("a placement", Duration::from_secs(30), || async {
            !matches!(a.place(&m).await, Err(Error::Settling { .. }))
        })
        .await;
        assert_eq!(b.owner(&m).await.expect("owner"), Some(node_id("node-a")));
        let mut lease = a.adopt(&m).await.expect("adopt").expect("node-a's");
        let mut timer = LeaseTimer::new(s.timing, lease.sent_at());

        redis.stop();
        redis.start_again();
        // Right away, before node-a's keeper has renewed: node-b is asked to place it (its
        // first request finds the old connection broken; the next one reconnects).
        let deadline = Instant::now() + Duration::from_secs(2);
        let placed = loop {
            match b.place(&m).await {
                Err(Error::Unavailable(_)) if Instant::now() < deadline => {}
                other => break other,
            }
        };
        if settle {
            match placed {
                Err(Error::Settling { wait, .. }) => assert!(wait <= s.timing.lease_ttl()),
                other => panic!("placed on a Redis just restarted: {other:?}"),
            }
            // node-a's keeper renews meanwhile, as in the server.
            let deadline = Instant::now() + Duration::from_secs(30);
            let placement = loop {
                assert!(Instant::now() < deadline, "no placement after the restart");
                let _ = keep(&a, &mut timer, &mut lease).await;
                match b.place(&m).await {
                    Err(Error::Settling { .. }) | Err(Error::Unavailable(_)) => {}
                    Ok(p) => break p,
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(placement.owner, node_id("node-a"), "{placement:?}");
            assert!(!placement.placed_now);
            assert!(timer.is_held(Instant::now()), "node-a serves it on");
        } else {
            let p = placed.expect("placed without waiting");
            assert!(p.placed_now, "{p:?}");
            assert_eq!(p.owner, node_id("node-b"), "taken from its owner");
            // And node-a's next renewal finds it taken over.
            let deadline = Instant::now() + Duration::from_secs(30);
            let lost = loop {
                assert!(Instant::now() < deadline, "no renewal");
                match keep_or_lose(&a, &mut timer, &mut lease).await {
                    Ok(Some(RenewResult::TakenOver)) | Err(_) => break true,
                    Ok(Some(RenewResult::Unreachable) | None) => {}
                    Ok(Some(_)) => break false,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(lost, "node-a kept a meeting node-b also holds");
        }
    }
}
