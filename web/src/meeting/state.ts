// Pure meeting state: what the server told us, folded message by message.
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
export type EndCause = EndReason | 'left' | 'connection_lost' | 'join_failed';

export interface ChatEntry {
  seq: number;
  fromId: string;
  fromName: string;
  text: string;
  sentAtMs: number;
  self: boolean;
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
  };
}

const MAX_CHAT_ENTRIES = 500;

export function reduce(state: RoomState, msg: ServerMsg): RoomState {
  switch (msg.type) {
    case 'lobby_wait':
      return { ...state, phase: 'lobby', meetingTitle: msg.meeting_title };
    case 'joined':
      return {
        ...state,
        phase: 'joined',
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
    case 'meeting_changed':
      return { ...state, meeting: msg.meeting, meetingTitle: msg.meeting.title };
    case 'chat': {
      const entry: ChatEntry = {
        seq: (state.chat.at(-1)?.seq ?? 0) + 1,
        fromId: msg.from_id,
        fromName: msg.from_name,
        text: msg.text,
        sentAtMs: msg.sent_at_ms,
        self: msg.from_id === state.selfId,
      };
      return { ...state, chat: [...state.chat, entry].slice(-MAX_CHAT_ENTRIES) };
    }
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

export function endLocally(state: RoomState, cause: EndCause): RoomState {
  if (state.phase === 'ended') return state;
  return { ...state, phase: 'ended', ended: { cause, by: null } };
}

export function self(state: RoomState): Participant | undefined {
  return state.participants.find((p) => p.id === state.selfId);
}

export function isModerator(state: RoomState): boolean {
  return self(state)?.role === 'moderator';
}
