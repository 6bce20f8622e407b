//! The meeting's async driver: one task per running meeting that feeds the rules
//! ([`super::rules::Meeting`]) their inputs with the time, and does what they output: sends
//! to the participants' connections, writes audit records and stored state, talks to the media
//! worker, and answers the rules' requests from the database and the media worker.
//!
//! It owns what the rules must not: the connections (a queue and a kick per participant), the
//! clock, the store and the media handle. A client whose queue is full has missed a message:
//! it is disconnected (it joins again and gets the meeting afresh), never left with a gap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use klausur_proto::{ClientMsg, ErrorCode, ServerMsg};
use klausur_room::{PeerId, RoomEvent};
use klausur_store::{BanSubject, Store};
use tokio::sync::{mpsc, oneshot};

use super::ids::participant_id;
#[cfg(feature = "test-hooks")]
use super::rules::CommitMaker;
use super::rules::{Input, Life, MediaOp, Meeting, Now, Output, Request, StoreOp};
use super::signaling_error::Refusal;
use crate::admission::{MeetingSeed, Pass, Standing};
use crate::audit::Audit;
use crate::media::{MediaCmd, MediaHandle, RoomKey};

pub struct JoinRequest {
    pub standing: Standing,
    pub tx: mpsc::Sender<ServerMsg>,
    /// Ends the connection when its client fell a whole queue of messages behind.
    pub kick: Arc<tokio::sync::Notify>,
    pub reply: oneshot::Sender<PeerId>,
}

pub enum MeetingCmd {
    Join(JoinRequest),
    Msg {
        peer: PeerId,
        msg: ClientMsg,
    },
    Disconnected {
        peer: PeerId,
    },
    Shutdown,
    /// The server is being taken out of service and stops at the latest at this time.
    Maintenance(Instant),
    /// Test builds only: act as a malicious server (see `test_hooks`).
    #[cfg(feature = "test-hooks")]
    InjectGhost(Forgery),
    /// Test builds only: tell everyone else that `peer` left while it stays connected and the
    /// media server keeps forwarding to it (a server that keeps a removed member listening).
    #[cfg(feature = "test-hooks")]
    Hide {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    /// Test builds only: the media server forgets `peer`'s media connection (as after a failed
    /// ICE consent check) while its signaling and its place in the meeting stay.
    #[cfg(feature = "test-hooks")]
    DropMedia {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
    /// Test builds only: the meeting's media core panics on its next call, or with
    /// `whole_worker`, the media worker it is placed on panics outside any room.
    #[cfg(feature = "test-hooks")]
    PanicMedia {
        whole_worker: bool,
        reply: oneshot::Sender<bool>,
    },
}

/// What `test_hooks` hands the meeting to inject: a commit maker (given the group id), a key
/// package with a forged credential, and where to report what was sent.
#[cfg(feature = "test-hooks")]
pub struct Forgery {
    pub commit: CommitMaker,
    pub key_package: Vec<u8>,
    pub reply: oneshot::Sender<serde_json::Value>,
}

/// What the driver needs besides the meeting.
pub(super) struct Deps {
    pub media: MediaHandle,
    pub store: Store,
    pub audit: Audit,
    /// The TURN server participants get credentials for (`[turn]`).
    pub turn: Option<Arc<crate::turn::TurnConfig>>,
    /// When the server stops at the latest, if it is being taken out of service.
    pub maintenance: Option<Instant>,
    /// Takes the meeting off the registry of running meetings (if its channel is closed).
    pub on_close: Box<dyn FnOnce() + Send + Sync>,
}

struct Conn {
    tx: mpsc::Sender<ServerMsg>,
    /// Ends the connection when its client fell a whole queue of messages behind.
    kick: Arc<tokio::sync::Notify>,
}

struct Actor {
    core: Meeting,
    room: RoomKey,
    /// The connections of everyone the meeting knows (in it, in the lobby, or being told why
    /// not), dropped once the meeting forgets them.
    conns: HashMap<PeerId, Conn>,
    /// Participants whose queue was found full.
    overflowed: Vec<PeerId>,
    deps: Deps,
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: chrono::Utc::now(),
    }
}

/// Runs a meeting until it empties, ends or the server shuts down.
pub(super) async fn run(
    seed: MeetingSeed,
    room: RoomKey,
    deps: Deps,
    mut rx: mpsc::Receiver<MeetingCmd>,
    mut events: mpsc::UnboundedReceiver<RoomEvent>,
) {
    tracing::info!(meeting = %seed.id, "meeting started");
    // A lock survives a restart of the server (and its reconnecting clients). If it cannot be
    // read, the meeting starts locked: moderators come in and can lift it.
    let locked = deps
        .store
        .meeting_locked(&seed.id)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(meeting = %seed.id, "lock state not readable, starting locked: {e}");
            true
        });
    // So do a moderator's mutes.
    let muted = deps.store.muted(&seed.id).await.unwrap_or_else(|e| {
        tracing::warn!(meeting = %seed.id, "mutes not readable: {e}");
        Vec::new()
    });
    let mut actor = Actor {
        core: Meeting::new(seed, locked, muted)
            .with_turn(deps.turn.clone())
            .with_maintenance(deps.maintenance),
        room,
        conns: HashMap::new(),
        overflowed: Vec::new(),
        deps,
    };
    loop {
        let due = actor.core.poll_timeout();
        let closed = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => { actor.on_cmd(cmd); false }
                None => true,
            },
            Some(ev) = events.recv() => { actor.core.handle(now(), Input::Room(ev)); false }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                    due.unwrap_or_else(Instant::now))), if due.is_some() => {
                actor.core.handle_timeout(now());
                false
            }
        };
        actor.drain().await;
        match actor.core.life() {
            Life::Running if !closed => continue,
            Life::Empty => {
                actor.core.close();
                actor.drain().await;
            }
            _ => {}
        }
        // Close the channel first so that joins racing with the end retry on a new actor.
        rx.close();
        // Joins that raced with the end are dropped unanswered; their handlers retry on a new
        // actor.
        while rx.try_recv().is_ok() {}
        let id = actor.core.id().to_owned();
        (actor.deps.on_close)();
        actor
            .deps
            .media
            .send(MediaCmd::CloseRoom { room: actor.room });
        tracing::info!(meeting = %id, "meeting closed");
        return;
    }
}

impl Actor {
    fn on_cmd(&mut self, cmd: MeetingCmd) {
        match cmd {
            MeetingCmd::Join(req) => {
                let peer = self.core.allocate_peer();
                if req.reply.send(peer).is_err() {
                    return;
                }
                self.conns.insert(
                    peer,
                    Conn {
                        tx: req.tx,
                        kick: req.kick,
                    },
                );
                let token = crate::auth::new_token().to_string();
                self.core.handle(
                    now(),
                    Input::Join {
                        peer,
                        standing: req.standing,
                        token,
                    },
                );
            }
            MeetingCmd::Msg { peer, msg } => self.core.handle(now(), Input::Msg { peer, msg }),
            MeetingCmd::Disconnected { peer } => {
                self.core.handle(now(), Input::Disconnected { peer })
            }
            MeetingCmd::Shutdown => self.core.handle(now(), Input::Shutdown),
            MeetingCmd::Maintenance(at) => self.core.handle(now(), Input::Maintenance { at }),
            #[cfg(feature = "test-hooks")]
            MeetingCmd::InjectGhost(forgery) => {
                let report = self
                    .core
                    .inject_ghost(now(), forgery.commit, &forgery.key_package);
                let _ = forgery.reply.send(report);
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::PanicMedia {
                whole_worker,
                reply,
            } => {
                let room = self.room;
                self.deps.media.send(if whole_worker {
                    MediaCmd::PanicWorker { room }
                } else {
                    MediaCmd::Panic { room }
                });
                let _ = reply.send(true);
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::DropMedia { peer, reply } => {
                let found = self.core.is_member(peer);
                if found {
                    self.deps.media.send(MediaCmd::RemovePeer {
                        room: self.room,
                        peer,
                    });
                }
                let _ = reply.send(found);
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::Hide { peer, reply } => {
                let _ = reply.send(self.core.hide(peer));
            }
        }
    }

    /// Does what the meeting output, in order, answering its requests; then disconnects the
    /// clients that missed a message (they leave as after a broken connection).
    async fn drain(&mut self) {
        loop {
            while let Some(out) = self.core.poll_output() {
                self.act(out).await;
            }
            let slow = std::mem::take(&mut self.overflowed);
            if slow.is_empty() {
                break;
            }
            for peer in slow {
                if !(self.core.is_member(peer) || self.core.is_waiting(peer)) {
                    continue;
                }
                tracing::info!(meeting = %self.core.id(), peer, "a client fell a whole queue behind: disconnected");
                if let Some(conn) = self.conns.get(&peer) {
                    conn.kick.notify_one();
                }
                self.core.handle(now(), Input::Disconnected { peer });
            }
        }
        let core = &self.core;
        self.conns
            .retain(|p, _| core.is_member(*p) || core.is_waiting(*p));
    }

    async fn act(&mut self, out: Output) {
        match out {
            Output::Send(peer, msg) => self.send(peer, msg),
            Output::Audit(entry) => self.deps.audit.record(entry).await,
            Output::Store(op) => self.store(op).await,
            Output::Media(op) => {
                let room = self.room;
                self.deps.media.send(match op {
                    MediaOp::RemovePeer(peer) => MediaCmd::RemovePeer { room, peer },
                    MediaOp::AudioForwarding(peer, enabled) => MediaCmd::SetAudioForwarding {
                        room,
                        peer,
                        enabled,
                    },
                    MediaOp::ReceivesVideo(peer, enabled) => MediaCmd::SetReceivesVideo {
                        room,
                        peer,
                        enabled,
                    },
                    MediaOp::VideoWants(peer, wants) => {
                        MediaCmd::SetVideoWants { room, peer, wants }
                    }
                });
            }
            Output::Offer { peer, sdp, sources } => {
                let reply = match self.deps.media.offer(self.room, peer, sdp, sources).await {
                    Ok(answer) => ServerMsg::Answer {
                        sdp: answer.sdp,
                        tracks: answer
                            .assignments
                            .into_iter()
                            .map(|a| klausur_proto::TrackAssignment {
                                mid: a.mid,
                                participant_id: participant_id(a.publisher),
                                source: a.source,
                            })
                            .collect(),
                    },
                    Err(e) => {
                        Refusal(ErrorCode::InvalidField, format!("offer rejected: {e}")).into()
                    }
                };
                self.send(peer, reply);
            }
            Output::Request(req) => {
                let answer = self.answer(req).await;
                self.core.handle(now(), answer);
            }
        }
    }

    /// Queues a message for a client without ever waiting for it.
    fn send(&mut self, peer: PeerId, msg: ServerMsg) {
        if let Some(conn) = self.conns.get(&peer) {
            if let Err(mpsc::error::TrySendError::Full(_)) = conn.tx.try_send(msg) {
                self.overflowed.push(peer);
            }
        }
    }

    async fn answer(&mut self, req: Request) -> Input {
        match req {
            Request::AddMediaPeer(peer) => {
                let ok = match self.deps.media.add_peer(self.room, peer).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(meeting = %self.core.id(), "media peer could not be created: {e}");
                        false
                    }
                };
                Input::MediaAdded { peer, ok }
            }
            Request::GuestPass { peer, pass } => {
                let token = crate::auth::new_token();
                let new = klausur_store::NewGuestPass {
                    meeting_id: self.core.id().to_owned(),
                    token_hash: crate::auth::token_hash(&token),
                    display_name: pass.display_name,
                    admitted_by: pass.admitted_by,
                    admitter: pass.admitter,
                    expires_at: pass.expires_at,
                };
                let pass = match self.deps.store.create_guest_pass(&new).await {
                    Ok(id) => Some(Pass {
                        id,
                        token: token.to_string(),
                        muted: false,
                    }),
                    Err(e) => {
                        // The guest is admitted without one.
                        crate::storage_fault::not_stored(
                            self.core.id(),
                            "guest pass not stored",
                            &e,
                        );
                        None
                    }
                };
                Input::GuestPass { peer, pass }
            }
            Request::Policy => Input::Policy {
                direct_user_ids: self.direct_user_ids().await,
            },
        }
    }

    async fn store(&self, op: StoreOp) {
        let store = &self.deps.store;
        let id = self.core.id();
        let result = match &op {
            StoreOp::Locked(locked) => store.set_meeting_locked(id, *locked).await,
            StoreOp::Muted(subject, muted) => store.set_muted(id, *subject, *muted).await,
            StoreOp::PassMuted(pass, muted) => store.set_guest_pass_muted(*pass, *muted).await,
            StoreOp::PassExpiry(pass, at) => store.set_guest_pass_expiry(*pass, *at).await,
            StoreOp::PassModerator(pass, moderator) => {
                store.set_guest_pass_moderator(*pass, *moderator).await
            }
            StoreOp::DeletePass(pass) => store.delete_guest_pass(*pass).await,
            StoreOp::AddBan { subject, by, at } => store.add_ban(id, *subject, by, *at).await,
            StoreOp::RemoveBan(subject) => store.remove_ban(id, *subject).await,
            StoreOp::AddModerator(uid) => store.add_moderator(id, *uid).await,
            StoreOp::RemoveModerator(uid) => store.remove_moderator(id, *uid).await,
            StoreOp::InvitationModerator(inv, moderator) => {
                store.set_invitation_moderator(*inv, *moderator).await
            }
            StoreOp::Ended(at) => store.set_meeting_ended(id, *at).await,
            StoreOp::ClearMutes => store.clear_mutes(id).await,
            StoreOp::ClearPasses => store.clear_guest_passes(id).await,
        };
        if let Err(e) = result {
            crate::storage_fault::not_stored(id, op.what(), &e);
        }
    }

    /// Whom the meeting's profile admits directly, as credential user ids (see
    /// `klausur_proto::MlsPolicy`). Removed (banned) accounts and invitations are left out.
    async fn direct_user_ids(&self) -> Vec<String> {
        let store = &self.deps.store;
        let id = self.core.id();
        let mut ids = Vec::new();
        let now = chrono::Utc::now();
        let result: Result<(), klausur_store::StoreError> = async {
            let meeting = store.meeting(id).await?;
            let mut users: Vec<i64> = meeting.iter().map(|m| m.organiser_id).collect();
            users.extend(store.moderators(id).await?.iter().map(|u| u.id));
            for inv in store.list_invitations(id).await? {
                if inv.revoked_at.is_some() || inv.expires_at <= now {
                    continue;
                }
                if let Some(uid) = inv.user_id {
                    users.push(uid);
                }
                if !store.is_banned(id, BanSubject::Invitation(inv.id)).await? {
                    ids.push(format!("invitation:{}", inv.id));
                }
            }
            users.sort_unstable();
            users.dedup();
            for uid in users {
                if !store.is_banned(id, BanSubject::User(uid)).await? {
                    ids.push(format!("user:{uid}"));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Fail closed: without the facts nobody is admitted automatically; moderators can
            // still admit from the lobby.
            tracing::warn!(meeting = %id, "could not read the admission policy: {e}");
            ids.clear();
        }
        ids
    }
}
