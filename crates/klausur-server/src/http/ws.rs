//! The meeting WebSocket: validates every incoming frame (size, shape, rate) and relays it to
//! the meeting actor. A frame refused here, or a `join` refused, is answered with an `error`
//! reply (a [`Refusal`], made a message in [`crate::meeting::signaling_error`]); the connection and the
//! meeting carry on.
//!
//! Every frame the client sends counts against the connection's rate limit, whatever its kind
//! (text, binary, ping, pong): frames beyond it are dropped unread, a data frame with a
//! `rate_limited` reply. A connection whose session or account was ended meanwhile
//! ([`crate::connections`]) stops reading at once and closes with close code 1008 (policy) and
//! the reason [`SESSION_ENDED`]; its participant leaves the meeting as after a broken
//! connection. So does one whose session is found invalid when it looks, every
//! `ws_session_check` (ended elsewhere, or expired). A client that falls a whole queue of
//! messages behind (`client_queue`, 512) is closed with 1013 (try again) and the reason
//! [`TOO_SLOW`] rather than left with a gap: it joins again and gets the meeting afresh.

use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use klausur_proto::{ClientMsg, ErrorCode, ServerMsg};
use tokio::sync::{mpsc, oneshot};

use crate::admission::{self, AdmissionError, Who};
use crate::cluster::Where;
use crate::connections::Live;
use crate::meeting::signaling_error::Refusal;
use crate::meeting::{JoinRequest, MeetingCmd};
use crate::state::AppState;

/// The close reason of a connection whose session or account was ended.
pub const SESSION_ENDED: &str = "session ended";

/// The close reason of a connection whose client fell a whole queue of messages behind.
pub const TOO_SLOW: &str = "too slow to keep up";

/// Token bucket: sustained messages per second and burst.
const RATE_PER_SEC: f64 = 20.0;
const BURST: f64 = 60.0;

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            tokens: BURST,
            last: Instant::now(),
        }
    }
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * RATE_PER_SEC).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Serves one WebSocket connection. `who` is the HTTP session's user, if logged in; `live` its
/// registration ([`crate::connections`]), which ends the connection when the session ends and
/// is released when it closes.
pub async fn serve(state: AppState, socket: WebSocket, who: Who, mut live: Live) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<ServerMsg>(state.config.client_queue);
    // The meeting pulls this when the client falls a whole queue behind (see `meeting.rs`).
    let kick = std::sync::Arc::new(tokio::sync::Notify::new());
    let (close_tx, mut close_rx) = oneshot::channel::<CloseFrame>();
    let keepalive = state.config.ws_keepalive;
    let idle = state.config.ws_idle;

    // Writer: forwards the actor's messages and sends a WebSocket ping every `keepalive` (the
    // browser's pong keeps the reader below from timing out); closes after an `ended`, or with
    // the frame the reader hands it.
    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut close_open = true;
        loop {
            let msg = tokio::select! {
                // A close frame from the reader goes out before the queue's end is noticed.
                biased;
                frame = &mut close_rx, if close_open => {
                    match frame {
                        Ok(frame) => {
                            let _ = sink.send(Message::Close(Some(frame))).await;
                            break;
                        }
                        // The reader ended without a close frame to send.
                        Err(_) => {
                            close_open = false;
                            continue;
                        }
                    }
                }
                msg = rx.recv() => match msg {
                    Some(msg) => msg,
                    None => break,
                },
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let last = matches!(msg, ServerMsg::Ended { .. });
            if sink.send(Message::Text(msg.encode().into())).await.is_err() {
                break;
            }
            if last {
                let _ = sink.send(Message::Close(None)).await;
                break;
            }
        }
    });

    let mut bucket = Bucket::new();
    let mut joined: Option<(mpsc::Sender<MeetingCmd>, klausur_room::PeerId)> = None;
    let mut session_ended = false;
    let mut too_slow = false;
    // Sent to the node that runs the meeting: every further frame is refused.
    let mut redirected = false;
    let session = live.owner().map(|o| o.session.clone());
    let check_every = state.config.ws_session_check;
    let mut session_check =
        tokio::time::interval_at(tokio::time::Instant::now() + check_every, check_every);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A connection that sent nothing (no message, no pong to the writer's pings) for `idle` is
    // gone: its participant leaves.
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    loop {
        let next = tokio::select! {
            // An ended session wins over a frame that is ready at the same time.
            biased;
            () = live.ended() => {
                session_ended = true;
                break;
            }
            () = kick.notified() => {
                too_slow = true;
                break;
            }
            _ = session_check.tick(), if session.is_some() => {
                let id_hash = session.as_deref().unwrap_or_default();
                // Only an answer that the session is gone ends it (not a storage error).
                if let Ok(None) = crate::http::extract::ready_user(&state, id_hash).await {
                    session_ended = true;
                    break;
                }
                continue;
            }
            next = tokio::time::timeout_at(idle_deadline, stream.next()) => next,
        };
        let frame = match next {
            Ok(Some(Ok(frame))) => frame,
            _ => break,
        };
        idle_deadline = tokio::time::Instant::now() + idle;
        if let Message::Close(_) = frame {
            break;
        }
        if tx.is_closed() {
            break;
        }
        // Every frame counts, whatever its kind.
        if !bucket.take(Instant::now()) {
            if matches!(frame, Message::Text(_) | Message::Binary(_)) {
                reply(
                    &tx,
                    Refusal(
                        ErrorCode::RateLimited,
                        "too many messages; this one was dropped".into(),
                    ),
                );
            }
            continue;
        }
        let text = match frame {
            Message::Text(t) => t,
            Message::Binary(_) => {
                reply(
                    &tx,
                    Refusal(
                        ErrorCode::Malformed,
                        "binary frames are not part of the protocol".into(),
                    ),
                );
                continue;
            }
            _ => continue,
        };
        let msg = match ClientMsg::decode(text.as_str()) {
            Ok(m) => m,
            Err(e) => {
                reply(&tx, e.into());
                continue;
            }
        };
        if redirected {
            reply(
                &tx,
                Refusal(
                    ErrorCode::InvalidState,
                    "this connection was redirected to the node that runs the meeting".into(),
                ),
            );
            continue;
        }
        match (&joined, msg) {
            (
                None,
                ClientMsg::Join {
                    meeting_id,
                    invite_token,
                    display_name,
                    rejoin_token,
                    dial_in_ticket,
                },
            ) => {
                // The one rule for names (klausur_proto::text): a lobby guest's name as the
                // list will show it, or an error that says what is wrong.
                let display_name =
                    match display_name.as_deref().map(klausur_proto::text::check_name) {
                        None => None,
                        Some(Ok(name)) => Some(name),
                        Some(Err(e)) => {
                            let message = format!("display_name {e}");
                            reply(&tx, Refusal(ErrorCode::InvalidField, message));
                            continue;
                        }
                    };
                let fields = JoinFields {
                    meeting_id,
                    invite_token,
                    rejoin_token,
                    display_name,
                    dial_in_ticket,
                };
                match join(&state, &who, fields, &tx, &kick).await {
                    Ok(Joined::Here(meeting, peer)) => joined = Some((meeting, peer)),
                    Ok(Joined::Redirect(url)) => {
                        // Nothing more happens on this connection: the client goes there.
                        let _ = tx.send(ServerMsg::Redirect { url }).await;
                        redirected = true;
                    }
                    Err(e) => reply(&tx, e.into()),
                }
            }
            (None, ClientMsg::Ping) => {
                let _ = tx.try_send(ServerMsg::Pong);
            }
            (None, other) => reply(
                &tx,
                Refusal(
                    ErrorCode::NotJoined,
                    format!("send join before {}", other.type_name()),
                ),
            ),
            (Some((meeting, peer)), msg) => {
                let leaving = matches!(msg, ClientMsg::Leave);
                if meeting
                    .send(MeetingCmd::Msg { peer: *peer, msg })
                    .await
                    .is_err()
                {
                    break;
                }
                if leaving {
                    break;
                }
            }
        }
    }
    if let Some((meeting, peer)) = joined {
        let _ = meeting.send(MeetingCmd::Disconnected { peer }).await;
    }
    if session_ended {
        let _ = close_tx.send(CloseFrame {
            code: close_code::POLICY,
            reason: SESSION_ENDED.into(),
        });
    } else if too_slow {
        // The client joins again by itself and gets the meeting's state afresh.
        let _ = close_tx.send(CloseFrame {
            code: close_code::AGAIN,
            reason: TOO_SLOW.into(),
        });
    } else {
        drop(close_tx);
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    drop(live);
}

fn reply(tx: &mpsc::Sender<ServerMsg>, refusal: Refusal) {
    let _ = tx.try_send(refusal.into());
}

/// Where a `join` led.
enum Joined {
    /// Into the meeting on this node, as this participant.
    Here(mpsc::Sender<MeetingCmd>, klausur_room::PeerId),
    /// To the node at this base URL, which runs the meeting.
    Redirect(String),
}

/// The fields of a `join`.
struct JoinFields {
    meeting_id: String,
    invite_token: Option<String>,
    rejoin_token: Option<String>,
    display_name: Option<String>,
    dial_in_ticket: Option<String>,
}

async fn join(
    state: &AppState,
    who: &Who,
    fields: JoinFields,
    tx: &mpsc::Sender<ServerMsg>,
    kick: &std::sync::Arc<tokio::sync::Notify>,
) -> Result<Joined, AdmissionError> {
    let JoinFields {
        meeting_id,
        invite_token,
        rejoin_token,
        display_name,
        dial_in_ticket,
    } = fields;
    // The dial-in gateway, for a telephone caller: the ticket names the invitation. Only the
    // gateway presents tickets: from anyone else one is refused before it is looked up.
    let dial_in = match dial_in_ticket {
        Some(_) if !who.gateway => return Err(AdmissionError::TicketNotFromGateway),
        Some(t) => {
            let (ticket, invitation) =
                crate::http::dialin_api::ticket_invitation(state, &t, Some(&meeting_id)).await?;
            Some(admission::DialInArrival {
                invitation,
                number_suffix: ticket.number_suffix,
            })
        }
        None => None,
    };
    let (seed, standing) = admission::decide(
        &state.store,
        who,
        &meeting_id,
        invite_token.as_deref(),
        rejoin_token.as_deref(),
        display_name,
        dial_in,
    )
    .await?;
    // In a cluster: the meeting runs on one node; a join that reaches another is redirected.
    let mut lease = None;
    if let Some(cluster) = &state.cluster {
        if state.registry.running_actor(&seed.id).is_none() {
            match cluster.place(&seed.id).await? {
                Where::Here(l) => lease = Some(l),
                Where::There(url) => return Ok(Joined::Redirect(url)),
            }
        }
    }
    for _ in 0..3 {
        let (meeting, started) = state.registry.start_or_get(&seed);
        if let (true, Some(cluster)) = (started, &state.cluster) {
            // Started here: its lease, placed above, or now (the actor that ran when this
            // join arrived ended meanwhile), kept while it runs.
            let lease = match lease.take() {
                Some(l) => l,
                None => match cluster.place(&seed.id).await {
                    Ok(Where::Here(l)) => l,
                    Ok(Where::There(url)) => {
                        let _ = meeting.send(MeetingCmd::Shutdown).await;
                        return Ok(Joined::Redirect(url));
                    }
                    Err(e) => {
                        let _ = meeting.send(MeetingCmd::Shutdown).await;
                        return Err(e);
                    }
                },
            };
            cluster.keep(lease, meeting.clone());
        }
        let (reply, peer_rx) = oneshot::channel();
        let req = JoinRequest {
            standing: standing.clone(),
            tx: tx.clone(),
            kick: kick.clone(),
            reply,
        };
        if meeting.send(MeetingCmd::Join(req)).await.is_err() {
            continue;
        }
        if let Ok(peer) = peer_rx.await {
            return Ok(Joined::Here(meeting, peer));
        }
    }
    Err(AdmissionError::Internal(
        "the meeting could not be started".into(),
    ))
}
