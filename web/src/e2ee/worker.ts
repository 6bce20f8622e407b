// The encryption worker: a dedicated module worker that holds the device signing key, the MLS
// member (klausur-e2ee in WebAssembly) and every frame key. The page never sees any of them.
//
// - Messages from the page: see protocol.ts (ToWorker); answers: FromWorker.
// - `rtctransform` events (RTCRtpScriptTransform, options: TransformOptions): the send side
//   encrypts every frame with SFrame, the receive side decrypts. No plaintext path: without
//   keys outgoing frames are dropped, incoming frames that do not decrypt are dropped; both
//   are counted (diagnostics), never passed on. Small frames are encrypted by the core in
//   WebAssembly, large ones (WEBCRYPTO_MIN_BYTES) with the browser's own AES-GCM (WebCrypto,
//   sframe.ts) with keys, counters, replay windows and the membership check from the core.

import { fromBase64, fromHex, toBase64, toHex } from './b64';
import { commitBench } from './commitBench';
import { clearBytes, senderLeaf, STREAM_ID } from './frames';
import { WebCryptoFrames } from './sframe';
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
import type { CapturedFrame, FrameBench, SendSourceName, TransformDiagnostics, TransformOptions } from './types';

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
/** Frame AES-GCM in WebCrypto; null only where the worker has no `crypto.subtle`. */
const webCrypto: WebCryptoFrames | null =
  typeof crypto !== 'undefined' && crypto.subtle ? new WebCryptoFrames(() => (member?.inGroup ? member : null)) : null;
/**
 * Frames of at least this many bytes go through WebCrypto (the processor's AES instructions),
 * smaller ones through the core's AES-GCM in WebAssembly, which is faster for them: a WebCrypto
 * call costs tens of microseconds of its own in the worker (argument copies, a task to the
 * browser's crypto thread and back), and Firefox returns the result only after hundreds of
 * microseconds (BENCHMARKS.md, "Per frame, in the browser's encryption worker"). Both ciphers
 * share one counter per key and one replay window per track (the core's), so frames of either
 * kind may follow each other.
 */
const WEBCRYPTO_MIN_BYTES = 16 * 1024;
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
    webCrypto?.clear();
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
  if (m.t === 'testFrameBench') {
    if (import.meta.env.MODE === 'test-hooks') post({ t: 'testFrameBench', req: m.req, result: await frameBench() });
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
    webCrypto?.clear();
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

async function sendFrame(
  o: TransformOptions,
  d: TransformDiagnostics,
  frame: EncodedFrame,
  out: TransformStreamDefaultController<EncodedFrame>,
): Promise<void> {
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
  const busy = { busyMs: 0, callMs: 0 };
  try {
    let protectedFrame: Uint8Array;
    if (webCrypto && data.length >= WEBCRYPTO_MIN_BYTES) protectedFrame = await webCrypto.encrypt(STREAM_ID[source], clear, data, busy);
    else {
      protectedFrame = m.encryptFrame(STREAM_ID[source], clear, data);
      busy.busyMs = performance.now() - t0;
    }
    const ms = performance.now() - t0;
    d.cryptoMs += ms;
    d.cryptoBusyMs += busy.busyMs;
    d.cryptoCallMs += busy.callMs;
    if (import.meta.env.MODE === 'test-hooks') sample(d, ms);
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

async function receiveFrame(d: TransformDiagnostics, frame: EncodedFrame, out: TransformStreamDefaultController<EncodedFrame>): Promise<void> {
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
  // Frame-key timers run on the MLS client's clock (corrected to the identity CA's).
  const now = () => (mls ? mls.at(Date.now()) : Date.now());
  const t0 = performance.now();
  const busy = { busyMs: 0, callMs: 0 };
  try {
    // Replay windows are per transform (the track the frame came in on): frames on one track
    // cannot make another track's frames look old (klausur-e2ee frame.rs, "Replay window").
    let r: { sender: number; data: Uint8Array };
    if (webCrypto && data.length >= WEBCRYPTO_MIN_BYTES) r = await webCrypto.decrypt(d.id, data, now, busy);
    else {
      // The sender is the KID's leaf (`leaf`, parsed above), which authenticated with it.
      r = { sender: leaf ?? -1, data: m.decryptFrameData(data, now(), d.id) };
      busy.busyMs = performance.now() - t0;
    }
    const ms = performance.now() - t0;
    d.cryptoMs += ms;
    d.cryptoBusyMs += busy.busyMs;
    d.cryptoCallMs += busy.callMs;
    if (import.meta.env.MODE === 'test-hooks') sample(d, ms);
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

/** Frames whose times a transform keeps (test-hooks builds; `cryptoSamplesUs`). */
const SAMPLES = 2000;

/** Test-hooks builds only: keeps the time of one frame's crypto, the last SAMPLES of them. */
function sample(d: TransformDiagnostics, ms: number): void {
  const xs = (d.cryptoSamplesUs ??= []);
  xs.push(Math.round(ms * 10_000) / 10);
  if (xs.length >= 2 * SAMPLES) xs.splice(0, xs.length - SAMPLES);
}

/**
 * The smallest step of `performance.now()` seen in this worker, microseconds: 100 µs in a
 * Chromium worker that is not cross-origin isolated, 5 µs in one that is (Firefox: 1 ms / 20 µs
 * by default). A bounded busy loop.
 */
function timerStepUs(): number {
  let min = Infinity;
  let last = performance.now();
  for (let i = 0, steps = 0; i < 5_000_000 && steps < 200; i++) {
    const t = performance.now();
    if (t !== last) {
      min = Math.min(min, t - last);
      last = t;
      steps += 1;
    }
  }
  return Math.round(min * 10_000) / 10;
}

/** The q-quantile (0 to 1) of `xs`, nearest rank; null for none. */
function quantile(xs: number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Stream id of the test-hooks benchmark's frames: no media uses it, its counters are its own. */
const BENCH_STREAM = 7;
let benchContext = 1e9;

/**
 * Test-hooks builds only: both frame ciphers timed in this worker with its member's keys,
 * alternating in rounds so both see the same load (types.ts, FrameBench). Nothing is sent.
 */
async function frameBench(): Promise<FrameBench | null> {
  const m = member;
  if (!m || !m.inGroup || !webCrypto) return null;
  const now = () => (mls ? mls.at(Date.now()) : Date.now());
  const rounds = 20;
  const perRound = 50;
  const sizes: FrameBench['sizes'] = {};
  for (const size of [300, 1200, 16_000, 60_000]) {
    const frame = new Uint8Array(size).map((_, i) => i & 0xff);
    const t = { wE: 0, wD: 0, cE: 0, cEB: 0, cD: 0, cDB: 0 };
    const singleE: number[] = [];
    const singleD: number[] = [];
    // Round -1 warms up (compiles, imports the keys) and is not counted.
    for (let r = -1; r < rounds; r++) {
      if (r === 0) Object.assign(t, { wE: 0, wD: 0, cE: 0, cEB: 0, cD: 0, cDB: 0 });
      const wasmContext = benchContext++;
      const cryptoContext = benchContext++;
      let t0 = performance.now();
      const w: Uint8Array[] = [];
      for (let i = 0; i < perRound; i++) w.push(m.encryptFrame(BENCH_STREAM, 3, frame));
      t.wE += performance.now() - t0;
      t0 = performance.now();
      for (const f of w) m.decryptFrameData(f, now(), wasmContext);
      t.wD += performance.now() - t0;
      // The same frames once more, each timed alone (as the transforms time them): their
      // median and 90th percentile. Only as fine as the worker's timer (`timer`).
      const singleContext = benchContext++;
      for (let i = 0; i < perRound; i++) {
        const a = performance.now();
        const f = m.encryptFrame(BENCH_STREAM, 3, frame);
        const b = performance.now();
        m.decryptFrameData(f, now(), singleContext);
        const c = performance.now();
        if (r >= 0) {
          singleE.push(b - a);
          singleD.push(c - b);
        }
      }
      const busyE = { busyMs: 0 };
      const c: Uint8Array[] = [];
      t0 = performance.now();
      for (let i = 0; i < perRound; i++) c.push(await webCrypto.encrypt(BENCH_STREAM, 3, frame, busyE));
      t.cE += performance.now() - t0;
      t.cEB += busyE.busyMs;
      const busyD = { busyMs: 0 };
      t0 = performance.now();
      for (const f of c) await webCrypto.decrypt(cryptoContext, f, now, busyD);
      t.cD += performance.now() - t0;
      t.cDB += busyD.busyMs;
    }
    const us = (ms: number) => Math.round((ms * 1000 * 10) / (rounds * perRound)) / 10;
    const ms1 = (ms: number | null) => (ms === null ? 0 : Math.round(ms * 10_000) / 10);
    sizes[String(size)] = {
      wasm: {
        encryptUs: us(t.wE),
        decryptUs: us(t.wD),
        encryptMedianUs: ms1(quantile(singleE, 0.5)),
        encryptP90Us: ms1(quantile(singleE, 0.9)),
        decryptMedianUs: ms1(quantile(singleD, 0.5)),
        decryptP90Us: ms1(quantile(singleD, 0.9)),
      },
      webcrypto: { encryptUs: us(t.cE), encryptBusyUs: us(t.cEB), decryptUs: us(t.cD), decryptBusyUs: us(t.cDB) },
    };
  }
  // Frames as media brings them: one 300-byte frame at a time to an idle worker (a timer of
  // 10 ms between them), each timed alone. Against the back-to-back figures above, this shows
  // what a frame costs for arriving alone (caches and the core gone cold in between), not the
  // cipher. In one round of three, one untimed frame of the same size goes just before the
  // timed one ("warmed"): the same call, with the code and data it touches back in the caches.
  // In another, the floor: trivial work on the same frame, alone in the same way (copy it, XOR
  // every byte, copy it out, in plain JavaScript), what any code called once per frame costs
  // on this machine for coming alone.
  const spacedE: number[] = [];
  const spacedD: number[] = [];
  const warmedE: number[] = [];
  const floor: number[] = [];
  const spacedContext = benchContext++;
  const frame300 = new Uint8Array(300).map((_, i) => i & 0xff);
  const scratch = new Uint8Array(300);
  for (let i = 0; i < 300; i++) {
    await new Promise((r) => setTimeout(r, 10));
    if (i % 3 === 2) {
      const a = performance.now();
      scratch.set(frame300);
      for (let j = 0; j < scratch.length; j++) scratch[j] ^= 0x5a;
      const copy = scratch.slice();
      floor.push(performance.now() - a);
      if (copy[0] !== (frame300[0] ^ 0x5a)) throw new Error('floor loop');
      continue;
    }
    const warmed = i % 3 === 1;
    if (warmed) m.encryptFrame(BENCH_STREAM, 3, frame300);
    const a = performance.now();
    const f = m.encryptFrame(BENCH_STREAM, 3, frame300);
    const b = performance.now();
    if (warmed) {
      warmedE.push(b - a);
      continue;
    }
    m.decryptFrameData(f, now(), spacedContext);
    const c = performance.now();
    spacedE.push(b - a);
    spacedD.push(c - b);
  }
  const q = (xs: number[], p: number) => Math.round((quantile(xs, p) ?? 0) * 10_000) / 10;
  const spaced300 = {
    frames: spacedE.length,
    encryptMedianUs: q(spacedE, 0.5),
    encryptP90Us: q(spacedE, 0.9),
    decryptMedianUs: q(spacedD, 0.5),
    decryptP90Us: q(spacedD, 0.9),
    warmedEncryptMedianUs: q(warmedE, 0.5),
    warmedEncryptP90Us: q(warmedE, 0.9),
    floorMedianUs: q(floor, 0.5),
    floorP90Us: q(floor, 0.9),
  };
  return { frames: rounds * perRound, sizes, spaced300, timer: { stepUs: timerStepUs(), crossOriginIsolated: self.crossOriginIsolated === true } };
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
    cryptoBusyMs: 0,
    cryptoCallMs: 0,
  };
  // A sender or receiver gets a new transform when re-attached: replace its counters.
  const i = transforms.findIndex((x) => x.id === o.id);
  if (i >= 0) transforms.splice(i, 1, d);
  else transforms.push(d);
  const valid = (o.side === 'send' && o.source !== undefined && o.source in STREAM_ID) || o.side === 'receive';
  // transform() returns the frame's promise: the stream waits for it before the next frame,
  // so frames keep their order although WebCrypto is asynchronous.
  const stream = new TransformStream<EncodedFrame, EncodedFrame>({
    transform(frame, out) {
      if (!valid) {
        d.droppedFailed += 1;
        return;
      }
      return o.side === 'send' ? sendFrame(o, d, frame, out) : receiveFrame(d, frame, out);
    },
  });
  t.readable.pipeThrough(stream).pipeTo(t.writable).catch(() => undefined);
};
