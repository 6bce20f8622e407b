//! The gateway's connection to the server breaks while a caller is in the meeting (the network
//! between a gateway host and the server, a proxy restarting): the caller stays on the line,
//! hears that the connection is being restored, and is back in the meeting with a new seat and
//! a new member of the encrypted group. When the server stays out of reach, the call ends with
//! a prompt after the last attempt.
//!
//! The gateway reaches the server through a TCP relay in this test that the test cuts; the
//! server keeps running throughout (a restarted server forgets the call's ticket and refuses it:
//! the call ends, see the voice menu's tests).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::erika_in_meeting;
use super::sipp::End;

/// A TCP relay to `to` whose connections the test can break.
pub struct Relay {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    open: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay");
        let addr = listener.local_addr().expect("relay address");
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let open = Arc::new(AtomicBool::new(true));
        let accept = tokio::spawn({
            let (conns, open) = (conns.clone(), open.clone());
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !open.load(Ordering::SeqCst) {
                        // Closed: the connection ends at once.
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(to).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut conns = conns.lock().unwrap_or_else(|p| p.into_inner());
                    conns.retain(|h| !h.is_finished());
                    conns.push(relay);
                }
            }
        });
        Relay {
            addr,
            conns,
            open,
            accept,
        }
    }

    /// Breaks every connection through the relay; new ones still get through.
    pub fn cut(&self) {
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    /// Breaks every connection, and lets none through from now on.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cut();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The connection breaks while the caller talks: the caller is back in the meeting (a new seat,
/// a new member of the group) and heard again, and the call was never hung up (sipp fails on a
/// BYE it did not send).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_back_in_the_meeting_after_the_connection_broke() {
    let (d, mut max, sipp, first) = erika_in_meeting(
        true,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "dialmeet00000021",
        true,
        45,
        End::CallerHangsUp,
    )
    .await;
    max.until("the caller's audio", |m| {
        m.heard.get(&first).copied().unwrap_or(0) > 50
    })
    .await;

    d.relay.as_ref().expect("relay").cut();

    max.until("the caller back with a new seat, in the group", |m| {
        !m.participants.iter().any(|p| p.id == first)
            && m.phone().is_some_and(|p| p.id != first && p.leaf.is_some())
            && m.phone_in_roster()
            && m.roster.len() == 2
    })
    .await;
    let second = max.phone().expect("phone").id.clone();
    assert_eq!(
        max.phone().expect("phone").display_name,
        "Erika Musterfrau",
        "the same invitee"
    );
    max.until("the caller heard again", |m| {
        m.heard.get(&second).copied().unwrap_or(0) > 50
    })
    .await;

    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(90)))
        .await
        .expect("join");
    assert_eq!(
        code,
        Some(0),
        "the call went on to the caller's own BYE:\n{trace}"
    );
}

/// The server stays out of reach: after the last attempt (about 15 s) the gateway plays its
/// prompt and hangs up, and the caller's seat is gone from the meeting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_out_of_reach_ends_the_call_after_the_last_attempt() {
    let (d, mut max, sipp, first) = erika_in_meeting(
        true,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        "dialmeet00000022",
        false,
        75,
        End::GatewayHangsUp,
    )
    .await;

    d.relay.as_ref().expect("relay").close();

    let (code, trace) = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(120)))
        .await
        .expect("join");
    assert_eq!(code, Some(0), "the gateway hung up:\n{trace}");
    max.until("the caller's seat gone", |m| {
        !m.participants.iter().any(|p| p.id == first) && m.phone().is_none()
    })
    .await;
}
