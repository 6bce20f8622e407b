// Which videos this client shows, and how large: the `video_tiles` message (docs/protocol.md).
// The server forwards only the videos listed, and picks their quality by the size, so a receiver
// in a large meeting costs only what is on its screen. Pure functions, tested in tiles.test.ts.

import type { Source, VideoTile } from '../signaling/protocol';

/** Most tiles the grid shows at once; more participants are paged. */
export const GRID_PAGE_SIZE = 9;

/** A size change smaller than this share does not make the client tell the server again. */
const SIZE_SLACK = 0.2;

/** The key a video element is marked with (`data-video-key`): `<participant id>/<source>`. */
export function videoKey(participantId: string, source: Source): string {
  return `${participantId}/${source}`;
}

function parseKey(key: string): { participantId: string; source: Source } | null {
  const i = key.lastIndexOf('/');
  if (i <= 0) return null;
  const source = key.slice(i + 1);
  if (source !== 'camera' && source !== 'screen') return null;
  return { participantId: key.slice(0, i), source };
}

interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
  width: number;
  height: number;
}

/**
 * The remote videos visible in `root`: every element marked `data-video-key` whose box meets
 * the box of its scroll container (the element marked `data-video-clip`, else `root`), with its
 * size in device pixels. Layout is read synchronously, so this works in a page in the background.
 */
export function visibleVideos(root: HTMLElement, devicePixelRatio: number): VideoTile[] {
  const seen = new Map<string, VideoTile>();
  const rootBox = root.getBoundingClientRect();
  for (const el of root.querySelectorAll<HTMLElement>('[data-video-key]')) {
    const key = parseKey(el.dataset.videoKey ?? '');
    if (!key) continue;
    const clip = el.closest<HTMLElement>('[data-video-clip]');
    const box = el.getBoundingClientRect();
    if (!meets(box, clip ? clip.getBoundingClientRect() : rootBox)) continue;
    const tile: VideoTile = {
      participant_id: key.participantId,
      source: key.source,
      width: Math.round(box.width * devicePixelRatio),
      height: Math.round(box.height * devicePixelRatio),
    };
    const k = videoKey(key.participantId, key.source);
    const prev = seen.get(k);
    if (!prev || tile.width * tile.height > prev.width * prev.height) seen.set(k, tile);
  }
  return [...seen.values()].sort((a, b) => videoKey(a.participant_id, a.source).localeCompare(videoKey(b.participant_id, b.source)));
}

function meets(a: Box, b: Box): boolean {
  return a.width > 0 && a.height > 0 && a.left < b.right && a.right > b.left && a.top < b.bottom && a.bottom > b.top;
}

/**
 * Whether `next` is worth telling the server after `prev` was told: another set of videos, or a
 * size that changed by more than a fifth (a window resized a little is not worth a message).
 */
export function tilesChanged(prev: VideoTile[] | null, next: VideoTile[]): boolean {
  if (!prev || prev.length !== next.length) return true;
  const byKey = new Map(prev.map((t) => [videoKey(t.participant_id, t.source), t]));
  for (const t of next) {
    const p = byKey.get(videoKey(t.participant_id, t.source));
    if (!p) return true;
    if (differs(p.width, t.width) || differs(p.height, t.height)) return true;
  }
  return false;
}

function differs(a: number, b: number): boolean {
  return Math.abs(a - b) > SIZE_SLACK * Math.max(a, b, 1);
}

/** The grid's pages: how many, and the one to show (clamped after participants left). */
export function gridPages(tiles: number, page: number): { pages: number; page: number } {
  const pages = Math.max(1, Math.ceil(tiles / GRID_PAGE_SIZE));
  return { pages, page: Math.min(Math.max(0, page), pages - 1) };
}

/**
 * The order of the other participants' tiles: stable (arrivals at the end, who left removed),
 * except that someone who speaks while not on the first page takes the place of whoever on the
 * first page spoke least recently (`lastSpoke`: when each last spoke; never counts as oldest),
 * so the first page shows the current speaker without the tiles around it moving. `firstPage`
 * is how many others the first page holds.
 */
export function arrangeOthers(prev: string[], present: string[], speaker: string | null, firstPage: number, lastSpoke: Map<string, number>): string[] {
  const here = new Set(present);
  const order = prev.filter((id) => here.has(id));
  const known = new Set(order);
  for (const id of present) if (!known.has(id)) order.push(id);
  const at = speaker === null ? -1 : order.indexOf(speaker);
  if (at < firstPage || firstPage <= 0) return order;
  let swap = 0;
  for (let i = 1; i < firstPage; i++) {
    const t = lastSpoke.get(order[i]) ?? -Infinity;
    const best = lastSpoke.get(order[swap]) ?? -Infinity;
    // The least recent speaker; among those who never spoke, the last on the page.
    if (t <= best) swap = i;
  }
  [order[swap], order[at]] = [order[at], order[swap]];
  return order;
}
