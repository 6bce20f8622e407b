import { describe, expect, it } from 'vitest';
import { chatEvent, chatWritten, closeCause, endLocally, vouchingSession, initialRoomState, isModerator, RECONNECT_DELAYS_MS, reconnectDelay, reconnecting, maintenanceAnnounced, reduce } from './state';
import type { Participant } from '../signaling/protocol';

const alice: Participant = {
  id: 'p1',
  display_name: 'Alice',
  kind: 'staff',
  role: 'moderator',
  organiser: false,
  join_method: { method: 'staff_login' },
  audio_muted: false,
  muted_by_moderator: false,
  video_muted: false,
  screen_sharing: false,
  hand_raised_at: null,
  leaf: null,
  phone: null,
};
const bob: Participant = {
  ...alice,
  id: 'p2',
  display_name: 'Bob',
  kind: 'invited_guest',
  role: 'participant',
  organiser: false,
  join_method: { method: 'invitation', invitee: 'Bob', invited_by: 'Alice' },
};

const joined = reduce(initialRoomState(), {
  type: 'joined',
  protocol_version: 1,
  self_id: 'p1',
  meeting: { id: 'm1', title: 'Bauausschuss', organiser: 'Alice', profile: 'strict', locked: false, dial_in: false },
  participants: [alice],
  lobby: [],
  rejoin_token: null,
  ice_servers: [],
});

describe('room state', () => {
  it('joins and knows the own role', () => {
    expect(joined.phase).toBe('joined');
    expect(joined.meetingTitle).toBe('Bauausschuss');
    expect(isModerator(joined)).toBe(true);
  });

  it('tracks participants joining, changing and leaving', () => {
    let s = reduce(joined, { type: 'participant_joined', participant: bob });
    expect(s.participants.map((p) => p.id)).toEqual(['p1', 'p2']);
    s = reduce(s, { type: 'participant_updated', participant: { ...bob, audio_muted: true } });
    expect(s.participants[1].audio_muted).toBe(true);
    s = reduce(s, { type: 'active_speaker', participant_id: 'p2' });
    s = reduce(s, { type: 'participant_left', participant_id: 'p2', reason: 'removed' });
    expect(s.participants.map((p) => p.id)).toEqual(['p1']);
    expect(s.activeSpeaker).toBeNull();
  });

  it('counts lobby arrivals and records errors', () => {
    let s = reduce(joined, {
      type: 'lobby_changed',
      lobby: [{ id: 'x', display_name: 'Eve', kind: 'guest', invitation: null, reason: 'profile', phone: null }],
      arrived: true,
    });
    s = reduce(s, { type: 'lobby_changed', lobby: [], arrived: false });
    expect(s.lobbyArrivals).toBe(1);
    expect(s.lobby).toEqual([]);
    s = reduce(s, { type: 'error', code: 'unknown_type', message: 'no' });
    expect(s.lastError?.code).toBe('unknown_type');
    expect(s.phase).toBe('joined');
  });

  it('records own chat as sending until the worker reports it sent or failed', () => {
    let s = chatWritten(joined, 1, 'Hallo', 1000);
    s = chatWritten(s, 2, 'Noch da?', 2000);
    expect(s.chat.map((c) => [c.seq, c.localId, c.fromName, c.self, c.delivery])).toEqual([
      [1, 1, 'Alice', true, 'sending'],
      [2, 2, 'Alice', true, 'sending'],
    ]);
    s = chatEvent(s, { type: 'sent', id: 2 });
    s = chatEvent(s, { type: 'failed', id: 1, reason: 'refused 5 times' });
    expect(s.chat.map((c) => c.delivery)).toEqual(['failed', 'sent']);
    // An outcome for a message this page does not know changes nothing.
    expect(chatEvent(s, { type: 'sent', id: 99 })).toBe(s);
  });

  it('shows received chat under the credential name, flagged when the server names another sender', () => {
    let s = chatEvent(joined, {
      type: 'received',
      from: { leaf: 3, userId: 'invitation:7', displayName: 'Bob Bürger', kind: 'invited_guest' },
      participantId: 'p2',
      mismatch: false,
      text: 'Guten Morgen',
      sentAtMs: 5,
    });
    s = chatEvent(s, {
      type: 'received',
      from: { leaf: 3, userId: 'invitation:7', displayName: 'Bob Bürger', kind: 'invited_guest' },
      participantId: 'p1',
      mismatch: true,
      text: 'Zweite',
      sentAtMs: 6,
    });
    expect(s.chat.map((c) => [c.seq, c.fromName, c.fromId, c.self, c.delivery, c.mismatch, c.text])).toEqual([
      [1, 'Bob Bürger', 'p2', false, 'sent', false, 'Guten Morgen'],
      [2, 'Bob Bürger', 'p1', false, 'sent', true, 'Zweite'],
    ]);
  });

  it('ends with the server reason', () => {
    const s = reduce(joined, { type: 'ended', reason: 'removed', by: 'Alice' });
    expect(s.phase).toBe('ended');
    expect(s.ended).toEqual({ cause: 'removed', by: 'Alice' });
  });

  it('keeps the list and the chat while reconnecting, and a new join replaces the list', () => {
    let s = reduce(joined, { type: 'participant_joined', participant: bob });
    s = reduce(s, { type: 'active_speaker', participant_id: 'p2' });
    s = chatWritten(s, 1, 'schon gesendet', 1000);
    s = chatEvent(s, { type: 'sent', id: 1 });
    s = chatWritten(s, 2, 'unterwegs', 2000);
    s = reconnecting(s, 1, 5000);
    expect(s.phase).toBe('joined');
    expect(s.reconnecting).toEqual({ attempt: 1, retryAt: 5000 });
    expect(s.activeSpeaker).toBeNull();
    expect(s.participants.map((p) => p.id)).toEqual(['p1', 'p2']);
    // The message on its way went with the old connection: not sent; the one before stays sent.
    expect(s.chat.map((c) => [c.text, c.delivery])).toEqual([
      ['schon gesendet', 'sent'],
      ['unterwegs', 'failed'],
    ]);

    const back = reduce(s, {
      type: 'joined',
      protocol_version: 1,
      self_id: 'p7',
      meeting: joined.meeting!,
      participants: [bob, { ...alice, id: 'p7' }],
      lobby: [],
      rejoin_token: null,
      ice_servers: [],
    });
    expect(back.reconnecting).toBeNull();
    expect(back.selfId).toBe('p7');
    expect(back.participants.map((p) => p.id)).toEqual(['p2', 'p7']);
    expect(back.chat).toHaveLength(2);
  });

  it('a reconnect that lands in the lobby forgets the old list; an ended call does not reconnect', () => {
    const s = reduce(reconnecting(joined, 2, 9000), { type: 'lobby_wait', meeting_title: 'Bauausschuss' });
    expect(s.phase).toBe('lobby');
    expect(s.reconnecting).toBeNull();
    expect(s.participants).toEqual([]);
    expect(s.selfId).toBeNull();

    const ended = endLocally(reconnecting(joined, 1, 1), 'connection_lost');
    expect(ended.phase).toBe('ended');
    expect(ended.reconnecting).toBeNull();
    expect(reconnecting(ended, 2, 2)).toBe(ended);
  });
});

describe('announced maintenance', () => {
  it('knows by when the server stops, until the client is back in after the interruption', () => {
    expect(joined.maintenanceBy).toBeNull();
    const told = maintenanceAnnounced(joined, 600_000, 1_800_000_000_000);
    expect(told.maintenanceBy).toBe(1_800_000_600_000);
    // Everything else stays.
    expect(told.participants).toEqual(joined.participants);
    expect(reduce(told, { type: 'participant_joined', participant: bob }).maintenanceBy).toBe(1_800_000_600_000);
    // The interruption came: the client gets back in, on a server that is not being stopped.
    const lost = reconnecting(told, 1, 1_800_000_601_000);
    expect(lost.maintenanceBy).toBeNull();
    const back = reduce(told, {
      type: 'joined',
      protocol_version: 1,
      self_id: 'p3',
      meeting: { id: 'm1', title: 'Bauausschuss', organiser: 'Alice', profile: 'strict', locked: false, dial_in: false },
      participants: [alice],
      lobby: [],
      rejoin_token: null,
      ice_servers: [],
    });
    expect(back.maintenanceBy).toBeNull();
    expect(reduce(told, { type: 'lobby_wait', meeting_title: 'Bauausschuss' }).maintenanceBy).toBeNull();
  });
});

describe('reconnect schedule', () => {
  it('tries again at least every 2 s for about a minute, then gives up', () => {
    let total = 0;
    let attempts = 0;
    for (const random of [0, 0.5, 0.999]) {
      total = 0;
      attempts = 0;
      for (let n = 0; ; n++) {
        const d = reconnectDelay(n, random);
        if (d === null) break;
        expect(d).toBeGreaterThan(0);
        expect(d).toBeLessThanOrEqual(2000);
        total += d;
        attempts += 1;
      }
      expect(total).toBeGreaterThan(40_000);
      expect(total).toBeLessThan(65_000);
    }
    expect(attempts).toBe(RECONNECT_DELAYS_MS.length);
    // The first attempt comes soon: a brief break is over within a second.
    expect(reconnectDelay(0, 0)).toBeLessThanOrEqual(500);
  });

  it('spreads a meeting\'s attempts: the delay is shortened by up to a quarter at random', () => {
    expect(reconnectDelay(5, 0)).toBe(2000);
    expect(reconnectDelay(5, 0.999)).toBe(1501);
    expect(reconnectDelay(5, 7)).toBe(1500);
    expect(reconnectDelay(RECONNECT_DELAYS_MS.length, 0)).toBeNull();
  });
});

describe('closeCause', () => {
  it('ends the call as signed out on the server\'s session-ended close (1008), and recovers from anything else', () => {
    expect(closeCause(1008)).toBe('signed_out');
    // A broken connection (1006), a restarting server (1001, 1012), a too slow client (1013).
    for (const code of [1006, 1001, 1012, 1013, 4000]) expect(closeCause(code)).toBe('connection_lost');
  });
});

describe('vouchingSession', () => {
  it('keeps the key the moderator knows through attempts that never got into the group', () => {
    // Attempts while the server restarts: each fails before the group, the older session stays.
    expect(vouchingSession(false, true)).toBe('older');
    // A connection that was in the group is the one to vouch from now on.
    expect(vouchingSession(true, true)).toBe('dropped');
    // The first connection of the tab: nothing older to keep.
    expect(vouchingSession(false, false)).toBe('dropped');
  });
});
