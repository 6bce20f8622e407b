// End-to-end: a real klausur server, Debian Chromium, one context per person, all through the UI.
// Every test sets up its own meeting and people and can run (and fail) alone.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page, type WebSocketRoute } from '@playwright/test';
import { chromiumArgs } from '../playwright.config';
import { closedAfterEach, expect, newPerson, type Person, signIn, test } from './fixtures';
import {
  chatMessage,
  commonSecurityCode,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  joinByInvitation,
  mediaRising,
  openPanel,
  organiserJoins,
  passPrejoin,
  selfId,
  sendChat,
  stats,
  tileOf,
} from './helpers';

const screenshots = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');

const TITLE = 'Abstimmung Bauausschuss';

interface Joined extends Person {
  id: string;
  /** The invitation link the guest joined with. */
  link?: string;
}

/** Every browser context the running test opened; all are closed after it, whatever its outcome. */
const opened = closedAfterEach<Person>();

/** What `keepAppearanceLog` records of a banner or toast. */
interface Appearance {
  testId: string;
  attempt: string | null;
  text: string;
}

/**
 * The page keeps a log of every reconnect banner and toast that appeared in it, however briefly
 * it was shown (test id, `data-attempt`, text), from the next document it loads on.
 */
async function keepAppearanceLog(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const log: { testId: string; attempt: string | null; text: string }[] = [];
    (window as unknown as { __appearances: typeof log }).__appearances = log;
    const watched = '[data-testid="reconnecting-banner"], [data-testid$="-toast"]';
    const note = (el: Element) =>
      log.push({ testId: el.getAttribute('data-testid') ?? '', attempt: el.getAttribute('data-attempt'), text: el.textContent ?? '' });
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes') {
          if (r.target instanceof Element && r.target.matches(watched)) note(r.target);
          continue;
        }
        for (const n of r.addedNodes) {
          if (!(n instanceof Element)) continue;
          if (n.matches(watched)) note(n);
          n.querySelectorAll(watched).forEach(note);
        }
      }
    }).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-attempt'] });
  });
}

/** The banners or toasts with `testId` that have appeared in the page so far, oldest first. */
async function appeared(page: Page, testId: string): Promise<Appearance[]> {
  const log = await page.evaluate(() => (window as unknown as { __appearances?: Appearance[] }).__appearances ?? []);
  return log.filter((a) => a.testId === testId);
}

/** A new person (own browser context), closed after the test. */
async function person(browser: Browser, baseURL: string, name: string): Promise<Person> {
  const p = await newPerson(browser, baseURL, name);
  opened.push(p);
  await keepAppearanceLog(p.page);
  return p;
}

/** Routes the page's signaling through a relay the test can cut, as a train's tunnel would:
 * `relays[0]` will be the first connection, later ones the reconnects. */
async function relaySignaling(page: Page, relays: WebSocketRoute[] = []): Promise<WebSocketRoute[]> {
  await page.routeWebSocket(/\/api\/ws$/, (ws) => {
    ws.connectToServer();
    relays.push(ws);
  });
  return relays;
}

/** The admin signs in, creates the meeting and a personal invitation for each of `invitees`;
 * stays on the meeting page. Returns the invitation paths by name. */
async function meetingWithInvitations(
  browser: Browser,
  baseURL: string,
  adminPassword: string,
  invitees: string[],
): Promise<{ admin: Person; meetingId: string; links: Record<string, string> }> {
  const admin = await signIn(browser, baseURL, 'admin', adminPassword);
  opened.push(admin);
  await keepAppearanceLog(admin.page);
  const meetingId = await createMeeting(admin.page, TITLE, 'strict');
  const links: Record<string, string> = {};
  for (const name of invitees) links[name] = await inviteGuest(admin.page, name);
  // All links stay visible on the page.
  await expect(admin.page.getByTestId('invite-link')).toHaveCount(invitees.length);
  return { admin, meetingId, links };
}


/** An invited guest opens their link and passes the pre-join check into the room; with
 * `relays`, their signaling runs through a relay the test can cut (`relaySignaling`). */
async function guestJoins(browser: Browser, baseURL: string, name: string, link: string, relays?: WebSocketRoute[]): Promise<Joined> {
  const p = await person(browser, baseURL, name);
  if (relays) await relaySignaling(p.page, relays);
  await joinByInvitation(p.page, link, { expectTitle: TITLE, expectInvitee: name });
  return { ...p, id: await selfId(p.page), link };
}

/** A meeting with the organiser in the room and the invited guests `names` joined, everyone in
 * the same encrypted group. */
async function meetingInSession(
  browser: Browser,
  baseURL: string,
  adminPassword: string,
  names: string[],
): Promise<{ meetingId: string; admin: Joined; guests: Joined[] }> {
  const { admin, meetingId, links } = await meetingWithInvitations(browser, baseURL, adminPassword, names);
  const organiser = { ...admin, id: await organiserJoins(admin.page, TITLE) };
  const guests: Joined[] = [];
  for (const name of names) guests.push(await guestJoins(browser, baseURL, name, links[name]));
  if (guests.length > 0) await commonSecurityCode([organiser, ...guests].map((p) => p.page));
  return { meetingId, admin: organiser, guests };
}

/** The organiser invites one more guest from the meeting page in a second tab (staying in the
 * meeting in the first); returns the invitation's path. */
async function inviteInSecondTab(organiser: Person, meetingId: string, name: string): Promise<string> {
  const detail = await organiser.context.newPage();
  try {
    await detail.goto(`/meetings/${encodeURIComponent(meetingId)}`);
    return await inviteGuest(detail, name);
  } finally {
    await detail.close();
  }
}

/** Someone without invitation opens the meeting's link, enters `name` and waits in the lobby. */
async function waitInLobby(p: Person, meetingId: string, name: string): Promise<void> {
  await p.page.goto(`/m/${encodeURIComponent(meetingId)}`);
  await passPrejoin(p.page, { expectTitle: TITLE, name });
  await expect(p.page.getByTestId('lobby-page')).toBeVisible();
}

/** The height (device pixels) at which the last `video_tiles` message among `frames` asked for
 * `participantId`'s camera; 0 if it did not list it or none was sent. */
function toldHeight(frames: string[], participantId: string): number {
  for (let i = frames.length - 1; i >= 0; i--) {
    if (!frames[i].startsWith('{"type":"video_tiles"')) continue;
    const msg = JSON.parse(frames[i]) as { tiles: { participant_id: string; source: string; height: number }[] };
    return msg.tiles.find((t) => t.participant_id === participantId && t.source === 'camera')?.height ?? 0;
  }
  return 0;
}

/** A second Chromium whose fake camera is its own HD device (1280x720) instead of the suite's
 * small clip: a camera sent from it goes out in three simulcast layers. The caller closes it. */
async function hdChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: chromiumArgs.filter((a) => !a.startsWith('--use-file-for-fake-video-capture')),
  });
}

/** The widths `page`'s camera goes out at now: its quarter layer's and its largest (the browser
 * scales and switches layers off as its bandwidth estimate and CPU allow, so tests read them
 * rather than assume them). */
async function sentWidths(page: Page): Promise<{ q: number; top: number }> {
  const layers = await page.evaluate(() => window.__klausur!.cameraLayers());
  return { q: layers.find((l) => l.rid === 'q')?.frameWidth ?? 0, top: Math.max(...layers.map((l) => l.frameWidth)) };
}

/** The connection behind `relays` breaks; the page showed the reconnect banner for attempt 1
 * (its log says so, however briefly it was up) and is back in by itself, the banner gone. */
async function cutAndReconnect(page: Page, relays: WebSocketRoute[]): Promise<void> {
  await relays[0].close({ code: 4000, reason: 'tunnel' });
  await expect.poll(async () => (await appeared(page, 'reconnecting-banner'))[0]?.attempt ?? null).toBe('1');
  await expect(page.getByTestId('reconnecting-banner')).toHaveCount(0, { timeout: 20_000 });
}

test('admin sets up a meeting, two invited guests join, everyone sees and hears everyone', async ({ browser, server, adminPassword }) => {
  const names = ['Erika Musterfrau', 'Jonas Beispiel'];
  let setup: Awaited<ReturnType<typeof meetingWithInvitations>> | undefined;
  await test.step('create the meeting and two personal invitations', async () => {
    setup = await meetingWithInvitations(browser, server.baseURL, adminPassword, names);
  });
  const { links } = setup!;
  const a = setup!.admin.page;

  let admin: Joined | undefined;
  await test.step('the organiser joins', async () => {
    admin = { ...setup!.admin, id: await organiserJoins(setup!.admin.page, TITLE) };
  });

  const guests: Joined[] = [];
  await test.step('the guests open their links and pass the pre-join check', async () => {
    for (const name of names) guests.push(await guestJoins(browser, server.baseURL, name, links[name]));
  });

  const people = [admin!, ...guests];
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
    await a.screenshot({ path: join(screenshots, 'meeting-room.png') });
  });
});

/** The page a presenter shares in the screen-share test: fine print on a colour no camera or
 * fake device sends, so a receiver can tell the capture of this page from anything else. */
const SHARED_PAGE_TITLE = 'Klausur Testseite';
const SHARED_PAGE = `<html><head><title>${SHARED_PAGE_TITLE}</title></head><body style="margin:0;background:#c02040;color:#fff;font:11px sans-serif">${'§ 3 Abs. 2 Satz 1 der Geschäftsordnung des Stadtrats, Beschlussvorlage 2026/117. '.repeat(1200)}</body></html>`;

test('a screen share of a page of fine print appears at the others, large and at the size it was sent', async ({ server, adminPassword, browser }) => {
  // The presenter's browser captures a real page: a tab chosen by its title, as a user picks it
  // in Chromium's share dialog (without the fake-UI switch, which would hand out the fake device
  // "screen" instead of a capture).
  const presenterBrowser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: [...chromiumArgs.filter((a) => a !== '--use-fake-ui-for-media-stream'), `--auto-select-tab-capture-source-by-title=${SHARED_PAGE_TITLE}`],
  });
  try {
    const {
      admin,
      meetingId,
      guests: [jonas],
    } = await meetingInSession(browser, server.baseURL, adminPassword, ['Jonas Beispiel']);
    const link = await inviteInSecondTab(admin, meetingId, 'Erika Musterfrau');
    const erika = await guestJoins(presenterBrowser, server.baseURL, 'Erika Musterfrau', link);
    await commonSecurityCode([admin.page, jonas.page, erika.page]);
    // The document to present, open in a full-HD window of the presenter's browser.
    const doc = await presenterBrowser.newPage({ viewport: { width: 1920, height: 1080 } });
    await doc.setContent(SHARED_PAGE);

    await erika.page.bringToFront();
    await erika.page.getByTestId('screen-toggle').click();
    await expect(erika.page.getByTestId('screen-toggle')).toHaveAttribute('aria-pressed', 'true');
    // Sent for reading: full HD at most, 15 frames per second at most, detail kept over motion.
    const sending = await erika.page.evaluate(() => window.__klausur?.screenSending() ?? null);
    expect(sending, 'the screen is sent').not.toBeNull();
    expect(sending?.contentHint).toBe('detail');
    expect(sending?.width).toBe(1920);
    expect(sending?.height).toBe(1080);
    expect(sending?.frameRate).toBeLessThanOrEqual(15);
    expect(sending?.degradationPreference).toBe('maintain-resolution');
    expect(sending?.maxFramerate).toBe(15);
    for (const p of [admin, jonas]) {
      const tile = p.page.locator(`[data-testid="screen-tile"][data-participant-id="${erika.id}"]`);
      await expect(tile).toBeVisible();
      await expect.poll(() => mediaRising(p.page, erika.id, 'screen'), { timeout: 45_000 }).toBe(true);
      // It arrives at the size it was sent (decrypted), and is shown large: wider than any
      // camera tile beside it.
      await expect
        .poll(async () => (await stats(p.page)).find((s) => s.participant_id === erika.id && s.source === 'screen')?.frameWidth ?? 0, {
          timeout: 30_000,
        })
        .toBe(1920);
      // What arrives is the page: its colour, with the fine print on it (light pixels).
      await expect
        .poll(
          () =>
            p.page.evaluate(() => {
              const v = document.querySelector('[data-testid="screen-tile"] video') as HTMLVideoElement | null;
              if (!v || v.videoWidth === 0) return 'no frame';
              const c = document.createElement('canvas');
              c.width = v.videoWidth;
              c.height = v.videoHeight;
              const g = c.getContext('2d')!;
              g.drawImage(v, 0, 0);
              const d = g.getImageData(0, 0, c.width, c.height).data;
              let red = 0;
              let light = 0;
              let n = 0;
              for (let i = 0; i < d.length; i += 4 * 31) {
                n++;
                if (d[i] > 150 && d[i + 1] < 90 && d[i + 2] < 110) red++;
                if (d[i] > 200 && d[i + 1] > 200 && d[i + 2] > 200) light++;
              }
              return red / n > 0.5 && light / n > 0.02 ? 'the page' : `red ${(red / n).toFixed(2)}, light ${(light / n).toFixed(3)}`;
            }),
          { timeout: 30_000 },
        )
        .toBe('the page');
      const screenBox = await tile.boundingBox();
      const cameraBoxes = await p.page.locator('[data-testid="video-tile"]').evaluateAll((els) => els.map((e) => e.getBoundingClientRect().width));
      expect(screenBox?.width ?? 0).toBeGreaterThan(Math.max(0, ...cameraBoxes) * 1.5);
    }
    // Stop sharing again: the screen disappears at the others, the camera stays.
    await erika.page.getByTestId('screen-toggle').click();
    for (const p of [admin, jonas]) {
      await expect(p.page.getByTestId('screen-tile')).toHaveCount(0);
      await expect.poll(() => mediaRising(p.page, erika.id, 'camera'), { timeout: 30_000 }).toBe(true);
    }
  } finally {
    await presenterBrowser.close();
  }
});

test('video not on screen is not sent: a narrow window with the participant list open gets audio only, and video again when the list closes', async ({
  browser,
  server,
  adminPassword,
}) => {
  const { meetingId, admin } = await meetingInSession(browser, server.baseURL, adminPassword, []);
  const a = admin.page;
  const adminId = await selfId(a);
  const link = await inviteInSecondTab(admin, meetingId, 'Vera Schmal');
  const vera = await guestJoins(browser, server.baseURL, 'Vera Schmal', link);
  const v = vera.page;
  await expectAudioVideoFrom(v, adminId);
  await expectAudioVideoFrom(a, vera.id);
  const videoBytes = async (page: Page, from: string) =>
    (await stats(page)).find((x) => x.participant_id === from && x.source === 'camera')?.bytesReceived ?? 0;

  // A narrow window (a small laptop beside the minutes) with the participant list open hides
  // the stage: the client says it shows no video, and the server stops forwarding it.
  await v.setViewportSize({ width: 600, height: 800 });
  await openPanel(v, 'people');
  await expect(v.locator('main.stage')).toBeHidden();
  await expect.poll(() => mediaRising(v, adminId, 'camera'), { timeout: 15_000 }).toBe(false);
  const before = await videoBytes(v, adminId);
  await v.waitForTimeout(3000); // the video stays away, not just for a moment
  expect(await videoBytes(v, adminId)).toBe(before);
  // Audio never stops; and the organiser, who shows Vera, still gets her video (negative control).
  expect(await mediaRising(v, adminId, 'microphone')).toBe(true);
  expect(await mediaRising(a, vera.id, 'camera')).toBe(true);

  // Closing the list shows the tile again: the video is forwarded again and decodes.
  await v.getByTestId('panel-close').click();
  await expect(tileOf(v, adminId).locator('video')).toBeVisible();
  await expect.poll(() => mediaRising(v, adminId, 'camera'), { timeout: 15_000 }).toBe(true);
});

test('simulcast: the camera arrives at the size of the tile that shows it, a larger layer in a large tile and the quarter in a small one', async ({
  browser,
  server,
  adminPassword,
}) => {
  // The publisher's browser has an HD camera, so it sends three layers: a quarter, half and the
  // full size.
  const hdBrowser = await hdChromium();
  try {
    const { meetingId, admin } = await meetingInSession(browser, server.baseURL, adminPassword, []);
    const erika = await guestJoins(hdBrowser, server.baseURL, 'Erika Musterfrau', await inviteInSecondTab(admin, meetingId, 'Erika Musterfrau'));
    const vera = await guestJoins(browser, server.baseURL, 'Vera Schmal', await inviteInSecondTab(admin, meetingId, 'Vera Schmal'));
    const v = vera.page;
    await expectAudioVideoFrom(v, erika.id);
    const received = async (page: Page) =>
      (await stats(page)).find((x) => x.participant_id === erika.id && x.source === 'camera')?.frameWidth ?? 0;
    const sent = () => sentWidths(erika.page);
    // All three layers are configured; at least the quarter and the half one go out.
    await expect.poll(async () => (await erika.page.evaluate(() => window.__klausur!.cameraLayers())).filter((l) => l.frameWidth > 0).length, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    // Vera's large window: two large tiles, so Erika's camera comes as a layer above the quarter.
    await v.setViewportSize({ width: 1600, height: 1000 });
    await expect
      .poll(async () => (await received(v)) > (await sent()).q, { timeout: 30_000 })
      .toBe(true)
      .catch(async (e) => {
        const layers = await erika.page.evaluate(() => window.__klausur!.cameraLayers());
        throw new Error(`${e}\nErika sends ${JSON.stringify(layers)}; Vera receives ${await received(v)} wide`);
      });
    // A small window: small tiles, the quarter layer is forwarded (while Erika's browser sends
    // a larger one too, so the two are told apart), and stays.
    await v.setViewportSize({ width: 480, height: 360 });
    const quarter = async () => {
      const { q, top } = await sent();
      return (await received(v)) === q && q < top;
    };
    await expect.poll(quarter, { timeout: 30_000 }).toBe(true);
    await v.waitForTimeout(2000);
    // (As long as the first time: while the browser's estimate dips it sends the quarter alone,
    // and the two cannot be told apart until it sends a larger one again.)
    await expect.poll(quarter, { timeout: 30_000 }).toBe(true);
    // ... and decodes on: frames keep coming (polled, as the suite's other checks of lasting
    // media: one second without a new frame, seen once in a fresh-clone CI right after the
    // switch, is not the lasting state this is about).
    await expect.poll(() => mediaRising(v, erika.id, 'camera'), { timeout: 15_000 }).toBe(true);
    // The organiser's window stayed large: a larger layer (negative control). As long as the
    // other polls: on a loaded machine the organiser's bandwidth estimate can dip for a while,
    // and the layer chosen for it with it.
    await expect.poll(async () => (await received(admin.page)) > (await sent()).q, { timeout: 30_000 }).toBe(true);
    // Large again: back up, decrypting all the while (as long as the first time: the layer
    // comes back as the estimate for Vera grows again, which a loaded machine slows).
    await v.setViewportSize({ width: 1600, height: 1000 });
    await expect
      .poll(async () => (await received(v)) > (await sent()).q, { timeout: 30_000 })
      .toBe(true)
      .catch(async (e) => {
        const layers = await erika.page.evaluate(() => window.__klausur!.cameraLayers());
        throw new Error(`${e}\nback up: Erika sends ${JSON.stringify(layers)}; Vera receives ${await received(v)} wide`);
      });
    await expectAudioVideoFrom(v, erika.id);
  } finally {
    await hdBrowser.close();
  }
});

test('a participant shown large (a sign-language interpreter) takes the stage and the server is told the large size for her camera; back in the grid, the grid size again', async ({
  browser,
  server,
  adminPassword,
}) => {
  const { admin, guests } = await meetingInSession(browser, server.baseURL, adminPassword, ['Ines Gebärde', 'Bernd Beisitz']);
  const [ines, bernd] = guests;
  const a = admin.page;
  // How tall the organiser's (or Bernd's) client last told the server it shows Ines's camera
  // (`video_tiles`; the server picks the simulcast layer by it, see the simulcast test).
  const told = (p: { frames: string[] }) => toldHeight(p.frames, ines.id);
  // Three people in a grid of two rows (a 1280x720 window): the size of a row.
  await expect(a.getByTestId('video-tile')).toHaveCount(3);
  await expect.poll(() => told(admin)).toBeGreaterThan(0);
  await expect.poll(() => told(admin)).toBeLessThan(400);
  const inGrid = told(admin);

  // The organiser shows Ines large: she takes the stage, the others the filmstrip, her camera
  // decodes there, and the server is told a size about twice the grid's (two rows).
  await tileOf(a, ines.id).hover();
  await tileOf(a, ines.id).getByTestId('pin-button').click();
  const onStage = a.locator(`.screen-area [data-testid="video-tile"][data-participant-id="${ines.id}"]`);
  await expect(onStage.locator('video')).toBeVisible();
  await expect(onStage.getByTestId('pin-button')).toHaveAttribute('aria-pressed', 'true');
  await expect(a.locator('.filmstrip [data-testid="video-tile"]')).toHaveCount(2);
  await expect.poll(() => told(admin)).toBeGreaterThan(inGrid * 1.5);
  await expectAudioVideoFrom(a, ines.id);
  // Only for the organiser: Bernd, who did not choose her, still asks for the grid's size.
  expect(told(bernd)).toBeGreaterThan(0);
  expect(told(bernd)).toBeLessThan(inGrid * 1.5);

  // Back in the grid: the grid's size again.
  await onStage.getByTestId('pin-button').click();
  await expect(a.locator('.screen-area')).toHaveCount(0);
  await expect(tileOf(a, ines.id).locator('video')).toBeVisible();
  await expect.poll(() => told(admin)).toBeLessThan(inGrid * 1.2);
});

test('a moderator shows an interpreter large to everyone: the others see her on the stage, a viewer\'s own choice wins, and it ends when the moderator ends it', async ({
  browser,
  server,
  adminPassword,
}) => {
  const { admin, guests } = await meetingInSession(browser, server.baseURL, adminPassword, ['Ines Gebärde', 'Bernd Beisitz']);
  const [ines, bernd] = guests;
  const a = admin.page;
  const b = bernd.page;
  const onStage = (page: Page) => page.locator('.screen-area [data-testid="video-tile"]');

  await openPanel(a, 'people');
  const inesEntry = a.getByTestId('participant-item').filter({ hasText: 'Ines Gebärde' });
  await inesEntry.getByTestId('spotlight-button').click();
  await expect(inesEntry.getByTestId('spotlight-button')).toHaveAttribute('aria-pressed', 'true');
  // Bernd and the organiser see Ines large, marked as shown to everyone, and her video decodes.
  for (const page of [a, b]) {
    await expect(onStage(page)).toHaveAttribute('data-participant-id', ines.id);
    await expect(onStage(page).getByTestId('spotlight-badge')).toBeVisible();
  }
  await expectAudioVideoFrom(b, ines.id);
  // Ines herself sees the others as before, not herself large.
  await expect(ines.page.locator('.screen-area')).toHaveCount(0);

  // Bernd's own choice wins: he shows the organiser large; when he lets go, Ines again.
  await tileOf(b, admin.id).hover();
  await tileOf(b, admin.id).getByTestId('pin-button').click();
  await expect(onStage(b)).toHaveAttribute('data-participant-id', admin.id);
  await expect(onStage(b).getByTestId('spotlight-badge')).toHaveCount(0);
  await onStage(b).getByTestId('pin-button').click();
  await expect(onStage(b)).toHaveAttribute('data-participant-id', ines.id);

  // The moderator ends it: the grid for everyone.
  await inesEntry.getByTestId('spotlight-button').click();
  await expect(b.locator('.screen-area')).toHaveCount(0);
  await expect(a.locator('.screen-area')).toHaveCount(0);
  await expect(tileOf(b, ines.id).locator('video')).toBeVisible();
});

test('a chat message arrives at the others, end-to-end encrypted', async ({ browser, server, adminPassword }) => {
  const {
    admin,
    guests: [erika, jonas],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau', 'Jonas Beispiel']);
  const text = 'Guten Morgen zusammen – ist die Vorlage 17/2026 bei allen angekommen?';
  await sendChat(jonas.page, text);
  await expect(chatMessage(jonas.page, text)).toBeVisible();
  // Own messages turn from "sending" to "sent" when the server relayed them.
  await expect(chatMessage(jonas.page, text)).toHaveAttribute('data-delivery', 'sent');
  await expect(jonas.page.getByTestId('chat-e2ee')).toBeVisible();
  for (const p of [admin, erika]) {
    // The unread badge shows up before the panel is opened.
    await expect(p.page.getByTestId('chat-toggle').locator('.tool-badge')).toHaveText('1');
    await openPanel(p.page, 'chat');
    await expect(chatMessage(p.page, text)).toBeVisible();
    // The name comes from the sender's credential in the encrypted group.
    await expect(chatMessage(p.page, text)).toHaveAttribute('data-from', 'Jonas Beispiel');
    await expect(chatMessage(p.page, text)).not.toHaveAttribute('data-mismatch', 'true');
  }
  await erika.page.screenshot({ path: join(screenshots, 'chat-panel.png') });
  // What crossed the WebSockets: the chat went out and came in as mls_chat, never as text the
  // server could read. Negative control: the recorder does see plaintext that is sent in clear
  // (the meeting title in the joined message), so a plaintext chat would be caught.
  for (const p of [jonas, admin, erika]) {
    expect(p.frames.some((f) => f.includes('"type":"joined"') && f.includes(TITLE)), p.name).toBe(true);
    expect(p.frames.some((f) => f.includes('"mls_chat')), p.name).toBe(true);
    expect(p.frames.filter((f) => f.includes('Vorlage 17/2026')), p.name).toEqual([]);
  }
});

test('raised hands: everyone sees them in the order they went up, and the organiser lowers them', async ({ browser, server, adminPassword }) => {
  const {
    admin,
    guests: [erika, jonas],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau', 'Jonas Beispiel']);
  const a = admin.page;
  const handOf = (p: Page) => p.getByTestId('hand-toggle');
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

test('a guest whose connection breaks gets back in by themselves, with the chat kept', async ({ browser, server, adminPassword }) => {
  const {
    meetingId,
    admin,
    guests: [erika],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau']);
  const a = admin.page;
  const paulLink = await inviteInSecondTab(admin, meetingId, 'Paul Pendler');

  // Paul's signaling goes through a relay the test can cut, as a train's tunnel would: his side
  // of the connection breaks, while the server notices nothing and keeps the old connection.
  const relays: WebSocketRoute[] = [];
  const paul = await guestJoins(browser, server.baseURL, 'Paul Pendler', paulLink, relays);
  const p = paul.page;
  const before = paul.id;
  await expectAudioVideoFrom(p, admin.id);
  const text = 'Ich sitze im Zug, falls ich kurz weg bin.';
  await sendChat(p, text);
  await expect(chatMessage(p, text)).toHaveAttribute('data-delivery', 'sent');

  await cutAndReconnect(p, relays);

  // Back in by himself, as a new participant that replaced the old seat: one Paul in every list,
  // media both ways, the encrypted group joined again, and his chat still there.
  await expectInRoom(p);
  expect(relays.length).toBeGreaterThanOrEqual(2);
  const after = await selfId(p);
  expect(after).not.toBe(before);
  await openPanel(a, 'people');
  await expect(a.locator('[data-testid="participant-item"][data-name="Paul Pendler"]')).toHaveCount(1);
  await expect(a.locator(`[data-testid="participant-item"][data-participant-id="${after}"]`)).toBeVisible();
  await expectAudioVideoFrom(p, admin.id);
  await expectAudioVideoFrom(a, after);
  await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await openPanel(p, 'chat');
  await expect(chatMessage(p, text)).toBeVisible();
  const again = 'Wieder da.';
  await sendChat(p, again);
  await openPanel(erika.page, 'chat');
  await expect(chatMessage(erika.page, again)).toHaveAttribute('data-from', 'Paul Pendler');

  // Paul leaves: gone from the list.
  await p.getByTestId('leave-button').click();
  await expect(p.getByTestId('ended-page')).toHaveAttribute('data-reason', 'left');
  await expect(a.locator('[data-testid="participant-item"][data-name="Paul Pendler"]')).toHaveCount(0);
});

test('a moderator mutes a guest: the others stop hearing him, he cannot unmute, and neither a reconnect nor a reload lifts it', async ({
  browser,
  server,
  adminPassword,
}) => {
  const { meetingId, admin } = await meetingInSession(browser, server.baseURL, adminPassword, []);
  const a = admin.page;
  const link = await inviteInSecondTab(admin, meetingId, 'Max Mikrofon');
  const relays: WebSocketRoute[] = [];
  const max = await guestJoins(browser, server.baseURL, 'Max Mikrofon', link, relays);
  const m = max.page;
  const mic = m.getByTestId('mic-toggle');
  const first = max.id;
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
  await cutAndReconnect(m, relays);
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
});

test('someone without invitation waits in the lobby until the moderator admits them', async ({ browser, server, adminPassword }) => {
  const {
    meetingId,
    admin,
    guests: [erika],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau']);
  const anna = await person(browser, server.baseURL, 'Anna Anonym');
  await waitInLobby(anna, meetingId, 'Anna Anonym');

  const a = admin.page;
  // Notification for the moderator: toast (its log says so, however briefly it was up) and badge.
  await expect
    .poll(async () => (await appeared(a, 'lobby-toast')).some((t) => t.text.includes('Anna Anonym')))
    .toBe(true);
  await expect(a.getByTestId('lobby-badge')).toHaveText('1');
  await openPanel(a, 'people');
  const entry = a.locator('[data-testid="lobby-entry"][data-name="Anna Anonym"]');
  await expect(entry).toBeVisible();
  await entry.getByTestId('admit-button').click();

  await expectInRoom(anna.page);
  const annaId = await selfId(anna.page);
  await expect(a.locator(`[data-testid="participant-item"][data-name="Anna Anonym"] [data-testid="join-method"]`)).toContainText(
    'Aus dem Warteraum zugelassen',
  );
  await expectAudioVideoFrom(anna.page, admin.id);
  await expectAudioVideoFrom(anna.page, erika.id);
  await expectAudioVideoFrom(a, annaId);
});

test('a guest let in from the lobby whose connection breaks comes back without the lobby, and the moderator\'s browser adds them to the encrypted group again', async ({
  browser,
  server,
  adminPassword,
}) => {
  const { meetingId, admin } = await meetingInSession(browser, server.baseURL, adminPassword, []);
  const a = admin.page;
  const lena = await person(browser, server.baseURL, 'Lena Lobby');
  const relays = await relaySignaling(lena.page);
  const l = lena.page;
  const lobbyPage = l.getByTestId('lobby-page');
  const lobbyEntry = a.locator('[data-testid="lobby-entry"][data-name="Lena Lobby"]');
  await waitInLobby(lena, meetingId, 'Lena Lobby');
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
  await cutAndReconnect(l, relays);
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
  await l.goto(`/m/${encodeURIComponent(meetingId)}`);
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
  await waitInLobby(lena, meetingId, 'Lena Lobby');
  await lobbyEntry.getByTestId('deny-button').click();
  await expect(l.getByTestId('ended-page')).toBeVisible();
});

test('the moderator removes a guest; their link then only leads to the lobby', async ({ browser, server, adminPassword }) => {
  const {
    admin,
    guests: [erika, jonas],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau', 'Jonas Beispiel']);
  const a = admin.page;
  // Jonas's media reaches the others before he is removed.
  for (const p of [admin, erika]) await expectAudioVideoFrom(p.page, jonas.id);
  await openPanel(a, 'people');
  const item = a.locator(`[data-testid="participant-item"][data-participant-id="${jonas.id}"]`);
  await item.getByTestId('remove-button').click();
  await item.getByTestId('remove-button-confirm').click();

  await expect(jonas.page.getByTestId('ended-page')).toBeVisible();
  await expect(jonas.page.getByTestId('ended-page')).toHaveAttribute('data-reason', 'removed');

  for (const p of [admin, erika]) {
    await expect(tileOf(p.page, jonas.id)).toHaveCount(0);
    await expect.poll(() => mediaRising(p.page, jonas.id, 'camera'), { timeout: 30_000 }).toBe(false);
    await expect.poll(() => mediaRising(p.page, jonas.id, 'microphone'), { timeout: 30_000 }).toBe(false);
  }

  // Reopening the same personal link leads to the lobby, not into the meeting.
  await jonas.page.goto(jonas.link!);
  await passPrejoin(jonas.page, { expectTitle: TITLE });
  await expect(jonas.page.getByTestId('lobby-page')).toBeVisible();
  const entry = a.locator('[data-testid="lobby-entry"][data-name="Jonas Beispiel"]');
  await expect(entry).toBeVisible();
  await expect(jonas.page.getByTestId('meeting-room')).toHaveCount(0);

  // The moderator denies: Jonas is told so.
  await entry.getByTestId('deny-button').click();
  await expect(jonas.page.getByTestId('ended-page')).toHaveAttribute('data-reason', 'denied');
});

test('a locked meeting sends even invited guests to the lobby', async ({ browser, server, adminPassword }) => {
  const {
    meetingId,
    admin,
    guests: [erika],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau']);
  const a = admin.page;
  await openPanel(a, 'people');
  await a.getByTestId('lock-toggle').click(); // the switch follows the server's meeting state
  await expect(a.getByTestId('lock-indicator')).toBeVisible();
  await expect(erika.page.getByTestId('lock-indicator')).toBeVisible();

  // The organiser invites one more guest from the meeting page (in a second tab).
  const claraLink = await inviteInSecondTab(admin, meetingId, 'Clara Dritte');

  const clara = await person(browser, server.baseURL, 'Clara Dritte');
  await clara.page.goto(claraLink);
  await passPrejoin(clara.page, { expectTitle: TITLE, expectInvitee: 'Clara Dritte' });
  await expect(clara.page.getByTestId('lobby-page')).toBeVisible();
  await expect(a.locator('[data-testid="lobby-entry"][data-name="Clara Dritte"]')).toBeVisible();
  await expect(clara.page.getByTestId('meeting-room')).toHaveCount(0);
});

test('malformed signaling gets an error reply and the sender keeps working', async ({ browser, server, adminPassword }) => {
  const {
    admin,
    guests: [erika],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau']);
  const e = erika.page;

  await e.evaluate(() => window.__klausur!.rawSend('{"type":"bogus"}'));
  await expect.poll(() => e.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('unknown_type');
  await e.evaluate(() => window.__klausur!.rawSend('not json'));
  await expect.poll(() => e.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('malformed');

  await expectInRoom(e);
  await expectAudioVideoFrom(e, admin.id);
  await expectAudioVideoFrom(admin.page, erika.id);
  const text = 'Noch alles in Ordnung bei mir.';
  await sendChat(e, text);
  await openPanel(admin.page, 'chat');
  await expect(chatMessage(admin.page, text)).toBeVisible();
});

test('a guest whose admitting moderator left is admitted to the encrypted group by another moderator', async ({ browser, server, adminPassword }) => {
  const {
    meetingId,
    admin,
    guests: [erika],
  } = await meetingInSession(browser, server.baseURL, adminPassword, ['Erika Musterfrau']);
  const a = admin.page;
  const e = erika.page;
  // Erika becomes a moderator too.
  await openPanel(a, 'people');
  await a.locator(`[data-testid="participant-item"][data-participant-id="${erika.id}"]`).getByTestId('moderator-button').click();
  await openPanel(e, 'people');
  await expect(e.getByTestId('lobby-section')).toBeVisible();
  // A moderator, not the organiser: no way offered to remove or demote the organiser, nor to
  // grant moderation (the server refuses both; crates/klausur-server/tests/server/access_rules.rs).
  const adminRow = e.locator(`[data-testid="participant-item"][data-participant-id="${admin.id}"]`);
  await expect(adminRow.getByTestId('organiser-badge')).toBeVisible();
  await expect(adminRow.getByTestId('mute-button')).toBeVisible();
  await expect(adminRow.getByTestId('remove-button')).toHaveCount(0);
  await expect(e.getByTestId('moderator-button')).toHaveCount(0);

  // Gustav waits in the lobby. The administrator lets him in and closes the tab before Gustav's
  // browser has asked to join the encrypted group (his credential request is held until she is
  // gone), so her browser cannot add him.
  const gustav = await person(browser, server.baseURL, 'Gustav Gast');
  let adminGone: () => void = () => undefined;
  const gone = new Promise<void>((resolve) => (adminGone = resolve));
  await gustav.page.route('**/api/identity/credential', async (route) => {
    await gone;
    await route.continue();
  });
  await waitInLobby(gustav, meetingId, 'Gustav Gast');
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
  await expectAudioVideoFrom(gustav.page, erika.id);
});

test('signing out in another tab ends the meeting in this one as signed out, with the way to sign in again', async ({ browser, server, adminPassword }) => {
  const admin = await signIn(browser, server.baseURL, 'admin', adminPassword);
  opened.push(admin);
  await createMeeting(admin.page, 'Abmeldung im anderen Tab', 'strict');
  await organiserJoins(admin.page, 'Abmeldung im anderen Tab');

  // The same browser, another tab: sign out there. The server closes the meeting connection
  // whose session ended (close code 1008); this page must not try to join again.
  const tab = await admin.context.newPage();
  await tab.goto('/meetings');
  await tab.getByTestId('logout-button').click();
  await expect(tab).toHaveURL(/\/login/);

  const ended = admin.page.getByTestId('ended-page');
  await expect(ended).toHaveAttribute('data-reason', 'signed_out', { timeout: 20_000 });
  await expect(admin.page.getByTestId('sign-in-again')).toBeVisible();
  await expect(admin.page.getByTestId('rejoin-button')).toHaveCount(0);
  // Signing in again asks for the password and leads back to the meeting's page.
  const meetingPath = new URL(admin.page.url()).pathname;
  await admin.page.getByTestId('sign-in-again').click();
  await admin.page.getByTestId('login-username').fill('admin');
  await admin.page.getByTestId('login-password').fill(adminPassword);
  await admin.page.getByTestId('login-submit').click();
  await expect(admin.page).toHaveURL(new RegExp(`${meetingPath}$`));
  await expect(admin.page.getByTestId('join-button')).toBeVisible();
});
