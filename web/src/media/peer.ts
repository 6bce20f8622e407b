// The one RTCPeerConnection of a participant. The browser is always the offerer;
// negotiations are serialized (never two offers in flight). An offer waits for its answer as long
// as it takes: the server answers every offer in order, and one that may have reached it is
// never rolled back (the server may already have applied it; an offer made after a rollback
// then no longer fits the server's state and is refused). Only an answer that does not come at
// all ends the media session (`no_answer`), and the meeting joins again.
import type { IceServer, SendSource, Source, TrackAssignment } from '../signaling/protocol';

export interface RemoteTrack {
  mid: string;
  participantId: string;
  source: Source;
  kind: 'audio' | 'video';
  track: MediaStreamTrack;
}

export interface InboundStat {
  participant_id: string;
  source: Source;
  kind: 'audio' | 'video';
  mid: string;
  bytesReceived: number;
  packetsReceived: number;
  framesDecoded: number;
  /** Video: the size of the last decoded frame (0 before one). */
  frameWidth: number;
  frameHeight: number;
  /** How the link repaired it: packets lost, resends asked for (NACK) and received, keyframes
   * asked for (PLI), and the picture's freezes (count and seconds). */
  packetsLost: number;
  nackCount: number;
  retransmittedPacketsReceived: number;
  pliCount: number;
  freezeCount: number;
  totalFreezesDuration: number;
}

/** How the shared screen is sent (for the tests): the track's hint and size, the sender's
 * parameters. */
export interface ScreenSending {
  contentHint: string;
  width: number;
  height: number;
  frameRate: number;
  degradationPreference: string | null;
  maxBitrate: number | null;
  maxFramerate: number | null;
}

/** How the media connection runs: straight to the server over UDP or TCP (ICE-TCP), or through
 * a TURN server (`relay`, with the protocol to the TURN server). From the selected candidate
 * pair of `getStats`. */
export interface MediaTransport {
  kind: 'udp' | 'tcp' | 'relay';
  /** For `relay`: how the browser reaches the TURN server (`udp`, `tcp` or `tls`). */
  relayProtocol: string | null;
  /** Whether the media server's end of the pair is an IPv6 address (null when the browser does
   * not say). */
  ipv6: boolean | null;
}

export interface PeerCallbacks {
  sendOffer(sdp: string, sources: SendSource[]): void;
  onRemoteTracks(tracks: RemoteTrack[]): void;
  onFailure?(reason: string): void;
  /** The media connection (ICE and DTLS) is up. */
  onConnected?(): void;
  /** The media connection stopped getting answers (ICE `disconnected`): it may come back by
   * itself, or fail some seconds later. */
  onDisconnected?(): void;
}

/**
 * End-to-end encryption of every frame: the session attaches its transform to each sender when
 * the transceiver is created (before any frame can leave) and to each receiver when it appears.
 */
export interface FrameTransforms {
  attachSender(sender: RTCRtpSender, source: Source): void;
  attachReceiver(receiver: RTCRtpReceiver, kind: 'audio' | 'video'): void;
}

const ICE_GATHER_TIMEOUT_MS = 1000;
/** After this long without an answer the offer is reported slow (a congested link); after
 * `ANSWER_GIVE_UP` times as long the media session is given up. */
const ANSWER_SLOW_MS = 15_000;
const ANSWER_GIVE_UP = 4;

/** [`ANSWER_SLOW_MS`]; the test-hooks build lets a browser test shorten it
 * (`window.__klausurAnswerSlowMs`), so that a test can hold an answer back past it without the
 * server meanwhile giving up on a media connection that has not started. */
function answerSlowMs(): number {
  if (import.meta.env.MODE === 'test-hooks') {
    const t = (globalThis as { __klausurAnswerSlowMs?: unknown }).__klausurAnswerSlowMs;
    if (typeof t === 'number') return t;
  }
  return ANSWER_SLOW_MS;
}

export class PeerSession {
  readonly pc: RTCPeerConnection;
  private readonly mic: RTCRtpTransceiver;
  private readonly camera: RTCRtpTransceiver;
  private screen: RTCRtpTransceiver | null = null;
  private assignments: TrackAssignment[] = [];
  private inFlight = false;
  private again = false;
  private answerTimer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;

  constructor(
    private readonly cb: PeerCallbacks,
    initial: { audio: MediaStreamTrack | null; video: MediaStreamTrack | null; iceServers?: IceServer[] },
    private readonly transforms: FrameTransforms,
  ) {
    // The server's own candidates (UDP, and TCP for networks that drop UDP) need no ICE server;
    // a TURN server given by the server is for networks that let only TCP/TLS to port 443 out.
    const iceServers = (initial.iceServers ?? []).map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
    this.pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    // Transforms go on before a track is attached, so no frame leaves unencrypted.
    this.mic = this.sendTransceiver('audio', 'microphone', initial.audio);
    this.camera = this.sendTransceiver('video', 'camera', initial.video);
    this.pc.addEventListener('connectionstatechange', () => {
      if (this.pc.connectionState === 'connected') this.cb.onConnected?.();
      if (this.pc.connectionState === 'disconnected') this.cb.onDisconnected?.();
      if (this.pc.connectionState === 'failed') this.cb.onFailure?.('connection_failed');
    });
  }

  private sendTransceiver(kind: 'audio' | 'video', source: Source, track: MediaStreamTrack | null): RTCRtpTransceiver {
    const init: RTCRtpTransceiverInit = { direction: 'sendonly' };
    // The camera goes out in three sizes; the server forwards each participant the one that
    // fits the tile and the bandwidth (the encryption transform sees every layer's frames).
    if (source === 'camera') init.sendEncodings = CAMERA_LAYERS.map((l) => ({ ...l }));
    const t = limitCodecs(this.pc.addTransceiver(kind, init));
    this.transforms.attachSender(t.sender, source);
    if (track) void t.sender.replaceTrack(track).then(() => (source === 'camera' ? fitLayers(t.sender, track) : undefined));
    return t;
  }

  /** Starts (or queues) a negotiation round. */
  negotiate(): void {
    if (this.closed) return;
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    this.again = false;
    void this.offer().catch((e) => {
      console.warn('klausur: offer failed', e);
      this.finishRound();
    });
  }

  private async offer(): Promise<void> {
    if (this.pc.signalingState === 'have-local-offer') {
      await this.pc.setLocalDescription({ type: 'rollback' });
    }
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    await this.waitForIceGathering();
    if (this.closed) return;
    const sdp = this.pc.localDescription?.sdp ?? offer.sdp ?? '';
    this.cb.sendOffer(sdp, this.sendSources());
    const slow = answerSlowMs();
    this.answerTimer = setTimeout(() => {
      console.warn(`klausur: no answer after ${slow} ms, still waiting`);
      this.answerTimer = setTimeout(() => {
        console.warn('klausur: no answer received; giving up the media session');
        this.answerTimer = null;
        this.cb.onFailure?.('no_answer');
      }, slow * (ANSWER_GIVE_UP - 1));
    }, slow);
  }

  private waitForIceGathering(): Promise<void> {
    if (this.pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.pc.removeEventListener('icegatheringstatechange', check);
        resolve();
      };
      const check = () => {
        if (this.pc.iceGatheringState === 'complete') done();
      };
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      this.pc.addEventListener('icegatheringstatechange', check);
    });
  }

  private sendSources(): SendSource[] {
    const out: SendSource[] = [];
    const push = (t: RTCRtpTransceiver | null, source: Source) => {
      if (t && t.mid !== null && !isStopped(t) && t.direction === 'sendonly') out.push({ mid: t.mid, source });
    };
    push(this.mic, 'microphone');
    push(this.camera, 'camera');
    push(this.screen, 'screen');
    return out;
  }

  async handleAnswer(sdp: string, tracks: TrackAssignment[]): Promise<void> {
    if (this.closed) return;
    if (this.pc.signalingState !== 'have-local-offer') {
      console.warn('klausur: unexpected answer ignored');
      return;
    }
    try {
      await this.pc.setRemoteDescription({ type: 'answer', sdp });
      this.assignments = tracks;
      this.publishRemoteTracks();
    } catch (e) {
      console.warn('klausur: could not apply answer', e);
      this.cb.onFailure?.('bad_answer');
    } finally {
      this.finishRound();
    }
  }

  private finishRound(): void {
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.answerTimer = null;
    this.inFlight = false;
    if (this.again && !this.closed) this.negotiate();
  }

  /** Ensures at least `audio` and `video` receive-only transceivers exist, then re-offers. */
  handleRenegotiate(audio: number, video: number): void {
    if (this.closed) return;
    const have = { audio: 0, video: 0 };
    for (const t of this.pc.getTransceivers()) {
      if (isStopped(t) || t.direction !== 'recvonly') continue;
      const kind = t.receiver.track.kind as 'audio' | 'video';
      have[kind] += 1;
    }
    for (let i = have.audio; i < audio; i++) this.recvTransceiver('audio');
    for (let i = have.video; i < video; i++) this.recvTransceiver('video');
    this.negotiate();
  }

  /**
   * A receive-only transceiver with the decrypting transform. Chromium applies a receiver's
   * transform only if it is set before the offer that negotiates the transceiver (set later, the
   * frames bypass it), so it goes on here, at creation.
   */
  private recvTransceiver(kind: 'audio' | 'video'): void {
    const t = limitCodecs(this.pc.addTransceiver(kind, { direction: 'recvonly' }));
    this.transforms.attachReceiver(t.receiver, kind);
  }

  private publishRemoteTracks(): void {
    const byMid = new Map<string, RTCRtpTransceiver>();
    for (const t of this.pc.getTransceivers()) if (t.mid !== null) byMid.set(t.mid, t);
    const out: RemoteTrack[] = [];
    for (const a of this.assignments) {
      const t = byMid.get(a.mid);
      if (!t || isStopped(t)) continue;
      const track = t.receiver.track;
      out.push({
        mid: a.mid,
        participantId: a.participant_id,
        source: a.source,
        kind: track.kind as 'audio' | 'video',
        track,
      });
    }
    this.cb.onRemoteTracks(out);
  }

  async setMicrophoneTrack(track: MediaStreamTrack | null): Promise<void> {
    await this.mic.sender.replaceTrack(track);
  }

  async setCameraTrack(track: MediaStreamTrack | null): Promise<void> {
    await this.camera.sender.replaceTrack(track);
    if (track) await fitLayers(this.camera.sender, track);
  }

  /** Adds (or re-activates) the screen-share transceiver and re-offers. */
  async startScreen(track: MediaStreamTrack): Promise<void> {
    if (this.screen && !isStopped(this.screen)) {
      this.screen.direction = 'sendonly';
      await this.screen.sender.replaceTrack(track);
    } else {
      this.screen = this.sendTransceiver('video', 'screen', track);
    }
    await keepResolution(this.screen.sender);
    this.negotiate();
  }

  /** Stops sending the screen: the transceiver is set inactive (kept for reuse) and we re-offer. */
  async stopScreen(): Promise<void> {
    if (!this.screen || isStopped(this.screen)) return;
    await this.screen.sender.replaceTrack(null);
    this.screen.direction = 'inactive';
    this.negotiate();
  }

  /** Per-remote-track inbound statistics, mapped to participants by mid. */
  async stats(): Promise<InboundStat[]> {
    const report = await this.pc.getStats();
    const byMid = new Map(this.assignments.map((a) => [a.mid, a]));
    const out: InboundStat[] = [];
    report.forEach((s: Record<string, unknown>) => {
      if (s.type !== 'inbound-rtp') return;
      const mid = typeof s.mid === 'string' ? s.mid : null;
      const a = mid !== null ? byMid.get(mid) : undefined;
      if (!a || mid === null) return;
      out.push({
        participant_id: a.participant_id,
        source: a.source,
        kind: s.kind === 'audio' ? 'audio' : 'video',
        mid,
        bytesReceived: Number(s.bytesReceived ?? 0),
        packetsReceived: Number(s.packetsReceived ?? 0),
        framesDecoded: Number(s.framesDecoded ?? 0),
        frameWidth: Number(s.frameWidth ?? 0),
        frameHeight: Number(s.frameHeight ?? 0),
        packetsLost: Number(s.packetsLost ?? 0),
        nackCount: Number(s.nackCount ?? 0),
        retransmittedPacketsReceived: Number(s.retransmittedPacketsReceived ?? 0),
        pliCount: Number(s.pliCount ?? 0),
        freezeCount: Number(s.freezeCount ?? 0),
        totalFreezesDuration: Number(s.totalFreezesDuration ?? 0),
      });
    });
    return out;
  }

  /** How the camera's layers go out (simulcast), from the sender's statistics. */
  async cameraLayers(): Promise<OutboundLayer[]> {
    const report = await this.pc.getStats(this.camera.sender.track ?? null);
    const out: OutboundLayer[] = [];
    report.forEach((s: Record<string, unknown>) => {
      if (s.type !== 'outbound-rtp' || s.kind !== 'video') return;
      out.push({
        rid: typeof s.rid === 'string' ? s.rid : null,
        frameWidth: Number(s.frameWidth ?? 0),
        bytesSent: Number(s.bytesSent ?? 0),
        qualityLimitationReason: typeof s.qualityLimitationReason === 'string' ? s.qualityLimitationReason : null,
      });
    });
    return out.sort((a, b) => (a.rid ?? '').localeCompare(b.rid ?? ''));
  }

  /** How the screen is sent; null while it is not. */
  screenSending(): ScreenSending | null {
    const track = this.screen?.sender.track;
    if (!this.screen || !track) return null;
    const settings = track.getSettings();
    const params = this.screen.sender.getParameters() as RTCRtpSendParameters & { degradationPreference?: string };
    const e = params.encodings?.[0];
    return {
      contentHint: track.contentHint,
      width: settings.width ?? 0,
      height: settings.height ?? 0,
      frameRate: settings.frameRate ?? 0,
      degradationPreference: params.degradationPreference ?? null,
      maxBitrate: e?.maxBitrate ?? null,
      maxFramerate: e?.maxFramerate ?? null,
    };
  }

  /** The transport of the selected candidate pair; null while none is selected. */
  async transport(): Promise<MediaTransport | null> {
    const report = await this.pc.getStats();
    return selectedTransport(report);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.answerTimer) clearTimeout(this.answerTimer);
    this.pc.close();
  }
}

/** One simulcast layer of the own camera as sent (`PeerSession.cameraLayers`). */
export interface OutboundLayer {
  rid: string | null;
  frameWidth: number;
  bytesSent: number;
  /** Why the browser sends less than asked: `bandwidth`, `cpu`, `none` or `other`. */
  qualityLimitationReason: string | null;
}

/**
 * Which of the {@link CAMERA_LAYERS} a camera of this size sends: all three from 960x540 up,
 * the half and full size from 480x270, below that only the full size. A browser sends no more
 * layers than its encoder allows for the size (Chromium: three from 960x540, two from 480x270),
 * and it keeps the lowest ones, so a small camera with all three on would send only a quarter
 * of its picture. Pure, for the unit test.
 */
export function activeLayers(width: number, height: number): boolean[] {
  const pixels = width * height;
  const n = pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  return CAMERA_LAYERS.map((_, i) => i >= CAMERA_LAYERS.length - n);
}

/** Switches the camera's layers on or off for the track's size ({@link activeLayers}). */
async function fitLayers(sender: RTCRtpSender, track: MediaStreamTrack): Promise<void> {
  const { width, height } = track.getSettings();
  if (!width || !height) return;
  try {
    const params = sender.getParameters();
    const active = activeLayers(width, height);
    if (params.encodings.length !== active.length) return;
    params.encodings.forEach((e, i) => (e.active = active[i]));
    await sender.setParameters(params);
  } catch (e) {
    console.warn('klausur: camera layers not set', e);
  }
}

/** The transport of the selected candidate pair in a `getStats` report. */
export function selectedTransport(report: RTCStatsReport | Map<string, Record<string, unknown>>): MediaTransport | null {
  const all = report as Map<string, Record<string, unknown>>;
  let pairId: string | null = null;
  all.forEach((s) => {
    if (s.type === 'transport' && typeof s.selectedCandidatePairId === 'string') pairId = s.selectedCandidatePairId;
  });
  if (pairId === null) {
    // Browsers without `selectedCandidatePairId`: the nominated, succeeded pair.
    all.forEach((s) => {
      if (pairId === null && s.type === 'candidate-pair' && s.nominated === true && s.state === 'succeeded') pairId = String(s.id);
    });
  }
  const pair = pairId !== null ? all.get(pairId) : undefined;
  const local = pair && typeof pair.localCandidateId === 'string' ? all.get(pair.localCandidateId) : undefined;
  if (!local) return null;
  const remote = pair && typeof pair.remoteCandidateId === 'string' ? all.get(pair.remoteCandidateId) : undefined;
  const address = remote?.address ?? remote?.ip;
  const ipv6 = typeof address === 'string' && address !== '' ? address.includes(':') : null;
  if (local.candidateType === 'relay') {
    return { kind: 'relay', relayProtocol: typeof local.relayProtocol === 'string' ? local.relayProtocol : null, ipv6 };
  }
  return { kind: local.protocol === 'tcp' ? 'tcp' : 'udp', relayProtocol: null, ipv6 };
}

function isStopped(t: RTCRtpTransceiver): boolean {
  return t.currentDirection === 'stopped' || (t as { stopped?: boolean }).stopped === true;
}

/**
 * The server forwards Opus and VP8 only. Offering just those (with VP8's retransmission codec)
 * keeps each m-line small: a browser's full codec list makes an offer grow by about 4 KiB per
 * participant, this by well under 1 KiB.
 */
const KEEP = new Set(['audio/opus', 'video/vp8', 'video/rtx']);

function limitCodecs(t: RTCRtpTransceiver): RTCRtpTransceiver {
  const kind = t.receiver.track.kind;
  const caps = typeof RTCRtpReceiver.getCapabilities === 'function' ? RTCRtpReceiver.getCapabilities(kind) : null;
  if (!caps || typeof t.setCodecPreferences !== 'function') return t;
  const codecs = caps.codecs.filter((c) => KEEP.has(c.mimeType.toLowerCase()));
  if (codecs.some((c) => c.mimeType.toLowerCase() !== 'video/rtx')) {
    try {
      t.setCodecPreferences(codecs);
    } catch {
      // A browser that refuses the list offers its defaults; the server picks Opus/VP8 anyway.
    }
  }
  return t;
}

/** The most a shared screen may send: enough for sharp full-HD text at 15 frames per second. */
export const SCREEN_MAX_BITRATE = 2_500_000;

/**
 * The camera's simulcast layers, low to high (the order the server ranks them by): a quarter,
 * half and the full capture size (320x180, 640x360 and 1280x720 from an HD camera), each
 * capped in bitrate; the lowest so that it and others' audio fit a 300 kbit/s link.
 * docs/architecture.md, "Media path", says how the server picks one.
 */
export const CAMERA_LAYERS: readonly RTCRtpEncodingParameters[] = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 100_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/**
 * A screen's sender keeps its resolution when bandwidth is short (frames go first, text stays
 * readable), at most 15 frames per second and {@link SCREEN_MAX_BITRATE}. A browser that does
 * not take these parameters sends the screen as it would anyway.
 */
async function keepResolution(sender: RTCRtpSender): Promise<void> {
  try {
    const params = sender.getParameters() as RTCRtpSendParameters & { degradationPreference?: string };
    params.degradationPreference = 'maintain-resolution';
    for (const e of params.encodings ?? []) {
      e.maxBitrate = SCREEN_MAX_BITRATE;
      e.maxFramerate = 15;
    }
    await sender.setParameters(params);
  } catch (e) {
    console.warn('klausur: screen sender parameters not taken', e);
  }
}
