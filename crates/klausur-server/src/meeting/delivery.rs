//! The MLS delivery service of one meeting: orders handshake messages, relays Welcomes, and
//! follows the group's public state to check who holds which leaf.
//!
//! The server is never a member of a meeting's MLS group and holds no key of it. Key packages,
//! Welcomes and chat are opaque bytes here (checked only to be base64 of a bounded size). The
//! group's *public* state is not: commits are MLS `PublicMessage`s, and the service follows
//! them with a [`PublicTree`] (openmls' `PublicGroup`), started from the `GroupInfo` the
//! creator sends. What it decides:
//!
//! - The first client whose key package arrives while no group exists is asked to create the
//!   group (`mls_create_group`); if it leaves first, the next waiting client is asked.
//! - Every other client with a key package waits in the pending list, which members receive
//!   with every change (`mls_pending`). Only a member's client can add a joiner, by a commit.
//!   A key package is at most [`MAX_KEY_PACKAGE_BYTES`], one per participant is pending (a
//!   later one replaces it), and a participant may send [`KEY_PACKAGE_BURST`] at once and one
//!   more every [`KEY_PACKAGE_REFILL`]; more are refused (`rate_limited`). So no participant
//!   can make the list, or the `mls_pending` every member receives, grow.
//! - **Leaf claims** (`mls_member`). A participant's participant entry names the leaf it
//!   holds (`leaf`) and the user id of that leaf's credential (`credential_user_id`) only
//!   after the service checked, against the public tree: the claim is signed by the device key
//!   of that leaf over the group id, epoch, leaf and the participant's id; the leaf's
//!   credential is of who the participant is ([`Identity`]: the account, the invitation, or,
//!   for a lobby guest, a guest credential); and no other participant holds that leaf. Claims
//!   whose leaf a commit empties or gives another key are withdrawn.
//! - Exactly one commit wins per epoch: the first that names the current epoch, verifies
//!   against the public tree (a member's commit of this group and epoch, signed by the leaf
//!   its sender claims), and removes no leaf that a participant in the meeting holds. It goes
//!   to every other member in arrival order; its Welcome goes to the joiners it names that are
//!   pending and whose key packages it adds, who from then on receive every later commit.
//!   Every other commit for that epoch loses.
//! - A joiner admitted from the lobby is added by the admitting moderator's client only. If that
//!   moderator leaves first, the joiner is no longer tied to them, and any moderator can admit
//!   them to the group ([`Delivery::readmit`]), so nobody waits for keys forever.
//! - A commit the server accepted but most of the other members cannot process (what the
//!   server cannot check: a credential the CA did not sign, path secrets that do not decrypt)
//!   would freeze the group: the server would wait for commits of an epoch no honest client
//!   reaches. Members report such a commit (`mls_commit_rejected`); when more than half of
//!   those who were members before it do, the latest commit is voided: the epoch and the public
//!   tree go back, and its maker and the joiners it welcomed are told to start over
//!   (`mls_reset`). A minority cannot void an honest commit, nor block the voiding of a bad one.
//! - Chat is end-to-end encrypted: MLS application messages (`mls_chat`) go to every other
//!   member, but only if they were made in the current epoch; one of an older epoch is refused
//!   (the author encrypts it again), so no member ever needs keys of a past epoch for it and the
//!   order of commits and chat is the same for everyone.
//! - When the last member leaves, the group is forgotten; the next joiner creates a new one
//!   (under a new group id). Nothing survives the meeting: the state lives in the meeting actor.
//!
//! What the service cannot check: a credential's CA signature (members verify it; the
//! service reads user ids from the tree as they stand), and what a member's client does with
//! the group's secrets. Clients never take a leaf claim as the only reason to remove a member
//! (docs/e2ee.md, "Leaf claims").
//!
//! The module is sans-IO: each input returns the messages to send ([`Out`]), which the meeting
//! actor delivers; time is an argument. See docs/e2ee.md for the whole protocol and
//! docs/protocol.md for messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use klausur_e2ee::{Credential, ParticipantKind as CredentialKind, PublicTree, TreeSnapshot};
use klausur_proto::{
    ErrorCode, MlsContinuity, MlsJoiner, MlsPolicy, ParticipantKind, ServerMsg,
    MAX_CHAT_MESSAGE_CHARS,
};
use klausur_room::PeerId;
use klausur_store::BanSubject;

use crate::meeting::ids::participant_id;
use crate::meeting::signaling_error::Refusal;

/// Largest key package accepted, in bytes. A KeyPackage with its credential is about 420 bytes
/// with a short name and 765 with the longest name a credential can carry (80 four-byte
/// characters; measured by klausur-e2ee's `a_key_package_is_under_one_kibibyte`): this leaves
/// room for it more than twice over.
pub const MAX_KEY_PACKAGE_BYTES: usize = 2 * 1024;
/// Key packages a participant may send at once: one when it joins, one after `mls_reset`, and
/// one spare.
pub const KEY_PACKAGE_BURST: u32 = 3;
/// After the burst, one more key package per this long (three a minute).
pub const KEY_PACKAGE_REFILL: Duration = Duration::from_secs(20);
/// Largest commit or Welcome accepted (base64 text, within the signaling message limit).
pub const MAX_HANDSHAKE_CHARS: usize = 900 * 1024;
/// Largest `group_info` accepted (base64 text). A new group's GroupInfo with its one-leaf tree
/// is about 1 KiB.
pub const MAX_GROUP_INFO_CHARS: usize = 16 * 1024;
/// A leaf claim's signature: Ed25519, 64 bytes, 88 characters of base64.
const SIGNATURE_CHARS: usize = 88;

/// A participant's verified leaf claim, as its participant entry shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafClaim {
    pub leaf: u32,
    /// The user id of the credential in that leaf (`credential_user_id`).
    pub credential_user_id: String,
}

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
    /// A participant's verified leaf claim changed: update its participant entry for everyone.
    Leaf(PeerId, Option<LeafClaim>),
}

/// Who a participant is, as the server admitted them: the identity credential its leaf must
/// carry. Built from what the meeting knows of the participant ([`Identity::of`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Exactly this user id and kind: `user:<id>` for staff, `invitation:<id>` for an invitee
    /// (kind `invited_guest`) or a telephone caller (kind `phone_gateway`).
    Named {
        user_id: String,
        kind: CredentialKind,
    },
    /// A lobby guest: kind `guest`, a `guest:` user id (random, chosen by the CA when it issued
    /// the credential; the server does not learn which before the claim).
    Guest,
}

impl Identity {
    /// The identity of a participant of `kind` with account `user_id` or invitation (in
    /// `ban_subject`), as the identity CA issues credentials (identity.rs); `None` if the facts
    /// do not fit together (then no leaf is theirs).
    pub fn of(
        kind: ParticipantKind,
        user_id: Option<i64>,
        ban_subject: Option<BanSubject>,
    ) -> Option<Identity> {
        match (kind, user_id, ban_subject) {
            (ParticipantKind::Staff, Some(id), _) => Some(Identity::Named {
                user_id: format!("user:{id}"),
                kind: CredentialKind::Staff,
            }),
            (ParticipantKind::InvitedGuest, None, Some(BanSubject::Invitation(id))) => {
                Some(Identity::Named {
                    user_id: format!("invitation:{id}"),
                    kind: CredentialKind::InvitedGuest,
                })
            }
            (ParticipantKind::PhoneGateway, None, Some(BanSubject::Invitation(id))) => {
                Some(Identity::Named {
                    user_id: format!("invitation:{id}"),
                    kind: CredentialKind::PhoneGateway,
                })
            }
            (ParticipantKind::Guest, None, None) => Some(Identity::Guest),
            _ => None,
        }
    }

    /// Whether `c` is this participant's credential.
    fn holds(&self, c: &Credential) -> bool {
        match self {
            Identity::Named { user_id, kind } => c.user_id == *user_id && c.kind == *kind,
            Identity::Guest => c.kind == CredentialKind::Guest && c.user_id.starts_with("guest:"),
        }
    }
}

/// `mls_member` as the actor passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberClaim {
    pub leaf: u32,
    pub epoch: u64,
    /// Base64 Ed25519 signature by the leaf's device key (klausur_e2ee::leaf_claim_payload).
    pub signature: String,
    /// The creator's GroupInfo (base64), for a new group.
    pub group_info: Option<String>,
}

struct Pending {
    key_package: String,
    admitted_by: Option<PeerId>,
    continuity: Option<MlsContinuity>,
}

/// A verified leaf claim and the device key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Claim {
    leaf: u32,
    device_key: [u8; 32],
    user_id: String,
}

impl Claim {
    fn shown(&self) -> LeafClaim {
        LeafClaim {
            leaf: self.leaf,
            credential_user_id: self.user_id.clone(),
        }
    }
}

/// Key packages a participant may still send now, refilled over time.
struct Budget {
    tokens: u32,
    /// When the last token was refilled (or the budget started).
    since: Instant,
}

struct Group {
    epoch: u64,
    /// Participants that receive commits: the creator and everyone a Welcome was relayed to.
    members: BTreeSet<PeerId>,
    /// The latest accepted commit, until the next one: it can still be voided.
    last: Option<LastCommit>,
    /// The group's public state, as of `epoch`.
    tree: PublicTree,
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
    /// The public tree before it.
    before: TreeSnapshot,
}

/// The delivery service state of one meeting.
pub struct Delivery {
    meeting_id: String,
    generation: u32,
    group: Option<Group>,
    creator: Option<PeerId>,
    pending: BTreeMap<PeerId, Pending>,
    claims: BTreeMap<PeerId, Claim>,
    budgets: BTreeMap<PeerId, Budget>,
}

fn check_base64(field: &str, text: &str, max_chars: usize) -> Result<Vec<u8>, Refusal> {
    if text.len() > max_chars {
        return Err(Refusal(
            ErrorCode::TooLarge,
            format!("{field} is longer than {max_chars} characters"),
        ));
    }
    match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        Ok(_) => Err(Refusal(
            ErrorCode::InvalidField,
            format!("{field} is empty"),
        )),
        Err(e) => Err(Refusal(
            ErrorCode::InvalidField,
            format!("{field} is not standard base64: {e}"),
        )),
    }
}

/// A commit refused for what it is: the reason, and the result its maker waits for.
fn commit_refused(peer: PeerId, epoch: u64, code: ErrorCode, message: String) -> Vec<Out> {
    vec![
        Out::To(peer, Refusal(code, message).into()),
        Out::To(
            peer,
            ServerMsg::MlsCommitResult {
                epoch,
                accepted: false,
            },
        ),
    ]
}

impl Delivery {
    pub fn new(meeting_id: &str) -> Self {
        Delivery {
            meeting_id: meeting_id.to_string(),
            generation: 0,
            group: None,
            creator: None,
            pending: BTreeMap::new(),
            claims: BTreeMap::new(),
            budgets: BTreeMap::new(),
        }
    }

    /// The current epoch, if a group exists.
    pub fn epoch(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.epoch)
    }

    fn group_id(&self) -> String {
        format!("{}/{}", self.meeting_id, self.generation)
    }

    /// The current group's id and epoch, if a group exists.
    pub fn group(&self) -> Option<(String, u64)> {
        self.group.as_ref().map(|g| (self.group_id(), g.epoch))
    }

    /// Whether `peer` receives the group's commits.
    pub fn is_member(&self, peer: PeerId) -> bool {
        self.group
            .as_ref()
            .is_some_and(|g| g.members.contains(&peer))
    }

    /// The leaf `peer` holds, as verified.
    pub fn claimed_leaf(&self, peer: PeerId) -> Option<u32> {
        self.claims.get(&peer).map(|c| c.leaf)
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
                group_id: self.group_id(),
            },
        )
    }

    /// Takes one key package from `peer`'s budget at `now`, or refuses.
    fn spend_key_package(&mut self, peer: PeerId, now: Instant) -> Result<(), Refusal> {
        let b = self.budgets.entry(peer).or_insert(Budget {
            tokens: KEY_PACKAGE_BURST,
            since: now,
        });
        let elapsed = now.saturating_duration_since(b.since);
        let refills = elapsed.as_nanos() / KEY_PACKAGE_REFILL.as_nanos();
        if refills > 0 {
            let refills = u32::try_from(refills).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(refills).min(KEY_PACKAGE_BURST);
            b.since = if b.tokens == KEY_PACKAGE_BURST {
                now
            } else {
                b.since + KEY_PACKAGE_REFILL * refills
            };
        }
        if b.tokens == 0 {
            return Err(Refusal(
                ErrorCode::RateLimited,
                format!(
                    "too many key packages: {KEY_PACKAGE_BURST} at once, then one every {} s \
                     (a client sends one when it joins and after mls_reset)",
                    KEY_PACKAGE_REFILL.as_secs()
                ),
            ));
        }
        b.tokens -= 1;
        Ok(())
    }

    /// `mls_key_package` from a participant in the meeting room at `now`. `admitted_by` is the
    /// moderator who admitted them from the lobby, if any; `continuity` is relayed as sent
    /// (only its form is checked: members verify the signature).
    pub fn key_package(
        &mut self,
        peer: PeerId,
        key_package: String,
        admitted_by: Option<PeerId>,
        continuity: Option<MlsContinuity>,
        now: Instant,
    ) -> Result<Vec<Out>, Refusal> {
        self.spend_key_package(peer, now)?;
        let bytes = check_base64(
            "key_package",
            &key_package,
            MAX_KEY_PACKAGE_BYTES.div_ceil(3) * 4,
        )?;
        if bytes.len() > MAX_KEY_PACKAGE_BYTES {
            return Err(Refusal(
                ErrorCode::TooLarge,
                format!("key_package is longer than {MAX_KEY_PACKAGE_BYTES} bytes"),
            ));
        }
        if let Some(c) = &continuity {
            let hex_key = c.previous_key.len() == 64
                && c.previous_key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_key {
                return Err(Refusal(
                    ErrorCode::InvalidField,
                    "continuity.previous_key must be 64 lower-case hex digits".into(),
                ));
            }
            // An Ed25519 signature: 64 bytes, 88 characters of base64.
            check_base64("continuity.signature", &c.signature, SIGNATURE_CHARS)?;
        }
        if self.is_member(peer) || self.creator == Some(peer) {
            return Err(Refusal(
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

    /// Checks `peer`'s claim of `claim.leaf` in `tree` for `identity`; the verified claim.
    fn verify_claim(
        &self,
        tree: &PublicTree,
        peer: PeerId,
        claim: &MemberClaim,
        signature: &[u8],
        identity: &Identity,
    ) -> Result<Claim, Refusal> {
        let leaf = claim.leaf;
        let who = tree
            .verify_leaf_claim(leaf, claim.epoch, &participant_id(peer), signature)
            .map_err(|e| Refusal(ErrorCode::Forbidden, format!("leaf claim refused: {e}")))?;
        if !identity.holds(&who.credential) {
            return Err(Refusal(
                ErrorCode::Forbidden,
                format!("leaf claim refused: the credential in leaf {leaf} is not yours"),
            ));
        }
        if let Some((other, _)) = self
            .claims
            .iter()
            .find(|(p, c)| **p != peer && c.leaf == leaf)
        {
            return Err(Refusal(
                ErrorCode::Forbidden,
                format!(
                    "leaf claim refused: {} holds leaf {leaf}",
                    participant_id(*other)
                ),
            ));
        }
        if let Some(mine) = self.claims.get(&peer) {
            if mine.leaf != leaf {
                return Err(Refusal(
                    ErrorCode::InvalidState,
                    format!(
                        "you hold leaf {} (a member's leaf does not move)",
                        mine.leaf
                    ),
                ));
            }
        }
        Ok(Claim {
            leaf,
            device_key: who.device_key,
            user_id: who.credential.user_id,
        })
    }

    /// `mls_member`: `peer`, who is `identity`, holds `claim.leaf` in `claim.epoch`. The
    /// creator of a new group sends its GroupInfo with it. See the module docs, "Leaf claims".
    pub fn member(
        &mut self,
        peer: PeerId,
        claim: MemberClaim,
        identity: &Identity,
    ) -> Result<Vec<Out>, Refusal> {
        let signature = check_base64("signature", &claim.signature, SIGNATURE_CHARS)?;
        let mut out = Vec::new();
        if self.creator == Some(peer) && self.group.is_none() {
            if claim.leaf != 0 || claim.epoch != 0 {
                return Err(Refusal(
                    ErrorCode::InvalidField,
                    "a new group starts with its creator at leaf 0 in epoch 0".into(),
                ));
            }
            let Some(info) = &claim.group_info else {
                return Err(Refusal(
                    ErrorCode::InvalidField,
                    "the creator's mls_member carries the new group's group_info".into(),
                ));
            };
            let info = check_base64("group_info", info, MAX_GROUP_INFO_CHARS)?;
            let tree = PublicTree::from_group_info(&info, self.group_id().as_bytes())
                .map_err(|e| Refusal(ErrorCode::InvalidField, format!("group_info: {e}")))?;
            if tree.epoch() != 0 || tree.leaves() != [0] {
                return Err(Refusal(
                    ErrorCode::InvalidField,
                    "group_info: a new group has its creator alone at leaf 0 in epoch 0".into(),
                ));
            }
            let verified = self.verify_claim(&tree, peer, &claim, &signature, identity)?;
            self.creator = None;
            self.group = Some(Group {
                epoch: 0,
                members: BTreeSet::from([peer]),
                last: None,
                tree,
            });
            if !self.pending.is_empty() {
                out.push(Out::PendingChanged);
            }
            out.push(Out::Leaf(peer, Some(verified.shown())));
            self.claims.insert(peer, verified);
            return Ok(out);
        }
        if !self.is_member(peer) {
            return Err(Refusal(
                ErrorCode::InvalidState,
                "not added to the meeting's group (no Welcome was relayed to you)".into(),
            ));
        }
        if claim.group_info.is_some() {
            return Err(Refusal(
                ErrorCode::InvalidField,
                "group_info comes only with the creator's first claim".into(),
            ));
        }
        let Some(group) = self.group.as_ref() else {
            return Err(Refusal(ErrorCode::InvalidState, "no group".into()));
        };
        let verified = self.verify_claim(&group.tree, peer, &claim, &signature, identity)?;
        if self.claims.get(&peer) != Some(&verified) {
            out.push(Out::Leaf(peer, Some(verified.shown())));
            self.claims.insert(peer, verified);
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
            return Err(Refusal(
                ErrorCode::Forbidden,
                "only members of the meeting's group can commit".into(),
            ));
        }
        let bytes = check_base64("commit", &commit, MAX_HANDSHAKE_CHARS)?;
        if let Some(w) = &welcome {
            check_base64("welcome", w, MAX_HANDSHAKE_CHARS)?;
        } else if !welcome_for.is_empty() {
            return Err(Refusal(
                ErrorCode::InvalidField,
                "welcome_for needs a welcome".into(),
            ));
        }
        let Some(group) = self.group.as_mut() else {
            return Err(Refusal(ErrorCode::InvalidState, "no group".into()));
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
        let Some(own) = self.claims.get(&peer) else {
            return Ok(commit_refused(
                peer,
                epoch,
                ErrorCode::InvalidState,
                "claim your leaf (mls_member) before you commit".into(),
            ));
        };
        let checked = match group.tree.check_commit(&bytes) {
            Ok(c) => c,
            Err(e) => {
                return Ok(commit_refused(
                    peer,
                    epoch,
                    ErrorCode::InvalidField,
                    format!("the commit does not verify against the group: {e}"),
                ))
            }
        };
        if checked.sender != own.leaf {
            return Ok(commit_refused(
                peer,
                epoch,
                ErrorCode::Forbidden,
                format!(
                    "the commit is sent by leaf {}; you hold leaf {}",
                    checked.sender, own.leaf
                ),
            ));
        }
        if let Some((holder, c)) = self
            .claims
            .iter()
            .find(|(p, c)| **p != peer && checked.removed.contains(&c.leaf))
        {
            return Ok(commit_refused(
                peer,
                epoch,
                ErrorCode::Forbidden,
                format!(
                    "the commit removes leaf {}, which {} holds, and they are in the meeting",
                    c.leaf,
                    participant_id(*holder)
                ),
            ));
        }
        // The joiners to welcome: named, pending, and added by this commit.
        let b64 = base64::engine::general_purpose::STANDARD;
        let welcomed: Vec<PeerId> = if welcome.is_some() {
            welcome_for
                .iter()
                .copied()
                .filter(|j| {
                    self.pending.get(j).is_some_and(|p| {
                        b64.decode(&p.key_package)
                            .is_ok_and(|kp| checked.added.contains(&kp))
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let before = group
            .tree
            .snapshot()
            .map_err(|e| Refusal(ErrorCode::Internal, format!("delivery service: {e}")))?;
        group
            .tree
            .merge(checked)
            .map_err(|e| Refusal(ErrorCode::Internal, format!("delivery service: {e}")))?;
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
            before,
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
        // A claim on a leaf the commit gave another key is no longer true. (A claimed leaf is
        // never emptied: such a commit is refused above. A klausur client keeps its device key
        // in every leaf update, so this withdraws only the claim of a client that changed it.)
        let tree = &group.tree;
        let stale: Vec<PeerId> = self
            .claims
            .iter()
            .filter(|(_, c)| {
                tree.leaf(c.leaf)
                    .map_or(true, |now| now.device_key != c.device_key)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in stale {
            if self.claims.remove(&p).is_some() {
                out.push(Out::Leaf(p, None));
            }
        }
        if let Some(welcome) = welcome {
            for joiner in welcomed {
                if self.pending.remove(&joiner).is_some() {
                    group.members.insert(joiner);
                    last.welcomed.push(joiner);
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
        let welcomed_any = !last.welcomed.is_empty();
        group.last = Some(last);
        if welcomed_any {
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
            return Err(Refusal(
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

    /// Voids the latest commit if more than half of its voters rejected it: the group and its
    /// public tree go back to the epoch it was made at, without its maker and the joiners it
    /// welcomed, who are told to start over and lose their leaf claims. The members are still
    /// in that epoch.
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
        let mut out = Vec::new();
        if let Err(e) = group.tree.restore(last.before) {
            // Without the tree the group cannot be followed: forget it, as if everyone left.
            // Every member is told to start over; the next key package starts a new group.
            tracing::error!(meeting = %self.meeting_id, "voiding a commit failed: {e}");
            for p in std::mem::take(&mut group.members) {
                out.push(Out::To(p, ServerMsg::MlsReset { epoch: last.epoch }));
            }
            for (p, _) in std::mem::take(&mut self.claims) {
                out.push(Out::Leaf(p, None));
            }
            self.group = None;
            return out;
        }
        group.epoch = last.epoch;
        for p in std::iter::once(last.committer).chain(last.welcomed) {
            if group.members.remove(&p) {
                out.push(Out::To(p, ServerMsg::MlsReset { epoch: last.epoch }));
                if self.claims.remove(&p).is_some() {
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
            return Err(Refusal(
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
            return Err(Refusal(
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
        self.claims.remove(&peer);
        self.budgets.remove(&peer);
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
    use std::collections::BTreeMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    use klausur_e2ee::{
        CaVerifier, CredentialError, Event, IdentityCa, Member, MemberConfig, SignedCredential,
        SigningKey,
    };

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn unix() -> Duration {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
    }

    fn policy() -> MlsPolicy {
        MlsPolicy {
            staff_direct: false,
            direct_user_ids: vec![],
        }
    }

    /// The identity CA of the tests; `evil` signs credentials no member accepts.
    fn ca(evil: bool) -> IdentityCa {
        IdentityCa::new(SigningKey::from_bytes(&[if evil { 2 } else { 1 }; 32]))
    }

    /// A device of participant `peer` with a credential for `user_id` of `kind` from `ca`.
    /// `strict: false` is a client that accepts any credential (it makes what members refuse).
    fn device(
        peer: PeerId,
        user_id: &str,
        kind: CredentialKind,
        ca: &IdentityCa,
        strict: bool,
    ) -> Member {
        let dev = SigningKey::from_bytes(&[peer as u8 + 10; 32]);
        let t = unix().as_secs();
        let cred = ca
            .issue(
                user_id,
                user_id,
                kind,
                &dev.verifying_key(),
                t - 60,
                t + 3600,
            )
            .expect("issue");
        if strict {
            let verifier = CaVerifier {
                ca_public_key: self::ca(false).public_key(),
            };
            Member::new(cred, dev, verifier, MemberConfig::default()).expect("member")
        } else {
            let any = |_: &SignedCredential, _: Duration| -> Result<(), CredentialError> { Ok(()) };
            Member::new(cred, dev, any, MemberConfig::default()).expect("member")
        }
    }

    /// Participants p1, p2, ... with their devices and their delivery service: staff
    /// `user:<n>` unless given otherwise.
    struct Net {
        d: Delivery,
        devs: BTreeMap<PeerId, Member>,
        ids: BTreeMap<PeerId, Identity>,
        t: Instant,
    }

    impl Net {
        fn new() -> Self {
            Net {
                d: Delivery::new("m1"),
                devs: BTreeMap::new(),
                ids: BTreeMap::new(),
                t: Instant::now(),
            }
        }

        /// p`peer` is staff user `peer` with a device of the real CA.
        fn staff(&mut self, peer: PeerId) {
            let user = format!("user:{peer}");
            self.person(peer, &user, CredentialKind::Staff, true);
        }

        fn person(&mut self, peer: PeerId, user_id: &str, kind: CredentialKind, strict: bool) {
            self.devs
                .insert(peer, device(peer, user_id, kind, &ca(false), strict));
            let id = if kind == CredentialKind::Guest {
                Identity::Guest
            } else {
                Identity::Named {
                    user_id: user_id.into(),
                    kind,
                }
            };
            self.ids.insert(peer, id);
        }

        fn dev(&mut self, peer: PeerId) -> &mut Member {
            self.devs.get_mut(&peer).expect("device")
        }

        fn kp(&mut self, peer: PeerId) -> Result<Vec<Out>, Refusal> {
            let kp = b64(&self.dev(peer).key_package().expect("kp"));
            self.d.key_package(peer, kp, None, None, self.t)
        }

        /// `peer`'s own signed claim of its leaf (with the GroupInfo if `creator`).
        fn claim_of(&mut self, peer: PeerId, creator: bool) -> MemberClaim {
            let dev = self.dev(peer);
            MemberClaim {
                leaf: dev.leaf_index().expect("leaf"),
                epoch: dev.epoch().expect("epoch"),
                signature: b64(&dev.sign_leaf_claim(&participant_id(peer)).expect("claim")),
                group_info: creator.then(|| b64(&dev.group_info().expect("group info"))),
            }
        }

        fn claim(&mut self, peer: PeerId, claim: MemberClaim) -> Result<Vec<Out>, Refusal> {
            let id = self.ids[&peer].clone();
            self.d.member(peer, claim, &id)
        }

        /// `peer` sends its key package, is asked to create the group, does, and claims leaf 0.
        fn create(&mut self, peer: PeerId) {
            let out = self.kp(peer).expect("kp");
            let [Out::To(p, ServerMsg::MlsCreateGroup { group_id })] = &out[..] else {
                panic!("{out:?}")
            };
            assert_eq!(*p, peer);
            let now = unix();
            self.dev(peer)
                .create_group(group_id.as_bytes(), now)
                .expect("create");
            let claim = self.claim_of(peer, true);
            let out = self.claim(peer, claim).expect("creator's claim");
            assert!(out.contains(&Out::Leaf(
                peer,
                Some(LeafClaim {
                    leaf: 0,
                    credential_user_id: self.dev(peer).credential().credential.user_id.clone(),
                })
            )));
        }

        /// Sends `peer`'s commit `c` made at its epoch (Welcome for `welcome_for`); if the
        /// server accepts it, `peer` merges it and every other member's device processes it.
        fn send(
            &mut self,
            peer: PeerId,
            c: klausur_e2ee::CommitOutput,
            welcome_for: Vec<PeerId>,
        ) -> Vec<Out> {
            let epoch = self.dev(peer).epoch().expect("epoch");
            let out = self
                .d
                .commit(
                    peer,
                    epoch,
                    b64(&c.commit),
                    c.welcome.as_deref().map(b64),
                    welcome_for,
                )
                .expect("answered");
            let accepted = out.contains(&Out::To(
                peer,
                ServerMsg::MlsCommitResult {
                    epoch,
                    accepted: true,
                },
            ));
            if accepted {
                self.dev(peer).merge_pending_commit(unix()).expect("merge");
                let others: Vec<PeerId> = self
                    .devs
                    .keys()
                    .copied()
                    .filter(|p| *p != peer && self.d.is_member(*p))
                    .collect();
                for o in others {
                    let dev = self.dev(o);
                    if dev.in_group() && dev.epoch().expect("epoch") == epoch {
                        match dev.process_message(&c.commit, unix()) {
                            Ok(_) | Err(_) => {}
                        }
                    }
                }
            } else {
                self.dev(peer).discard_pending_commit().expect("discard");
            }
            out
        }

        /// `by` adds the pending `joiners`; each joins by the Welcome and claims its leaf.
        fn add(&mut self, by: PeerId, joiners: &[PeerId]) -> Vec<Out> {
            let kps: Vec<Vec<u8>> = joiners
                .iter()
                .map(|j| {
                    let ServerMsg::MlsPending { joiners: list, .. } = self.d.pending(policy())
                    else {
                        unreachable!()
                    };
                    let entry = list
                        .iter()
                        .find(|e| e.participant_id == participant_id(*j))
                        .expect("pending");
                    base64::engine::general_purpose::STANDARD
                        .decode(&entry.key_package)
                        .expect("b64")
                })
                .collect();
            let c = self.dev(by).add(&kps, unix()).expect("add");
            let welcome = c.welcome.clone().expect("welcome");
            let out = self.send(by, c, joiners.to_vec());
            for j in joiners {
                if out
                    .iter()
                    .any(|o| matches!(o, Out::To(p, ServerMsg::MlsWelcome { .. }) if p == j))
                {
                    self.dev(*j)
                        .join_from_welcome(&welcome, unix())
                        .expect("join");
                    let claim = self.claim_of(*j, false);
                    self.claim(*j, claim).expect("joiner's claim");
                }
            }
            out
        }

        /// A leaf update by `peer`, sent.
        fn update(&mut self, peer: PeerId) -> Vec<Out> {
            let c = self.dev(peer).update_own_leaf().expect("update");
            self.send(peer, c, vec![])
        }
    }

    /// A group of p1..=p`n`, all staff (p1 created it and added each later one), at epoch n-1.
    fn group_of(n: PeerId) -> Net {
        let mut net = Net::new();
        for p in 1..=n {
            net.staff(p);
        }
        net.create(1);
        for p in 2..=n {
            net.kp(p).expect("pending");
            net.add(1, &[p]);
        }
        assert_eq!(net.d.epoch(), Some(u64::from(n as u32 - 1)));
        net
    }

    fn result(peer: PeerId, epoch: u64, accepted: bool) -> Out {
        Out::To(peer, ServerMsg::MlsCommitResult { epoch, accepted })
    }

    /// The error code and message of a refused commit.
    fn refusal(out: &[Out]) -> (ErrorCode, String) {
        match out.first() {
            Some(Out::To(_, ServerMsg::Error { code, message })) => (*code, message.clone()),
            other => panic!("not refused: {other:?} ({out:?})"),
        }
    }

    #[test]
    fn first_key_package_creates_the_group_others_wait() {
        let mut net = Net::new();
        net.staff(1);
        net.staff(2);
        net.create(1);
        assert_eq!(net.d.epoch(), Some(0));
        assert_eq!(net.kp(2).expect("kp"), vec![Out::PendingChanged]);
        let ServerMsg::MlsPending { joiners, .. } = net.d.pending(policy()) else {
            panic!("pending")
        };
        assert_eq!(joiners.len(), 1);
        assert_eq!(joiners[0].participant_id, "p2");
        // A pending client is not a member and cannot claim to be one.
        assert!(!net.d.is_member(2));
        let claim = MemberClaim {
            leaf: 1,
            epoch: 1,
            signature: b64(&[0; 64]),
            group_info: None,
        };
        assert_eq!(
            net.claim(2, claim).expect_err("refused").0,
            ErrorCode::InvalidState
        );
    }

    #[test]
    fn the_creator_starts_the_groups_public_state_with_its_group_info() {
        let mut net = Net::new();
        net.staff(1);
        net.kp(1).expect("asked to create");
        net.dev(1).create_group(b"m1/1", unix()).expect("create");
        // Without the GroupInfo, with one of another group, or claiming another leaf: refused,
        // and no group exists.
        let mut no_info = net.claim_of(1, true);
        no_info.group_info = None;
        let mut other_leaf = net.claim_of(1, true);
        other_leaf.leaf = 1;
        let mut other = device(1, "user:1", CredentialKind::Staff, &ca(false), true);
        other.create_group(b"m1/9", unix()).expect("create");
        let mut other_group = net.claim_of(1, true);
        other_group.group_info = Some(b64(&other.group_info().expect("info")));
        for bad in [no_info, other_leaf, other_group] {
            assert_eq!(
                net.claim(1, bad).expect_err("refused").0,
                ErrorCode::InvalidField
            );
        }
        assert_eq!(net.d.epoch(), None);
        // Its own GroupInfo and claim start the group.
        let claim = net.claim_of(1, true);
        net.claim(1, claim).expect("accepted");
        assert_eq!(net.d.epoch(), Some(0));
        assert_eq!(net.d.claimed_leaf(1), Some(0));
        assert!(net.d.is_member(1));
    }

    /// Issue 19: an invited guest announced the organiser's leaf as its own; the server relayed
    /// it, and when the guest left, the others removed the organiser. The server now accepts a
    /// claim only if the leaf's device key signed it for this participant and the leaf's
    /// credential is this participant's.
    #[test]
    fn a_guest_cannot_claim_the_organisers_leaf() {
        let mut net = Net::new();
        net.staff(1);
        net.person(2, "invitation:7", CredentialKind::InvitedGuest, true);
        net.create(1);
        net.kp(2).expect("pending");
        let out = net.add(1, &[2]);
        assert!(out
            .iter()
            .any(|o| matches!(o, Out::To(2, ServerMsg::MlsWelcome { .. }))));
        assert_eq!(net.d.claimed_leaf(2), Some(1));

        // Gina claims leaf 0: with her own signature (for leaf 1, or for leaf 0), and with the
        // organiser's claim copied from the wire.
        let own = net.claim_of(2, false);
        let organisers = net.claim_of(1, false);
        let attempts = [
            MemberClaim {
                leaf: 0,
                ..own.clone()
            },
            MemberClaim {
                leaf: 0,
                signature: organisers.signature.clone(),
                ..own.clone()
            },
        ];
        for bad in attempts {
            let Refusal(code, message) = net.claim(2, bad).expect_err("refused");
            assert_eq!(code, ErrorCode::Forbidden, "{message}");
        }
        assert_eq!(
            net.d.claimed_leaf(1),
            Some(0),
            "the organiser keeps her leaf"
        );
        assert_eq!(net.d.claimed_leaf(2), Some(1));
        // Negative controls: each one's own claim passes (again: no change, nothing sent).
        assert_eq!(net.claim(1, organisers).expect("accepted"), vec![]);
        assert_eq!(net.claim(2, own).expect("accepted"), vec![]);
    }

    #[test]
    fn a_claim_whose_leaf_credential_is_someone_elses_is_refused() {
        let mut net = Net::new();
        net.staff(1);
        net.staff(2);
        net.create(1);
        net.kp(2).expect("pending");
        net.add(1, &[2]);
        // The server knows p2 as user 2; a participant known as user 5 (or as an invitee, or a
        // lobby guest) cannot claim the leaf that holds user 2's credential, though it signs.
        let claim = net.claim_of(2, false);
        for who in [
            Identity::Named {
                user_id: "user:5".into(),
                kind: CredentialKind::Staff,
            },
            Identity::Named {
                user_id: "user:2".into(),
                kind: CredentialKind::PhoneGateway,
            },
            Identity::Guest,
        ] {
            net.d.claims.remove(&2);
            let Refusal(code, message) = net.d.member(2, claim.clone(), &who).expect_err("refused");
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("not yours"), "{message}");
        }
        // Negative control: as user 2 it is accepted.
        assert!(net.claim(2, claim).is_ok());
        assert_eq!(net.d.claimed_leaf(2), Some(1));
        // A guest's claim needs a guest credential.
        assert!(Identity::Guest.holds(
            &device(3, "guest:ab", CredentialKind::Guest, &ca(false), true)
                .credential()
                .credential
        ));
        assert!(!Identity::Guest.holds(
            &device(3, "user:3", CredentialKind::Guest, &ca(false), true)
                .credential()
                .credential
        ));
        assert_eq!(
            Identity::of(
                ParticipantKind::PhoneGateway,
                None,
                Some(BanSubject::Invitation(4))
            ),
            Some(Identity::Named {
                user_id: "invitation:4".into(),
                kind: CredentialKind::PhoneGateway
            })
        );
        assert_eq!(Identity::of(ParticipantKind::Staff, None, None), None);
    }

    #[test]
    fn a_commit_must_come_from_the_senders_leaf_and_remove_no_one_present() {
        let mut net = group_of(3);
        // p2 sends a commit that p1's device made (sender leaf 0): refused.
        let c = net.dev(1).update_own_leaf().expect("update");
        let out = net
            .d
            .commit(2, 2, b64(&c.commit), None, vec![])
            .expect("answered");
        assert_eq!(refusal(&out).0, ErrorCode::Forbidden);
        assert!(out.contains(&result(2, 2, false)));
        net.dev(1).discard_pending_commit().expect("discard");
        // p2 removes the organiser, who is in the meeting and holds leaf 0: refused, epoch
        // stays. (A client's rule never does this; a changed client could.)
        let c = net.dev(2).remove(&[0]).expect("remove");
        let out = net.send(2, c, vec![]);
        let (code, message) = refusal(&out);
        assert_eq!(code, ErrorCode::Forbidden);
        assert!(message.contains("removes leaf 0"), "{message}");
        assert_eq!(net.d.epoch(), Some(2));
        // Negative control: once p3 left, removing its leaf is accepted.
        assert_eq!(net.d.left(3), vec![]);
        let c = net.dev(2).remove(&[2]).expect("remove");
        let out = net.send(2, c, vec![]);
        assert_eq!(out[0], result(2, 2, true));
        assert_eq!(net.d.epoch(), Some(3));
        // Garbage and a commit of another epoch's state do not verify: refused, not relayed.
        let out = net
            .d
            .commit(1, 3, b64(b"not an MLS commit"), None, vec![])
            .expect("answered");
        assert_eq!(refusal(&out).0, ErrorCode::InvalidField);
        assert!(!out.iter().any(|o| matches!(o, Out::Members { .. })));
    }

    #[test]
    fn exactly_one_commit_wins_per_epoch_and_welcome_goes_to_joiners_it_adds() {
        let mut net = Net::new();
        for p in 1..=4 {
            net.staff(p);
        }
        net.create(1);
        net.kp(2).expect("pending");
        net.kp(3).expect("pending");
        // p1 adds p2 but names p2, p3 (pending, not added) and p9 (never pending).
        let kp2 = {
            let ServerMsg::MlsPending { joiners, .. } = net.d.pending(policy()) else {
                unreachable!()
            };
            base64::engine::general_purpose::STANDARD
                .decode(&joiners[0].key_package)
                .expect("b64")
        };
        let c = net.dev(1).add(&[kp2], unix()).expect("add");
        let welcome = c.welcome.clone().expect("welcome");
        let out = net.send(1, c, vec![2, 3, 9]);
        assert_eq!(out[0], result(1, 0, true));
        assert!(out.contains(&Out::To(
            2,
            ServerMsg::MlsWelcome {
                welcome: b64(&welcome),
                epoch: 1
            }
        )));
        assert!(!out.iter().any(|o| matches!(o, Out::To(3 | 9, _))));
        assert!(net.d.is_member(2) && !net.d.is_member(3));
        net.dev(2)
            .join_from_welcome(&welcome, unix())
            .expect("join");
        let claim = net.claim_of(2, false);
        net.claim(2, claim).expect("claim");
        // Two members race for epoch 1: the first wins, the second loses.
        let c1 = net.dev(1).update_own_leaf().expect("update");
        let c2 = net.dev(2).update_own_leaf().expect("update");
        let first = net.send(2, c2, vec![]);
        assert!(first.contains(&Out::Members {
            msg: ServerMsg::MlsCommit {
                epoch: 1,
                commit: {
                    let Out::Members {
                        msg: ServerMsg::MlsCommit { commit, .. },
                        ..
                    } = &first[1]
                    else {
                        panic!("{first:?}")
                    };
                    commit.clone()
                },
                from_id: "p2".into()
            },
            except: Some(2)
        }));
        let second = net
            .d
            .commit(1, 1, b64(&c1.commit), None, vec![])
            .expect("answered");
        assert_eq!(second, vec![result(1, 1, false)]);
        assert_eq!(net.d.epoch(), Some(2));
    }

    #[test]
    fn chat_of_the_current_epoch_goes_to_the_other_members_an_older_one_back_to_its_author() {
        let mut net = group_of(2);
        net.staff(3);
        // p3 waits for a Welcome: not a member, so it may not chat and receives no chat.
        net.kp(3).expect("accepted");
        let d = &mut net.d;
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
        net.update(1);
        let d = &mut net.d;
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
        let Refusal(code, msg) = d.chat(2, 10, 2, "not base64!".into(), 0).expect_err("bad");
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
        let mut net = group_of(2);
        net.staff(3);
        net.staff(4);
        let t = net.t;
        let kp3 = b64(&net.dev(3).key_package().expect("kp"));
        let d = &mut net.d;
        // p3 came in from the lobby, admitted by p2.
        assert_eq!(
            d.key_package(3, kp3, Some(2), None, t).expect("accepted"),
            vec![Out::PendingChanged]
        );
        let admitted_by = |d: &Delivery| match d.pending(policy()) {
            ServerMsg::MlsPending { joiners, .. } => joiners[0].admitted_by.clone(),
            _ => unreachable!(),
        };
        assert_eq!(admitted_by(d), Some("p2".into()));
        // p2 leaves before adding them: p3 is released, and members hear of it.
        assert_eq!(d.left(2), vec![Out::PendingChanged]);
        assert_eq!(admitted_by(d), None);
        // p1 (a moderator, the actor checks that) admits them again; p1's client adds them.
        assert_eq!(
            d.readmit(3, 1).expect("readmitted"),
            vec![Out::PendingChanged]
        );
        assert_eq!(admitted_by(d), Some("p1".into()));
        // Someone who does not wait for the group cannot be readmitted.
        assert_eq!(
            d.readmit(2, 1).expect_err("not pending").0,
            ErrorCode::InvalidState
        );
        // A member leaving who admitted nobody changes nothing for the pending list.
        net.kp(4).expect("accepted");
        net.add(1, &[4]);
        assert_eq!(net.d.left(4), Vec::<Out>::new());
        assert_eq!(admitted_by(&net.d), Some("p1".into()));
    }

    /// p`bad` adds a joiner whose credential no member accepts (its client accepts anything);
    /// the server, which cannot check the CA, accepts the commit.
    fn unacceptable_add(net: &mut Net, bad: PeerId, joiner: PeerId) -> Vec<Out> {
        let user = format!("user:{joiner}");
        net.devs.insert(
            joiner,
            device(joiner, &user, CredentialKind::Staff, &ca(true), true),
        );
        net.ids.insert(
            joiner,
            Identity::Named {
                user_id: user,
                kind: CredentialKind::Staff,
            },
        );
        let kp = net.dev(joiner).key_package().expect("kp");
        let t = net.t;
        net.d
            .key_package(joiner, b64(&kp), None, None, t)
            .expect("pending");
        let c = net.dev(bad).add(&[kp], unix()).expect("add");
        let epoch = net.d.epoch().expect("epoch");
        let out = net
            .d
            .commit(
                bad,
                epoch,
                b64(&c.commit),
                c.welcome.as_deref().map(b64),
                vec![joiner],
            )
            .expect("answered");
        assert_eq!(out[0], result(bad, epoch, true), "{out:?}");
        // The other members cannot process it.
        let others: Vec<PeerId> = net
            .devs
            .keys()
            .copied()
            .filter(|p| *p != bad && *p != joiner)
            .collect();
        for o in others {
            if net.d.is_member(o) {
                let e = net
                    .dev(o)
                    .process_message(&c.commit, unix())
                    .expect_err("refused");
                assert!(
                    matches!(e, klausur_e2ee::E2eeError::CredentialRejected { .. }),
                    "{e}"
                );
            }
        }
        out
    }

    #[test]
    fn a_commit_most_members_cannot_process_is_voided_and_the_tree_goes_back() {
        let mut net = Net::new();
        net.staff(1);
        net.person(2, "user:2", CredentialKind::Staff, false);
        net.staff(3);
        net.staff(4);
        net.create(1);
        for p in 2..=4 {
            net.kp(p).expect("pending");
            net.add(1, &[p]);
        }
        assert_eq!(net.d.epoch(), Some(3));
        // p2 commits an Add of p5 whose credential is not the CA's; the server accepts it.
        unacceptable_add(&mut net, 2, 5);
        assert_eq!(net.d.epoch(), Some(4));
        assert!(net.d.is_member(5));
        let d = &mut net.d;
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
        // The members, still in epoch 3, commit again: the server's public tree went back with
        // them, so their commit verifies (it would not against the voided epoch's tree).
        net.dev(2).discard_pending_commit().ok();
        let out = net.update(4);
        assert_eq!(out[0], result(4, 3, true), "{out:?}");
        // p2 comes back with a new key package (its device reset).
        net.dev(2).reset().expect("reset");
        assert_eq!(net.kp(2).expect("pending"), vec![Out::PendingChanged]);
        // Only the latest commit can be voided, once: a late report changes nothing.
        assert_eq!(net.d.rejected(1, 3).expect("ignored"), vec![]);
        assert_eq!(net.d.epoch(), Some(4));
        // Non-members cannot report.
        assert_eq!(
            net.d.rejected(9, 4).expect_err("refused").0,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn a_minority_cannot_void_an_honest_commit_and_leaving_voters_count_out() {
        let mut net = group_of(5);
        net.update(1);
        let d = &mut net.d;
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
        solo.update(1);
        assert_eq!(solo.d.rejected(1, 0).expect("ignored"), vec![]);
        assert_eq!(solo.d.epoch(), Some(1));
    }

    #[test]
    fn non_members_cannot_commit_and_bad_bytes_are_refused() {
        let mut net = Net::new();
        net.staff(1);
        net.staff(2);
        net.create(1);
        net.kp(2).expect("accepted");
        let t = net.t;
        let d = &mut net.d;
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
            d.key_package(3, "".into(), None, None, t)
                .expect_err("refused")
                .0,
            ErrorCode::InvalidField
        );
        // A continuity proof of the wrong form.
        let proof = |key: &str, sig: &str| {
            Some(MlsContinuity {
                previous_key: key.into(),
                signature: sig.into(),
            })
        };
        let sig = "A".repeat(86) + "==";
        for (i, (bad, code)) in [
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
        ]
        .into_iter()
        .enumerate()
        {
            // Each from another participant: the key package budget is not what is tested.
            assert_eq!(
                d.key_package(10 + i as PeerId, "AAEC".into(), None, bad.clone(), t)
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
    fn key_packages_are_small_and_rare_and_one_is_pending_per_participant() {
        let mut net = Net::new();
        net.staff(1);
        net.create(1);
        let t0 = net.t;
        let d = &mut net.d;
        let bytes = |n: usize| b64(&vec![7u8; n]);
        // Larger than a real key package could be: refused (p2), whatever else it sends.
        let Refusal(code, message) = d
            .key_package(2, bytes(MAX_KEY_PACKAGE_BYTES + 1), None, None, t0)
            .expect_err("too large");
        assert_eq!(code, ErrorCode::TooLarge, "{message}");
        // The largest accepted size passes (the server does not parse key packages).
        assert_eq!(
            d.key_package(3, bytes(MAX_KEY_PACKAGE_BYTES), None, None, t0)
                .expect("accepted"),
            vec![Out::PendingChanged]
        );
        // p4 sends key packages as fast as it can: three pass, the fourth is refused, and the
        // pending list still holds one entry of p4 (the latest), not four.
        for i in 0..KEY_PACKAGE_BURST {
            d.key_package(4, bytes(100 + i as usize), None, None, t0)
                .expect("within the burst");
        }
        let Refusal(code, message) = d
            .key_package(4, bytes(50), None, None, t0)
            .expect_err("rate limited");
        assert_eq!(code, ErrorCode::RateLimited);
        assert!(message.contains("too many key packages"), "{message}");
        let pending = |d: &Delivery| match d.pending(policy()) {
            ServerMsg::MlsPending { joiners, .. } => joiners
                .into_iter()
                .map(|j| (j.participant_id, j.key_package.len()))
                .collect::<Vec<_>>(),
            _ => unreachable!(),
        };
        assert_eq!(
            pending(d),
            vec![
                ("p3".to_string(), bytes(MAX_KEY_PACKAGE_BYTES).len()),
                ("p4".to_string(), bytes(102).len())
            ]
        );
        // Negative control: another participant's budget is its own.
        d.key_package(5, bytes(10), None, None, t0)
            .expect("p5 is not limited by p4");
        // One more after the refill time, and not two.
        let t1 = t0 + KEY_PACKAGE_REFILL;
        d.key_package(4, bytes(60), None, None, t1)
            .expect("refilled");
        assert_eq!(
            d.key_package(4, bytes(61), None, None, t1)
                .expect_err("one token only")
                .0,
            ErrorCode::RateLimited
        );
        // After a long pause the burst is back, but never more than the burst.
        let t2 = t1 + KEY_PACKAGE_REFILL * 100;
        for _ in 0..KEY_PACKAGE_BURST {
            d.key_package(4, bytes(62), None, None, t2).expect("burst");
        }
        assert_eq!(
            d.key_package(4, bytes(63), None, None, t2)
                .expect_err("burst spent")
                .0,
            ErrorCode::RateLimited
        );
        // Leaving forgets the budget (a participant id is never used again anyway).
        d.left(4);
        assert!(!d.budgets.contains_key(&4));
    }

    #[test]
    fn a_continuity_proof_is_relayed_as_sent() {
        let mut net = Net::new();
        net.staff(1);
        net.create(1);
        let proof = MlsContinuity {
            previous_key: "ab".repeat(32),
            signature: "A".repeat(86) + "==",
        };
        let t = net.t;
        net.d
            .key_package(2, "AAEC".into(), Some(1), Some(proof.clone()), t)
            .expect("accepted");
        match net.d.pending(policy()) {
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
        let mut net = Net::new();
        for p in 1..=3 {
            net.staff(p);
        }
        let out = net.kp(1).expect("accepted");
        assert_eq!(out.len(), 1);
        net.kp(2).expect("accepted");
        net.kp(3).expect("accepted");
        let out = net.d.left(1);
        assert_eq!(
            out,
            vec![Out::To(
                2,
                ServerMsg::MlsCreateGroup {
                    group_id: "m1/2".into()
                }
            )]
        );
        net.dev(2).create_group(b"m1/2", unix()).expect("create");
        let claim = net.claim_of(2, true);
        net.claim(2, claim).expect("accepted");
        assert!(net.d.is_member(2));
        let ServerMsg::MlsPending { joiners, .. } = net.d.pending(policy()) else {
            panic!()
        };
        assert_eq!(joiners.len(), 1);
        assert_eq!(joiners[0].participant_id, "p3");
    }

    #[test]
    fn last_member_leaving_forgets_the_group() {
        let mut net = group_of(1);
        net.staff(2);
        net.update(1);
        assert_eq!(net.d.left(1), vec![]);
        assert_eq!(net.d.epoch(), None);
        // The next client starts a fresh group under a new id.
        let out = net.kp(2).expect("accepted");
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
    fn a_member_still_processes_what_the_server_accepted() {
        // The server's public tree and the members' groups stay in step over adds, updates and
        // removals: every commit the server accepts, each member processes.
        let mut net = group_of(3);
        net.update(2);
        net.d.left(2);
        let c = net.dev(3).remove(&[1]).expect("remove");
        let out = net.send(3, c, vec![]);
        assert_eq!(out[0], result(3, 3, true));
        let epoch = net.d.epoch().expect("epoch");
        for p in [1, 3] {
            assert_eq!(net.dev(p).epoch().expect("epoch"), epoch);
        }
        let code = net.dev(1).security_code().expect("code");
        assert_eq!(net.dev(3).security_code().expect("code"), code);
        let _ = Event::Ignored;
    }
}
