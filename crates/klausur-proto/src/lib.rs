//! Wire types of the klausur signaling protocol.
//!
//! Every message that crosses the meeting WebSocket is defined here, once. The web client's
//! TypeScript types are generated from these definitions (`cargo test -p klausur-proto
//! --features ts`, see `tests/typescript.rs`); a test fails when `web/src/signaling/protocol.ts`
//! drifts from them.
//!
//! The encoding is JSON. Every message is an object with a `type` field naming its variant
//! (`snake_case`), the variant's fields beside it. Unknown fields are rejected, so a typo in a
//! client surfaces as an error reply instead of silently doing nothing.
//!
//! This crate does no I/O and builds for `wasm32-unknown-unknown`. [`text`] holds the one rule
//! for names and titles that every entry point applies.

use serde::{Deserialize, Serialize};

pub mod text;

/// Largest signaling message the server accepts, in bytes. The largest legitimate message is
/// the browser's SDP offer, which grows by about 4 KiB per participant (two receive m-lines
/// with the browser's full codec list): 1 MiB leaves room for meetings of well over a hundred.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest chat message, in characters. Chat is end-to-end encrypted, so the server cannot
/// check this: clients refuse to send or show a longer one.
pub const MAX_CHAT_CHARS: usize = 2000;
/// Longest encrypted chat message (`mls_chat`'s base64 `message`) the server relays: a
/// [`MAX_CHAT_CHARS`] text of 4-byte characters, its JSON wrapping, padding and the MLS
/// framing and signature fit well within it.
pub const MAX_CHAT_MESSAGE_CHARS: usize = 16 * 1024;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Most m-lines an `offer` may have: its own (at most three) sending m-lines and one receiving
/// m-line per track of a large meeting. The media server allows fewer in a small meeting
/// (klausur-room's `Room::max_m_lines`); every m-line costs it work on each tick of the peer.
pub const MAX_OFFER_M_LINES: usize = 1024;

/// The number of m-lines (lines starting with `m=`) of an SDP.
pub fn count_m_lines(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.trim_start().starts_with("m="))
        .count()
}

/// Version of the protocol spoken on `/api/ws`; sent in [`ServerMsg::Joined`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A participant id, unique within a meeting for the meeting's lifetime (for example `"p3"`).
pub type ParticipantId = String;

/// What a participant is, as shown in the participant list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ParticipantKind {
    /// A logged-in staff member (or administrator) of the city.
    Staff,
    /// Someone who came with a personal invitation for an external guest.
    InvitedGuest,
    /// A guest without invitation who was admitted from the lobby.
    Guest,
    /// A telephone caller, present through the dial-in gateway: the gateway is the member of
    /// the encrypted group; the call between the caller and the gateway is not end-to-end
    /// encrypted (docs/dial-in.md).
    PhoneGateway,
}

/// The telephone leg of a participant who dialled in (see [`ParticipantKind::PhoneGateway`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct PhoneLeg {
    /// The last four digits of the caller's number as the telephone network gave it (the
    /// network's word, not verified); `null` when the number was withheld. Never more digits.
    pub number_suffix: Option<String>,
}

/// How a participant came into the meeting. Shown to everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum JoinMethod {
    /// Logged in as staff and allowed directly by the meeting's profile (organiser,
    /// moderator, a colleague the organiser invited, or any staff in the `internal` profile).
    StaffLogin,
    /// A personal invitation link: `invitee` is the name on the invitation, `invited_by` the
    /// display name of whoever created it.
    Invitation { invitee: String, invited_by: String },
    /// Admitted from the lobby by the named moderator.
    Lobby { admitted_by: String },
}

/// The role of a participant in the meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Moderator,
    Participant,
}

/// A media source of a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Microphone,
    Camera,
    Screen,
}

/// One participant as every member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct Participant {
    pub id: ParticipantId,
    pub display_name: String,
    pub kind: ParticipantKind,
    pub role: Role,
    /// The meeting's organiser: always a moderator, the only one who grants and revokes
    /// moderation, and nobody can remove them.
    #[serde(default)]
    pub organiser: bool,
    pub join_method: JoinMethod,
    /// Microphone muted (by the participant, or by a moderator at the server).
    pub audio_muted: bool,
    /// A moderator muted this participant at the server; the participant cannot unmute.
    pub muted_by_moderator: bool,
    pub video_muted: bool,
    pub screen_sharing: bool,
    /// The participant raised their hand to speak, at this time (milliseconds since the Unix
    /// epoch, the server's clock: earlier hands come first); `null` when the hand is down.
    #[cfg_attr(feature = "ts", ts(type = "number | null"))]
    pub hand_raised_at: Option<u64>,
    /// The MLS leaf index this participant's client holds in the meeting's group (`null` until
    /// it is a member). The server sets it only from a claim signed by that leaf's device key
    /// whose credential is this participant's (docs/e2ee.md, "Leaf claims"); clients check it
    /// against the group's own roster and flag any mismatch.
    pub leaf: Option<u32>,
    /// The user id of the identity credential in that leaf, as the server checked it against
    /// who this participant is: `user:<id>` (staff), `invitation:<id>` (an invitee, also a
    /// caller), `guest:<random>` (a lobby guest); `null` while `leaf` is. Clients remove a
    /// leaf for a participant who left only if the leaf's credential names this id.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub credential_user_id: Option<String>,
    /// Set for a telephone caller (kind `phone_gateway`): the call's leg, shown with a phone
    /// badge and a banner that this leg is not end-to-end encrypted.
    pub phone: Option<PhoneLeg>,
}

/// Someone waiting in the lobby, as moderators see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct LobbyEntry {
    pub id: ParticipantId,
    pub display_name: String,
    pub kind: ParticipantKind,
    /// The name on the personal invitation they used, if any.
    pub invitation: Option<String>,
    /// Why they wait: `"profile"` (the profile does not admit them directly), `"locked"`
    /// (the meeting is locked), `"removed"` (a moderator removed them earlier).
    pub reason: LobbyReason,
    /// Set for a telephone caller waiting in the lobby.
    pub phone: Option<PhoneLeg>,
}

/// Why someone waits in the lobby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum LobbyReason {
    Profile,
    Locked,
    Removed,
    /// Someone joined with an invitation that a participant in the meeting already uses, from
    /// another browser: a moderator decides whether they take the seat.
    InvitationInUse,
}

/// The meeting's security profile (see docs/security-profiles.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum SecurityProfile {
    /// Only the organiser, moderators and named invitees join directly; everyone else waits
    /// in the lobby. No phone dial-in, no recording.
    #[default]
    Strict,
    /// Additionally every logged-in staff member of the city joins directly.
    Internal,
}

/// A TURN server for the browser's `RTCPeerConnection` (`iceServers`), with credentials for this
/// participant that expire (the TURN REST API scheme, docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
}

/// Meeting facts sent to participants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct MeetingInfo {
    pub id: String,
    pub title: String,
    pub organiser: String,
    pub profile: SecurityProfile,
    pub locked: bool,
    /// Telephone callers can join this meeting: it has a dial-in number and its profile allows
    /// dial-in (the strict profile never does). Shown in the security panel.
    pub dial_in: bool,
    /// The participant a moderator shows large to everyone (a sign-language interpreter, the
    /// speaker): clients put their camera on the stage unless their user chose someone else.
    /// Follows the person through a reconnect; absent while nobody is shown so.
    #[serde(default)]
    #[cfg_attr(feature = "ts", ts(optional = nullable))]
    pub spotlight: Option<ParticipantId>,
}

/// A remote track the server forwards to this client on the transceiver with `mid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct TrackAssignment {
    pub mid: String,
    pub participant_id: ParticipantId,
    pub source: Source,
}

/// Which local transceiver carries which source (sent with every offer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct SendSource {
    pub mid: String,
    pub source: Source,
}

/// A video the client shows on screen, and how large (device pixels, i.e. CSS size times the
/// device pixel ratio), in `video_tiles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct VideoTile {
    pub participant_id: ParticipantId,
    pub source: Source,
    pub width: u32,
    pub height: u32,
}

/// Most tiles one `video_tiles` message may name.
pub const MAX_VIDEO_TILES: usize = 128;

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    Left,
    Removed,
    Disconnected,
}

/// Why the meeting ended for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A moderator ended the meeting for everyone.
    EndedByModerator,
    /// A moderator removed this participant.
    Removed,
    /// A moderator denied entry from the lobby.
    Denied,
    /// The server is shutting down.
    ServerShutdown,
    /// The same person joined again from another tab or device.
    Replaced,
    /// The meeting's lobby is full; nobody decided anything about this participant.
    LobbyFull,
}

/// Messages from the browser to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First message on a connection. Staff are identified by their session cookie; guests by
    /// `invite_token` (personal invitation) or, without one, they go to the lobby and must give
    /// `display_name`.
    Join {
        meeting_id: String,
        invite_token: Option<String>,
        display_name: Option<String>,
        /// The pass from an earlier `joined` of this browser tab (a guest admitted from the
        /// lobby): brings the guest back in without the lobby while it is valid. May be left out.
        rejoin_token: Option<String>,
        /// The dial-in gateway joining for a telephone caller: the ticket the server gave the
        /// gateway for the caller's meeting number and PIN (`POST /api/dialin/calls`). The
        /// participant is the invitee of that PIN, of kind `phone_gateway`. May be left out.
        dial_in_ticket: Option<String>,
    },
    /// An SDP offer from the browser's peer connection. The browser is always the offerer.
    Offer {
        sdp: String,
        sources: Vec<SendSource>,
    },
    /// The participant's own microphone, camera and screen state, for the participant list.
    MediaState {
        audio_muted: bool,
        video_muted: bool,
        screen_sharing: bool,
    },
    /// The videos this client shows and how large. Video it does not list (camera or screen
    /// share) is not forwarded to it at all; audio always is. Sent again whenever the layout
    /// changes; a client that never sends it gets every video. At most [`MAX_VIDEO_TILES`].
    VideoTiles {
        tiles: Vec<VideoTile>,
    },
    /// Moderator: let a waiting person in.
    Admit {
        participant_id: ParticipantId,
    },
    /// Moderator: turn a waiting person away.
    Deny {
        participant_id: ParticipantId,
    },
    /// Moderator: remove a participant; their link or account lands in the lobby afterwards.
    Remove {
        participant_id: ParticipantId,
    },
    /// Moderator: lock or unlock the meeting. While locked, every new arrival waits in the
    /// lobby, even with an invitation.
    Lock {
        locked: bool,
    },
    /// Moderator: show `participant_id`'s camera large to everyone (`None`: nobody any more).
    Spotlight {
        participant_id: Option<ParticipantId>,
    },
    /// Moderator: mute a participant's microphone at the server (their audio is no longer
    /// forwarded until a moderator unmutes them).
    Mute {
        participant_id: ParticipantId,
        muted: bool,
    },
    /// Moderator: make a participant moderator (or take the role away).
    SetModerator {
        participant_id: ParticipantId,
        moderator: bool,
    },
    /// Raise (or lower) the own hand: a request to speak, shown to everyone in order.
    RaiseHand {
        raised: bool,
    },
    /// Moderator: lower someone's raised hand (they got the floor, or the request is done).
    LowerHand {
        participant_id: ParticipantId,
    },
    /// Moderator: end the meeting for everyone.
    EndMeeting,
    /// Leave the meeting.
    Leave,
    Ping,
    /// End-to-end encryption: this client's MLS KeyPackage (base64 of the TLS-encoded
    /// `KeyPackage`), carrying its identity credential. Sent once in the meeting room by a client
    /// that is not yet a group member; a later one replaces the earlier.
    MlsKeyPackage {
        key_package: String,
        /// A guest coming back after a broken connection: the previous device key's signature
        /// over the new one, so that the moderator who admitted them can add them again without
        /// asking (docs/e2ee.md, "Reconnects"). May be left out.
        continuity: Option<MlsContinuity>,
    },
    /// End-to-end encryption: this client is now a group member at `leaf` in `epoch` (after
    /// creating the group as asked by `mls_create_group`, or after processing a Welcome).
    /// `signature` (base64, Ed25519) is the leaf's device key over the group id, `epoch`,
    /// `leaf` and this client's participant id (docs/e2ee.md, "Leaf claims"); the server
    /// accepts the claim only if it verifies under the key of that leaf in the group's tree
    /// and the leaf's credential is this participant's. The creator of a group also sends the
    /// group's `GroupInfo` with its ratchet tree (`group_info`, base64 `MLSMessage`), from
    /// which the server starts following the group's public state; everyone else leaves it
    /// out.
    MlsMember {
        leaf: u32,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        signature: String,
        #[serde(default)]
        #[cfg_attr(feature = "ts", ts(optional = nullable))]
        group_info: Option<String>,
    },
    /// End-to-end encryption: a commit made by this member at `epoch` (base64 `MLSMessage`).
    /// `welcome` (base64) goes to the participants in `welcome_for`, whose key packages the
    /// commit adds. The server accepts exactly one commit per epoch and answers with
    /// `mls_commit_result`.
    MlsCommit {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        commit: String,
        welcome: Option<String>,
        welcome_for: Vec<ParticipantId>,
    },
    /// End-to-end encryption: this member could not process the commit that won `epoch` (it
    /// failed to verify or to apply) and stays in `epoch`. When most of the other members say so,
    /// the server voids that commit (docs/e2ee.md, "Recovery").
    MlsCommitRejected {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
    },
    /// End-to-end encrypted chat: an MLS application message made by this member at `epoch`
    /// (base64 `MLSMessage`; docs/e2ee.md, "Chat"). The server relays it to the other members
    /// only if `epoch` is the group's current epoch, so every member can still decrypt it, and
    /// answers with `mls_chat_result` carrying the client's `id`.
    MlsChat {
        id: u32,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        message: String,
    },
}

/// A client waiting to be added to the meeting's MLS group, as members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct MlsJoiner {
    pub participant_id: ParticipantId,
    /// The joiner's KeyPackage (base64 of the TLS-encoded `KeyPackage`).
    pub key_package: String,
    /// The moderator (participant id) who admitted this joiner from the lobby, if any. Only that
    /// moderator's client adds such a joiner, and only if it remembers admitting them.
    pub admitted_by: Option<ParticipantId>,
    /// The joiner's proof that it holds the device key of an earlier member (see
    /// `mls_key_package`), relayed as the joiner sent it.
    pub continuity: Option<MlsContinuity>,
}

/// A device key vouching for its successor: `signature` (base64, Ed25519) by `previous_key`
/// (hex, 32 bytes) over the new device key and the meeting id (docs/e2ee.md, "Reconnects").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct MlsContinuity {
    pub previous_key: String,
    pub signature: String,
}

/// The facts a member's client needs to decide whether to add a joiner without a moderator:
/// whom the meeting's profile admits directly. The server's word; clients combine it with the
/// credential the identity CA signed (see docs/e2ee.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(deny_unknown_fields)]
pub struct MlsPolicy {
    /// Every staff credential is admitted directly (profile `internal`).
    pub staff_direct: bool,
    /// Credential user ids admitted directly: `user:<id>` for the organiser, moderators and
    /// invited colleagues, `invitation:<id>` for each valid personal invitation.
    pub direct_user_ids: Vec<String>,
}

/// Messages from the server to the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMsg {
    /// You are in the meeting.
    Joined {
        protocol_version: u32,
        self_id: ParticipantId,
        meeting: MeetingInfo,
        participants: Vec<Participant>,
        /// Only for moderators; empty for everyone else.
        lobby: Vec<LobbyEntry>,
        /// For a guest admitted from the lobby: the pass that brings this browser tab back in
        /// (`join`'s `rejoin_token`) after a broken connection or a restart of the server, until
        /// the guest leaves, the meeting empties, or two minutes after a connection broke.
        rejoin_token: Option<String>,
        /// TURN servers the browser may use for its media connection (empty without `[turn]`).
        #[serde(default)]
        ice_servers: Vec<IceServer>,
    },
    /// You wait in the lobby until a moderator admits you.
    LobbyWait {
        meeting_title: String,
    },
    ParticipantJoined {
        participant: Participant,
    },
    ParticipantUpdated {
        participant: Participant,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    /// Moderators only: who waits in the lobby now. `arrived` is true when someone new came.
    LobbyChanged {
        lobby: Vec<LobbyEntry>,
        arrived: bool,
    },
    MeetingChanged {
        meeting: MeetingInfo,
    },
    /// The answer to the last offer, and which remote track arrives on which `mid`.
    Answer {
        sdp: String,
        tracks: Vec<TrackAssignment>,
    },
    /// The forwarded tracks changed: send a new offer with at least `audio` receive-only audio
    /// transceivers and `video` receive-only video transceivers.
    Renegotiate {
        audio: u32,
        video: u32,
    },
    /// The media server no longer has this participant's media connection (its media worker
    /// was restarted, or the connection failed on the server's side): leave and join again
    /// with a new one, at once, instead of waiting for the browser to notice.
    MediaLost,
    /// The participant who speaks loudest now (or `null` in silence).
    ActiveSpeaker {
        participant_id: Option<ParticipantId>,
    },
    /// To a participant who came in with an invitation: someone else joined with the same
    /// invitation from another browser and waits in the lobby; a moderator decides whether
    /// they take this participant's place.
    InvitationContested,
    /// Answer to `join` on a node of a cluster that does not run this meeting: open the
    /// WebSocket at `url` (the base URL of the node that runs it, on the same site; the
    /// socket is `<url>/api/ws`) and send the same `join` there. Nothing else is sent on this
    /// connection. See docs/cluster.md.
    Redirect {
        url: String,
    },
    /// The server this meeting runs on is being taken out of service (an operator stopped it
    /// for maintenance and let running meetings finish first): it stops when its meetings have
    /// ended, at the latest in `in_ms` milliseconds. Then the meeting ends here with
    /// `server_shutdown` and the clients join again (on another node of a cluster, or on this
    /// server after its restart), as a new encrypted group. Sent to everyone in the meeting and
    /// the lobby when it begins, and to everyone who arrives afterwards.
    Maintenance {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        in_ms: u64,
    },
    /// The meeting is over for you; the connection closes after this.
    Ended {
        reason: EndReason,
        by: Option<String>,
    },
    Pong,
    /// The last message could not be processed. The connection stays open.
    Error {
        code: ErrorCode,
        message: String,
    },
    /// End-to-end encryption: no group exists yet; create one with this id and answer with
    /// `mls_member` (leaf 0, epoch 0).
    MlsCreateGroup {
        group_id: String,
    },
    /// End-to-end encryption, to members: the clients waiting to be added (the whole current
    /// list; empty when nobody waits) and the policy to judge them by.
    MlsPending {
        joiners: Vec<MlsJoiner>,
        policy: MlsPolicy,
    },
    /// End-to-end encryption, to members: the commit that won `epoch`; process it.
    MlsCommit {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        commit: String,
        from_id: ParticipantId,
    },
    /// End-to-end encryption, to a committer: whether its commit for `epoch` won. If not,
    /// discard it; the winning commit arrives as `mls_commit`.
    MlsCommitResult {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        accepted: bool,
    },
    /// End-to-end encryption, to a joiner: the Welcome that adds it (base64 `MLSMessage`,
    /// with the ratchet tree); it joins the group in `epoch`.
    MlsWelcome {
        welcome: String,
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
    },
    /// End-to-end encryption, to the maker of a voided commit and the joiners it welcomed: most
    /// members could not process the commit that won `epoch`, so the group is back in `epoch`
    /// without you. Forget the group (keep the device key) and send a new key package.
    MlsReset {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
    },
    /// End-to-end encrypted chat, to members: a member's MLS application message for `epoch`
    /// (base64 `MLSMessage`). The author and its name come from the decrypted message's MLS
    /// sender and credential; `from_id` is only the server's word, checked against them.
    MlsChat {
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        epoch: u64,
        message: String,
        from_id: ParticipantId,
        /// When the server relayed it, milliseconds since the Unix epoch.
        #[cfg_attr(feature = "ts", ts(type = "number"))]
        sent_at_ms: i64,
    },
    /// End-to-end encrypted chat, to the author: whether `mls_chat` `id` was relayed. Not
    /// relayed when its epoch is no longer the group's: encrypt it again in the new epoch.
    MlsChatResult {
        id: u32,
        accepted: bool,
    },
}

/// Stable error codes of [`ServerMsg::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not valid JSON, or not an object of a known shape.
    Malformed,
    /// A `type` that the server does not know.
    UnknownType,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// More messages than the rate limit allows; the message was dropped.
    RateLimited,
    /// Not allowed for this participant (for example a moderator action by a participant).
    Forbidden,
    /// The message needs a joined participant.
    NotJoined,
    /// The message does not fit the current state (for example a second `join`).
    InvalidState,
    /// The meeting, participant or invitation does not exist (or is no longer valid).
    NotFound,
    /// A field has an invalid value (empty name, over-long chat, bad SDP).
    InvalidField,
    /// The server cannot save right now (its storage is full or read-only); nothing was
    /// changed, trying again later is safe.
    StorageUnavailable,
    /// The server cannot reach its database right now (it is down or restarting); nothing was
    /// changed, trying again in a moment is safe.
    DatabaseUnavailable,
    /// In a cluster of nodes: the meeting cannot be placed right now (the nodes' shared Redis
    /// cannot be reached, or the meeting is still moving from a node that failed); nothing
    /// was changed, trying again in a few seconds is safe.
    ClusterUnavailable,
    /// Something failed inside the server; the message was not applied.
    Internal,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Why a text frame could not be decoded into a [`ClientMsg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "offer",
    "media_state",
    "video_tiles",
    "admit",
    "deny",
    "remove",
    "lock",
    "spotlight",
    "mute",
    "set_moderator",
    "raise_hand",
    "lower_hand",
    "end_meeting",
    "leave",
    "ping",
    "mls_key_package",
    "mls_member",
    "mls_commit",
    "mls_commit_rejected",
    "mls_chat",
];

impl ClientMsg {
    /// Decodes one text frame, telling apart oversized, malformed and unknown messages.
    pub fn decode(text: &str) -> Result<ClientMsg, DecodeError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError {
                code: ErrorCode::TooLarge,
                message: format!(
                    "message of {} bytes exceeds the limit of {MAX_MESSAGE_BYTES} bytes",
                    text.len()
                ),
            });
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| DecodeError {
            code: ErrorCode::Malformed,
            message: format!("not valid JSON: {e}"),
        })?;
        let Some(obj) = value.as_object() else {
            return Err(DecodeError {
                code: ErrorCode::Malformed,
                message: "a message must be a JSON object".into(),
            });
        };
        let Some(ty) = obj.get("type").and_then(|t| t.as_str()) else {
            return Err(DecodeError {
                code: ErrorCode::Malformed,
                message: "a message needs a string field \"type\"".into(),
            });
        };
        if !CLIENT_TYPES.contains(&ty) {
            return Err(DecodeError {
                code: ErrorCode::UnknownType,
                message: format!("unknown message type {:?}", truncate(ty, 40)),
            });
        }
        let msg: ClientMsg = serde_json::from_value(value.clone()).map_err(|e| DecodeError {
            code: ErrorCode::Malformed,
            message: format!("invalid {ty:?} message: {e}"),
        })?;
        if let ClientMsg::VideoTiles { tiles } = &msg {
            if tiles.len() > MAX_VIDEO_TILES {
                return Err(DecodeError {
                    code: ErrorCode::InvalidField,
                    message: format!(
                        "video_tiles names {} tiles; at most {MAX_VIDEO_TILES} are accepted",
                        tiles.len()
                    ),
                });
            }
        }
        if let ClientMsg::Offer { sdp, .. } = &msg {
            let m_lines = count_m_lines(sdp);
            if m_lines > MAX_OFFER_M_LINES {
                return Err(DecodeError {
                    code: ErrorCode::InvalidField,
                    message: format!(
                        "the offer has {m_lines} m-lines; at most {MAX_OFFER_M_LINES} are accepted"
                    ),
                });
            }
        }
        Ok(msg)
    }

    /// The wire name of this message's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMsg::Join { .. } => "join",
            ClientMsg::Offer { .. } => "offer",
            ClientMsg::MediaState { .. } => "media_state",
            ClientMsg::VideoTiles { .. } => "video_tiles",
            ClientMsg::Admit { .. } => "admit",
            ClientMsg::Deny { .. } => "deny",
            ClientMsg::Remove { .. } => "remove",
            ClientMsg::Lock { .. } => "lock",
            ClientMsg::Spotlight { .. } => "spotlight",
            ClientMsg::Mute { .. } => "mute",
            ClientMsg::SetModerator { .. } => "set_moderator",
            ClientMsg::RaiseHand { .. } => "raise_hand",
            ClientMsg::LowerHand { .. } => "lower_hand",
            ClientMsg::EndMeeting => "end_meeting",
            ClientMsg::Leave => "leave",
            ClientMsg::Ping => "ping",
            ClientMsg::MlsKeyPackage { .. } => "mls_key_package",
            ClientMsg::MlsMember { .. } => "mls_member",
            ClientMsg::MlsCommit { .. } => "mls_commit",
            ClientMsg::MlsCommitRejected { .. } => "mls_commit_rejected",
            ClientMsg::MlsChat { .. } => "mls_chat",
        }
    }
}

impl ServerMsg {
    /// Encodes the message as a JSON text frame.
    pub fn encode(&self) -> String {
        // Serializing these plain data types cannot fail; fall back to an error message
        // rather than panicking if it ever did.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"encoding failed"}"#.to_string()
        })
    }

    /// Shorthand for an error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_tiles_are_decoded_and_too_many_are_refused() {
        let tiles = |n: usize| {
            let tile = serde_json::json!({
                "participant_id": "7", "source": "camera", "width": 640, "height": 360,
            });
            serde_json::json!({ "type": "video_tiles", "tiles": vec![tile; n] }).to_string()
        };
        match ClientMsg::decode(&tiles(MAX_VIDEO_TILES)) {
            Ok(ClientMsg::VideoTiles { tiles }) => {
                assert_eq!(tiles.len(), MAX_VIDEO_TILES);
                assert_eq!(tiles[0].height, 360);
            }
            other => panic!("{other:?}"),
        }
        let err = ClientMsg::decode(&tiles(MAX_VIDEO_TILES + 1)).expect_err("refused");
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert!(err.message.contains("129 tiles"), "{}", err.message);
        let err = ClientMsg::decode(r#"{"type":"video_tiles","tiles":[{"participant_id":"7","source":"camera","width":-1,"height":0}]}"#)
            .expect_err("a negative width is refused");
        assert_eq!(err.code, ErrorCode::Malformed);
    }

    #[test]
    fn an_offer_with_too_many_m_lines_is_refused_with_the_count() {
        let offer = |m_lines: usize| {
            serde_json::json!({
                "type": "offer",
                "sdp": format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:x\r\n".repeat(m_lines)),
                "sources": [],
            })
            .to_string()
        };
        let err = ClientMsg::decode(&offer(MAX_OFFER_M_LINES + 1)).expect_err("refused");
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert!(
            err.message
                .contains(&format!("{} m-lines", MAX_OFFER_M_LINES + 1)),
            "{}",
            err.message
        );
        // The counterpart: a large meeting's offer passes the edge.
        assert!(matches!(
            ClientMsg::decode(&offer(MAX_OFFER_M_LINES)),
            Ok(ClientMsg::Offer { .. })
        ));
    }

    #[test]
    fn decodes_join() {
        let m = ClientMsg::decode(
            r#"{"type":"join","meeting_id":"m1","invite_token":null,"display_name":"Ada"}"#,
        )
        .expect("valid join");
        assert_eq!(
            m,
            ClientMsg::Join {
                meeting_id: "m1".into(),
                invite_token: None,
                display_name: Some("Ada".into()),
                rejoin_token: None,
                dial_in_ticket: None,
            }
        );
        assert_eq!(m.type_name(), "join");
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let m = ClientMsg::decode(r#"{"type":"join","meeting_id":"m1"}"#).expect("valid join");
        assert!(matches!(
            m,
            ClientMsg::Join {
                invite_token: None,
                ..
            }
        ));
    }

    #[test]
    fn rejects_bad_input_with_stable_codes() {
        let cases = [
            ("not json", ErrorCode::Malformed),
            ("[1,2]", ErrorCode::Malformed),
            (r#"{"no_type":1}"#, ErrorCode::Malformed),
            (r#"{"type":"launch_missiles"}"#, ErrorCode::UnknownType),
            (r#"{"type":"mls_chat"}"#, ErrorCode::Malformed),
            (
                r#"{"type":"mls_chat","id":1,"epoch":0,"message":"AA==","extra":1}"#,
                ErrorCode::Malformed,
            ),
            (
                r#"{"type":"mls_chat","id":-1,"epoch":0,"message":"AA=="}"#,
                ErrorCode::Malformed,
            ),
            // The plaintext chat of earlier versions is gone: chat is end-to-end encrypted.
            (r#"{"type":"chat","text":"hi"}"#, ErrorCode::UnknownType),
            (r#"{"type":"lock","locked":"yes"}"#, ErrorCode::Malformed),
        ];
        for (input, code) in cases {
            let err = ClientMsg::decode(input).expect_err(input);
            assert_eq!(err.code, code, "{input}: {}", err.message);
            assert!(!err.message.is_empty());
        }
        let big = format!(
            r#"{{"type":"mls_chat","id":1,"epoch":0,"message":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            ClientMsg::decode(&big).expect_err("big").code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn every_client_type_is_listed() {
        let samples = [
            ClientMsg::Join {
                meeting_id: "m".into(),
                invite_token: None,
                display_name: None,
                rejoin_token: Some("t".into()),
                dial_in_ticket: None,
            },
            ClientMsg::Offer {
                sdp: "v=0".into(),
                sources: vec![],
            },
            ClientMsg::MediaState {
                audio_muted: false,
                video_muted: false,
                screen_sharing: false,
            },
            ClientMsg::Admit {
                participant_id: "p".into(),
            },
            ClientMsg::Deny {
                participant_id: "p".into(),
            },
            ClientMsg::Remove {
                participant_id: "p".into(),
            },
            ClientMsg::Lock { locked: true },
            ClientMsg::Spotlight {
                participant_id: Some("p7".into()),
            },
            ClientMsg::Mute {
                participant_id: "p".into(),
                muted: true,
            },
            ClientMsg::SetModerator {
                participant_id: "p".into(),
                moderator: true,
            },
            ClientMsg::RaiseHand { raised: true },
            ClientMsg::LowerHand {
                participant_id: "p".into(),
            },
            ClientMsg::EndMeeting,
            ClientMsg::Leave,
            ClientMsg::Ping,
            ClientMsg::MlsKeyPackage {
                key_package: "AAE=".into(),
                continuity: Some(MlsContinuity {
                    previous_key: "00".repeat(32),
                    signature: "AAE=".into(),
                }),
            },
            ClientMsg::MlsMember {
                leaf: 2,
                epoch: 7,
                signature: "AAE=".into(),
                group_info: Some("AAI=".into()),
            },
            ClientMsg::MlsCommitRejected { epoch: 7 },
            ClientMsg::VideoTiles {
                tiles: vec![VideoTile {
                    participant_id: "p2".into(),
                    source: Source::Screen,
                    width: 1280,
                    height: 720,
                }],
            },
            ClientMsg::MlsChat {
                id: 1,
                epoch: 7,
                message: "AAE=".into(),
            },
            ClientMsg::MlsCommit {
                epoch: 7,
                commit: "AAE=".into(),
                welcome: Some("AAE=".into()),
                welcome_for: vec!["p3".into()],
            },
        ];
        assert_eq!(samples.len(), CLIENT_TYPES.len());
        for m in samples {
            let text = serde_json::to_string(&m).expect("encode");
            assert_eq!(ClientMsg::decode(&text).expect("roundtrip"), m);
            assert!(text.contains(&format!("\"type\":\"{}\"", m.type_name())));
        }
    }

    #[test]
    fn server_messages_encode_with_type_tag() {
        let e = ServerMsg::error(ErrorCode::UnknownType, "nope").encode();
        assert_eq!(
            e,
            r#"{"type":"error","code":"unknown_type","message":"nope"}"#
        );
        let a = ServerMsg::ActiveSpeaker {
            participant_id: None,
        }
        .encode();
        assert_eq!(a, r#"{"type":"active_speaker","participant_id":null}"#);
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    /// docs/protocol.md documents every message type with a heading and an example.
    #[test]
    fn every_message_type_is_documented() {
        let doc = include_str!("../../../docs/protocol.md");
        let server = [
            ServerMsg::Joined {
                protocol_version: 1,
                self_id: String::new(),
                meeting: MeetingInfo {
                    id: String::new(),
                    title: String::new(),
                    organiser: String::new(),
                    profile: SecurityProfile::Strict,
                    locked: false,
                    dial_in: false,
                    spotlight: Some("p2".into()),
                },
                participants: vec![],
                lobby: vec![],
                rejoin_token: None,
                ice_servers: vec![],
            },
            ServerMsg::LobbyWait {
                meeting_title: String::new(),
            },
            ServerMsg::ParticipantLeft {
                participant_id: String::new(),
                reason: LeaveReason::Left,
            },
            ServerMsg::LobbyChanged {
                lobby: vec![],
                arrived: false,
            },
            ServerMsg::Answer {
                sdp: String::new(),
                tracks: vec![],
            },
            ServerMsg::Renegotiate { audio: 0, video: 0 },
            ServerMsg::MediaLost,
            ServerMsg::Maintenance { in_ms: 3_600_000 },
            ServerMsg::Redirect {
                url: "https://meet.example/node/b".into(),
            },
            ServerMsg::ActiveSpeaker {
                participant_id: None,
            },
            ServerMsg::Ended {
                reason: EndReason::Removed,
                by: None,
            },
            ServerMsg::Pong,
            ServerMsg::error(ErrorCode::Internal, ""),
            ServerMsg::MlsCreateGroup {
                group_id: String::new(),
            },
            ServerMsg::MlsPending {
                joiners: vec![],
                policy: MlsPolicy {
                    staff_direct: false,
                    direct_user_ids: vec![],
                },
            },
            ServerMsg::MlsCommit {
                epoch: 0,
                commit: String::new(),
                from_id: String::new(),
            },
            ServerMsg::MlsCommitResult {
                epoch: 0,
                accepted: false,
            },
            ServerMsg::MlsWelcome {
                welcome: String::new(),
                epoch: 0,
            },
            ServerMsg::MlsChat {
                epoch: 0,
                message: String::new(),
                from_id: String::new(),
                sent_at_ms: 0,
            },
            ServerMsg::MlsChatResult {
                id: 0,
                accepted: false,
            },
            ServerMsg::MlsReset { epoch: 0 },
        ];
        let mut names: Vec<String> = server
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_str(&m.encode()).expect("json");
                v["type"].as_str().expect("type").to_string()
            })
            .collect();
        names.extend(
            [
                "participant_joined",
                "participant_updated",
                "meeting_changed",
            ]
            .map(String::from),
        );
        names.extend(CLIENT_TYPES.iter().map(|s| s.to_string()));
        for name in names {
            assert!(
                doc.contains(&format!("### `{name}`")),
                "docs/protocol.md lacks a section for {name}"
            );
        }
        for code in [
            ErrorCode::Malformed,
            ErrorCode::UnknownType,
            ErrorCode::TooLarge,
            ErrorCode::RateLimited,
            ErrorCode::Forbidden,
            ErrorCode::NotJoined,
            ErrorCode::InvalidState,
            ErrorCode::NotFound,
            ErrorCode::InvalidField,
            ErrorCode::Internal,
        ] {
            assert!(
                doc.contains(&format!("`{}`", code.as_str())),
                "undocumented {code:?}"
            );
        }
    }
}
