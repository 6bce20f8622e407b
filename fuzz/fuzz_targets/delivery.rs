//! The server's MLS delivery service (`klausur_server::meeting::delivery::Delivery`) driven by
//! arbitrary sequences of what a meeting's participants send it: key packages, leaf claims,
//! commits, rejection reports, chat, re-admissions and departures, from up to five
//! participants. Each participant has a real MLS device (klausur-e2ee, credentials of a test
//! CA; a staff member, a lobby guest, an invitee, or one whose credential is someone else's),
//! so payloads are the devices' own messages, the same with a byte changed or cut short, or
//! arbitrary bytes and text. The devices act on what the service sends them (create the group,
//! process commits, join from Welcomes, start over after a reset), so groups form, grow,
//! change and void commits under the fuzzer's hand.
//!
//! Invariants, checked after every input:
//! - nothing panics;
//! - a refused input (`Err`) changes nothing anyone can see (group, epoch, members, leaf
//!   claims, pending list), and errors and results (`error`, `mls_commit_result`,
//!   `mls_chat_result`) go to the sender only;
//! - every message goes to a participant who is present; only present participants are group
//!   members, hold leaf claims or wait in the pending list, and nobody waits who is a member;
//! - a leaf is claimed by one participant at most, and only by a member;
//! - every member receives every commit in order: the commit relayed is the current epoch's,
//!   the epoch then moves on by one; within a group the epoch goes back only when a commit is
//!   voided (after a rejection report or a departure), and then by one; `mls_reset` comes
//!   only with a voided commit (or a forgotten group); a Welcome names the new epoch;
//! - chat is relayed only in the current epoch.
//!
//! Input format: a sequence of operations, each an operation byte and its arguments (see
//! `Sim::op`); the sequence ends with the input.
#![no_main]

#[path = "common/mod.rs"]
#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Reader;
use klausur_e2ee::{
    CaVerifier, IdentityCa, Member, MemberConfig, ParticipantKind as CredentialKind, SigningKey,
};
use klausur_proto::{MlsContinuity, MlsPolicy, ServerMsg};
use klausur_room::PeerId;
use klausur_server::meeting::delivery::{Delivery, Identity, MemberClaim, Out};
use klausur_server::meeting::signaling_error::Refusal;
use klausur_server::meeting::{parse_participant_id, participant_id};
use libfuzzer_sys::fuzz_target;

/// Participant ids 1 to this.
const MAX_PEERS: u8 = 5;
/// Operations per input.
const MAX_OPS: usize = 48;
/// The simulated wall clock at the start (seconds since the Unix epoch, in 2027).
const T0: u64 = 1_800_000_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn policy() -> MlsPolicy {
    MlsPolicy {
        staff_direct: true,
        direct_user_ids: Vec::new(),
    }
}

struct Peer {
    dev: Option<Member>,
    identity: Identity,
    /// The epoch of the next commit this member must receive (`None`: not a member).
    next: Option<u64>,
}

/// What anyone can see of the service.
#[derive(Debug, PartialEq)]
struct Seen {
    group: Option<(String, u64)>,
    members: Vec<PeerId>,
    claims: Vec<(PeerId, Option<u32>)>,
    pending: ServerMsg,
}

struct Sim {
    d: Delivery,
    ca: IdentityCa,
    now: Instant,
    unix: Duration,
    present: BTreeMap<PeerId, Peer>,
    /// The group id each participant was asked to create.
    asked: BTreeMap<PeerId, String>,
    devices_made: u8,
    /// The input being answered may void the latest commit (`rejected`, `left`).
    may_void: bool,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            d: Delivery::new("m1"),
            ca: IdentityCa::new(SigningKey::from_bytes(&[1; 32])),
            now: Instant::now(),
            unix: Duration::from_secs(T0),
            present: BTreeMap::new(),
            asked: BTreeMap::new(),
            devices_made: 0,
            may_void: false,
        }
    }

    fn seen(&self) -> Seen {
        Seen {
            group: self.d.group(),
            members: (1..=u64::from(MAX_PEERS))
                .filter(|p| self.d.is_member(*p))
                .collect(),
            claims: (1..=u64::from(MAX_PEERS))
                .map(|p| (p, self.d.claimed_leaf(p)))
                .collect(),
            pending: self.d.pending(policy()),
        }
    }

    /// A device with a credential for `user_id` of `kind` (a fresh device key each time).
    fn device(&mut self, user_id: &str, kind: CredentialKind) -> Option<Member> {
        self.devices_made = self.devices_made.wrapping_add(1);
        let key = SigningKey::from_bytes(&[self.devices_made.wrapping_add(10); 32]);
        let cred = self
            .ca
            .issue(
                user_id,
                "Name",
                kind,
                &key.verifying_key(),
                T0 - 60,
                T0 + 3600,
            )
            .ok()?;
        let verifier = CaVerifier {
            ca_public_key: self.ca.public_key(),
        };
        Member::new(cred, key, verifier, MemberConfig::default()).ok()
    }

    fn dev(&mut self, p: PeerId) -> Option<&mut Member> {
        self.present.get_mut(&p)?.dev.as_mut()
    }

    /// Checks the answer to `sender`'s input against what was seen before, and delivers it.
    fn answer(&mut self, sender: Option<PeerId>, before: Seen, result: Result<Vec<Out>, Refusal>) {
        trace!("  {sender:?}: {result:?}");
        let out = match result {
            Err(Refusal(code, message)) => {
                assert!(!message.is_empty(), "{code:?} without a message");
                assert_eq!(self.seen(), before, "a refused input changed the service");
                self.check_state();
                return;
            }
            Ok(out) => out,
        };
        let after = self.seen();
        let reset = out
            .iter()
            .any(|o| matches!(o, Out::To(_, ServerMsg::MlsReset { .. })));
        for o in &out {
            match o {
                Out::To(q, msg) => {
                    assert!(
                        self.present.contains_key(q),
                        "{o:?} to an absent participant"
                    );
                    if matches!(
                        msg,
                        ServerMsg::Error { .. }
                            | ServerMsg::MlsCommitResult { .. }
                            | ServerMsg::MlsChatResult { .. }
                    ) {
                        assert_eq!(Some(*q), sender, "{o:?} not to the sender");
                    }
                    if let ServerMsg::MlsWelcome { epoch, .. } = msg {
                        assert_eq!(Some(*epoch), self.d.epoch(), "Welcome for another epoch");
                    }
                }
                Out::Leaf(q, _) => {
                    assert!(
                        self.present.contains_key(q),
                        "{o:?} of an absent participant"
                    );
                }
                Out::Members { msg, except } => {
                    if let Some(e) = except {
                        assert_eq!(Some(*e), sender);
                    }
                    match msg {
                        ServerMsg::MlsCommit { epoch, .. } => {
                            assert_eq!(before.group.as_ref().map(|g| g.1), Some(*epoch));
                            assert_eq!(self.d.epoch(), Some(epoch + 1), "epoch after a commit");
                        }
                        ServerMsg::MlsChat { epoch, .. } => {
                            assert_eq!(self.d.epoch(), Some(*epoch), "chat of another epoch");
                        }
                        other => panic!("{other:?} to all members"),
                    }
                }
                Out::PendingChanged => {}
            }
        }
        // Within one group the epoch moves on by one at most, and back by one only when a
        // commit is voided: after a report that a member could not process it, or a departure
        // that makes the reports a majority. (Its maker and the joiners it welcomed get
        // `mls_reset`; if they all left already, nobody is told: the members who reported are
        // in that epoch anyway.)
        let mut voided = false;
        if let (Some((g0, e0)), Some((g1, e1))) = (&before.group, &after.group) {
            if g0 == g1 {
                voided = e1 + 1 == *e0;
                assert!(
                    *e1 == *e0 || *e1 == e0 + 1 || (voided && self.may_void),
                    "epoch {e0} -> {e1}"
                );
            }
        }
        if reset {
            assert!(
                voided || after.group.is_none(),
                "mls_reset without a voided commit"
            );
        }
        self.deliver(sender, out);
        if voided {
            // The group is back in the voided commit's epoch: its next commit is that one's.
            let epoch = self.d.epoch();
            for p in self.present.values_mut() {
                if p.next.is_some() {
                    p.next = epoch;
                }
            }
        }
        self.check_state();
    }

    /// What the meeting actor and the devices do with the service's messages.
    fn deliver(&mut self, sender: Option<PeerId>, out: Vec<Out>) {
        let unix = self.unix;
        for o in out {
            match o {
                Out::To(q, ServerMsg::MlsCreateGroup { group_id }) => {
                    self.asked.insert(q, group_id);
                }
                Out::To(q, ServerMsg::MlsWelcome { welcome, epoch }) => {
                    if let Some(p) = self.present.get_mut(&q) {
                        p.next = Some(epoch);
                        if let (Some(dev), Some(w)) = (p.dev.as_mut(), unb64(&welcome)) {
                            let _ = dev.join_from_welcome(&w, unix);
                        }
                    }
                }
                Out::To(q, ServerMsg::MlsReset { .. }) => {
                    if let Some(p) = self.present.get_mut(&q) {
                        p.next = None;
                        if let Some(dev) = p.dev.as_mut() {
                            let _ = dev.reset();
                        }
                    }
                }
                Out::To(q, ServerMsg::MlsCommitResult { epoch, accepted }) => {
                    if let Some(p) = self.present.get_mut(&q) {
                        if accepted {
                            if let Some(next) = p.next {
                                assert_eq!(epoch, next, "p{q}'s own commit out of order");
                            }
                            p.next = Some(epoch + 1);
                        }
                    }
                }
                Out::Members {
                    msg: ServerMsg::MlsCommit { epoch, commit, .. },
                    except,
                } => {
                    let bytes = unb64(&commit);
                    let ids: Vec<PeerId> = self.present.keys().copied().collect();
                    for q in ids {
                        if Some(q) == except || !self.d.is_member(q) {
                            continue;
                        }
                        let Some(p) = self.present.get_mut(&q) else {
                            continue;
                        };
                        // A joiner this very commit welcomed gets it too (before its Welcome);
                        // the order holds for everyone who was a member before.
                        if let Some(next) = p.next {
                            assert_eq!(epoch, next, "p{q} got commit {epoch}, expected {next}");
                            p.next = Some(epoch + 1);
                        }
                        if let (Some(dev), Some(b)) = (p.dev.as_mut(), bytes.as_ref()) {
                            if dev.in_group() && dev.epoch().ok() == Some(epoch) {
                                let _ = dev.process_message(b, unix);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        // The creator of a new group is a member from its accepted claim on.
        for (q, p) in self.present.iter_mut() {
            if !self.d.is_member(*q) {
                p.next = None;
            } else if p.next.is_none() && Some(*q) == sender {
                p.next = self.d.epoch();
            }
        }
    }

    fn check_state(&self) {
        let mut leaves = BTreeSet::new();
        for q in 1..=u64::from(MAX_PEERS) + 1 {
            let member = self.d.is_member(q);
            if member {
                assert!(self.present.contains_key(&q), "absent p{q} is a member");
                assert!(self.d.epoch().is_some());
            }
            if let Some(leaf) = self.d.claimed_leaf(q) {
                assert!(member, "p{q} claims leaf {leaf} without being a member");
                assert!(leaves.insert(leaf), "leaf {leaf} claimed twice");
            }
        }
        assert_eq!(self.d.epoch(), self.d.group().map(|g| g.1));
        let ServerMsg::MlsPending { joiners, .. } = self.d.pending(policy()) else {
            panic!("pending is not mls_pending");
        };
        let mut seen = BTreeSet::new();
        for j in joiners {
            let q = parse_participant_id(&j.participant_id).expect("a participant id");
            assert!(seen.insert(q), "p{q} pending twice");
            assert!(self.present.contains_key(&q), "absent p{q} pending");
            assert!(!self.d.is_member(q), "member p{q} pending");
        }
    }

    /// A payload: the device's own message (as is, a byte changed, cut short), or arbitrary.
    fn payload(r: &mut Reader<'_>, real: Option<Vec<u8>>) -> Option<String> {
        let mode = r.u8()?;
        Some(match (mode % 8, real) {
            (0..=3, Some(real)) => b64(&real),
            (4, Some(mut real)) => {
                let pos = usize::from(r.u16()?);
                let xor = r.u8()?.max(1);
                let len = real.len();
                if let Some(b) = real.get_mut(pos % len.max(1)) {
                    *b ^= xor;
                }
                b64(&real)
            }
            (5, Some(mut real)) => {
                real.truncate(usize::from(r.u16()?) % (real.len() + 1));
                b64(&real)
            }
            (6, _) => r.string(512)?,
            _ => b64(r.bytes(4096)?),
        })
    }

    fn epoch_choice(&self, r: &mut Reader<'_>, own: Option<u64>) -> Option<u64> {
        let current = self.d.epoch().unwrap_or(0);
        Some(match r.u8()? % 6 {
            0 | 1 => own.unwrap_or(current),
            2 => current,
            3 => current.wrapping_sub(1),
            4 => current + 1,
            _ => r.u64()?,
        })
    }

    /// Sends `by`'s commit (made by its device, or `None` for arbitrary bytes).
    fn commit(
        &mut self,
        r: &mut Reader<'_>,
        by: PeerId,
        made: Option<klausur_e2ee::CommitOutput>,
    ) -> Option<()> {
        let own_epoch = self.dev(by).and_then(|d| d.epoch().ok());
        let epoch = self.epoch_choice(r, own_epoch)?;
        let commit = Self::payload(r, made.as_ref().map(|c| c.commit.clone()))?;
        let welcome = match made.as_ref().and_then(|c| c.welcome.clone()) {
            Some(w) => Some(Self::payload(r, Some(w))?),
            None if r.u8()? % 4 == 0 => Some(Self::payload(r, None)?),
            None => None,
        };
        // The joiners the commit adds (the pending list's order), and perhaps others.
        let mut welcome_for: Vec<PeerId> = Vec::new();
        if welcome.is_some() {
            let mask = r.u8()?;
            if let ServerMsg::MlsPending { joiners, .. } = self.d.pending(policy()) {
                welcome_for = joiners
                    .iter()
                    .filter_map(|j| parse_participant_id(&j.participant_id))
                    .collect();
            }
            if mask & 1 != 0 {
                welcome_for.push(PeerId::from(mask >> 1) % (u64::from(MAX_PEERS) + 2));
            }
        }
        let before = self.seen();
        let result = self.d.commit(by, epoch, commit, welcome, welcome_for);
        let accepted = matches!(&result, Ok(out) if out.iter().any(|o| matches!(o,
            Out::To(q, ServerMsg::MlsCommitResult { accepted: true, .. }) if *q == by)));
        let unix = self.unix;
        if let (Some(dev), Some(_)) = (self.dev(by), made) {
            let _ = if accepted {
                dev.merge_pending_commit(unix).map(|_| ())
            } else {
                dev.discard_pending_commit()
            };
        }
        self.answer(Some(by), before, result);
        Some(())
    }

    /// One operation from the input; `None` at its end.
    fn op(&mut self, r: &mut Reader<'_>) -> Option<()> {
        let p = PeerId::from(1 + r.u8()? % MAX_PEERS);
        let op = r.u8()?;
        trace!("p{p} op {} (group {:?})", op % 13, self.d.group());
        if op % 13 == 0 {
            // p comes into the meeting room (if not there yet) as one of four kinds.
            if !self.present.contains_key(&p) {
                let (user_id, kind, identity) = match (op / 13) % 4 {
                    0 => {
                        let u = format!("user:{p}");
                        let id = Identity::Named {
                            user_id: u.clone(),
                            kind: CredentialKind::Staff,
                        };
                        (u, CredentialKind::Staff, id)
                    }
                    1 => (
                        format!("guest:g{p}"),
                        CredentialKind::Guest,
                        Identity::Guest,
                    ),
                    2 => {
                        let u = format!("invitation:{p}");
                        let id = Identity::Named {
                            user_id: u.clone(),
                            kind: CredentialKind::InvitedGuest,
                        };
                        (u, CredentialKind::InvitedGuest, id)
                    }
                    // A device whose credential is another participant's.
                    _ => {
                        let id = Identity::Named {
                            user_id: format!("user:{p}"),
                            kind: CredentialKind::Staff,
                        };
                        (format!("user:{}", p + 1), CredentialKind::Staff, id)
                    }
                };
                let dev = self.device(&user_id, kind);
                self.present.insert(
                    p,
                    Peer {
                        dev,
                        identity,
                        next: None,
                    },
                );
            }
            return Some(());
        }
        if !self.present.contains_key(&p) {
            // The actor hands the service only what participants in the meeting room send.
            return Some(());
        }
        match op % 13 {
            // p leaves.
            1 => {
                let before = self.seen();
                let out = self.d.left(p);
                self.present.remove(&p);
                self.asked.remove(&p);
                for o in &out {
                    assert!(
                        !matches!(o, Out::To(q, _) | Out::Leaf(q, _) if *q == p),
                        "{o:?} to the participant who left"
                    );
                }
                assert!(!self.d.is_member(p) && self.d.claimed_leaf(p).is_none());
                self.may_void = true;
                self.answer(None, before, Ok(out));
                self.may_void = false;
            }
            // A key package.
            2 => {
                let real = self.dev(p).and_then(|d| d.key_package().ok());
                let kp = Self::payload(r, real)?;
                let admitted_by = match r.u8()? {
                    0..=191 => None,
                    b => Some(PeerId::from(1 + b % MAX_PEERS)),
                };
                let continuity = match r.u8()? % 4 {
                    0 => Some(MlsContinuity {
                        previous_key: r.string(80)?,
                        signature: r.string(100)?,
                    }),
                    1 => Some(MlsContinuity {
                        previous_key: format!("{:064x}", r.u64()?),
                        signature: b64(r.bytes(64)?),
                    }),
                    _ => None,
                };
                let before = self.seen();
                let result = self.d.key_package(p, kp, admitted_by, continuity, self.now);
                self.answer(Some(p), before, result);
            }
            // p's device creates the group it was asked to create.
            3 => {
                let unix = self.unix;
                let group_id = self.asked.get(&p).cloned();
                if let (Some(g), Some(dev)) = (group_id, self.dev(p)) {
                    if !dev.in_group() {
                        let _ = dev.create_group(g.as_bytes(), unix);
                    }
                }
            }
            // A leaf claim (the device's own, with its GroupInfo or not, changed or not).
            4 => {
                let with_info = r.bool()?;
                let own = self.dev(p).and_then(|d| {
                    let leaf = d.leaf_index().ok()?;
                    let epoch = d.epoch().ok()?;
                    let sig = d.sign_leaf_claim(&participant_id(p)).ok()?;
                    let info = if with_info { d.group_info().ok() } else { None };
                    Some((leaf, epoch, sig, info))
                });
                let (leaf, epoch, sig, info) = own.unwrap_or((0, 0, Vec::new(), None));
                let change = r.u8()?;
                let claim = MemberClaim {
                    leaf: if change % 5 == 1 { r.u32()? % 8 } else { leaf },
                    epoch: if change % 5 == 2 {
                        self.epoch_choice(r, Some(epoch))?
                    } else {
                        epoch
                    },
                    signature: Self::payload(r, (!sig.is_empty()).then_some(sig))?,
                    group_info: match (change % 5, info) {
                        (3, info) => Some(Self::payload(r, info)?),
                        (4, _) => None,
                        (_, info) => info.map(|i| b64(&i)),
                    },
                };
                let identity = self.present.get(&p)?.identity.clone();
                let before = self.seen();
                let result = self.d.member(p, claim, &identity);
                self.answer(Some(p), before, result);
            }
            // p's device adds those waiting (all of them), if it can.
            5 => {
                let unix = self.unix;
                let mut kps = Vec::new();
                if let ServerMsg::MlsPending { joiners, .. } = self.d.pending(policy()) {
                    kps = joiners
                        .iter()
                        .filter_map(|j| unb64(&j.key_package))
                        .collect();
                }
                let made = self.dev(p).and_then(|d| d.add(&kps, unix).ok());
                if made.is_some() {
                    self.commit(r, p, made)?;
                }
            }
            // p's device updates its own leaf.
            6 => {
                let made = self.dev(p).and_then(|d| d.update_own_leaf().ok());
                if made.is_some() {
                    self.commit(r, p, made)?;
                }
            }
            // p's device removes a leaf.
            7 => {
                let leaf = u32::from(r.u8()? % 8);
                let made = self.dev(p).and_then(|d| d.remove(&[leaf]).ok());
                if made.is_some() {
                    self.commit(r, p, made)?;
                }
            }
            // A commit of arbitrary bytes.
            8 => self.commit(r, p, None)?,
            // p could not process a commit.
            9 => {
                let epoch = self.epoch_choice(r, None)?;
                let before = self.seen();
                let result = self.d.rejected(p, epoch);
                self.may_void = true;
                self.answer(Some(p), before, result);
                self.may_void = false;
            }
            // Chat.
            10 => {
                let text = r.bytes(64)?.to_vec();
                let real = self.dev(p).and_then(|d| d.encrypt_application(&text).ok());
                let own_epoch = self.dev(p).and_then(|d| d.epoch().ok());
                let message = Self::payload(r, real)?;
                let epoch = self.epoch_choice(r, own_epoch)?;
                let id = r.u32()?;
                let before = self.seen();
                let result = self.d.chat(p, id, epoch, message, 0);
                self.answer(Some(p), before, result);
            }
            // A moderator (p) admits someone waiting to the group.
            11 => {
                let joiner = PeerId::from(1 + r.u8()? % MAX_PEERS);
                let before = self.seen();
                let result = self.d.readmit(joiner, p);
                self.answer(Some(p), before, result);
                let _ = self.d.awaits_returning(joiner);
            }
            // Time passes.
            _ => {
                let d = Duration::from_millis(u64::from(r.u16()?) * 10);
                self.now += d;
                self.unix += d;
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut sim = Sim::new();
    for _ in 0..MAX_OPS {
        if sim.op(&mut r).is_none() {
            break;
        }
    }
});
