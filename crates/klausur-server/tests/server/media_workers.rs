//! Media workers: one port each, from the configured one on; rooms placed on the worker with
//! the fewest peers, then the fewest rooms; a room's commands reach the worker that owns it;
//! a start that cannot bind every worker's port starts none. (That media flows on every
//! worker, and a failing worker is restarted, `tests/media_faults.rs` shows with clients.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use klausur_room::RoomEvent;
use klausur_server::media::{self, MediaCmd, MediaConfig, MediaHandle};
use tokio::sync::mpsc;

use crate::process::free_port_block;

fn config(listen: SocketAddr, workers: usize) -> MediaConfig {
    MediaConfig {
        workers,
        ..MediaConfig::single(listen, [127, 0, 0, 1].into(), true)
    }
}

fn open(media: &MediaHandle, room: u64) -> mpsc::UnboundedReceiver<RoomEvent> {
    let (events, rx) = mpsc::unbounded_channel();
    media.send(MediaCmd::OpenRoom { room, events });
    rx
}

/// Each worker's open rooms, once the workers have seen every command sent so far.
async fn rooms_per_worker(media: &MediaHandle) -> Vec<usize> {
    media.worker_stats().await.iter().map(|w| w.rooms).collect()
}

#[tokio::test]
async fn workers_listen_on_consecutive_ports_from_the_configured_one() {
    let first = free_port_block(3);
    let listen = SocketAddr::from(([127, 0, 0, 1], first));
    let (media, addrs) = media::start(config(listen, 3)).await.expect("start");
    let ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
    assert_eq!(ports, [first, first + 1, first + 2]);
    assert_eq!(media.addresses(), addrs);
    // Each listens for ICE-TCP on its UDP port number too: the ports are taken for both.
    for port in &ports {
        assert!(std::net::UdpSocket::bind(("127.0.0.1", *port)).is_err());
        assert!(std::net::TcpListener::bind(("127.0.0.1", *port)).is_err());
    }
    // With port 0, each worker on a free port of its own.
    let (_other, addrs) = media::start(config("127.0.0.1:0".parse().expect("addr"), 2))
        .await
        .expect("start");
    assert_ne!(addrs[0].port(), addrs[1].port());
}

#[tokio::test]
async fn a_start_that_cannot_bind_every_worker_starts_none() {
    let first = free_port_block(2);
    // The second worker's port is taken.
    let _taken = std::net::UdpSocket::bind(("127.0.0.1", first + 1)).expect("bind");
    let listen = SocketAddr::from(([127, 0, 0, 1], first));
    let e = media::start(config(listen, 2))
        .await
        .err()
        .expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("media worker 1") && text.contains(&(first + 1).to_string()),
        "{text}"
    );
    // The first worker's port was given back.
    let (_media, addrs) = media::start(config(listen, 1)).await.expect("start");
    assert_eq!(addrs[0].port(), first);
    // Nonsense counts are refused with the range.
    for workers in [0, media::MAX_WORKERS + 1] {
        let e = media::start(config("127.0.0.1:0".parse().expect("addr"), workers))
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("must be 1 to"), "{e}");
    }
}

#[tokio::test]
async fn rooms_go_to_the_worker_with_the_fewest_peers_then_the_fewest_rooms() {
    let (media, _) = media::start(config("127.0.0.1:0".parse().expect("addr"), 3))
        .await
        .expect("start");
    let mut keep = Vec::new();
    for room in 1..=6 {
        keep.push(open(&media, room));
    }
    // No peers anywhere: spread by rooms, in worker order.
    assert_eq!(rooms_per_worker(&media).await, [2, 2, 2]);
    let placed: Vec<Option<usize>> = (1..=6).map(|r| media.worker_of(r)).collect();
    assert_eq!(
        placed,
        [Some(0), Some(1), Some(2), Some(0), Some(1), Some(2)]
    );
    // Three peers in room 1 (worker 0), one in room 2 (worker 1): the next rooms go to
    // worker 2, the one without peers, although it has as many rooms as the others.
    for peer in 1..=3 {
        media.add_peer(1, peer).await.expect("peer");
    }
    media.add_peer(2, 1).await.expect("peer");
    keep.push(open(&media, 7));
    keep.push(open(&media, 8));
    assert_eq!(media.worker_of(7), Some(2));
    assert_eq!(media.worker_of(8), Some(2));
    assert_eq!(rooms_per_worker(&media).await, [2, 2, 4]);
    let peers: Vec<usize> = media.worker_stats().await.iter().map(|w| w.peers).collect();
    assert_eq!(peers, [3, 1, 0]);

    // A room's commands reach its worker: a peer added to room 8 is counted on worker 2, and
    // a room closed is gone from its worker and from the placement.
    media.add_peer(8, 1).await.expect("peer");
    media.send(MediaCmd::CloseRoom { room: 4 });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = media.worker_stats().await;
        if stats[0].rooms == 1 {
            assert_eq!(stats[2].peers, 1, "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(media.worker_of(4), None);
    // A command for a room never opened is answered, not lost.
    let e = media.add_peer(99, 1).await.expect_err("not open");
    assert!(e.contains("not open"), "{e}");
    // The summed counters are the workers' together.
    let total = media.stats().await;
    assert_eq!((total.rooms, total.peers), (7, 5));
}
