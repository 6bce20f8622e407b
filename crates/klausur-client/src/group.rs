//! The client rules of klausur's MLS delivery-service protocol (who commits when), for a native
//! member of a meeting's encrypted group, on [`klausur_e2ee::Member`].
//!
//! This is the same rule set the browser runs in `web/src/e2ee/mls.ts` (docs/e2ee.md, "Who
//! commits when"; docs/protocol.md, the `mls_*` messages), so a native client (the dial-in
//! gateway's member for a caller) behaves in the group exactly like a browser: it creates the
//! group when the server asks, adds the joiners the meeting's policy admits, removes the leaves
//! of participants who left and leaves nobody claims, updates its own leaf every 15 minutes,
//! renews its credential before it expires, reports commits it cannot process and starts over
//! when the server voids its epoch. The rules are hand-written because they are klausur's own
//! protocol; the MLS and SFrame work is the [`Member`]'s (openmls, sframe).
//!
//! # Sans-IO contract
//!
//! A [`GroupClient`] never does I/O and never reads a clock: every input takes `now`, the local
//! wall-clock time since the Unix epoch, and everything it wants done comes out of
//! [`GroupClient::poll_output`].
//!
//! | caller does | call | then |
//! |---|---|---|
//! | has a device key and a CA-issued credential for it (asked for at `requested_at`) | [`GroupClient::new`], [`GroupClient::start`] | drain [`GroupClient::poll_output`] |
//! | a server message arrived (any; the `mls_*` ones, `joined` and `participant_*` are used) | [`GroupClient::handle_server`] | drain |
//! | alternatively: knows the whole participant list | [`GroupClient::set_participants`] | drain |
//! | [`GroupEvent::RenewCredential`] came out | fetches a credential for the same device key, [`GroupClient::set_renewed_credential`] | drain |
//! | [`GroupClient::poll_timeout`] passed | [`GroupClient::handle_timeout`] | drain |
//! | has a media frame to send / received one | [`GroupClient::encrypt_frame`] / [`GroupClient::decrypt_frame`] | |
//!
//! [`GroupOutput::Send`] goes to the server's WebSocket in order, [`GroupOutput::Event`] to the
//! owner. `poll_timeout` is only ever in the future of the last input (or `None`); calling
//! [`GroupClient::handle_timeout`] earlier or more often is harmless.
//!
//! # The rules (a port of mls.ts)
//!
//! - **Start.** The key package goes out (`mls_key_package`, no continuity proof). On
//!   `mls_create_group` the client creates the group (leaf 0, epoch 0), on `mls_welcome` it
//!   joins; either way it answers `mls_member` with its leaf and epoch, signed by its device
//!   key for its participant id ([`Member::sign_leaf_claim`]), and as the creator with the
//!   group's `GroupInfo` ([`Member::group_info`]), from which the server follows the group.
//! - **Adds.** A joiner from `mls_pending` is added only if its key package verifies
//!   ([`Member::verify_key_package`]: MLS-valid, credential signed by the identity CA and valid,
//!   bound to the leaf's key) and the policy admits its credential directly (its user id is on
//!   `direct_user_ids`, or `staff_direct` holds and it is a staff credential). A joiner that
//!   another moderator admitted from the lobby (`admitted_by` set) and the policy does not admit
//!   is left to that moderator's client. All acceptable joiners go into one commit. Refused
//!   joiners are reported once ([`GroupEvent::Refused`]).
//! - **Removals.** When a participant that claimed leaf L leaves the server's list, L is removed
//!   only if the claim was valid ([`valid_claim`]): L's credential names the participant's
//!   `credential_user_id` and kind, and the same device still holds L. A claim on someone
//!   else's leaf is flagged ([`VerificationFlag::Mismatch`]) and removes nothing, whatever the
//!   server relays: a participant cannot get another member removed by claiming its leaf and
//!   leaving. A roster leaf that no participant validly claims for [`UNCLAIMED_GRACE`] is removed, so a
//!   member that really left goes.
//! - **Order.** Removals come first, then adds, then a credential renewal, then a due leaf
//!   update. A member waits rank x [`RANK_DELAY`] before a removal or an add (rank = position of
//!   its own leaf among the leaves that remain, ascending), so normally only one commits. One own
//!   commit is in flight at a time; without a result after [`COMMIT_TIMEOUT`] it is dropped. A
//!   commit that lost the epoch is discarded and the winner processed; everything is evaluated
//!   again after each epoch change. A loss whose winner has not arrived holds further commits
//!   for [`COMMIT_TIMEOUT`].
//! - **Freshness.** The own leaf is updated every [`klausur_e2ee::LEAF_UPDATE_INTERVAL`]
//!   (15 minutes). [`RENEW_BEFORE`] the own credential expires, the owner is asked for a renewed
//!   one ([`GroupEvent::RenewCredential`], again every [`RENEW_RETRY`] until it arrives); it is
//!   committed as an update of the own leaf.
//! - **Rejections.** A winning commit (`mls_commit`) that does not verify or apply changes
//!   nothing, raises [`WarningCode::CommitRejected`] and is reported (`mls_commit_rejected`).
//! - **Reset.** On `mls_reset` (the server voided the commit this client made or joined by) the
//!   client forgets the group ([`Member::reset`]: the device key and credential stay), raises
//!   [`WarningCode::GroupReset`] and sends a new key package; the members remove its old leaf
//!   and add it again.
//! - **The identity CA's clock.** The client learns the CA's clock from its own credential
//!   (`not_before` is the CA's time of issue minus [`CREDENTIAL_BACKDATE`]) against the local
//!   time the credential was asked for. If the local clock is off by more than
//!   [`CLOCK_TOLERANCE`], every time the client works with is corrected by that offset
//!   ([`WarningCode::ClockSkew`]); credential windows and frame-key timers run on the corrected
//!   clock ([`GroupClient::ca_time`]). Measured that way the corrected clock can only run ahead
//!   of the CA's, so a server that holds the answer back makes expiry checks stricter.
//!
//! # What this client leaves out, and why
//!
//! - **Lobby admission and continuity.** A native client has no user who could click "admit",
//!   so it admits nobody from the lobby, keeps no list of guests it vouched for and adds no
//!   returning guest on a continuity proof. A joiner whose `admitted_by` names this client is
//!   not added on the strength of that (this client cannot have admitted anyone): unless the
//!   policy admits them directly, they are refused with
//!   [`RefusalReason::NotAdmittedByYou`]. Its own key package carries no continuity proof (a
//!   dial-in credential names an invitation, which the policy admits directly).
//! - **Chat.** The client has no chat: it never sends `mls_chat` and ignores `mls_chat` and
//!   `mls_chat_result`. Application messages do not change the group's state (commits and
//!   frame keys do not depend on them), so skipping them keeps the client in step with the group
//!   without decrypting text nobody reads.
//!
//! Two small departures from mls.ts, both for a long-running process: the notes of refused
//! joiners are kept only while the joiner waits (memory stays bounded), and a `mls_reset` that
//! reaches the client while it waits (its Welcome failed) is answered with a fresh key package
//! too, so it is not stranded.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use klausur_e2ee::{
    Credential, DecryptedFrame, E2eeError, EpochChange, Event as MemberEvent, Member, RosterEntry,
    SignedCredential, StreamId, LEAF_UPDATE_INTERVAL,
};
use klausur_proto::{ClientMsg, MlsJoiner, MlsPolicy, Participant, ParticipantId, ServerMsg};

mod view;

pub use view::{valid_claim, OutsiderView, RosterView, Verification, VerificationFlag};

/// Grace before a participant the server announces but who is not in the group is flagged.
pub const GRACE: Duration = Duration::from_secs(10);
/// Grace before a leaf no participant validly claims is flagged and removed. Longer than
/// [`GRACE`]: a joiner's claim needs its Welcome processed, the claim signed and checked by the
/// server, and the participant update delivered, which on a loaded server (or a gateway on
/// another host) took more than 10 s; removing the leaf meanwhile threw a newcomer out again.
pub const UNCLAIMED_GRACE: Duration = Duration::from_secs(30);
/// A member of rank r waits r times this before committing a removal or an add.
pub const RANK_DELAY: Duration = Duration::from_secs(1);
/// An own commit without a result after this long is dropped; also the hold after a lost
/// commit and the pause after a commit that could not be made.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// Ask for a renewed credential this long before the current one expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(10 * 60);
/// Ask again after this long if no renewed credential arrived.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// The identity CA dates a credential back by this much from its time of issue
/// (`CLOCK_SKEW_SECS` in klausur-server's identity module).
pub const CREDENTIAL_BACKDATE: Duration = Duration::from_secs(60);
/// A local clock within this of the CA's is used as it is.
pub const CLOCK_TOLERANCE: Duration = Duration::from_secs(30);
/// How many warnings [`GroupClient::warnings`] keeps.
pub const MAX_WARNINGS: usize = 10;
/// When a leaf update should be due but the member does not say so yet, look again this much
/// later (a safety net; normally the leaf update time is known exactly).
const RECHECK: Duration = Duration::from_secs(1);
/// Timers that fire when `now - since > limit` are due this much after `since + limit`.
const TICK: Duration = Duration::from_millis(1);

/// Where the client stands in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Created, [`GroupClient::start`] not called yet.
    Starting,
    /// The key package was sent; not (yet, or again) a member of the group.
    Waiting,
    /// A member: frames are encrypted with the group's keys.
    Active,
    /// Removed from the group by a member's commit; no keys any more.
    Removed,
    /// Cannot take part (no key package could be made, the group state could not be reset).
    Failed,
}

/// Kinds of [`Warning`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WarningCode {
    /// A commit from the delivery service failed to verify or apply; nothing changed, and the
    /// server was told (`mls_commit_rejected`).
    CommitRejected,
    /// A Welcome failed to verify; this client did not join.
    WelcomeRejected,
    /// An own commit could not be made or applied.
    CommitFailed,
    /// The group could not be created.
    CreateFailed,
    /// The device could not start or go on (key package, reset).
    StartFailed,
    /// This device's clock differs from the identity CA's; the CA's time is used.
    ClockSkew,
    /// The server voided this client's last epoch (the others could not process it): the
    /// client left the group state behind and waits to be added again.
    GroupReset,
}

/// A warning for logs and diagnostics (English detail; no personal data beyond what the
/// credentials in the group carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub code: WarningCode,
    pub detail: String,
    /// When it was raised (the CA-corrected clock, since the Unix epoch).
    pub at: Duration,
}

/// Why a waiting joiner was not added by this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The key package or its credential does not verify (not signed by the CA, expired, ...).
    Credential,
    /// The meeting's policy does not admit them directly, and no moderator did.
    Policy,
    /// The server says this client's participant admitted them from the lobby; it admits
    /// nobody (see the module docs).
    NotAdmittedByYou,
}

/// What the owner hears about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// This client became a member: it created the group (`created`) or joined by a Welcome.
    Joined {
        epoch: u64,
        created: bool,
        security_code: String,
    },
    /// The group moved to a new epoch (an own commit or another member's): new frame keys and a
    /// new security code. `added` and `removed` name members by their credentials.
    EpochChanged {
        epoch: u64,
        /// Leaf index of the member who committed.
        committer: u32,
        added: Vec<RosterEntry>,
        removed: Vec<RosterEntry>,
        security_code: String,
    },
    /// This client was removed from the group by `by` (the committer, if it was in the roster);
    /// all frame keys are gone. Final.
    Removed { by: Option<RosterEntry> },
    /// The own credential expires within [`RENEW_BEFORE`]: fetch a new one for this device key
    /// (same identity) and pass it to [`GroupClient::set_renewed_credential`]. Repeated every
    /// [`RENEW_RETRY`] until one arrives.
    RenewCredential { device_key: [u8; 32] },
    /// A waiting joiner this client will not add (reported once per joiner, key package and
    /// reason). `display_name` is the credential's if it verified, else the server's.
    Refused {
        participant_id: ParticipantId,
        display_name: Option<String>,
        reason: RefusalReason,
        detail: String,
    },
    /// Something went wrong or is worth knowing (see [`WarningCode`]).
    Warning(Warning),
    /// The group's roster changed (joined, members added or removed, removed, reset): see
    /// [`GroupClient::roster`] and [`GroupClient::verification`].
    RosterChanged,
}

/// One output of [`GroupClient::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOutput {
    /// A message for the server, in order.
    Send(ClientMsg),
    /// An event for the owner.
    Event(GroupEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CommitKind {
    Add,
    Remove,
    Update,
    Renew,
}

enum Planned {
    Add {
        key_packages: Vec<Vec<u8>>,
        welcome_for: Vec<ParticipantId>,
    },
    Remove(Vec<u32>),
    Update,
    Renew(SignedCredential),
}

impl Planned {
    fn kind(&self) -> CommitKind {
        match self {
            Planned::Add { .. } => CommitKind::Add,
            Planned::Remove(_) => CommitKind::Remove,
            Planned::Update => CommitKind::Update,
            Planned::Renew(_) => CommitKind::Renew,
        }
    }
}

/// An own commit until the server's result.
struct Inflight {
    epoch: u64,
    kind: CommitKind,
    sent_at: Duration,
}

/// The outcome of checking one joiner's key package: the verified credential and the key
/// package's bytes, or why not.
type Verified = Result<(Credential, Vec<u8>), String>;

/// One device's MLS client for one meeting visit. See the module docs.
pub struct GroupClient {
    member: Member,
    phase: Phase,
    self_id: Option<ParticipantId>,
    participants: Vec<Participant>,
    /// Participant id -> its most recent leaf claim (to remove that leaf when it leaves, if the
    /// claim is valid).
    last_claims: HashMap<ParticipantId, Participant>,
    /// Our `mls_member` waits for our participant id (a member before `joined` was seen):
    /// whether we created the group.
    claim_due: Option<bool>,
    /// Leaf -> device key of the member at that leaf when its participant left the server.
    departed: HashMap<u32, [u8; 32]>,
    joiners: Vec<MlsJoiner>,
    policy: MlsPolicy,
    /// Key package (base64, as the server sent it) -> the verification outcome; kept for the
    /// current `mls_pending` list only (it depends on time).
    verified: HashMap<String, Verified>,
    /// (participant id, key package, reason) of refusals already reported.
    refused_notified: HashSet<(ParticipantId, String, RefusalReason)>,
    inflight: Option<Inflight>,
    /// Since when a commit is wanted (the rank delay counts from here).
    need_since: Option<Duration>,
    /// When the wanted commit may go out (for [`GroupClient::poll_timeout`]).
    next_commit_at: Option<Duration>,
    roster: Vec<RosterEntry>,
    /// Roster leaf -> since when no server participant claims it.
    unclaimed_since: HashMap<u32, Duration>,
    /// Server participant id -> since when it is not in the roster.
    outsider_since: HashMap<ParticipantId, Duration>,
    warnings: VecDeque<Warning>,
    renewal: Option<SignedCredential>,
    renew_asked_at: Option<Duration>,
    /// Milliseconds to add to the local clock for the identity CA's time.
    clock_offset_ms: i64,
    /// No own commit before this time (after a lost commit whose winner has not arrived).
    hold_until: Duration,
    /// When the own leaf was last refreshed (joined, or an own commit merged: every own commit
    /// carries a path), to know when the next leaf update is due.
    leaf_refreshed_at: Option<Duration>,
    /// The CA-corrected time of the last input.
    now: Duration,
    out: VecDeque<GroupOutput>,
}

impl std::fmt::Debug for GroupClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupClient")
            .field("phase", &self.phase)
            .field("self_id", &self.self_id)
            .field("epoch", &self.epoch())
            .field("roster_len", &self.roster.len())
            .finish_non_exhaustive()
    }
}

fn shift(t: Duration, offset_ms: i64) -> Duration {
    let by = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 {
        t.saturating_add(by)
    } else {
        t.saturating_sub(by)
    }
}

fn err_text(e: &E2eeError) -> String {
    e.to_string()
}

impl GroupClient {
    /// A client for `member` (this device's key and CA-issued credential, verifying others
    /// against the CA). Nothing is sent before [`Self::start`].
    pub fn new(member: Member) -> Self {
        Self {
            member,
            phase: Phase::Starting,
            self_id: None,
            participants: Vec::new(),
            last_claims: HashMap::new(),
            claim_due: None,
            departed: HashMap::new(),
            joiners: Vec::new(),
            policy: MlsPolicy {
                staff_direct: false,
                direct_user_ids: Vec::new(),
            },
            verified: HashMap::new(),
            refused_notified: HashSet::new(),
            inflight: None,
            need_since: None,
            next_commit_at: None,
            roster: Vec::new(),
            unclaimed_since: HashMap::new(),
            outsider_since: HashMap::new(),
            warnings: VecDeque::new(),
            renewal: None,
            renew_asked_at: None,
            clock_offset_ms: 0,
            hold_until: Duration::ZERO,
            leaf_refreshed_at: None,
            now: Duration::ZERO,
            out: VecDeque::new(),
        }
    }

    // --- inputs ----------------------------------------------------------------------------

    /// Sends the key package. Call once, after the meeting room was joined (`joined`).
    /// `credential_requested_at` is the local time the credential was asked for (to learn the
    /// identity CA's clock, see the module docs); `now` the local time.
    pub fn start(&mut self, credential_requested_at: Duration, now: Duration) {
        if self.phase != Phase::Starting {
            return;
        }
        self.now = self.at(now);
        self.set_clock(credential_requested_at, now);
        if self.member.in_group() {
            self.phase = Phase::Failed;
            self.warn(
                WarningCode::StartFailed,
                "the member is already in a group".into(),
            );
            return;
        }
        self.phase = Phase::Waiting;
        self.send_key_package();
        self.evaluate();
    }

    /// One message from the server. Returns whether this client used it: the `mls_*` messages
    /// (`mls_chat` and `mls_chat_result` are ignored, see the module docs, but count as used)
    /// and `joined`, `participant_joined`, `participant_updated`, `participant_left`, which
    /// keep the participant list (the same as [`Self::set_participants`]).
    pub fn handle_server(&mut self, msg: &ServerMsg, now: Duration) -> bool {
        self.input(now);
        match msg {
            ServerMsg::Joined {
                self_id,
                participants,
                ..
            } => {
                self.self_id = Some(self_id.clone());
                self.apply_participants(participants.clone());
                self.send_claim_if_due();
            }
            ServerMsg::ParticipantJoined { participant }
            | ServerMsg::ParticipantUpdated { participant } => {
                let mut list = self.participants.clone();
                match list.iter_mut().find(|p| p.id == participant.id) {
                    Some(p) => *p = participant.clone(),
                    None => list.push(participant.clone()),
                }
                self.apply_participants(list);
            }
            ServerMsg::ParticipantLeft { participant_id, .. } => {
                let list = self
                    .participants
                    .iter()
                    .filter(|p| &p.id != participant_id)
                    .cloned()
                    .collect();
                self.apply_participants(list);
            }
            ServerMsg::MlsCreateGroup { group_id } => self.on_create_group(group_id),
            ServerMsg::MlsWelcome { welcome, .. } => self.on_welcome(welcome),
            ServerMsg::MlsPending { joiners, policy } => {
                self.joiners = joiners.clone();
                self.policy = policy.clone();
                // Verification results depend on time; keep them for the current list only.
                self.verified
                    .retain(|kp, _| joiners.iter().any(|j| &j.key_package == kp));
                self.refused_notified.retain(|(pid, kp, _)| {
                    joiners
                        .iter()
                        .any(|j| &j.participant_id == pid && &j.key_package == kp)
                });
            }
            ServerMsg::MlsCommit { epoch, commit, .. } => self.on_commit(*epoch, commit),
            ServerMsg::MlsCommitResult { epoch, accepted } => {
                self.on_commit_result(*epoch, *accepted)
            }
            ServerMsg::MlsReset { epoch } => self.on_reset(*epoch),
            ServerMsg::MlsChat { .. } | ServerMsg::MlsChatResult { .. } => {}
            _ => return false,
        }
        self.evaluate();
        true
    }

    /// The server's whole participant list (everyone in the meeting room, self included) and
    /// this client's participant id. An alternative to passing `joined` and `participant_*`
    /// to [`Self::handle_server`]; both may be used, the latest word counts.
    pub fn set_participants(&mut self, self_id: &str, participants: &[Participant], now: Duration) {
        self.input(now);
        self.self_id = Some(self_id.to_string());
        self.apply_participants(participants.to_vec());
        self.send_claim_if_due();
        self.evaluate();
    }

    /// A renewed credential for the same device key, user, name and kind (after
    /// [`GroupEvent::RenewCredential`]). Committed as an update of the own leaf; one that
    /// cannot be used raises [`WarningCode::CommitFailed`] and is asked for again.
    pub fn set_renewed_credential(&mut self, credential: SignedCredential, now: Duration) {
        self.input(now);
        self.renewal = Some(credential);
        self.evaluate();
    }

    /// Timers: rank delays, the commit timeout, grace periods, leaf updates, credential
    /// renewal, old frame keys. Due at [`Self::poll_timeout`]; harmless at any other time.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.input(now);
        self.evaluate();
    }

    // --- outputs ---------------------------------------------------------------------------

    /// The next output, in order; `None` when there is nothing more until the next input.
    pub fn poll_output(&mut self) -> Option<GroupOutput> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] is due next (local time since the Unix epoch), or `None`
    /// if nothing is timed. Always later than the last input's `now`.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.in_group() {
            return None;
        }
        let now = self.now;
        let mut next: Option<Duration> = None;
        let mut consider = |t: Duration| {
            if t > now && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        if let Some(t) = self.member.poll_timeout() {
            consider(t);
        }
        match &self.inflight {
            Some(f) => consider(f.sent_at + COMMIT_TIMEOUT + TICK),
            None => {
                if let Some(t) = self.next_commit_at {
                    consider(t);
                }
            }
        }
        for since in self.unclaimed_since.values() {
            consider(*since + UNCLAIMED_GRACE + TICK);
        }
        if let Some(t) = self.leaf_refreshed_at {
            let due = t + LEAF_UPDATE_INTERVAL;
            if due > now {
                consider(due);
            } else if !self.member.leaf_update_due(now) {
                consider(now + RECHECK);
            }
        }
        if self.renewal.is_none() {
            let expires = Duration::from_secs(self.member.credential().credential.not_after);
            let mut ask = expires.saturating_sub(RENEW_BEFORE);
            if let Some(asked) = self.renew_asked_at {
                ask = ask.max(asked + RENEW_RETRY);
            }
            consider(ask);
        }
        next.map(|t| shift(t, -self.clock_offset_ms))
    }

    // --- state on demand -------------------------------------------------------------------

    /// Where the client stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether this client is a member of the group now (frames can be encrypted).
    pub fn in_group(&self) -> bool {
        self.phase == Phase::Active && self.member.in_group()
    }

    /// The current epoch, while a member.
    pub fn epoch(&self) -> Option<u64> {
        self.in_group().then(|| self.member.epoch().ok()).flatten()
    }

    /// The own leaf index, while a member.
    pub fn own_leaf(&self) -> Option<u32> {
        self.in_group()
            .then(|| self.member.leaf_index().ok())
            .flatten()
    }

    /// The security code of the current epoch, while a member.
    pub fn security_code(&self) -> Option<String> {
        self.in_group()
            .then(|| self.member.security_code().ok())
            .flatten()
    }

    /// The group's members with their verified credentials, by leaf index (empty while not a
    /// member).
    pub fn roster(&self) -> &[RosterEntry] {
        &self.roster
    }

    /// This client's participant id, once known.
    pub fn self_id(&self) -> Option<&str> {
        self.self_id.as_deref()
    }

    /// The server's participant list as last seen.
    pub fn participants(&self) -> &[Participant] {
        &self.participants
    }

    /// The last [`MAX_WARNINGS`] warnings, oldest first.
    pub fn warnings(&self) -> impl Iterator<Item = &Warning> {
        self.warnings.iter()
    }

    /// The difference between the identity CA's clock and the local one, in milliseconds
    /// (positive: the local clock is behind). 0 within [`CLOCK_TOLERANCE`].
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
    }

    /// The time this client works with for a local time: corrected to the identity CA's
    /// clock. Pass every time given to the [`Member`] directly (e.g. to
    /// [`Member::decrypt_frame`] through [`Self::member_mut`]) through this.
    pub fn ca_time(&self, local: Duration) -> Duration {
        self.at(local)
    }

    /// The device's MLS member.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The device's MLS member, e.g. for frame encryption. Do not add, remove, commit, merge
    /// or reset through it: the rules here keep the group in step only if they make every
    /// change.
    pub fn member_mut(&mut self) -> &mut Member {
        &mut self.member
    }

    /// Encrypts one media frame of `stream` with the current epoch's keys (fails while not a
    /// member: there is no plaintext path).
    pub fn encrypt_frame(
        &mut self,
        stream: StreamId,
        clear_header: &[u8],
        payload: &[u8],
    ) -> Result<Vec<u8>, E2eeError> {
        self.member.encrypt_frame(stream, clear_header, payload)
    }

    /// Decrypts one media frame received at local time `now`.
    pub fn decrypt_frame(
        &mut self,
        frame: &[u8],
        now: Duration,
    ) -> Result<DecryptedFrame, E2eeError> {
        let t = self.at(now);
        self.member.decrypt_frame(frame, t)
    }

    /// The participant list matched with the roster, with discrepancy flags (see
    /// [`Verification`]) at local time `now` (the grace periods count from the inputs that
    /// showed a discrepancy first).
    pub fn verification(&self, now: Duration) -> Verification {
        view::verification(self, self.at(now))
    }

    // --- clock -----------------------------------------------------------------------------

    fn at(&self, local: Duration) -> Duration {
        shift(local, self.clock_offset_ms)
    }

    /// Every input: the time, and previous-epoch frame keys whose grace has ended are dropped
    /// (so they never outlive it, whatever the input).
    fn input(&mut self, local_now: Duration) {
        self.now = self.at(local_now);
        if self.member.in_group() {
            self.member.handle_timeout(self.now);
        }
    }

    fn set_clock(&mut self, requested_at: Duration, local_now: Duration) {
        let not_before = i128::from(self.member.credential().credential.not_before);
        let ca_issue_ms = (not_before + CREDENTIAL_BACKDATE.as_secs() as i128) * 1000;
        let offset = ca_issue_ms - requested_at.as_millis() as i128;
        if offset.unsigned_abs() <= CLOCK_TOLERANCE.as_millis() {
            return;
        }
        let offset = offset.clamp(i128::from(i64::MIN + 1), i128::from(i64::MAX)) as i64;
        self.clock_offset_ms = offset;
        self.now = self.at(local_now);
        let minutes = (offset.unsigned_abs() + 30_000) / 60_000;
        let side = if offset > 0 { "behind" } else { "ahead of" };
        self.warn(
            WarningCode::ClockSkew,
            format!(
                "this device's clock is {minutes} min {side} the identity CA's; using the CA's time"
            ),
        );
    }

    // --- participants ----------------------------------------------------------------------

    fn apply_participants(&mut self, participants: Vec<Participant>) {
        let present: HashSet<&str> = participants.iter().map(|p| p.id.as_str()).collect();
        let gone: Vec<ParticipantId> = self
            .last_claims
            .keys()
            .filter(|id| !present.contains(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            let Some(p) = self.last_claims.remove(&id) else {
                continue;
            };
            let is_self = self.self_id.as_deref() == Some(id.as_str());
            // Only a valid claim makes its leaf go with the participant: the server's word that
            // someone who claimed a leaf left is not enough to remove whoever holds it.
            if let Some(e) = self.roster.iter().find(|e| valid_claim(&p, e)) {
                if !is_self {
                    self.departed
                        .insert(e.leaf_index, e.credential.device_public_key);
                }
            }
        }
        for p in &participants {
            if p.leaf.is_some() {
                self.last_claims.insert(p.id.clone(), p.clone());
            }
        }
        self.participants = participants;
    }

    // --- server messages -------------------------------------------------------------------

    fn send_key_package(&mut self) {
        match self.member.key_package() {
            Ok(kp) => self.send(ClientMsg::MlsKeyPackage {
                key_package: BASE64.encode(kp),
                continuity: None,
            }),
            Err(e) => {
                self.phase = Phase::Failed;
                self.warn(WarningCode::StartFailed, err_text(&e));
            }
        }
    }

    fn on_create_group(&mut self, group_id: &str) {
        if self.member.in_group() || self.phase != Phase::Waiting {
            return;
        }
        if let Err(e) = self.member.create_group(group_id.as_bytes(), self.now) {
            self.warn(WarningCode::CreateFailed, err_text(&e));
            return;
        }
        self.became_member(true);
    }

    fn on_welcome(&mut self, welcome: &str) {
        if self.member.in_group() || self.phase != Phase::Waiting {
            return;
        }
        let joined = match BASE64.decode(welcome) {
            Ok(bytes) => self.member.join_from_welcome(&bytes, self.now),
            Err(e) => Err(E2eeError::PeerInput(format!("Welcome is not base64: {e}"))),
        };
        if let Err(e) = joined {
            // Nothing changed: this client is still waiting (the server may think otherwise).
            self.warn(WarningCode::WelcomeRejected, err_text(&e));
            return;
        }
        self.became_member(false);
    }

    fn became_member(&mut self, created: bool) {
        self.phase = Phase::Active;
        self.leaf_refreshed_at = Some(self.now);
        self.need_since = None;
        self.next_commit_at = None;
        self.refresh_roster();
        let state = (self.member.epoch(), self.member.security_code());
        let (Ok(epoch), Ok(security_code)) = state else {
            self.warn(
                WarningCode::StartFailed,
                "the new group's state cannot be read".into(),
            );
            return;
        };
        self.claim_due = Some(created);
        self.send_claim_if_due();
        self.event(GroupEvent::Joined {
            epoch,
            created,
            security_code,
        });
        self.event(GroupEvent::RosterChanged);
    }

    /// Sends `mls_member` once this client is a member and knows its participant id: the leaf
    /// and epoch, the claim signed for the participant id, and as the creator the GroupInfo.
    fn send_claim_if_due(&mut self) {
        let (Some(created), Some(self_id)) = (self.claim_due, self.self_id.clone()) else {
            return;
        };
        if !self.member.in_group() {
            self.claim_due = None;
            return;
        }
        self.claim_due = None;
        let claim = (|| {
            let leaf = self.member.leaf_index()?;
            let epoch = self.member.epoch()?;
            let signature = BASE64.encode(self.member.sign_leaf_claim(&self_id)?);
            let group_info = if created {
                Some(BASE64.encode(self.member.group_info()?))
            } else {
                None
            };
            Ok::<_, E2eeError>(ClientMsg::MlsMember {
                leaf,
                epoch,
                signature,
                group_info,
            })
        })();
        match claim {
            Ok(msg) => self.send(msg),
            Err(e) => self.warn(
                WarningCode::StartFailed,
                format!("the leaf claim cannot be made: {}", err_text(&e)),
            ),
        }
    }

    fn on_commit(&mut self, epoch: u64, commit: &str) {
        if !self.member.in_group() || self.phase != Phase::Active {
            return;
        }
        if self.inflight.is_some() {
            // Another commit won this epoch: ours is void.
            self.drop_inflight();
        }
        let processed = match BASE64.decode(commit) {
            Ok(bytes) => self.member.process_message(&bytes, self.now),
            Err(e) => Err(E2eeError::PeerInput(format!("commit is not base64: {e}"))),
        };
        match processed {
            Err(e) => {
                // Forged, for another group or epoch, or bringing in an unverifiable credential:
                // nothing was merged; this client stays in its epoch. The server learns it: if
                // most members say so about the commit it accepted, it voids that commit.
                self.warn(WarningCode::CommitRejected, err_text(&e));
                self.send(ClientMsg::MlsCommitRejected { epoch });
            }
            Ok(MemberEvent::EpochChanged(change)) => self.epoch_changed(change),
            Ok(MemberEvent::Removed { by }) => {
                let by = self.roster.iter().find(|e| e.leaf_index == by).cloned();
                self.phase = Phase::Removed;
                self.inflight = None;
                self.refresh_roster();
                self.event(GroupEvent::Removed { by });
                self.event(GroupEvent::RosterChanged);
            }
            // An application message on the commit path, or an echo: nothing to do.
            Ok(MemberEvent::Application { .. }) | Ok(MemberEvent::Ignored) => {}
        }
    }

    fn on_commit_result(&mut self, epoch: u64, accepted: bool) {
        let Some(f) = self.inflight.take_if(|f| f.epoch == epoch) else {
            return;
        };
        if !accepted {
            self.discard();
            // The winning commit normally arrives before this result and clears the hold; if
            // it does not, this client is out of step with the group: retry slowly instead of
            // spinning.
            self.hold_until = self.now + COMMIT_TIMEOUT;
            return;
        }
        if f.kind == CommitKind::Renew {
            self.renewal = None;
            self.renew_asked_at = None;
        }
        match self.member.merge_pending_commit(self.now) {
            Ok(change) => {
                self.leaf_refreshed_at = Some(self.now);
                self.epoch_changed(change);
            }
            Err(e) => self.warn(WarningCode::CommitFailed, err_text(&e)),
        }
    }

    fn on_reset(&mut self, epoch: u64) {
        if self.phase == Phase::Waiting && !self.member.in_group() {
            // The Welcome this client was sent did not work for it, and the server has voided
            // the commit: it is not waiting in the server's list any more, so ask again.
            self.warn(
                WarningCode::GroupReset,
                format!(
                    "the server voided the commit of epoch {epoch} that was to add this client; asking again"
                ),
            );
            self.send_key_package();
            return;
        }
        if !self.member.in_group() || self.phase != Phase::Active {
            return;
        }
        if let Err(e) = self.member.reset() {
            self.phase = Phase::Failed;
            self.warn(
                WarningCode::StartFailed,
                format!("could not leave the voided group state: {}", err_text(&e)),
            );
            return;
        }
        self.inflight = None;
        self.need_since = None;
        self.next_commit_at = None;
        self.leaf_refreshed_at = None;
        self.claim_due = None;
        self.phase = Phase::Waiting;
        self.refresh_roster();
        self.warn(
            WarningCode::GroupReset,
            format!(
                "the server voided the commit of epoch {epoch}: the other members could not process it; joining again"
            ),
        );
        self.event(GroupEvent::RosterChanged);
        self.send_key_package();
    }

    fn epoch_changed(&mut self, change: EpochChange) {
        self.refresh_roster();
        self.need_since = None;
        self.next_commit_at = None;
        self.hold_until = Duration::ZERO;
        for r in &change.removed {
            self.departed.remove(&r.leaf_index);
        }
        let membership = !change.added.is_empty() || !change.removed.is_empty();
        self.event(GroupEvent::EpochChanged {
            epoch: change.epoch,
            committer: change.committer,
            added: change.added,
            removed: change.removed,
            security_code: change.security_code,
        });
        if membership {
            self.event(GroupEvent::RosterChanged);
        }
    }

    fn drop_inflight(&mut self) {
        self.inflight = None;
        self.discard();
    }

    fn discard(&mut self) {
        if let Err(e) = self.member.discard_pending_commit() {
            self.warn(WarningCode::CommitFailed, err_text(&e));
        }
    }

    fn refresh_roster(&mut self) {
        self.roster = if self.member.in_group() {
            self.member.roster().unwrap_or_default()
        } else {
            Vec::new()
        };
        let leaves: BTreeSet<u32> = self.roster.iter().map(|e| e.leaf_index).collect();
        self.unclaimed_since.retain(|leaf, _| leaves.contains(leaf));
        let roster = &self.roster;
        self.departed.retain(|leaf, key| {
            roster
                .iter()
                .any(|e| e.leaf_index == *leaf && &e.credential.device_public_key == key)
        });
    }

    // --- decisions -------------------------------------------------------------------------

    fn verify(&mut self, j: &MlsJoiner) -> Verified {
        if let Some(v) = self.verified.get(&j.key_package) {
            return v.clone();
        }
        let v = match BASE64.decode(&j.key_package) {
            Ok(bytes) => match self.member.verify_key_package(&bytes, self.now) {
                Ok(cred) => Ok((cred, bytes)),
                Err(e) => Err(err_text(&e)),
            },
            Err(e) => Err(format!("the key package is not base64: {e}")),
        };
        self.verified.insert(j.key_package.clone(), v.clone());
        v
    }

    fn refuse(&mut self, j: &MlsJoiner, reason: RefusalReason, detail: String, name: Option<&str>) {
        let key = (j.participant_id.clone(), j.key_package.clone(), reason);
        if !self.refused_notified.insert(key) {
            return;
        }
        let display_name = name.map(str::to_string).or_else(|| {
            self.participants
                .iter()
                .find(|p| p.id == j.participant_id)
                .map(|p| p.display_name.clone())
        });
        self.event(GroupEvent::Refused {
            participant_id: j.participant_id.clone(),
            display_name,
            reason,
            detail,
        });
    }

    /// Whether the meeting's policy admits this verified credential without a moderator.
    fn policy_admits(&self, c: &Credential) -> bool {
        self.policy.direct_user_ids.contains(&c.user_id)
            || (self.policy.staff_direct && c.kind == klausur_e2ee::ParticipantKind::Staff)
    }

    /// Joiners to add now: their key packages and participant ids.
    fn acceptable_joiners(&mut self) -> (Vec<Vec<u8>>, Vec<ParticipantId>) {
        let in_roster: HashSet<[u8; 32]> = self
            .roster
            .iter()
            .map(|e| e.credential.device_public_key)
            .collect();
        let mut seen = HashSet::new();
        let mut key_packages = Vec::new();
        let mut welcome_for = Vec::new();
        for j in self.joiners.clone() {
            let (c, bytes) = match self.verify(&j) {
                Ok(v) => v,
                Err(detail) => {
                    self.refuse(&j, RefusalReason::Credential, detail, None);
                    continue;
                }
            };
            // Already added (the pending list lags behind the commit), or twice in the list.
            if in_roster.contains(&c.device_public_key) || seen.contains(&c.device_public_key) {
                continue;
            }
            if !self.policy_admits(&c) {
                match &j.admitted_by {
                    Some(by) if Some(by.as_str()) == self.self_id.as_deref() => {
                        self.refuse(
                            &j,
                            RefusalReason::NotAdmittedByYou,
                            "the server says this participant admitted them, but this client admits nobody from the lobby".into(),
                            Some(&c.display_name),
                        );
                    }
                    // The admitting moderator's client adds them.
                    Some(_) => {}
                    None => {
                        let detail = format!(
                            "user {} ({}) is not admitted directly by the meeting's policy",
                            c.user_id,
                            view::kind_name(c.kind)
                        );
                        self.refuse(&j, RefusalReason::Policy, detail, Some(&c.display_name));
                    }
                }
                continue;
            }
            seen.insert(c.device_public_key);
            key_packages.push(bytes);
            welcome_for.push(j.participant_id.clone());
        }
        (key_packages, welcome_for)
    }

    /// Roster leaves to remove: participants that left, and leaves nobody claims after grace.
    fn leaves_to_remove(&self, own_leaf: u32) -> Vec<u32> {
        self.roster
            .iter()
            .filter(|e| e.leaf_index != own_leaf)
            .filter(|e| {
                let departed =
                    self.departed.get(&e.leaf_index) == Some(&e.credential.device_public_key);
                let unclaimed = self
                    .unclaimed_since
                    .get(&e.leaf_index)
                    .is_some_and(|since| self.now.saturating_sub(*since) > UNCLAIMED_GRACE);
                departed || unclaimed
            })
            .map(|e| e.leaf_index)
            .collect()
    }

    fn update_claim_timers(&mut self, own_leaf: Option<u32>) {
        // A leaf counts as claimed only by a valid claim: a participant claiming someone
        // else's leaf neither keeps it in the group nor makes it go.
        let claimed: HashSet<u32> = self
            .roster
            .iter()
            .filter(|e| self.participants.iter().any(|p| valid_claim(p, e)))
            .map(|e| e.leaf_index)
            .collect();
        for e in &self.roster {
            if Some(e.leaf_index) == own_leaf || claimed.contains(&e.leaf_index) {
                self.unclaimed_since.remove(&e.leaf_index);
            } else {
                self.unclaimed_since.entry(e.leaf_index).or_insert(self.now);
            }
        }
        let roster_leaves: HashSet<u32> = self.roster.iter().map(|e| e.leaf_index).collect();
        for p in &self.participants {
            let in_roster = Some(p.id.as_str()) == self.self_id.as_deref()
                || p.leaf.is_some_and(|l| roster_leaves.contains(&l));
            if in_roster {
                self.outsider_since.remove(&p.id);
            } else {
                self.outsider_since.entry(p.id.clone()).or_insert(self.now);
            }
        }
        let ids: HashSet<&str> = self.participants.iter().map(|p| p.id.as_str()).collect();
        self.outsider_since
            .retain(|id, _| ids.contains(id.as_str()));
    }

    fn evaluate(&mut self) {
        let active = self.in_group();
        let own_leaf = if active {
            self.member.leaf_index().ok()
        } else {
            None
        };
        self.update_claim_timers(own_leaf);
        let Some(own_leaf) = own_leaf else {
            return;
        };
        if self
            .inflight
            .as_ref()
            .is_some_and(|f| self.now.saturating_sub(f.sent_at) > COMMIT_TIMEOUT)
        {
            self.drop_inflight();
        }
        if self.inflight.is_none() {
            self.plan(own_leaf);
        }
        self.maybe_ask_for_credential();
    }

    fn maybe_ask_for_credential(&mut self) {
        if self.renewal.is_some() {
            return;
        }
        let own = &self.member.credential().credential;
        let expires = Duration::from_secs(own.not_after);
        if expires.saturating_sub(self.now) > RENEW_BEFORE {
            return;
        }
        if self
            .renew_asked_at
            .is_some_and(|t| self.now.saturating_sub(t) < RENEW_RETRY)
        {
            return;
        }
        let device_key = own.device_public_key;
        self.renew_asked_at = Some(self.now);
        self.event(GroupEvent::RenewCredential { device_key });
    }

    /// The rank of `own_leaf` among `leaves` (ascending), times [`RANK_DELAY`].
    fn rank_delay(own_leaf: u32, leaves: impl Iterator<Item = u32>) -> Duration {
        let rank = leaves.filter(|l| *l < own_leaf).count();
        RANK_DELAY.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX))
    }

    fn plan(&mut self, own_leaf: u32) {
        let remove = self.leaves_to_remove(own_leaf);
        let (commit, delay) = if !remove.is_empty() {
            let live = self
                .roster
                .iter()
                .map(|e| e.leaf_index)
                .filter(|l| !remove.contains(l));
            let delay = Self::rank_delay(own_leaf, live);
            (Planned::Remove(remove), delay)
        } else {
            let (key_packages, welcome_for) = self.acceptable_joiners();
            if !key_packages.is_empty() {
                let delay = Self::rank_delay(own_leaf, self.roster.iter().map(|e| e.leaf_index));
                (
                    Planned::Add {
                        key_packages,
                        welcome_for,
                    },
                    delay,
                )
            } else if let Some(c) = self.renewal.clone() {
                (Planned::Renew(c), Duration::ZERO)
            } else if self.member.leaf_update_due(self.now) {
                (Planned::Update, Duration::ZERO)
            } else {
                self.need_since = None;
                self.next_commit_at = None;
                return;
            }
        };
        let since = *self.need_since.get_or_insert(self.now);
        let at = (since + delay).max(self.hold_until);
        if self.now < at {
            self.next_commit_at = Some(at);
            return;
        }
        self.next_commit_at = None;
        self.commit(commit, delay);
    }

    fn commit(&mut self, c: Planned, delay: Duration) {
        let epoch = match self.member.epoch() {
            Ok(e) => e,
            Err(e) => {
                self.warn(WarningCode::CommitFailed, err_text(&e));
                return;
            }
        };
        let kind = c.kind();
        let (made, welcome_for) = match c {
            Planned::Add {
                key_packages,
                welcome_for,
            } => (self.member.add(&key_packages, self.now), welcome_for),
            Planned::Remove(leaves) => (self.member.remove(&leaves), Vec::new()),
            Planned::Renew(cred) => (self.member.renew_credential(cred), Vec::new()),
            Planned::Update => (self.member.update_own_leaf(), Vec::new()),
        };
        let out = match made {
            Ok(out) => out,
            Err(e) => {
                self.warn(WarningCode::CommitFailed, err_text(&e));
                if kind == CommitKind::Renew {
                    // Unusable; asked for again after the retry time.
                    self.renewal = None;
                }
                // Do not retry in a tight loop.
                let retry = self.now + COMMIT_TIMEOUT;
                self.need_since = Some(retry);
                self.next_commit_at = Some(retry + delay);
                return;
            }
        };
        self.inflight = Some(Inflight {
            epoch,
            kind,
            sent_at: self.now,
        });
        let welcome = match out.welcome {
            Some(w) if kind == CommitKind::Add && !welcome_for.is_empty() => Some(BASE64.encode(w)),
            _ => None,
        };
        let welcome_for = if welcome.is_some() {
            welcome_for
        } else {
            Vec::new()
        };
        self.send(ClientMsg::MlsCommit {
            epoch,
            commit: BASE64.encode(out.commit),
            welcome,
            welcome_for,
        });
    }

    // --- helpers ---------------------------------------------------------------------------

    fn send(&mut self, msg: ClientMsg) {
        self.out.push_back(GroupOutput::Send(msg));
    }

    fn event(&mut self, e: GroupEvent) {
        self.out.push_back(GroupOutput::Event(e));
    }

    fn warn(&mut self, code: WarningCode, detail: String) {
        let w = Warning {
            code,
            detail,
            at: self.now,
        };
        self.warnings.push_back(w.clone());
        while self.warnings.len() > MAX_WARNINGS {
            self.warnings.pop_front();
        }
        self.event(GroupEvent::Warning(w));
    }
}
