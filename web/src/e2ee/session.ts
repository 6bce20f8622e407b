// The page side of end-to-end encryption: starts the encryption worker (worker.ts), relays the
// mls_* signaling messages and the participant list to it, and attaches RTCRtpScriptTransforms
// to senders and receivers. Keys never reach the page.

import type { ClientMsg, MlsContinuity, Participant, ServerMsg } from '../signaling/protocol';
import type { FromWorker, ToWorker } from './protocol';
import type { CapturedFrame, ChatEvent, E2eeDiagnostics, E2eeNotice, E2eeStatus, FrameBench, SendSourceName } from './types';
// The same asset the worker loads (one file, one hashed name): only its URL is imported here.
import wasmUrl from './pkg/klausur_e2ee_wasm_bg.wasm?url';

export type { CapturedFrame, ChatEvent, E2eeDiagnostics, E2eeNotice, E2eeStatus } from './types';
export type {
  CredentialKind,
  E2eePhase,
  E2eeWarning,
  MemberInfo,
  OutsiderView,
  RefusalReason,
  RosterView,
  TransformDiagnostics,
  VerificationFlag,
  WarningCode,
} from './types';

export interface E2eeSessionOptions {
  meetingId: string;
  /**
   * Device keys (hex -> name) of guests this user admitted from the lobby that a worker of this
   * page added to the group. Owned by the page across reconnects: each new worker gets them, and
   * adds such a guest's next device without asking when it proves continuity.
   */
  vouched: Map<string, string>;
  /** Sends a signaling message (mls_key_package, mls_member, mls_commit, mls_chat). */
  send(msg: ClientMsg): void;
  onStatus(s: E2eeStatus): void;
  onNotice(n: E2eeNotice): void;
  /** End-to-end encrypted chat: received messages and the outcome of own ones. */
  onChat(e: ChatEvent): void;
}

export interface IssuedCredential {
  /** Standard base64 of the signed credential. */
  credential: string;
  /** The identity CA's public key, hex. */
  ca_public_key: string;
}

const MLS_TYPES = new Set([
  'mls_create_group', 'mls_pending', 'mls_commit', 'mls_commit_result', 'mls_welcome', 'mls_reset', 'mls_chat',
  'mls_chat_result',
]);

let current: E2eeSession | null = null;
let prefetched = false;

export class E2eeSession {
  /** Whether this browser can encrypt media (RTCRtpScriptTransform in a dedicated worker). */
  static supported(): boolean {
    return (
      typeof window !== 'undefined' &&
      'RTCRtpScriptTransform' in window &&
      typeof Worker !== 'undefined' &&
      typeof WebAssembly === 'object'
    );
  }

  /**
   * Loads the encryption core's WebAssembly into the browser's cache while the participant is
   * still on the pre-join page (the server lets it be cached for good: its name changes with
   * its content). The worker, started on joining, then finds it there instead of loading it
   * (0.4 MB compressed) over a slow link that the meeting's audio and the group's messages
   * already need.
   */
  static prefetch(): void {
    if (prefetched || !E2eeSession.supported()) return;
    prefetched = true;
    void fetch(wasmUrl)
      .then((r) => r.arrayBuffer())
      .catch(() => {
        prefetched = false;
      });
  }

  private readonly worker: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, (v: unknown) => void>();
  private readonly deviceKey: Promise<string>;
  private closed = false;
  /** The connection is gone; the worker only keeps its device key (see `retire`). */
  private retired = false;
  /** Resolved once the continuity proof (if any) is with the worker: before the credential. */
  private continuityReady: Promise<void> = Promise.resolve();
  private lastStatus: E2eeStatus | null = null;
  /** Test-hooks builds only: never join the group (the "outsider" of the browser tests). */
  private testOutsider = false;
  private fetchCredential: ((deviceKeyHex: string) => Promise<IssuedCredential>) | null = null;

  constructor(private readonly opts: E2eeSessionOptions) {
    this.worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'klausur-e2ee' });
    let resolveKey: (hex: string) => void = () => undefined;
    let rejectKey: (e: Error) => void = () => undefined;
    this.deviceKey = new Promise<string>((res, rej) => {
      resolveKey = res;
      rejectKey = rej;
    });
    // Avoid an unhandled rejection when start() is never called.
    this.deviceKey.catch(() => undefined);
    this.worker.onmessage = (ev: MessageEvent<FromWorker>) => {
      const m = ev.data;
      switch (m.t) {
        case 'deviceKey':
          resolveKey(m.hex);
          break;
        case 'send':
          if (!this.closed && !this.retired) this.opts.send(m.msg);
          break;
        case 'vouched':
          this.opts.vouched.set(m.key, m.name);
          break;
        case 'needCredential':
          void this.renew();
          break;
        case 'status':
          if (this.retired) break;
          this.lastStatus = m.status;
          this.opts.onStatus(m.status);
          break;
        case 'notice':
          if (!this.retired) this.opts.onNotice(m.notice);
          break;
        case 'chat':
          if (!this.retired) this.opts.onChat(m.event);
          break;
        case 'continuityProof':
          this.answer(m.req, m.proof);
          break;
        case 'diagnostics':
        case 'testCapture':
          this.answer(m.req, m.t === 'diagnostics' ? m.data : m.frames);
          break;
        case 'testFrameBench':
          this.answer(m.req, m.result);
          break;
        case 'testCommitBench':
          this.answer(m.req, m.figures ?? { error: m.error });
          break;
        case 'fatal':
          rejectKey(new Error(m.message));
          this.fail(`encryption worker failed: ${m.message}`);
          break;
      }
    };
    this.worker.onerror = (ev) => {
      rejectKey(new Error(ev.message || 'worker error'));
      this.fail(`encryption worker failed: ${ev.message || 'error'}`);
    };
    let testPlaintext = false;
    if (import.meta.env.MODE === 'test-hooks') {
      const q = new URLSearchParams(window.location.search);
      testPlaintext = q.get('e2ee_test_plaintext') === '1';
      // An outsider: connected to the media server, but never asks to join the MLS group.
      this.testOutsider = q.get('e2ee_test_outsider') === '1';
      current = this;
    }
    this.post({ t: 'init', testPlaintext, meetingId: opts.meetingId, vouched: [...opts.vouched] });
  }

  /**
   * Test-hooks builds only: this client plays the outsider (`e2ee_test_outsider`), which, like
   * any hostile client, asks the server for video without being in the group. Always false in
   * the production build.
   */
  isTestOutsider(): boolean {
    return import.meta.env.MODE === 'test-hooks' && this.testOutsider;
  }

  /** The latest status (also delivered through onStatus). */
  status(): E2eeStatus | null {
    return this.lastStatus;
  }

  /**
   * Gets the device credential (the worker makes the device key; `fetchCredential` posts its
   * public half to POST /api/identity/credential) and sends the key package. Call once, after
   * `joined`. `fetchCredential` is called again shortly before the credential expires (it is
   * valid for an hour); the worker then commits the renewed credential to the group.
   */
  async start(fetchCredential: (deviceKeyHex: string) => Promise<IssuedCredential>): Promise<void> {
    if (import.meta.env.MODE === 'test-hooks' && this.testOutsider) return;
    this.fetchCredential = fetchCredential;
    let hex: string;
    try {
      hex = await this.deviceKey;
    } catch {
      return; // reported through onStatus/onNotice already
    }
    await this.continuityReady;
    try {
      const requestedAt = Date.now();
      const c = await fetchCredential(hex);
      this.post({ t: 'credential', credential: c.credential, caPublicKey: c.ca_public_key, requestedAt });
    } catch (e) {
      this.post({ t: 'credentialFailed', message: e instanceof Error ? e.message : String(e) });
    }
  }

  private async renew(): Promise<void> {
    const fetch = this.fetchCredential;
    if (!fetch || this.closed) return;
    try {
      const c = await fetch(await this.deviceKey);
      this.post({ t: 'renewedCredential', credential: c.credential });
    } catch {
      // The worker asks again in a minute.
    }
  }

  /**
   * This session follows `previous`, the encryption session of this tab's broken connection:
   * the previous device key signs this one's, and the proof goes with the key package, so that
   * the moderator who admitted this guest from the lobby adds them again without asking
   * (docs/e2ee.md, "Reconnects"). The owner closes `previous` once it is no longer needed: it
   * may have to vouch again if this session's connection fails before it gets in.
   */
  follow(previous: E2eeSession): void {
    this.continuityReady = (async () => {
      try {
        const proof = await previous.continuityProof(await this.deviceKey);
        if (proof) this.post({ t: 'continuity', proof });
      } catch {
        // No proof: the guest waits for a moderator's admit, as after a reload.
      }
    })();
  }

  /** The connection is gone: the worker stops taking part and keeps only its device key. */
  retire(): void {
    this.retired = true;
    this.post({ t: 'retire' });
  }

  /** This device key's signature over `newKeyHex` (see `follow`); null if it has none. */
  private continuityProof(newKeyHex: string): Promise<MlsContinuity | null> {
    if (this.closed) return Promise.resolve(null);
    const timeout = new Promise<null>((resolve) => setTimeout(() => resolve(null), 5_000));
    return Promise.race([
      this.request<MlsContinuity | null>((req) => ({ t: 'continuityProof', req, newKey: newKeyHex })),
      timeout,
    ]);
  }

  /** Consumes the server's mls_* messages (returns true for those). */
  handleServer(msg: ServerMsg): boolean {
    if (!MLS_TYPES.has(msg.type)) return false;
    this.post({ t: 'server', msg });
    return true;
  }

  /** The server's participant list (self included); call on every change. */
  setParticipants(selfId: string, participants: Participant[]): void {
    this.post({
      t: 'participants',
      selfId,
      participants: participants.map((p) => ({
        id: p.id,
        display_name: p.display_name,
        kind: p.kind,
        leaf: p.leaf,
        credential_user_id: p.credential_user_id ?? null,
        role: p.role,
      })),
    });
  }

  /** This user admitted `participantId` from the lobby under `displayName`. */
  admitted(participantId: string, displayName: string): void {
    this.post({ t: 'admitted', participantId, displayName });
  }

  /**
   * Sends chat text end-to-end encrypted (the worker encrypts it for the group's current epoch).
   * The outcome arrives through `onChat` as `sent` or `failed` with `id`.
   */
  sendChat(id: number, text: string): void {
    this.post({ t: 'chat', id, text });
  }

  /** Encrypts everything `sender` sends (set before the first frame, e.g. right after addTransceiver). */
  attachSender(sender: RTCRtpSender, source: SendSourceName): void {
    const kind = source === 'microphone' ? 'audio' : 'video';
    sender.transform = new RTCRtpScriptTransform(this.worker, { side: 'send', source, kind, id: this.nextId++ });
  }

  /** Decrypts everything `receiver` receives; frames that do not decrypt are dropped. */
  attachReceiver(receiver: RTCRtpReceiver, kind: 'audio' | 'video'): void {
    receiver.transform = new RTCRtpScriptTransform(this.worker, { side: 'receive', kind, id: this.nextId++ });
  }

  /** Counters per transform (frames encrypted, decrypted, dropped; bytes; last sender leaf). */
  diagnostics(): Promise<E2eeDiagnostics> {
    return this.request<E2eeDiagnostics>((req) => ({ t: 'diagnostics', req }));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.post({ t: 'close' });
    // Give the worker a moment to wipe its keys, then make sure it is gone.
    setTimeout(() => this.worker.terminate(), 200);
    if (current === this) current = null;
  }

  /**
   * Test-hooks builds only (`vite build --mode test-hooks`): the first 200 plaintext frames
   * per send source as the encoder produced them, before encryption.
   */
  static testCapture(): Promise<CapturedFrame[]> {
    if (import.meta.env.MODE === 'test-hooks') {
      if (!current) return Promise.resolve([]);
      return current.request<CapturedFrame[]>((req) => ({ t: 'testCapture', req }));
    }
    return Promise.reject(new Error('not a test-hooks build'));
  }

  /** Test-hooks builds only: both frame ciphers timed in the worker (types.ts, FrameBench). */
  static testFrameBench(): Promise<FrameBench | null> {
    if (import.meta.env.MODE === 'test-hooks') {
      if (!current) return Promise.resolve(null);
      return current.request<FrameBench | null>((req) => ({ t: 'testFrameBench', req }));
    }
    return Promise.reject(new Error('not a test-hooks build'));
  }

  /**
   * Test-hooks builds only: builds a group of `members` inside the worker's WebAssembly module
   * and times processing commits made by another member there (commitBench.ts).
   */
  static testCommitBench(members: number, rounds: number): Promise<unknown> {
    if (import.meta.env.MODE === 'test-hooks') {
      if (!current) return Promise.resolve(null);
      return current.request<unknown>((req) => ({ t: 'testCommitBench', req, members, rounds }));
    }
    return Promise.reject(new Error('not a test-hooks build'));
  }

  private request<T>(msg: (req: number) => ToWorker): Promise<T> {
    const req = this.nextId++;
    return new Promise<T>((resolve) => {
      this.waiting.set(req, resolve as (v: unknown) => void);
      this.post(msg(req));
    });
  }

  /** The worker's answer to `request` number `req`. */
  private answer(req: number, value: unknown): void {
    const done = this.waiting.get(req);
    this.waiting.delete(req);
    done?.(value);
  }

  private post(msg: ToWorker): void {
    if (this.closed && msg.t !== 'close') return;
    this.worker.postMessage(msg);
  }

  private fail(detail: string): void {
    // A session closed on purpose (its connection gone) has nothing to report.
    if (this.closed) return;
    const at = Date.now();
    const warning = { code: 'start_failed' as const, detail, at };
    const s: E2eeStatus = {
      phase: 'failed', epoch: null, securityCode: null, ownLeaf: null, roster: [], outsiders: [],
      warnings: [warning],
    };
    this.lastStatus = s;
    this.opts.onStatus(s);
    this.opts.onNotice({ type: 'warning', warning });
  }
}
