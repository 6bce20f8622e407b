// Generated from crates/klausur-proto by `make proto-ts`. Do not edit by hand.

export type ParticipantKind = "staff" | "invited_guest" | "guest" | "phone_gateway";

export type PhoneLeg = { 
/**
 * The last four digits of the caller's number as the telephone network gave it (the
 * network's word, not verified); `null` when the number was withheld. Never more digits.
 */
number_suffix: string | null, };

export type JoinMethod = { "method": "staff_login" } | { "method": "invitation", invitee: string, invited_by: string, } | { "method": "lobby", admitted_by: string, };

export type Role = "moderator" | "participant";

export type Source = "microphone" | "camera" | "screen";

export type Participant = { id: string, display_name: string, kind: ParticipantKind, role: Role, 
/**
 * The meeting's organiser: always a moderator, the only one who grants and revokes
 * moderation, and nobody can remove them.
 */
organiser: boolean, join_method: JoinMethod, 
/**
 * Microphone muted (by the participant, or by a moderator at the server).
 */
audio_muted: boolean, 
/**
 * A moderator muted this participant at the server; the participant cannot unmute.
 */
muted_by_moderator: boolean, video_muted: boolean, screen_sharing: boolean, 
/**
 * The participant raised their hand to speak, at this time (milliseconds since the Unix
 * epoch, the server's clock: earlier hands come first); `null` when the hand is down.
 */
hand_raised_at: number | null, 
/**
 * The MLS leaf index this participant's client holds in the meeting's group (`null` until
 * it is a member). The server sets it only from a claim signed by that leaf's device key
 * whose credential is this participant's (docs/e2ee.md, "Leaf claims"); clients check it
 * against the group's own roster and flag any mismatch.
 */
leaf: number | null, 
/**
 * The user id of the identity credential in that leaf, as the server checked it against
 * who this participant is: `user:<id>` (staff), `invitation:<id>` (an invitee, also a
 * caller), `guest:<random>` (a lobby guest); `null` while `leaf` is. Clients remove a
 * leaf for a participant who left only if the leaf's credential names this id.
 */
credential_user_id?: string | null, 
/**
 * Set for a telephone caller (kind `phone_gateway`): the call's leg, shown with a phone
 * badge and a banner that this leg is not end-to-end encrypted.
 */
phone: PhoneLeg | null, };

export type LobbyReason = "profile" | "locked" | "removed" | "invitation_in_use";

export type LobbyEntry = { id: string, display_name: string, kind: ParticipantKind, 
/**
 * The name on the personal invitation they used, if any.
 */
invitation: string | null, 
/**
 * Why they wait: `"profile"` (the profile does not admit them directly), `"locked"`
 * (the meeting is locked), `"removed"` (a moderator removed them earlier).
 */
reason: LobbyReason, 
/**
 * Set for a telephone caller waiting in the lobby.
 */
phone: PhoneLeg | null, };

export type SecurityProfile = "strict" | "internal";

export type MeetingInfo = { id: string, title: string, organiser: string, profile: SecurityProfile, locked: boolean, 
/**
 * Telephone callers can join this meeting: it has a dial-in number and its profile allows
 * dial-in (the strict profile never does). Shown in the security panel.
 */
dial_in: boolean, 
/**
 * The participant a moderator shows large to everyone (a sign-language interpreter, the
 * speaker): clients put their camera on the stage unless their user chose someone else.
 * Follows the person through a reconnect; absent while nobody is shown so.
 */
spotlight?: string | null, };

export type IceServer = { urls: Array<string>, username: string, credential: string, };

export type TrackAssignment = { mid: string, participant_id: string, source: Source, };

export type SendSource = { mid: string, source: Source, };

export type VideoTile = { participant_id: string, source: Source, width: number, height: number, };

export type LeaveReason = "left" | "removed" | "disconnected";

export type EndReason = "ended_by_moderator" | "removed" | "denied" | "server_shutdown" | "replaced" | "lobby_full";

export type ErrorCode = "malformed" | "unknown_type" | "too_large" | "rate_limited" | "forbidden" | "not_joined" | "invalid_state" | "not_found" | "invalid_field" | "storage_unavailable" | "database_unavailable" | "cluster_unavailable" | "internal";

export type MlsContinuity = { previous_key: string, signature: string, };

export type MlsJoiner = { participant_id: string, 
/**
 * The joiner's KeyPackage (base64 of the TLS-encoded `KeyPackage`).
 */
key_package: string, 
/**
 * The moderator (participant id) who admitted this joiner from the lobby, if any. Only that
 * moderator's client adds such a joiner, and only if it remembers admitting them.
 */
admitted_by: string | null, 
/**
 * The joiner's proof that it holds the device key of an earlier member (see
 * `mls_key_package`), relayed as the joiner sent it.
 */
continuity: MlsContinuity | null, };

export type MlsPolicy = { 
/**
 * Every staff credential is admitted directly (profile `internal`).
 */
staff_direct: boolean, 
/**
 * Credential user ids admitted directly: `user:<id>` for the organiser, moderators and
 * invited colleagues, `invitation:<id>` for each valid personal invitation.
 */
direct_user_ids: Array<string>, };

export type ClientMsg = { "type": "join", meeting_id: string, invite_token: string | null, display_name: string | null, 
/**
 * The pass from an earlier `joined` of this browser tab (a guest admitted from the
 * lobby): brings the guest back in without the lobby while it is valid. May be left out.
 */
rejoin_token: string | null, 
/**
 * The dial-in gateway joining for a telephone caller: the ticket the server gave the
 * gateway for the caller's meeting number and PIN (`POST /api/dialin/calls`). The
 * participant is the invitee of that PIN, of kind `phone_gateway`. May be left out.
 */
dial_in_ticket: string | null, } | { "type": "offer", sdp: string, sources: Array<SendSource>, } | { "type": "media_state", audio_muted: boolean, video_muted: boolean, screen_sharing: boolean, } | { "type": "video_tiles", tiles: Array<VideoTile>, } | { "type": "admit", participant_id: string, } | { "type": "deny", participant_id: string, } | { "type": "remove", participant_id: string, } | { "type": "lock", locked: boolean, } | { "type": "spotlight", participant_id: string | null, } | { "type": "mute", participant_id: string, muted: boolean, } | { "type": "set_moderator", participant_id: string, moderator: boolean, } | { "type": "raise_hand", raised: boolean, } | { "type": "lower_hand", participant_id: string, } | { "type": "end_meeting" } | { "type": "leave" } | { "type": "ping" } | { "type": "mls_key_package", key_package: string, 
/**
 * A guest coming back after a broken connection: the previous device key's signature
 * over the new one, so that the moderator who admitted them can add them again without
 * asking (docs/e2ee.md, "Reconnects"). May be left out.
 */
continuity: MlsContinuity | null, } | { "type": "mls_member", leaf: number, epoch: number, signature: string, group_info?: string | null, } | { "type": "mls_commit", epoch: number, commit: string, welcome: string | null, welcome_for: Array<string>, } | { "type": "mls_commit_rejected", epoch: number, } | { "type": "mls_chat", id: number, epoch: number, message: string, };

export type ServerMsg = { "type": "joined", protocol_version: number, self_id: string, meeting: MeetingInfo, participants: Array<Participant>, 
/**
 * Only for moderators; empty for everyone else.
 */
lobby: Array<LobbyEntry>, 
/**
 * For a guest admitted from the lobby: the pass that brings this browser tab back in
 * (`join`'s `rejoin_token`) after a broken connection or a restart of the server, until
 * the guest leaves, the meeting empties, or two minutes after a connection broke.
 */
rejoin_token: string | null, 
/**
 * TURN servers the browser may use for its media connection (empty without `[turn]`).
 */
ice_servers: Array<IceServer>, } | { "type": "lobby_wait", meeting_title: string, } | { "type": "participant_joined", participant: Participant, } | { "type": "participant_updated", participant: Participant, } | { "type": "participant_left", participant_id: string, reason: LeaveReason, } | { "type": "lobby_changed", lobby: Array<LobbyEntry>, arrived: boolean, } | { "type": "meeting_changed", meeting: MeetingInfo, } | { "type": "answer", sdp: string, tracks: Array<TrackAssignment>, } | { "type": "renegotiate", audio: number, video: number, } | { "type": "media_lost" } | { "type": "active_speaker", participant_id: string | null, } | { "type": "invitation_contested" } | { "type": "redirect", url: string, } | { "type": "maintenance", in_ms: number, } | { "type": "ended", reason: EndReason, by: string | null, } | { "type": "pong" } | { "type": "error", code: ErrorCode, message: string, } | { "type": "mls_create_group", group_id: string, } | { "type": "mls_pending", joiners: Array<MlsJoiner>, policy: MlsPolicy, } | { "type": "mls_commit", epoch: number, commit: string, from_id: string, } | { "type": "mls_commit_result", epoch: number, accepted: boolean, } | { "type": "mls_welcome", welcome: string, epoch: number, } | { "type": "mls_reset", epoch: number, } | { "type": "mls_chat", epoch: number, message: string, from_id: string, 
/**
 * When the server relayed it, milliseconds since the Unix epoch.
 */
sent_at_ms: number, } | { "type": "mls_chat_result", id: number, accepted: boolean, };

export const PROTOCOL_VERSION = 1;
export const MAX_MESSAGE_BYTES = 1048576;
export const MAX_CHAT_CHARS = 2000;
export const MAX_NAME_CHARS = 80;
