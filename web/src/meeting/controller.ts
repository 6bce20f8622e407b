// Drives one meeting visit: signaling + peer connection + local devices.
// The UI reads immutable snapshots (useSyncExternalStore) and calls the actions.
import { MAX_REDIRECTS, redirectSocketUrl, SignalingClient } from '../signaling/client';
import { api } from '../signaling/api';
import type { ClientMsg, IceServer, Participant, ServerMsg, VideoTile } from '../signaling/protocol';
import { getCamera, getMicrophone, getScreen, playChime } from '../media/devices';
import { PeerSession, type InboundStat, type MediaTransport, type OutboundLayer, type RemoteTrack, type ScreenSending } from '../media/peer';
import { E2eeSession } from '../e2ee/session';
import type { E2eeDiagnostics, E2eeNotice, E2eeStatus } from '../e2ee/types';
import { chatText } from '../e2ee/mls';
import { phoneCallers, type PhoneCaller } from './phone';
import { tilesChanged } from './tiles';
import {
  chatEvent,
  chatWritten,
  closeCause,
  endLocally,
  initialRoomState,
  isModerator,
  reconnectDelay,
  reconnecting,
  maintenanceAnnounced,
  reduce,
  type RoomState,
  vouchingSession,
} from './state';

export interface LocalState {
  audioMuted: boolean;
  videoMuted: boolean;
  screenSharing: boolean;
  cameraTrack: MediaStreamTrack | null;
  screenTrack: MediaStreamTrack | null;
  /** A local device problem (camera, microphone, screen) to show briefly. */
  deviceError: string | null;
}

/** A notice for the meeting's timeline: joins and leaves from the MLS group, warnings. */
export interface NoticeEntry {
  seq: number;
  at: number;
  notice: E2eeNotice;
}

export interface CallSnapshot {
  room: RoomState;
  local: LocalState;
  remote: RemoteTrack[];
  /** End-to-end encryption state (null before the meeting room). */
  e2ee: E2eeStatus | null;
  notices: NoticeEntry[];
}

const MAX_NOTICES = 200;

export interface JoinOptions {
  meetingId: string;
  inviteToken: string | null;
  displayName: string | null;
  meetingTitle: string | null;
  audioTrack: MediaStreamTrack | null;
  videoTrack: MediaStreamTrack | null;
  audioEnabled: boolean;
  videoEnabled: boolean;
  audioDeviceId: string | null;
  videoDeviceId: string | null;
}

export class MeetingController {
  private snapshot: CallSnapshot;
  private listeners = new Set<() => void>();
  private signaling: SignalingClient | null = null;
  /** Attempts to get back in since the connection broke (0 while connected). */
  private reconnectAttempts = 0;
  /** Redirects followed since the last connection attempt began. */
  private redirects = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  /** A join was sent and the server has not answered it with `joined` or `lobby_wait` yet. */
  private awaitingJoin = false;
  /** The current peer connection's media has been connected. */
  private mediaConnected = false;
  private peer: PeerSession | null = null;
  private e2ee: E2eeSession | null = null;
  /** The encryption session of the connection that broke, kept to vouch for the next one. */
  private previousE2ee: E2eeSession | null = null;
  private e2eeStarted = false;
  /** Device keys of guests this user admitted, added by this page's workers (see E2eeSession). */
  private readonly vouched = new Map<string, string>();
  /** A guest admitted from the lobby: the pass back in (kept in this tab's session storage). */
  private rejoinToken: string | null;
  /** Numbers of own chat messages, for their outcome from the encryption worker. */
  private chatIds = 0;
  private audioTrack: MediaStreamTrack | null;
  /** The videos the page shows (`showVideos`), and what this connection last told the server. */
  private shownVideos: VideoTile[] | null = null;
  private toldVideos: VideoTile[] | null = null;

  constructor(private readonly opts: JoinOptions) {
    this.rejoinToken = loadRejoinToken(opts.meetingId);
    this.audioTrack = opts.audioTrack;
    if (this.audioTrack) this.audioTrack.enabled = opts.audioEnabled;
    let cameraTrack = opts.videoTrack;
    if (cameraTrack && !opts.videoEnabled) {
      cameraTrack.stop();
      cameraTrack = null;
    }
    this.snapshot = {
      room: initialRoomState(opts.meetingTitle),
      local: {
        audioMuted: !opts.audioEnabled || !this.audioTrack,
        videoMuted: !cameraTrack,
        screenSharing: false,
        cameraTrack,
        screenTrack: null,
        deviceError: null,
      },
      remote: [],
      e2ee: null,
      notices: [],
    };
  }

  // ---- store ----

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  getSnapshot = (): CallSnapshot => this.snapshot;

  private update(patch: Partial<CallSnapshot>): void {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const fn of this.listeners) fn();
  }

  private updateLocal(patch: Partial<LocalState>): void {
    this.update({ local: { ...this.snapshot.local, ...patch } });
  }

  // ---- lifecycle ----

  start(): void {
    installTestHooks(this);
    this.connect();
  }

  /** Opens the signaling connection and the encryption session, then joins (again). */
  private connect(): void {
    // The encryption worker loads its WebAssembly and makes the device key while the join (and
    // any wait in the lobby) is under way; the group is joined after `joined`.
    const previous = this.previousE2ee;
    const e2ee: E2eeSession = new E2eeSession({
      meetingId: this.opts.meetingId,
      vouched: this.vouched,
      send: (m) => this.send(m),
      onStatus: (status) => {
        // Only the current connection's session speaks for this tab's encryption.
        if (this.e2ee !== e2ee) return;
        this.update({ e2ee: status });
        // In the group now: the videos the page shows can be decrypted, so ask for them.
        this.tellVideos();
        // In the group: the session this one followed has vouched for the last time.
        if (status.epoch !== null && this.previousE2ee) {
          this.previousE2ee.close();
          this.previousE2ee = null;
        }
      },
      onNotice: (notice) => this.addNotice(notice),
      onChat: (event) => this.update({ room: chatEvent(this.snapshot.room, event) }),
    });
    // A guest coming back with a pass: the old device key vouches for the new one. The old
    // session stays (as `previousE2ee`) until a new one is in the group: an attempt that fails
    // while the server is still down must not take with it the key the moderator knows.
    this.e2ee = e2ee;
    if (previous && this.rejoinToken) {
      e2ee.follow(previous);
    } else {
      previous?.close();
      this.previousE2ee = null;
    }
    this.e2eeStarted = false;
    this.redirects = 0;
    this.openSignaling();
  }

  /**
   * Opens the signaling connection (to this page's server, or to `url`, where a cluster sent
   * the join) and joins once it is open.
   */
  private openSignaling(url?: string): void {
    const { meetingId, inviteToken, displayName } = this.opts;
    const signaling: SignalingClient = new SignalingClient({
      onOpen: () => {
        this.awaitingJoin = true;
        this.send({
          type: 'join', meeting_id: meetingId, invite_token: inviteToken, display_name: displayName,
          rejoin_token: this.rejoinToken,
          // Only the dial-in gateway joins with a ticket; a browser never does.
          dial_in_ticket: null,
        });
      },
      onMessage: (msg) => {
        if (this.signaling === signaling) this.onMessage(msg);
      },
      onClose: (clean, code) => {
        if (clean || this.signaling !== signaling) return;
        if (closeCause(code) === 'signed_out') {
          this.setRejoinToken(null);
          this.finish('signed_out');
        } else {
          this.connectionLost();
        }
      },
    });
    this.signaling = signaling;
    signaling.connect(url);
  }

  /**
   * A node of a cluster that does not run the meeting answered the join: join again at the
   * node that does (docs/cluster.md). Only while waiting for the join's answer, to a URL on
   * this page's own site, and a few times in a row at most; otherwise as after a broken
   * connection.
   */
  private followRedirect(url: string): void {
    const target = redirectSocketUrl(url);
    this.redirects += 1;
    if (!this.awaitingJoin || target === null || this.redirects > MAX_REDIRECTS) {
      console.warn('klausur: a redirect that cannot be followed; joining again');
      this.connectionLost();
      return;
    }
    const old = this.signaling;
    this.signaling = null;
    old?.close();
    this.openSignaling(target);
  }

  /**
   * The connection broke: get back in after the next delay ([`reconnectDelay`]), or end
   * with "connection lost" when it never got in or the attempts are used up.
   */
  private connectionLost(): void {
    const room = this.snapshot.room;
    const wasIn = room.phase === 'joined' || room.phase === 'lobby';
    const delay = reconnectDelay(this.reconnectAttempts, Math.random());
    if (!wasIn || delay === null) {
      this.finish('connection_lost');
      return;
    }
    this.reconnectAttempts += 1;
    this.dropConnection();
    this.update({ room: reconnecting(this.snapshot.room, this.reconnectAttempts, Date.now() + delay) });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  /**
   * The media connection that worked has failed (the media server stopped answering its
   * consent checks: a lossy network or a firewall on the UDP path), or the server said it lost
   * it (`media_lost`), while signaling still works: leave and get back in as after a broken
   * connection, with a new media connection.
   */
  private mediaLost(why = 'media connection failed'): void {
    console.warn(`klausur: ${why}; joining again`);
    this.send({ type: 'leave' });
    this.connectionLost();
  }

  /**
   * Closes signaling, the peer connection and the encryption session (the new connection gets a
   * new device key and a new leaf), and stops a screen share; keeps microphone and camera.
   */
  private dropConnection(): void {
    this.awaitingJoin = false;
    this.mediaConnected = false;
    const signaling = this.signaling;
    this.signaling = null;
    signaling?.close();
    this.peer?.close();
    this.peer = null;
    // Keys are not carried over: the next connection gets a new device key and leaf. The old
    // worker keeps only its device key, to vouch for the new one (`follow`): the session that was
    // last in the group, so a connection that never got that far is dropped instead.
    const current = this.e2ee;
    this.e2ee = null;
    if (current) {
      if (vouchingSession(this.snapshot.e2ee?.epoch != null, this.previousE2ee !== null) === 'dropped') {
        this.previousE2ee?.close();
        this.previousE2ee = current;
        current.retire();
      } else {
        current.close();
      }
    }
    this.e2eeStarted = false;
    this.snapshot.local.screenTrack?.stop();
    this.update({ remote: [], e2ee: null, local: { ...this.snapshot.local, screenTrack: null, screenSharing: false } });
  }

  /** Leave voluntarily. */
  leave(): void {
    this.send({ type: 'leave' });
    this.setRejoinToken(null);
    this.finish('left');
  }

  /** Keeps (or forgets) the pass of a guest admitted from the lobby for this tab. */
  private setRejoinToken(token: string | null): void {
    this.rejoinToken = token;
    storeRejoinToken(this.opts.meetingId, token);
  }

  /** While getting back in after the connection broke: start the next attempt at once. */
  retryNow(): void {
    if (!this.reconnectTimer) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.update({ room: reconnecting(this.snapshot.room, this.reconnectAttempts, Date.now()) });
    this.connect();
  }

  /** Tear down without a message (component unmounted). */
  dispose(): void {
    if (this.snapshot.room.phase !== 'ended') this.send({ type: 'leave' });
    this.teardown();
  }

  private finish(cause: 'left' | 'connection_lost' | 'join_failed' | 'signed_out'): void {
    this.update({ room: endLocally(this.snapshot.room, cause) });
    this.teardown();
  }

  private teardown(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.awaitingJoin = false;
    this.signaling?.close();
    this.signaling = null;
    this.peer?.close();
    this.peer = null;
    this.e2ee?.close();
    this.e2ee = null;
    this.previousE2ee?.close();
    this.previousE2ee = null;
    this.audioTrack?.stop();
    this.snapshot.local.cameraTrack?.stop();
    this.snapshot.local.screenTrack?.stop();
    this.update({ remote: [], local: { ...this.snapshot.local, cameraTrack: null, screenTrack: null, screenSharing: false } });
  }

  private send(msg: ClientMsg): void {
    this.signaling?.send(msg);
  }

  private onMessage(msg: ServerMsg): void {
    if (this.e2ee?.handleServer(msg)) return;
    const before = this.snapshot.room;
    if (msg.type === 'ended' && msg.reason === 'server_shutdown' && (before.phase === 'joined' || before.phase === 'lobby')) {
      // A restarting server: get back in once it is up again, as after a broken connection.
      this.connectionLost();
      return;
    }
    const room = reduce(before, msg);
    if (room !== before) {
      this.update({ room });
      if (room.participants !== before.participants && room.selfId) this.e2ee?.setParticipants(room.selfId, room.participants);
    }

    switch (msg.type) {
      case 'lobby_wait':
        this.awaitingJoin = false;
        this.reconnectAttempts = 0;
        break;
      case 'error':
        // The server refused the join (the meeting ended meanwhile, the invitation was
        // revoked, ...): trying again would not help.
        if (this.awaitingJoin) {
          // ... except while a cluster moves the meeting, or the database restarts: a
          // participant who was in gets back in as after a broken connection.
          if (msg.code === 'cluster_unavailable' || msg.code === 'database_unavailable') {
            this.awaitingJoin = false;
            this.connectionLost();
            break;
          }
          this.setRejoinToken(null);
          this.finish('join_failed');
        }
        break;
      case 'joined': {
        this.awaitingJoin = false;
        this.reconnectAttempts = 0;
        this.setRejoinToken(msg.rejoin_token);
        // Muted by a moderator before (the server keeps that across a reconnect or reload).
        const me = msg.participants.find((p) => p.id === msg.self_id);
        if (me?.muted_by_moderator && !this.snapshot.local.audioMuted) {
          if (this.audioTrack) this.audioTrack.enabled = false;
          this.updateLocal({ audioMuted: true });
        }
        this.startEncryption(msg.self_id, msg.participants);
        this.startMedia(msg.ice_servers ?? []);
        // A new connection is a new participant at the server: it knows nothing of the tiles.
        this.toldVideos = null;
        this.tellVideos();
        break;
      }
      case 'answer':
        void this.peer?.handleAnswer(msg.sdp, msg.tracks);
        break;
      case 'renegotiate':
        this.peer?.handleRenegotiate(msg.audio, msg.video);
        break;
      case 'redirect':
        this.followRedirect(msg.url);
        break;
      case 'maintenance':
        this.update({ room: maintenanceAnnounced(this.snapshot.room, msg.in_ms, Date.now()) });
        break;
      case 'media_lost':
        // The media server dropped this connection's media (its worker was restarted): the
        // browser would notice only after its consent checks went unanswered.
        this.mediaLost('the media server lost the media connection');
        break;
      case 'participant_updated':
        if (msg.participant.id === room.selfId && msg.participant.muted_by_moderator && !this.snapshot.local.audioMuted) {
          if (this.audioTrack) this.audioTrack.enabled = false;
          this.updateLocal({ audioMuted: true });
        }
        break;
      case 'lobby_changed':
        if (msg.arrived && isModerator(room)) playChime();
        break;
      case 'ended':
        // Removed, denied, ended, or replaced by another tab: this tab's pass is no use any more.
        this.setRejoinToken(null);
        this.teardown();
        break;
      default:
        break;
    }
  }

  /** Joins the meeting's MLS group: a device key in the worker, a credential, a key package. */
  private startEncryption(selfId: string, participants: Participant[]): void {
    const e2ee = this.e2ee;
    if (!e2ee || this.e2eeStarted) return;
    this.e2eeStarted = true;
    e2ee.setParticipants(selfId, participants);
    const me = participants.find((p) => p.id === selfId);
    const { meetingId, inviteToken } = this.opts;
    void e2ee
      .start((deviceKey) => {
        if (me?.kind === 'invited_guest' && inviteToken) return api.credential({ device_key: deviceKey, invite_token: inviteToken });
        if (me?.kind === 'guest') return api.credential({ device_key: deviceKey, meeting_id: meetingId, display_name: me.display_name });
        return api.credential({ device_key: deviceKey });
      })
      .catch((e) => console.warn('klausur: encryption could not start', e));
  }

  private addNotice(notice: E2eeNotice): void {
    const last = this.snapshot.notices.at(-1);
    const entry: NoticeEntry = { seq: (last?.seq ?? 0) + 1, at: Date.now(), notice };
    this.update({ notices: [...this.snapshot.notices, entry].slice(-MAX_NOTICES) });
  }

  /** `iceServers`: the TURN server with this participant's credentials, if the server has one. */
  private startMedia(iceServers: IceServer[]): void {
    if (this.peer || !this.e2ee) return;
    const e2ee = this.e2ee;
    this.peer = new PeerSession(
      {
        sendOffer: (sdp, sources) => this.send({ type: 'offer', sdp, sources }),
        onRemoteTracks: (remote) => this.update({ remote }),
        onConnected: () => {
          this.mediaConnected = true;
        },
        // Often the network under both connections changed (a laptop from Wi-Fi to a mobile
        // network): signaling on the old address is dead too, without knowing it. Asking the
        // server at once gets everyone back in seconds instead of after the keepalive's 20 to
        // 40 s; on a live connection it costs one `ping`.
        onDisconnected: () => this.signaling?.probe(),
        onFailure: (reason) => {
          // An offer the server never answered: the media session cannot go on (docs in peer.ts).
          if ((reason === 'connection_failed' && this.mediaConnected) || reason === 'no_answer') this.mediaLost();
          else console.warn('klausur: media problem:', reason);
        },
      },
      { audio: this.audioTrack, video: this.snapshot.local.cameraTrack, iceServers },
      {
        attachSender: (sender, source) => e2ee.attachSender(sender, source),
        attachReceiver: (receiver, kind) => e2ee.attachReceiver(receiver, kind),
      },
    );
    this.peer.negotiate();
    this.sendMediaState();
  }

  private sendMediaState(): void {
    const l = this.snapshot.local;
    this.send({ type: 'media_state', audio_muted: l.audioMuted, video_muted: l.videoMuted, screen_sharing: l.screenSharing });
  }

  // ---- local media actions ----

  async toggleMicrophone(): Promise<void> {
    const l = this.snapshot.local;
    const me = this.snapshot.room.participants.find((p) => p.id === this.snapshot.room.selfId);
    if (l.audioMuted && me?.muted_by_moderator) return;
    if (l.audioMuted) {
      if (!this.audioTrack) {
        try {
          this.audioTrack = await getMicrophone(this.opts.audioDeviceId);
          await this.peer?.setMicrophoneTrack(this.audioTrack);
        } catch (e) {
          this.updateLocal({ deviceError: 'microphone' });
          return;
        }
      }
      this.audioTrack.enabled = true;
      this.updateLocal({ audioMuted: false, deviceError: null });
    } else {
      if (this.audioTrack) this.audioTrack.enabled = false;
      this.updateLocal({ audioMuted: true });
    }
    this.sendMediaState();
  }

  async toggleCamera(): Promise<void> {
    const l = this.snapshot.local;
    if (l.videoMuted) {
      let track: MediaStreamTrack;
      try {
        track = await getCamera(this.opts.videoDeviceId);
      } catch {
        this.updateLocal({ deviceError: 'camera' });
        return;
      }
      if (this.snapshot.room.phase === 'ended') {
        track.stop();
        return;
      }
      await this.peer?.setCameraTrack(track);
      this.updateLocal({ videoMuted: false, cameraTrack: track, deviceError: null });
    } else {
      await this.peer?.setCameraTrack(null);
      l.cameraTrack?.stop();
      this.updateLocal({ videoMuted: true, cameraTrack: null });
    }
    this.sendMediaState();
  }

  async toggleScreenShare(): Promise<void> {
    if (this.snapshot.local.screenSharing) {
      await this.stopScreenShare();
      return;
    }
    let track: MediaStreamTrack;
    try {
      track = await getScreen();
    } catch (e) {
      if (!(e instanceof DOMException && e.name === 'NotAllowedError')) this.updateLocal({ deviceError: 'screen' });
      return;
    }
    if (!this.peer) {
      track.stop();
      return;
    }
    track.addEventListener('ended', () => void this.stopScreenShare());
    this.updateLocal({ screenSharing: true, screenTrack: track, deviceError: null });
    await this.peer.startScreen(track);
    this.sendMediaState();
  }

  private async stopScreenShare(): Promise<void> {
    const l = this.snapshot.local;
    if (!l.screenSharing) return;
    l.screenTrack?.stop();
    this.updateLocal({ screenSharing: false, screenTrack: null });
    await this.peer?.stopScreen();
    this.sendMediaState();
  }

  clearDeviceError(): void {
    this.updateLocal({ deviceError: null });
  }

  // ---- chat and moderation ----

  /**
   * Sends a chat message, end-to-end encrypted by the encryption worker; it shows at once as
   * "sending" and becomes "sent" when the server relayed it to the others.
   */
  sendChat(text: string): void {
    const t = chatText(text);
    if (t === null || !this.e2ee) return;
    const id = ++this.chatIds;
    this.update({ room: chatWritten(this.snapshot.room, id, t, Date.now()) });
    this.e2ee.sendChat(id, t);
  }

  /**
   * Lets someone in from the lobby, or admits someone in the meeting who waits for the
   * encrypted group because the moderator who let them in has left.
   */
  admit(participantId: string): void {
    // Remember it in the encryption worker first: only then will this client add them.
    const { lobby, participants } = this.snapshot.room;
    const entry = lobby.find((l) => l.id === participantId) ?? participants.find((p) => p.id === participantId);
    if (entry) this.e2ee?.admitted(participantId, entry.display_name);
    this.send({ type: 'admit', participant_id: participantId });
  }

  deny(participantId: string): void {
    this.send({ type: 'deny', participant_id: participantId });
  }

  remove(participantId: string): void {
    this.send({ type: 'remove', participant_id: participantId });
  }

  mute(participantId: string, muted: boolean): void {
    this.send({ type: 'mute', participant_id: participantId, muted });
  }

  /**
   * The remote videos the page shows and how large (device pixels). The server forwards only
   * these (docs/protocol.md, `video_tiles`), and none before this connection is in the
   * encrypted group; told again when the set or a size changes notably.
   */
  showVideos(tiles: VideoTile[]): void {
    this.shownVideos = tiles;
    this.tellVideos();
  }

  private tellVideos(): void {
    // Until this connection is in the encrypted group no video can be decrypted: it asks for
    // none, so that a slow link carries the group's messages and the audio first. (The browser
    // tests' outsider asks anyway, as a hostile client would.)
    const inGroup = this.snapshot.e2ee?.epoch != null || (this.e2ee?.isTestOutsider() ?? false);
    const tiles = inGroup ? this.shownVideos : [];
    if (!tiles || this.snapshot.room.phase !== 'joined' || !tilesChanged(this.toldVideos, tiles)) return;
    this.toldVideos = tiles;
    this.send({ type: 'video_tiles', tiles });
  }

  /** Raise or lower the own hand (a request to speak). */
  raiseHand(raised: boolean): void {
    this.send({ type: 'raise_hand', raised });
  }

  /** Moderator: lower someone's raised hand. */
  lowerHand(participantId: string): void {
    this.send({ type: 'lower_hand', participant_id: participantId });
  }

  setModerator(participantId: string, moderator: boolean): void {
    this.send({ type: 'set_moderator', participant_id: participantId, moderator });
  }

  /** Moderator: show a participant large to everyone, or nobody (`null`). */
  spotlight(participantId: string | null): void {
    this.send({ type: 'spotlight', participant_id: participantId });
  }

  setLocked(locked: boolean): void {
    this.send({ type: 'lock', locked });
  }

  endMeeting(): void {
    this.send({ type: 'end_meeting' });
  }

  // ---- test hooks (read-only, plus raw frames for the malformed-input test) ----

  stats(): Promise<InboundStat[]> {
    return this.peer ? this.peer.stats() : Promise.resolve([]);
  }

  screenSending(): ScreenSending | null {
    return this.peer ? this.peer.screenSending() : null;
  }

  cameraLayers(): Promise<OutboundLayer[]> {
    return this.peer ? this.peer.cameraLayers() : Promise.resolve([]);
  }

  /** How the own media connection runs (UDP, TCP or through a TURN server); null while none. */
  mediaTransport(): Promise<MediaTransport | null> {
    return this.peer ? this.peer.transport().catch(() => null) : Promise.resolve(null);
  }

  rawSend(text: string): boolean {
    return this.signaling?.rawSend(text) ?? false;
  }

  /** The media connection's states, for a test's failure report. */
  connectionState(): { connection: string; ice: string; signaling: string; mediaConnected: boolean } | null {
    const pc = this.peer?.pc;
    return pc ? { connection: pc.connectionState, ice: pc.iceConnectionState, signaling: pc.signalingState, mediaConnected: this.mediaConnected } : null;
  }

  e2eeDiagnostics(): Promise<E2eeDiagnostics | null> {
    return this.e2ee ? this.e2ee.diagnostics() : Promise.resolve(null);
  }
}

export interface KlausurTestHooks {
  stats(): Promise<InboundStat[]>;
  /** The own media connection's transport (selected candidate pair). */
  transport(): Promise<MediaTransport | null>;
  /** How the own screen is sent (null while it is not). */
  screenSending(): ScreenSending | null;
  /** How the own camera's simulcast layers go out. */
  cameraLayers(): Promise<OutboundLayer[]>;
  rawSend(text: string): boolean;
  readonly lastError: { code: string; message: string } | null;
  readonly selfId: string | null;
  readonly phase: string;
  participants(): { id: string; display_name: string; role: string; kind: string }[];
  /** Telephone callers present, by the server's participant kind or the roster's credential kind. */
  phoneCallers(): PhoneCaller[];
  /** Encryption state: phase, epoch, security code, roster with verification flags. */
  e2ee(): E2eeStatus | null;
  e2eeDiagnostics(): Promise<E2eeDiagnostics | null>;
  notices(): E2eeNotice[];
  /** Test-hooks build only: plaintext frames captured before encryption. */
  testCapture(): Promise<unknown>;
  /** Test-hooks build only: both frame ciphers timed in the encryption worker. */
  testFrameBench(): Promise<unknown>;
  /** Test-hooks build only: commit processing times in a group of `members` in the worker. */
  testCommitBench(members: number, rounds: number): Promise<unknown>;
  /**
   * For the dial-in tests: how much of the received microphone audio of `participantId`, over
   * `ms`, lies at each of `freqs` (share of the 100 Hz to 4 kHz energy within 20 Hz of it).
   */
  toneShares(participantId: string, freqs: number[], ms: number): Promise<number[] | null>;
  /** The share of `freq` in each `windowMs` window of a participant's received microphone. */
  toneWindows(participantId: string, freq: number, windowMs: number, ms: number): Promise<number[] | null>;
  /** The media connection's states (null without one). */
  connection(): { connection: string; ice: string; signaling: string; mediaConnected: boolean } | null;
}

declare global {
  interface Window {
    __klausur?: KlausurTestHooks;
  }
}

function installTestHooks(c: MeetingController): void {
  const microphone = (participantId: string) =>
    c.getSnapshot().remote.find((r) => r.participantId === participantId && r.source === 'microphone')?.track;
  window.__klausur = {
    stats: () => c.stats(),
    transport: () => c.mediaTransport(),
    screenSending: () => c.screenSending(),
    cameraLayers: () => c.cameraLayers(),
    rawSend: (text: string) => c.rawSend(text),
    get lastError() {
      return c.getSnapshot().room.lastError;
    },
    get selfId() {
      return c.getSnapshot().room.selfId;
    },
    get phase() {
      return c.getSnapshot().room.phase;
    },
    participants: () =>
      c.getSnapshot().room.participants.map((p) => ({ id: p.id, display_name: p.display_name, role: p.role, kind: p.kind })),
    phoneCallers: () => phoneCallers(c.getSnapshot().room.participants, c.getSnapshot().e2ee?.roster),
    e2ee: () => c.getSnapshot().e2ee,
    e2eeDiagnostics: () => c.e2eeDiagnostics(),
    connection: () => c.connectionState(),
    notices: () => c.getSnapshot().notices.map((n) => n.notice),
    testCapture: () => E2eeSession.testCapture(),
    testFrameBench: () => E2eeSession.testFrameBench(),
    testCommitBench: (members: number, rounds: number) => E2eeSession.testCommitBench(members, rounds),
    toneShares: async (participantId: string, freqs: number[], ms: number) => {
      const track = microphone(participantId);
      return track ? toneShares(track, freqs, ms) : null;
    },
    toneWindows: async (participantId: string, freq: number, windowMs: number, ms: number) => {
      const track = microphone(participantId);
      return track ? toneWindows(track, freq, windowMs, ms) : null;
    },
  };
}

/**
 * Samples a received audio track's spectrum every `windowMs` for `ms` (an analyser over the
 * last `fftSize` samples) and hands each sample's power per bin, and the bin width, to `each`.
 */
async function sampleSpectrum(
  track: MediaStreamTrack,
  fftSize: number,
  windowMs: number,
  ms: number,
  each: (power: Float64Array, hz: number) => void,
): Promise<void> {
  const ctx = new AudioContext();
  try {
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = fftSize;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    const bins = new Float32Array(analyser.frequencyBinCount);
    const power = new Float64Array(analyser.frequencyBinCount);
    const hz = ctx.sampleRate / analyser.fftSize;
    const end = Date.now() + ms;
    while (Date.now() < end) {
      await new Promise((r) => setTimeout(r, windowMs));
      analyser.getFloatFrequencyData(bins);
      for (let i = 0; i < bins.length; i++) power[i] = Number.isFinite(bins[i]) ? 10 ** (bins[i] / 10) : 0;
      each(power, hz);
    }
  } finally {
    await ctx.close();
  }
}

/** The share of the band `f` ± 20 Hz in the speech band (100 to 4000 Hz) of `power`. */
function bandShare(power: Float64Array, hz: number, f: number): number {
  const band = (lo: number, hi: number) => {
    let sum = 0;
    for (let i = Math.floor(lo / hz); i <= Math.ceil(hi / hz) && i < power.length; i++) sum += power[i];
    return sum;
  };
  const total = band(100, 4000);
  return total > 0 ? band(f - 20, f + 20) / total : 0;
}

/** The spectrum of a received audio track, averaged over `ms`: each frequency's share. */
async function toneShares(track: MediaStreamTrack, freqs: number[], ms: number): Promise<number[]> {
  let sum: Float64Array | null = null;
  let binHz = 0;
  await sampleSpectrum(track, 8192, 100, ms, (power, hz) => {
    sum ??= new Float64Array(power.length);
    for (let i = 0; i < power.length; i++) sum[i] += power[i];
    binHz = hz;
  });
  return freqs.map((f) => (sum ? bandShare(sum, binHz, f) : 0));
}

/** The share of `freq` in each `windowMs` window of a received audio track over `ms` (each
 * window analysed alone: a gap or a garbled stretch shows as a low share). */
async function toneWindows(track: MediaStreamTrack, freq: number, windowMs: number, ms: number): Promise<number[]> {
  const shares: number[] = [];
  // The analyser looks back at most one window (2048 samples: 43 ms at 48 kHz, 10.7 Hz bins).
  await sampleSpectrum(track, 2048, windowMs, ms, (power, hz) => shares.push(bandShare(power, hz, freq)));
  return shares;
}

const REJOIN_KEY = 'klausur.rejoin.';

/**
 * The pass of a guest admitted from the lobby, kept in this tab's session storage: it brings the
 * tab back in after a reload too (to the meeting; the encrypted group then needs a moderator's
 * admit, as the old device key is gone). Session storage ends with the tab.
 */
function loadRejoinToken(meetingId: string): string | null {
  try {
    return window.sessionStorage.getItem(REJOIN_KEY + meetingId);
  } catch {
    return null;
  }
}

function storeRejoinToken(meetingId: string, token: string | null): void {
  try {
    if (token) window.sessionStorage.setItem(REJOIN_KEY + meetingId, token);
    else window.sessionStorage.removeItem(REJOIN_KEY + meetingId);
  } catch {
    // No storage (private mode, disabled): the pass lives in memory only.
  }
}
