// Accessibility and small screens, as a city's users meet them: every page against the WCAG
// rules that BITV 2.0 makes binding for a public administration (axe-core), a meeting taken part
// in by keyboard alone, and a council member on a phone and on a tablet.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { devices, type Browser, type BrowserContextOptions, type Page } from '@playwright/test';
import { expectAccessible, violations } from './axe';
import { closedAfterEach, expect, newPerson, type Person, signIn, test } from './fixtures';
import {
  chatMessage,
  commonSecurityCode,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  joinByInvitation,
  openPanel,
  organiserJoins,
  passPrejoin,
  selfId,
} from './helpers';
import { recordSecret, watchContext } from './log-secrets';

const TITLE = 'Sitzung des Sozialausschusses';
const screenshots = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');

/** Every browser context the running test opened; all are closed after it, whatever its outcome. */
const opened = closedAfterEach<Person>();

async function person(browser: Browser, baseURL: string, name: string): Promise<Person> {
  const p = await newPerson(browser, baseURL, name);
  opened.push(p);
  return p;
}

async function admin(browser: Browser, baseURL: string, password: string): Promise<Person> {
  const p = await signIn(browser, baseURL, 'admin', password);
  opened.push(p);
  return p;
}

/** A person on a device (a phone's or tablet's screen, touch, its browser's user agent). */
async function onDevice(browser: Browser, baseURL: string, name: string, device: BrowserContextOptions): Promise<Person> {
  recordSecret('display name', name);
  const context = await browser.newContext({ ...device, baseURL, permissions: ['camera', 'microphone'], locale: 'de-DE' });
  watchContext(context);
  // Browsers on phones and tablets cannot share the screen: they have no getDisplayMedia.
  await context.addInitScript(() => {
    delete (MediaDevices.prototype as { getDisplayMedia?: unknown }).getDisplayMedia;
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  const p = { name, context, page, frames: [] };
  opened.push(p);
  return p;
}

/** What of the page lies outside the window: its width beyond the window's (0 if nothing) and
 * the test ids of `testIds` elements not wholly inside the window. */
async function outsideWindow(page: Page, testIds: string[]): Promise<{ overflowX: number; outside: string[] }> {
  return page.evaluate((ids) => {
    const w = window.innerWidth;
    const h = window.innerHeight;
    const outside = ids.filter((id) => {
      const el = document.querySelector(`[data-testid="${id}"]`);
      if (!el) return true;
      const r = el.getBoundingClientRect();
      return r.left < 0 || r.top < 0 || r.right > w + 0.5 || r.bottom > h + 0.5 || r.width === 0;
    });
    return { overflowX: Math.max(0, document.documentElement.scrollWidth - w), outside };
  }, testIds);
}

/** WCAG 1.4.10 (reflow): at 320 CSS pixels wide (a 1280-pixel window zoomed to 400 %) the page
 * needs no scrolling sideways; the window gets its size back afterwards. */
async function expectReflows(page: Page, where: string): Promise<void> {
  const size = page.viewportSize();
  await page.setViewportSize({ width: 320, height: 640 });
  try {
    await expect.poll(async () => (await outsideWindow(page, [])).overflowX).toBe(0);
  } catch {
    throw new Error(`${where} does not fit 320 pixels; sticking out: ${(await stickingOut(page)).join(', ')}`);
  }
  if (size) await page.setViewportSize(size);
}

/** The elements that reach past the window's right edge while none of their children does
 * (the ones that make a page scroll sideways), as `tag.class[data-testid]`, at most ten. */
async function stickingOut(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const w = window.innerWidth;
    const past = (el: Element) => el.getBoundingClientRect().right > w + 0.5;
    return [...document.body.querySelectorAll('*')]
      .filter((el) => past(el) && ![...el.children].some(past))
      .slice(0, 10)
      .map((el) => {
        const id = el.getAttribute('data-testid');
        const cls = typeof el.className === 'string' && el.className ? `.${el.className.split(' ').join('.')}` : '';
        return `${el.tagName.toLowerCase()}${cls}${id ? `[${id}]` : ''} (${Math.round(el.getBoundingClientRect().width)} px)`;
      });
  });
}

/** The focused element: its test id, and whether it shows that it has the focus (a ring). */
async function focused(page: Page): Promise<{ testId: string | null; what: string; ring: boolean } | null> {
  return page.evaluate(() => {
    const el = document.activeElement as HTMLElement | null;
    if (!el || el === document.body) return null;
    const cs = getComputedStyle(el);
    const ring =
      el.matches(':focus-visible') && ((cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) > 0) || cs.boxShadow !== 'none');
    const what = `${el.tagName.toLowerCase()} "${(el.getAttribute('aria-label') ?? el.textContent ?? '').trim().slice(0, 40)}"`;
    return { testId: el.getAttribute('data-testid'), what, ring };
  });
}

/** Presses Tab until the element with `testId` has the focus (at most `max` times); every
 * element the focus passes on the way shows a focus ring. */
async function tabTo(page: Page, testId: string, max = 40): Promise<void> {
  const passed: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    const f = await focused(page);
    if (!f) continue;
    expect(f.ring, `the focus on ${f.what} is not shown`).toBe(true);
    if (f.testId === testId) return;
    passed.push(f.testId ?? f.what);
  }
  throw new Error(`${testId} not reached by ${max} presses of Tab; the focus passed ${passed.join(', ')}`);
}

test('every page passes the WCAG A and AA rules axe-core checks, in German and English, and reflows to 320 pixels; a page that breaks the rules is caught', async ({
  browser,
  server,
  adminPassword,
}) => {
  // Signed out: the login page in both languages, and a page that does not exist.
  const visitor = await person(browser, server.baseURL, 'Besucherin');
  const v = visitor.page;
  await v.goto('/login');
  await expect(v.getByTestId('login-username')).toBeVisible();
  await expectAccessible(v, 'the login page');
  await expectReflows(v, 'the login page');

  // Negative control: a button without a name and a field without a label are caught.
  await v.evaluate(() => {
    const b = document.createElement('button');
    b.id = 'unnamed-button';
    const i = document.createElement('input');
    i.id = 'unlabelled-field';
    document.querySelector('main')?.append(b, i);
  });
  const caught = await violations(v);
  expect(caught.map((x) => x.id)).toEqual(expect.arrayContaining(['button-name', 'label']));
  expect(caught.flatMap((x) => x.nodes).join('\n')).toContain('#unnamed-button');
  await v.evaluate(() => document.querySelectorAll('#unnamed-button, #unlabelled-field').forEach((e) => e.remove()));

  await v.getByTestId('lang-switch').getByRole('button', { name: 'EN' }).click();
  await expect(v.locator('html')).toHaveAttribute('lang', 'en');
  await expectAccessible(v, 'the login page in English');
  await v.goto('/nirgendwo');
  await expectAccessible(v, 'the page for an unknown address');

  // Signed in as the administrator: the meeting list, the form for a new meeting, a meeting
  // with an invitation, the accounts and the audit trail, the password change.
  const a = await admin(browser, server.baseURL, adminPassword);
  const ap = a.page;
  await expectAccessible(ap, 'the meeting list (empty)');
  await ap.getByTestId('new-meeting').click();
  await expect(ap.getByTestId('meeting-title-input')).toBeVisible();
  await expectAccessible(ap, 'the form for a new meeting');
  const meetingId = await createMeeting(ap, TITLE);
  const link = await inviteGuest(ap, 'Greta Gast');
  await expectAccessible(ap, 'a meeting with an invitation');
  await expectReflows(ap, 'a meeting with an invitation');
  await ap.goto('/meetings');
  await expect(ap.getByTestId('meeting-item')).toHaveCount(1);
  await expectAccessible(ap, 'the meeting list');
  await expectReflows(ap, 'the meeting list');
  await ap.goto('/admin/users');
  await expect(ap.getByTestId('user-table')).toBeVisible();
  await expectAccessible(ap, 'the accounts');
  await ap.goto('/admin/audit');
  await expect(ap.getByTestId('admin-tabs')).toBeVisible();
  await expect(ap.locator('table, [role="status"]').first()).toBeVisible();
  await expectAccessible(ap, 'the audit trail');
  await expectReflows(ap, 'the audit trail');
  await ap.goto('/password');
  await expect(ap.getByTestId('password-page')).toBeVisible();
  await expectAccessible(ap, 'the password change');

  // The meeting: the organiser's check before joining, then the room with each of its panels.
  await ap.goto(`/meetings/${encodeURIComponent(meetingId)}`);
  await ap.getByTestId('join-meeting').click();
  await expect(ap.getByTestId('preview-video')).toBeVisible();
  await expectAccessible(ap, 'the check before joining');
  await expectReflows(ap, 'the check before joining');
  await passPrejoin(ap, { expectTitle: TITLE });
  await expectInRoom(ap);
  const organiserId = await selfId(ap);

  const guest = await person(browser, server.baseURL, 'Greta Gast');
  await joinByInvitation(guest.page, link, { expectTitle: TITLE, expectInvitee: 'Greta Gast' });
  await expectAudioVideoFrom(guest.page, organiserId);
  await expectAccessible(guest.page, 'the room with two participants');
  for (const panel of ['chat', 'people', 'security'] as const) {
    await openPanel(guest.page, panel);
    await expectAccessible(guest.page, `the room with the ${panel} panel`);
  }

  // Someone without invitation in the lobby, and the organiser told of them.
  const knocking = await person(browser, server.baseURL, 'Karl Klopf');
  await knocking.page.goto(`/m/${encodeURIComponent(meetingId)}`);
  await passPrejoin(knocking.page, { expectTitle: TITLE, name: 'Karl Klopf' });
  await expect(knocking.page.getByTestId('lobby-page')).toBeVisible();
  await expectAccessible(knocking.page, 'the lobby');
  await expectReflows(knocking.page, 'the lobby');
  await expect(ap.getByTestId('lobby-toast')).toBeVisible();
  await openPanel(ap, 'people');
  await expect(ap.getByTestId('lobby-entry')).toHaveCount(1);
  await expectAccessible(ap, 'the room with someone in the lobby');
  await ap.getByTestId('lang-switch').getByRole('button', { name: 'EN' }).click();
  await expect(ap.locator('html')).toHaveAttribute('lang', 'en');
  await expectAccessible(ap, 'the room in English, with someone in the lobby');

  // The page after leaving.
  await guest.page.getByTestId('leave-button').click();
  await expect(guest.page.getByTestId('ended-page')).toBeVisible();
  await expectAccessible(guest.page, 'the page after leaving');
});

test('by keyboard alone a guest knocks, joins, mutes, raises a hand, shows the organiser large, writes in the chat and leaves, and always sees where the focus is', async ({
  browser,
  server,
  adminPassword,
}) => {
  const a = await admin(browser, server.baseURL, adminPassword);
  const meetingId = await createMeeting(a.page, TITLE);
  await organiserJoins(a.page, TITLE);

  const kim = await person(browser, server.baseURL, 'Kim Tastatur');
  const k = kim.page;
  await k.goto(`/m/${encodeURIComponent(meetingId)}`);
  await expect(k.getByTestId('preview-video')).toBeVisible();
  await tabTo(k, 'display-name-input');
  await k.keyboard.type('Kim Tastatur');
  await tabTo(k, 'join-button');
  await k.keyboard.press('Enter');
  await expect(k.getByTestId('lobby-page')).toBeVisible();

  // The organiser admits (by mouse; the guest is the one without it).
  await openPanel(a.page, 'people');
  await a.page.getByTestId('lobby-entry').filter({ hasText: 'Kim Tastatur' }).getByTestId('admit-button').click();
  await expectInRoom(k);
  const kimId = await selfId(k);
  // In the encrypted group (the chat is sent only from there).
  await commonSecurityCode([a.page, k]);

  // Microphone off with the space bar.
  await tabTo(k, 'mic-toggle');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  await k.keyboard.press('Space');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'false');

  // A hand raised with Enter reaches the organiser.
  await tabTo(k, 'hand-toggle');
  await k.keyboard.press('Enter');
  await expect(a.page.locator(`[data-testid="hand-entry"][data-participant-id="${kimId}"]`)).toBeVisible();

  // The organiser shown large (the button on the tile appears when it has the focus).
  await tabTo(k, 'pin-button');
  await expect(k.getByTestId('pin-button')).toBeVisible();
  await k.keyboard.press('Enter');
  await expect(k.locator('.screen-area [data-testid="video-tile"]')).toHaveAttribute('data-participant-id', await selfId(a.page));

    // The chat opens with the focus in its field; Enter sends; Escape closes it and gives the
  // focus back to the button that opened it.
  await tabTo(k, 'chat-toggle');
  await k.keyboard.press('Enter');
  await expect(k.getByTestId('chat-side-panel')).toBeVisible();
  await expect(k.getByTestId('chat-input')).toBeFocused();
  recordSecret('chat text', 'Ich melde mich zu Punkt 3.');
  await k.keyboard.type('Ich melde mich zu Punkt 3.');
  await k.keyboard.press('Enter');
  await openPanel(a.page, 'chat');
  await expect(chatMessage(a.page, 'Ich melde mich zu Punkt 3.')).toBeVisible();
  await k.keyboard.press('Escape');
  await expect(k.getByTestId('chat-side-panel')).toHaveCount(0);
  await expect(k.getByTestId('chat-toggle')).toBeFocused();

  await tabTo(k, 'leave-button');
  await k.keyboard.press('Enter');
  await expect(k.getByTestId('ended-page')).toBeVisible();
});

test('keyboard shortcuts mute, stop the camera, raise a hand and open panels, are announced, leave text typed in the chat alone, and can be switched off', async ({
  browser,
  server,
  adminPassword,
}) => {
  const a = await admin(browser, server.baseURL, adminPassword);
  await createMeeting(a.page, TITLE);
  const link = await inviteGuest(a.page, 'Kim Tastatur');
  await organiserJoins(a.page, TITLE);
  const kim = await person(browser, server.baseURL, 'Kim Tastatur');
  const k = kim.page;
  await joinByInvitation(k, link, { expectTitle: TITLE, expectInvitee: 'Kim Tastatur' });
  const kimId = await selfId(k);
  const kimOnA = a.page.locator(`[data-testid="video-tile"][data-participant-id="${kimId}"]`);
  await expect(kimOnA).toBeVisible();
  await expect(kimOnA).not.toContainText('Stumm');
  const said = k.getByTestId('shortcut-said');

  // The buttons name their keys.
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-keyshortcuts', 'M');
  await expect(k.getByTestId('chat-toggle')).toHaveAttribute('aria-keyshortcuts', 'C');

  // M mutes (the organiser sees it: the server was told) and says so; M again unmutes.
  await k.locator('body').press('m');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'false');
  await expect(said).toHaveText('Mikrofon aus');
  await expect(kimOnA).toContainText('Stumm');
  await k.locator('body').press('m');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  await expect(said).toHaveText('Mikrofon an');
  await expect(kimOnA).not.toContainText('Stumm');
  // V stops the camera; H raises the hand, which the organiser sees.
  await k.locator('body').press('v');
  await expect(k.getByTestId('camera-toggle')).toHaveAttribute('aria-pressed', 'false');
  await expect(said).toHaveText('Kamera aus');
  await k.locator('body').press('h');
  await expect(said).toHaveText('Hand gehoben');
  await openPanel(a.page, 'people');
  await expect(a.page.locator(`[data-testid="hand-entry"][data-participant-id="${kimId}"]`)).toBeVisible();

  // C opens the chat with the focus in its field: letters typed there are text, not shortcuts.
  await k.locator('body').press('c');
  await expect(k.getByTestId('chat-input')).toBeFocused();
  await k.keyboard.type('mehr');
  await expect(k.getByTestId('chat-input')).toHaveValue('mehr');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  await expect(k.getByTestId('hand-toggle')).toHaveAttribute('aria-pressed', 'true');
  await k.keyboard.press('Escape');
  await expect(k.getByTestId('chat-side-panel')).toHaveCount(0);
  // P opens the participants, P again closes them and gives the focus back to their button.
  await k.locator('body').press('p');
  await expect(k.getByTestId('people-side-panel')).toBeVisible();
  await k.keyboard.press('p');
  await expect(k.getByTestId('people-side-panel')).toHaveCount(0);
  await expect(k.getByTestId('people-toggle')).toBeFocused();

  // ? lists the shortcuts in a dialog that passes the rules; there they are switched off.
  await k.keyboard.press('Shift+?');
  const dialog = k.getByTestId('shortcuts-dialog');
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText('Mikrofon ein- oder ausschalten');
  await expectAccessible(k, 'the shortcuts dialog');
  // Keys do nothing behind the open dialog.
  await k.keyboard.press('m');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  await k.getByTestId('shortcuts-enabled').uncheck();
  await k.keyboard.press('Escape');
  await expect(dialog).toBeHidden();
  await k.locator('body').press('m');
  await k.locator('body').press('c');
  await expect(k.getByTestId('chat-side-panel')).toHaveCount(0);
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  await expect(k.getByTestId('mic-toggle')).not.toHaveAttribute('aria-keyshortcuts', /./);
  // The choice is kept in this browser: after a reload they are still off.
  await k.reload();
  await passPrejoin(k, { expectTitle: TITLE, expectInvitee: 'Kim Tastatur' });
  await expectInRoom(k);
  await k.locator('body').press('m');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'true');
  // The header's button opens the list (for those who do not know "?"), and they go back on.
  await k.getByTestId('shortcuts-button').click();
  await k.getByTestId('shortcuts-enabled').check();
  await k.getByTestId('shortcuts-close').click();
  await expect(k.getByTestId('shortcuts-button')).toBeFocused();
  await k.locator('body').press('m');
  await expect(k.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'false');
});

test('a council member on a phone joins by touch: the pages fit the screen upright and turned, the panels take the whole screen, and no screen share where the phone has none', async ({
  browser,
  server,
  adminPassword,
}) => {
  const a = await admin(browser, server.baseURL, adminPassword);
  await createMeeting(a.page, TITLE);
  const link = await inviteGuest(a.page, 'Paula Handy');
  const tabletLink = await inviteGuest(a.page, 'Tom Tablet');
  const organiserId = await organiserJoins(a.page, TITLE);

  const paula = await onDevice(browser, server.baseURL, 'Paula Handy', devices['Pixel 7']);
  const p = paula.page;
  await p.goto(link);
  await expect(p.getByTestId('preview-video')).toBeVisible();
  expect(await outsideWindow(p, [])).toEqual({ overflowX: 0, outside: [] });
  await p.getByTestId('join-button').scrollIntoViewIfNeeded();
  await p.getByTestId('join-button').tap();
  await expectInRoom(p);
  const paulaId = await selfId(p);
  await expectAudioVideoFrom(p, organiserId);
  await expectAudioVideoFrom(a.page, paulaId);

  const controls = ['mic-toggle', 'camera-toggle', 'hand-toggle', 'chat-toggle', 'people-toggle', 'security-toggle', 'leave-button'];
  for (const [orientation, size] of [
    ['upright', { width: 412, height: 839 }],
    ['turned', { width: 839, height: 412 }],
  ] as const) {
    await p.setViewportSize(size);
    // Every control within the screen and large enough for a finger (44 by 44 CSS pixels).
    await expect
      .poll(() => outsideWindow(p, [...controls, 'meeting-room']), { message: `the room on a phone, ${orientation}: what lies outside the window` })
      .toEqual({ overflowX: 0, outside: [] });
    for (const id of controls) {
      const box = (await p.getByTestId(id).boundingBox())!;
      expect(Math.min(box.width, box.height), `${id} ${orientation}`).toBeGreaterThanOrEqual(44);
    }
    await expect(p.locator(`[data-testid="video-tile"][data-participant-id="${organiserId}"] video`)).toBeVisible();
    // Upright the two people are shown one above the other, turned side by side.
    const [own, other] = await p
      .getByTestId('video-tile')
      .evaluateAll((tiles) => tiles.map((t) => t.getBoundingClientRect().toJSON() as { left: number; right: number; top: number; bottom: number }));
    if (orientation === 'upright') expect(other.top, 'upright: the second tile below the first').toBeGreaterThanOrEqual(own.bottom);
    else expect(other.left, 'turned: the second tile beside the first').toBeGreaterThanOrEqual(own.right);
    // No screen share on a phone: the button is not offered.
    await expect(p.getByTestId('screen-toggle')).toHaveCount(0);
    await expectAccessible(p, `the room on a phone, ${orientation}`);
    await p.screenshot({ path: join(screenshots, `meeting-room-phone-${orientation}.png`) });
  }

  // Tapping the microphone mutes it; the chat takes the whole screen and closes again.
  await p.setViewportSize({ width: 412, height: 839 });
  await p.getByTestId('mic-toggle').tap();
  await expect(p.getByTestId('mic-toggle')).toHaveAttribute('aria-pressed', 'false');
  await p.getByTestId('chat-toggle').tap();
  const panel = p.getByTestId('chat-side-panel');
  await expect(panel).toBeVisible();
  await expect.poll(async () => (await panel.boundingBox())?.width).toBe(412);
  await expect(p.getByTestId('chat-input')).toBeVisible();
  await p.getByTestId('panel-close').tap();
  await expect(panel).toHaveCount(0);
  await expect(p.locator(`[data-testid="video-tile"][data-participant-id="${organiserId}"] video`)).toBeVisible();

  // A tablet held across shows the chat beside the videos.
  const tablet = await onDevice(browser, server.baseURL, 'Tom Tablet', {
    ...devices['Galaxy Tab S4'],
    viewport: { width: 1138, height: 712 },
  });
  await joinByInvitation(tablet.page, tabletLink, { expectTitle: TITLE, expectInvitee: 'Tom Tablet' });
  await openPanel(tablet.page, 'chat');
  await expect.poll(() => outsideWindow(tablet.page, [...controls, 'chat-side-panel'])).toEqual({ overflowX: 0, outside: [] });
  await expect(tablet.page.locator(`[data-testid="video-tile"][data-participant-id="${organiserId}"] video`)).toBeVisible();
});
