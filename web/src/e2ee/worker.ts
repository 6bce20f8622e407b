// The encryption worker: a dedicated module worker that holds the device signing key, the MLS
// member (klausur-e2ee in WebAssembly) and every frame key. The page never sees any of them.
//
// - Messages from the page: see protocol.ts (ToWorker); answers: FromWorker.
// - `rtctransform` events (RTCRtpScriptTransform, options: TransformOptions): the send side
//   encrypts every frame with SFrame, the receive side decrypts. No plaintext path: without
//   keys outgoing frames are dropped, incoming frames that do not decrypt are dropped; both
//   are counted (diagnostics), never passed on.

import { fromBase64, fromHex, toBase64, toHex } from './b64';
import { commitBench } from './commitBench';
import { clearBytes, senderLeaf, STREAM_ID } from './frames';
import { MlsClient } from './mls';
import init, {
  WasmMember,
  continuitySign,
  continuityVerify,
  generateSigningKey,
  signingKeyPublic,
} from './pkg/klausur_e2ee_wasm.js';
import wasmUrl from './pkg/klausur_e2ee_wasm_bg.wasm?url';
import type { FromWorker, ToWorker } from './protocol';
import type { CapturedFrame, SendSourceName, TransformDiagnostics, TransformOptions } from './types';

// Minimal typings of the worker side of WebRTC Encoded Transform (lib.webworker is not in
// this project's tsconfig, which targets the page).
interface EncodedFrame {
  data: ArrayBuffer;
  /** Video only: 'key' | 'delta' | 'empty'. */
  type?: string;
}
interface ScriptTransformer {
  readonly readable: ReadableStream<EncodedFrame>;
  readonly writable: WritableStream<EncodedFrame>;
  readonly options: unknown;
}
interface WorkerScope {
  postMessage(msg: FromWorker): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
  onrtctransform: ((ev: Event & { transformer: ScriptTransformer }) => void) | null;
  close(): void;
}
const scope = self as unknown as WorkerScope;

const TICK_MS = 250;
const CAPTURE_FRAMES = 200;

let member: WasmMember | null = null;
let deviceKey: Uint8Array | null = null;
let mls: MlsClient | null = null;
let ready: Promise<void> | null = null;
let tickTimer: ReturnType<typeof setInterval> | null = null;
const transforms: TransformDiagnostics[] = [];
// Test-hooks builds only (see session.ts); stay false/empty in production.
let testPlaintext = false;
let meetingId = '';
let vouched: [string, string][] = [];
const captured: CapturedFrame[] = [];
const capturedPer: Record<SendSourceName, number> = { microphone: 0, camera: 0, screen: 0 };

function post(msg: FromWorker): void {
  scope.postMessage(msg);
}

async function initialise(): Promise<void> {
  await init({ module_or_path: wasmUrl });
  deviceKey = generateSigningKey();
  mls = new MlsClient(
    (credential, caPublicKey) => {
      member = new WasmMember(credential, deviceKey as Uint8Array, caPublicKey);
      return member;
    },
    {
      send: (msg) => post({ t: 'send', msg }),
      status: (status) => post({ t: 'status', status }),
      notice: (notice) => post({ t: 'notice', notice }),
      chat: (event) => post({ t: 'chat', event }),
      needCredential: () => post({ t: 'needCredential' }),
      vouched: (key, name) => post({ t: 'vouched', key, name }),
    },
    (previousKey, newKey, signature) =>
      continuityVerify(fromHex(previousKey), meetingId, fromHex(newKey), fromBase64(signature)),
  );
  mls.vouch(vouched);
  post({ t: 'deviceKey', hex: toHex(signingKeyPublic(deviceKey)) });
  tickTimer = setInterval(() => mls?.tick(Date.now()), TICK_MS);
}

async function handle(m: ToWorker): Promise<void> {
  if (m.t === 'init') {
    if (import.meta.env.MODE === 'test-hooks') testPlaintext = m.testPlaintext;
    meetingId = m.meetingId;
    vouched = m.vouched;
    ready ??= initialise().catch((e: unknown) => {
      post({ t: 'fatal', message: e instanceof Error ? e.message : String(e) });
      throw e;
    });
    return;
  }
  if (m.t === 'close') {
    if (tickTimer) clearInterval(tickTimer);
    member?.free();
    member = null;
    deviceKey?.fill(0);
    scope.close();
    return;
  }
  if (m.t === 'testCapture') {
    if (import.meta.env.MODE === 'test-hooks') post({ t: 'testCapture', req: m.req, frames: captured });
    return;
  }
  if (m.t === 'diagnostics') {
    const s = mls?.status();
    post({
      t: 'diagnostics',
      req: m.req,
      data: { phase: s?.phase ?? 'starting', epoch: s?.epoch ?? null, transforms: transforms.map((d) => ({ ...d })) },
    });
    return;
  }
  if (m.t === 'retire') {
    // The old connection's worker only keeps its device key, to vouch for the next one.
    if (tickTimer) clearInterval(tickTimer);
    tickTimer = null;
    mls = null;
    member?.free();
    member = null;
    return;
  }
  await ready;
  if (m.t === 'testCommitBench') {
    if (import.meta.env.MODE === 'test-hooks') {
      try {
        post({ t: 'testCommitBench', req: m.req, figures: commitBench(m.members, m.rounds), error: null });
      } catch (e) {
        post({ t: 'testCommitBench', req: m.req, figures: null, error: e instanceof Error ? e.message : String(e) });
      }
    }
    return;
  }
  if (m.t === 'continuityProof') {
    let proof = null;
    try {
      if (deviceKey) {
        proof = {
          previous_key: toHex(signingKeyPublic(deviceKey)),
          signature: toBase64(continuitySign(deviceKey, meetingId, fromHex(m.newKey))),
        };
      }
    } catch {
      proof = null;
    }
    post({ t: 'continuityProof', req: m.req, proof });
    return;
  }
  const c = mls;
  if (!c) return;
  const now = Date.now();
  switch (m.t) {
    case 'continuity':
      c.setContinuity(m.proof);
      break;
    case 'credential':
      c.start(m.credential, m.caPublicKey, now, m.requestedAt);
      break;
    case 'credentialFailed':
      c.fail(m.message, now);
      break;
    case 'renewedCredential':
      c.renew(m.credential, now);
      break;
    case 'server':
      c.handleServer(m.msg, now);
      break;
    case 'participants':
      c.setParticipants(m.selfId, m.participants, now);
      break;
    case 'admitted':
      c.admitted(m.participantId, m.displayName, now);
      break;
    case 'chat':
      c.sendChat(m.id, m.text, now);
      break;
  }
}

// Messages are handled strictly in order, also while the WebAssembly module is loading.
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (ev) => {
  queue = queue.then(() => handle(ev.data)).catch(() => undefined);
};

// --- frames ------------------------------------------------------------------------------

function exact(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? (bytes.buffer as ArrayBuffer)
    : (bytes.slice().buffer as ArrayBuffer);
}

function isNoKey(e: unknown): boolean {
  return e instanceof Error && /no (frame )?keys?\b/.test(e.message);
}

/** A frame the replay window refused (klausur-e2ee-wasm sets `replay` on such errors). */
function isReplay(e: unknown): boolean {
  return e instanceof Error && (e as Error & { replay?: boolean }).replay === true;
}

function sendFrame(o: TransformOptions, d: TransformDiagnostics, frame: EncodedFrame, out: TransformStreamDefaultController<EncodedFrame>): void {
  const data = new Uint8Array(frame.data);
  d.bytesIn += data.length;
  const source = o.source as SendSourceName;
  const clear = clearBytes(o.kind, frame.type, data.length);
  if (import.meta.env.MODE === 'test-hooks') {
    if (capturedPer[source] < CAPTURE_FRAMES) {
      capturedPer[source] += 1;
      captured.push({ source, clearLen: clear, data: toBase64(data) });
    }
    if (testPlaintext) {
      d.plaintext += 1;
      d.bytesOut += data.length;
      out.enqueue(frame);
      return;
    }
  }
  const m = member;
  if (!m || !m.inGroup) {
    d.droppedNoKey += 1;
    return;
  }
  const t0 = performance.now();
  try {
    const protectedFrame = m.encryptFrame(STREAM_ID[source], clear, data);
    d.cryptoMs += performance.now() - t0;
    frame.data = exact(protectedFrame);
    d.encrypted += 1;
    d.bytesOut += protectedFrame.length;
    d.lastSenderLeaf = senderLeaf(protectedFrame);
    out.enqueue(frame);
  } catch (e) {
    if (isNoKey(e)) d.droppedNoKey += 1;
    else d.droppedFailed += 1;
  }
}

function receiveFrame(d: TransformDiagnostics, frame: EncodedFrame, out: TransformStreamDefaultController<EncodedFrame>): void {
  const data = new Uint8Array(frame.data);
  d.bytesIn += data.length;
  if (import.meta.env.MODE === 'test-hooks') {
    if (testPlaintext) {
      d.plaintext += 1;
      d.bytesOut += data.length;
      out.enqueue(frame);
      return;
    }
  }
  const leaf = senderLeaf(data);
  if (leaf !== null) d.lastSenderLeaf = leaf;
  const m = member;
  if (!m || !m.inGroup) {
    d.droppedNoKey += 1;
    return;
  }
  const t0 = performance.now();
  try {
    // Frame-key timers run on the MLS client's clock (corrected to the identity CA's).
    // Replay windows are per transform (the track the frame came in on): frames on one track
    // cannot make another track's frames look old (klausur-e2ee frame.rs, "Replay window").
    const r = m.decryptFrame(data, mls ? mls.at(Date.now()) : Date.now(), d.id) as { sender: number; data: Uint8Array };
    d.cryptoMs += performance.now() - t0;
    frame.data = exact(r.data);
    d.decrypted += 1;
    d.bytesOut += r.data.length;
    d.lastSenderLeaf = r.sender;
    out.enqueue(frame);
  } catch (e) {
    if (isNoKey(e)) d.droppedNoKey += 1;
    else {
      d.droppedFailed += 1;
      if (isReplay(e)) d.droppedReplay += 1;
    }
  }
}

scope.onrtctransform = (ev) => {
  const t = ev.transformer;
  const o = t.options as TransformOptions;
  const d: TransformDiagnostics = {
    id: o.id,
    side: o.side,
    kind: o.kind,
    source: o.source ?? null,
    mid: o.mid ?? null,
    encrypted: 0,
    decrypted: 0,
    droppedNoKey: 0,
    droppedFailed: 0,
    droppedReplay: 0,
    lastSenderLeaf: null,
    bytesIn: 0,
    bytesOut: 0,
    plaintext: 0,
    cryptoMs: 0,
  };
  // A sender or receiver gets a new transform when re-attached: replace its counters.
  const i = transforms.findIndex((x) => x.id === o.id);
  if (i >= 0) transforms.splice(i, 1, d);
  else transforms.push(d);
  const valid = (o.side === 'send' && o.source !== undefined && o.source in STREAM_ID) || o.side === 'receive';
  const stream = new TransformStream<EncodedFrame, EncodedFrame>({
    transform(frame, out) {
      if (!valid) {
        d.droppedFailed += 1;
        return;
      }
      if (o.side === 'send') sendFrame(o, d, frame, out);
      else receiveFrame(d, frame, out);
    },
  });
  t.readable.pipeThrough(stream).pipeTo(t.writable).catch(() => undefined);
};
