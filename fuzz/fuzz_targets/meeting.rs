//! The meeting's rules (`klausur_server::meeting::rules::Meeting`) driven by arbitrary
//! sequences of what people and the server's parts do: joins of eight people (the organiser,
//! two colleagues, two invitees, a telephone caller, two guests without invitation) with the
//! standing the database would give them, every client message (moderation from anyone, MLS
//! from real devices or arbitrary bytes), broken connections, the media room's events, time
//! passing, timers, a shutdown, and failures of the media worker and the store.
//!
//! The target is the driver: it answers the core's requests (media peer created or not, a guest
//! pass stored or not, the admission policy) and keeps a model of what the store holds (bans,
//! moderators, guest passes), from which each join's standing is made, as the WebSocket handler
//! makes it from the database.
//!
//! Invariants, checked after every step:
//! - nothing panics;
//! - the lobby never holds a member, and nobody is in the meeting twice under one seat;
//! - a removed participant is never a member again, and nobody a moderator removed is in the
//!   meeting (browser seats) while the removal stands, unless a moderator let them back in;
//! - only moderators' commands change the meeting: a participant's `lock`, `spotlight`,
//!   `remove`, `admit`, `deny`, `mute`, `set_moderator`, `lower_hand` and `end_meeting` change
//!   nothing, record nothing and are answered with an error to them alone;
//! - every member receives every commit in order, and every member of the group in the meeting
//!   receives each relayed commit (except its maker);
//! - every participant's list of who is in the meeting is the meeting's (built from `joined`,
//!   `participant_joined` and `participant_left` as the client builds it);
//! - when no lobby list is held back, every moderator's lobby list is the lobby;
//! - messages go only to open connections.
//!
//! Input format: a sequence of operations, each an operation byte and its arguments (see
//! `Sim::op`); the sequence ends with the input.
#![no_main]

#[path = "common/mod.rs"]
#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Reader;
use klausur_e2ee::{
    CaVerifier, IdentityCa, Member, MemberConfig, ParticipantKind as CredentialKind, SigningKey,
};
use klausur_proto::{
    ClientMsg, EndReason, JoinMethod, ParticipantKind, PhoneLeg, SecurityProfile, ServerMsg,
    Source, VideoTile,
};
use klausur_room::{PeerId, RoomEvent};
use klausur_server::admission::{MeetingSeed, Pass, Standing};
use klausur_server::meeting::rules::{Input, Life, Meeting, Now, Output, Request, StoreOp};
use klausur_server::meeting::{parse_participant_id, participant_id};
use klausur_store::BanSubject;
use libfuzzer_sys::fuzz_target;

/// Operations per input.
const MAX_OPS: usize = 64;
/// Open connections at most (each has an MLS device).
const MAX_CONNS: usize = 10;
/// The simulated wall clock at the start (seconds since the Unix epoch, in 2027).
const T0: i64 = 1_800_000_000;
const ORGANISER: i64 = 1;

/// The kinds of moderation command, for the invariant.
const MODERATION: &[&str] = &[
    "lobby.admitted",
    "lobby.denied",
    "participant.removed",
    "meeting.locked",
    "meeting.unlocked",
    "meeting.spotlight",
    "participant.muted",
    "participant.unmuted",
    "role.moderator_granted",
    "role.moderator_revoked",
    "meeting.ended",
];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `p`'s device's claim of its leaf (`mls_member`), with its GroupInfo (the creator of the
/// group sends it) or without.
fn leaf_claim(dev: &Member, p: PeerId, with_info: bool) -> Option<ClientMsg> {
    Some(ClientMsg::MlsMember {
        leaf: dev.leaf_index().ok()?,
        epoch: dev.epoch().ok()?,
        signature: b64(&dev.sign_leaf_claim(&participant_id(p)).ok()?),
        group_info: if with_info {
            dev.group_info().ok().map(|i| b64(&i))
        } else {
            None
        },
    })
}

/// The eight people who may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Person {
    /// Staff with an account: the organiser (1), a colleague the profile admits (2), one who
    /// waits in the lobby (3).
    Staff(i64),
    /// An invitee's browser (invitations 10 and 11).
    Invitee(i64),
    /// A telephone caller with invitation 10.
    Caller,
    /// Guests without invitation (0 and 1).
    Guest(u8),
}

impl Person {
    fn of(b: u8) -> Person {
        match b % 8 {
            0 => Person::Staff(ORGANISER),
            1 => Person::Staff(2),
            2 => Person::Staff(3),
            3 => Person::Invitee(10),
            4 => Person::Invitee(11),
            5 => Person::Caller,
            6 => Person::Guest(0),
            _ => Person::Guest(1),
        }
    }

    fn subject(self) -> Option<BanSubject> {
        match self {
            Person::Staff(uid) => Some(BanSubject::User(uid)),
            Person::Invitee(inv) => Some(BanSubject::Invitation(inv)),
            Person::Caller => Some(BanSubject::Invitation(10)),
            Person::Guest(_) => None,
        }
    }

    /// The credential their device holds.
    fn credential(self, n: u32) -> (String, CredentialKind) {
        match self {
            Person::Staff(uid) => (format!("user:{uid}"), CredentialKind::Staff),
            Person::Invitee(inv) => (format!("invitation:{inv}"), CredentialKind::InvitedGuest),
            Person::Caller => ("invitation:10".into(), CredentialKind::PhoneGateway),
            Person::Guest(_) => (format!("guest:g{n}"), CredentialKind::Guest),
        }
    }
}

/// A guest pass as the store holds it.
#[derive(Debug, Clone)]
struct StoredPass {
    id: i64,
    token: String,
    moderator: bool,
    muted: bool,
    admitter: Option<BanSubject>,
    admitted_by: String,
}

/// What the store holds, as far as joins depend on it.
#[derive(Default)]
struct Model {
    bans: HashSet<BanSubject>,
    moderators: HashSet<i64>,
    invitation_moderators: HashSet<i64>,
    passes: HashMap<Person, StoredPass>,
    next_pass: i64,
}

struct Conn {
    person: Person,
    dev: Option<Member>,
    /// The epoch of the next commit this connection must receive (`None`: not in the group).
    next: Option<u64>,
    /// Who is in the meeting, as this client's list shows it (`None` before `joined`).
    roster: Option<BTreeSet<PeerId>>,
    /// The lobby as this client last heard of it.
    lobby: Option<BTreeSet<PeerId>>,
    /// The group this connection was asked to create.
    asked: Option<String>,
    /// The joiners of the last `mls_pending` it got: participant id and key package.
    pending: Vec<(String, String)>,
    /// The meeting told it that it is over for it (the client closes the connection).
    ended: bool,
}

struct Sim {
    m: Meeting,
    now: Now,
    model: Model,
    conns: BTreeMap<PeerId, Conn>,
    /// Each person's last rejoin token (pass or seat token).
    rejoin: HashMap<Person, String>,
    removed: HashSet<PeerId>,
    /// The seats (account or invitation, telephone or not) a moderator removed.
    removed_seats: HashSet<(BanSubject, bool)>,
    /// The store failed at some point: what it was told may be lost.
    store_failed: bool,
    ca: IdentityCa,
    devices_made: u32,
    media_fails: bool,
    store_fails: bool,
    /// The current step's outputs (requests answered).
    step: Vec<Output>,
}

impl Sim {
    fn new(locked: bool) -> Sim {
        let seed = MeetingSeed {
            id: "m1".into(),
            title: "Rat".into(),
            organiser: "Olga".into(),
            organiser_id: ORGANISER,
            profile: SecurityProfile::Strict,
            dial_in: true,
        };
        Sim {
            m: Meeting::new(seed, locked, []),
            now: Now {
                mono: Instant::now(),
                wall: chrono::DateTime::from_timestamp(T0, 0).expect("a time"),
            },
            model: Model {
                next_pass: 100,
                ..Model::default()
            },
            conns: BTreeMap::new(),
            rejoin: HashMap::new(),
            removed: HashSet::new(),
            removed_seats: HashSet::new(),
            store_failed: false,
            ca: IdentityCa::new(SigningKey::from_bytes(&[1; 32])),
            devices_made: 0,
            media_fails: false,
            store_fails: false,
            step: Vec::new(),
        }
    }

    fn device(&mut self, person: Person) -> Option<Member> {
        self.devices_made += 1;
        let n = self.devices_made;
        let (user_id, kind) = person.credential(n);
        let key = SigningKey::from_bytes(&[(n % 200) as u8 + 10; 32]);
        let t0 = T0 as u64;
        let cred = self
            .ca
            .issue(
                &user_id,
                "Name",
                kind,
                &key.verifying_key(),
                t0 - 60,
                t0 + 86_400,
            )
            .ok()?;
        let verifier = CaVerifier {
            ca_public_key: self.ca.public_key(),
        };
        Member::new(cred, key, verifier, MemberConfig::default()).ok()
    }

    /// The standing the WebSocket handler would give `person` from what the store holds.
    fn standing(&self, person: Person, r: &mut Reader<'_>) -> Option<Standing> {
        let model = &self.model;
        let base = Standing {
            display_name: format!("{person:?}"),
            kind: ParticipantKind::Staff,
            moderator: false,
            direct: None,
            banned: person.subject().is_some_and(|s| model.bans.contains(&s)),
            ban_subject: person.subject(),
            user_id: None,
            invitation: None,
            pass: None,
            admitter: None,
            phone: None,
            seat_token: None,
        };
        Some(match person {
            Person::Staff(uid) => Standing {
                moderator: uid == ORGANISER || model.moderators.contains(&uid),
                direct: (uid != 3).then_some(JoinMethod::StaffLogin),
                user_id: Some(uid),
                ..base
            },
            Person::Invitee(inv) => Standing {
                kind: ParticipantKind::InvitedGuest,
                moderator: model.invitation_moderators.contains(&inv),
                direct: Some(JoinMethod::Invitation {
                    invitee: format!("Invitee {inv}"),
                    invited_by: "Olga".into(),
                }),
                invitation: Some(format!("Invitee {inv}")),
                seat_token: match r.u8()? % 3 {
                    0 => self.rejoin.get(&person).cloned(),
                    1 => Some("not-the-token".into()),
                    _ => None,
                },
                ..base
            },
            Person::Caller => Standing {
                kind: ParticipantKind::PhoneGateway,
                direct: Some(JoinMethod::Invitation {
                    invitee: "Invitee 10".into(),
                    invited_by: "Olga".into(),
                }),
                invitation: Some("Invitee 10".into()),
                phone: Some(PhoneLeg {
                    number_suffix: Some("1234".into()),
                }),
                ..base
            },
            Person::Guest(_) => {
                let with_pass = r.bool()?;
                let pass = model.passes.get(&person).filter(|_| with_pass);
                match pass {
                    Some(p) => Standing {
                        kind: ParticipantKind::Guest,
                        moderator: p.moderator,
                        direct: Some(JoinMethod::Lobby {
                            admitted_by: p.admitted_by.clone(),
                        }),
                        pass: Some(Pass {
                            id: p.id,
                            token: p.token.clone(),
                            muted: p.muted,
                        }),
                        admitter: p.admitter,
                        ..base
                    },
                    None => Standing {
                        kind: ParticipantKind::Guest,
                        ..base
                    },
                }
            }
        })
    }

    /// Hands the meeting an input and acts as its driver until it has nothing left to do.
    fn input(&mut self, input: Input) {
        self.m.handle(self.now, input);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.m.poll_output() {
            match out {
                Output::Request(req) => {
                    let answer = self.answer(req);
                    self.m.handle(self.now, answer);
                }
                Output::Store(op) => {
                    self.store(&op);
                    self.step.push(Output::Store(op));
                }
                other => self.step.push(other),
            }
        }
    }

    fn answer(&mut self, req: Request) -> Input {
        match req {
            Request::AddMediaPeer(peer) => Input::MediaAdded {
                peer,
                ok: !self.media_fails,
            },
            Request::GuestPass { peer, pass } => {
                let person = self.conns.get(&peer).map(|c| c.person);
                let stored = match person {
                    Some(person) if !self.store_fails => {
                        self.model.next_pass += 1;
                        let p = StoredPass {
                            id: self.model.next_pass,
                            token: format!("pass{}", self.model.next_pass),
                            moderator: false,
                            muted: false,
                            admitter: pass.admitter,
                            admitted_by: pass.admitted_by,
                        };
                        self.model.passes.insert(person, p.clone());
                        Some(Pass {
                            id: p.id,
                            token: p.token,
                            muted: false,
                        })
                    }
                    _ => None,
                };
                Input::GuestPass { peer, pass: stored }
            }
            Request::Policy => Input::Policy {
                direct_user_ids: if self.store_fails {
                    Vec::new()
                } else {
                    vec!["user:1".into(), "user:2".into(), "invitation:10".into()]
                },
            },
        }
    }

    /// What the store does with a write (nothing when it fails).
    fn store(&mut self, op: &StoreOp) {
        if self.store_fails {
            return;
        }
        let model = &mut self.model;
        match op {
            StoreOp::AddBan { subject, .. } => {
                model.bans.insert(*subject);
            }
            StoreOp::RemoveBan(subject) => {
                model.bans.remove(subject);
            }
            StoreOp::AddModerator(uid) => {
                model.moderators.insert(*uid);
            }
            StoreOp::RemoveModerator(uid) => {
                model.moderators.remove(uid);
            }
            StoreOp::InvitationModerator(inv, on) => {
                if *on {
                    model.invitation_moderators.insert(*inv);
                } else {
                    model.invitation_moderators.remove(inv);
                }
            }
            StoreOp::PassModerator(id, on) => {
                for p in model.passes.values_mut().filter(|p| p.id == *id) {
                    p.moderator = *on;
                }
            }
            StoreOp::PassMuted(id, on) => {
                for p in model.passes.values_mut().filter(|p| p.id == *id) {
                    p.muted = *on;
                }
            }
            StoreOp::DeletePass(id) => model.passes.retain(|_, p| p.id != *id),
            StoreOp::ClearPasses => model.passes.clear(),
            StoreOp::Locked(_)
            | StoreOp::Muted(..)
            | StoreOp::PassExpiry(..)
            | StoreOp::Ended(_)
            | StoreOp::ClearMutes => {}
        }
    }

    /// Delivers the step's messages to the clients (their lists, their devices), checking the
    /// order of commits.
    fn deliver(&mut self, sender: Option<PeerId>) {
        let t = Duration::from_secs(self.now.wall.timestamp() as u64);
        let outs = std::mem::take(&mut self.step);
        // Who got each relayed commit.
        let mut commits: BTreeMap<u64, BTreeSet<PeerId>> = BTreeMap::new();
        let mut joined: Vec<(PeerId, JoinMethod)> = Vec::new();
        for o in &outs {
            let Output::Send(p, msg) = o else { continue };
            let conn = self
                .conns
                .get_mut(p)
                .unwrap_or_else(|| panic!("{msg:?} to p{p}, whose connection is closed"));
            match msg {
                ServerMsg::Joined {
                    participants,
                    lobby,
                    rejoin_token,
                    self_id,
                    ..
                } => {
                    if let Some(me) = participants.iter().find(|x| x.id == *self_id) {
                        joined.push((*p, me.join_method.clone()));
                    }
                    conn.roster = Some(
                        participants
                            .iter()
                            .filter_map(|x| parse_participant_id(&x.id))
                            .collect(),
                    );
                    conn.lobby = Some(
                        lobby
                            .iter()
                            .filter_map(|x| parse_participant_id(&x.id))
                            .collect(),
                    );
                    if let Some(token) = rejoin_token {
                        self.rejoin.insert(conn.person, token.clone());
                    }
                }
                ServerMsg::ParticipantJoined { participant } => {
                    let id = parse_participant_id(&participant.id).expect("an id");
                    joined.push((id, participant.join_method.clone()));
                    let roster = conn
                        .roster
                        .as_mut()
                        .expect("a list before participant_joined");
                    assert!(roster.insert(id), "p{p} told twice that {id} joined");
                }
                ServerMsg::ParticipantLeft {
                    participant_id: id, ..
                } => {
                    let id = parse_participant_id(id).expect("an id");
                    let roster = conn
                        .roster
                        .as_mut()
                        .expect("a list before participant_left");
                    assert!(
                        roster.remove(&id),
                        "p{p} told that {id} left, who was not there"
                    );
                }
                ServerMsg::LobbyChanged { lobby, .. } => {
                    conn.lobby = Some(
                        lobby
                            .iter()
                            .filter_map(|x| parse_participant_id(&x.id))
                            .collect(),
                    );
                }
                ServerMsg::Ended { reason, .. } => {
                    conn.ended = true;
                    if *reason == EndReason::Removed {
                        self.removed.insert(*p);
                        // (The meeting has forgotten them by now: their seat is the person's.)
                        if let Some(s) = conn.person.subject() {
                            self.removed_seats
                                .insert((s, conn.person == Person::Caller));
                        }
                    }
                }
                ServerMsg::MlsCreateGroup { group_id } => conn.asked = Some(group_id.clone()),
                ServerMsg::MlsPending { joiners, .. } => {
                    conn.pending = joiners
                        .iter()
                        .map(|j| (j.participant_id.clone(), j.key_package.clone()))
                        .collect();
                }
                ServerMsg::MlsWelcome { welcome, epoch } => {
                    conn.next = Some(*epoch);
                    if let (Some(dev), Some(w)) = (conn.dev.as_mut(), unb64(welcome)) {
                        let _ = dev.join_from_welcome(&w, t);
                    }
                }
                ServerMsg::MlsReset { .. } => {
                    conn.next = None;
                    if let Some(dev) = conn.dev.as_mut() {
                        let _ = dev.reset();
                    }
                }
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: true,
                } => {
                    if let Some(next) = conn.next {
                        assert_eq!(*epoch, next, "p{p}'s own commit out of order");
                    }
                    conn.next = Some(epoch + 1);
                }
                ServerMsg::MlsCommit { epoch, commit, .. } => {
                    commits.entry(*epoch).or_default().insert(*p);
                    if let Some(next) = conn.next {
                        assert_eq!(*epoch, next, "p{p} got commit {epoch}, expected {next}");
                        conn.next = Some(epoch + 1);
                    }
                    if let (Some(dev), Some(b)) = (conn.dev.as_mut(), unb64(commit)) {
                        if dev.in_group() && dev.epoch().ok() == Some(*epoch) {
                            let _ = dev.process_message(&b, t);
                        }
                    }
                }
                _ => {}
            }
        }
        // Every group member in the meeting got each relayed commit (its maker excepted).
        for (epoch, got) in commits {
            let group: BTreeSet<PeerId> = self
                .m
                .participants()
                .map(|(p, _)| p)
                .filter(|p| self.m.delivery().is_member(*p) && Some(*p) != sender)
                .collect();
            assert!(
                got.is_superset(&group),
                "commit {epoch} reached {got:?}, not all of {group:?}"
            );
        }
        // The creator of a new group and the members of one are in the group; nobody else.
        for (q, conn) in self.conns.iter_mut() {
            if !self.m.delivery().is_member(*q) {
                conn.next = None;
            } else if conn.next.is_none() && Some(*q) == sender {
                conn.next = self.m.delivery().epoch();
            }
        }
        // A moderator let a removed person back in: the removal no longer stands (for the
        // account or invitation: its ban is lifted for the browser and the telephone seat).
        for (p, method) in joined {
            if let (JoinMethod::Lobby { .. }, Some(s)) = (method, self.m.standing(p)) {
                if let Some(subject) = s.ban_subject {
                    self.removed_seats.remove(&(subject, false));
                    self.removed_seats.remove(&(subject, true));
                }
            }
        }
        self.step = outs;
    }

    /// The clients told that the meeting is over for them close their connections.
    fn close_ended(&mut self) {
        let ended: Vec<PeerId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.ended)
            .map(|(p, _)| *p)
            .collect();
        for p in ended {
            self.conns.remove(&p);
            self.input(Input::Disconnected { peer: p });
            self.deliver(None);
            self.step.clear();
        }
    }

    fn check(&self) {
        let members: BTreeSet<PeerId> = self.m.participants().map(|(p, _)| p).collect();
        let lobby: BTreeSet<PeerId> = self.m.waiting().collect();
        assert!(members.is_disjoint(&lobby), "in the lobby and the meeting");
        for p in &self.removed {
            assert!(
                !members.contains(p) && !lobby.contains(p),
                "removed p{p} is back"
            );
        }
        if self.m.life() == Life::Over {
            return;
        }
        // One seat, one participant: an account, an invitation's browser, an invitation's
        // telephone, a guest pass. (Guests without a pass are different people each time.)
        let mut seats = HashSet::new();
        for p in &members {
            let standing = self.m.standing(*p).expect("a member's standing");
            let seat = match (standing.ban_subject, &standing.pass) {
                (Some(s), _) => Some(format!("{s:?}/{}", standing.phone.is_some())),
                (None, Some(pass)) => Some(format!("pass {}", pass.id)),
                (None, None) => None,
            };
            if let Some(seat) = seat {
                assert!(seats.insert(seat.clone()), "{seat} in the meeting twice");
            }
            // Removed (and not let back in by a moderator): not in the meeting, as long as the
            // store keeps what it is told.
            if let (Some(s), false) = (standing.ban_subject, self.store_failed) {
                assert!(
                    !self.removed_seats.contains(&(s, standing.phone.is_some())),
                    "removed {s:?} is in the meeting again as p{p}"
                );
            }
        }
        for (p, conn) in &self.conns {
            if members.contains(p) {
                assert_eq!(
                    conn.roster.as_ref(),
                    Some(&members),
                    "p{p}'s list is not the meeting"
                );
            }
        }
        if self.m.poll_timeout().is_none() {
            for p in members.iter().filter(|p| self.m.is_moderator(**p)) {
                let conn = &self.conns[p];
                assert_eq!(
                    conn.lobby.as_ref(),
                    Some(&lobby),
                    "moderator p{p}'s lobby list is not the lobby"
                );
            }
        }
    }

    /// Picks an open connection (`Some(None)` when there is none; `None` at the input's end).
    fn conn(&self, r: &mut Reader<'_>) -> Option<Option<PeerId>> {
        let b = usize::from(r.u8()?);
        let n = self.conns.len();
        Some((n > 0).then(|| *self.conns.keys().nth(b % n).expect("in range")))
    }

    /// A participant id: someone's, one no longer anyone's, or not an id.
    fn target(&self, r: &mut Reader<'_>) -> Option<String> {
        Some(match r.u8()? % 8 {
            7 => r.string(12)?,
            6 => participant_id(PeerId::from(r.u8()? % 32)),
            _ => participant_id(self.conn(r)?.unwrap_or(1)),
        })
    }

    /// A payload: the device's own message (as is or changed), or arbitrary.
    fn payload(r: &mut Reader<'_>, real: Option<Vec<u8>>) -> Option<String> {
        Some(match (r.u8()? % 8, real) {
            (0..=4, Some(real)) => b64(&real),
            (5, Some(mut real)) => {
                let len = real.len().max(1);
                if let Some(b) = real.get_mut(usize::from(r.u16()?) % len) {
                    *b ^= r.u8()?.max(1);
                }
                b64(&real)
            }
            (6, _) => r.string(256)?,
            _ => b64(r.bytes(1024)?),
        })
    }

    /// One operation from the input; `None` at its end.
    fn op(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let op = r.u8()?;
        let mut sender = None;
        let mut moderation_by_participant = false;
        let before = self.snapshot();
        match op % 16 {
            // Someone joins.
            0 | 1 => {
                if self.conns.len() >= MAX_CONNS {
                    return Some(());
                }
                let person = Person::of(r.u8()?);
                let standing = self.standing(person, r)?;
                let dev = self.device(person);
                let peer = self.m.allocate_peer();
                self.conns.insert(
                    peer,
                    Conn {
                        person,
                        dev,
                        next: None,
                        roster: None,
                        lobby: None,
                        asked: None,
                        pending: Vec::new(),
                        ended: false,
                    },
                );
                trace!("join p{peer} {person:?}");
                self.input(Input::Join {
                    peer,
                    standing,
                    token: format!("seat{peer}"),
                });
            }
            // A connection breaks.
            2 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                trace!("p{p} disconnected");
                self.input(Input::Disconnected { peer: p });
                self.conns.remove(&p);
            }
            // A moderation command or another message without MLS.
            3..=6 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let msg = match r.u8()? % 16 {
                    0 => ClientMsg::Lock { locked: r.bool()? },
                    1 => ClientMsg::Remove {
                        participant_id: self.target(r)?,
                    },
                    2 => ClientMsg::Admit {
                        participant_id: self.target(r)?,
                    },
                    3 => ClientMsg::Deny {
                        participant_id: self.target(r)?,
                    },
                    4 => ClientMsg::Mute {
                        participant_id: self.target(r)?,
                        muted: r.bool()?,
                    },
                    5 => ClientMsg::SetModerator {
                        participant_id: self.target(r)?,
                        moderator: r.bool()?,
                    },
                    6 => ClientMsg::LowerHand {
                        participant_id: self.target(r)?,
                    },
                    7 => ClientMsg::EndMeeting,
                    8 => ClientMsg::RaiseHand { raised: r.bool()? },
                    9 => ClientMsg::MediaState {
                        audio_muted: r.bool()?,
                        video_muted: r.bool()?,
                        screen_sharing: r.bool()?,
                    },
                    10 => ClientMsg::Leave,
                    11 => ClientMsg::Ping,
                    12 => ClientMsg::Offer {
                        sdp: r.string(64)?,
                        sources: Vec::new(),
                    },
                    13 => ClientMsg::VideoTiles {
                        tiles: (0..r.u8()? % 4)
                            .map(|_| {
                                Some(VideoTile {
                                    participant_id: self.target(r)?,
                                    source: [Source::Camera, Source::Screen, Source::Microphone]
                                        [usize::from(r.u8()? % 3)],
                                    width: r.u32()?,
                                    height: r.u32()?,
                                })
                            })
                            .collect::<Option<Vec<_>>>()?,
                    },
                    14 => ClientMsg::Spotlight {
                        participant_id: if r.bool()? {
                            Some(self.target(r)?)
                        } else {
                            None
                        },
                    },
                    _ => ClientMsg::MlsCommitRejected {
                        epoch: r.u64()? % 8,
                    },
                };
                let moderation = matches!(
                    msg,
                    ClientMsg::Lock { .. }
                        | ClientMsg::Remove { .. }
                        | ClientMsg::Admit { .. }
                        | ClientMsg::Deny { .. }
                        | ClientMsg::Mute { .. }
                        | ClientMsg::SetModerator { .. }
                        | ClientMsg::LowerHand { .. }
                        | ClientMsg::Spotlight { .. }
                        | ClientMsg::EndMeeting
                );
                moderation_by_participant = moderation && !self.m.is_moderator(p);
                let leave = matches!(msg, ClientMsg::Leave);
                sender = Some(p);
                trace!("p{p}: {msg:?}");
                self.input(Input::Msg { peer: p, msg });
                if leave {
                    self.deliver(sender);
                    self.conns.remove(&p);
                    self.step.clear();
                    self.close_ended();
                    self.check();
                    return Some(());
                }
            }
            // A key package (the device's own, changed, or arbitrary).
            7 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let real = self
                    .conns
                    .get_mut(&p)?
                    .dev
                    .as_mut()
                    .and_then(|d| d.key_package().ok());
                let key_package = Self::payload(r, real)?;
                sender = Some(p);
                self.input(Input::Msg {
                    peer: p,
                    msg: ClientMsg::MlsKeyPackage {
                        key_package,
                        continuity: None,
                    },
                });
            }
            // The device creates the group it was asked to, and claims its leaf.
            8 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let t = Duration::from_secs(self.now.wall.timestamp() as u64);
                let conn = self.conns.get_mut(&p)?;
                let (Some(dev), Some(g)) = (conn.dev.as_mut(), conn.asked.clone()) else {
                    return Some(());
                };
                if !dev.in_group() {
                    let _ = dev.create_group(g.as_bytes(), t);
                }
                if let Some(msg) = leaf_claim(dev, p, true) {
                    sender = Some(p);
                    self.input(Input::Msg { peer: p, msg });
                }
            }
            // The device claims its leaf after a Welcome.
            9 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let conn = self.conns.get_mut(&p)?;
                let Some(dev) = conn.dev.as_mut() else {
                    return Some(());
                };
                if let Some(msg) = leaf_claim(dev, p, false) {
                    sender = Some(p);
                    self.input(Input::Msg { peer: p, msg });
                }
            }
            // The device adds those waiting (its last pending list), or updates its leaf.
            10 | 11 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let t = Duration::from_secs(self.now.wall.timestamp() as u64);
                let conn = self.conns.get_mut(&p)?;
                let kps: Vec<Vec<u8>> = conn.pending.iter().filter_map(|(_, k)| unb64(k)).collect();
                let pending_ids: Vec<String> = conn
                    .pending
                    .iter()
                    .filter(|(_, k)| unb64(k).is_some())
                    .map(|(id, _)| id.clone())
                    .collect();
                let Some(dev) = conn.dev.as_mut() else {
                    return Some(());
                };
                let made = if op % 16 == 10 {
                    dev.add(&kps, t).ok()
                } else {
                    dev.update_own_leaf().ok()
                };
                let Some(made) = made else { return Some(()) };
                let epoch = dev.epoch().unwrap_or(0);
                let welcome_for = if made.welcome.is_some() {
                    pending_ids
                } else {
                    Vec::new()
                };
                let commit = Self::payload(r, Some(made.commit.clone()))?;
                let msg = ClientMsg::MlsCommit {
                    epoch,
                    commit,
                    welcome: made.welcome.as_ref().map(|w| b64(w)),
                    welcome_for,
                };
                sender = Some(p);
                self.input(Input::Msg { peer: p, msg });
                let accepted = self.step.iter().any(|o| {
                    matches!(o, Output::Send(q, ServerMsg::MlsCommitResult { accepted: true, .. }) if *q == p)
                });
                let t = Duration::from_secs(self.now.wall.timestamp() as u64);
                if let Some(dev) = self.conns.get_mut(&p).and_then(|c| c.dev.as_mut()) {
                    let _ = if accepted {
                        dev.merge_pending_commit(t).map(|_| ())
                    } else {
                        dev.discard_pending_commit()
                    };
                }
            }
            // A commit or chat of arbitrary bytes.
            12 => {
                let Some(p) = self.conn(r)? else {
                    return Some(());
                };
                let msg = if r.bool()? {
                    ClientMsg::MlsCommit {
                        epoch: r.u64()? % 8,
                        commit: Self::payload(r, None)?,
                        welcome: None,
                        welcome_for: Vec::new(),
                    }
                } else {
                    ClientMsg::MlsChat {
                        id: r.u32()?,
                        epoch: r.u64()? % 8,
                        message: Self::payload(r, None)?,
                    }
                };
                sender = Some(p);
                self.input(Input::Msg { peer: p, msg });
            }
            // The media room reports.
            13 => {
                let p = PeerId::from(r.u8()? % 12);
                let ev = match r.u8()? % 4 {
                    0 => RoomEvent::Connected(p),
                    1 => RoomEvent::Disconnected(p),
                    2 => RoomEvent::ActiveSpeaker(r.bool()?.then_some(p)),
                    _ => RoomEvent::Renegotiate {
                        peer: p,
                        audio: 1,
                        video: 1,
                    },
                };
                self.input(Input::Room(ev));
            }
            // Time passes; a timer fires if due.
            14 => {
                let d = Duration::from_millis(u64::from(r.u16()?));
                self.now.mono += d;
                self.now.wall += chrono::Duration::from_std(d).expect("a duration");
                if self
                    .m
                    .poll_timeout()
                    .is_some_and(|due| due <= self.now.mono)
                {
                    self.m.handle_timeout(self.now);
                    self.drain();
                }
            }
            // The media worker or the store starts or stops failing; or the server is being
            // taken out of service (it stops at the latest in up to a minute); or it shuts down.
            _ => match r.u8()? % 9 {
                0..=2 => self.media_fails = !self.media_fails,
                3..=6 => {
                    self.store_fails = !self.store_fails;
                    self.store_failed = true;
                }
                7 => {
                    let at = self.now.mono + Duration::from_millis(u64::from(r.u16()?));
                    self.input(Input::Maintenance { at });
                }
                _ => self.input(Input::Shutdown),
            },
        }
        self.deliver(sender);
        if moderation_by_participant {
            let p = sender.expect("a sender");
            assert_eq!(
                self.snapshot(),
                before,
                "p{p}, not a moderator, changed the meeting"
            );
            for o in &self.step {
                match o {
                    Output::Send(q, ServerMsg::Error { .. }) => assert_eq!(*q, p),
                    Output::Audit(e) => assert!(
                        !MODERATION.contains(&e.record().kind.as_str()),
                        "p{p}'s refused command was recorded"
                    ),
                    other => panic!("p{p}'s refused command had an effect: {other:?}"),
                }
            }
        }
        self.step.clear();
        self.close_ended();
        self.check();
        Some(())
    }

    /// What moderation changes: the lock, who is where, roles, mutes, hands, who is shown large.
    fn snapshot(&self) -> String {
        let mut s = format!(
            "locked={} life={:?} spotlight={:?}",
            self.m.locked(),
            self.m.life(),
            self.m.spotlight()
        );
        for (p, info) in self.m.participants() {
            s += &format!(
                " p{p}:{:?}:{}:{:?}",
                info.role, info.muted_by_moderator, info.hand_raised_at
            );
        }
        for p in self.m.waiting() {
            s += &format!(" lobby:p{p}");
        }
        s
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let Some(first) = r.u8() else { return };
    let mut sim = Sim::new(first & 1 == 1);
    for _ in 0..MAX_OPS {
        if sim.op(&mut r).is_none() {
            break;
        }
        if sim.m.life() == Life::Over {
            break;
        }
    }
});
