//! The meeting's rules as a sans-IO core: join, lobby, admit, deny, remove, lock, mute, end,
//! roles, raised hands, who is shown large, guest passes and seats, and the MLS delivery ordering
//! ([`super::delivery`]) it carries.
//!
//! [`Meeting`] takes `(now, input)` and queues [`Output`]s to act on, in order; it never
//! awaits, and it reads no clock, socket or database. Its driver (`super::actor`) does the I/O:
//! it sends the messages, writes the audit records and the stored state, talks to the media
//! worker, and answers the core's [`Request`]s. A request is a question the rules cannot
//! decide alone (was the media peer created, which guest pass did the store make, whom does the
//! meeting's profile admit to the encrypted group): the core stops after queueing it, and goes
//! on when the driver hands in the answer ([`Input::MediaAdded`], [`Input::GuestPass`],
//! [`Input::Policy`]). Inputs that arrive meanwhile wait their turn, so a command's steps are
//! never interleaved with another's.
//!
//! Outputs come in the order they must take effect: an audit record is queued before the
//! messages of what it records, so a driver that writes each record before going on keeps
//! the rule "recorded before anyone is told".
//!
//! The `meeting` fuzz target drives this core with arbitrary operation sequences and checks
//! its invariants after every step (a removed participant is never a member, the lobby never
//! holds a member, only moderators' commands change the meeting, every member receives every
//! commit in order).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use klausur_proto::{
    ClientMsg, EndReason, ErrorCode, JoinMethod, LeaveReason, LobbyEntry, LobbyReason, MeetingInfo,
    MlsPolicy, Participant, ParticipantKind, Role, SecurityProfile, SendSource, ServerMsg, Source,
};
use klausur_room::{PeerId, RoomEvent, VideoWant};
use klausur_store::{AuditActor, BanSubject};

use super::delivery::{Delivery, Identity, MemberClaim, Out};
use super::ids::{parse_participant_id, participant_id};
use super::signaling_error::Refusal;
use crate::admission::{MeetingSeed, Pass, Standing};
use crate::audit::{self, kind, Entry};

/// Most guests waiting in one meeting's lobby; the next is told the lobby is full. A hundred
/// waiting guests are more than any moderator admits one by one.
pub const MAX_LOBBY: usize = 100;

/// Moderators get the lobby list at most this often: arrivals in between are sent as one
/// list, so a crowd arriving at once does not send each moderator a list per guest.
pub const LOBBY_NOTICE_INTERVAL: Duration = Duration::from_millis(500);

/// How long a guest pass stays valid after its holder's connection went (the browser tries to
/// come back for about a minute; a restart of the server takes seconds).
pub const PASS_GRACE: chrono::Duration = chrono::Duration::minutes(2);

/// How long a guest pass is valid while its holder is in the meeting (renewed on every join;
/// the meeting emptying deletes it anyway).
pub const PASS_LIFETIME: chrono::Duration = chrono::Duration::hours(12);

/// The time an input happens at: the monotonic clock (timers, rate limits) and the wall clock
/// (raised hands' order, expiry of guest passes, chat's time stamps).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

/// What happens to a meeting.
#[derive(Debug)]
pub enum Input {
    /// Someone joins as `peer` (from [`Meeting::allocate_peer`]) with the standing the database
    /// gave them. `token` is a fresh secret: an invited guest's seat token, if they get one.
    Join {
        peer: PeerId,
        standing: Standing,
        token: String,
    },
    /// A participant's message (in the meeting or the lobby).
    Msg { peer: PeerId, msg: ClientMsg },
    /// A participant's connection went.
    Disconnected { peer: PeerId },
    /// What the meeting's media room reports.
    Room(RoomEvent),
    /// The server shuts down: everyone is told, guests keep their passes for the restart.
    Shutdown,
    /// The server is being taken out of service and stops at the latest at `at` (sooner when
    /// its meetings have ended): everyone is told now, and everyone who arrives later.
    Maintenance { at: Instant },
    /// The answer to [`Request::AddMediaPeer`].
    MediaAdded { peer: PeerId, ok: bool },
    /// The answer to [`Request::GuestPass`]: the stored pass, `None` if it could not be stored.
    GuestPass { peer: PeerId, pass: Option<Pass> },
    /// The answer to [`Request::Policy`]: the credential user ids the meeting admits directly.
    Policy { direct_user_ids: Vec<String> },
}

/// What the driver does, in this order.
#[derive(Debug)]
pub enum Output {
    /// A message for a participant in the meeting or the lobby (its queue never waits).
    Send(PeerId, ServerMsg),
    /// An audit record, written before anything after it takes effect.
    Audit(Entry),
    /// Stored state of the meeting (a failure is logged; the meeting goes on).
    Store(StoreOp),
    /// The media room.
    Media(MediaOp),
    /// `peer`'s SDP offer for the media room; the answer (or why not) goes to `peer`.
    Offer {
        peer: PeerId,
        sdp: String,
        sources: Vec<SendSource>,
    },
    /// A question for the driver; the core goes on with its answer.
    Request(Request),
}

/// A question whose answer the rules need to go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Create `peer`'s media connection; answer [`Input::MediaAdded`].
    AddMediaPeer(PeerId),
    /// Store a guest pass for `peer` (a fresh secret, its hash stored); answer
    /// [`Input::GuestPass`].
    GuestPass { peer: PeerId, pass: PassRequest },
    /// Whom the meeting admits to the encrypted group directly, as credential user ids (from
    /// the database: organiser, moderators, invitations, bans); answer [`Input::Policy`].
    Policy,
}

/// What `test_hooks` hands the meeting to inject: a commit maker, given the group id.
#[cfg(feature = "test-hooks")]
pub type CommitMaker = Box<dyn FnOnce(&str) -> Option<Vec<u8>> + Send>;

/// A guest pass to store (see `klausur_store::NewGuestPass`).
#[derive(Debug, Clone, PartialEq)]
pub struct PassRequest {
    pub display_name: String,
    pub admitted_by: String,
    pub admitter: Option<BanSubject>,
    pub expires_at: DateTime<Utc>,
}

/// A change of the meeting's stored state.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    Locked(bool),
    Muted(BanSubject, bool),
    PassMuted(i64, bool),
    PassExpiry(i64, DateTime<Utc>),
    PassModerator(i64, bool),
    DeletePass(i64),
    AddBan {
        subject: BanSubject,
        by: String,
        at: DateTime<Utc>,
    },
    RemoveBan(BanSubject),
    AddModerator(i64),
    RemoveModerator(i64),
    InvitationModerator(i64, bool),
    Ended(DateTime<Utc>),
    /// The meeting emptied: its mutes and guest passes go.
    ClearMutes,
    ClearPasses,
}

impl StoreOp {
    /// What was not stored, for the log when the store fails.
    pub fn what(&self) -> &'static str {
        match self {
            StoreOp::Locked(_) => "lock state not stored",
            StoreOp::Muted(..) | StoreOp::PassMuted(..) => "mute not stored",
            StoreOp::PassExpiry(..) => "guest pass expiry not stored",
            StoreOp::PassModerator(..)
            | StoreOp::AddModerator(_)
            | StoreOp::InvitationModerator(..) => "could not store moderator change",
            StoreOp::RemoveModerator(_) => "could not store the end of a moderator's role",
            StoreOp::DeletePass(_) => "guest pass not deleted",
            StoreOp::AddBan { .. } => "could not record removal",
            StoreOp::RemoveBan(_) => "could not lift ban",
            StoreOp::Ended(_) => "could not mark meeting ended",
            StoreOp::ClearMutes => "mutes not cleared",
            StoreOp::ClearPasses => "guest passes not cleared",
        }
    }
}

/// A change of the media room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOp {
    RemovePeer(PeerId),
    /// Whether `peer`'s microphone is forwarded (a moderator's mute stops it).
    AudioForwarding(PeerId, bool),
    /// Whether `peer` is sent video (a telephone caller takes audio only).
    ReceivesVideo(PeerId, bool),
    /// Which videos `peer` shows, and how large (its `video_tiles`).
    VideoWants(PeerId, Vec<VideoWant>),
}

/// Whether the meeting goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Running,
    /// Nobody is in the meeting or the lobby any more.
    Empty,
    /// A moderator ended it, or the server shuts down.
    Over,
}

struct Member {
    info: Participant,
    standing: Standing,
    self_audio_muted: bool,
    /// The moderator who admitted this participant from the lobby.
    admitted_by: Option<PeerId>,
    /// The room reported the member's media connection connected: if the room drops it, the
    /// member is told (`media_lost`). One that never connected is not: its client sees its own
    /// connection fail, and being told would only make it join again and again.
    media_connected: bool,
}

struct Waiting {
    entry: LobbyEntry,
    standing: Standing,
    /// The fresh secret of their join (a seat token if they are admitted).
    token: String,
}

/// A command stopped at a [`Request`], with what it goes on with.
enum Suspended {
    Pass {
        target: PeerId,
        waiting: Waiting,
        by: PeerId,
    },
    Media {
        peer: PeerId,
        standing: Standing,
        method: JoinMethod,
        admitted_by: Option<PeerId>,
        token: String,
        from_lobby: bool,
    },
    Policy,
}

/// What makes two joins the same person's. A telephone caller has a seat of their own beside
/// their invitation's browser seat: a call does not replace the browser, nor the other way
/// round, but a second call replaces the first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
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

    /// The seat of someone with a camera (not a telephone caller's), who can be shown large.
    fn with_camera(s: &Standing) -> Option<Seat> {
        Seat::of(s).filter(|seat| !matches!(seat, Seat::Phone(_)))
    }
}

#[derive(Clone, Copy)]
enum Place {
    Lobby,
    Meeting,
}

/// Who a participant is, for the audit trail: their account, invitation, guest pass or phone
/// leg, with the name they are shown under.
pub fn audit_actor(s: &Standing) -> AuditActor {
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

/// One `Send` of `msg` to each of `to`.
fn sends<'a>(
    to: impl Iterator<Item = PeerId> + 'a,
    msg: &'a ServerMsg,
) -> impl Iterator<Item = Output> + 'a {
    to.map(move |p| Output::Send(p, msg.clone()))
}

/// One running meeting's rules and state.
pub struct Meeting {
    seed: MeetingSeed,
    locked: bool,
    /// Someone was in the meeting (not only in the lobby) since it started here.
    had_members: bool,
    life: Life,
    /// A lobby list not yet sent to the moderators (`Some(arrived)`), see
    /// [`LOBBY_NOTICE_INTERVAL`], and when the last one was sent.
    lobby_notice: Option<bool>,
    lobby_sent_at: Option<Instant>,
    /// Per invitation seat, the token its current browser got in `joined` (`rejoin_token`):
    /// a join that brings it back takes the seat over (a reload, a reconnect); one without it
    /// while the seat is taken waits in the lobby as `invitation_in_use`.
    seat_tokens: HashMap<Seat, String>,
    /// Accounts and invitations a moderator muted: they stay muted when they come back (a
    /// reconnect, a reload, or a restart of the server: they are stored), until a moderator
    /// lifts it or the meeting empties.
    muted: HashSet<BanSubject>,
    /// Raised hands of people whose connection went (broke, or was replaced by their new one):
    /// they keep their place in the order when they come back. Not stored.
    hands: HashMap<Seat, u64>,
    /// Whom a moderator shows large to everyone (`spotlight`), by seat: it follows the person
    /// through a reconnect, and is shown while they are in the meeting. Not stored.
    spotlight: Option<Seat>,
    /// When the server stops at the latest, once it is being taken out of service
    /// ([`Input::Maintenance`]).
    maintenance: Option<Instant>,
    next_peer: PeerId,
    members: BTreeMap<PeerId, Member>,
    lobby: BTreeMap<PeerId, Waiting>,
    delivery: Delivery,
    /// `mls_pending` is due (asked for with [`Request::Policy`] when the command is done).
    pending_changed: bool,
    suspended: Option<Suspended>,
    /// Inputs that came while a command waited for an answer.
    deferred: VecDeque<Input>,
    out: VecDeque<Output>,
    /// The TURN server whose credentials every `joined` carries (`[turn]`).
    turn: Option<std::sync::Arc<crate::turn::TurnConfig>>,
}

impl Meeting {
    /// A meeting starting with its stored lock and moderators' mutes.
    pub fn new(
        seed: MeetingSeed,
        locked: bool,
        muted: impl IntoIterator<Item = BanSubject>,
    ) -> Self {
        Meeting {
            delivery: Delivery::new(&seed.id),
            seed,
            locked,
            had_members: false,
            life: Life::Running,
            lobby_notice: None,
            lobby_sent_at: None,
            seat_tokens: HashMap::new(),
            muted: muted.into_iter().collect(),
            hands: HashMap::new(),
            spotlight: None,
            maintenance: None,
            next_peer: 1,
            members: BTreeMap::new(),
            lobby: BTreeMap::new(),
            pending_changed: false,
            suspended: None,
            deferred: VecDeque::new(),
            out: VecDeque::new(),
            turn: None,
        }
    }

    /// Hands every participant credentials for `turn` in `joined`, valid from the join's
    /// wall-clock time on (see [`crate::turn`]).
    pub fn with_turn(mut self, turn: Option<std::sync::Arc<crate::turn::TurnConfig>>) -> Self {
        self.turn = turn;
        self
    }

    /// A meeting started while the server is being taken out of service: everyone who
    /// arrives is told when it stops at the latest (as after [`Input::Maintenance`]).
    pub fn with_maintenance(mut self, at: Option<Instant>) -> Self {
        self.maintenance = at;
        self
    }

    pub fn id(&self) -> &str {
        &self.seed.id
    }

    /// A new participant id for a join (never given twice).
    pub fn allocate_peer(&mut self) -> PeerId {
        let peer = self.next_peer;
        self.next_peer += 1;
        peer
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Meeting::handle_timeout`] is due (a lobby list held back), if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // A list held back always follows one sent (the first is sent at once).
        self.lobby_notice?;
        self.lobby_sent_at.map(|at| at + LOBBY_NOTICE_INTERVAL)
    }

    pub fn handle_timeout(&mut self, now: Now) {
        if self.suspended.is_none() {
            self.send_lobby_notice(now);
        }
    }

    /// Whether the meeting goes on (once no command waits for an answer).
    pub fn life(&self) -> Life {
        if self.suspended.is_some() || !self.deferred.is_empty() {
            return Life::Running;
        }
        match self.life {
            Life::Running if self.members.is_empty() && self.lobby.is_empty() => Life::Empty,
            life => life,
        }
    }

    /// The meeting closes here: what is stored about its running state goes if it emptied
    /// after people were in it (its lock, mutes and guest passes). A shutdown keeps them, and
    /// so does a lobby that empties before anyone came back in after a restart.
    pub fn close(&mut self) {
        if self.life == Life::Running && self.had_members {
            if self.locked {
                self.store(StoreOp::Locked(false));
            }
            self.store(StoreOp::ClearMutes);
            self.store(StoreOp::ClearPasses);
        }
        self.life = Life::Over;
    }

    /// Whether `peer` is in the meeting (not the lobby).
    pub fn is_member(&self, peer: PeerId) -> bool {
        self.members.contains_key(&peer)
    }

    /// Whether `peer` waits in the lobby.
    pub fn is_waiting(&self, peer: PeerId) -> bool {
        self.lobby.contains_key(&peer)
    }

    /// Whether `peer` moderates the meeting.
    pub fn is_moderator(&self, peer: PeerId) -> bool {
        self.members
            .get(&peer)
            .is_some_and(|m| m.info.role == Role::Moderator)
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The participants in the meeting, as everyone sees them.
    pub fn participants(&self) -> impl Iterator<Item = (PeerId, &Participant)> {
        self.members.iter().map(|(p, m)| (*p, &m.info))
    }

    /// Those waiting in the lobby.
    pub fn waiting(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.lobby.keys().copied()
    }

    /// The standing `peer` joined with (in the meeting or the lobby).
    pub fn standing(&self, peer: PeerId) -> Option<&Standing> {
        self.members
            .get(&peer)
            .map(|m| &m.standing)
            .or_else(|| self.lobby.get(&peer).map(|w| &w.standing))
    }

    /// The MLS delivery service, to read.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Whether a command waits for the answer to a [`Request`].
    pub fn suspended(&self) -> bool {
        self.suspended.is_some()
    }

    pub fn handle(&mut self, now: Now, input: Input) {
        let answer = matches!(
            input,
            Input::MediaAdded { .. } | Input::GuestPass { .. } | Input::Policy { .. }
        );
        if answer {
            self.resume(now, input);
        } else if self.suspended.is_some() || self.life == Life::Over {
            if self.life != Life::Over {
                self.deferred.push_back(input);
            }
            return;
        } else {
            self.step(now, input);
        }
        // Inputs held back while a command waited, in order, until the next one waits.
        while self.suspended.is_none() && self.life != Life::Over {
            let Some(input) = self.deferred.pop_front() else {
                break;
            };
            self.step(now, input);
        }
    }

    /// One input, then what is due when a command is done.
    fn step(&mut self, now: Now, input: Input) {
        match input {
            Input::Join {
                peer,
                standing,
                token,
            } => self.on_join(now, peer, standing, token),
            Input::Msg { peer, msg } => self.on_msg(now, peer, msg),
            Input::Disconnected { peer } => {
                self.keep_hand(peer);
                // A guest's pass gives them a short while to come back.
                if let Some(pass) = self.pass_of(peer) {
                    self.store(StoreOp::PassExpiry(pass, now.wall + PASS_GRACE));
                }
                self.leave(now, peer, LeaveReason::Disconnected);
            }
            Input::Room(ev) => self.on_room_event(ev),
            Input::Shutdown => self.shutdown(now),
            Input::Maintenance { at } => {
                self.maintenance = Some(at);
                if let Some(notice) = self.maintenance_notice(now) {
                    self.tell_everyone(notice);
                }
            }
            Input::MediaAdded { .. } | Input::GuestPass { .. } | Input::Policy { .. } => {}
        }
        self.done(now);
    }

    /// After a command (or its last step): the pending list if it changed, the lobby list if due.
    fn done(&mut self, now: Now) {
        if self.suspended.is_some() || self.life == Life::Over {
            return;
        }
        if std::mem::take(&mut self.pending_changed) {
            self.suspended = Some(Suspended::Policy);
            self.out.push_back(Output::Request(Request::Policy));
            return;
        }
        self.send_lobby_notice(now);
    }

    /// An answer to the request a command waits for.
    fn resume(&mut self, now: Now, input: Input) {
        match (self.suspended.take(), input) {
            (
                Some(Suspended::Pass {
                    target,
                    mut waiting,
                    by,
                }),
                Input::GuestPass { peer, pass },
            ) if peer == target => {
                waiting.standing.pass = pass;
                self.admit_from_lobby(target, waiting, by);
            }
            (
                Some(Suspended::Media {
                    peer,
                    standing,
                    method,
                    admitted_by,
                    token,
                    from_lobby,
                }),
                Input::MediaAdded { peer: added, ok },
            ) if added == peer => {
                if ok {
                    self.finish_admission(now, peer, standing, method, admitted_by, token);
                } else {
                    self.send(
                        peer,
                        Refusal(ErrorCode::Internal, "media is not available".into()).into(),
                    );
                }
                if from_lobby {
                    self.notify_moderators_lobby(now, false);
                }
            }
            (Some(Suspended::Policy), Input::Policy { direct_user_ids }) => {
                let msg = self.delivery.pending(MlsPolicy {
                    staff_direct: self.seed.profile == SecurityProfile::Internal,
                    direct_user_ids,
                });
                self.tell_group(msg, None);
            }
            (other, input) => {
                // An answer to nothing asked: the driver's mistake; the command goes on waiting.
                tracing::warn!(meeting = %self.seed.id, "unexpected answer {input:?}");
                self.suspended = other;
                return;
            }
        }
        self.done(now);
    }

    /// Queues an audit record about this meeting by `actor`.
    fn record(&mut self, kind: &str, actor: AuditActor, details: serde_json::Value) {
        self.out.push_back(Output::Audit(
            Entry::new(kind, actor)
                .meeting(&self.seed.id)
                .details(details),
        ));
    }

    fn store(&mut self, op: StoreOp) {
        self.out.push_back(Output::Store(op));
    }

    fn media(&mut self, op: MediaOp) {
        self.out.push_back(Output::Media(op));
    }

    /// `peer` as an audit actor (the member or lobby guest it is; the server if neither).
    fn actor_of(&self, peer: PeerId) -> AuditActor {
        self.standing(peer)
            .map(audit_actor)
            .unwrap_or_else(AuditActor::system)
    }

    fn info(&self) -> MeetingInfo {
        MeetingInfo {
            id: self.seed.id.clone(),
            title: self.seed.title.clone(),
            organiser: self.seed.organiser.clone(),
            profile: self.seed.profile,
            locked: self.locked,
            dial_in: self.seed.dial_in,
            spotlight: self.spotlight().map(participant_id),
        }
    }

    /// The member a moderator shows large to everyone, while they are in the meeting.
    pub fn spotlight(&self) -> Option<PeerId> {
        let seat = self.spotlight?;
        self.members
            .iter()
            .find(|(_, m)| Seat::with_camera(&m.standing) == Some(seat))
            .map(|(p, _)| *p)
    }

    /// Tells everyone the meeting's facts again (its lock, who is shown large).
    fn meeting_changed(&mut self) {
        self.broadcast(
            ServerMsg::MeetingChanged {
                meeting: self.info(),
            },
            None,
        );
    }

    /// A moderator shows `id` large to everyone, or nobody (`None`).
    fn set_spotlight(&mut self, peer: PeerId, id: Option<&str>) {
        let seat = match id {
            None => None,
            Some(id) => {
                let Some(target) = self.find(peer, id, Place::Meeting) else {
                    return;
                };
                let seat = self
                    .members
                    .get(&target)
                    .and_then(|m| Seat::with_camera(&m.standing));
                if seat.is_none() {
                    self.error(
                        peer,
                        ErrorCode::InvalidState,
                        "only a participant with a camera can be shown large",
                    );
                    return;
                }
                seat
            }
        };
        let shown = seat.and_then(|_| id.map(str::to_owned));
        self.record(
            kind::SPOTLIGHT,
            self.actor_of(peer),
            serde_json::json!({ "participant": shown }),
        );
        self.spotlight = seat;
        self.meeting_changed();
    }

    fn send(&mut self, peer: PeerId, msg: ServerMsg) {
        self.out.push_back(Output::Send(peer, msg));
    }

    /// A message for a participant in the meeting or the lobby (nobody else).
    fn tell(&mut self, peer: PeerId, msg: ServerMsg) {
        if self.members.contains_key(&peer) || self.lobby.contains_key(&peer) {
            self.send(peer, msg);
        }
    }

    /// A message for everyone in the meeting and the lobby.
    fn tell_everyone(&mut self, msg: ServerMsg) {
        let everyone = self.members.keys().chain(self.lobby.keys()).copied();
        self.out.extend(sends(everyone, &msg));
    }

    fn broadcast(&mut self, msg: ServerMsg, except: Option<PeerId>) {
        let to = self.members.keys().copied().filter(|p| Some(*p) != except);
        self.out.extend(sends(to, &msg));
    }

    /// A message for the members of the encrypted group in the meeting.
    fn tell_group(&mut self, msg: ServerMsg, except: Option<PeerId>) {
        let delivery = &self.delivery;
        let to =
            (self.members.keys().copied()).filter(|p| Some(*p) != except && delivery.is_member(*p));
        self.out.extend(sends(to, &msg));
    }

    fn updated(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get(&peer) {
            let participant = m.info.clone();
            self.broadcast(ServerMsg::ParticipantUpdated { participant }, None);
        }
    }

    fn lobby_list(&self) -> Vec<LobbyEntry> {
        self.lobby.values().map(|w| w.entry.clone()).collect()
    }

    /// The lobby changed: the moderators get the list now, or with the next list when one
    /// was sent less than [`LOBBY_NOTICE_INTERVAL`] ago.
    fn notify_moderators_lobby(&mut self, now: Now, arrived: bool) {
        self.lobby_notice = Some(self.lobby_notice.unwrap_or(false) || arrived);
        self.send_lobby_notice(now);
    }

    /// Sends the waiting lobby list if it is due.
    fn send_lobby_notice(&mut self, now: Now) {
        let Some(arrived) = self.lobby_notice else {
            return;
        };
        if self
            .lobby_sent_at
            .is_some_and(|at| at + LOBBY_NOTICE_INTERVAL > now.mono)
        {
            return;
        }
        self.lobby_notice = None;
        self.lobby_sent_at = Some(now.mono);
        let msg = ServerMsg::LobbyChanged {
            lobby: self.lobby_list(),
            arrived,
        };
        let moderators = (self.members.iter())
            .filter(|(_, m)| m.info.role == Role::Moderator)
            .map(|(p, _)| *p);
        self.out.extend(sends(moderators, &msg));
    }

    fn error(&mut self, peer: PeerId, code: ErrorCode, message: impl Into<String>) {
        let message = message.into();
        tracing::debug!(meeting = %self.seed.id, peer, code = code.as_str(), "refused: {message}");
        self.tell(peer, Refusal(code, message).into());
    }

    /// When the server stops at the latest, seen at `now`, if it is being taken out of service.
    fn maintenance_notice(&self, now: Now) -> Option<ServerMsg> {
        let left = self
            .maintenance?
            .saturating_duration_since(now.mono)
            .as_millis();
        let in_ms = u64::try_from(left).unwrap_or(u64::MAX);
        Some(ServerMsg::Maintenance { in_ms })
    }

    /// Tells `peer` when the server stops at the latest, if it is being taken out of service.
    fn tell_maintenance(&mut self, now: Now, peer: PeerId) {
        if let Some(notice) = self.maintenance_notice(now) {
            self.send(peer, notice);
        }
    }

    fn shutdown(&mut self, now: Now) {
        let msg = ServerMsg::Ended {
            reason: EndReason::ServerShutdown,
            by: None,
        };
        self.tell_everyone(msg);
        // The guests come back after the restart, each with their pass.
        let passes: Vec<i64> = (self.members.values().map(|m| &m.standing))
            .chain(self.lobby.values().map(|w| &w.standing))
            .filter_map(|s| s.pass.as_ref().map(|p| p.id))
            .collect();
        for pass in passes {
            self.store(StoreOp::PassExpiry(pass, now.wall + PASS_GRACE));
        }
        self.life = Life::Over;
    }

    fn on_join(&mut self, now: Now, peer: PeerId, standing: Standing, token: String) {
        if peer >= self.next_peer
            || self.members.contains_key(&peer)
            || self.lobby.contains_key(&peer)
        {
            tracing::warn!(meeting = %self.seed.id, peer, "a join with an id not allocated");
            return;
        }
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
            self.replace(now, old);
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
                    peer,
                    Refusal(
                        ErrorCode::RateLimited,
                        format!(
                            "the lobby of this meeting is full ({MAX_LOBBY} waiting); try again later"
                        ),
                    )
                    .into(),
                );
                self.send(
                    peer,
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
                );
                let entry = LobbyEntry {
                    id: participant_id(peer),
                    display_name: standing.display_name.clone(),
                    kind: standing.kind,
                    invitation: standing.invitation.clone(),
                    reason,
                    phone: standing.phone.clone(),
                };
                self.send(
                    peer,
                    ServerMsg::LobbyWait {
                        meeting_title: self.seed.title.clone(),
                    },
                );
                self.tell_maintenance(now, peer);
                self.lobby.insert(
                    peer,
                    Waiting {
                        entry,
                        standing,
                        token,
                    },
                );
                self.notify_moderators_lobby(now, true);
                if contested {
                    for p in holders {
                        self.tell(p, ServerMsg::InvitationContested);
                    }
                }
            }
            None => {
                let method = standing.direct.clone().unwrap_or(JoinMethod::StaffLogin);
                self.admit_member(peer, standing, method, None, token, false);
            }
        }
    }

    /// Deletes `peer`'s guest pass, if they hold one: they left on purpose or were removed.
    fn delete_pass(&mut self, peer: PeerId) {
        if let Some(pass) = self.pass_of(peer) {
            self.store(StoreOp::DeletePass(pass));
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
        self.standing(peer)
            .and_then(|s| s.pass.as_ref().map(|p| p.id))
    }

    /// Remembers `peer`'s raised hand for their seat, as their connection goes.
    fn keep_hand(&mut self, peer: PeerId) {
        if let Some(m) = self.members.get(&peer) {
            if let (Some(seat), Some(at)) = (Seat::of(&m.standing), m.info.hand_raised_at) {
                self.hands.insert(seat, at);
            }
        }
    }

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

    /// Ends the connections a new join of the same person replaces (a reload, a second tab, a
    /// reconnect the server had not noticed yet).
    fn replace(&mut self, now: Now, old: Vec<PeerId>) {
        for p in old {
            self.keep_hand(p);
            self.tell(
                p,
                ServerMsg::Ended {
                    reason: EndReason::Replaced,
                    by: None,
                },
            );
            self.leave(now, p, LeaveReason::Left);
        }
    }

    /// Admits `peer` to the meeting once its media connection is there.
    fn admit_member(
        &mut self,
        peer: PeerId,
        standing: Standing,
        method: JoinMethod,
        admitted_by: Option<PeerId>,
        token: String,
        from_lobby: bool,
    ) {
        self.suspended = Some(Suspended::Media {
            peer,
            standing,
            method,
            admitted_by,
            token,
            from_lobby,
        });
        self.out
            .push_back(Output::Request(Request::AddMediaPeer(peer)));
    }

    fn finish_admission(
        &mut self,
        now: Now,
        peer: PeerId,
        standing: Standing,
        method: JoinMethod,
        admitted_by: Option<PeerId>,
        token: String,
    ) {
        let muted = standing
            .ban_subject
            .is_some_and(|s| self.muted.contains(&s))
            || standing.pass.as_ref().is_some_and(|p| p.muted);
        if let Some(pass) = &standing.pass {
            self.store(StoreOp::PassExpiry(pass.id, now.wall + PASS_LIFETIME));
        }
        if muted {
            self.media(MediaOp::AudioForwarding(peer, false));
        }
        // The dial-in gateway takes audio only.
        if standing.phone.is_some() {
            self.media(MediaOp::ReceivesVideo(peer, false));
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
        );
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
                self.seat_tokens.insert(seat, token.clone());
                Some(token)
            }
            _ => None,
        };
        self.send(
            peer,
            ServerMsg::Joined {
                protocol_version: klausur_proto::PROTOCOL_VERSION,
                self_id: info.id.clone(),
                meeting: self.info(),
                participants,
                lobby,
                rejoin_token,
                ice_servers: self
                    .turn
                    .as_ref()
                    .map(|t| vec![t.credentials(&info.id, now.wall.timestamp())])
                    .unwrap_or_default(),
            },
        );
        self.tell_maintenance(now, peer);
        self.broadcast(
            ServerMsg::ParticipantJoined {
                participant: info.clone(),
            },
            None,
        );
        // A moderator coming (back) in: the guests they admitted earlier who came back with a
        // proof and wait for the group are theirs to add (not a caller's: a phone seat does
        // not moderate).
        let returning_admitter = standing.ban_subject.filter(|_| standing.phone.is_none());
        let spotlit_back =
            self.spotlight.is_some() && Seat::with_camera(&standing) == self.spotlight;
        self.members.insert(
            peer,
            Member {
                info,
                standing,
                self_audio_muted: false,
                admitted_by,
                media_connected: false,
            },
        );
        self.had_members = true;
        // The person shown large to everyone is back (a reconnect): everyone shows them again.
        if spotlit_back {
            self.meeting_changed();
        }
        if let Some(subject) = returning_admitter {
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

    /// Sends what the delivery service decided.
    fn deliver(&mut self, out: Vec<Out>) {
        for o in out {
            match o {
                Out::To(peer, msg) => self.tell(peer, msg),
                Out::Members { msg, except } => self.tell_group(msg, except),
                Out::PendingChanged => self.pending_changed = true,
                Out::Leaf(peer, claim) => {
                    if let Some(m) = self.members.get_mut(&peer) {
                        m.info.leaf = claim.as_ref().map(|c| c.leaf);
                        m.info.credential_user_id = claim.map(|c| c.credential_user_id);
                        self.updated(peer);
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

    fn leave(&mut self, now: Now, peer: PeerId, reason: LeaveReason) {
        let was_spotlit = self.spotlight() == Some(peer);
        if let Some(m) = self.members.remove(&peer) {
            self.record(
                kind::PARTICIPANT_LEFT,
                audit_actor(&m.standing),
                serde_json::json!({ "participant": participant_id(peer), "reason": reason }),
            );
            self.media(MediaOp::RemovePeer(peer));
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
            // Nobody large any more (or their new connection, if they came back meanwhile).
            if was_spotlit {
                self.meeting_changed();
            }
        } else if self.lobby.remove(&peer).is_some() {
            self.notify_moderators_lobby(now, false);
        }
    }

    /// The peer a moderator action names, or an error reply to `peer` if there is none there.
    fn find(&mut self, peer: PeerId, id: &str, place: Place) -> Option<PeerId> {
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

    fn display_name(&self, peer: PeerId) -> String {
        self.members
            .get(&peer)
            .map(|m| m.info.display_name.clone())
            .unwrap_or_default()
    }

    fn on_msg(&mut self, now: Now, peer: PeerId, msg: ClientMsg) {
        if !self.members.contains_key(&peer) {
            match msg {
                ClientMsg::Leave => {
                    self.delete_pass(peer);
                    self.leave(now, peer, LeaveReason::Left)
                }
                ClientMsg::Ping => self.tell(peer, ServerMsg::Pong),
                other => self.error(
                    peer,
                    ErrorCode::NotJoined,
                    format!(
                        "{} needs to be admitted to the meeting first",
                        other.type_name()
                    ),
                ),
            }
            return;
        }
        let needs_moderator = matches!(
            msg,
            ClientMsg::Admit { .. }
                | ClientMsg::Deny { .. }
                | ClientMsg::Remove { .. }
                | ClientMsg::Lock { .. }
                | ClientMsg::Spotlight { .. }
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
            return;
        }
        match msg {
            ClientMsg::Join { .. } => self.error(peer, ErrorCode::InvalidState, "already joined"),
            ClientMsg::Ping => self.tell(peer, ServerMsg::Pong),
            ClientMsg::Leave => {
                // Leaving on purpose gives up the pass: coming back means the lobby again.
                self.delete_pass(peer);
                self.leave(now, peer, LeaveReason::Left)
            }
            ClientMsg::Offer { sdp, sources } => {
                self.out.push_back(Output::Offer { peer, sdp, sources })
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
                    self.updated(peer);
                }
            }
            ClientMsg::VideoTiles { tiles } => {
                // Ids that name nobody are ignored (someone who just left); so is audio,
                // which is always forwarded.
                let wants = tiles
                    .iter()
                    .filter(|t| t.source != Source::Microphone)
                    .filter_map(|t| {
                        Some(VideoWant {
                            publisher: parse_participant_id(&t.participant_id)?,
                            source: t.source,
                            width: t.width,
                            height: t.height,
                        })
                    })
                    .collect();
                self.media(MediaOp::VideoWants(peer, wants));
            }
            ClientMsg::RaiseHand { raised } => self.raise_hand(now, peer, raised),
            ClientMsg::LowerHand { participant_id: id } => {
                if let Some(target) = self.find(peer, &id, Place::Meeting) {
                    let lowered = self
                        .members
                        .get_mut(&target)
                        .is_some_and(|m| m.info.hand_raised_at.take().is_some());
                    if lowered {
                        self.updated(target);
                    }
                }
            }
            ClientMsg::Admit { participant_id: id } => self.admit(now, peer, &id),
            ClientMsg::Deny { participant_id: id } => self.deny(now, peer, &id),
            ClientMsg::Remove { participant_id: id } => self.remove(now, peer, &id),
            ClientMsg::Lock { locked } => {
                let kind = if locked {
                    kind::MEETING_LOCKED
                } else {
                    kind::MEETING_UNLOCKED
                };
                self.record(kind, self.actor_of(peer), serde_json::json!({}));
                self.locked = locked;
                self.store(StoreOp::Locked(locked));
                self.meeting_changed();
            }
            ClientMsg::Spotlight { participant_id: id } => self.set_spotlight(peer, id.as_deref()),
            ClientMsg::Mute {
                participant_id: id,
                muted,
            } => self.mute(peer, &id, muted),
            ClientMsg::SetModerator {
                participant_id: id,
                moderator,
            } => self.set_moderator(peer, &id, moderator),
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
                let out =
                    self.delivery
                        .key_package(peer, key_package, admitted_by, continuity, now.mono);
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
                    Identity::of(m.standing.kind, m.standing.user_id, m.standing.ban_subject)
                });
                let out = match identity {
                    Some(identity) => self.delivery.member(
                        peer,
                        MemberClaim {
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
                            return;
                        }
                    }
                }
                let welcomed: Vec<serde_json::Value> = joiners
                    .iter()
                    .map(|p| audit::target(&self.actor_of(*p)))
                    .collect();
                let out = self.delivery.commit(peer, epoch, commit, welcome, joiners);
                // Recorded when relayed (a commit the service answers `accepted: false` to is
                // not relayed).
                let relayed = out.as_ref().is_ok_and(|out| {
                    out.iter().any(|o| {
                        matches!(
                            o,
                            Out::Members {
                                msg: ServerMsg::MlsCommit { .. },
                                ..
                            }
                        )
                    })
                });
                if relayed {
                    self.record(
                        kind::ENCRYPTION_EPOCH,
                        self.actor_of(peer),
                        serde_json::json!({ "epoch": epoch.saturating_add(1), "welcomed": welcomed }),
                    );
                }
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsCommitRejected { epoch } => {
                let out = self.delivery.rejected(peer, epoch);
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::MlsChat { id, epoch, message } => {
                let sent_at_ms = now.wall.timestamp_millis();
                let out = self.delivery.chat(peer, id, epoch, message, sent_at_ms);
                self.deliver_or_refuse(peer, out);
            }
            ClientMsg::EndMeeting => self.end(now, peer),
        }
    }

    fn raise_hand(&mut self, now: Now, peer: PeerId, raised: bool) {
        // Raising again keeps the place in the order; lowering gives it up.
        let changed = self.members.get_mut(&peer).is_some_and(|m| {
            let at = match (raised, m.info.hand_raised_at) {
                (true, Some(at)) => Some(at),
                (true, None) => Some(u64::try_from(now.wall.timestamp_millis()).unwrap_or(0)),
                (false, _) => None,
            };
            let changed = at != m.info.hand_raised_at;
            m.info.hand_raised_at = at;
            changed
        });
        if changed {
            self.updated(peer);
        }
    }

    fn admit(&mut self, now: Now, peer: PeerId, id: &str) {
        // Someone already in the meeting room who waits for the encrypted group (their
        // admitting moderator left): this moderator's client adds them from now on.
        if let Some(target) = parse_participant_id(id).filter(|p| self.members.contains_key(p)) {
            let out = self.delivery.readmit(target, peer);
            if out.is_ok() {
                if let Some(m) = self.members.get_mut(&target) {
                    m.admitted_by = Some(peer);
                }
            }
            self.deliver_or_refuse(peer, out);
            return;
        }
        let Some(target) = self.find(peer, id, Place::Lobby) else {
            return;
        };
        let Some(waiting) = self.lobby.remove(&target) else {
            return;
        };
        self.record(
            kind::LOBBY_ADMITTED,
            self.actor_of(peer),
            serde_json::json!({ "target": audit::target(&audit_actor(&waiting.standing)) }),
        );
        // Whom a moderator lets in takes their seat: someone in the meeting with the same
        // invitation (`invitation_in_use`) makes way.
        let holders = self.seat_holders(Seat::of(&waiting.standing));
        self.replace(now, holders);
        // A guest without account or invitation (and without a pass yet): a pass brings this
        // browser tab back in after a broken connection or a restart.
        if waiting.standing.ban_subject.is_none() && waiting.standing.pass.is_none() {
            let pass = PassRequest {
                display_name: waiting.standing.display_name.clone(),
                admitted_by: self.display_name(peer),
                admitter: self.members.get(&peer).and_then(|m| m.standing.ban_subject),
                expires_at: now.wall + PASS_LIFETIME,
            };
            self.suspended = Some(Suspended::Pass {
                target,
                waiting,
                by: peer,
            });
            self.out
                .push_back(Output::Request(Request::GuestPass { peer: target, pass }));
            return;
        }
        self.admit_from_lobby(target, waiting, peer);
    }

    fn admit_from_lobby(&mut self, target: PeerId, waiting: Waiting, by: PeerId) {
        if let Some(subject) = waiting
            .standing
            .ban_subject
            .filter(|_| waiting.standing.banned)
        {
            self.store(StoreOp::RemoveBan(subject));
        }
        let method = JoinMethod::Lobby {
            admitted_by: self.display_name(by),
        };
        self.admit_member(
            target,
            waiting.standing,
            method,
            Some(by),
            waiting.token,
            true,
        );
    }

    fn deny(&mut self, now: Now, peer: PeerId, id: &str) {
        let Some(target) = self.find(peer, id, Place::Lobby) else {
            return;
        };
        if let Some(w) = self.lobby.remove(&target) {
            self.record(
                kind::LOBBY_DENIED,
                self.actor_of(peer),
                serde_json::json!({ "target": audit::target(&audit_actor(&w.standing)) }),
            );
            self.send(
                target,
                ServerMsg::Ended {
                    reason: EndReason::Denied,
                    by: Some(self.display_name(peer)),
                },
            );
        }
        self.notify_moderators_lobby(now, false);
    }

    fn remove(&mut self, now: Now, peer: PeerId, id: &str) {
        let Some(target) = self.find(peer, id, Place::Meeting) else {
            return;
        };
        if target == peer {
            self.error(
                peer,
                ErrorCode::InvalidField,
                "use leave to leave the meeting",
            );
            return;
        }
        if self.is_organiser(target) {
            self.error(
                peer,
                ErrorCode::Forbidden,
                "the organiser cannot be removed from their meeting",
            );
            return;
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
        );
        self.delete_pass(target);
        let Some(standing) = self.members.get(&target).map(|m| m.standing.clone()) else {
            return;
        };
        // A removal ends a moderator's role: back through the lobby, as a participant.
        if standing.moderator {
            match standing.ban_subject {
                Some(BanSubject::User(uid)) => self.store(StoreOp::RemoveModerator(uid)),
                Some(BanSubject::Invitation(inv)) => {
                    self.store(StoreOp::InvitationModerator(inv, false))
                }
                None => {}
            }
        }
        if let Some(subject) = standing.ban_subject {
            self.store(StoreOp::AddBan {
                subject,
                by: by.clone(),
                at: now.wall,
            });
        }
        self.send(
            target,
            ServerMsg::Ended {
                reason: EndReason::Removed,
                by: Some(by),
            },
        );
        self.leave(now, target, LeaveReason::Removed);
    }

    fn mute(&mut self, peer: PeerId, id: &str, muted: bool) {
        let Some(target) = self.find(peer, id, Place::Meeting) else {
            return;
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
        );
        self.media(MediaOp::AudioForwarding(target, !muted));
        let Some(m) = self.members.get_mut(&target) else {
            return;
        };
        let subject = m.standing.ban_subject;
        let pass = m.standing.pass.as_mut().map(|pass| {
            pass.muted = muted;
            pass.id
        });
        m.info.muted_by_moderator = muted;
        m.info.audio_muted = muted || m.self_audio_muted;
        if let Some(subject) = subject {
            if muted {
                self.muted.insert(subject);
            } else {
                self.muted.remove(&subject);
            }
            // Stored too, so that a restart of the server does not lift it.
            self.store(StoreOp::Muted(subject, muted));
        }
        if let Some(pass) = pass {
            self.store(StoreOp::PassMuted(pass, muted));
        }
        self.updated(target);
    }

    fn set_moderator(&mut self, peer: PeerId, id: &str, moderator: bool) {
        if !self.is_organiser(peer) {
            self.error(
                peer,
                ErrorCode::Forbidden,
                "only the organiser grants and revokes moderation",
            );
            return;
        }
        let Some(target) = self.find(peer, id, Place::Meeting) else {
            return;
        };
        if target == peer {
            self.error(
                peer,
                ErrorCode::Forbidden,
                "the organiser's role cannot be taken away",
            );
            return;
        }
        let Some(standing) = self.members.get(&target).map(|m| m.standing.clone()) else {
            return;
        };
        if standing.phone.is_some() {
            self.error(
                peer,
                ErrorCode::InvalidField,
                "a telephone caller cannot moderate",
            );
            return;
        }
        let kind = if moderator {
            kind::ROLE_GRANTED
        } else {
            kind::ROLE_REVOKED
        };
        self.record(
            kind,
            self.actor_of(peer),
            serde_json::json!({ "target": audit::target(&audit_actor(&standing)) }),
        );
        // Stored with the account or the invitation, so that the role survives the person's
        // reconnect and a restart of the server; a lobby guest's with their pass.
        match (standing.ban_subject, &standing.pass) {
            (Some(BanSubject::User(uid)), _) if moderator => self.store(StoreOp::AddModerator(uid)),
            (Some(BanSubject::User(uid)), _) => self.store(StoreOp::RemoveModerator(uid)),
            (Some(BanSubject::Invitation(inv)), _) => {
                self.store(StoreOp::InvitationModerator(inv, moderator))
            }
            (None, Some(pass)) => self.store(StoreOp::PassModerator(pass.id, moderator)),
            (None, None) => {}
        }
        if let Some(m) = self.members.get_mut(&target) {
            m.info.role = if moderator {
                Role::Moderator
            } else {
                Role::Participant
            };
            m.standing.moderator = moderator;
        }
        if moderator {
            let lobby = self.lobby_list();
            self.send(
                target,
                ServerMsg::LobbyChanged {
                    lobby,
                    arrived: false,
                },
            );
        }
        self.updated(target);
    }

    fn end(&mut self, now: Now, peer: PeerId) {
        self.record(
            kind::MEETING_ENDED,
            self.actor_of(peer),
            serde_json::json!({}),
        );
        let msg = ServerMsg::Ended {
            reason: EndReason::EndedByModerator,
            by: Some(self.display_name(peer)),
        };
        self.tell_everyone(msg);
        self.store(StoreOp::Ended(now.wall));
        self.members.clear();
        self.lobby.clear();
        self.life = Life::Over;
    }

    /// Test builds only: tells everyone else that `peer` left while it stays (a server that
    /// keeps a removed member listening). Whether `peer` is in the meeting.
    #[cfg(feature = "test-hooks")]
    pub fn hide(&mut self, peer: PeerId) -> bool {
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
        found
    }

    /// Test builds only: acts as a malicious server: announces a participant the group does not
    /// hold, relays a commit made by `commit` (given the group id) as theirs, and puts a key
    /// package with a forged credential in the pending list. What was sent, as JSON.
    #[cfg(feature = "test-hooks")]
    pub fn inject_ghost(
        &mut self,
        now: Now,
        commit: CommitMaker,
        key_package: &[u8],
    ) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let ghost = self.allocate_peer();
        let impostor = self.allocate_peer();
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
            if let Some(commit) = commit(&group_id) {
                commit_epoch = Some(epoch);
                self.tell_group(
                    ServerMsg::MlsCommit {
                        epoch,
                        commit: b64.encode(commit),
                        from_id: participant_id(ghost),
                    },
                    None,
                );
            }
        }
        let pending =
            self.delivery
                .key_package(impostor, b64.encode(key_package), None, None, now.mono);
        let pending_ok = pending.is_ok();
        self.deliver_or_refuse(impostor, pending);
        self.done(now);
        serde_json::json!({
            "ghost_participant": participant_id(ghost),
            "forged_commit_epoch": commit_epoch,
            "impostor_pending": pending_ok.then(|| participant_id(impostor)),
        })
    }

    fn on_room_event(&mut self, ev: RoomEvent) {
        match ev {
            RoomEvent::Renegotiate { peer, audio, video } => {
                self.tell(peer, ServerMsg::Renegotiate { audio, video });
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
                if let Some(m) = self.members.get_mut(&peer) {
                    m.media_connected = true;
                }
            }
            RoomEvent::Disconnected(peer) => {
                // The room has dropped the peer's media for good (its worker was restarted,
                // or the connection failed): a member whose media had connected is told at
                // once, so its client joins again with a new connection instead of noticing
                // only when its consent checks go unanswered.
                tracing::info!(meeting = %self.seed.id, peer, "media disconnected");
                let connected = self
                    .members
                    .get_mut(&peer)
                    .is_some_and(|m| std::mem::take(&mut m.media_connected));
                if connected {
                    self.tell(peer, ServerMsg::MediaLost);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
