// Pure meeting state: what the server told us, folded message by message, and the chat the
// encryption worker decrypted.
import type { ChatEvent } from '../e2ee/types';
import type {
  EndReason,
  ErrorCode,
  LobbyEntry,
  MeetingInfo,
  Participant,
  ServerMsg,
} from '../signaling/protocol';

export type Phase = 'connecting' | 'lobby' | 'joined' | 'ended';

/** Why the call ended, from the server (`EndReason`) or locally. */
export type EndCause = EndReason | 'left' | 'connection_lost' | 'join_failed' | 'signed_out';

/**
 * The close code with which the server ends a meeting connection whose sign-in ended (signed
 * out elsewhere, account disabled, password changed): WebSocket 1008, "policy violation".
 * Joining again would not help; the user must sign in again.
 */
export const SESSION_ENDED_CLOSE_CODE = 1008;

/** How a connection that closed with `code` (not by us) ends the call: signed out, or a broken
 * connection to recover from. */
export function closeCause(code: number): 'signed_out' | 'connection_lost' {
  return code === SESSION_ENDED_CLOSE_CODE ? 'signed_out' : 'connection_lost';
}

/** Own chat messages: written, relayed by the server to the others, or not sent. */
export type ChatDelivery = 'sending' | 'sent' | 'failed';

/** One chat message. Chat is end-to-end encrypted: the text and the author's name come from
 * the encryption worker (the MLS sender's credential), never from the server. */
export interface ChatEntry {
  seq: number;
  /** Own messages: the number given to the encryption worker; null for others' messages. */
  localId: number | null;
  /** The author's name as its credential carries it (own messages: own name). */
  fromName: string;
  /** The server participant that relayed it (others' messages), its word only. */
  fromId: string | null;
  text: string;
  /** When it was written (own) or relayed (others), ms since the Unix epoch. */
  sentAtMs: number;
  self: boolean;
  /** Own messages: where they are; others' messages are always 'sent'. */
  delivery: ChatDelivery;
  /** The server's sender does not claim the author's MLS leaf (shown as a warning). */
  mismatch: boolean;
}

export interface RoomState {
  phase: Phase;
  /** Known before joining (from the invitation or the lobby message). */
  meetingTitle: string | null;
  selfId: string | null;
  meeting: MeetingInfo | null;
  participants: Participant[];
  lobby: LobbyEntry[];
  chat: ChatEntry[];
  activeSpeaker: string | null;
  ended: { cause: EndCause; by: string | null } | null;
  lastError: { code: ErrorCode; message: string } | null;
  /** Increments every time someone new arrives in the lobby (for notifications). */
  lobbyArrivals: number;
  /**
   * The connection broke and the client is getting back in by itself: the number of the
   * attempt and when it starts (ms since the Unix epoch). Null while connected. The phase
   * stays what it was (`joined` or `lobby`) until the server answers again.
   */
  reconnecting: { attempt: number; retryAt: number } | null;
  /**
   * Increments every time the server says someone else joined with this participant's
   * invitation from another browser (they wait in the lobby; a moderator decides).
   */
  invitationContested: number;
  /**
   * The server this meeting runs on is being taken out of service (`maintenance`): by when
   * (ms since the Unix epoch) it stops at the latest, interrupting the meeting. Null otherwise;
   * cleared when the client is back in (on another node, or after the restart).
   */
  maintenanceBy: number | null;
}

export function initialRoomState(meetingTitle: string | null = null): RoomState {
  return {
    phase: 'connecting',
    meetingTitle,
    selfId: null,
    meeting: null,
    participants: [],
    lobby: [],
    chat: [],
    activeSpeaker: null,
    ended: null,
    lastError: null,
    lobbyArrivals: 0,
    reconnecting: null,
    invitationContested: 0,
    maintenanceBy: null,
  };
}

const MAX_CHAT_ENTRIES = 500;

export function reduce(state: RoomState, msg: ServerMsg): RoomState {
  switch (msg.type) {
    case 'lobby_wait':
      return { ...state, phase: 'lobby', meetingTitle: msg.meeting_title, reconnecting: null, participants: [], selfId: null, activeSpeaker: null, maintenanceBy: null };
    case 'joined':
      return {
        ...state,
        phase: 'joined',
        reconnecting: null,
        maintenanceBy: null,
        activeSpeaker: null,
        selfId: msg.self_id,
        meeting: msg.meeting,
        meetingTitle: msg.meeting.title,
        participants: msg.participants,
        lobby: msg.lobby,
      };
    case 'participant_joined': {
      const others = state.participants.filter((p) => p.id !== msg.participant.id);
      return { ...state, participants: [...others, msg.participant] };
    }
    case 'participant_updated': {
      const exists = state.participants.some((p) => p.id === msg.participant.id);
      return {
        ...state,
        participants: exists
          ? state.participants.map((p) => (p.id === msg.participant.id ? msg.participant : p))
          : [...state.participants, msg.participant],
      };
    }
    case 'participant_left':
      return {
        ...state,
        participants: state.participants.filter((p) => p.id !== msg.participant_id),
        activeSpeaker: state.activeSpeaker === msg.participant_id ? null : state.activeSpeaker,
      };
    case 'lobby_changed':
      return {
        ...state,
        lobby: msg.lobby,
        lobbyArrivals: msg.arrived ? state.lobbyArrivals + 1 : state.lobbyArrivals,
      };
    case 'invitation_contested':
      return { ...state, invitationContested: state.invitationContested + 1 };
    case 'meeting_changed':
      return { ...state, meeting: msg.meeting, meetingTitle: msg.meeting.title };
    case 'active_speaker':
      return { ...state, activeSpeaker: msg.participant_id };
    case 'ended':
      return { ...state, phase: 'ended', ended: { cause: msg.reason, by: msg.by } };
    case 'error':
      return { ...state, lastError: { code: msg.code, message: msg.message } };
    case 'answer':
    case 'renegotiate':
    case 'pong':
      return state;
    default:
      return state;
  }
}

function addChat(state: RoomState, entry: Omit<ChatEntry, 'seq'>): RoomState {
  const seq = (state.chat.at(-1)?.seq ?? 0) + 1;
  return { ...state, chat: [...state.chat, { ...entry, seq }].slice(-MAX_CHAT_ENTRIES) };
}

/** The server said (`maintenance`) at `now` that it stops at the latest in `inMs` ms. */
export function maintenanceAnnounced(state: RoomState, inMs: number, now: number): RoomState {
  return { ...state, maintenanceBy: now + inMs };
}

/** An own chat message handed to the encryption worker as `localId`. */
export function chatWritten(state: RoomState, localId: number, text: string, now: number): RoomState {
  return addChat(state, {
    localId,
    fromName: self(state)?.display_name ?? '',
    fromId: state.selfId,
    text,
    sentAtMs: now,
    self: true,
    delivery: 'sending',
    mismatch: false,
  });
}

/** Folds a chat event of the encryption worker into the state. */
export function chatEvent(state: RoomState, ev: ChatEvent): RoomState {
  if (ev.type === 'received') {
    return addChat(state, {
      localId: null,
      fromName: ev.from.displayName,
      fromId: ev.participantId,
      text: ev.text,
      sentAtMs: ev.sentAtMs,
      self: false,
      delivery: 'sent',
      mismatch: ev.mismatch,
    });
  }
  const delivery: ChatDelivery = ev.type === 'sent' ? 'sent' : 'failed';
  if (!state.chat.some((c) => c.self && c.localId === ev.id)) return state;
  return {
    ...state,
    chat: state.chat.map((c) => (c.self && c.localId === ev.id ? { ...c, delivery } : c)),
  };
}

export function endLocally(state: RoomState, cause: EndCause): RoomState {
  if (state.phase === 'ended') return state;
  return { ...state, phase: 'ended', ended: { cause, by: null }, reconnecting: null };
}

/**
 * The connection broke and attempt `attempt` to get back in starts at `retryAt`. What the
 * server said about the meeting is kept for the time being (the list, the chat), except who
 * speaks; a new `joined` replaces it. Own chat messages still being sent are marked as not sent.
 */
export function reconnecting(state: RoomState, attempt: number, retryAt: number): RoomState {
  if (state.phase === 'ended') return state;
  // Own messages still on their way went with the old connection's encryption session.
  const chat = state.chat.some((c) => c.delivery === 'sending')
    ? state.chat.map((c) => (c.delivery === 'sending' ? { ...c, delivery: 'failed' as const } : c))
    : state.chat;
  // An announced interruption has come.
  return { ...state, reconnecting: { attempt, retryAt }, activeSpeaker: null, chat, maintenanceBy: null };
}

export function self(state: RoomState): Participant | undefined {
  return state.participants.find((p) => p.id === state.selfId);
}

export function isModerator(state: RoomState): boolean {
  return self(state)?.role === 'moderator';
}

/**
 * When the connection to the server breaks (or the server restarts, also after a crash), the
 * client gets back in by itself: it waits this long before each attempt, about a minute in all,
 * and then gives up with "connection lost". The gap never grows past 2 s, so a server that is
 * back sees everyone again within about 2 s (an attempt that finds it down costs a refused TCP
 * connection); each delay is shortened by up to a quarter at random ([`reconnectDelay`]) so that
 * a meeting's browsers do not all knock at once. Staff, personal invitations and guests with a
 * pass from the lobby come straight back in.
 */
export const RECONNECT_DELAYS_MS = [500, 1000, 1500, ...Array<number>(28).fill(2000)];

/** The wait before reconnect attempt `attempt` (0-based), with `random` in [0, 1); null when
 * the attempts are used up. */
export function reconnectDelay(attempt: number, random: number): number | null {
  const base = RECONNECT_DELAYS_MS[attempt];
  if (base === undefined) return null;
  return Math.round(base * (1 - 0.25 * Math.min(Math.max(random, 0), 1)));
}

/**
 * Which encryption session vouches for the next connection's device key after a connection
 * dropped (docs/e2ee.md, "A guest from the lobby comes back"): the dropped connection's own, if
 * it was in the group (or there is no other); otherwise the older one that still is the key the
 * moderator's client knows. A connection attempt that failed before it got in never takes its
 * place.
 */
export function vouchingSession(droppedWasInGroup: boolean, hasOlder: boolean): 'dropped' | 'older' {
  return droppedWasInGroup || !hasOlder ? 'dropped' : 'older';
}
