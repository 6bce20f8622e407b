// SFrame (RFC 9605) frames with the browser's own AES-GCM (WebCrypto), keyed by the e2ee core
// (docs/e2ee.md, "Frames in the browser"; klausur-e2ee frame.rs, "Key material for an outside
// cipher").
//
// The core (WebAssembly) keeps the key schedule, the frame counters, the replay windows and the
// membership check; per KID it hands out `sframe_key` (imported here at once as a
// non-extractable CryptoKey, the bytes then zeroed) and `sframe_salt`. This module builds and
// parses the SFrame header, the nonce (salt XOR counter) and the AAD (SFrame header || clear
// header) exactly as the core's `sframe` crate does, so frames are byte for byte those of the
// WebAssembly path and of the native client:
//
//   clear header || SFrame header || ciphertext || tag (16) || u8 len(clear header)
//
// Per frame it asks the core for the counter (sending), or to screen the frame before and to
// accept (record) it after decryption (receiving). KIDs and counters above 2^53 - 1 are not
// exact JavaScript numbers: such frames are refused as malformed (no klausur sender makes them:
// counters start at 0 in every epoch, KIDs stay below 2^18).

/** What the core (a WasmMember) provides; see klausur-e2ee-wasm's `frameSendKey` and friends. */
export interface FrameKeySource {
  frameSendKey(stream: number): unknown;
  reserveFrameCounter(stream: number, generation: number): number;
  frameReceiveKey(kid: number, now: number): unknown;
  screenFrame(context: number, kid: number, counter: number, now: number): number;
  acceptFrame(context: number, kid: number, generation: number, counter: number, now: number): void;
}

interface KeyMaterial {
  epoch: number;
  /** Names this installation of the epoch's keys in the core (unique, never reused). */
  generation: number;
  kid: number;
  key: Uint8Array;
  salt: Uint8Array;
}

interface CachedKey {
  generation: number;
  kid: number;
  key: CryptoKey;
  salt: Uint8Array;
}

/** A frame this module refused before any crypto (the message says why; matches no key). */
export class MalformedFrame extends Error {
  constructor() {
    super('malformed frame');
    this.name = 'FrameError';
  }
}

/** Where a caller wants the time its own thread spent on a frame (without the wait for
 * WebCrypto's asynchronous result), milliseconds, added up. */
export interface BusyTime {
  busyMs: number;
  /** Of `busyMs`: inside the synchronous part of the `crypto.subtle` call (copies, task post). */
  callMs?: number;
}

/** Counts the time between `resume()` and `pause()` calls into `t`. */
function stopwatch(t: BusyTime | undefined): { pause(): void; resume(): void } {
  if (!t) return { pause() {}, resume() {} };
  let mark = performance.now();
  let running = true;
  return {
    pause() {
      if (running) t.busyMs += performance.now() - mark;
      running = false;
    },
    resume() {
      mark = performance.now();
      running = true;
    },
  };
}

const TAG_LEN = 16;
const MAX_CLEAR = 255;
/** Receive keys kept at most (per KID); the cache is emptied beyond (keys are re-imported). */
const MAX_RECEIVE_KEYS = 256;

function byteLength(v: number): number {
  let n = 1;
  while (v >= 2 ** (8 * n)) n += 1;
  return n;
}

function writeBigEndian(out: Uint8Array, at: number, v: number, len: number): void {
  for (let i = len - 1; i >= 0; i--) {
    out[at + i] = v % 256;
    v = Math.floor(v / 256);
  }
}

/** The SFrame header of (`kid`, `counter`), RFC 9605 section 4.3 (both below 2^53). */
export function encodeHeader(kid: number, counter: number): Uint8Array<ArrayBuffer> {
  const kLen = kid < 8 ? 0 : byteLength(kid);
  const cLen = counter < 8 ? 0 : byteLength(counter);
  const out = new Uint8Array(1 + kLen + cLen);
  let cfg = 0;
  if (kLen === 0) cfg |= kid << 4;
  else {
    cfg |= 0x80 | ((kLen - 1) << 4);
    writeBigEndian(out, 1, kid, kLen);
  }
  if (cLen === 0) cfg |= counter;
  else {
    cfg |= 0x08 | (cLen - 1);
    writeBigEndian(out, 1 + kLen, counter, cLen);
  }
  out[0] = cfg;
  return out;
}

/** A parsed SFrame header at `at` in `bytes`: KID, counter and header length, or null. */
export function parseHeader(bytes: Uint8Array, at: number, end: number): { kid: number; counter: number; len: number } | null {
  if (at >= end) return null;
  const cfg = bytes[at];
  const kLen = cfg & 0x80 ? ((cfg >> 4) & 7) + 1 : 0;
  const cLen = cfg & 0x08 ? (cfg & 7) + 1 : 0;
  const len = 1 + kLen + cLen;
  if (at + len > end) return null;
  let kid = kLen ? 0 : (cfg >> 4) & 7;
  for (let i = 0; i < kLen; i++) kid = kid * 256 + bytes[at + 1 + i];
  let counter = cLen ? 0 : cfg & 7;
  for (let i = 0; i < cLen; i++) counter = counter * 256 + bytes[at + 1 + kLen + i];
  if (kid > Number.MAX_SAFE_INTEGER || counter > Number.MAX_SAFE_INTEGER) return null;
  return { kid, counter, len };
}

/** The AES-GCM nonce: `sframe_salt` XOR the counter as a 12-byte big-endian number. */
export function nonce(salt: Uint8Array, counter: number): Uint8Array<ArrayBuffer> {
  const iv = new Uint8Array(12);
  writeBigEndian(iv, 4, counter, 8);
  for (let i = 0; i < 12; i++) iv[i] ^= salt[i];
  return iv;
}

/** The sender leaf of a KID (stream << 16 | leaf << 4 | epoch & 0xf; klausur-e2ee frame.rs). */
export function kidLeaf(kid: number): number {
  return Math.floor(kid / 16) % 4096;
}

function asMaterial(v: unknown): KeyMaterial {
  return v as KeyMaterial;
}

/**
 * SFrame with WebCrypto's AES-GCM for one encryption worker. Keys are cached per stream
 * (sending) and per KID (receiving) and replaced when the core says the epoch changed.
 */
export class WebCryptoFrames {
  private readonly send = new Map<number, CachedKey>();
  private readonly receive = new Map<number, CachedKey>();
  private last: FrameKeySource | null = null;

  constructor(
    private readonly source: () => FrameKeySource | null,
    private readonly subtle: SubtleCrypto = crypto.subtle,
  ) {}

  /** Forgets every cached key (the core dropped its keys, or the worker closes). */
  clear(): void {
    this.send.clear();
    this.receive.clear();
  }

  private async importKey(m: KeyMaterial, usage: 'encrypt' | 'decrypt'): Promise<CachedKey> {
    try {
      const key = await this.subtle.importKey('raw', m.key as BufferSource, { name: 'AES-GCM' }, false, [usage]);
      return { generation: m.generation, kid: m.kid, key, salt: m.salt };
    } finally {
      m.key.fill(0);
    }
  }

  private core(): FrameKeySource {
    const s = this.source();
    if (!s) throw new Error('no frame keys: not a member of a group');
    // Keys are named per core instance (generations are unique per module, but a cache that
    // outlives its member is emptied anyway).
    if (s !== this.last) {
      this.clear();
      this.last = s;
    }
    return s;
  }

  /**
   * Encrypts `frame` of `stream`; its first `clearLen` bytes stay in clear (authenticated).
   * Throws (the frame is dropped) without keys; the core's error message says which.
   */
  async encrypt(stream: number, clearLen: number, frame: Uint8Array, time?: BusyTime): Promise<Uint8Array> {
    const w = stopwatch(time);
    try {
      return await this.encryptTimed(stream, clearLen, frame, w, time);
    } finally {
      w.pause();
    }
  }

  private async encryptTimed(
    stream: number,
    clearLen: number,
    frame: Uint8Array,
    w: { pause(): void; resume(): void },
    time: BusyTime | undefined,
  ): Promise<Uint8Array> {
    if (clearLen > MAX_CLEAR || clearLen > frame.length) throw new Error('clear header too long');
    const core = this.core();
    let k = this.send.get(stream);
    let counter = -1;
    if (k) {
      try {
        counter = core.reserveFrameCounter(stream, k.generation);
      } catch {
        // A new epoch (or no group any more): get the current key below.
        this.send.delete(stream);
        k = undefined;
      }
    }
    if (!k) {
      const importing = this.importKey(asMaterial(core.frameSendKey(stream)), 'encrypt');
      w.pause();
      k = await importing;
      w.resume();
      this.send.set(stream, k);
      counter = core.reserveFrameCounter(stream, k.generation);
    }
    const header = encodeHeader(k.kid, counter);
    const aad = new Uint8Array(header.length + clearLen);
    aad.set(header);
    aad.set(frame.subarray(0, clearLen), header.length);
    const iv = nonce(k.salt, counter);
    const c0 = time ? performance.now() : 0;
    const sealing = this.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: aad, tagLength: 128 },
      k.key,
      frame.subarray(clearLen) as BufferSource,
    );
    if (time) time.callMs = (time.callMs ?? 0) + performance.now() - c0;
    w.pause();
    const sealed = new Uint8Array(await sealing);
    w.resume();
    const out = new Uint8Array(clearLen + header.length + sealed.length + 1);
    out.set(frame.subarray(0, clearLen));
    out.set(header, clearLen);
    out.set(sealed, clearLen + header.length);
    out[out.length - 1] = clearLen;
    return out;
  }

  /**
   * Decrypts a protected frame that came in on receive context `context` at `now` (the MLS
   * client's clock): `{ sender, data }` with `data` the original frame. Throws for a frame to
   * drop: malformed, no key (the core's UnknownKey), refused by the replay window (`replay`
   * set by the core), or not authentic (WebCrypto's OperationError).
   */
  async decrypt(context: number, frame: Uint8Array, now: () => number, time?: BusyTime): Promise<{ sender: number; data: Uint8Array }> {
    const w = stopwatch(time);
    try {
      return await this.decryptTimed(context, frame, now, w, time);
    } finally {
      w.pause();
    }
  }

  private async decryptTimed(
    context: number,
    frame: Uint8Array,
    now: () => number,
    w: { pause(): void; resume(): void },
    time: BusyTime | undefined,
  ): Promise<{ sender: number; data: Uint8Array }> {
    const n = frame.length;
    if (n < 2) throw new MalformedFrame();
    const clearLen = frame[n - 1];
    const h = parseHeader(frame, clearLen, n - 1);
    if (!h || clearLen + h.len + TAG_LEN > n - 1) throw new MalformedFrame();
    const core = this.core();
    const generation = core.screenFrame(context, h.kid, h.counter, now());
    let k = this.receive.get(h.kid);
    let fresh = false;
    if (!k || k.generation !== generation) {
      const importing = this.importKey(asMaterial(core.frameReceiveKey(h.kid, now())), 'decrypt');
      w.pause();
      k = await importing;
      w.resume();
      fresh = true;
      if (k.generation !== generation) throw new Error(`no key for key id ${h.kid}: the keys changed`);
    }
    const headerEnd = clearLen + h.len;
    const aad = new Uint8Array(h.len + clearLen);
    aad.set(frame.subarray(clearLen, headerEnd));
    aad.set(frame.subarray(0, clearLen), h.len);
    const iv = nonce(k.salt, h.counter);
    const c0 = time ? performance.now() : 0;
    const opening = this.subtle.decrypt(
      { name: 'AES-GCM', iv, additionalData: aad, tagLength: 128 },
      k.key,
      frame.subarray(headerEnd, n - 1) as BufferSource,
    );
    if (time) time.callMs = (time.callMs ?? 0) + performance.now() - c0;
    w.pause();
    const plain = await opening;
    w.resume();
    // Authentic: now the core records the counter (or refuses a replay that raced this one).
    if (this.core() !== core) throw new Error('no frame keys: the member changed');
    core.acceptFrame(context, h.kid, generation, h.counter, now());
    if (fresh) {
      // Only keys of authentic frames are kept, so forged KIDs cannot grow the cache.
      if (this.receive.size >= MAX_RECEIVE_KEYS) this.receive.clear();
      this.receive.set(h.kid, k);
    }
    let data: Uint8Array;
    if (clearLen === 0) data = new Uint8Array(plain);
    else {
      data = new Uint8Array(clearLen + plain.byteLength);
      data.set(frame.subarray(0, clearLen));
      data.set(new Uint8Array(plain), clearLen);
    }
    return { sender: kidLeaf(h.kid), data };
  }
}
