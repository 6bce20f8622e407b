//! ICE-TCP on the media worker: a str0m client connects (ICE + DTLS) over a TCP connection
//! with RFC 4571 framing, the connection goes when the peer leaves; bad framing closes a
//! connection, connections that belong to no peer are bounded and time out, and a forged
//! binding request does not claim a connection for a peer.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use klausur_proto::{SendSource, Source};
use klausur_room::RoomEvent;
use klausur_server::media::{self, tcp, MediaCmd, MediaConfig, MediaHandle, MediaStats};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(15);

async fn worker(tcp: bool) -> (MediaHandle, SocketAddr) {
    let (media, addrs) = media::start(MediaConfig::single(
        "127.0.0.1:0".parse().expect("addr"),
        [127, 0, 0, 1].into(),
        tcp,
    ))
    .await
    .expect("media worker starts");
    (media, addrs[0])
}

fn open_room(media: &MediaHandle) -> mpsc::UnboundedReceiver<RoomEvent> {
    let (events, rx) = mpsc::unbounded_channel();
    media.send(MediaCmd::OpenRoom { room: 1, events });
    rx
}

/// Waits until the worker's counters satisfy `f`.
async fn stats_until(media: &MediaHandle, what: &str, f: impl Fn(&MediaStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = media.stats().await;
        if f(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the server closed `s` within [`WAIT`] (reads and drops whatever it sends).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Whether `s` is still open after a moment (nothing to read, no end of stream).
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn frame(packet: &[u8]) -> Vec<u8> {
    let mut v = (packet.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(packet);
    v
}

/// A str0m client with a TCP candidate on `stream`, offering one audio track; runs ICE and
/// DTLS over the stream until connected. Returns the answer SDP and the client, still
/// connected (the stream stays with it).
struct TcpClient {
    rtc: Rtc,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    inbuf: Vec<u8>,
}

impl TcpClient {
    fn new(server: SocketAddr) -> TcpClient {
        let stream = TcpStream::connect(server).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        let local = stream.local_addr().expect("local");
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        let c = Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build()
            .expect("candidate");
        rtc.add_local_candidate(c);
        TcpClient {
            rtc,
            stream,
            local,
            remote: server,
            inbuf: Vec::new(),
        }
    }

    /// Runs the client until it is connected (ICE and DTLS) or [`WAIT`] passes.
    fn connect(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            loop {
                match self.rtc.poll_output().expect("client poll") {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        assert_eq!(t.proto, Protocol::Tcp, "the client has only TCP");
                        self.stream.write_all(&frame(&t.contents)).expect("write");
                    }
                    Output::Event(Event::Connected) => return true,
                    Output::Event(_) => {}
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return false,
            }
            while self.inbuf.len() >= 2 {
                let n = u16::from_be_bytes([self.inbuf[0], self.inbuf[1]]) as usize;
                if self.inbuf.len() < 2 + n {
                    break;
                }
                let packet: Vec<u8> = self.inbuf.drain(..2 + n).skip(2).collect();
                let receive = Receive::new(Protocol::Tcp, self.remote, self.local, &packet)
                    .expect("server packet parses");
                self.rtc
                    .handle_input(Input::Receive(Instant::now(), receive))
                    .expect("client input");
            }
            self.rtc
                .handle_input(Input::Timeout(Instant::now()))
                .expect("client timeout");
        }
        false
    }
}

async fn negotiate(media: &MediaHandle, peer: u64, client: &mut TcpClient) -> String {
    media.add_peer(1, peer).await.expect("add peer");
    let mut api = client.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let sources = vec![SendSource {
        mid: mid.to_string(),
        source: Source::Microphone,
    }];
    let answer = media
        .offer(1, peer, offer.to_sdp_string(), sources)
        .await
        .expect("offer accepted");
    let parsed = SdpAnswer::from_sdp_string(&answer.sdp).expect("answer parses");
    client
        .rtc
        .sdp_api()
        .accept_answer(pending, parsed)
        .expect("answer accepted");
    answer.sdp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_connects_over_tcp_and_its_connection_goes_with_it() {
    let (media, addr) = worker(true).await;
    let mut events = open_room(&media);
    let mut client = TcpClient::new(addr);
    let sdp = negotiate(&media, 7, &mut client).await;
    let tcp_at = format!(" 127.0.0.1 {} typ host tcptype passive", addr.port());
    assert!(
        sdp.lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains(" tcp ") && l.contains(&tcp_at)),
        "the answer announces a passive TCP candidate on the media port:\n{sdp}"
    );
    assert!(
        sdp.lines()
            .any(|l| l.starts_with("a=candidate:") && l.contains(" udp ")),
        "and the UDP one:\n{sdp}"
    );
    let (mut client, connected) = tokio::task::spawn_blocking(move || {
        let ok = client.connect();
        (client, ok)
    })
    .await
    .expect("client thread");
    assert!(connected, "ICE and DTLS over TCP");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the room reports the peer connected")
            .expect("events");
        if ev == RoomEvent::Connected(7) {
            break;
        }
    }
    stats_until(&media, "one connection, the peer's", |s| {
        s.tcp_connections == 1 && s.tcp_peer_connections == 1 && s.tcp_frames > 0
    })
    .await;
    assert_eq!(
        media.stats().await.received_datagrams,
        0,
        "nothing over UDP"
    );

    // The peer leaves: its connection is closed.
    media.send(MediaCmd::RemovePeer { room: 1, peer: 7 });
    let closed = tokio::task::spawn_blocking(move || closed_by_server(&mut client.stream))
        .await
        .expect("thread");
    assert!(closed, "the leaving peer's connection is closed");
    stats_until(&media, "no connection left", |s| s.tcp_connections == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_closes_the_connection() {
    let (media, addr) = worker(true).await;
    let _events = open_room(&media);
    let good = tokio::task::spawn_blocking(move || {
        let mut results = Vec::new();
        // A zero length, a length over the longest frame, the largest length there is.
        let too_long = ((tcp::MAX_FRAME + 1) as u16).to_be_bytes();
        for bytes in [vec![0u8, 0], too_long.to_vec(), vec![0xff, 0xff, 1, 2, 3]] {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(&bytes).expect("write");
            results.push(closed_by_server(&mut s));
        }
        // A well-framed packet that is no binding request: dropped, the connection stays.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(&frame(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]))
            .expect("write");
        results.push(still_open(&mut s));
        (results, s)
    })
    .await
    .expect("thread");
    let (results, _open) = good;
    assert_eq!(results, [true, true, true, true]);
    stats_until(&media, "three refused, one open", |s| {
        s.tcp_refused_frames == 3 && s.tcp_connections == 1 && s.tcp_peer_connections == 0
    })
    .await;
    // The server still works: a client connects.
    let mut client = TcpClient::new(addr);
    negotiate(&media, 8, &mut client).await;
    let connected = tokio::task::spawn_blocking(move || client.connect())
        .await
        .expect("thread");
    assert!(connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_no_peer_are_bounded_and_time_out() {
    let (media, addr) = worker(true).await;
    let _events = open_room(&media);
    media.add_peer(1, 9).await.expect("peer");
    // Many connections that never prove a peer: the oldest are closed beyond the bound.
    let extra = 16;
    let t0 = Instant::now();
    let mut conns: Vec<TcpStream> = (0..tcp::MAX_PENDING + extra)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    stats_until(&media, "pending connections bounded", |s| {
        s.tcp_connections == tcp::MAX_PENDING
    })
    .await;
    let (old, new) = conns.split_at_mut(extra);
    let (closed_old, open_new) = tokio::task::spawn_blocking({
        let mut old: Vec<TcpStream> = old.iter().map(|s| s.try_clone().expect("clone")).collect();
        let mut new: Vec<TcpStream> = new.iter().map(|s| s.try_clone().expect("clone")).collect();
        move || {
            (
                old.iter_mut().all(closed_by_server),
                new.iter_mut().all(still_open),
            )
        }
    })
    .await
    .expect("thread");
    assert!(closed_old, "the oldest connections were closed");
    assert!(open_new, "the newest stay");
    // A forged binding request (a peer's ufrag is not known here, a made-up one is; and no
    // valid integrity) does not make a connection a peer's.
    let stun = stun_binding_request("nosuchufrag:remote");
    conns[extra].write_all(&frame(&stun)).expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(media.stats().await.tcp_peer_connections, 0);
    // Unproven connections are closed after the pending timeout.
    stats_until(&media, "pending connections time out", |s| {
        s.tcp_connections == 0
    })
    .await;
    assert!(
        t0.elapsed() >= tcp::PENDING_TIMEOUT,
        "closed by the timeout, not before"
    );
    drop(conns);
}

/// A STUN binding request with the given USERNAME and no integrity.
fn stun_binding_request(username: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attrs.extend_from_slice(&0x0006u16.to_be_bytes());
    attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attrs.extend_from_slice(username.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    let mut m = Vec::new();
    m.extend_from_slice(&0x0001u16.to_be_bytes());
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&0x2112A442u32.to_be_bytes());
    m.extend_from_slice(&[7u8; 12]);
    m.extend_from_slice(&attrs);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tcp_no_candidate_and_no_listener() {
    let (media, addr) = worker(false).await;
    let _events = open_room(&media);
    let mut client = TcpClient::new_unconnected(addr);
    let sdp = negotiate(&media, 3, &mut client).await;
    assert!(!sdp.contains(" tcp "), "no TCP candidate:\n{sdp}");
    assert!(TcpStream::connect(addr).is_err(), "nothing listens on TCP");
}

impl TcpClient {
    /// A client whose stream is not connected to anything (for an offer only).
    fn new_unconnected(server: SocketAddr) -> TcpClient {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let local = stream.local_addr().expect("local");
        TcpClient {
            rtc: Rtc::builder().set_rtp_mode(true).build(Instant::now()),
            stream,
            local,
            remote: server,
            inbuf: Vec::new(),
        }
    }
}
