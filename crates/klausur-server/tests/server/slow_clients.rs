//! A client that falls a whole queue of messages behind is disconnected, never left with a gap
//! (docs/protocol.md, "Slow clients"): before, the meeting dropped the messages that did not
//! fit and the client went on without them (MLS commits and Welcomes included). The slow
//! client here is a participant whose queue nobody reads, joined through the meeting registry
//! as the WebSocket task joins; the queue is made small so that few messages fill it.
//! Negative control: a participant whose queue is read stays in, through the same messages.

use std::sync::Arc;
use std::time::Duration;

use klausur_proto::{ClientMsg, LeaveReason, SecurityProfile, ServerMsg};
use klausur_server::admission::{self, Who};
use klausur_server::meeting::{JoinRequest, MeetingCmd};
use klausur_store::Role;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::common::ws::{session_cookie, Client};
use crate::common::TestServer;

const QUEUE: usize = 4;

#[tokio::test]
async fn a_client_a_whole_queue_behind_is_disconnected_one_that_reads_stays() {
    let srv = TestServer::start_with(|c| c.client_queue = QUEUE).await;
    let olga = srv.user("olga", Role::Staff).await;
    let m = srv
        .store
        .create_meeting(
            "slowmeeting00001",
            "Rat",
            None,
            olga.id,
            SecurityProfile::Internal,
        )
        .await
        .expect("meeting");
    let (_, gina_token) = srv
        .guest_invitation(&m.id, "Gina Gast", olga.id, chrono::Duration::hours(1))
        .await;
    let olga_id = olga.id;
    let cookie = session_cookie(&srv, "olga").await;
    let mut olga = Client::connect(&srv, Some(&cookie)).await;
    olga.join(&m.id, None, None).await;
    // Hans reads his messages (a real WebSocket client).
    let (_, hans_token) = srv
        .guest_invitation(&m.id, "Hans Hinz", olga_id, chrono::Duration::hours(1))
        .await;
    let mut hans = Client::connect(&srv, None).await;
    hans.join(&m.id, Some(&hans_token), None).await;

    // Gina's client never reads its queue.
    let who = Who::default();
    let (seed, standing) =
        admission::decide(&srv.store, &who, &m.id, Some(&gina_token), None, None, None)
            .await
            .expect("admitted");
    let meeting = srv.state.registry.get_or_start(&seed);
    let (tx, _unread) = mpsc::channel::<ServerMsg>(QUEUE);
    let kick = Arc::new(Notify::new());
    let (reply, peer) = oneshot::channel();
    meeting
        .send(MeetingCmd::Join(JoinRequest {
            standing,
            tx,
            kick: kick.clone(),
            reply,
        }))
        .await
        .expect("meeting running");
    let gina = format!("p{}", peer.await.expect("peer"));
    let kicked = kick.notified();

    // The organiser's media state changes reach everyone: more than Gina's queue holds. Olga
    // and Hans read along (Olga waits for each of her own updates).
    let mut left = None;
    for i in 0..(QUEUE + 4) {
        let muted = i % 2 == 0;
        olga.send(&ClientMsg::MediaState {
            audio_muted: muted,
            video_muted: false,
            screen_sharing: false,
        })
        .await;
        loop {
            match olga.next().await {
                ServerMsg::ParticipantUpdated { participant }
                    if participant.audio_muted == muted =>
                {
                    break
                }
                ServerMsg::ParticipantLeft {
                    participant_id,
                    reason,
                } if participant_id == gina => left = Some(reason),
                _ => {}
            }
        }
    }
    tokio::time::timeout(Duration::from_secs(10), kicked)
        .await
        .expect("the slow client's connection was not ended");
    while left.is_none() {
        if let ServerMsg::ParticipantLeft {
            participant_id,
            reason,
        } = olga.next().await
        {
            if participant_id == gina {
                left = Some(reason);
            }
        }
    }
    assert_eq!(left, Some(LeaveReason::Disconnected));
    // Hans read along and is still in: his ping is answered.
    hans.send(&ClientMsg::Ping).await;
    hans.until(|m| matches!(m, ServerMsg::Pong)).await;
}
