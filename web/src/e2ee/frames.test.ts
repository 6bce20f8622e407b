import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { clearBytes, senderLeaf, STREAM_ID } from './frames';
import { WasmMember, generateSigningKey, initSync, issueCredential, signingKeyPublic } from './pkg/klausur_e2ee_wasm.js';

initSync({ module: readFileSync(new URL('./pkg/klausur_e2ee_wasm_bg.wasm', import.meta.url)) });

const ca = generateSigningKey();

function member(name: string): WasmMember {
  const key = generateSigningKey();
  const t = Math.floor(Date.now() / 1000);
  const cred = issueCredential(ca, `user:${name}`, name, 'staff', signingKeyPublic(key), t - 60, t + 3600);
  return new WasmMember(cred, key, signingKeyPublic(ca));
}

/** Two members at leaves 0 and 1 (and more, so that leaf 5 exists for the KID test). */
function group(n: number): WasmMember[] {
  const ms = Array.from({ length: n }, (_, i) => member(`m${i}`));
  ms[0].createGroup(new TextEncoder().encode('g'), Date.now());
  const { welcome } = ms[0].add(ms.slice(1).map((m) => m.keyPackage()), Date.now()) as { welcome: Uint8Array };
  ms[0].mergePendingCommit(Date.now());
  for (const m of ms.slice(1)) m.joinFromWelcome(welcome, Date.now());
  return ms;
}

test('clear header sizes: VP8 key 10, VP8 delta 3, Opus 0', () => {
  expect(clearBytes('video', 'key', 5000)).toBe(10);
  expect(clearBytes('video', 'delta', 5000)).toBe(3);
  expect(clearBytes('video', 'delta', 2)).toBe(2);
  expect(clearBytes('audio', undefined, 100)).toBe(0);
  expect(STREAM_ID).toEqual({ microphone: 0, camera: 1, screen: 2 });
});

test('protected frames keep exactly the clear header, and the KID names the sender leaf', () => {
  const ms = group(6);
  const frame = new Uint8Array(1200).map((_, i) => (i * 7) & 0xff);
  for (const [source, leaf] of [['microphone', 0], ['camera', 5], ['screen', 3]] as const) {
    const clear = source === 'microphone' ? 0 : 10;
    const out = ms[leaf].encryptFrame(STREAM_ID[source], clear, frame);
    expect(out.subarray(0, clear)).toEqual(frame.subarray(0, clear));
    expect(out[out.length - 1]).toBe(clear);
    // No 16-byte window of the encrypted part appears in the output.
    const probe = Buffer.from(frame.subarray(clear + 100, clear + 116));
    expect(Buffer.from(out).indexOf(probe)).toBe(-1);
    expect(senderLeaf(out)).toBe(leaf);
    const d = ms[(leaf + 1) % 6].decryptFrame(out, Date.now()) as { sender: number; stream: number; data: Uint8Array };
    expect(d.sender).toBe(leaf);
    expect(d.stream).toBe(STREAM_ID[source]);
    expect(d.data).toEqual(frame);
  }
  expect(senderLeaf(new Uint8Array([1]))).toBeNull();
  expect(senderLeaf(new Uint8Array([0, 0, 5]))).toBeNull();
});

// Recorded, not asserted (speed is measured by the benchmark): what this checks is that every
// frame of the run decrypts to what was sent. A generous time limit, for a loaded machine.
test('cost per frame in wasm (encrypt + decrypt), printed for the record', { timeout: 120_000 }, () => {
  const [a, b] = group(2);
  for (const size of [1200, 10_000]) {
    const frame = new Uint8Array(size).fill(7);
    const n = 2000;
    let t = performance.now();
    const outs: Uint8Array[] = [];
    for (let i = 0; i < n; i++) outs.push(a.encryptFrame(1, 3, frame));
    const enc = (performance.now() - t) / n;
    t = performance.now();
    const back = outs.map((o) => b.decryptFrame(o, Date.now()) as { data: Uint8Array } | null);
    const dec = (performance.now() - t) / n;
    console.log(`wasm SFrame ${size} B: encrypt ${(enc * 1000).toFixed(1)} µs, decrypt ${(dec * 1000).toFixed(1)} µs per frame`);
    expect(back.filter((d) => d !== null && d.data.length === size && d.data.every((x) => x === 7))).toHaveLength(n);
  }
});
