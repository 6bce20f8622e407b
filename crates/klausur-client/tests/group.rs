//! `GroupClient`s driven through a scripted delivery service that orders commits like
//! klausur-server's `delivery.rs` (the first commit per epoch wins, Welcomes only to pending
//! joiners, a commit most members reject is voided), with the real MLS core and credentials
//! from an in-test identity CA. Time is simulated: the harness advances it to the earliest
//! `poll_timeout` of any client, so a timer the client forgets to report is a failing test, and
//! a timeout that is not in the future is caught as a busy loop.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use klausur_client::group::{
    GroupClient, GroupEvent, GroupOutput, Phase, RefusalReason, Verification, VerificationFlag,
    WarningCode, UNCLAIMED_GRACE,
};
use klausur_e2ee::{
    CaVerifier, IdentityCa, Member, MemberConfig, ParticipantKind as CredKind, SignedCredential,
    SigningKey, StreamId,
};
use klausur_proto::{
    ClientMsg, JoinMethod, LeaveReason, MeetingInfo, MlsJoiner, MlsPolicy, Participant,
    ParticipantKind, Role, SecurityProfile, ServerMsg,
};

/// Simulated server time at the start, milliseconds since the Unix epoch.
const T0_MS: u64 = 1_700_000_000_000;
const MINUTE: u64 = 60_000;

// --- the delivery service (a port of crates/klausur-server/src/delivery.rs) ----------------------

enum Out {
    To(String, ServerMsg),
    Members(ServerMsg, Option<String>),
    PendingChanged,
    Leaf(String, Option<u32>),
}

struct PendingJoiner {
    key_package: String,
    admitted_by: Option<String>,
}

struct LastCommit {
    epoch: u64,
    committer: String,
    voters: BTreeSet<String>,
    welcomed: Vec<String>,
    rejected_by: BTreeSet<String>,
}

#[derive(Default)]
struct Delivery {
    generation: u32,
    epoch: Option<u64>,
    members: BTreeSet<String>,
    last: Option<LastCommit>,
    creator: Option<String>,
    pending: BTreeMap<String, PendingJoiner>,
}

impl Delivery {
    fn ask_to_create(&mut self, peer: &str) -> Out {
        self.generation += 1;
        self.creator = Some(peer.to_string());
        Out::To(
            peer.to_string(),
            ServerMsg::MlsCreateGroup {
                group_id: format!("m1/{}", self.generation),
            },
        )
    }

    fn key_package(&mut self, peer: &str, kp: String, admitted_by: Option<String>) -> Vec<Out> {
        if self.members.contains(peer) || self.creator.as_deref() == Some(peer) {
            return Vec::new();
        }
        if self.epoch.is_none() && self.creator.is_none() {
            return vec![self.ask_to_create(peer)];
        }
        self.pending.insert(
            peer.to_string(),
            PendingJoiner {
                key_package: kp,
                admitted_by,
            },
        );
        if self.epoch.is_some() {
            vec![Out::PendingChanged]
        } else {
            Vec::new()
        }
    }

    fn member(&mut self, peer: &str, leaf: u32, epoch: u64) -> Vec<Out> {
        let mut out = Vec::new();
        if self.creator.as_deref() == Some(peer) && self.epoch.is_none() {
            assert_eq!(
                (leaf, epoch),
                (0, 0),
                "a new group starts at leaf 0, epoch 0"
            );
            self.creator = None;
            self.epoch = Some(0);
            self.members = BTreeSet::from([peer.to_string()]);
            if !self.pending.is_empty() {
                out.push(Out::PendingChanged);
            }
        } else if !self.members.contains(peer) {
            panic!("{peer} claims a leaf without being a member");
        }
        out.push(Out::Leaf(peer.to_string(), Some(leaf)));
        out
    }

    fn commit(
        &mut self,
        peer: &str,
        epoch: u64,
        commit: String,
        welcome: Option<String>,
        welcome_for: Vec<String>,
    ) -> Vec<Out> {
        assert!(
            self.members.contains(peer),
            "{peer} commits without being a member"
        );
        let Some(current) = self.epoch else {
            return Vec::new();
        };
        if epoch != current {
            return vec![Out::To(
                peer.to_string(),
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: false,
                },
            )];
        }
        let mut last = LastCommit {
            epoch,
            committer: peer.to_string(),
            voters: self
                .members
                .iter()
                .filter(|m| *m != peer)
                .cloned()
                .collect(),
            welcomed: Vec::new(),
            rejected_by: BTreeSet::new(),
        };
        self.epoch = Some(current + 1);
        let mut out = vec![
            Out::To(
                peer.to_string(),
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: true,
                },
            ),
            Out::Members(
                ServerMsg::MlsCommit {
                    epoch,
                    commit,
                    from_id: peer.to_string(),
                },
                Some(peer.to_string()),
            ),
        ];
        let mut welcomed = false;
        if let Some(welcome) = welcome {
            for j in welcome_for {
                if self.pending.remove(&j).is_some() {
                    self.members.insert(j.clone());
                    last.welcomed.push(j.clone());
                    welcomed = true;
                    out.push(Out::To(
                        j,
                        ServerMsg::MlsWelcome {
                            welcome: welcome.clone(),
                            epoch: current + 1,
                        },
                    ));
                }
            }
        }
        self.last = Some(last);
        if welcomed {
            out.push(Out::PendingChanged);
        }
        out
    }

    fn rejected(&mut self, peer: &str, epoch: u64) -> Vec<Out> {
        let Some(last) = self.last.as_mut() else {
            return Vec::new();
        };
        if !self.members.contains(peer) || last.epoch != epoch || !last.voters.contains(peer) {
            return Vec::new();
        }
        last.rejected_by.insert(peer.to_string());
        if last.rejected_by.len() * 2 <= last.voters.len() {
            return Vec::new();
        }
        let Some(last) = self.last.take() else {
            return Vec::new();
        };
        self.epoch = Some(last.epoch);
        let mut out = Vec::new();
        for p in std::iter::once(last.committer).chain(last.welcomed) {
            if self.members.remove(&p) {
                out.push(Out::To(
                    p.clone(),
                    ServerMsg::MlsReset { epoch: last.epoch },
                ));
                out.push(Out::Leaf(p, None));
            }
        }
        out
    }

    fn left(&mut self, peer: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let was_pending = self.pending.remove(peer).is_some();
        let mut released = false;
        for p in self.pending.values_mut() {
            if p.admitted_by.as_deref() == Some(peer) {
                p.admitted_by = None;
                released = true;
            }
        }
        if let Some(last) = self.last.as_mut() {
            last.voters.remove(peer);
            last.rejected_by.remove(peer);
            last.welcomed.retain(|p| p != peer);
        }
        if self.epoch.is_some() {
            self.members.remove(peer);
            if self.members.is_empty() {
                self.epoch = None;
            } else if was_pending || released {
                out.push(Out::PendingChanged);
            }
        }
        if self.creator.as_deref() == Some(peer) {
            self.creator = None;
        }
        if self.epoch.is_none() && self.creator.is_none() {
            if let Some(next) = self.pending.keys().next().cloned() {
                self.pending.remove(&next);
                out.push(self.ask_to_create(&next));
            }
        }
        out
    }
}

// --- clients and the server glue -------------------------------------------------------------

// A test's in-memory queue of a few messages: their size does not matter, matching on them
// unboxed does.
#[allow(clippy::large_enum_variant)]
enum Inbox {
    Msg(ServerMsg),
    List(Vec<Participant>),
    Renew,
}

struct Client {
    id: String,
    name: String,
    kind: CredKind,
    user_id: String,
    device: SigningKey,
    g: GroupClient,
    inbox: VecDeque<Inbox>,
    events: Vec<GroupEvent>,
    sent: Vec<ClientMsg>,
    /// How far this client's clock is off (ms; negative: behind).
    skew_ms: i64,
    /// Whether this client fetches a renewed credential when asked.
    renews: bool,
    /// Server times at which the client asked for a renewed credential.
    renew_asked: Vec<u64>,
    /// This client learns the participant list through `set_participants` instead of the
    /// `joined` / `participant_*` messages.
    list_mode: bool,
}

impl Client {
    fn local(&self, server_ms: u64) -> Duration {
        Duration::from_millis(server_ms.saturating_add_signed(self.skew_ms))
    }

    fn warnings(&self, code: WarningCode) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, GroupEvent::Warning(w) if w.code == code))
            .count()
    }

    fn refusals(&self, participant_id: &str) -> Vec<(RefusalReason, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                GroupEvent::Refused {
                    participant_id: p,
                    reason,
                    detail,
                    ..
                } if p == participant_id => Some((*reason, detail.clone())),
                _ => None,
            })
            .collect()
    }

    fn code(&self) -> String {
        self.g
            .security_code()
            .expect("a member has a security code")
    }

    fn key_packages_sent(&self) -> usize {
        self.sent
            .iter()
            .filter(|m| matches!(m, ClientMsg::MlsKeyPackage { .. }))
            .count()
    }
}

/// Who joins, and how.
struct Who {
    id: &'static str,
    name: &'static str,
    kind: CredKind,
    user_id: &'static str,
    foreign_ca: bool,
    admitted_by: Option<&'static str>,
    skew_ms: i64,
    list_mode: bool,
}

fn who(id: &'static str, name: &'static str, kind: CredKind, user_id: &'static str) -> Who {
    Who {
        id,
        name,
        kind,
        user_id,
        foreign_ca: false,
        admitted_by: None,
        skew_ms: 0,
        list_mode: false,
    }
}

fn server_kind(kind: CredKind) -> ParticipantKind {
    match kind {
        CredKind::Staff => ParticipantKind::Staff,
        CredKind::InvitedGuest => ParticipantKind::InvitedGuest,
        CredKind::Guest => ParticipantKind::Guest,
        CredKind::PhoneGateway => ParticipantKind::PhoneGateway,
    }
}

fn participant(id: &str, name: &str, kind: ParticipantKind) -> Participant {
    Participant {
        id: id.to_string(),
        display_name: name.to_string(),
        kind,
        role: Role::Participant,
        organiser: false,
        join_method: JoinMethod::StaffLogin,
        audio_muted: false,
        muted_by_moderator: false,
        video_muted: true,
        screen_sharing: false,
        hand_raised_at: None,
        leaf: None,
        credential_user_id: None,
        phone: None,
    }
}

fn policy(staff_direct: bool, ids: &[&str]) -> MlsPolicy {
    MlsPolicy {
        staff_direct,
        direct_user_ids: ids.iter().map(|s| s.to_string()).collect(),
    }
}

struct Server {
    now: u64,
    ca: IdentityCa,
    foreign: IdentityCa,
    delivery: Delivery,
    policy: MlsPolicy,
    clients: Vec<Client>,
    /// The server's participant list, each with the moderator who admitted them (if any).
    participants: Vec<(Participant, Option<String>)>,
    /// `mls_member` of these participants is lost.
    drop_member: HashSet<String>,
    /// Who reported a commit it could not process.
    rejections: Vec<String>,
    /// Every commit as it reached the server: committer, epoch, welcome_for.
    commits: Vec<(String, u64, Vec<String>)>,
    /// The last `mls_commit` relayed to members.
    last_commit: Option<ServerMsg>,
    next_seed: u8,
}

impl Server {
    fn new(policy: MlsPolicy) -> Self {
        Self {
            now: T0_MS,
            ca: IdentityCa::new(SigningKey::from_bytes(&[1; 32])),
            foreign: IdentityCa::new(SigningKey::from_bytes(&[2; 32])),
            delivery: Delivery::default(),
            policy,
            clients: Vec::new(),
            participants: Vec::new(),
            drop_member: HashSet::new(),
            rejections: Vec::new(),
            commits: Vec::new(),
            last_commit: None,
            next_seed: 10,
        }
    }

    fn idx(&self, id: &str) -> usize {
        self.clients
            .iter()
            .position(|c| c.id == id)
            .unwrap_or_else(|| panic!("no client {id}"))
    }

    fn c(&self, id: &str) -> &Client {
        &self.clients[self.idx(id)]
    }

    fn c_mut(&mut self, id: &str) -> &mut Client {
        let i = self.idx(id);
        &mut self.clients[i]
    }

    /// A credential from the identity CA, issued now (the server's clock) for an hour, dated
    /// back a minute as the real CA does.
    fn credential(
        &self,
        user_id: &str,
        name: &str,
        kind: CredKind,
        device: &SigningKey,
        foreign: bool,
    ) -> SignedCredential {
        let t = self.now / 1000;
        let ca = if foreign { &self.foreign } else { &self.ca };
        ca.issue(
            user_id,
            name,
            kind,
            &device.verifying_key(),
            t - 60,
            t + 3600,
        )
        .expect("issue")
    }

    /// A fresh credential for client `c`'s identity and device (as for a renewal).
    fn fresh_credential(&self, c: &Client) -> SignedCredential {
        self.credential(&c.user_id, &c.name, c.kind, &c.device, false)
    }

    /// An MLS member with `cred` and `device` that trusts the meeting's identity CA.
    fn member(&self, cred: SignedCredential, device: &SigningKey) -> Member {
        Member::new(
            cred,
            device.clone(),
            CaVerifier {
                ca_public_key: self.ca.public_key(),
            },
            MemberConfig::default(),
        )
        .expect("member")
    }

    /// A participant enters the meeting room: the others learn of it, it gets `joined`. Its
    /// group client is made but not started.
    fn enter(&mut self, w: Who) {
        let seed = self.next_seed;
        self.next_seed += 1;
        let device = SigningKey::from_bytes(&[seed; 32]);
        let cred = self.credential(w.user_id, w.name, w.kind, &device, w.foreign_ca);
        let member = self.member(cred, &device);
        let p = participant(w.id, w.name, server_kind(w.kind));
        self.participants
            .push((p.clone(), w.admitted_by.map(str::to_string)));
        self.tell_all(ServerMsg::ParticipantJoined { participant: p });
        let list = self.list();
        let first = if w.list_mode {
            Inbox::List(list.clone())
        } else {
            Inbox::Msg(ServerMsg::Joined {
                protocol_version: 1,
                self_id: w.id.to_string(),
                meeting: MeetingInfo {
                    id: "m1".into(),
                    title: "Bauausschuss".into(),
                    organiser: "Ana".into(),
                    profile: SecurityProfile::Internal,
                    locked: false,
                    dial_in: true,
                    spotlight: None,
                },
                participants: list,
                lobby: Vec::new(),
                rejoin_token: None,
                ice_servers: Vec::new(),
            })
        };
        self.clients.push(Client {
            id: w.id.to_string(),
            name: w.name.to_string(),
            kind: w.kind,
            user_id: w.user_id.to_string(),
            device,
            g: GroupClient::new(member),
            inbox: VecDeque::from([first]),
            events: Vec::new(),
            sent: Vec::new(),
            skew_ms: w.skew_ms,
            renews: true,
            renew_asked: Vec::new(),
            list_mode: w.list_mode,
        });
    }

    /// Starts a client's group client (it sends its key package); nothing is pumped.
    fn start(&mut self, id: &str) {
        let i = self.idx(id);
        let local = self.clients[i].local(self.now);
        // The credential was asked for (and issued) just now.
        self.clients[i].g.start(local, local);
        self.drain(i);
    }

    fn join(&mut self, w: Who) {
        let id = w.id;
        self.enter(w);
        self.pump();
        self.start(id);
        self.pump();
    }

    /// The participant leaves the meeting; its client is handed back (it keeps running for
    /// the tests' negative controls, but gets nothing more).
    fn leave(&mut self, id: &str) -> Client {
        let i = self.idx(id);
        let c = self.clients.remove(i);
        self.participants.retain(|(p, _)| p.id != id);
        let outs = self.delivery.left(id);
        self.apply(outs);
        self.tell_all(ServerMsg::ParticipantLeft {
            participant_id: id.to_string(),
            reason: LeaveReason::Left,
        });
        self.pump();
        c
    }

    fn list(&self) -> Vec<Participant> {
        self.participants.iter().map(|(p, _)| p.clone()).collect()
    }

    /// A change of the participant list reaches every client: `msg`, or the new list to a
    /// client in list mode.
    fn tell_all(&mut self, msg: ServerMsg) {
        let list = self.list();
        for c in &mut self.clients {
            c.inbox.push_back(if c.list_mode {
                Inbox::List(list.clone())
            } else {
                Inbox::Msg(msg.clone())
            });
        }
    }

    fn set_policy(&mut self, policy: MlsPolicy) {
        self.policy = policy;
        self.apply(vec![Out::PendingChanged]);
        self.pump();
    }

    /// What a client sent reaches the server.
    fn receive(&mut self, from: &str, msg: ClientMsg) {
        match msg {
            ClientMsg::MlsKeyPackage { key_package, .. } => {
                let admitted_by = self
                    .participants
                    .iter()
                    .find(|(p, _)| p.id == from)
                    .and_then(|(_, a)| a.clone());
                let outs = self.delivery.key_package(from, key_package, admitted_by);
                self.apply(outs);
            }
            ClientMsg::MlsMember {
                leaf,
                epoch,
                signature,
                group_info,
            } => {
                if self.drop_member.contains(from) {
                    return;
                }
                // The claim is signed, and the creator's carries the GroupInfo (the real server
                // checks both against the group's public tree; crates/klausur-server's tests).
                assert_eq!(BASE64.decode(&signature).expect("b64").len(), 64);
                assert_eq!(
                    group_info.is_some(),
                    self.delivery.creator.as_deref() == Some(from),
                    "{from}: group_info with the creator's claim only"
                );
                let outs = self.delivery.member(from, leaf, epoch);
                self.apply(outs);
            }
            ClientMsg::MlsCommit {
                epoch,
                commit,
                welcome,
                welcome_for,
            } => {
                self.commits
                    .push((from.to_string(), epoch, welcome_for.clone()));
                let outs = self
                    .delivery
                    .commit(from, epoch, commit, welcome, welcome_for);
                self.apply(outs);
            }
            ClientMsg::MlsCommitRejected { epoch } => {
                self.rejections.push(from.to_string());
                let outs = self.delivery.rejected(from, epoch);
                self.apply(outs);
            }
            other => panic!("a group client sent {other:?}"),
        }
    }

    fn pending_msg(&self) -> ServerMsg {
        ServerMsg::MlsPending {
            joiners: self
                .delivery
                .pending
                .iter()
                .map(|(id, j)| MlsJoiner {
                    participant_id: id.clone(),
                    key_package: j.key_package.clone(),
                    admitted_by: j.admitted_by.clone(),
                    continuity: None,
                })
                .collect(),
            policy: self.policy.clone(),
        }
    }

    fn apply(&mut self, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::To(p, msg) => self.deliver(&p, msg),
                Out::Members(msg, except) => {
                    let members: Vec<String> = self.delivery.members.iter().cloned().collect();
                    for m in members {
                        if Some(&m) != except.as_ref() {
                            self.deliver(&m, msg.clone());
                        }
                    }
                }
                Out::PendingChanged => {
                    let msg = self.pending_msg();
                    let members: Vec<String> = self.delivery.members.iter().cloned().collect();
                    for m in members {
                        self.deliver(&m, msg.clone());
                    }
                }
                Out::Leaf(p, leaf) => {
                    // The server names the credential user id of who the participant is.
                    let user_id = self
                        .clients
                        .iter()
                        .find(|c| c.id == p)
                        .map(|c| c.user_id.clone());
                    let Some(entry) = self.participants.iter_mut().find(|(q, _)| q.id == p) else {
                        continue;
                    };
                    entry.0.leaf = leaf;
                    entry.0.credential_user_id = leaf.and(user_id);
                    let participant = entry.0.clone();
                    self.tell_all(ServerMsg::ParticipantUpdated { participant });
                }
            }
        }
    }

    fn deliver(&mut self, to: &str, msg: ServerMsg) {
        if matches!(msg, ServerMsg::MlsCommit { .. }) {
            self.last_commit = Some(msg.clone());
        }
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == to) {
            c.inbox.push_back(Inbox::Msg(msg));
        }
    }

    /// Takes everything client `i` wants done: events are recorded, messages reach the server.
    fn drain(&mut self, i: usize) {
        let mut sends = Vec::new();
        let now = self.now;
        let c = &mut self.clients[i];
        while let Some(o) = c.g.poll_output() {
            match o {
                GroupOutput::Send(m) => {
                    c.sent.push(m.clone());
                    sends.push(m);
                }
                GroupOutput::Event(e) => {
                    if let GroupEvent::RenewCredential { device_key } = &e {
                        assert_eq!(*device_key, c.device.verifying_key().to_bytes());
                        c.renew_asked.push(now);
                        if c.renews {
                            c.inbox.push_back(Inbox::Renew);
                        }
                    }
                    c.events.push(e);
                }
            }
        }
        let id = c.id.clone();
        for m in sends {
            self.receive(&id, m);
        }
    }

    /// Hands client `i` one inbox item.
    fn step(&mut self, i: usize) -> bool {
        let Some(item) = self.clients[i].inbox.pop_front() else {
            return false;
        };
        let local = self.clients[i].local(self.now);
        match item {
            Inbox::Msg(m) => {
                self.clients[i].g.handle_server(&m, local);
            }
            Inbox::List(list) => {
                let c = &mut self.clients[i];
                c.g.set_participants(&c.id, &list, local);
            }
            Inbox::Renew => {
                let cred = self.fresh_credential(&self.clients[i]);
                self.clients[i].g.set_renewed_credential(cred, local);
            }
        }
        let c = &self.clients[i];
        assert!(
            c.g.poll_timeout().is_none_or(|d| d > local),
            "{}: poll_timeout not after the last input",
            c.id
        );
        self.drain(i);
        true
    }

    /// A renewed credential reaches the client at once (ahead of whatever waits in its inbox).
    fn give_renewal(&mut self, id: &str) {
        let i = self.idx(id);
        let cred = self.fresh_credential(&self.clients[i]);
        let local = self.clients[i].local(self.now);
        self.clients[i].g.set_renewed_credential(cred, local);
        self.drain(i);
    }

    /// The server relays a leaf claim it should have refused: participant `id` says it holds
    /// `leaf` (its participant entry names its own credential user id, as the server knows it).
    fn relay_forged_claim(&mut self, id: &str, leaf: u32) {
        let Some(entry) = self.participants.iter_mut().find(|(q, _)| q.id == id) else {
            panic!("no participant {id}");
        };
        entry.0.leaf = Some(leaf);
        let participant = entry.0.clone();
        self.tell_all(ServerMsg::ParticipantUpdated { participant });
        self.pump();
    }

    /// Delivers queued messages, one per client in turn, until every inbox is empty.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            let mut any = false;
            for i in 0..self.clients.len() {
                any |= self.step(i);
            }
            if !any {
                return;
            }
        }
        panic!("message loop");
    }

    /// The earliest timeout of any client, in server time.
    fn next_timeout(&self) -> Option<u64> {
        self.clients
            .iter()
            .filter_map(|c| {
                let t = c.g.poll_timeout()?.as_millis() as u64;
                Some(t.saturating_add_signed(-c.skew_ms))
            })
            .min()
    }

    /// Lets `ms` pass, calling each client back exactly when its `poll_timeout` says.
    fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        let mut same_time = 0;
        while let Some(t) = self.next_timeout().filter(|t| *t <= end) {
            // Overdue only after a test moved the clock by hand.
            if t <= self.now {
                same_time += 1;
                assert!(same_time < 100, "timeouts do not move on at {}", self.now);
            } else {
                same_time = 0;
            }
            self.now = t.max(self.now);
            for i in 0..self.clients.len() {
                let c = &self.clients[i];
                let due = c.g.poll_timeout().is_some_and(|d| d <= c.local(self.now));
                if due {
                    let local = c.local(self.now);
                    self.clients[i].g.handle_timeout(local);
                    self.drain(i);
                    let c = &self.clients[i];
                    assert!(
                        c.g.poll_timeout().is_none_or(|d| d > local),
                        "{}: poll_timeout not after handle_timeout",
                        c.id
                    );
                }
            }
            self.pump();
        }
        self.now = end;
    }

    /// Like [`Self::advance`], and every client is also called back every `step` ms (as a
    /// driver with its own periodic wake-ups would): extra calls must be harmless.
    fn advance_ticking(&mut self, ms: u64, step: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.advance(step.min(end - self.now));
            for i in 0..self.clients.len() {
                let local = self.clients[i].local(self.now);
                self.clients[i].g.handle_timeout(local);
                self.drain(i);
            }
            self.pump();
        }
    }

    /// Every listed client is an active member in the same epoch with the same security code,
    /// and the roster holds exactly their credentials, with nothing flagged.
    fn expect_agree(&self, ids: &[&str]) -> String {
        let first = self.c(ids[0]);
        let code = first.code();
        assert_eq!(code.len(), 29, "five groups of five digits: {code}");
        let mut names: Vec<String> = ids.iter().map(|id| self.c(id).name.clone()).collect();
        names.sort();
        for id in ids {
            let c = self.c(id);
            assert_eq!(c.g.phase(), Phase::Active, "{id}");
            assert_eq!(c.code(), code, "{id}");
            assert_eq!(c.g.epoch(), first.g.epoch(), "{id}");
            let mut roster: Vec<String> =
                c.g.roster()
                    .iter()
                    .map(|e| e.credential.display_name.clone())
                    .collect();
            roster.sort();
            assert_eq!(roster, names, "{id}");
            let v = self.verification(id);
            assert!(v.roster.iter().all(|r| r.flags.is_empty()), "{id}: {v:?}");
        }
        code
    }

    /// What client `id` shows for verification now.
    fn verification(&self, id: &str) -> Verification {
        let c = self.c(id);
        c.g.verification(c.local(self.now))
    }

    /// Client `from` encrypts `payload` on stream 0: the frame.
    fn encrypt(&mut self, from: &str, payload: &[u8]) -> Vec<u8> {
        self.c_mut(from)
            .g
            .encrypt_frame(StreamId(0), &[], payload)
            .expect("encrypt")
    }

    /// Client `to` decrypts `frame` now (on its own clock): the payload.
    fn decrypt(&mut self, to: &str, frame: &[u8]) -> Vec<u8> {
        let now = self.now;
        let c = self.c_mut(to);
        let local = c.local(now);
        c.g.decrypt_frame(frame, local).expect("decrypt").payload
    }

    /// Who committed (and for which epoch) since the first `n` commits.
    fn commits_since(&self, n: usize) -> Vec<(String, u64)> {
        self.commits[n..]
            .iter()
            .map(|(who, epoch, _)| (who.clone(), *epoch))
            .collect()
    }

    /// Who made the commits after the first `n`, in order.
    fn committers_since(&self, n: usize) -> Vec<&str> {
        self.commits[n..]
            .iter()
            .map(|(who, _, _)| who.as_str())
            .collect()
    }
}

fn staff(id: &'static str, name: &'static str, user: &'static str) -> Who {
    who(id, name, CredKind::Staff, user)
}

/// A meeting whose profile admits every staff credential, with Ana, Ben and Cem (p1-p3) in
/// its group.
fn three_staff(skews: [i64; 3]) -> Server {
    let mut s = Server::new(policy(true, &[]));
    for (i, (name, user)) in [("Ana", "user:1"), ("Ben", "user:2"), ("Cem", "user:3")]
        .into_iter()
        .enumerate()
    {
        let id = ["p1", "p2", "p3"][i];
        let mut w = staff(id, name, user);
        w.skew_ms = skews[i];
        s.join(w);
    }
    s.advance(4_000);
    s.expect_agree(&["p1", "p2", "p3"]);
    s
}

/// The dial-in gateway's member for a caller with invitation 7, learning the participant list
/// through `set_participants`.
fn gateway(id: &'static str) -> Who {
    let mut w = who(
        id,
        "Erika Musterfrau",
        CredKind::PhoneGateway,
        "invitation:7",
    );
    w.list_mode = true;
    w
}

/// The names each epoch change added (`removed` false) or removed, for each change that did.
fn epoch_names(events: &[GroupEvent], removed: bool) -> Vec<Vec<String>> {
    events
        .iter()
        .filter_map(|e| match e {
            GroupEvent::EpochChanged {
                added,
                removed: gone,
                ..
            } => {
                let entries = if removed { gone } else { added };
                (!entries.is_empty()).then(|| {
                    entries
                        .iter()
                        .map(|r| r.credential.display_name.clone())
                        .collect()
                })
            }
            _ => None,
        })
        .collect()
}

fn added_names(events: &[GroupEvent]) -> Vec<Vec<String>> {
    epoch_names(events, false)
}

fn removed_names(events: &[GroupEvent]) -> Vec<Vec<String>> {
    epoch_names(events, true)
}

// --- scenarios -------------------------------------------------------------------------------

#[test]
fn the_group_is_created_and_the_policy_admits_joiners_several_in_one_commit() {
    let mut s = Server::new(policy(
        false,
        &["user:1", "user:2", "user:3", "invitation:7"],
    ));
    // Ana, Ben and Cem come in at the same moment: Ana's key package is first, so she is asked
    // to create the group; Ben's and Cem's wait, and go into one commit.
    s.enter(staff("p1", "Ana", "user:1"));
    s.enter(staff("p2", "Ben", "user:2"));
    s.enter(staff("p3", "Cem", "user:3"));
    s.pump();
    for id in ["p1", "p2", "p3"] {
        s.start(id);
    }
    s.pump();
    let ana = s.c("p1");
    assert!(matches!(
        ana.sent.first(),
        Some(ClientMsg::MlsKeyPackage {
            continuity: None,
            ..
        })
    ));
    assert!(ana.sent.iter().any(|m| matches!(
        m,
        ClientMsg::MlsMember {
            leaf: 0,
            epoch: 0,
            group_info: Some(_),
            ..
        }
    )));
    assert!(matches!(
        ana.events.first(),
        Some(GroupEvent::Joined {
            epoch: 0,
            created: true,
            ..
        })
    ));
    assert_eq!(
        s.commits,
        vec![(
            "p1".to_string(),
            0,
            vec!["p2".to_string(), "p3".to_string()]
        )],
        "one commit adds both"
    );
    let code3 = s.expect_agree(&["p1", "p2", "p3"]);
    assert_eq!(added_names(&s.c("p1").events), vec![vec!["Ben", "Cem"]]);
    assert!(matches!(
        s.c("p2")
            .events
            .iter()
            .find(|e| matches!(e, GroupEvent::Joined { .. })),
        Some(GroupEvent::Joined {
            epoch: 1,
            created: false,
            ..
        })
    ));
    assert!(s.c("p2").events.contains(&GroupEvent::RosterChanged));
    // The server's leaf claims match the roster.
    let v = s.verification("p2");
    let claims: Vec<(u32, Option<String>, bool)> = v
        .roster
        .iter()
        .map(|r| (r.entry.leaf_index, r.participant_id.clone(), r.own))
        .collect();
    assert_eq!(
        claims,
        vec![
            (0, Some("p1".into()), false),
            (1, Some("p2".into()), true),
            (2, Some("p3".into()), false)
        ]
    );

    // The dial-in gateway's member for a caller with invitation 7 (learning the participant
    // list through set_participants) is added by the policy, like a browser.
    s.join(gateway("p4"));
    s.advance(3_000);
    let code4 = s.expect_agree(&["p1", "p2", "p3", "p4"]);
    assert_ne!(code4, code3);
    let entry = s
        .c("p3")
        .g
        .roster()
        .iter()
        .find(|e| e.credential.user_id == "invitation:7")
        .cloned()
        .expect("in the roster");
    assert_eq!(entry.credential.kind, CredKind::PhoneGateway);
    assert!(s.c("p3").events.iter().any(|e| matches!(e,
        GroupEvent::EpochChanged { added, security_code, .. }
            if added.len() == 1 && added[0] == entry && *security_code == code4)));
    // Only the first-ranked member committed the add.
    assert_eq!(s.commits.last().map(|c| c.0.as_str()), Some("p1"));
    assert_eq!(s.commits.len(), 2);

    // Frames: the gateway's encrypted audio decrypts at every member.
    let frame = s.encrypt("p4", b"opus frame");
    for id in ["p1", "p2", "p3"] {
        assert_eq!(s.decrypt(id, &frame), b"opus frame", "{id}");
    }

    // Messages the client does not act on change nothing: a second mls_create_group, chat
    // (it has no chat), and non-MLS messages, which it reports as unused.
    let before = s.c("p1").g.epoch();
    let t = s.c("p1").local(s.now);
    let ana = s.c_mut("p1");
    assert!(ana.g.handle_server(
        &ServerMsg::MlsCreateGroup {
            group_id: "m1/9".into()
        },
        t
    ));
    assert!(ana.g.handle_server(
        &ServerMsg::MlsChat {
            epoch: 3,
            message: "AAEC".into(),
            from_id: "p2".into(),
            sent_at_ms: 0
        },
        t
    ));
    assert!(!ana.g.handle_server(&ServerMsg::Pong, t));
    assert!(ana.g.poll_output().is_none());
    assert_eq!(ana.g.epoch(), before);
}

#[test]
fn joiners_the_policy_does_not_admit_or_with_a_foreign_credential_are_refused() {
    let mut s = Server::new(policy(true, &["invitation:7", "user:66"]));
    s.join(staff("p1", "Ana", "user:1"));
    s.join(gateway("p2"));
    s.advance(2_000);
    let code = s.expect_agree(&["p1", "p2"]);
    let epoch = s.c("p1").g.epoch();

    // Negative controls: a lobby guest nobody admitted; an invited guest whose invitation is not
    // on the list (staff_direct covers staff only); a staff credential from another CA whose
    // user id is on the list; a guest the server says the gateway admitted; a guest the server
    // says Ana admitted (her client admits nobody either); a guest another moderator admitted.
    s.join(who("p3", "Eve", CredKind::Guest, "guest:e"));
    s.join(who("p4", "Ivy", CredKind::InvitedGuest, "invitation:8"));
    let mut mallory = staff("p5", "Mallory", "user:66");
    mallory.foreign_ca = true;
    s.join(mallory);
    let mut gus = who("p6", "Gus", CredKind::Guest, "guest:g");
    gus.admitted_by = Some("p2");
    s.join(gus);
    let mut joe = who("p7", "Joe", CredKind::Guest, "guest:j");
    joe.admitted_by = Some("p1");
    s.join(joe);
    let mut kim = who("p8", "Kim", CredKind::Guest, "guest:k");
    kim.admitted_by = Some("p99");
    s.join(kim);
    s.advance(5_000);
    // Another round of the same list: refusals are reported once.
    s.set_policy(s.policy.clone());
    s.advance(5_000);

    for id in ["p3", "p4", "p5", "p6", "p7", "p8"] {
        assert_eq!(s.c(id).g.phase(), Phase::Waiting, "{id}");
        assert!(!s.c(id).g.in_group());
        assert!(s.c_mut(id).g.encrypt_frame(StreamId(0), &[], b"x").is_err());
    }
    assert_eq!(s.c("p1").code(), code);
    assert_eq!(s.c("p1").g.epoch(), epoch);
    for id in ["p1", "p2"] {
        let c = s.c(id);
        assert_eq!(
            c.refusals("p3"),
            vec![(
                RefusalReason::Policy,
                "user guest:e (guest) is not admitted directly by the meeting's policy".into()
            )],
            "{id}"
        );
        assert_eq!(c.refusals("p4").len(), 1, "{id}");
        assert_eq!(c.refusals("p4")[0].0, RefusalReason::Policy);
        let mallory = c.refusals("p5");
        assert_eq!(mallory.len(), 1, "{id}");
        assert_eq!(mallory[0].0, RefusalReason::Credential);
        assert!(
            mallory[0]
                .1
                .contains("not signed by the trusted identity CA"),
            "{}",
            mallory[0].1
        );
        // Nobody refuses Kim: her moderator's client is the one to add her.
        assert!(c.refusals("p8").is_empty(), "{id}");
    }
    // Gus: the gateway cannot have admitted anyone; Ana leaves him to the gateway.
    assert_eq!(
        s.c("p2").refusals("p6")[0].0,
        RefusalReason::NotAdmittedByYou
    );
    assert!(s.c("p1").refusals("p6").is_empty());
    assert_eq!(
        s.c("p1").refusals("p7")[0].0,
        RefusalReason::NotAdmittedByYou
    );
    assert!(s.c("p2").refusals("p7").is_empty());
    assert_eq!(
        s.commits.len(),
        1,
        "nobody committed after the gateway's add"
    );
    // The refused refusal carries the credential's name where it verified, else the server's.
    assert!(s.c("p1").events.iter().any(|e| matches!(e,
        GroupEvent::Refused { participant_id, display_name: Some(n), .. }
            if participant_id == "p5" && n == "Mallory")));

    // After the grace, the waiting participants are flagged as not in the group.
    s.advance(1_000);
    let v = s.verification("p1");
    let flagged: Vec<&str> = v
        .outsiders
        .iter()
        .filter(|o| o.flags == vec![VerificationFlag::NotInGroup])
        .map(|o| o.participant_id.as_str())
        .collect();
    assert_eq!(flagged, vec!["p3", "p4", "p5", "p6", "p7", "p8"]);

    // Positive control: once the policy lists Eve's and Ivy's ids, they are added, both in one
    // commit; Mallory's credential still does not verify.
    s.set_policy(policy(
        true,
        &["invitation:7", "user:66", "guest:e", "invitation:8"],
    ));
    s.advance(3_000);
    s.expect_agree(&["p1", "p2", "p3", "p4"]);
    let (_, _, welcome_for) = s.commits.last().cloned().expect("a commit");
    assert_eq!(welcome_for, vec!["p3".to_string(), "p4".to_string()]);
    assert_eq!(s.commits.len(), 2);
    assert_eq!(s.c("p5").g.phase(), Phase::Waiting);
}

#[test]
fn two_members_race_one_wins_the_other_discards_and_follows() {
    let mut s = three_staff([0, 0, 0]);
    let epoch = s.c("p1").g.epoch().expect("epoch");
    let commits_before = s.commits.len();

    // Ana and Ben get renewed credentials at the same moment and both commit them for the
    // same epoch: Ana's reaches the server first and wins; Ben's loses.
    s.now += 1_000;
    s.give_renewal("p1");
    s.give_renewal("p2");
    assert_eq!(
        s.commits_since(commits_before),
        vec![("p1".to_string(), epoch), ("p2".to_string(), epoch)],
        "a real collision"
    );
    s.pump();
    // Ben processed Ana's commit, then committed his renewal again in the next epoch.
    let after = s.commits_since(commits_before);
    assert_eq!(after.get(2), Some(&("p2".to_string(), epoch + 1)));
    s.expect_agree(&["p1", "p2", "p3"]);
    assert_eq!(s.c("p2").g.epoch(), Some(epoch + 2));
    let renewed_until = (s.now / 1000) + 3600;
    for id in ["p1", "p2"] {
        let own = &s.c(id).g.member().credential().credential;
        assert_eq!(own.not_after, renewed_until, "{id} renewed");
    }
    let ben_epochs: Vec<(u64, u32)> = s
        .c("p2")
        .events
        .iter()
        .filter_map(|e| match e {
            GroupEvent::EpochChanged {
                epoch, committer, ..
            } => Some((*epoch, *committer)),
            _ => None,
        })
        .collect();
    assert!(
        ben_epochs.ends_with(&[(epoch + 1, 0), (epoch + 2, 1)]),
        "{ben_epochs:?}"
    );

    // The other order: the loser hears of its loss before the winning commit arrives. It
    // discards, holds, then processes the winner and commits again at once.
    let epoch = epoch + 2;
    let commits_before = s.commits.len();
    s.now += 1_000;
    s.give_renewal("p3");
    s.give_renewal("p1");
    let ana = s.c_mut("p1");
    assert_eq!(ana.inbox.len(), 2, "Cem's commit and Ana's result");
    ana.inbox.swap(0, 1);
    assert!(matches!(
        ana.inbox.front(),
        Some(Inbox::Msg(ServerMsg::MlsCommitResult {
            accepted: false,
            ..
        }))
    ));
    s.pump();
    assert_eq!(
        s.commits_since(commits_before),
        vec![
            ("p3".to_string(), epoch),
            ("p1".to_string(), epoch),
            ("p1".to_string(), epoch + 1)
        ]
    );
    s.expect_agree(&["p1", "p2", "p3"]);
    assert_eq!(s.c("p1").g.epoch(), Some(epoch + 2));
    for c in &s.clients {
        assert_eq!(c.warnings(WarningCode::CommitRejected), 0, "{}", c.id);
        assert_eq!(c.warnings(WarningCode::CommitFailed), 0, "{}", c.id);
    }
}

#[test]
fn the_leaf_of_a_participant_who_left_is_removed() {
    let mut s = three_staff([0, 0, 0]);
    let before = s.c("p1").code();
    let commits_before = s.commits.len();
    let mut cem = s.leave("p3");
    s.advance(3_000);
    let after = s.expect_agree(&["p1", "p2"]);
    assert_ne!(after, before);
    for id in ["p1", "p2"] {
        assert_eq!(removed_names(&s.c(id).events), vec![vec!["Cem"]], "{id}");
    }
    // Ana (leaf 0, rank 0) removed Cem; Ben waited his turn and had nothing left to do.
    assert_eq!(s.committers_since(commits_before), vec!["p1"]);

    // Forward secrecy: Cem cannot decrypt what Ana sends from now on; Ben can.
    let frame = s.encrypt("p1", b"after Cem left");
    assert_eq!(s.decrypt("p2", &frame), b"after Cem left");
    let now = Duration::from_millis(s.now);
    assert!(cem.g.decrypt_frame(&frame, now).is_err());

    // Had the server kept relaying to him, Cem's client would have processed its removal.
    let removal = s.last_commit.clone().expect("the removal commit");
    assert!(cem.g.handle_server(&removal, now));
    assert_eq!(cem.g.phase(), Phase::Removed);
    assert!(!cem.g.in_group());
    assert!(cem.g.roster().is_empty());
    let mut removed_by = None;
    while let Some(o) = cem.g.poll_output() {
        if let GroupOutput::Event(GroupEvent::Removed { by }) = o {
            removed_by = by;
        }
    }
    assert_eq!(
        removed_by.map(|r| r.credential.display_name),
        Some("Ana".to_string())
    );
    assert!(cem.g.encrypt_frame(StreamId(0), &[], b"x").is_err());
    assert_eq!(cem.g.poll_timeout(), None);
}

/// Issue 19: an invited guest announced the organiser's leaf as its own, the server relayed it,
/// and when the guest left the others removed the organiser. A client removes a leaf for a
/// departed participant only if the leaf's credential is that participant's.
#[test]
fn a_participant_claiming_someone_elses_leaf_cannot_get_it_removed_by_leaving() {
    let mut s = three_staff([0, 0, 0]);
    s.join(who(
        "p4",
        "Gina Gast",
        CredKind::InvitedGuest,
        "invitation:7",
    ));
    s.set_policy(policy(true, &["invitation:7"]));
    s.advance(4_000);
    s.expect_agree(&["p1", "p2", "p3", "p4"]);
    let gina_leaf = s.c("p4").g.own_leaf().expect("leaf");
    let ana_leaf = s.c("p1").g.own_leaf().expect("leaf");
    let commits_before = s.commits.len();

    // The server relays Gina's claim of Ana's leaf: flagged, Ana's leaf stays claimed by Ana.
    s.relay_forged_claim("p4", ana_leaf);
    let v = s.verification("p2");
    let ana = v
        .roster
        .iter()
        .find(|r| r.entry.leaf_index == ana_leaf)
        .expect("Ana");
    assert_eq!(ana.participant_id.as_deref(), Some("p1"), "{v:?}");
    assert!(
        v.outsiders
            .iter()
            .any(|o| o.participant_id == "p4" && o.flags == [VerificationFlag::Mismatch]),
        "{v:?}"
    );

    // Gina leaves. Nobody removes Ana; Gina's own leaf, which no one validly claims any more,
    // goes after the grace period.
    s.leave("p4");
    s.advance(3_000);
    for id in ["p1", "p2", "p3"] {
        assert!(
            s.c(id).g.roster().iter().any(|e| e.leaf_index == ana_leaf),
            "{id} removed Ana"
        );
        assert_eq!(s.c(id).g.phase(), Phase::Active);
    }
    s.advance(UNCLAIMED_GRACE.as_millis() as u64 + 4_000);
    s.expect_agree(&["p1", "p2", "p3"]);
    for id in ["p1", "p2", "p3"] {
        assert_eq!(
            removed_names(&s.c(id).events),
            vec![vec!["Gina Gast"]],
            "{id}"
        );
        assert!(!s.c(id).g.roster().iter().any(|e| e.leaf_index == gina_leaf));
    }
    assert!(!s.commits_since(commits_before).is_empty());

    // Negative control: a genuine leave removes the leaf at once, without waiting for grace.
    let commits_before = s.commits.len();
    s.leave("p3");
    s.advance(3_000);
    s.expect_agree(&["p1", "p2"]);
    assert_eq!(s.committers_since(commits_before), vec!["p1"]);
    assert_eq!(
        removed_names(&s.c("p1").events),
        vec![vec!["Gina Gast"], vec!["Cem"]]
    );
}

#[test]
fn a_leaf_nobody_claims_is_removed_after_the_grace_period() {
    let mut s = three_staff([0, 0, 0]);
    // Kurt's client joins the group, but his mls_member is lost and he leaves: no participant
    // ever claims his leaf.
    s.drop_member.insert("p4".into());
    s.join(staff("p4", "Kurt", "user:4"));
    s.advance(1_000);
    assert_eq!(s.c("p4").g.phase(), Phase::Active);
    let kurt_leaf = s.c("p4").g.own_leaf().expect("leaf");
    s.leave("p4");
    let in_roster = |s: &Server| {
        s.c("p1")
            .g
            .roster()
            .iter()
            .any(|e| e.leaf_index == kurt_leaf)
    };
    s.advance(UNCLAIMED_GRACE.as_millis() as u64 / 2);
    assert!(in_roster(&s), "still within the grace period");
    let v = s.verification("p1");
    assert!(v.roster.iter().all(|r| r.flags.is_empty()), "{v:?}");
    s.advance(UNCLAIMED_GRACE.as_millis() as u64);
    assert!(!in_roster(&s), "removed after the grace period");
    s.expect_agree(&["p1", "p2", "p3"]);
    for id in ["p1", "p2", "p3"] {
        assert_eq!(removed_names(&s.c(id).events), vec![vec!["Kurt"]], "{id}");
    }
}

#[test]
fn the_own_leaf_is_updated_every_15_minutes() {
    let mut s = Server::new(policy(true, &[]));
    s.join(staff("p1", "Ana", "user:1"));
    s.join(staff("p2", "Ben", "user:2"));
    s.advance(2_000);
    let code = s.expect_agree(&["p1", "p2"]);
    let epoch = s.c("p1").g.epoch().expect("epoch");
    let commits = s.commits.len();
    // Nothing before the interval (negative control).
    s.advance(14 * MINUTE);
    assert_eq!(s.c("p1").g.epoch(), Some(epoch));
    assert_eq!(s.commits.len(), commits);
    s.advance(MINUTE);
    assert!(s.c("p1").g.epoch().expect("epoch") > epoch);
    assert_ne!(s.expect_agree(&["p1", "p2"]), code);
    // Both members refreshed their own leaf.
    let updaters: BTreeSet<&str> = s.committers_since(commits).into_iter().collect();
    assert_eq!(updaters, BTreeSet::from(["p1", "p2"]));
    for c in &s.clients {
        assert_eq!(c.warnings(WarningCode::CommitRejected), 0);
    }
}

#[test]
fn credentials_are_renewed_before_they_expire_so_meetings_outlast_them() {
    let mut s = Server::new(policy(true, &[]));
    let t0 = s.now;
    s.join(staff("p1", "Ana", "user:1"));
    s.join(staff("p2", "Ben", "user:2"));
    s.advance(2_000);
    // The credentials are valid for 60 minutes from t0 (not_after = t0 + 3600 s): the renewal
    // is asked for 10 minutes before.
    s.advance(47 * MINUTE);
    assert!(s.c("p1").renew_asked.is_empty());
    s.advance(3 * MINUTE);
    for id in ["p1", "p2"] {
        let c = s.c(id);
        assert_eq!(c.renew_asked.len(), 1, "{id}");
        assert!(
            c.renew_asked[0] >= t0 + 50 * MINUTE && c.renew_asked[0] <= t0 + 50 * MINUTE + 1_000
        );
        assert!(c.g.member().credential().credential.not_after > t0 / 1000 + 3600);
    }
    // A driver that also wakes the clients every 5 s changes nothing.
    s.advance_ticking(30 * MINUTE, 5_000);
    let c3 = staff("p3", "Cem", "user:3");
    s.join(c3);
    s.advance(3_000);
    s.expect_agree(&["p1", "p2", "p3"]);
    for c in &s.clients {
        assert_eq!(
            c.warnings(WarningCode::CommitRejected) + c.warnings(WarningCode::WelcomeRejected),
            0,
            "{}",
            c.id
        );
    }

    // Negative control: without renewal, the client asks again every minute, and after expiry
    // the others refuse its next commit.
    let mut s = Server::new(policy(true, &[]));
    let t0 = s.now;
    s.join(staff("p1", "Dora", "user:1"));
    s.join(staff("p2", "Emil", "user:2"));
    for c in &mut s.clients {
        c.renews = false;
    }
    s.advance(80 * MINUTE);
    let asked = &s.c("p1").renew_asked;
    assert!(asked.len() >= 10, "{asked:?}");
    assert!(asked[0] >= t0 + 50 * MINUTE);
    assert!(asked.windows(2).all(|w| w[1] - w[0] >= 60_000), "{asked:?}");
    let rejected: usize = s
        .clients
        .iter()
        .map(|c| c.warnings(WarningCode::CommitRejected))
        .sum();
    assert!(rejected > 0);
}

#[test]
fn a_commit_the_others_cannot_process_is_reported_and_its_maker_rejoins() {
    let mut s = three_staff([0, 0, 0]);
    let before = s.c("p1").code();
    let epoch = s.c("p1").g.epoch().expect("epoch");

    // Negative control first: garbage the server never accepted (a forgery slipped to Ana
    // alone) is reported, but voids nothing: the group stays where it is.
    s.deliver(
        "p1",
        ServerMsg::MlsCommit {
            epoch,
            commit: "AAECAwQ=".into(),
            from_id: "p2".into(),
        },
    );
    s.pump();
    assert_eq!(s.c("p1").warnings(WarningCode::CommitRejected), 1);
    assert_eq!(s.rejections, vec!["p1".to_string()]);
    assert_eq!(s.delivery.epoch, Some(epoch));
    assert_eq!(s.expect_agree(&["p1", "p2", "p3"]), before);
    s.rejections.clear();

    // Ben's client sends garbage for the current epoch (a commit of another group, made with
    // his device key); the server cannot tell and accepts it.
    let ben = s.c("p2");
    let mut other = s.member(s.fresh_credential(ben), &ben.device);
    other
        .create_group(b"elsewhere", Duration::from_millis(s.now))
        .expect("group");
    let garbage = other.update_own_leaf().expect("commit").commit;
    s.receive(
        "p2",
        ClientMsg::MlsCommit {
            epoch,
            commit: BASE64.encode(garbage),
            welcome: None,
            welcome_for: Vec::new(),
        },
    );
    assert_eq!(s.delivery.epoch, Some(epoch + 1));
    s.pump();
    // Ana and Cem cannot process it and say so; the server voids it and Ben starts over.
    let mut rejections = s.rejections.clone();
    rejections.sort();
    assert_eq!(rejections, vec!["p1".to_string(), "p3".to_string()]);
    assert_eq!(s.delivery.epoch, Some(epoch));
    let ben = s.c("p2");
    assert_eq!(ben.warnings(WarningCode::GroupReset), 1);
    assert_eq!(ben.g.phase(), Phase::Waiting);
    assert!(ben.g.roster().is_empty());
    assert_eq!(
        ben.key_packages_sent(),
        2,
        "a new key package after the reset"
    );
    // The others remove Ben's old leaf (no longer claimed) and add him again.
    s.advance(UNCLAIMED_GRACE.as_millis() as u64 + 5_000);
    let after = s.expect_agree(&["p1", "p2", "p3"]);
    assert_ne!(after, before);
    assert!(s.c("p1").g.epoch().expect("epoch") > epoch);
    assert_eq!(
        s.c("p2")
            .events
            .iter()
            .filter(|e| matches!(e, GroupEvent::Joined { .. }))
            .count(),
        2
    );
}

#[test]
fn clocks_that_are_off_follow_the_group_on_the_identity_cas_time() {
    // Ben five minutes behind (others' fresh credentials look not yet valid), Cem two hours
    // ahead (others' credentials look expired); three_staff checks that all three agree.
    let mut s = three_staff([0, -5 * MINUTE as i64, 120 * MINUTE as i64]);
    assert_eq!(s.c("p1").warnings(WarningCode::ClockSkew), 0);
    assert_eq!(s.c("p1").g.clock_offset_ms(), 0);
    for (id, offset) in [("p2", 5 * MINUTE as i64), ("p3", -120 * MINUTE as i64)] {
        let c = s.c(id);
        assert_eq!(c.warnings(WarningCode::ClockSkew), 1, "{id}");
        assert_eq!(c.g.clock_offset_ms(), offset, "{id}");
        assert_eq!(c.warnings(WarningCode::WelcomeRejected), 0, "{id}");
    }
    // Frames across them.
    let frame = s.encrypt("p3", b"from the future");
    assert_eq!(s.decrypt("p2", &frame), b"from the future");
    // They renew on time, too (in the CA's time, not their own).
    s.advance(55 * MINUTE);
    s.join(staff("p4", "Dan", "user:4"));
    s.advance(3_000);
    s.expect_agree(&["p1", "p2", "p3", "p4"]);
    for c in &s.clients {
        assert_eq!(c.renew_asked.len(), usize::from(c.id != "p4"), "{}", c.id);
    }

    // A clock within the tolerance is used as it is.
    let mut s = Server::new(policy(true, &[]));
    let mut w = staff("p1", "Eva", "user:1");
    w.skew_ms = 20_000;
    s.join(w);
    assert_eq!(s.c("p1").g.clock_offset_ms(), 0);
    assert_eq!(s.c("p1").warnings(WarningCode::ClockSkew), 0);
}

#[test]
fn a_welcome_that_does_not_verify_changes_nothing_and_a_reset_asks_again() {
    let mut s = Server::new(policy(true, &[]));
    s.join(staff("p1", "Ana", "user:1"));
    s.join(who("p2", "Hugo", CredKind::Guest, "guest:h"));
    assert_eq!(s.c("p2").g.phase(), Phase::Waiting);
    // Ben is added; Hugo is not. The server passes Hugo garbage as a Welcome: he stays
    // waiting and says why.
    s.join(staff("p3", "Ben", "user:2"));
    s.advance(2_000);
    s.deliver(
        "p2",
        ServerMsg::MlsWelcome {
            welcome: "AAEC".into(),
            epoch: 1,
        },
    );
    s.pump();
    let hugo = s.c("p2");
    assert_eq!(hugo.warnings(WarningCode::WelcomeRejected), 1);
    assert_eq!(hugo.g.phase(), Phase::Waiting);
    assert_eq!(hugo.g.poll_timeout(), None);
    // A reset while waiting (the server had counted the Welcome as delivered): a new key
    // package goes out, so the joiner is not stranded.
    assert_eq!(hugo.key_packages_sent(), 1);
    s.deliver("p2", ServerMsg::MlsReset { epoch: 0 });
    s.pump();
    let hugo = s.c("p2");
    assert_eq!(hugo.warnings(WarningCode::GroupReset), 1);
    assert_eq!(hugo.key_packages_sent(), 2);
    assert_eq!(hugo.g.phase(), Phase::Waiting);
    s.expect_agree(&["p1", "p3"]);
}
