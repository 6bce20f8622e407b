// Codec-specific framing of SFrame in the browser (docs/e2ee.md, "Frames in the browser").
// Pure functions, unit tested in frames.test.ts.

import type { SendSourceName } from './types';

/** SFrame stream ids (klausur-e2ee's `StreamId`): the KID's context id. */
export const STREAM_ID: Record<SendSourceName, number> = { microphone: 0, camera: 1, screen: 2 };

/** Clear bytes at the start of a VP8 key frame: 3-byte frame tag + 7 bytes (start code, size). */
export const VP8_KEY_CLEAR = 10;
/** Clear bytes at the start of a VP8 delta frame: the 3-byte frame tag. */
export const VP8_DELTA_CLEAR = 3;
/** Opus frames are encrypted completely. */
export const OPUS_CLEAR = 0;

/**
 * How many leading bytes of an encoded frame stay in clear (authenticated as SFrame metadata)
 * so the RTP packetizer and the receiver's depacketizer can still read the codec header.
 * `frameType` is RTCEncodedVideoFrame.type (`key`, `delta`, `empty`); undefined for audio.
 */
export function clearBytes(kind: 'audio' | 'video', frameType: string | undefined, length: number): number {
  if (kind === 'audio') return OPUS_CLEAR;
  const n = frameType === 'key' ? VP8_KEY_CLEAR : VP8_DELTA_CLEAR;
  return Math.min(n, length);
}

/**
 * The sender leaf from the key id of a protected frame (layout: clear header, SFrame header,
 * ciphertext and tag, then one byte with the clear header's length), or null if it does not
 * parse. Only for diagnostics: the KID is not authenticated until the frame decrypts.
 */
export function senderLeaf(frame: Uint8Array): number | null {
  if (frame.length < 2) return null;
  const clearLen = frame[frame.length - 1];
  if (clearLen + 1 >= frame.length) return null;
  const cfg = frame[clearLen];
  const x = (cfg & 0x80) !== 0;
  const k = (cfg >> 4) & 0x07;
  let kid = 0;
  if (!x) kid = k;
  else {
    const len = k + 1;
    if (clearLen + 1 + len >= frame.length) return null;
    for (let i = 0; i < len; i++) kid = kid * 256 + frame[clearLen + 1 + i];
  }
  // KID = stream << 16 | leaf << 4 | epoch & 0xf (klausur-e2ee frame.rs).
  return Math.floor(kid / 16) % 4096;
}
