// End-to-end: a real klausur server, Debian Chromium, one context per person, all through the UI.
// The tests build on each other (one meeting, people come and go) and run in order.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, WebSocketRoute } from '@playwright/test';
import { expect, newPerson, test, type Person } from './fixtures';
import {
  changePassword,
  chatMessage,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  login,
  mediaRising,
  openPanel,
  passPrejoin,
  selfId,
  sendChat,
  tileOf,
} from './helpers';

const screenshotPath = join(dirname(fileURLToPath(import.meta.url)), 'screenshots', 'meeting-room.png');

test.describe.configure({ mode: 'serial' });

const TITLE = 'Abstimmung Bauausschuss';
const NEW_ADMIN_PASSWORD = 'Rathaus-Fenster-blau-2026';

interface Joined extends Person {
  id: string;
  link?: string;
}

const s: {
  meetingId?: string;
  admin?: Joined;
  erika?: Joined;
  jonas?: Joined;
  anna?: Joined;
  clara?: Person;
  everyone: Person[];
} = { everyone: [] };

/** The organiser invites one more guest from the meeting page in a second tab (staying in the
 * meeting in the first); returns the invitation's path. */
async function inviteInSecondTab(organiser: Person, name: string): Promise<string> {
  const detail = await organiser.context.newPage();
  await detail.goto(`/meetings/${encodeURIComponent(s.meetingId!)}`);
  const link = await inviteGuest(detail, name);
  await detail.close();
  return link;
}

/** An invited guest whose signaling runs through a relay the test can cut (`relays[0]` is the
 * first connection, later ones are the reconnects); joined into the meeting. */
async function guestBehindRelay(
  browser: Browser,
  baseURL: string,
  name: string,
  link: string,
): Promise<{ person: Person; relays: WebSocketRoute[] }> {
  const person = await newPerson(browser, baseURL, name);
  s.everyone.push(person);
  const relays: WebSocketRoute[] = [];
  await person.page.routeWebSocket(/\/api\/ws$/, (ws) => {
    ws.connectToServer();
    relays.push(ws);
  });
  await person.page.goto(link);
  await passPrejoin(person.page, { expectTitle: TITLE, expectInvitee: name });
  await expectInRoom(person.page);
  return { person, relays };
}

test.afterAll(async () => {
  for (const p of s.everyone) await p.context.close().catch(() => undefined);
});

test('admin sets up a meeting, two invited guests join, everyone sees and hears everyone', async ({ browser, server }) => {
  const admin = await newPerson(browser, server.baseURL, 'admin');
  s.everyone.push(admin);
  const a = admin.page;

  await test.step('first login with the one-time password forces a new password', async () => {
    await login(a, 'admin', server.adminOneTimePassword);
    await changePassword(a, server.adminOneTimePassword, NEW_ADMIN_PASSWORD);
  });

  let erikaLink = '';
  let jonasLink = '';
  await test.step('create the meeting and two personal invitations', async () => {
    s.meetingId = await createMeeting(a, TITLE, 'strict');
    erikaLink = await inviteGuest(a, 'Erika Musterfrau');
    jonasLink = await inviteGuest(a, 'Jonas Beispiel');
    // Both links stay visible on the page.
    await expect(a.getByTestId('invite-link')).toHaveCount(2);
  });

  await test.step('the organiser joins', async () => {
    await a.getByTestId('join-meeting').click();
    await passPrejoin(a, { expectTitle: TITLE });
    await expectInRoom(a);
    s.admin = { ...admin, id: await selfId(a) };
  });

  await test.step('the guests open their links and pass the pre-join check', async () => {
    for (const [name, link] of [
      ['Erika Musterfrau', erikaLink],
      ['Jonas Beispiel', jonasLink],
    ] as const) {
      const p = await newPerson(browser, server.baseURL, name);
      s.everyone.push(p);
      await p.page.goto(link);
      await passPrejoin(p.page, { expectTitle: TITLE, expectInvitee: name });
      await expectInRoom(p.page);
      const joined = { ...p, id: await selfId(p.page), link };
      if (name === 'Erika Musterfrau') s.erika = joined;
      else s.jonas = joined;
    }
  });

  const people = [s.admin!, s.erika!, s.jonas!];
  await test.step('all three receive each other’s audio and video', async () => {
    for (const p of people) {
      await expect(p.page.getByTestId('video-tile')).toHaveCount(3);
      for (const other of people) if (other !== p) await expectAudioVideoFrom(p.page, other.id);
    }
  });

  await test.step('the participant list says how everyone joined', async () => {
    await openPanel(a, 'people');
    await expect(a.getByTestId('participant-item')).toHaveCount(3);
    await expect(a.locator('[data-testid="participant-item"][data-name="Erika Musterfrau"] [data-testid="join-method"]')).toContainText(
      'Persönliche Einladung für Erika Musterfrau',
    );
  });

  await test.step('screenshot of the room with three participants', async () => {
    await a.waitForFunction(() => {
      const vids = [...document.querySelectorAll('[data-testid="video-tile"] video')] as HTMLVideoElement[];
      return vids.length === 3 && vids.every((v) => v.readyState >= 2 && v.videoWidth > 0);
    });
    await a.screenshot({ path: screenshotPath });
  });
});

test('a screen share appears at the others', async () => {
  const { erika, admin, jonas } = s;
  if (!erika || !admin || !jonas) throw new Error('needs the meeting from the first test');
  await erika!.page.getByTestId('screen-toggle').click();
  await expect(erika!.page.getByTestId('screen-toggle')).toHaveAttribute('aria-pressed', 'true');
  for (const p of [admin!, jonas!]) {
    await expect(p.page.locator(`[data-testid="screen-tile"][data-participant-id="${erika!.id}"]`)).toBeVisible();
    await expect.poll(() => mediaRising(p.page, erika!.id, 'screen'), { timeout: 45_000 }).toBe(true);
  }
  // Stop sharing again: the screen disappears at the others, the camera stays.
  await erika!.page.getByTestId('screen-toggle').click();
  for (const p of [admin!, jonas!]) {
    await expect(p.page.getByTestId('screen-tile')).toHaveCount(0);
    await expect.poll(() => mediaRising(p.page, erika!.id, 'camera'), { timeout: 30_000 }).toBe(true);
  }
});

test('a chat message arrives at the others, end-to-end encrypted', async () => {
  const { erika, admin, jonas } = s;
  if (!erika || !admin || !jonas) throw new Error('needs the meeting from the first test');
  const text = 'Guten Morgen zusammen – ist die Vorlage 17/2026 bei allen angekommen?';
  await sendChat(jonas!.page, text);
  await expect(chatMessage(jonas!.page, text)).toBeVisible();
  // Own messages turn from "sending" to "sent" when the server relayed them.
  await expect(chatMessage(jonas!.page, text)).toHaveAttribute('data-delivery', 'sent');
  await expect(jonas!.page.getByTestId('chat-e2ee')).toBeVisible();
  for (const p of [admin!, erika!]) {
    // The unread badge shows up before the panel is opened.
    await openPanel(p.page, 'chat');
    await expect(chatMessage(p.page, text)).toBeVisible();
    // The name comes from the sender's credential in the encrypted group.
    await expect(chatMessage(p.page, text)).toHaveAttribute('data-from', 'Jonas Beispiel');
    await expect(chatMessage(p.page, text)).not.toHaveAttribute('data-mismatch', 'true');
  }
  await erika!.page.screenshot({ path: join(dirname(fileURLToPath(import.meta.url)), 'screenshots', 'chat-panel.png') });
  // What crossed the WebSockets: the chat went out and came in as mls_chat, never as text the
  // server could read. Negative control: the recorder does see plaintext that is sent in clear
  // (the meeting title in the joined message), so a plaintext chat would be caught.
  for (const p of [jonas!, admin!, erika!]) {
    expect(p.frames.some((f) => f.includes('"type":"joined"') && f.includes(TITLE)), p.name).toBe(true);
    expect(p.frames.some((f) => f.includes('"mls_chat')), p.name).toBe(true);
    expect(p.frames.filter((f) => f.includes('Vorlage 17/2026')), p.name).toEqual([]);
  }
});

test('raised hands: everyone sees them in the order they went up, and the organiser lowers them', async () => {
  const { admin, erika, jonas } = s;
  if (!admin || !erika || !jonas) throw new Error('needs the meeting from the first test');
  const a = admin.page;
  const handOf = (p: Person['page']) => p.getByTestId('hand-toggle');
  await handOf(erika.page).click();
  await expect(handOf(erika.page)).toHaveAttribute('aria-pressed', 'true');
  await openPanel(a, 'people');
  await expect(a.locator(`[data-testid="hand-entry"][data-participant-id="${erika.id}"]`)).toHaveAttribute('data-position', '1');
  await handOf(jonas.page).click();
  await expect(a.locator(`[data-testid="hand-entry"][data-participant-id="${jonas.id}"]`)).toHaveAttribute('data-position', '2');
  // On the stage too, for the one who chairs, with the count in the header.
  await expect(a.locator(`[data-testid="video-tile"][data-participant-id="${erika.id}"] [data-testid="tile-hand"]`)).toBeVisible();
  await expect(a.getByTestId('hands-indicator')).toHaveText('2');
  // Jonas sees the same order but cannot lower anyone's hand.
  await openPanel(jonas.page, 'people');
  await expect(jonas.page.getByTestId('hand-entry')).toHaveCount(2);
  await expect(jonas.page.getByTestId('hand-entry').first()).toHaveAttribute('data-name', erika.name);
  await expect(jonas.page.getByTestId('lower-hand-button')).toHaveCount(0);

  // The organiser gives Erika the floor and lowers her hand: Jonas moves up.
  await a.locator(`[data-testid="hand-entry"][data-participant-id="${erika.id}"]`).getByTestId('lower-hand-button').click();
  await expect(handOf(erika.page)).toHaveAttribute('aria-pressed', 'false');
  await expect(a.locator(`[data-testid="hand-entry"][data-participant-id="${jonas.id}"]`)).toHaveAttribute('data-position', '1');
  await expect(a.locator(`[data-testid="video-tile"][data-participant-id="${erika.id}"] [data-testid="tile-hand"]`)).toHaveCount(0);
  // Jonas lowers his own: no hands left.
  await handOf(jonas.page).click();
  await expect(handOf(jonas.page)).toHaveAttribute('aria-pressed', 'false');
  await expect(a.getByTestId('hands-section')).toHaveCount(0);
  await expect(a.getByTestId('hands-indicator')).toHaveCount(0);
});

test('a guest whose connection breaks gets back in by themselves, with the chat kept', async ({ browser, server }) => {
  const { admin, erika } = s;
  if (!admin || !erika || !s.meetingId) throw new Error('needs the meeting from the first test');
  const a = admin!.page;
  const paulLink = await inviteInSecondTab(admin!, 'Paul Pendler');

  // Paul's signaling goes through a relay the test can cut, as a train's tunnel would: his side
  // of the connection breaks, while the server notices nothing and keeps the old connection.
  const { person: paul, relays } = await guestBehindRelay(browser, server.baseURL, 'Paul Pendler', paulLink);
  const p = paul.page;
  const before = await selfId(p);
  await expectAudioVideoFrom(p, admin!.id);
  const text = 'Ich sitze im Zug, falls ich kurz weg bin.';
  await sendChat(p, text);
  await expect(chatMessage(p, text)).toHaveAttribute('data-delivery', 'sent');

  await relays[0].close({ code: 4000, reason: 'tunnel' });
  const banner = p.getByTestId('reconnecting-banner');
  await expect(banner).toBeVisible();
  await expect(banner).toHaveAttribute('data-attempt', '1');

  // Back in by himself, as a new participant that replaced the old seat: one Paul in every list,
  // media both ways, the encrypted group joined again, and his chat still there.
  await expect(banner).toHaveCount(0, { timeout: 20_000 });
  await expectInRoom(p);
  expect(relays.length).toBeGreaterThanOrEqual(2);
  const after = await selfId(p);
  expect(after).not.toBe(before);
  await openPanel(a, 'people');
  await expect(a.locator('[data-testid="participant-item"][data-name="Paul Pendler"]')).toHaveCount(1);
  await expect(a.locator(`[data-testid="participant-item"][data-participant-id="${after}"]`)).toBeVisible();
  await expectAudioVideoFrom(p, admin!.id);
  await expectAudioVideoFrom(a, after);
  await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await openPanel(p, 'chat');
  await expect(chatMessage(p, text)).toBeVisible();
  const again = 'Wieder da.';
  await sendChat(p, again);
  await openPanel(erika!.page, 'chat');
  await expect(chatMessage(erika!.page, again)).toHaveAttribute('data-from', 'Paul Pendler');

  // Paul leaves; the meeting is as before for the tests that follow.
  await p.getByTestId('leave-button').click();
  await expect(p.getByTestId('ended-page')).toHaveAttribute('data-reason', 'left');
  await expect(a.locator('[data-testid="participant-item"][data-name="Paul Pendler"]')).toHaveCount(0);
  await paul.context.close();
});

test('a moderator mutes a guest: the others stop hearing him, he cannot unmute, and neither a reconnect nor a reload lifts it', async ({ browser, server }) => {
  const { admin } = s;
  if (!admin || !s.meetingId) throw new Error('needs the meeting from the first test');
  const a = admin.page;
  const link = await inviteInSecondTab(admin, 'Max Mikrofon');
  const { person: max, relays } = await guestBehindRelay(browser, server.baseURL, 'Max Mikrofon', link);
  const m = max.page;
  const mic = m.getByTestId('mic-toggle');
  const first = await selfId(m);
  await expectAudioVideoFrom(a, first);
  await expect(mic).toHaveAttribute('aria-pressed', 'true');

  // The organiser mutes him: his microphone goes off and stays locked, and his audio stops
  // reaching the organiser while his camera still does.
  await openPanel(a, 'people');
  const muteButton = (id: string) => a.locator(`[data-testid="participant-item"][data-participant-id="${id}"]`).getByTestId('mute-button');
  await muteButton(first).click();
  await expect(muteButton(first)).toHaveAttribute('data-muted', 'true');
  await expect(mic).toHaveAttribute('aria-pressed', 'false');
  await expect(mic).toBeDisabled();
  await expect.poll(() => mediaRising(a, first, 'microphone'), { timeout: 15_000 }).toBe(false);
  expect(await mediaRising(a, first, 'camera')).toBe(true);

  /** Max is in again under a new id: muted and locked, his camera arrives, his audio does not. */
  const backStillMuted = async (before: string): Promise<string> => {
    await expectInRoom(m);
    const id = await selfId(m);
    expect(id).not.toBe(before);
    await expect(muteButton(id)).toHaveAttribute('data-muted', 'true');
    await expect(mic).toHaveAttribute('aria-pressed', 'false');
    await expect(mic).toBeDisabled();
    await expect.poll(() => mediaRising(a, id, 'camera'), { timeout: 45_000 }).toBe(true);
    expect(await mediaRising(a, id, 'microphone')).toBe(false);
    return id;
  };

  // His connection breaks and he gets back in by himself: still muted, still locked.
  await relays[0].close({ code: 4000, reason: 'tunnel' });
  const banner = m.getByTestId('reconnecting-banner');
  await expect(banner).toBeVisible();
  await expect(banner).toHaveCount(0, { timeout: 20_000 });
  const back = await backStillMuted(first);

  // Nor does loading the page again with the microphone on: his client starts muted.
  await m.goto(link);
  await passPrejoin(m, { expectTitle: TITLE, expectInvitee: 'Max Mikrofon' });
  const reloaded = await backStillMuted(back);

  // The organiser lifts the mute: the microphone stays off until Max turns it on himself.
  await muteButton(reloaded).click();
  await expect(muteButton(reloaded)).toHaveAttribute('data-muted', 'false');
  await expect(mic).toBeEnabled();
  await expect(mic).toHaveAttribute('aria-pressed', 'false');
  await mic.click();
  await expect(mic).toHaveAttribute('aria-pressed', 'true');
  await expect.poll(() => mediaRising(a, reloaded, 'microphone'), { timeout: 30_000 }).toBe(true);

  await m.getByTestId('leave-button').click();
  await expect(m.getByTestId('ended-page')).toHaveAttribute('data-reason', 'left');
  await max.context.close();
});

test('someone without invitation waits in the lobby until the moderator admits them', async ({ browser, server }) => {
  const { admin, erika } = s;
  if (!admin || !erika || !s.meetingId) throw new Error('needs the meeting from the first test');
  const anna = await newPerson(browser, server.baseURL, 'Anna Anonym');
  s.everyone.push(anna);
  await anna.page.goto(`/m/${encodeURIComponent(s.meetingId!)}`);
  await passPrejoin(anna.page, { expectTitle: TITLE, name: 'Anna Anonym' });
  await expect(anna.page.getByTestId('lobby-page')).toBeVisible();

  const a = admin!.page;
  // Notification for the moderator: toast and badge.
  await expect(a.getByTestId('lobby-toast')).toBeVisible();
  await expect(a.getByTestId('lobby-badge')).toHaveText('1');
  await openPanel(a, 'people');
  const entry = a.locator('[data-testid="lobby-entry"][data-name="Anna Anonym"]');
  await expect(entry).toBeVisible();
  await entry.getByTestId('admit-button').click();

  await expectInRoom(anna.page);
  s.anna = { ...anna, id: await selfId(anna.page) };
  await expect(a.locator(`[data-testid="participant-item"][data-name="Anna Anonym"] [data-testid="join-method"]`)).toContainText(
    'Aus dem Warteraum zugelassen',
  );
  await expectAudioVideoFrom(anna.page, admin!.id);
  await expectAudioVideoFrom(anna.page, erika!.id);
  await expectAudioVideoFrom(a, s.anna.id);
});

test('a guest let in from the lobby whose connection breaks comes back without the lobby, and the moderator\'s browser adds them to the encrypted group again', async ({ browser, server }) => {
  const { admin } = s;
  if (!admin || !s.meetingId) throw new Error('needs the meeting from the first test');
  const a = admin.page;
  const lena = await newPerson(browser, server.baseURL, 'Lena Lobby');
  s.everyone.push(lena);
  const relays: WebSocketRoute[] = [];
  await lena.page.routeWebSocket(/\/api\/ws$/, (ws) => {
    ws.connectToServer();
    relays.push(ws);
  });
  const l = lena.page;
  const lobbyPage = l.getByTestId('lobby-page');
  const lobbyEntry = a.locator('[data-testid="lobby-entry"][data-name="Lena Lobby"]');
  await l.goto(`/m/${encodeURIComponent(s.meetingId!)}`);
  await passPrejoin(l, { expectTitle: TITLE, name: 'Lena Lobby' });
  await expect(lobbyPage).toBeVisible();
  await openPanel(a, 'people');
  await lobbyEntry.getByTestId('admit-button').click();
  await expectInRoom(l);
  const first = await selfId(l);
  const indicator = l.getByTestId('e2ee-indicator');
  await expect(indicator).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await expectAudioVideoFrom(a, first);

  // Her connection breaks. She comes back by herself with the pass her tab holds: straight into
  // the meeting (never the lobby, no new entry there for the organiser), and the organiser's
  // browser adds her new device to the encrypted group without a click, because her old device
  // key vouches for it.
  await relays[0].close({ code: 4000, reason: 'tunnel' });
  const banner = l.getByTestId('reconnecting-banner');
  await expect(banner).toBeVisible();
  await expect(banner).toHaveCount(0, { timeout: 20_000 });
  await expectInRoom(l);
  const back = await selfId(l);
  expect(back).not.toBe(first);
  await expect(lobbyPage).toHaveCount(0);
  await expect(lobbyEntry).toHaveCount(0);
  const item = (id: string) => a.locator(`[data-testid="participant-item"][data-participant-id="${id}"]`);
  await expect(item(back).getByTestId('join-method')).toContainText('Aus dem Warteraum zugelassen');
  await expect(indicator).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await expect(item(back)).toHaveAttribute('data-verified', 'true', { timeout: 20_000 });
  await expectAudioVideoFrom(a, back);
  await expectAudioVideoFrom(l, admin.id);

  // A reload loses the old device key: the pass still brings her into the meeting, but the
  // encrypted group needs the organiser's admission again.
  await l.goto(`/m/${encodeURIComponent(s.meetingId!)}`);
  await passPrejoin(l, { expectTitle: TITLE, name: 'Lena Lobby' });
  await expectInRoom(l);
  const reloaded = await selfId(l);
  await expect(lobbyEntry).toHaveCount(0);
  await expect(indicator).toHaveAttribute('data-state', 'waiting');
  await expect(item(reloaded).getByTestId('awaits-admission')).toBeVisible({ timeout: 20_000 });
  await item(reloaded).getByTestId('admit-to-group-button').click();
  await expect(indicator).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await expectAudioVideoFrom(a, reloaded);

  // Leaving gives the pass up: coming back means the lobby again.
  await l.getByTestId('leave-button').click();
  await expect(l.getByTestId('ended-page')).toHaveAttribute('data-reason', 'left');
  await l.goto(`/m/${encodeURIComponent(s.meetingId!)}`);
  await passPrejoin(l, { expectTitle: TITLE, name: 'Lena Lobby' });
  await expect(lobbyPage).toBeVisible();
  await lobbyEntry.getByTestId('deny-button').click();
  await expect(l.getByTestId('ended-page')).toBeVisible();
  await lena.context.close();
});

test('the moderator removes a guest; their link then only leads to the lobby', async () => {
  const { admin, erika, jonas } = s;
  if (!admin || !erika || !jonas) throw new Error('needs the meeting from the first test');
  const a = admin!.page;
  await openPanel(a, 'people');
  const item = a.locator(`[data-testid="participant-item"][data-participant-id="${jonas!.id}"]`);
  await item.getByTestId('remove-button').click();
  await item.getByTestId('remove-button-confirm').click();

  await expect(jonas!.page.getByTestId('ended-page')).toBeVisible();
  await expect(jonas!.page.getByTestId('ended-page')).toHaveAttribute('data-reason', 'removed');

  for (const p of [admin!, erika!]) {
    await expect(tileOf(p.page, jonas!.id)).toHaveCount(0);
    await expect.poll(() => mediaRising(p.page, jonas!.id, 'camera'), { timeout: 30_000 }).toBe(false);
    await expect.poll(() => mediaRising(p.page, jonas!.id, 'microphone'), { timeout: 30_000 }).toBe(false);
  }

  // Reopening the same personal link leads to the lobby, not into the meeting.
  await jonas!.page.goto(jonas!.link!);
  await passPrejoin(jonas!.page, { expectTitle: TITLE });
  await expect(jonas!.page.getByTestId('lobby-page')).toBeVisible();
  const entry = a.locator('[data-testid="lobby-entry"][data-name="Jonas Beispiel"]');
  await expect(entry).toBeVisible();
  await expect(jonas!.page.getByTestId('meeting-room')).toHaveCount(0);

  // The moderator denies: Jonas is told so.
  await entry.getByTestId('deny-button').click();
  await expect(jonas!.page.getByTestId('ended-page')).toHaveAttribute('data-reason', 'denied');
});

test('a locked meeting sends even invited guests to the lobby', async ({ browser, server }) => {
  const { admin, erika } = s;
  if (!admin || !erika || !s.meetingId) throw new Error('needs the meeting from the first test');
  const a = admin!.page;
  await openPanel(a, 'people');
  await a.getByTestId('lock-toggle').click(); // the switch follows the server's meeting state
  await expect(a.getByTestId('lock-indicator')).toBeVisible();
  await expect(erika!.page.getByTestId('lock-indicator')).toBeVisible();

  // The organiser invites one more guest from the meeting page (in a second tab).
  const claraLink = await inviteInSecondTab(admin!, 'Clara Dritte');

  const clara = await newPerson(browser, server.baseURL, 'Clara Dritte');
  s.everyone.push(clara);
  s.clara = clara;
  await clara.page.goto(claraLink);
  await passPrejoin(clara.page, { expectTitle: TITLE, expectInvitee: 'Clara Dritte' });
  await expect(clara.page.getByTestId('lobby-page')).toBeVisible();
  await expect(a.locator('[data-testid="lobby-entry"][data-name="Clara Dritte"]')).toBeVisible();
  await expect(clara.page.getByTestId('meeting-room')).toHaveCount(0);
});

test('malformed signaling gets an error reply and the sender keeps working', async () => {
  const { admin, erika } = s;
  if (!admin || !erika) throw new Error('needs the meeting from the first test');
  const e = erika!.page;

  await e.evaluate(() => window.__klausur!.rawSend('{"type":"bogus"}'));
  await expect.poll(() => e.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('unknown_type');
  await e.evaluate(() => window.__klausur!.rawSend('not json'));
  await expect.poll(() => e.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('malformed');

  await expectInRoom(e);
  await expectAudioVideoFrom(e, admin!.id);
  await expectAudioVideoFrom(admin!.page, erika!.id);
  const text = 'Noch alles in Ordnung bei mir.';
  await sendChat(e, text);
  await openPanel(admin!.page, 'chat');
  await expect(chatMessage(admin!.page, text)).toBeVisible();
});

test('a guest whose admitting moderator left is admitted to the encrypted group by another moderator', async ({ browser, server }) => {
  const { admin, erika } = s;
  if (!admin || !erika || !s.meetingId) throw new Error('needs the meeting from the first test');
  const a = admin!.page;
  const e = erika!.page;
  // Erika becomes a moderator too.
  await openPanel(a, 'people');
  await a.locator(`[data-testid="participant-item"][data-participant-id="${erika!.id}"]`).getByTestId('moderator-button').click();
  await openPanel(e, 'people');
  await expect(e.getByTestId('lobby-section')).toBeVisible();
  // A moderator, not the organiser: no way offered to remove or demote the organiser, nor to
  // grant moderation (the server refuses both; tests/access_rules.rs).
  const adminRow = e.locator(`[data-testid="participant-item"][data-participant-id="${admin!.id}"]`);
  await expect(adminRow.getByTestId('organiser-badge')).toBeVisible();
  await expect(adminRow.getByTestId('mute-button')).toBeVisible();
  await expect(adminRow.getByTestId('remove-button')).toHaveCount(0);
  await expect(e.getByTestId('moderator-button')).toHaveCount(0);

  // Gustav waits in the lobby. The administrator lets him in and closes the tab before Gustav's
  // browser has asked to join the encrypted group (his credential request is held until she is
  // gone), so her browser cannot add him.
  const gustav = await newPerson(browser, server.baseURL, 'Gustav Gast');
  s.everyone.push(gustav);
  let adminGone: () => void = () => undefined;
  const gone = new Promise<void>((resolve) => (adminGone = resolve));
  await gustav.page.route('**/api/identity/credential', async (route) => {
    await gone;
    await route.continue();
  });
  await gustav.page.goto(`/m/${encodeURIComponent(s.meetingId!)}`);
  await passPrejoin(gustav.page, { expectTitle: TITLE, name: 'Gustav Gast' });
  await expect(gustav.page.getByTestId('lobby-page')).toBeVisible();
  await openPanel(a, 'people');
  await a.locator('[data-testid="lobby-entry"][data-name="Gustav Gast"]').getByTestId('admit-button').click();
  await expectInRoom(gustav.page);
  await a.close();
  adminGone();
  await expect(gustav.page.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'waiting');

  // Erika's list shows him waiting for a moderator; she admits him to the group, and he is in.
  const g = e.locator('[data-testid="participant-item"][data-name="Gustav Gast"]');
  await expect(g.getByTestId('awaits-admission')).toBeVisible({ timeout: 20_000 });
  await g.getByTestId('admit-to-group-button').click();
  await expect(gustav.page.getByTestId('e2ee-indicator')).not.toHaveAttribute('data-state', 'waiting', { timeout: 20_000 });
  await expect(e.locator('[data-testid="participant-item"][data-name="Gustav Gast"][data-verified="true"]')).toBeVisible({
    timeout: 20_000,
  });
  await expectAudioVideoFrom(gustav.page, erika!.id);
});
