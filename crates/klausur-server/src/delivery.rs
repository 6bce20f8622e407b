//! The MLS delivery service of one meeting: orders handshake messages and relays Welcomes.
//!
//! The server is never a member of a meeting's MLS group. This module holds no key material and
//! parses no MLS structure: key packages, commits and Welcomes are opaque bytes (checked only to
//! be base64 of a bounded size). What it decides is *order*:
//!
//! - The first client whose key package arrives while no group exists is asked to create the
//!   group (`mls_create_group`); if it leaves first, the next waiting client is asked.
//! - Every other client with a key package waits in the pending list, which members receive
//!   with every change (`mls_pending`). Only a member's client can add a joiner, by a commit.
//! - Exactly one commit wins per epoch: the first that names the current epoch. It goes to every
//!   other member in arrival order; its Welcome goes to the joiners it names that are pending,
//!   who from then on receive every later commit. Every other commit for that epoch loses.
//! - A joiner admitted from the lobby is added by the admitting moderator's client only. If that
//!   moderator leaves first, the joiner is no longer tied to them, and any moderator can admit
//!   them to the group ([`Delivery::readmit`]), so nobody waits for keys forever.
//! - A commit the server accepted but most of the other members cannot process (a member's
//!   client sent garbage, or a bug) would freeze the group: the server would wait for commits of
//!   an epoch no honest client reaches. Members report such a commit (`mls_commit_rejected`);
//!   when more than half of those who were members before it do, the latest commit is voided:
//!   the epoch goes back, and its maker and the joiners it welcomed are told to start over
//!   (`mls_reset`). A minority cannot void an honest commit, nor block the voiding of a bad one.
//! - Chat is end-to-end encrypted: MLS application messages (`mls_chat`) go to every other
//!   member, but only if they were made in the current epoch; one of an older epoch is refused
//!   (the author encrypts it again), so no member ever needs keys of a past epoch for it and the
//!   order of commits and chat is the same for everyone.
//! - When the last member leaves, the group is forgotten; the next joiner creates a new one
//!   (under a new group id). Nothing survives the meeting: the state lives in the meeting actor.
//!
//! The module is sans-IO: each input returns the messages to send ([`Out`]), which the meeting
//! actor delivers. See docs/e2ee.md for the whole protocol and docs/protocol.md for messages.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use klausur_proto::{
    ErrorCode, MlsContinuity, MlsJoiner, MlsPolicy, ServerMsg, MAX_CHAT_MESSAGE_CHARS,
};
use klausur_room::PeerId;

use crate::meeting::participant_id;

/// Largest key package accepted (a KeyPackage with its credential is well under 1 KiB).
pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;
/// Largest commit or Welcome accepted (base64 text, within the signaling message limit).
pub const MAX_HANDSHAKE_CHARS: usize = 900 * 1024;

/// A message the actor should send.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// To one participant.
    To(PeerId, ServerMsg),
    /// To every group member except `except`.
    Members {
        msg: ServerMsg,
        except: Option<PeerId>,
    },
    /// The pending list changed: send `mls_pending` (built by [`Delivery::pending`] with the
    /// meeting's current policy) to every group member.
    PendingChanged,
    /// A participant's leaf claim changed: update its participant entry for everyone.
    Leaf(PeerId, Option<u32>),
}

/// A refused input: the error code and message for the sender.
pub type Refusal = (ErrorCode, String);

struct Pending {
    key_package: String,
    admitted_by: Option<PeerId>,
    continuity: Option<MlsContinuity>,
}

struct Group {
    epoch: u64,
    /// Participants that receive commits: the creator and everyone a Welcome was relayed to.
    members: BTreeSet<PeerId>,
    /// The latest accepted commit, until the next one: it can still be voided.
    last: Option<LastCommit>,
}

/// The latest accepted commit, kept so that it can be voided (see [`Delivery::rejected`]).
struct LastCommit {
    /// The epoch it was made at (the group is one further).
    epoch: u64,
    committer: PeerId,
    /// The members before it, its maker excepted, still present: whose reports count.
    voters: BTreeSet<PeerId>,
    /// The joiners its Welcome went to, still present.
    welcomed: Vec<PeerId>,
    /// Voters that reported they could not process it.
    rejected_by: BTreeSet<PeerId>,
}

/// The delivery service state of one meeting.
pub struct Delivery {
    meeting_id: String,
    generation: u32,
    group: Option<Group>,
    creator: Option<PeerId>,
    pending: BTreeMap<PeerId, Pending>,
    leaves: BTreeMap<PeerId, u32>,
}

fn check_base64(field: &str, text: &str, max_chars: usize) -> Result<(), Refusal> {
    if text.len() > max_chars {
        return Err((
            ErrorCode::TooLarge,
            format!("{field} is longer than {max_chars} characters"),
        ));
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) if !bytes.is_empty() => Ok(()),
        Ok(_) => Err((ErrorCode::InvalidField, format!("{field} is empty"))),
        Err(e) => Err((
            ErrorCode::InvalidField,
            format!("{field} is not standard base64: {e}"),
        )),
    }
}

impl Delivery {
    pub fn new(meeting_id: &str) -> Self {
        Delivery {
            meeting_id: meeting_id.to_string(),
            generation: 0,
            group: None,
            creator: None,
            pending: BTreeMap::new(),
            leaves: BTreeMap::new(),
        }
    }

    /// The current epoch, if a group exists.
    pub fn epoch(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.epoch)
    }

    /// The current group's id and epoch, if a group exists.
    pub fn group(&self) -> Option<(String, u64)> {
        self.group
            .as_ref()
            .map(|g| (format!("{}/{}", self.meeting_id, self.generation), g.epoch))
    }

    /// Whether `peer` receives the group's commits.
    pub fn is_member(&self, peer: PeerId) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.members.contains(&peer))
    }

    /// The `mls_pending` message for members, under `policy`.
    pub fn pending(&self, policy: MlsPolicy) -> ServerMsg {
        ServerMsg::MlsPending {
            joiners: self
                .pending
                .iter()
                .map(|(p, j)| MlsJoiner {
                    participant_id: participant_id(*p),
                    key_package: j.key_package.clone(),
                    admitted_by: j.admitted_by.map(participant_id),
                    continuity: j.continuity.clone(),
                })
                .collect(),
            policy,
        }
    }

    fn ask_to_create(&mut self, peer: PeerId) -> Out {
        self.generation += 1;
        self.creator = Some(peer);
        Out::To(
            peer,
            ServerMsg::MlsCreateGroup {
                group_id: format!("{}/{}", self.meeting_id, self.generation),
            },
        )
    }

    /// `mls_key_package` from a participant in the meeting room. `admitted_by` is the
    /// moderator who admitted them from the lobby, if any; `continuity` is relayed as sent
    /// (only its form is checked: members verify the signature).
    pub fn key_package(
        &mut self,
        peer: PeerId,
        key_package: String,
        admitted_by: Option<PeerId>,
        continuity: Option<MlsContinuity>,
    ) -> Result<Vec<Out>, Refusal> {
        check_base64(
            "key_package",
            &key_package,
            MAX_KEY_PACKAGE_BYTES * 4 / 3 + 4,
        )?;
        if let Some(c) = &continuity {
            let hex_key = c.previous_key.len() == 64
                && c.previous_key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_key {
                return Err((
                    ErrorCode::InvalidField,
                    "continuity.previous_key must be 64 lower-case hex digits".into(),
                ));
            }
            // An Ed25519 signature: 64 bytes, 88 characters of base64.
            check_base64("continuity.signature", &c.signature, 88)?;
        }
        if self.is_member(peer) || self.creator == Some(peer) {
            return Err((
                ErrorCode::InvalidState,
                "already a member of the meeting's group".into(),
            ));
        }
        if self.group.is_none() && self.creator.is_none() {
            return Ok(vec![self.ask_to_create(peer)]);
        }
        self.pending.insert(
            peer,
            Pending {
                key_package,
                admitted_by,
                continuity,
            },
        );
        Ok(if self.group.is_some() {
            vec![Out::PendingChanged]
        } else {
            Vec::new()
        })
    }

    /// `mls_member`: the client holds `leaf` in `epoch`.
    pub fn member(&mut self, peer: PeerId, leaf: u32, epoch: u64) -> Result<Vec<Out>, Refusal> {
        let mut out = Vec::new();
        if self.creator == Some(peer) && self.group.is_none() {
            if leaf != 0 || epoch != 0 {
                return Err((
                    ErrorCode::InvalidField,
                    "a new group starts with its creator at leaf 0 in epoch 0".into(),
                ));
            }
            self.creator = None;
            self.group = Some(Group {
                epoch: 0,
                members: BTreeSet::from([peer]),
                last: None,
            });
            if !self.pending.is_empty() {
                out.push(Out::PendingChanged);
            }
        } else if !self.is_member(peer) {
            return Err((
                ErrorCode::InvalidState,
                "not added to the meeting's group (no Welcome was relayed to you)".into(),
            ));
        }
        if self.leaves.get(&peer) != Some(&leaf) {
            self.leaves.insert(peer, leaf);
            out.push(Out::Leaf(peer, Some(leaf)));
        }
        Ok(out)
    }

    /// `mls_commit` from a member, made at `epoch`.
    pub fn commit(
        &mut self,
        peer: PeerId,
        epoch: u64,
        commit: String,
        welcome: Option<String>,
        welcome_for: Vec<PeerId>,
    ) -> Result<Vec<Out>, Refusal> {
        if !self.is_member(peer) {
            return Err((
                ErrorCode::Forbidden,
                "only members of the meeting's group can commit".into(),
            ));
        }
        check_base64("commit", &commit, MAX_HANDSHAKE_CHARS)?;
        if let Some(w) = &welcome {
            check_base64("welcome", w, MAX_HANDSHAKE_CHARS)?;
        } else if !welcome_for.is_empty() {
            return Err((
                ErrorCode::InvalidField,
                "welcome_for needs a welcome".into(),
            ));
        }
        let Some(group) = self.group.as_mut() else {
            return Err((ErrorCode::InvalidState, "no group".into()));
        };
        if epoch != group.epoch {
            return Ok(vec![Out::To(
                peer,
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: false,
                },
            )]);
        }
        let mut last = LastCommit {
            epoch,
            committer: peer,
            voters: group
                .members
                .iter()
                .copied()
                .filter(|p| *p != peer)
                .collect(),
            welcomed: Vec::new(),
            rejected_by: BTreeSet::new(),
        };
        group.epoch += 1;
        let new_epoch = group.epoch;
        let mut out = vec![
            Out::To(
                peer,
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: true,
                },
            ),
            Out::Members {
                msg: ServerMsg::MlsCommit {
                    epoch,
                    commit,
                    from_id: participant_id(peer),
                },
                except: Some(peer),
            },
        ];
        let mut welcomed = false;
        if let Some(welcome) = welcome {
            for joiner in welcome_for {
                if self.pending.remove(&joiner).is_some() {
                    group.members.insert(joiner);
                    last.welcomed.push(joiner);
                    welcomed = true;
                    out.push(Out::To(
                        joiner,
                        ServerMsg::MlsWelcome {
                            welcome: welcome.clone(),
                            epoch: new_epoch,
                        },
                    ));
                }
            }
        }
        group.last = Some(last);
        if welcomed {
            out.push(Out::PendingChanged);
        }
        Ok(out)
    }

    /// `mls_commit_rejected` from a member: it could not process the commit that won `epoch`.
    /// Counts only for the latest commit and from a member that was in the group before it
    /// (its maker excepted); anything else is ignored (for example a forgery the server never
    /// accepted). A majority of those members voids the commit ([`Self::void_if_rejected`]).
    pub fn rejected(&mut self, peer: PeerId, epoch: u64) -> Result<Vec<Out>, Refusal> {
        if !self.is_member(peer) {
            return Err((
                ErrorCode::Forbidden,
                "only members of the meeting's group report commits".into(),
            ));
        }
        if let Some(last) = self.group.as_mut().and_then(|g| g.last.as_mut()) {
            if last.epoch == epoch && last.voters.contains(&peer) {
                last.rejected_by.insert(peer);
            }
        }
        Ok(self.void_if_rejected())
    }

    /// Voids the latest commit if more than half of its voters rejected it: the group goes back
    /// to the epoch it was made at, without its maker and the joiners it welcomed, who are told
    /// to start over and lose their leaf claims. The members are still in that epoch.
    fn void_if_rejected(&mut self) -> Vec<Out> {
        let Some(group) = self.group.as_mut() else {
            return Vec::new();
        };
        let Some(last) = group.last.as_ref() else {
            return Vec::new();
        };
        if last.voters.is_empty() || last.rejected_by.len() * 2 <= last.voters.len() {
            return Vec::new();
        }
        let Some(last) = group.last.take() else {
            return Vec::new();
        };
        group.epoch = last.epoch;
        let mut out = Vec::new();
        for p in std::iter::once(last.committer).chain(last.welcomed) {
            if group.members.remove(&p) {
                out.push(Out::To(p, ServerMsg::MlsReset { epoch: last.epoch }));
                if self.leaves.remove(&p).is_some() {
                    out.push(Out::Leaf(p, None));
                }
            }
        }
        out
    }

    /// `mls_chat` from a member: an MLS application message made at `epoch`, relayed to the
    /// other members only if `epoch` is the current one. The author learns which by
    /// `mls_chat_result`.
    pub fn chat(
        &mut self,
        peer: PeerId,
        id: u32,
        epoch: u64,
        message: String,
        sent_at_ms: i64,
    ) -> Result<Vec<Out>, Refusal> {
        if !self.is_member(peer) {
            return Err((
                ErrorCode::Forbidden,
                "only members of the meeting's group can chat (chat is end-to-end encrypted)"
                    .into(),
            ));
        }
        check_base64("message", &message, MAX_CHAT_MESSAGE_CHARS)?;
        let current = self.epoch();
        let result = Out::To(
            peer,
            ServerMsg::MlsChatResult {
                id,
                accepted: current == Some(epoch),
            },
        );
        if current != Some(epoch) {
            return Ok(vec![result]);
        }
        Ok(vec![
            Out::Members {
                msg: ServerMsg::MlsChat {
                    epoch,
                    message,
                    from_id: participant_id(peer),
                    sent_at_ms,
                },
                except: Some(peer),
            },
            result,
        ])
    }

    /// A moderator admits `joiner`, who is in the meeting room and waits to be added to the
    /// group, from now on as if they had admitted them from the lobby: their client adds
    /// `joiner`. For a joiner whose admitting moderator left (or who came in by a profile that
    /// no longer admits them directly); it also hands a joiner over to another moderator.
    pub fn readmit(&mut self, joiner: PeerId, by: PeerId) -> Result<Vec<Out>, Refusal> {
        let Some(p) = self.pending.get_mut(&joiner) else {
            return Err((
                ErrorCode::InvalidState,
                format!(
                    "{} is not waiting to be added to the meeting's encrypted group",
                    participant_id(joiner)
                ),
            ));
        };
        p.admitted_by = Some(by);
        Ok(if self.group.is_some() {
            vec![Out::PendingChanged]
        } else {
            Vec::new()
        })
    }

    /// Whether `joiner` waits to be added with a continuity proof and nobody named to add them
    /// (a returning guest whose admitting moderator was not there when the key package came).
    pub fn awaits_returning(&self, joiner: PeerId) -> bool {
        self.pending
            .get(&joiner)
            .is_some_and(|p| p.admitted_by.is_none() && p.continuity.is_some())
    }

    /// A participant left the meeting room (or the meeting).
    pub fn left(&mut self, peer: PeerId) -> Vec<Out> {
        let mut out = Vec::new();
        let was_pending = self.pending.remove(&peer).is_some();
        // Joiners this moderator admitted are no longer tied to them (see `readmit`).
        let mut released = false;
        for p in self.pending.values_mut() {
            if p.admitted_by == Some(peer) {
                p.admitted_by = None;
                released = true;
            }
        }
        self.leaves.remove(&peer);
        if let Some(last) = self.group.as_mut().and_then(|g| g.last.as_mut()) {
            last.voters.remove(&peer);
            last.rejected_by.remove(&peer);
            last.welcomed.retain(|p| *p != peer);
        }
        // With fewer voters, the reports already in may now be a majority.
        out.extend(self.void_if_rejected());
        if let Some(g) = self.group.as_mut() {
            g.members.remove(&peer);
            if g.members.is_empty() {
                self.group = None;
            } else if was_pending || released {
                out.push(Out::PendingChanged);
            }
        }
        if self.creator == Some(peer) {
            self.creator = None;
        }
        if self.group.is_none() && self.creator.is_none() {
            // Nobody holds the group any more: the first waiting client starts a new one and
            // the others wait for it.
            if let Some((&next, _)) = self.pending.iter().next() {
                self.pending.remove(&next);
                out.push(self.ask_to_create(next));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KP: &str = "AAEC";

    fn policy() -> MlsPolicy {
        MlsPolicy {
            staff_direct: false,
            direct_user_ids: vec![],
        }
    }

    fn create(d: &mut Delivery, peer: PeerId) {
        let out = d.key_package(peer, KP.into(), None, None).expect("kp");
        assert!(matches!(&out[..], [Out::To(p, ServerMsg::MlsCreateGroup { .. })] if *p == peer));
        d.member(peer, 0, 0).expect("member");
    }

    /// A group of p1..=p`n` (p1 created it, each later one added by p1), at epoch n-1.
    fn group_of(n: PeerId) -> Delivery {
        let mut d = Delivery::new("m1");
        create(&mut d, 1);
        for p in 2..=n {
            d.key_package(p, KP.into(), None, None).expect("accepted");
            let epoch = d.epoch().expect("group");
            d.commit(1, epoch, "Q0M=".into(), Some("V0U=".into()), vec![p])
                .expect("accepted");
            d.member(p, p as u32 - 1, epoch + 1).expect("member");
        }
        d
    }

    #[test]
    fn first_key_package_creates_the_group_others_wait() {
        let mut d = Delivery::new("m1");
        create(&mut d, 1);
        assert_eq!(d.epoch(), Some(0));
        let out = d.key_package(2, KP.into(), None, None).expect("kp");
        assert_eq!(out, vec![Out::PendingChanged]);
        let ServerMsg::MlsPending { joiners, .. } = d.pending(policy()) else {
            panic!("pending")
        };
        assert_eq!(joiners.len(), 1);
        assert_eq!(joiners[0].participant_id, "p2");
        // A pending client is not a member and cannot claim to be one.
        assert!(!d.is_member(2));
        assert_eq!(
            d.member(2, 1, 1).expect_err("refused").0,
            ErrorCode::InvalidState
        );
    }

    #[test]
    fn exactly_one_commit_wins_per_epoch_and_welcome_goes_to_named_pending_joiners() {
        let mut d = Delivery::new("m1");
        create(&mut d, 1);
        d.key_package(2, KP.into(), None, None).expect("accepted");
        let out = d
            .commit(1, 0, "Q0M=".into(), Some("V0U=".into()), vec![2, 9])
            .expect("accepted");
        assert!(out.contains(&Out::To(
            1,
            ServerMsg::MlsCommitResult {
                epoch: 0,
                accepted: true
            }
        )));
        assert!(out.contains(&Out::To(
            2,
            ServerMsg::MlsWelcome {
                welcome: "V0U=".into(),
                epoch: 1
            }
        )));
        // p9 was never pending: no Welcome for it.
        assert!(!out.iter().any(|o| matches!(o, Out::To(9, _))));
        assert!(d.is_member(2));
        assert_eq!(d.epoch(), Some(1));
        // Two members race for epoch 1: the first wins, the second loses.
        let first = d
            .commit(2, 1, "QQ==".into(), None, vec![])
            .expect("accepted");
        assert!(first.contains(&Out::Members {
            msg: ServerMsg::MlsCommit {
                epoch: 1,
                commit: "QQ==".into(),
                from_id: "p2".into()
            },
            except: Some(2)
        }));
        let second = d
            .commit(1, 1, "Qg==".into(), None, vec![])
            .expect("accepted");
        assert_eq!(
            second,
            vec![Out::To(
                1,
                ServerMsg::MlsCommitResult {
                    epoch: 1,
                    accepted: false
                }
            )]
        );
        assert_eq!(d.epoch(), Some(2));
    }

    #[test]
    fn chat_of_the_current_epoch_goes_to_the_other_members_an_older_one_back_to_its_author() {
        let mut d = group_of(2);
        // p3 waits for a Welcome: not a member, so it may not chat and receives no chat.
        d.key_package(3, KP.into(), None, None).expect("accepted");
        assert_eq!(
            d.chat(3, 1, 1, "QQ==".into(), 5).expect_err("refused").0,
            ErrorCode::Forbidden
        );

        let out = d.chat(2, 7, 1, "Q0hBVA==".into(), 1234).expect("accepted");
        assert_eq!(
            out,
            vec![
                Out::Members {
                    msg: ServerMsg::MlsChat {
                        epoch: 1,
                        message: "Q0hBVA==".into(),
                        from_id: "p2".into(),
                        sent_at_ms: 1234,
                    },
                    except: Some(2),
                },
                Out::To(
                    2,
                    ServerMsg::MlsChatResult {
                        id: 7,
                        accepted: true
                    }
                ),
            ]
        );

        // A commit moves the group to epoch 2: chat made in epoch 1 is not relayed any more,
        // its author is told to encrypt it again.
        d.commit(1, 1, "QQ==".into(), None, vec![])
            .expect("accepted");
        let out = d.chat(2, 8, 1, "Q0hBVA==".into(), 1235).expect("answered");
        assert_eq!(
            out,
            vec![Out::To(
                2,
                ServerMsg::MlsChatResult {
                    id: 8,
                    accepted: false
                }
            )]
        );
        // Nor is chat claiming a future epoch.
        let out = d.chat(2, 9, 3, "Q0hBVA==".into(), 1236).expect("answered");
        assert!(matches!(
            &out[..],
            [Out::To(
                2,
                ServerMsg::MlsChatResult {
                    id: 9,
                    accepted: false
                }
            )]
        ));

        // Bad bytes are refused with a reason; nothing is relayed.
        let (code, msg) = d.chat(2, 10, 2, "not base64!".into(), 0).expect_err("bad");
        assert_eq!(code, ErrorCode::InvalidField);
        assert!(msg.contains("message is not standard base64"), "{msg}");
        assert_eq!(
            d.chat(2, 11, 2, String::new(), 0).expect_err("empty").0,
            ErrorCode::InvalidField
        );
        let long = "A".repeat(MAX_CHAT_MESSAGE_CHARS + 4);
        assert_eq!(
            d.chat(2, 12, 2, long, 0).expect_err("long").0,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn a_joiner_whose_admitting_moderator_left_can_be_admitted_by_another() {
        let mut d = group_of(2);
        // p3 came in from the lobby, admitted by p2.
        assert_eq!(
            d.key_package(3, KP.into(), Some(2), None)
                .expect("accepted"),
            vec![Out::PendingChanged]
        );
        let admitted_by = |d: &Delivery| match d.pending(policy()) {
            ServerMsg::MlsPending { joiners, .. } => joiners[0].admitted_by.clone(),
            _ => unreachable!(),
        };
        assert_eq!(admitted_by(&d), Some("p2".into()));
        // p2 leaves before adding them: p3 is released, and members hear of it.
        assert_eq!(d.left(2), vec![Out::PendingChanged]);
        assert_eq!(admitted_by(&d), None);
        // p1 (a moderator, the actor checks that) admits them again; p1's client adds them.
        assert_eq!(
            d.readmit(3, 1).expect("readmitted"),
            vec![Out::PendingChanged]
        );
        assert_eq!(admitted_by(&d), Some("p1".into()));
        // Someone who does not wait for the group cannot be readmitted.
        assert_eq!(
            d.readmit(2, 1).expect_err("not pending").0,
            ErrorCode::InvalidState
        );
        // A member leaving who admitted nobody changes nothing for the pending list.
        d.key_package(4, KP.into(), None, None).expect("accepted");
        d.commit(1, 1, "Q0M=".into(), Some("V0U=".into()), vec![4])
            .expect("accepted");
        assert_eq!(d.left(4), Vec::<Out>::new());
        assert_eq!(admitted_by(&d), Some("p1".into()));
    }

    #[test]
    fn a_commit_most_members_cannot_process_is_voided_and_its_maker_starts_over() {
        let mut d = group_of(4);
        assert_eq!(d.epoch(), Some(3));
        // p2 commits garbage that also welcomes p5; the server cannot tell and accepts it.
        d.key_package(5, KP.into(), None, None).expect("accepted");
        d.commit(2, 3, "R0FSQkFHRQ==".into(), Some("V0U=".into()), vec![5])
            .expect("accepted");
        assert_eq!(d.epoch(), Some(4));
        // Reports that do not count: the maker itself, a joiner it welcomed, another epoch.
        assert_eq!(d.rejected(2, 3).expect("ignored"), vec![]);
        assert_eq!(d.rejected(5, 3).expect("ignored"), vec![]);
        assert_eq!(d.rejected(1, 2).expect("ignored"), vec![]);
        // One of three voters is no majority.
        assert_eq!(d.rejected(1, 3).expect("counted"), vec![]);
        assert_eq!(d.epoch(), Some(4));
        // Two of three are: the commit is voided.
        let out = d.rejected(3, 3).expect("counted");
        assert_eq!(
            out,
            vec![
                Out::To(2, ServerMsg::MlsReset { epoch: 3 }),
                Out::Leaf(2, None),
                Out::To(5, ServerMsg::MlsReset { epoch: 3 }),
            ]
        );
        assert_eq!(d.epoch(), Some(3));
        assert!(!d.is_member(2) && !d.is_member(5));
        assert!(d.is_member(1) && d.is_member(3) && d.is_member(4));
        // The members, still in epoch 3, commit again; p2 comes back with a new key package.
        assert!(matches!(
            &d.commit(4, 3, "T0s=".into(), None, vec![])
                .expect("accepted")[0],
            Out::To(
                4,
                ServerMsg::MlsCommitResult {
                    epoch: 3,
                    accepted: true
                }
            )
        ));
        assert_eq!(
            d.key_package(2, KP.into(), None, None).expect("pending"),
            vec![Out::PendingChanged]
        );
        // Only the latest commit can be voided, once: a late report changes nothing.
        assert_eq!(d.rejected(1, 3).expect("ignored"), vec![]);
        assert_eq!(d.epoch(), Some(4));
        // Non-members cannot report.
        assert_eq!(
            d.rejected(9, 4).expect_err("refused").0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_minority_cannot_void_an_honest_commit_and_leaving_voters_count_out() {
        let mut d = group_of(5);
        d.commit(1, 4, "SE9ORVNU".into(), None, vec![])
            .expect("accepted");
        // Two of four voters (p2..p5) claim they could not process it: not more than half.
        assert_eq!(d.rejected(2, 4).expect("counted"), vec![]);
        assert_eq!(d.rejected(3, 4).expect("counted"), vec![]);
        assert_eq!(d.epoch(), Some(5));
        // One of the others leaves: two of the three voters left are more than half.
        let out = d.left(4);
        assert_eq!(
            out,
            vec![
                Out::To(1, ServerMsg::MlsReset { epoch: 4 }),
                Out::Leaf(1, None)
            ]
        );
        assert_eq!(d.epoch(), Some(4));
        // A group of one has no voters: its commits are never voided.
        let mut solo = group_of(1);
        solo.commit(1, 0, "QQ==".into(), None, vec![])
            .expect("accepted");
        assert_eq!(solo.rejected(1, 0).expect("ignored"), vec![]);
        assert_eq!(solo.epoch(), Some(1));
    }

    #[test]
    fn non_members_cannot_commit_and_bad_bytes_are_refused() {
        let mut d = Delivery::new("m1");
        create(&mut d, 1);
        d.key_package(2, KP.into(), None, None).expect("accepted");
        assert_eq!(
            d.commit(2, 0, "QQ==".into(), None, vec![])
                .expect_err("refused")
                .0,
            ErrorCode::Forbidden
        );
        assert_eq!(
            d.commit(1, 0, "not base64!".into(), None, vec![])
                .expect_err("refused")
                .0,
            ErrorCode::InvalidField
        );
        assert_eq!(
            d.commit(1, 0, "QQ==".into(), None, vec![2])
                .expect_err("refused")
                .0,
            ErrorCode::InvalidField
        );
        assert_eq!(
            d.key_package(3, "".into(), None, None)
                .expect_err("refused")
                .0,
            ErrorCode::InvalidField
        );
        let huge = "A".repeat(MAX_KEY_PACKAGE_BYTES * 2);
        assert_eq!(
            d.key_package(3, huge, None, None).expect_err("refused").0,
            ErrorCode::TooLarge
        );
        // A continuity proof of the wrong form.
        let proof = |key: &str, sig: &str| {
            Some(MlsContinuity {
                previous_key: key.into(),
                signature: sig.into(),
            })
        };
        let sig = "A".repeat(86) + "==";
        for (bad, code) in [
            (proof("ab", &sig), ErrorCode::InvalidField),
            (proof(&"AB".repeat(32), &sig), ErrorCode::InvalidField),
            (proof(&"zz".repeat(32), &sig), ErrorCode::InvalidField),
            (
                proof(&"ab".repeat(32), "not base64!"),
                ErrorCode::InvalidField,
            ),
            (
                proof(&"ab".repeat(32), &"A".repeat(200)),
                ErrorCode::TooLarge,
            ),
        ] {
            assert_eq!(
                d.key_package(3, KP.into(), None, bad.clone())
                    .expect_err("refused")
                    .0,
                code,
                "{bad:?}"
            );
        }
        // Refused input changes nothing.
        assert_eq!(d.epoch(), Some(0));
        assert!(d.is_member(1));
    }

    #[test]
    fn a_continuity_proof_is_relayed_as_sent() {
        let mut d = Delivery::new("m1");
        d.key_package(1, KP.into(), None, None).expect("creator");
        d.member(1, 0, 0).expect("member");
        let proof = MlsContinuity {
            previous_key: "ab".repeat(32),
            signature: "A".repeat(86) + "==",
        };
        d.key_package(2, KP.into(), Some(1), Some(proof.clone()))
            .expect("accepted");
        match d.pending(policy()) {
            ServerMsg::MlsPending { joiners, .. } => {
                assert_eq!(joiners.len(), 1);
                assert_eq!(joiners[0].admitted_by.as_deref(), Some("p1"));
                assert_eq!(joiners[0].continuity, Some(proof));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn creator_leaving_hands_creation_to_the_next_waiting_client() {
        let mut d = Delivery::new("m1");
        let out = d.key_package(1, KP.into(), None, None).expect("accepted");
        assert_eq!(out.len(), 1);
        d.key_package(2, KP.into(), None, None).expect("accepted");
        d.key_package(3, KP.into(), None, None).expect("accepted");
        let out = d.left(1);
        assert_eq!(
            out,
            vec![Out::To(
                2,
                ServerMsg::MlsCreateGroup {
                    group_id: "m1/2".into()
                }
            )]
        );
        d.member(2, 0, 0).expect("accepted");
        assert!(d.is_member(2));
        let ServerMsg::MlsPending { joiners, .. } = d.pending(policy()) else {
            panic!()
        };
        assert_eq!(joiners.len(), 1);
        assert_eq!(joiners[0].participant_id, "p3");
    }

    #[test]
    fn last_member_leaving_forgets_the_group() {
        let mut d = Delivery::new("m1");
        create(&mut d, 1);
        d.commit(1, 0, "QQ==".into(), None, vec![])
            .expect("accepted");
        assert_eq!(d.left(1), vec![]);
        assert_eq!(d.epoch(), None);
        // The next client starts a fresh group under a new id.
        let out = d.key_package(2, KP.into(), None, None).expect("accepted");
        assert_eq!(
            out,
            vec![Out::To(
                2,
                ServerMsg::MlsCreateGroup {
                    group_id: "m1/2".into()
                }
            )]
        );
    }

    #[test]
    fn leaf_claims_are_relayed_once() {
        let mut d = Delivery::new("m1");
        let out = d.key_package(1, KP.into(), None, None).expect("accepted");
        assert_eq!(out.len(), 1);
        assert_eq!(
            d.member(1, 0, 0).expect("accepted"),
            vec![Out::Leaf(1, Some(0))]
        );
        assert_eq!(d.member(1, 0, 0).expect("accepted"), vec![]);
        assert_eq!(
            d.member(1, 3, 0).expect("accepted"),
            vec![Out::Leaf(1, Some(3))]
        );
    }
}
