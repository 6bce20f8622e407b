//! The meeting layer: one actor per running meeting (this module), the registry of running
//! meetings ([`Registry`]), the MLS delivery ordering ([`delivery`]), the participant ids on the
//! wire ([`ids`]) and the one conversion of a refusal into a WebSocket `error` message
//! ([`signaling_error`]).
//!
//! May call `media` (rooms and peers, through its handle), `admission` (the standing a join
//! arrives with), `config`, `auth`, `audit` and `storage_fault`; never the HTTP layer, the state
//! or the server.
//!
//! # The actor
//!
//! One task per running meeting owns its participants, lobby and moderation state, and is
//! mutated only through its command channel (no locks).
//!
//! Admission policy is decided before a join reaches the actor (see [`Standing`], computed
//! from the database by the WebSocket handler); the actor applies the meeting's live state
//! (locked or not) and carries out moderation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, JoinMethod, LeaveReason, LobbyEntry, LobbyReason, MeetingInfo,
    MlsPolicy, Participant, ParticipantKind, Role, SecurityProfile, ServerMsg,
};
use klausur_room::{PeerId, RoomEvent};
use klausur_store::{AuditActor, BanSubject, Store};

use tokio::sync::{mpsc, oneshot};

pub mod delivery;
pub mod ids;
pub mod signaling_error;

use crate::audit::{self, kind, Audit, Entry};
use crate::media::{MediaCmd, MediaHandle, RoomKey};
use delivery::{Delivery, Out};
use signaling_error::Refusal;

pub use crate::admission::{MeetingSeed, Pass, Standing};
pub use crate::config::CLIENT_QUEUE;
pub use ids::{parse_participant_id, participant_id};

/// Most guests waiting in one meeting's lobby; the next is told the lobby is full. A hundred
/// waiting guests are more than any moderator admits one by one.
pub const MAX_LOBBY: usize = 100;

/// Moderators get the lobby list at most this often: arrivals in between are sent as one
/// list, so a crowd arriving at once does not send each moderator a list per guest.
pub const LOBBY_NOTICE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// How long a guest pass stays valid after its holder's connection went (the browser tries to
/// come back for about a minute; a restart of the server takes seconds).
pub const PASS_GRACE: chrono::Duration = chrono::Duration::minutes(2);

/// How long a guest pass is valid while its holder is in the meeting (renewed on every join;
/// the meeting emptying deletes it anyway).
pub const PASS_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

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
    /// Test builds only: the meeting's media core panics on its next call.
    #[cfg(feature = "test-hooks")]
    PanicMedia {
        reply: oneshot::Sender<bool>,
    },
}

/// What `test_hooks` hands the actor to inject: a commit maker (given the group id), a key
/// package with a forged credential, and where to report what was sent.
#[cfg(feature = "test-hooks")]
pub type CommitMaker = Box<dyn FnOnce(&str) -> Option<Vec<u8>> + Send>;

#[cfg(feature = "test-hooks")]
pub struct Forgery {
    pub commit: CommitMaker,
    pub key_package: Vec<u8>,
    pub reply: oneshot::Sender<serde_json::Value>,
}

/// The running meetings of this server.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<String, mpsc::Sender<MeetingCmd>>>>,
    next_room: Arc<AtomicU64>,
    media: MediaHandle,
    store: Store,
    audit: Audit,
}

impl Registry {
    pub fn new(media: MediaHandle, store: Store, audit: Audit) -> Self {
        Registry {
            inner: Arc::default(),
            next_room: Arc::new(AtomicU64::new(1)),
            media,
            store,
            audit,
        }
    }

    /// The running actor of a meeting, started if needed.
    pub fn get_or_start(&self, seed: &MeetingSeed) -> mpsc::Sender<MeetingCmd> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&seed.id) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        let key = self.next_room.fetch_add(1, Ordering::Relaxed);
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        self.media.send(MediaCmd::OpenRoom {
            room: key,
            events: ev_tx,
        });
        let actor = Actor {
            seed: seed.clone(),
            room: key,
            locked: false,
            had_members: false,
            lobby_notice: None,
            seat_tokens: HashMap::new(),
            kicks: HashMap::new(),
            overflowed: Mutex::new(Vec::new()),
            lobby_sent_at: None,
            muted: HashSet::new(),
            hands: HashMap::new(),
            next_peer: 1,
            members: BTreeMap::new(),
            lobby: BTreeMap::new(),
            delivery: Delivery::new(&seed.id),
            pending_changed: false,
            media: self.media.clone(),
            store: self.store.clone(),
            audit: self.audit.clone(),
            audit_queue: Vec::new(),
            registry: self.clone(),
        };
        tokio::spawn(actor.run(rx, ev_rx));
        map.insert(seed.id.clone(), tx.clone());
        tx
    }

    /// Removes a meeting's entry if it is still `tx` (the actor is ending).
    fn remove_if(&self, id: &str, tx_closed_check: impl Fn(&mpsc::Sender<MeetingCmd>) -> bool) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(tx_closed_check) {
            map.remove(id);
        }
    }

    /// Tells every meeting that the server shuts down.
    pub async fn shutdown_all(&self) {
        let senders: Vec<_> = {
            let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        for tx in senders {
            let _ = tx.send(MeetingCmd::Shutdown).await;
        }
    }

    /// The actor of a running meeting.
    pub fn running_actor(&self, id: &str) -> Option<mpsc::Sender<MeetingCmd>> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id).filter(|tx| !tx.is_closed()).cloned()
    }

    pub fn running(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }
}

struct Member {
    info: Participant,
    tx: mpsc::Sender<ServerMsg>,
    standing: Standing,
    self_audio_muted: bool,
    /// The moderator who admitted this participant from the lobby.
    admitted_by: Option<PeerId>,
}

struct Waiting {
    entry: LobbyEntry,
    tx: mpsc::Sender<ServerMsg>,
    standing: Standing,
}

struct Actor {
    seed: MeetingSeed,
    room: RoomKey,
    locked: bool,
    /// Someone was in the meeting (not only in the lobby) since this actor started.
    had_members: bool,
    /// A lobby list not yet sent to the moderators (`Some(arrived)`), see
    /// [`LOBBY_NOTICE_INTERVAL`], and when the last one was sent.
    lobby_notice: Option<bool>,
    /// Per invitation seat, the token its current browser got in `joined` (`rejoin_token`):
    /// a join that brings it back takes the seat over (a reload, a reconnect); one without it
    /// while the seat is taken waits in the lobby as `invitation_in_use`.
    seat_tokens: HashMap<Seat, String>,
    /// Per participant (member or in the lobby), what ends its connection.
    kicks: HashMap<PeerId, Arc<tokio::sync::Notify>>,
    /// Queues found full while sending: their clients missed a message and are disconnected
    /// after the current command ([`Actor::drop_slow_clients`]).
    overflowed: Mutex<Vec<mpsc::Sender<ServerMsg>>>,
    lobby_sent_at: Option<tokio::time::Instant>,
    /// Accounts and invitations a moderator muted: they stay muted when they come back (a
    /// reconnect, a reload, or a restart of the server: they are stored), until a moderator
    /// lifts it or the meeting empties.
    muted: HashSet<BanSubject>,
    /// Raised hands of people whose connection went (broke, or was replaced by their new one):
    /// they keep their place in the order when they come back. Not stored.
    hands: HashMap<Seat, u64>,
    next_peer: PeerId,
    members: BTreeMap<PeerId, Member>,
    lobby: BTreeMap<PeerId, Waiting>,
    delivery: Delivery,
    /// `mls_pending` is due (sent after the current command, with the policy read once).
    pending_changed: bool,
    media: MediaHandle,
    store: Store,
    audit: Audit,
    /// Audit records of the current command, written before the next one is taken
    /// ([`Actor::flush_audit`]): so that `leave` and the other synchronous steps can record.
    audit_queue: Vec<Entry>,
    registry: Registry,
}

/// Now, in milliseconds since the Unix epoch (the order of raised hands).
fn unix_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Who a participant is, for the audit trail: their account, invitation, guest pass or phone
/// leg, with the name they are shown under.
fn audit_actor(s: &Standing) -> AuditActor {
    let name = Some(s.display_name.clone());
    match (s.user_id, s.ban_subject, &s.pass, &s.phone) {
        (Some(uid), ..) => AuditActor::new("user", Some(uid.to_string()), name),
        (None, Some(BanSubject::Invitation(id)), _, Some(_)) => {
            AuditActor::new("phone", Some(format!("invitation:{id}")), name)
        }
        (None, Some(BanSubject::Invitation(id)), ..) => {
            AuditActor::new("guest", Some(format!("invitation:{id}")), name)
        }
        (None, _, Some(pass), _) => {
            AuditActor::new("guest", Some(format!("pass:{}", pass.id)), name)
        }
        _ => AuditActor::new("lobby", None, name),
    }
}

/// What makes two joins the same person's. A telephone caller has a seat of their own beside
/// their invitation's browser seat: a call does not replace the browser, nor the other way
/// round, but a second call replaces the first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Seat {
    Subject(BanSubject),
    Phone(BanSubject),
    Pass(i64),
}

impl Seat {
    fn of(s: &Standing) -> Option<Seat> {
        if s.phone.is_some() {
            return s.ban_subject.map(Seat::Phone);
        }
        s.ban_subject
            .map(Seat::Subject)
            .or(s.pass.as_ref().map(|p| Seat::Pass(p.id)))
    }
}

#[derive(Clone, Copy)]
enum Place {
    Lobby,
    Meeting,
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<MeetingCmd>,
        mut events: mpsc::UnboundedReceiver<RoomEvent>,
    ) {
        tracing::info!(meeting = %self.seed.id, "meeting started");
        // A lock survives a restart of the server (and its reconnecting clients). If it cannot
        // be read, the meeting starts locked: moderators come in and can lift it.
        self.locked = self
            .store
            .meeting_locked(&self.seed.id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(meeting = %self.seed.id, "lock state not readable, starting locked: {e}");
                true
            });
        // So do a moderator's mutes.
        match self.store.muted(&self.seed.id).await {
            Ok(muted) => self.muted.extend(muted),
            Err(e) => tracing::warn!(meeting = %self.seed.id, "mutes not readable: {e}"),
        }
        loop {
            let lobby_due = self.lobby_notice_due(tokio::time::Instant::now());
            let flow = tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd).await,
                    None => Flow::Stop,
                },
                Some(ev) = events.recv() => { self.on_room_event(ev); Flow::Continue }
                _ = tokio::time::sleep_until(lobby_due.unwrap_or_else(tokio::time::Instant::now)),
                    if lobby_due.is_some() => Flow::Continue,
            };
            self.flush_pending().await;
            self.flush_audit().await;
            self.send_lobby_notice();
            self.drop_slow_clients();
            let empty = self.members.is_empty() && self.lobby.is_empty();
            if matches!(flow, Flow::Stop) || empty {
                // A meeting that empties after people were in it is over for now: its lock
                // goes with it. A shutdown keeps it, and so does a lobby that empties before
                // anyone came back in after a restart.
                if !matches!(flow, Flow::Stop) && self.had_members {
                    if self.locked {
                        self.persist_lock(false).await;
                    }
                    // So do the mutes: all stored ones, also any this actor could not read.
                    if let Err(e) = self.store.clear_mutes(&self.seed.id).await {
                        crate::storage_fault::not_stored(&self.seed.id, "mutes not cleared", &e);
                    }
                    // And the guests' passes: whoever comes next goes through the lobby.
                    if let Err(e) = self.store.clear_guest_passes(&self.seed.id).await {
                        crate::storage_fault::not_stored(
                            &self.seed.id,
                            "guest passes not cleared",
                            &e,
                        );
                    }
                }
                // Close the channel first so that joins racing with the end retry on a new actor.
                rx.close();
                // Joins that raced with the end are dropped unanswered; their handlers retry on
                // a new actor.
                while rx.try_recv().is_ok() {}
                self.registry.remove_if(&self.seed.id, |tx| tx.is_closed());
                self.media.send(MediaCmd::CloseRoom { room: self.room });
                tracing::info!(meeting = %self.seed.id, "meeting closed");
                return;
            }
        }
    }

    /// Queues an audit record about this meeting by `actor`.
    fn note(&mut self, kind: &str, actor: AuditActor, details: serde_json::Value) {
        self.audit_queue.push(
            Entry::new(kind, actor)
                .meeting(&self.seed.id)
                .details(details),
        );
    }

    /// Writes an audit record about this meeting by `actor` now, before the command's effects
    /// are sent (with any records queued before it).
    async fn record(&mut self, kind: &str, actor: AuditActor, details: serde_json::Value) {
        self.note(kind, actor, details);
        self.flush_audit().await;
    }

    /// `peer` as an audit actor (the member or lobby guest it is; the server if neither).
    fn actor_of(&self, peer: PeerId) -> AuditActor {
        self.members
            .get(&peer)
            .map(|m| audit_actor(&m.standing))
            .or_else(|| self.lobby.get(&peer).map(|w| audit_actor(&w.standing)))
            .unwrap_or_else(AuditActor::system)
    }

    /// Writes the queued audit records, in order.
    async fn flush_audit(&mut self) {
        for entry in std::mem::take(&mut self.audit_queue) {
            self.audit.record(entry).await;
        }
    }

    async fn persist_lock(&self, locked: bool) {
        if let Err(e) = self.store.set_meeting_locked(&self.seed.id, locked).await {
            crate::storage_fault::not_stored(&self.seed.id, "lock state not stored", &e);
        }
    }

    fn info(&self) -> MeetingInfo {
        MeetingInfo {
            id: self.seed.id.clone(),
            title: self.seed.title.clone(),
            organiser: self.seed.organiser.clone(),
            profile: self.seed.profile,
            locked: self.locked,
            dial_in: self.seed.dial_in,
        }
    }

    /// Queues a message for a client without ever waiting for it. A client whose queue is full
    /// has missed this message: it is disconnected after the current command (it joins again
    /// and gets the meeting afresh), never left with a gap.
    fn send(&self, tx: &mpsc::Sender<ServerMsg>, msg: ServerMsg) {
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(msg) {
            self.overflowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(tx.clone());
        }
    }

    /// Disconnects the clients that missed a message: they leave as after a broken
    /// connection, and their WebSocket closes.
    fn drop_slow_clients(&mut self) {
        loop {
            let full =
                std::mem::take(&mut *self.overflowed.lock().unwrap_or_else(|e| e.into_inner()));
            if full.is_empty() {
                return;
            }
            for tx in full {
                let peer = self
                    .members
                    .iter()
                    .find(|(_, m)| m.tx.same_channel(&tx))
                    .map(|(p, _)| *p)
                    .or_else(|| {
                        self.lobby
                            .iter()
                            .find(|(_, w)| w.tx.same_channel(&tx))
                            .map(|(p, _)| *p)
                    });
                let Some(peer) = peer else {
                    continue;
                };
                tracing::info!(meeting = %self.seed.id, peer, "a client fell a whole queue behind: disconnected");
                if let Some(kick) = self.kicks.remove(&peer) {
                    kick.notify_one();
                }
                self.leave(peer, LeaveReason::Disconnected);
            }
        }
    }

    fn to_peer(&self, peer: PeerId, msg: ServerMsg) {
        if let Some(m) = self.members.get(&peer) {
            self.send(&m.tx, msg);
        } else if let Some(w) = self.lobby.get(&peer) {
            self.send(&w.tx, msg);
        }
    }

    fn broadcast(&self, msg: ServerMsg, except: Option<PeerId>) {
        for (p, m) in &self.members {
            if Some(*p) != except {
                self.send(&m.tx, msg.clone());
            }
        }
    }

    fn lobby_list(&self) -> Vec<LobbyEntry> {
        self.lobby.values().map(|w| w.entry.clone()).collect()
    }

    /// The lobby changed: the moderators get the list now, or with the next list when one
    /// was sent less than [`LOBBY_NOTICE_INTERVAL`] ago.
    fn notify_moderators_lobby(&mut self, arrived: bool) {
        self.lobby_notice = Some(self.lobby_notice.unwrap_or(false) || arrived);
        self.send_lobby_notice();
    }

    /// When the waiting lobby list may be sent, `now` at the earliest (None: none is waiting).
    fn lobby_notice_due(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        self.lobby_notice?;
        Some(
            self.lobby_sent_at
                .map_or(now, |at| (at + LOBBY_NOTICE_INTERVAL).max(now)),
        )
    }

    /// Sends the waiting lobby list if it is due.
    fn send_lobby_notice(&mut self) {
        let now = tokio::time::Instant::now();
        let Some(arrived) = self.lobby_notice else {
            return;
        };
        if self.lobby_notice_due(now).is_some_and(|due| due > now) {
            return;
        }
        self.lobby_notice = None;
        self.lobby_sent_at = Some(now);
        let lobby = self.lobby_list();
        for m in self.members.values() {
            if m.info.role == Role::Moderator {
                self.send(
                    &m.tx,
                    ServerMsg::LobbyChanged {
                        lobby: lobby.clone(),
                        arrived,
                    },
                );
            }
        }
    }

    fn error(&self, peer: PeerId, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(meeting = %self.seed.id, peer, code = code.as_str(), "refused: {message}");
        self.to_peer(peer, Refusal(code, message).into());
    }

    async fn on_cmd(&mut self, cmd: MeetingCmd) -> Flow {
        match cmd {
            MeetingCmd::Join(req) => {
                self.on_join(req).await;
                Flow::Continue
            }
            MeetingCmd::Msg { peer, msg } => self.on_msg(peer, msg).await,
            MeetingCmd::Disconnected { peer } => {
                self.keep_hand(peer);
                // A guest's pass gives them a short while to come back.
                if let Some(pass) = self.pass_of(peer) {
                    self.set_pass_expiry(pass, PASS_GRACE).await;
                }
                self.leave(peer, LeaveReason::Disconnected);
                Flow::Continue
            }
            MeetingCmd::Shutdown => {
                let msg = ServerMsg::Ended {
                    reason: EndReason::ServerShutdown,
                    by: None,
                };
                for m in self.members.values() {
                    self.send(&m.tx, msg.clone());
                }
                for w in self.lobby.values() {
                    self.send(&w.tx, msg.clone());
                }
                // The guests come back after the restart, each with their pass.
                let passes: Vec<i64> = (self.members.values().map(|m| &m.standing))
                    .chain(self.lobby.values().map(|w| &w.standing))
                    .filter_map(|s| s.pass.as_ref().map(|p| p.id))
                    .collect();
                for pass in passes {
                    self.set_pass_expiry(pass, PASS_GRACE).await;
                }
                Flow::Stop
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::InjectGhost(forgery) => {
                self.inject_ghost(forgery);
                Flow::Continue
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::PanicMedia { reply } => {
                self.media.send(MediaCmd::Panic { room: self.room });
                let _ = reply.send(true);
                Flow::Continue
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::DropMedia { peer, reply } => {
                let found = self.members.contains_key(&peer);
                if found {
                    self.media.send(MediaCmd::RemovePeer {
                        room: self.room,
                        peer,
                    });
                }
                let _ = reply.send(found);
                Flow::Continue
            }
            #[cfg(feature = "test-hooks")]
            MeetingCmd::Hide { peer, reply } => {
                let found = self.members.contains_key(&peer);
                if found {
                    self.broadcast(
                        ServerMsg::ParticipantLeft {
                            participant_id: participant_id(peer),
                            reason: LeaveReason::Left,
                        },
                        Some(peer),
                    );
                    let out = self.delivery.left(peer);
                    self.deliver(out);
                }
                let _ = reply.send(found);
                Flow::Continue
            }
        }
    }

    #[cfg(feature = "test-hooks")]
    fn inject_ghost(&mut self, forgery: Forgery) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ghost = self.next_peer;
        let impostor = self.next_peer + 1;
        self.next_peer += 2;
        self.broadcast(
            ServerMsg::ParticipantJoined {
                participant: Participant {
                    id: participant_id(ghost),
                    display_name: "Geist".into(),
                    kind: ParticipantKind::Staff,
                    role: Role::Participant,
                    organiser: false,
                    join_method: JoinMethod::StaffLogin,
                    audio_muted: true,
                    muted_by_moderator: false,
                    video_muted: true,
                    screen_sharing: false,
                    hand_raised_at: None,
                    leaf: None,
                    credential_user_id: None,
                    phone: None,
                },
            },
            None,
        );
        let mut commit_epoch = None;
        if let Some((group_id, epoch)) = self.delivery.group() {
            if let Some(commit) = (forgery.commit)(&group_id) {
                commit_epoch = Some(epoch);
                self.deliver(vec![Out::Members {
                    msg: ServerMsg::MlsCommit {
                        epoch,
                        commit: b64.encode(commit),
                        from_id: participant_id(ghost),
                    },
                    except: None,
                }]);
            }
        }
        let pending = self.delivery.key_package(
            impostor,
            b64.encode(&forgery.key_package),
            None,
            None,
            std::time::Instant::now(),
        );
        let pending_ok = pending.is_ok();
        self.deliver_or_refuse(impostor, pending);
        let _ = forgery.reply.send(serde_json::json!({
            "ghost_participant": participant_id(ghost),
            "forged_commit_epoch": commit_epoch,
            "impostor_pending": pending_ok.then(|| participant_id(impostor)),
        }));
    }

    async fn on_join(&mut self, req: JoinRequest) {
        let peer = self.next_peer;
        self.next_peer += 1;
        let JoinRequest {
            standing,
            tx,
            kick,
            reply,
        } = req;
        if reply.send(peer).is_err() {
            return;
        }
        self.kicks.insert(peer, kick);
        // One person, one seat: the same account, invitation or guest pass joining again
        // replaces the old connection (a reload, a second tab, a reconnect not noticed yet).
        // An invitation link can travel: someone else joining with it while its guest is in the
        // meeting does not push them out. They wait in the lobby, the guest is told, and a
        // moderator decides. The guest's own browser coming back (with the seat token of its
        // last `joined`) takes the seat over as before.
        let seat = Seat::of(&standing);
        let holders = self.seat_holders(seat);
        let contested = matches!(seat, Some(Seat::Subject(BanSubject::Invitation(_))))
            && !holders.is_empty()
            && match (
                seat.and_then(|s| self.seat_tokens.get(&s)),
                &standing.seat_token,
            ) {
                (Some(held), Some(presented)) => held != presented,
                _ => true,
            };
        if seat.is_some() {
            let old: Vec<PeerId> = self
                .lobby
                .iter()
                .filter(|(_, w)| Seat::of(&w.standing) == seat)
                .map(|(p, _)| *p)
                .chain(if contested {
                    Vec::new()
                } else {
                    holders.clone()
                })
                .collect();
            self.replace(old);
        }
        let lobby_reason = if contested {
            Some(LobbyReason::InvitationInUse)
        } else if standing.moderator {
            None
        } else if standing.banned {
            Some(LobbyReason::Removed)
        } else if standing.direct.is_none() {
            Some(LobbyReason::Profile)
        } else if self.locked {
            Some(LobbyReason::Locked)
        } else {
            None
        };
        match lobby_reason {
            Some(_) if self.lobby.len() >= MAX_LOBBY => {
                self.send(
                    &tx,
                    Refusal(
                        ErrorCode::RateLimited,
                        format!(
                            "the lobby of this meeting is full ({MAX_LOBBY} waiting); try again later"
                        ),
                    )
                    .into(),
                );
                self.send(
                    &tx,
                    ServerMsg::Ended {
                        reason: EndReason::LobbyFull,
                        by: None,
                    },
                );
            }
            Some(reason) => {
                self.record(
                    kind::LOBBY_ENTERED,
                    audit_actor(&standing),
                    serde_json::json!({ "reason": reason }),
                )
                .await;
                let entry = LobbyEntry {
                    id: participant_id(peer),
                    display_name: standing.display_name.clone(),
                    kind: standing.kind,
                    invitation: standing.invitation.clone(),
                    reason,
                    phone: standing.phone.clone(),
                };
                self.send(
                    &tx,
                    ServerMsg::LobbyWait {
                        meeting_title: self.seed.title.clone(),
                    },
                );
                self.lobby.insert(
                    peer,
                    Waiting {
                        entry,
                        tx,
                        standing,
                    },
                );
                self.notify_moderators_lobby(true);
                if contested {
                    for p in holders {
                        self.to_peer(p, ServerMsg::InvitationContested);
                    }
                }
            }
            None => {
                let method = standing.direct.clone().unwrap_or(JoinMethod::StaffLogin);
                self.admit_member(peer, tx, standing, method, None).await;
            }
        }
    }

    /// Gives a guest pass `from_now` more time (stored; a failure is logged: the pass then
    /// expires earlier or later than meant, nothing else).
    async fn set_pass_expiry(&self, pass: i64, from_now: chrono::Duration) {
        let at = chrono::Utc::now() + from_now;
        if let Err(e) = self.store.set_guest_pass_expiry(pass, at).await {
            crate::storage_fault::not_stored(&self.seed.id, "guest pass expiry not stored", &e);
        }
    }

    /// Deletes `peer`'s guest pass, if they hold one: they left on purpose or were removed.
    async fn delete_pass(&self, peer: PeerId) {
        if let Some(pass) = self.pass_of(peer) {
            if let Err(e) = self.store.delete_guest_pass(pass).await {
                crate::storage_fault::not_stored(&self.seed.id, "guest pass not deleted", &e);
            }
        }
    }

    /// The participant in the meeting with this account or invitation (not a telephone caller
    /// of that invitation).
    fn member_with_subject(&self, subject: BanSubject) -> Option<PeerId> {
        self.members
            .iter()
            .find(|(_, m)| m.standing.ban_subject == Some(subject) && m.standing.phone.is_none())
            .map(|(p, _)| *p)
    }

    /// The id of the guest pass of a participant in the meeting or the lobby.
    fn pass_of(&self, peer: PeerId) -> Option<i64> {
        self.members
            .get(&peer)
            .map(|m| &m.standing)
            .or_else(|| self.lobby.get(&peer).map(|w| &w.standing))
            .and_then(|s| s.pass.as_ref().map(|p| p.id))
    }

    /// A guest admitted from the lobby gets a pass back in (see `Store::create_guest_pass`).
    /// `None` (logged) if it cannot be stored: the guest is admitted without one.
    async fn new_pass(&self, standing: &Standing, by: PeerId) -> Option<Pass> {
        let token = crate::auth::new_token();
        let new = klausur_store::NewGuestPass {
            meeting_id: self.seed.id.clone(),
            token_hash: crate::auth::token_hash(&token),
            display_name: standing.display_name.clone(),
            admitted_by: self.display_name(by),
            admitter: self.members.get(&by).and_then(|m| m.standing.ban_subject),
            expires_at: chrono::Utc::now() + PASS_LIFETIME,
        };
        match self.store.create_guest_pass(&new).await {
            Ok(id) => Some(Pass {
                id,
                token: token.to_string(),
                muted: false,
            }),
            Err(e) => {
                crate::storage_fault::not_stored(&self.seed.id, "guest pass not stored", &e);
                None
            }
        }
    }

    /// Remembers `peer`'s raised hand for their seat, as their connection goes.
    fn keep_hand(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get(&peer) {
            if let (Some(seat), Some(at)) = (Seat::of(&m.standing), m.info.hand_raised_at) {
                self.hands.insert(seat, at);
            }
        }
    }

    /// Ends the connections a new join of the same person replaces (a reload, a second tab, a
    /// reconnect the server had not noticed yet).
    /// The members in `seat` (none without a seat).
    fn seat_holders(&self, seat: Option<Seat>) -> Vec<PeerId> {
        if seat.is_none() {
            return Vec::new();
        }
        self.members
            .iter()
            .filter(|(_, m)| Seat::of(&m.standing) == seat)
            .map(|(p, _)| *p)
            .collect()
    }

    fn replace(&mut self, old: Vec<PeerId>) {
        for p in old {
            self.keep_hand(p);
            self.to_peer(
                p,
                ServerMsg::Ended {
                    reason: EndReason::Replaced,
                    by: None,
                },
            );
            self.leave(p, LeaveReason::Left);
        }
    }

    async fn admit_member(
        &mut self,
        peer: PeerId,
        tx: mpsc::Sender<ServerMsg>,
        standing: Standing,
        method: JoinMethod,
        admitted_by: Option<PeerId>,
    ) {
        if let Err(e) = self.media.add_peer(self.room, peer).await {
            tracing::warn!(meeting = %self.seed.id, "media peer could not be created: {e}");
            self.send(
                &tx,
                Refusal(ErrorCode::Internal, "media is not available".into()).into(),
            );
            return;
        }
        let muted = standing
            .ban_subject
            .is_some_and(|s| self.muted.contains(&s))
            || standing.pass.as_ref().is_some_and(|p| p.muted);
        if let Some(pass) = &standing.pass {
            self.set_pass_expiry(pass.id, PASS_LIFETIME).await;
        }
        if muted {
            self.media.send(MediaCmd::SetAudioForwarding {
                room: self.room,
                peer,
                enabled: false,
            });
        }
        // The dial-in gateway takes audio only.
        if standing.phone.is_some() {
            self.media.send(MediaCmd::SetReceivesVideo {
                room: self.room,
                peer,
                enabled: false,
            });
        }
        let info = Participant {
            id: participant_id(peer),
            display_name: standing.display_name.clone(),
            kind: standing.kind,
            role: if standing.moderator {
                Role::Moderator
            } else {
                Role::Participant
            },
            organiser: standing.user_id == Some(self.seed.organiser_id),
            join_method: method,
            audio_muted: muted,
            muted_by_moderator: muted,
            video_muted: false,
            screen_sharing: false,
            hand_raised_at: Seat::of(&standing).and_then(|s| self.hands.remove(&s)),
            leaf: None,
            credential_user_id: None,
            phone: standing.phone.clone(),
        };
        self.record(
            kind::PARTICIPANT_JOINED,
            audit_actor(&standing),
            serde_json::json!({
                "participant": info.id,
                "role": info.role,
                "join_method": info.join_method,
            }),
        )
        .await;
        let mut participants: Vec<Participant> =
            self.members.values().map(|m| m.info.clone()).collect();
        participants.push(info.clone());
        let lobby = if info.role == Role::Moderator {
            self.lobby_list()
        } else {
            Vec::new()
        };
        // A lobby guest's pass, or an invited guest's seat token: what brings this browser back.
        let rejoin_token = match (&standing.pass, Seat::of(&standing)) {
            (Some(pass), _) => Some(pass.token.clone()),
            (None, Some(seat @ Seat::Subject(BanSubject::Invitation(_))))
                if standing.kind == ParticipantKind::InvitedGuest =>
            {
                let token = crate::auth::new_token().to_string();
                self.seat_tokens.insert(seat, token.clone());
                Some(token)
            }
            _ => None,
        };
        self.send(
            &tx,
            ServerMsg::Joined {
                protocol_version: klausur_proto::PROTOCOL_VERSION,
                self_id: info.id.clone(),
                meeting: self.info(),
                participants,
                lobby,
                rejoin_token,
            },
        );
        self.broadcast(
            ServerMsg::ParticipantJoined {
                participant: info.clone(),
            },
            None,
        );
        self.members.insert(
            peer,
            Member {
                info,
                tx,
                standing,
                self_audio_muted: false,
                admitted_by,
            },
        );
        self.had_members = true;
        // A moderator coming (back) in: the guests they admitted earlier who came back with a
        // proof and wait for the group are theirs to add (not a caller's: a phone seat does
        // not moderate).
        if let Some(subject) = self
            .members
            .get(&peer)
            .filter(|m| m.standing.phone.is_none())
            .and_then(|m| m.standing.ban_subject)
        {
            let theirs: Vec<PeerId> = self
                .members
                .iter()
                .filter(|(_, m)| m.standing.admitter == Some(subject))
                .map(|(p, _)| *p)
                .filter(|p| self.delivery.awaits_returning(*p))
                .collect();
            for joiner in theirs {
                let out = self.delivery.readmit(joiner, peer);
                self.deliver_or_refuse(peer, out);
            }
        }
    }

    /// Whom the meeting's profile admits directly, as credential user ids (see
    /// [`MlsPolicy`]). Removed (banned) accounts and invitations are left out.
    async fn policy(&self) -> MlsPolicy {
        let mut ids = Vec::new();
        let now = chrono::Utc::now();
        let result: Result<(), klausur_store::StoreError> = async {
            let meeting = self.store.meeting(&self.seed.id).await?;
            let mut users: Vec<i64> = meeting.iter().map(|m| m.organiser_id).collect();
            users.extend(
                self.store
                    .moderators(&self.seed.id)
                    .await?
                    .iter()
                    .map(|u| u.id),
            );
            for inv in self.store.list_invitations(&self.seed.id).await? {
                if inv.revoked_at.is_some() || inv.expires_at <= now {
                    continue;
                }
                if let Some(uid) = inv.user_id {
                    users.push(uid);
                }
                if !self
                    .store
                    .is_banned(&self.seed.id, BanSubject::Invitation(inv.id))
                    .await?
                {
                    ids.push(format!("invitation:{}", inv.id));
                }
            }
            users.sort_unstable();
            users.dedup();
            for uid in users {
                if !self
                    .store
                    .is_banned(&self.seed.id, BanSubject::User(uid))
                    .await?
                {
                    ids.push(format!("user:{uid}"));
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Fail closed: without the facts nobody is admitted automatically; moderators can
            // still admit from the lobby.
            tracing::warn!(meeting = %self.seed.id, "could not read the admission policy: {e}");
            ids.clear();
        }
        MlsPolicy {
            staff_direct: self.seed.profile == SecurityProfile::Internal,
            direct_user_ids: ids,
        }
    }

    /// Sends what the delivery service decided.
    fn deliver(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::To(peer, msg) => self.to_peer(peer, msg),
                Out::Members { msg, except } => {
                    for (p, m) in &self.members {
                        if Some(*p) != except && self.delivery.is_member(*p) {
                            self.send(&m.tx, msg.clone());
                        }
                    }
                }
                Out::PendingChanged => self.pending_changed = true,
                Out::Leaf(peer, claim) => {
                    if let Some(m) = self.members.get_mut(&peer) {
                        m.info.leaf = claim.as_ref().map(|c| c.leaf);
                        m.info.credential_user_id = claim.map(|c| c.credential_user_id);
                        let participant = m.info.clone();
                        self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                    }
                }
            }
        }
    }

    fn deliver_or_refuse(&mut self, peer: PeerId, out: Result<Vec<Out>, Refusal>) {
        match out {
            Ok(out) => self.deliver(out),
            Err(Refusal(code, message)) => self.error(peer, code, message),
        }
    }

    /// Sends `mls_pending` to the group's members if the list changed.
    async fn flush_pending(&mut self) {
        if !std::mem::take(&mut self.pending_changed) {
            return;
        }
        let msg = self.delivery.pending(self.policy().await);
        for (p, m) in &self.members {
            if self.delivery.is_member(*p) {
                self.send(&m.tx, msg.clone());
            }
        }
    }

    fn leave(&mut self, peer: PeerId, reason: LeaveReason) {
        self.kicks.remove(&peer);
        if let Some(m) = self.members.remove(&peer) {
            self.note(
                kind::PARTICIPANT_LEFT,
                audit_actor(&m.standing),
                serde_json::json!({ "participant": participant_id(peer), "reason": reason }),
            );
            self.media.send(MediaCmd::RemovePeer {
                room: self.room,
                peer,
            });
            self.broadcast(
                ServerMsg::ParticipantLeft {
                    participant_id: participant_id(peer),
                    reason,
                },
                None,
            );
            // Whom this moderator admitted from the lobby is no longer theirs to add (a key
            // package they send later is not tied to them; see `Delivery::readmit`).
            for m in self.members.values_mut() {
                if m.admitted_by == Some(peer) {
                    m.admitted_by = None;
                }
            }
            let out = self.delivery.left(peer);
            self.deliver(out);
        } else if self.lobby.remove(&peer).is_some() {
            self.notify_moderators_lobby(false);
        }
    }

    /// The peer a moderator action names, or an error reply to `peer` if there is none there.
    fn find(&self, peer: PeerId, id: &str, place: Place) -> Option<PeerId> {
        let found = parse_participant_id(id).filter(|p| match place {
            Place::Lobby => self.lobby.contains_key(p),
            Place::Meeting => self.members.contains_key(p),
        });
        if found.is_none() {
            let where_ = match place {
                Place::Lobby => "waiting in the lobby",
                Place::Meeting => "in the meeting",
            };
            self.error(peer, ErrorCode::NotFound, format!("{id:?} is not {where_}"));
        }
        found
    }

    /// Whether `peer` is the meeting's organiser (logged in with the organiser's account).
    fn is_organiser(&self, peer: PeerId) -> bool {
        self.members
            .get(&peer)
            .is_some_and(|m| m.standing.user_id == Some(self.seed.organiser_id))
    }

    fn is_moderator(&self, peer: PeerId) -> bool {
        self.members
            .get(&peer)
            .is_some_and(|m| m.info.role == Role::Moderator)
    }

    fn display_name(&self, peer: PeerId) -> String {
        self.members
            .get(&peer)
            .map(|m| m.info.display_name.clone())
            .unwrap_or_default()
    }

    async fn on_msg(&mut self, peer: PeerId, msg: ClientMsg) -> Flow {
        let joined = self.members.contains_key(&peer);
        if !joined {
            match msg {
                ClientMsg::Leave => {
                    self.delete_pass(peer).await;
                    self.leave(peer, LeaveReason::Left)
                }
                ClientMsg::Ping => self.to_peer(peer, ServerMsg::Pong),
                other => self.error(
                    peer,
                    ErrorCode::NotJoined,
                    format!(
                        "{} needs to be admitted to the meeting first",
                        other.type_name()
                    ),
                ),
            }
            return Flow::Continue;
        }
        let needs_moderator = matches!(
            msg,
            ClientMsg::Admit { .. }
                | ClientMsg::Deny { .. }
                | ClientMsg::Remove { .. }
                | ClientMsg::Lock { .. }
                | ClientMsg::Mute { .. }
                | ClientMsg::SetModerator { .. }
                | ClientMsg::LowerHand { .. }
                | ClientMsg::EndMeeting
        );
        if needs_moderator && !self.is_moderator(peer) {
            self.error(
                peer,
                ErrorCode::Forbidden,
                format!("{} is for moderators only", msg.type_name()),
            );
            return Flow::Continue;
        }
        match msg {
            ClientMsg::Join { .. } => {
                self.error(peer, ErrorCode::InvalidState, "already joined");
            }
            ClientMsg::Ping => self.to_peer(peer, ServerMsg::Pong),
            ClientMsg::Leave => {
                // Leaving on purpose gives up the pass: coming back means the lobby again.
                self.delete_pass(peer).await;
                self.leave(peer, LeaveReason::Left)
            }
            ClientMsg::Offer { sdp, sources } => {
                match self.media.offer(self.room, peer, sdp, sources).await {
                    Ok(answer) => {
                        let tracks = answer
                            .assignments
                            .into_iter()
                            .map(|a| klausur_proto::TrackAssignment {
                                mid: a.mid,
                                participant_id: participant_id(a.publisher),
                                source: a.source,
                            })
                            .collect();
                        self.to_peer(
                            peer,
                            ServerMsg::Answer {
                                sdp: answer.sdp,
                                tracks,
                            },
                        );
                    }
                    Err(e) => self.error(
                        peer,
                        ErrorCode::InvalidField,
                        format!("offer rejected: {e}"),
                    ),
                }
            }
            ClientMsg::MediaState {
                audio_muted,
                video_muted,
                screen_sharing,
            } => {
                if let Some(m) = self.members.get_mut(&peer) {
                    m.self_audio_muted = audio_muted;
                    m.info.audio_muted = audio_muted || m.info.muted_by_moderator;
                    m.info.video_muted = video_muted;
                    m.info.screen_sharing = screen_sharing;
                    let participant = m.info.clone();
                    self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                }
            }
            ClientMsg::RaiseHand { raised } => {
                // Raising again keeps the place in the order; lowering gives it up.
                if let Some(m) = self.members.get_mut(&peer) {
                    let at = match (raised, m.info.hand_raised_at) {
                        (true, Some(at)) => Some(at),
                        (true, None) => Some(unix_ms()),
                        (false, _) => None,
                    };
                    if at != m.info.hand_raised_at {
                        m.info.hand_raised_at = at;
                        let participant = m.info.clone();
                        self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                    }
                }
            }
            ClientMsg::LowerHand { participant_id: id } => {
                let Some(target) = self.find(peer, &id, Place::Meeting) else {
                    return Flow::Continue;
                };
                if let Some(m) = self.members.get_mut(&target) {
                    if m.info.hand_raised_at.take().is_some() {
                        let participant = m.info.clone();
                        self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                    }
                }
            }
            ClientMsg::Admit { participant_id: id } => {
                // Someone already in the meeting room who waits for the encrypted group (their
                // admitting moderator left): this moderator's client adds them from now on.
                if let Some(target) =
                    parse_participant_id(&id).filter(|p| self.members.contains_key(p))
                {
                    let out = self.delivery.readmit(target, peer);
                    if out.is_ok() {
                        if let Some(m) = self.members.get_mut(&target) {
                            m.admitted_by = Some(peer);
                        }
                    }
                    self.deliver_or_refuse(peer, out);
                    return Flow::Continue;
                }
                let Some(target) = self.find(peer, &id, Place::Lobby) else {
                    return Flow::Continue;
                };
                let Some(mut w) = self.lobby.remove(&target) else {
                    return Flow::Continue;
                };
                let by = self.display_name(peer);
                let admitter = self.actor_of(peer);
                self.record(
                    kind::LOBBY_ADMITTED,
                    admitter,
                    serde_json::json!({ "target": audit::target(&audit_actor(&w.standing)) }),
                )
                .await;
                // Whom a moderator lets in takes their seat: someone in the meeting with the same
                // invitation (`invitation_in_use`) makes way.
                let holders = self.seat_holders(Seat::of(&w.standing));
                self.replace(holders);
                // A guest without account or invitation (and without a pass yet): a pass
                // brings this browser tab back in after a broken connection or a restart.
                if w.standing.ban_subject.is_none() && w.standing.pass.is_none() {
                    w.standing.pass = self.new_pass(&w.standing, peer).await;
                }
                if let Some(subject) = w.standing.ban_subject {
                    if w.standing.banned {
                        if let Err(e) = self.store.remove_ban(&self.seed.id, subject).await {
                            crate::storage_fault::not_stored(
                                &self.seed.id,
                                "could not lift ban",
                                &e,
                            );
                        }
                    }
                }
                self.admit_member(
                    target,
                    w.tx,
                    w.standing,
                    JoinMethod::Lobby { admitted_by: by },
                    Some(peer),
                )
                .await;
                self.notify_moderators_lobby(false);
            }
            ClientMsg::Deny { participant_id: id } => {
                let Some(target) = self.find(peer, &id, Place::Lobby) else {
                    return Flow::Continue;
                };
                if let Some(w) = self.lobby.remove(&target) {
                    let denier = self.actor_of(peer);
                    self.record(
                        kind::LOBBY_DENIED,
                        denier,
                        serde_json::json!({ "target": audit::target(&audit_actor(&w.standing)) }),
                    )
                    .await;
                    self.send(
                        &w.tx,
                        ServerMsg::Ended {
                            reason: EndReason::Denied,
                            by: Some(self.display_name(peer)),
                        },
                    );
                }
                self.notify_moderators_lobby(false);
            }
            ClientMsg::Remove { participant_id: id } => {
                let Some(target) = self.find(peer, &id, Place::Meeting) else {
                    return Flow::Continue;
                };
                if target == peer {
                    self.error(
                        peer,
                        ErrorCode::InvalidField,
                        "use leave to leave the meeting",
                    );
                    return Flow::Continue;
                }
                if self.is_organiser(target) {
                    self.error(
                        peer,
                        ErrorCode::Forbidden,
                        "the organiser cannot be removed from their meeting",
                    );
                    return Flow::Continue;
                }
                let by = self.display_name(peer);
                let (remover, removed) = (self.actor_of(peer), self.actor_of(target));
                self.record(
                    kind::PARTICIPANT_REMOVED,
                    remover,
                    serde_json::json!({
                        "target": audit::target(&removed),
                        "participant": participant_id(target),
                    }),
                )
                .await;
                self.delete_pass(target).await;
                // A removal ends a moderator's role: back through the lobby, as a participant.
                if self
                    .members
                    .get(&target)
                    .is_some_and(|m| m.standing.moderator)
                {
                    let subject = self
                        .members
                        .get(&target)
                        .and_then(|m| m.standing.ban_subject);
                    let res = match subject {
                        Some(BanSubject::User(uid)) => {
                            self.store.remove_moderator(&self.seed.id, uid).await
                        }
                        Some(BanSubject::Invitation(id)) => {
                            self.store.set_invitation_moderator(id, false).await
                        }
                        None => Ok(()),
                    };
                    if let Err(e) = res {
                        crate::storage_fault::not_stored(
                            &self.seed.id,
                            "could not end a removed moderator's role",
                            &e,
                        );
                    }
                }
                if let Some(m) = self.members.get(&target) {
                    if let Some(subject) = m.standing.ban_subject {
                        if let Err(e) = self
                            .store
                            .add_ban(&self.seed.id, subject, &by, chrono::Utc::now())
                            .await
                        {
                            crate::storage_fault::not_stored(
                                &self.seed.id,
                                "could not record removal",
                                &e,
                            );
                        }
                    }
                    self.send(
                        &m.tx,
                        ServerMsg::Ended {
                            reason: EndReason::Removed,
                            by: Some(by),
                        },
                    );
                }
                self.leave(target, LeaveReason::Removed);
            }
            ClientMsg::Lock { locked } => {
                let kind = if locked {
                    kind::MEETING_LOCKED
                } else {
                    kind::MEETING_UNLOCKED
                };
                let by = self.actor_of(peer);
                self.record(kind, by, serde_json::json!({})).await;
                self.locked = locked;
                self.persist_lock(locked).await;
                self.broadcast(
                    ServerMsg::MeetingChanged {
                        meeting: self.info(),
                    },
                    None,
                );
            }
            ClientMsg::Mute {
                participant_id: id,
                muted,
            } => {
                let Some(target) = self.find(peer, &id, Place::Meeting) else {
                    return Flow::Continue;
                };
                let kind = if muted {
                    kind::PARTICIPANT_MUTED
                } else {
                    kind::PARTICIPANT_UNMUTED
                };
                let (by, whom) = (self.actor_of(peer), self.actor_of(target));
                self.record(
                    kind,
                    by,
                    serde_json::json!({ "target": audit::target(&whom) }),
                )
                .await;
                self.media.send(MediaCmd::SetAudioForwarding {
                    room: self.room,
                    peer: target,
                    enabled: !muted,
                });
                if let Some(m) = self.members.get_mut(&target) {
                    if let Some(subject) = m.standing.ban_subject {
                        if muted {
                            self.muted.insert(subject);
                        } else {
                            self.muted.remove(&subject);
                        }
                        // Stored too, so that a restart of the server does not lift it.
                        if let Err(e) = self.store.set_muted(&self.seed.id, subject, muted).await {
                            crate::storage_fault::not_stored(&self.seed.id, "mute not stored", &e);
                        }
                    }
                    if let Some(pass) = m.standing.pass.as_mut() {
                        pass.muted = muted;
                        if let Err(e) = self.store.set_guest_pass_muted(pass.id, muted).await {
                            crate::storage_fault::not_stored(&self.seed.id, "mute not stored", &e);
                        }
                    }
                    m.info.muted_by_moderator = muted;
                    m.info.audio_muted = muted || m.self_audio_muted;
                    let participant = m.info.clone();
                    self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                }
            }
            ClientMsg::SetModerator {
                participant_id: id,
                moderator,
            } => {
                if !self.is_organiser(peer) {
                    self.error(
                        peer,
                        ErrorCode::Forbidden,
                        "only the organiser grants and revokes moderation",
                    );
                    return Flow::Continue;
                }
                let Some(target) = self.find(peer, &id, Place::Meeting) else {
                    return Flow::Continue;
                };
                if target == peer {
                    self.error(
                        peer,
                        ErrorCode::Forbidden,
                        "the organiser's role cannot be taken away",
                    );
                    return Flow::Continue;
                }
                if self
                    .members
                    .get(&target)
                    .is_some_and(|m| m.standing.phone.is_some())
                {
                    self.error(
                        peer,
                        ErrorCode::InvalidField,
                        "a telephone caller cannot moderate",
                    );
                    return Flow::Continue;
                }
                let kind = if moderator {
                    kind::ROLE_GRANTED
                } else {
                    kind::ROLE_REVOKED
                };
                let (by, whom) = (self.actor_of(peer), self.actor_of(target));
                self.record(
                    kind,
                    by,
                    serde_json::json!({ "target": audit::target(&whom) }),
                )
                .await;
                // Stored with the account or the invitation, so that the role survives the
                // person's reconnect and a restart of the server.
                let subject = self
                    .members
                    .get(&target)
                    .and_then(|m| m.standing.ban_subject);
                // A lobby guest's role is kept with their pass.
                let pass = self
                    .members
                    .get(&target)
                    .and_then(|m| m.standing.pass.as_ref().map(|p| p.id));
                let res = match subject {
                    Some(BanSubject::User(uid)) if moderator => {
                        self.store.add_moderator(&self.seed.id, uid).await
                    }
                    Some(BanSubject::User(uid)) => {
                        self.store.remove_moderator(&self.seed.id, uid).await
                    }
                    Some(BanSubject::Invitation(id)) => {
                        self.store.set_invitation_moderator(id, moderator).await
                    }
                    None => match pass {
                        Some(pass) => self.store.set_guest_pass_moderator(pass, moderator).await,
                        None => Ok(()),
                    },
                };
                if let Err(e) = res {
                    crate::storage_fault::not_stored(
                        &self.seed.id,
                        "could not store moderator change",
                        &e,
                    );
                }
                let lobby = self.lobby_list();
                if let Some(m) = self.members.get_mut(&target) {
                    m.info.role = if moderator {
                        Role::Moderator
                    } else {
                        Role::Participant
                    };
                    m.standing.moderator = moderator;
                    let participant = m.info.clone();
                    if moderator {
                        let _ = m.tx.try_send(ServerMsg::LobbyChanged {
                            lobby,
                            arrived: false,
                        });
                    }
                    self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
                }
            }
            ClientMsg::MlsKeyPackage {
                key_package,
                continuity,
            } => {
                // A guest back with their pass is tied to the moderator who admitted them first
                // (if here) only with a continuity proof; without one (a reloaded page) they wait
                // for a moderator's `admit`.
                let admitted_by = self.members.get(&peer).and_then(|m| {
                    let returning = m
                        .standing
                        .admitter
                        .filter(|_| continuity.is_some())
                        .and_then(|a| self.member_with_subject(a));
                    m.admitted_by.or(returning)
                });
                tracing::debug!(
                    meeting = %self.seed.id,
                    peer,
                    admitted_by = ?admitted_by,
                    continuity = continuity.is_some(),
                    "key package"
                );
                let out = self.delivery.key_package(
                    peer,
                    key_package,
                    admitted_by,
                    continuity,
                    std::time::Instant::now(),
                );
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsMember {
                leaf,
                epoch,
                signature,
                group_info,
            } => {
                // The identity credential this participant's leaf must carry.
                let identity = self.members.get(&peer).and_then(|m| {
                    crate::meeting::delivery::Identity::of(
                        m.standing.kind,
                        m.standing.user_id,
                        m.standing.ban_subject,
                    )
                });
                let out = match identity {
                    Some(identity) => self.delivery.member(
                        peer,
                        crate::meeting::delivery::MemberClaim {
                            leaf,
                            epoch,
                            signature,
                            group_info,
                        },
                        &identity,
                    ),
                    None => Err(Refusal(
                        ErrorCode::Forbidden,
                        "no identity credential is yours in this meeting's group".into(),
                    )),
                };
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsCommit {
                epoch,
                commit,
                welcome,
                welcome_for,
            } => {
                let mut joiners = Vec::with_capacity(welcome_for.len());
                for id in &welcome_for {
                    match parse_participant_id(id) {
                        Some(p) => joiners.push(p),
                        None => {
                            self.error(
                                peer,
                                ErrorCode::InvalidField,
                                format!("welcome_for: {id:?} is not a participant id"),
                            );
                            return Flow::Continue;
                        }
                    }
                }
                let welcomed: Vec<serde_json::Value> = joiners
                    .iter()
                    .map(|p| audit::target(&self.actor_of(*p)))
                    .collect();
                let out = self.delivery.commit(peer, epoch, commit, welcome, joiners);
                if out.is_ok() {
                    let by = self.actor_of(peer);
                    self.record(
                        kind::ENCRYPTION_EPOCH,
                        by,
                        serde_json::json!({ "epoch": epoch.saturating_add(1), "welcomed": welcomed }),
                    )
                    .await;
                }
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsCommitRejected { epoch } => {
                let out = self.delivery.rejected(peer, epoch);
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsChat { id, epoch, message } => {
                let sent_at_ms = chrono::Utc::now().timestamp_millis();
                let out = self.delivery.chat(peer, id, epoch, message, sent_at_ms);
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::EndMeeting => {
                let ender = self.actor_of(peer);
                self.record(kind::MEETING_ENDED, ender, serde_json::json!({}))
                    .await;
                let by = Some(self.display_name(peer));
                let msg = ServerMsg::Ended {
                    reason: EndReason::EndedByModerator,
                    by,
                };
                for m in self.members.values() {
                    self.send(&m.tx, msg.clone());
                }
                for w in self.lobby.values() {
                    self.send(&w.tx, msg.clone());
                }
                if let Err(e) = self
                    .store
                    .set_meeting_ended(&self.seed.id, chrono::Utc::now())
                    .await
                {
                    crate::storage_fault::not_stored(
                        &self.seed.id,
                        "could not mark meeting ended",
                        &e,
                    );
                }
                self.members.clear();
                self.lobby.clear();
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn on_room_event(&mut self, ev: RoomEvent) {
        match ev {
            RoomEvent::Renegotiate { peer, audio, video } => {
                self.to_peer(peer, ServerMsg::Renegotiate { audio, video });
            }
            RoomEvent::ActiveSpeaker(p) => {
                self.broadcast(
                    ServerMsg::ActiveSpeaker {
                        participant_id: p.map(participant_id),
                    },
                    None,
                );
            }
            RoomEvent::Connected(peer) => {
                tracing::debug!(meeting = %self.seed.id, peer, "media connected");
            }
            RoomEvent::Disconnected(peer) => {
                tracing::info!(meeting = %self.seed.id, peer, "media disconnected");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_roundtrip() {
        assert_eq!(participant_id(7), "p7");
        assert_eq!(parse_participant_id("p7"), Some(7));
        assert_eq!(parse_participant_id("7"), None);
        assert_eq!(parse_participant_id("px"), None);
    }
}
