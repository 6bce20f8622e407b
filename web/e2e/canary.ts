// Small canary media for the fake camera: a 320x240 Y4M clip with moving content
// (so the encoder always has something to send). Written once into the temp dir.
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const W = 320;
const H = 240;
const FRAMES = 30;
const FPS = 15;

export function canaryVideoPath(): string {
  const path = join(tmpdir(), `klausur-canary-${W}x${H}-v1.y4m`);
  if (existsSync(path)) return path;
  const header = Buffer.from(`YUV4MPEG2 W${W} H${H} F${FPS}:1 Ip A1:1 C420jpeg\n`, 'ascii');
  const ySize = W * H;
  const cSize = (W / 2) * (H / 2);
  const chunks: Buffer[] = [header];
  for (let f = 0; f < FRAMES; f++) {
    chunks.push(Buffer.from('FRAME\n', 'ascii'));
    const frame = Buffer.alloc(ySize + 2 * cSize);
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
    chunks.push(frame);
  }
  writeFileSync(path, Buffer.concat(chunks));
  return path;
}
