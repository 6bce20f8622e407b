//! Native meeting clients (`klausur-client`: real MLS and SFrame over signaling and WebRTC)
//! against the test server, and waiting for what they report.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use klausur_client::driver::{
    self, AudioFrame, AudioSink, ClientEvent, ClientHandle, ClientOptions,
};
use klausur_client::session::{Event, JoinAs};
use tokio::sync::mpsc;

use super::TestServer;

/// How long any one step may take.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Client {
    pub handle: ClientHandle,
    pub audio: mpsc::Receiver<AudioFrame>,
    pub codes: Vec<String>,
    pub in_group: bool,
    pub self_id: Option<String>,
    /// Times the server said this client's media connection was lost (`media_lost`).
    pub media_lost: usize,
    /// The time left each time the server said it is being taken out of service
    /// (`maintenance`), in milliseconds.
    pub maintenance: Vec<u64>,
    /// With [`Client::expect_to_stop`]: why the client stopped (its failure, or the reason
    /// the meeting ended for it), instead of a panic.
    pub stopped: Option<String>,
    may_stop: bool,
}

/// Starts a client that joins `meeting` and publishes audio; `id` tells clients apart.
pub fn start(srv: &TestServer, meeting: &str, join: JoinAs, id: u64) -> Client {
    start_at(&srv.base, meeting, join, id)
}

/// [`start`] against the server (or cluster node) at `base`.
pub fn start_at(base: &str, meeting: &str, join: JoinAs, id: u64) -> Client {
    start_with(base, meeting, join, id, None)
}

/// [`start_at`] as a dial-in gateway's client presenting `gateway_token`.
pub fn start_with(
    base: &str,
    meeting: &str,
    join: JoinAs,
    id: u64,
    gateway_token: Option<String>,
) -> Client {
    start_bound(
        base,
        meeting,
        join,
        id,
        gateway_token,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
}

/// [`start_with`] with its media socket on `bind_ip` (`::1`: a participant that speaks IPv6).
pub fn start_bound(
    base: &str,
    meeting: &str,
    join: JoinAs,
    id: u64,
    gateway_token: Option<String>,
    bind_ip: IpAddr,
) -> Client {
    let (tx, audio) = mpsc::channel(1024);
    let handle = driver::spawn(ClientOptions {
        server: base.to_string(),
        meeting_id: meeting.into(),
        join,
        publish_audio: true,
        bind_ip,
        client_id: id,
        audio: Some(AudioSink {
            tx,
            filter: Arc::new(|_| true),
        }),
        tls: None,
        gateway_token: gateway_token.map(zeroize::Zeroizing::new),
    });
    Client {
        handle,
        audio,
        codes: Vec::new(),
        in_group: false,
        self_id: None,
        media_lost: 0,
        maintenance: Vec::new(),
        stopped: None,
        may_stop: false,
    }
}

impl Client {
    /// From now on a failure or an end is recorded in [`Client::stopped`] instead of failing
    /// the test (a client whose server is killed).
    pub fn expect_to_stop(mut self) -> Self {
        self.may_stop = true;
        self
    }

    /// Handles the events that are there now; panics on a failure (unless
    /// [`Client::expect_to_stop`]).
    pub fn pump(&mut self) {
        while let Ok(e) = self.handle.events.try_recv() {
            match e {
                ClientEvent::Session(Event::SecurityCode(c)) => self.codes.push(c),
                ClientEvent::Session(Event::InGroup) => self.in_group = true,
                ClientEvent::Session(Event::Joined { self_id }) => self.self_id = Some(self_id),
                ClientEvent::Session(Event::MediaLost) => self.media_lost += 1,
                ClientEvent::Session(Event::Maintenance { in_ms }) => self.maintenance.push(in_ms),
                ClientEvent::Session(Event::Ended { reason, .. }) if self.may_stop => {
                    self.stopped.get_or_insert(format!("ended: {reason:?}"));
                }
                ClientEvent::Failed(e) if self.may_stop => {
                    self.stopped.get_or_insert(e);
                }
                ClientEvent::Stopped if self.may_stop => {
                    self.stopped.get_or_insert_with(|| "stopped".into());
                }
                ClientEvent::Failed(e) => panic!("client failed: {e}"),
                _ => {}
            }
        }
    }
}

/// Both clients send audio until each has received `frames` more frames from the other.
pub async fn hear_each_other(a: &mut Client, b: &mut Client, frames: usize, what: &str) {
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

/// Pumps the clients until `f` holds; fails after [`WAIT`].
pub async fn until(clients: &mut [&mut Client], what: &str, f: impl Fn(&[&mut Client]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for c in clients.iter_mut() {
            c.pump();
        }
        if f(clients) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts two clients in `meeting` and waits until the second is in the encrypted group with
/// the same security code as the first.
pub async fn pair(
    srv: &TestServer,
    meeting: &str,
    a: JoinAs,
    b: JoinAs,
    ids: (u64, u64),
) -> (Client, Client) {
    let mut a = start(srv, meeting, a, ids.0);
    until(&mut [&mut a], "the first client in the group", |c| {
        c[0].in_group
    })
    .await;
    let mut b = start(srv, meeting, b, ids.1);
    until(
        &mut [&mut a, &mut b],
        "the second client added by the first",
        |c| c[1].in_group && c[0].codes.last().is_some() && c[0].codes.last() == c[1].codes.last(),
    )
    .await;
    (a, b)
}
