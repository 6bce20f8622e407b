// A stand-in signaling server for client-only tests, attached to browser contexts with
// Playwright's WebSocket and HTTP routing. Just enough of the protocol to drive the UI.
import type { BrowserContext, Page, WebSocketRoute } from '@playwright/test';
import type { ClientMsg, LobbyEntry, MeetingInfo, Participant, ServerMsg } from '../../src/signaling/protocol';
import { sfuOffer, sfuRemove, sfuWanted } from './sfu';

export interface Identity {
  name: string;
  staff?: boolean;
  inviteToken?: string;
}

interface Conn {
  id: string;
  who: Identity;
  ws: WebSocketRoute;
  published: string;
}

export class MockMeeting {
  readonly info: MeetingInfo = { id: '42', title: 'Mock-Besprechung', organiser: 'Petra Organisatorin', profile: 'strict', locked: false };
  readonly invites = new Map<string, string>(); // token -> invitee name
  private participants = new Map<string, { conn: Conn; p: Participant }>();
  private lobby = new Map<string, { conn: Conn; e: LobbyEntry }>();
  private seq = 0;
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly sfu: Page) {}

  async attach(context: BrowserContext, who: Identity): Promise<void> {
    await context.route('**/api/**', async (route) => {
      const path = new URL(route.request().url()).pathname;
      const json = (status: number, body?: unknown) =>
        route.fulfill({ status, contentType: 'application/json', body: body === undefined ? '' : JSON.stringify(body) });
      if (path === '/api/session') {
        return who.staff
          ? json(200, { user: { id: 1, username: 'petra', display_name: who.name, role: 'staff', must_change_password: false }, csrf_token: 'x' })
          : json(401, { error: { code: 'unauthorized', message: '' } });
      }
      const inv = /^\/api\/invite\/(.+)$/.exec(path);
      if (inv) {
        const name = this.invites.get(decodeURIComponent(inv[1]));
        return name
          ? json(200, { meeting_id: Number(this.info.id), meeting_title: this.info.title, invitee_name: name, kind: 'guest' })
          : json(404, { error: { code: 'not_found', message: '' } });
      }
      if (path === `/api/meetings/${this.info.id}/public`) return json(200, { id: Number(this.info.id), title: this.info.title });
      return json(404, { error: { code: 'not_found', message: '' } });
    });
    await context.routeWebSocket('**/api/ws', (ws) => {
      const conn: Conn = { id: `p${++this.seq}`, who, ws, published: '' };
      ws.onMessage((raw) => {
        // Handle one message at a time, in order (offers await the SFU page).
        this.queue = this.queue.then(() => this.onMessage(conn, String(raw))).catch((e) => console.log('mock signaling:', e));
      });
      ws.onClose(() => {
        this.queue = this.queue.then(() => this.drop(conn, 'disconnected'));
      });
    });
  }

  private send(conn: Conn, msg: ServerMsg): void {
    try {
      conn.ws.send(JSON.stringify(msg));
    } catch {
      /* closed */
    }
  }

  private broadcast(msg: ServerMsg, except?: string): void {
    for (const { conn } of this.participants.values()) if (conn.id !== except) this.send(conn, msg);
  }

  private moderators(): Conn[] {
    return [...this.participants.values()].filter((x) => x.p.role === 'moderator').map((x) => x.conn);
  }

  private lobbyChanged(arrived: boolean): void {
    const lobby = [...this.lobby.values()].map((x) => x.e);
    for (const m of this.moderators()) this.send(m, { type: 'lobby_changed', lobby, arrived });
  }

  private admitConn(conn: Conn, p: Participant): void {
    this.participants.set(conn.id, { conn, p });
    this.send(conn, {
      type: 'joined',
      protocol_version: 1,
      self_id: conn.id,
      meeting: this.info,
      participants: [...this.participants.values()].map((x) => x.p),
      lobby: p.role === 'moderator' ? [...this.lobby.values()].map((x) => x.e) : [],
    });
    this.broadcast({ type: 'participant_joined', participant: p }, conn.id);
  }

  private async onMessage(conn: Conn, raw: string): Promise<void> {
    let msg: ClientMsg;
    try {
      msg = JSON.parse(raw) as ClientMsg;
    } catch {
      return this.send(conn, { type: 'error', code: 'malformed', message: 'not JSON' });
    }
    const me = this.participants.get(conn.id);
    const base = (
      c: Conn,
      kind: Participant['kind'],
      join_method: Participant['join_method'],
      role: Participant['role'] = 'participant',
    ): Participant => ({
      id: c.id,
      display_name: c.who.name,
      kind,
      role,
      join_method,
      audio_muted: false,
      muted_by_moderator: false,
      video_muted: false,
      screen_sharing: false,
    });
    switch (msg.type) {
      case 'join': {
        if (conn.who.staff) return this.admitConn(conn, base(conn, 'staff', { method: 'staff_login' }, 'moderator'));
        const invitee = msg.invite_token ? this.invites.get(msg.invite_token) : undefined;
        if (invitee && !this.info.locked) {
          return this.admitConn(conn, base(conn, 'invited_guest', { method: 'invitation', invitee, invited_by: this.info.organiser }));
        }
        const name = msg.display_name ?? invitee ?? 'Gast';
        conn.who = { ...conn.who, name };
        this.lobby.set(conn.id, {
          conn,
          e: { id: conn.id, display_name: name, kind: invitee ? 'invited_guest' : 'guest', invitation: invitee ?? null, reason: this.info.locked ? 'locked' : 'profile' },
        });
        this.send(conn, { type: 'lobby_wait', meeting_title: this.info.title });
        return this.lobbyChanged(true);
      }
      case 'offer': {
        if (!me) return this.send(conn, { type: 'error', code: 'not_joined', message: '' });
        const answer = await sfuOffer(this.sfu, conn.id, msg.sdp, msg.sources);
        this.send(conn, { type: 'answer', sdp: answer.sdp, tracks: answer.tracks });
        const published = msg.sources.map((s) => `${s.mid}:${s.source}`).join(',');
        if (published !== conn.published) {
          conn.published = published;
          for (const { conn: other } of this.participants.values()) {
            if (other.id === conn.id) continue;
            const want = await sfuWanted(this.sfu, other.id);
            this.send(other, { type: 'renegotiate', ...want });
          }
        }
        const want = await sfuWanted(this.sfu, conn.id);
        if (answer.tracks.length < want.audio + want.video) this.send(conn, { type: 'renegotiate', ...want });
        return;
      }
      case 'media_state': {
        if (!me) return;
        me.p = { ...me.p, audio_muted: msg.audio_muted || me.p.muted_by_moderator, video_muted: msg.video_muted, screen_sharing: msg.screen_sharing };
        return this.broadcast({ type: 'participant_updated', participant: me.p });
      }
      case 'chat':
        if (!me) return;
        return this.broadcast({ type: 'chat', from_id: conn.id, from_name: me.p.display_name, text: msg.text, sent_at_ms: Date.now() });
      case 'admit': {
        const l = this.lobby.get(msg.participant_id);
        if (!l || me?.p.role !== 'moderator') return;
        this.lobby.delete(msg.participant_id);
        this.admitConn(l.conn, base(l.conn, l.e.kind, { method: 'lobby', admitted_by: me.p.display_name }));
        return this.lobbyChanged(false);
      }
      case 'deny': {
        const l = this.lobby.get(msg.participant_id);
        if (!l || me?.p.role !== 'moderator') return;
        this.lobby.delete(msg.participant_id);
        this.send(l.conn, { type: 'ended', reason: 'denied', by: me.p.display_name });
        l.conn.ws.close();
        return this.lobbyChanged(false);
      }
      case 'remove': {
        const t = this.participants.get(msg.participant_id);
        if (!t || me?.p.role !== 'moderator') return;
        this.send(t.conn, { type: 'ended', reason: 'removed', by: me.p.display_name });
        return this.drop(t.conn, 'removed');
      }
      case 'lock':
        if (me?.p.role !== 'moderator') return;
        this.info.locked = msg.locked;
        return this.broadcast({ type: 'meeting_changed', meeting: this.info });
      case 'leave':
        return this.drop(conn, 'left');
      case 'ping':
        return this.send(conn, { type: 'pong' });
      case 'mute':
      case 'set_moderator':
      case 'end_meeting':
        return;
      default:
        return this.send(conn, { type: 'error', code: 'unknown_type', message: 'unknown message type' });
    }
  }

  private async drop(conn: Conn, reason: 'left' | 'removed' | 'disconnected'): Promise<void> {
    if (this.lobby.delete(conn.id)) this.lobbyChanged(false);
    if (!this.participants.delete(conn.id)) return;
    try {
      conn.ws.close();
    } catch {
      /* already closed */
    }
    await sfuRemove(this.sfu, conn.id);
    this.broadcast({ type: 'participant_left', participant_id: conn.id, reason });
    for (const { conn: other } of this.participants.values()) {
      this.send(other, { type: 'renegotiate', ...(await sfuWanted(this.sfu, other.id)) });
    }
  }
}
