// The "no plaintext reaches the server" detector: reads the server's RTP payload recording
// (test-hooks build, KLAUSUR_TEST_RECORD_RTP) and compares it with plaintext frames the
// browsers captured before encryption (test-hooks web bundle).
import { readFileSync } from 'node:fs';

export interface RecordedPacket {
  /** Media-server peer (participant `p<peer>`) that sent the packet. */
  peer: number;
  ssrc: number;
  seq: number;
  ts: number;
  pt: number;
  marker: boolean;
  codec: 'opus' | 'vp8';
  payload: Buffer;
}

/** Plaintext frame as the sender's encoder produced it; the first `clearLen` bytes stay clear. */
export interface PlainFrame {
  source: string;
  clearLen: number;
  data: Buffer;
}

export const WINDOW = 16;

/** The recording from byte `from` on (one JSON object per line, payload in base64). */
export function readRecording(path: string, from = 0): RecordedPacket[] {
  const text = readFileSync(path).subarray(from).toString('utf8');
  const out: RecordedPacket[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as Omit<RecordedPacket, 'payload'> & { payload: string };
    out.push({ ...r, payload: Buffer.from(r.payload, 'base64') });
  }
  return out;
}

// A polynomial rolling hash over WINDOW bytes (mod 2^32), so scanning costs O(1) per offset;
// hits are confirmed byte by byte.
const BASE = 0x01000193;
let top = 1;
for (let i = 1; i < WINDOW; i++) top = Math.imul(top, BASE);
const BASE_POW = top; // BASE^(WINDOW-1)

/** Calls `f(offset, hash)` for every WINDOW-byte window of `b` from `from` on. */
function windows(b: Buffer, from: number, f: (at: number, h: number) => void): void {
  if (b.length - from < WINDOW) return;
  let h = 0;
  for (let i = from; i < from + WINDOW; i++) h = (Math.imul(h, BASE) + b[i]) | 0;
  f(from, h >>> 0);
  for (let at = from + 1; at + WINDOW <= b.length; at++) {
    h = (Math.imul(h - Math.imul(b[at - 1], BASE_POW), BASE) + b[at + WINDOW - 1]) | 0;
    f(at, h >>> 0);
  }
}

export interface PlaintextFinding {
  /** Packet windows equal to a plaintext window (after the clear header bytes). */
  matches: number;
  /** Plaintext windows indexed (the size of the search). */
  windows: number;
  packets: number;
  example: { source: string; frameOffset: number; packetSeq: number } | null;
}

/** Counts 16-byte windows of plaintext frames (beyond their clear bytes) found in payloads. */
export function findPlaintext(frames: PlainFrame[], packets: RecordedPacket[]): PlaintextFinding {
  const index = new Map<number, number[]>();
  let count = 0;
  frames.forEach((f, fi) => {
    windows(f.data, f.clearLen, (o, h) => {
      // Runs of one byte value (padding, silence) say nothing about encryption: skip them.
      let uniform = true;
      for (let i = o + 1; i < o + WINDOW && uniform; i++) uniform = f.data[i] === f.data[o];
      if (uniform) return;
      const list = index.get(h);
      const ref = fi * 0x100000 + o;
      if (list) list.push(ref);
      else index.set(h, [ref]);
      count++;
    });
  });
  let matches = 0;
  let example: PlaintextFinding['example'] = null;
  for (const p of packets) {
    windows(p.payload, 0, (o, h) => {
      const refs = index.get(h);
      if (!refs) return;
      for (const ref of refs) {
        const f = frames[Math.floor(ref / 0x100000)];
        const fo = ref % 0x100000;
        if (f.data.subarray(fo, fo + WINDOW).equals(p.payload.subarray(o, o + WINDOW))) {
          matches++;
          example ??= { source: f.source, frameOffset: fo, packetSeq: p.seq };
          break;
        }
      }
    });
  }
  return { matches, windows: count, packets: packets.length, example };
}

export interface SframeHeader {
  kid: number;
  ctr: number;
  length: number;
}

/** Parses an RFC 9605 SFrame header at `at`, or null if the bytes cannot be one. */
export function parseSframeHeader(b: Buffer, at: number): SframeHeader | null {
  if (at >= b.length) return null;
  const c = b[at];
  const x = (c & 0x80) !== 0;
  const k = (c >> 4) & 0x7;
  const y = (c & 0x08) !== 0;
  const cc = c & 0x7;
  let pos = at + 1;
  let kid = k;
  if (x) {
    const len = k + 1;
    if (pos + len > b.length) return null;
    kid = 0;
    for (let i = 0; i < len; i++) kid = kid * 256 + b[pos + i];
    pos += len;
  }
  let ctr = cc;
  if (y) {
    const len = cc + 1;
    if (pos + len > b.length) return null;
    ctr = 0;
    for (let i = 0; i < len; i++) ctr = ctr * 256 + b[pos + i];
    pos += len;
  }
  // At least the 16-byte authentication tag follows.
  if (pos + 16 > b.length) return null;
  return { kid, ctr, length: pos - at };
}

/** KID layout of klausur: stream << 16 | leaf << 4 | epoch & 0xF. */
export function splitKid(kid: number): { stream: number; leaf: number; epochBits: number } {
  return { stream: Math.floor(kid / 0x10000), leaf: (kid >> 4) & 0xfff, epochBits: kid & 0xf };
}

/**
 * The SFrame header at the start of each frame in a packet: every Opus packet (one frame per
 * packet), and every VP8 packet that starts a frame (payload descriptor S bit, partition 0),
 * after the VP8 payload descriptor and the clear codec header (10 bytes for a keyframe, 3 else).
 * Returns null for VP8 continuation packets.
 */
export function frameHeaderOf(p: RecordedPacket): SframeHeader | 'unparsable' | null {
  if (p.codec === 'opus') return parseSframeHeader(p.payload, 0) ?? 'unparsable';
  const b = p.payload;
  if (b.length < 1) return 'unparsable';
  const first = b[0];
  const start = (first & 0x10) !== 0 && (first & 0x0f) === 0;
  if (!start) return null;
  let pos = 1;
  if (first & 0x80) {
    const ext = b[pos++];
    if (ext & 0x80) pos += b[pos] & 0x80 ? 2 : 1; // PictureID, 7 or 15 bits
    if (ext & 0x40) pos += 1; // TL0PICIDX
    if (ext & 0x30) pos += 1; // TID/KEYIDX
  }
  if (pos >= b.length) return 'unparsable';
  const keyframe = (b[pos] & 0x01) === 0;
  return parseSframeHeader(b, pos + (keyframe ? 10 : 3)) ?? 'unparsable';
}
