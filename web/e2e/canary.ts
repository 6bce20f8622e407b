// Small canary media for the fake devices: a 320x240 Y4M clip with moving content (so the
// encoder always has something to send) and a 1 kHz tone. Written once into the temp dir.
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const W = 320;
const H = 240;
const FRAMES = 30;
const FPS = 15;

/**
 * A Y4M clip `name` in the temp dir (written once): `FRAMES` frames of `w`x`h` 4:2:0 at `FPS`,
 * each made by `frame(f, previous)` (the previous frame's bytes, `null` for the first).
 */
function y4mClip(name: string, w: number, h: number, frame: (f: number, previous: Buffer | null) => Buffer): string {
  const path = join(tmpdir(), name);
  if (existsSync(path)) return path;
  const chunks: Buffer[] = [Buffer.from(`YUV4MPEG2 W${w} H${h} F${FPS}:1 Ip A1:1 C420jpeg\n`, 'ascii')];
  let previous: Buffer | null = null;
  for (let f = 0; f < FRAMES; f++) {
    previous = frame(f, previous);
    chunks.push(Buffer.from('FRAME\n', 'ascii'), previous);
  }
  writeFileSync(path, Buffer.concat(chunks));
  return path;
}

/** Bytes of one 4:2:0 frame of `w`x`h`: the luma plane, then the two chroma planes. */
const frameBytes = (w: number, h: number) => w * h + 2 * (w / 2) * (h / 2);

export function canaryVideoPath(): string {
  return y4mClip(`klausur-canary-${W}x${H}-v1.y4m`, W, H, (f) => {
    const ySize = W * H;
    const cSize = (W / 2) * (H / 2);
    const frame = Buffer.alloc(frameBytes(W, H));
    const barX = Math.floor((f / FRAMES) * W);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const inBar = x >= barX && x < barX + 40;
        frame[y * W + x] = inBar ? 235 : 60 + Math.floor((y / H) * 90);
      }
    }
    // Calm blue background, moving light bar.
    frame.fill(150, ySize, ySize + cSize); // U
    frame.fill(110, ySize + cSize, ySize + 2 * cSize); // V
    return frame;
  });
}

/** A 1 kHz sine, 48 kHz mono 16-bit PCM, 2 s (Chromium loops it). */
export function canaryTonePath(): string {
  const path = join(tmpdir(), 'klausur-canary-1khz-v1.wav');
  if (existsSync(path)) return path;
  const rate = 48_000;
  const samples = rate * 2;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) data.writeInt16LE(Math.round(0.5 * 32767 * Math.sin((2 * Math.PI * 1000 * i) / rate)), i * 2);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVE', 8, 'ascii');
  h.write('fmt ', 12, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(rate, 24);
  h.writeUInt32LE(rate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(data.length, 40);
  writeFileSync(path, Buffer.concat([h, data]));
  return path;
}

/**
 * A busy 960x540 clip for a camera that should send its simulcast layers near their bitrate
 * caps (Chromium's own fake camera and the small canary compress to a fraction of them): a
 * gradient with 16x16 blocks of which a few hundred change every frame. 15 fps, 2 s, looped by
 * Chromium.
 */
export function busyVideoPath(): string {
  const w = 960;
  const h = 540;
  let seed = 0x2545f491;
  const next = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  return y4mClip(`klausur-busy-${w}x${h}-v2.y4m`, w, h, (_, previous) => {
    let frame: Buffer;
    if (previous) {
      frame = Buffer.from(previous);
    } else {
      frame = Buffer.alloc(frameBytes(w, h), 128);
      for (let y = 0; y < h; y++) frame.fill(40 + Math.floor((y / h) * 150), y * w, (y + 1) * w);
    }
    for (let n = 0; n < 400; n++) {
      const bx = (next() % (w / 16)) * 16;
      const by = (next() % (h / 16)) * 16;
      for (let y = by; y < by + 16; y++) for (let x = bx; x < bx + 16; x++) frame[y * w + x] = 16 + (next() % 220);
    }
    return frame;
  });
}
