// What a user does, step by step, through the UI; plus read-only media checks via window.__klausur.
import type { E2eeStatus } from '../src/e2ee/types';
import { expect, type Page } from '@playwright/test';
import { recordSecret } from './log-secrets';

export type { InboundStat } from '../src/media/peer';
import type { InboundStat } from '../src/media/peer';

// Every password, link, name and chat text passed through here is recorded for the log check
// after the suite (log-secrets.ts): none may appear in a server log.

export async function login(page: Page, username: string, password: string): Promise<void> {
  recordSecret('password', password);
  await page.goto('/login');
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
}

export async function changePassword(page: Page, current: string, next: string): Promise<void> {
  recordSecret('password', current);
  recordSecret('password', next);
  await expect(page.getByTestId('password-page')).toBeVisible();
  await page.getByTestId('password-current').fill(current);
  await page.getByTestId('password-new').fill(next);
  await page.getByTestId('password-repeat').fill(next);
  await page.getByTestId('password-submit').click();
  await expect(page).toHaveURL(/\/meetings$/);
}

/** Creates a meeting through the form and returns its id (from the detail page URL). */
export async function createMeeting(page: Page, title: string, profile: 'strict' | 'internal' = 'strict'): Promise<string> {
  await page.goto('/meetings');
  await page.getByTestId('new-meeting').click();
  await page.getByTestId('meeting-title-input').fill(title);
  await page.getByTestId(`profile-${profile}`).check();
  await page.getByTestId('create-meeting-submit').click();
  await expect(page.getByTestId('meeting-detail-title')).toHaveText(title);
  const m = /\/meetings\/([^/?#]+)$/.exec(new URL(page.url()).pathname);
  if (!m) throw new Error(`unexpected URL after creating a meeting: ${page.url()}`);
  return decodeURIComponent(m[1]);
}

/** On the meeting detail page: invites a guest by name and returns the link path (`/j/...`). */
export async function inviteGuest(page: Page, name: string): Promise<string> {
  recordSecret('display name', name);
  await page.getByTestId('invite-kind-guest').check();
  await page.getByTestId('invite-name').fill(name);
  await page.getByTestId('create-invite').click();
  const field = page.locator(`[data-testid="invite-link"][data-name="${name}"]`);
  await expect(field).toBeVisible();
  const link = await field.inputValue();
  recordSecret('invitation link', link);
  expect(link).toMatch(/\/j\/[^/]+$/);
  recordSecret('invitation token', decodeURIComponent(link.slice(link.lastIndexOf('/') + 1)));
  // The server gives an absolute URL; open it on the server under test.
  return new URL(link).pathname;
}

/** On the pre-join page: optionally enter a name, then join. */
export async function passPrejoin(page: Page, opts: { name?: string; expectTitle?: string; expectInvitee?: string } = {}): Promise<void> {
  await expect(page.getByTestId('prejoin-page')).toBeVisible();
  if (opts.expectTitle) await expect(page.getByTestId('prejoin-meeting-title')).toHaveText(opts.expectTitle);
  if (opts.expectInvitee) await expect(page.getByTestId('prejoin-invitee')).toContainText(opts.expectInvitee);
  // Wait until the camera preview runs, so the call starts with devices.
  await expect(page.getByTestId('preview-video')).toBeVisible();
  if (opts.name !== undefined) {
    recordSecret('display name', opts.name);
    await page.getByTestId('display-name-input').fill(opts.name);
  }
  await page.getByTestId('join-button').click();
}

/** Opens an invitation `link`, checks the invitee's name (and the title) before joining, joins
 * and waits until the page is in the room. */
export async function joinByInvitation(page: Page, link: string, opts: { expectTitle?: string; expectInvitee: string }): Promise<void> {
  await page.goto(link);
  await passPrejoin(page, opts);
  await expectInRoom(page);
}

/** On the meeting detail page: the organiser joins their meeting `title`; returns their
 * participant id once in the room. */
export async function organiserJoins(page: Page, title: string): Promise<string> {
  await page.getByTestId('join-meeting').click();
  await passPrejoin(page, { expectTitle: title });
  await expectInRoom(page);
  return selfId(page);
}

export async function expectInRoom(page: Page): Promise<void> {
  await expect(page.getByTestId('meeting-room')).toBeVisible();
}

export async function selfId(page: Page): Promise<string> {
  await expect.poll(() => page.evaluate(() => window.__klausur?.selfId ?? null)).not.toBeNull();
  return (await page.evaluate(() => window.__klausur!.selfId))!;
}

export async function stats(page: Page): Promise<InboundStat[]> {
  return page.evaluate(async () => ((await window.__klausur?.stats()) ?? []) as InboundStat[]);
}

function pick(list: InboundStat[], from: string, source: InboundStat['source']): InboundStat | undefined {
  return list.find((s) => s.participant_id === from && s.source === source);
}

/**
 * True if, over about a second, the media `source` of participant `from` arrives at `page`:
 * bytes rising, and for video also decoded frames rising.
 */
export async function mediaRising(page: Page, from: string, source: InboundStat['source']): Promise<boolean> {
  const a = pick(await stats(page), from, source);
  await page.waitForTimeout(1000); // measuring a rate needs an interval
  const b = pick(await stats(page), from, source);
  if (!a || !b) return false;
  if (b.bytesReceived <= a.bytesReceived || b.packetsReceived <= a.packetsReceived) return false;
  if (b.kind === 'video') return b.framesDecoded > 0 && b.framesDecoded > a.framesDecoded;
  return true;
}

/** What a page's client says of itself, for a failure report: phase, encryption, media
 * connection, SFrame transform counters and the media it receives. */
async function diagnosis(page: Page): Promise<string> {
  const received = await stats(page).catch(() => []);
  const hooks = await page
    .evaluate(async () => ({
      self: window.__klausur?.selfId,
      phase: window.__klausur?.phase,
      e2ee: window.__klausur?.e2ee()?.phase,
      epoch: window.__klausur?.e2ee()?.epoch,
      connection: window.__klausur?.connection(),
      participants: window.__klausur?.participants(),
      notices: window.__klausur?.notices(),
      warnings: window.__klausur?.e2ee()?.warnings,
      transforms: (await window.__klausur?.e2eeDiagnostics())?.transforms,
    }))
    .catch(() => null);
  return `${JSON.stringify(hooks)} receives: ${JSON.stringify(received)}`;
}

/** Waits until `page` receives `from`'s microphone and camera; on failure the report says what
 * the receiver (and, given, the sender's page) saw. */
export async function expectAudioVideoFrom(page: Page, from: string, timeout = 45_000, senderPage?: Page): Promise<void> {
  for (const source of ['microphone', 'camera'] as const) {
    try {
      await expect.poll(() => mediaRising(page, from, source), { timeout, message: `${source} from ${from}` }).toBe(true);
    } catch (e) {
      const sender = senderPage ? `\nsender ${await diagnosis(senderPage)}` : '';
      throw new Error(`${(e as Error).message}\nreceiver ${await diagnosis(page)}${sender}`);
    }
  }
}

export async function openPanel(page: Page, panel: 'chat' | 'people' | 'security'): Promise<void> {
  const side = page.getByTestId(`${panel}-side-panel`);
  if (await side.isVisible()) return;
  await page.getByTestId(`${panel === 'people' ? 'people' : panel}-toggle`).click();
  await expect(side).toBeVisible();
}

export async function sendChat(page: Page, text: string): Promise<void> {
  recordSecret('chat text', text);
  await openPanel(page, 'chat');
  await page.getByTestId('chat-input').fill(text);
  await page.getByTestId('chat-send').click();
}

export function chatMessage(page: Page, text: string) {
  return page.getByTestId('chat-message').filter({ hasText: text });
}

export function tileOf(page: Page, participantId: string) {
  return page.locator(`[data-testid="video-tile"][data-participant-id="${participantId}"]`);
}

/** The encryption state of `page` (phase, epoch, security code, roster with flags). */
export async function e2eeStatus(page: Page): Promise<E2eeStatus | null> {
  return page.evaluate(() => window.__klausur?.e2ee() ?? null);
}

/** Waits until every page is an active group member with the same security code, different
 * from `notEqualTo`, and returns it. */
export async function commonSecurityCode(pages: Page[], notEqualTo: string | null = null, timeout = 45_000): Promise<string> {
  let code: string | null = null;
  await expect
    .poll(
      async () => {
        const st = await Promise.all(pages.map((p) => e2eeStatus(p)));
        const codes = st.map((s) => (s?.phase === 'active' ? s.securityCode : null));
        code = codes[0];
        const same = code !== null && codes.every((c) => c === code) && code !== notEqualTo;
        return same ? 'equal' : JSON.stringify(st.map((s) => [s?.phase, s?.epoch, s?.securityCode]));
      },
      { timeout, message: 'security codes of all pages' },
    )
    .toBe('equal');
  return code!;
}

/** After a broken connection: `p`'s page got its `joins`-th `joined` (see `watchJoins` in
 * fixtures.ts) and is in the room, neither ended nor reconnecting. */
export async function expectJoinedAgain(p: { name: string; page: Page; joinedAt: number[] }, joins: number, timeout?: number): Promise<void> {
  await expect.poll(() => p.joinedAt.length, { timeout, message: `${p.name} joined again` }).toBe(joins);
  await expectInRoom(p.page);
  await expect(p.page.getByTestId('ended-page')).toHaveCount(0);
  await expect(p.page.getByTestId('reconnecting-banner')).toHaveCount(0);
}

/** All `pages` in one call: a tile for each, the first page's microphone and camera received by
 * every other page and theirs by the first, one encrypted group (the same security code, the
 * indicator active everywhere). Returns the participant ids (in the order of `pages`) and the
 * security code. */
export async function expectEncryptedCall(pages: Page[]): Promise<{ ids: string[]; code: string }> {
  const ids: string[] = [];
  for (const p of pages) ids.push(await selfId(p));
  for (const p of pages) await expect(p.getByTestId('video-tile')).toHaveCount(pages.length);
  const [first, ...others] = pages;
  for (const [i, other] of others.entries()) {
    await expectAudioVideoFrom(first, ids[i + 1], 45_000, other);
    await expectAudioVideoFrom(other, ids[0], 45_000, first);
  }
  const code = await commonSecurityCode(pages);
  for (const p of pages) await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active');
  return { ids, code };
}

/** The encryption worker's counters of one transform (its diagnostics). */
export interface CryptoCounters {
  side: 'send' | 'receive';
  kind: 'audio' | 'video';
  encrypted: number;
  decrypted: number;
  cryptoMs: number;
  cryptoBusyMs: number;
  cryptoCallMs: number;
  bytesIn: number;
  bytesOut: number;
  /** Test-hooks builds: the time of each of the transform's last frames, µs. */
  cryptoSamplesUs?: number[];
}

/** The q-quantile (0 to 1) of `xs`, nearest rank; null for none. */
function quantile(xs: number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Crypto time and size per frame from the workers' counters, for the figures tests
 * (e2ee.spec.ts, firefox.spec.ts): `us_per_frame` from the start of a frame's crypto to its result (mean), `busy_us_per_frame` the
 * worker thread's own time of it (without waiting for WebCrypto's asynchronous result);
 * `us_median`, `us_p90`, `us_p99` of the same time over the transforms' last frames. */
/** Frames the transforms `xs` of one side encrypted (send) or decrypted (receive). */
function framesThrough(xs: CryptoCounters[], side: 'send' | 'receive'): number {
  return xs.reduce((m, x) => m + (side === 'send' ? x.encrypted : x.decrypted), 0);
}

/** Video frames through a worker both ways: the lesser of those its transforms encrypted and
 * decrypted. */
export function videoFramesBothWays(all: CryptoCounters[]): number {
  const video = all.filter((x) => x.kind === 'video');
  return Math.min(framesThrough(video.filter((x) => x.side === 'send'), 'send'), framesThrough(video.filter((x) => x.side === 'receive'), 'receive'));
}

export function perFrame(all: CryptoCounters[]): Record<string, number | null> {
  const figures: Record<string, number | null> = {};
  for (const side of ['send', 'receive'] as const)
    for (const kind of ['audio', 'video'] as const) {
      const xs = all.filter((x) => x.side === side && x.kind === kind);
      const n = framesThrough(xs, side);
      const ms = xs.reduce((m, x) => m + x.cryptoMs, 0);
      const busy = xs.reduce((m, x) => m + (x.cryptoBusyMs ?? x.cryptoMs), 0);
      const call = xs.reduce((m, x) => m + (x.cryptoCallMs ?? 0), 0);
      const bytes = xs.reduce((m, x) => m + (side === 'send' ? x.bytesIn : x.bytesOut), 0);
      const what = side === 'send' ? 'encrypt' : 'decrypt';
      figures[`${what}_${kind}_us_per_frame`] = n ? Math.round((ms * 1000) / n) : null;
      // The distribution over the transforms' last frames (each timed alone): a frame during
      // which the worker's thread was scheduled off moves the mean, not the median.
      const samples = xs.flatMap((x) => x.cryptoSamplesUs ?? []);
      figures[`${what}_${kind}_us_median`] = quantile(samples, 0.5);
      figures[`${what}_${kind}_us_p90`] = quantile(samples, 0.9);
      figures[`${what}_${kind}_us_p99`] = quantile(samples, 0.99);
      figures[`${what}_${kind}_samples`] = samples.length;
      figures[`${what}_${kind}_busy_us_per_frame`] = n ? Math.round((busy * 1000) / n) : null;
      figures[`${what}_${kind}_subtle_call_us_per_frame`] = n ? Math.round((call * 1000) / n) : null;
      figures[`${what}_${kind}_frames`] = n;
      figures[`${kind}_bytes_per_frame`] = n ? Math.round(bytes / n) : null;
    }
  return figures;
}
