// Telephone dial-in in the browser, with real SIP callers (Debian's sipp and baresip) and the
// gateway running in the server (`--sip-listen`): the organiser in Chromium admits a caller from
// the lobby, sees the phone participant, the banner and a new security code while the call
// lasts and neither after; audio flows both ways through the encrypted path (the browser's
// microphone is a 500 Hz tone here, the caller's 1000 Hz), and with the gateway's frame key
// withheld the browser decodes nothing.
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdtempSync } from 'node:fs';
import { chromiumArgs } from '../playwright.config';
import type { Browser } from '@playwright/test';
import { closedAfterEach, expect, type Person, signIn, test } from './fixtures';
import { commonSecurityCode, inviteGuest, openPanel, organiserJoins } from './helpers';
import { Baresip, sippCall, toneShare, toneWav } from './phone';

const TITLE = 'Ortsbeirat Mitte';
const screenshots = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');
const tone500 = toneWav(join(tmpdir(), 'klausur-tone-500hz-v1.wav'), 500, 48_000, 2, 0.5);

test.use({
  serverOptions: { own: 'dialin', sipListen: true },
  launchOptions: {
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: chromiumArgs.map((a) => (a.startsWith('--use-file-for-fake-audio-capture=') ? `--use-file-for-fake-audio-capture=${tone500}` : a)),
  },
});
/** The organiser (admin) on a meeting with dial-in and an invitation for Erika with a phone PIN,
 * in the room; every test has its own. */
interface DialInMeeting {
  admin: Person;
  number: string;
  pin: string;
  /** A scratch directory for the SIP peers' files. */
  work: string;
}

const opened = closedAfterEach<Person>();

async function dialInMeeting(browser: Browser, baseURL: string, adminPassword: string, title: string): Promise<DialInMeeting> {
  const admin = await signIn(browser, baseURL, 'admin', adminPassword);
  opened.push(admin);
  const a = admin.page;
  const m = { admin, number: '', pin: '', work: mkdtempSync(join(tmpdir(), 'klausur-dialin-')) };
  await test.step('a meeting with dial-in, and an invitation with a phone PIN', async () => {
    await a.goto('/meetings');
    await a.getByTestId('new-meeting').click();
    await a.getByTestId('meeting-title-input').fill(title);
    await a.getByTestId('profile-internal').check();
    await a.getByTestId('dial-in-checkbox').check();
    await a.getByTestId('create-meeting-submit').click();
    await expect(a.getByTestId('meeting-detail-title')).toHaveText(title);
    m.number = (await a.getByTestId('dial-in-number').getAttribute('data-number')) ?? '';
    expect(m.number).toMatch(/^\d{8}$/);
    await inviteGuest(a, 'Erika Musterfrau');
    m.pin = (await a.locator('[data-testid="invite-pin"][data-name="Erika Musterfrau"]').getAttribute('data-copy')) ?? '';
    expect(m.pin).toMatch(/^\d{8}$/);
  });
  await test.step('the organiser joins', async () => {
    await organiserJoins(a, title);
  });
  return m;
}

const callers = (p: Person) =>
  p.page.evaluate(() => (window.__klausur?.participants() ?? []).filter((x) => x.kind === 'phone_gateway').map((x) => x.id));

test('a caller types number and PIN, the organiser admits them from the lobby; list, banner and security code show the call while it lasts', async ({
  browser,
  server,
  adminPassword,
}) => {
  if (!server.sipAddress) throw new Error('the server runs without the dial-in gateway');
  const { admin, number, pin, work } = await dialInMeeting(browser, server.baseURL, adminPassword, TITLE);
  const a = admin.page;
  await test.step('the organiser locks the meeting', async () => {
    await openPanel(a, 'people');
    await a.getByTestId('lock-toggle').click();
    await expect(a.getByTestId('lock-indicator')).toBeVisible();
  });
  const before = await commonSecurityCode([a]);
  await expect(a.getByTestId('phone-banner')).toHaveCount(0);

  let during: string | null = null;
  const call = await sippCall(join(work, 'sipp'), server.sipAddress, `${number}#${pin}#`, 150_000, '+4930123456789');
  try {
    await test.step('the caller waits in the lobby, marked as a phone caller; the organiser admits them', async () => {
      await openPanel(a, 'people');
      const entry = a.locator('[data-testid="lobby-entry"][data-phone="true"]');
      await expect(entry).toBeVisible({ timeout: 45_000 });
      await expect(entry).toContainText('6789');
      await entry.getByTestId('admit-button').click();
    });

    await test.step('the list shows the caller with a phone badge, the banner appears, the code changes', async () => {
      const item = a.locator('[data-testid="participant-item"][data-phone="true"]');
      // The lasting state: the gateway's member of the encrypted group (the roster holds the
      // caller, not only the server's list) has claimed the server's participant. Before that the list shows the server's row alone, then the member in a row
      // of its own beside it, then one row.
      await expect
        .poll(() =>
          a.evaluate(
            () =>
              (window.__klausur?.e2ee()?.roster ?? []).filter((r) => r.kind === 'phone_gateway' && r.participantId !== null)
                .length,
          ),
        )
        .toBe(1);
      await expect
        .poll(() => item.getByTestId('phone-label').allTextContents())
        .toEqual(['Telefon …6789 · Erika Musterfrau (Einladung) · über Gateway']);
      await expect(item).toHaveCount(1);
      await expect(item.getByTestId('phone-badge')).toBeVisible();
      await expect(a.getByTestId('phone-banner-text')).toHaveText(
        'Eine Person ist per Telefon verbunden. Diese Verbindung ist nicht Ende-zu-Ende-verschlüsselt.',
      );
      during = await commonSecurityCode([a], before);
      await a.screenshot({ path: join(screenshots, 'dialin-room.png') });
    });

    await test.step('the caller hangs up: the list, the banner and the code say so', async () => {
      await call.hangup();
      const code = await call.done;
      expect(code, `sipp's exit code (0: the BYE was answered)\n${code === 0 ? '' : call.trace()}`).toBe(0);
      await expect(a.locator('[data-testid="participant-item"][data-phone="true"]')).toHaveCount(0, { timeout: 30_000 });
      await expect(a.getByTestId('phone-banner')).toHaveCount(0);
      const after = await commonSecurityCode([a], during);
      expect(after).not.toBe(before);
    });
  } finally {
    call.kill();
  }
});

test('audio flows both ways through the encrypted path; with the gateway\'s frame key withheld the browser decodes nothing', async ({
  browser,
  server,
  adminPassword,
}) => {
  if (!server.sipAddress) throw new Error('the server runs without the dial-in gateway');
  const { admin, number, pin, work } = await dialInMeeting(browser, server.baseURL, adminPassword, 'Ortsbeirat Nord');
  const a = admin.page;

  const phone = await Baresip.start(join(work, 'baresip'), 1000);
  try {
    await phone.call(server.sipAddress, `${number}#${pin}#`);
    await expect.poll(() => callers(admin), { timeout: 45_000 }).toHaveLength(1);
    const [pid] = await callers(admin);
    await test.step('the browser hears the caller\'s 1000 Hz, and not its own 500 Hz', async () => {
      await expect
        .poll(async () => {
          const shares = await a.evaluate(([p]) => window.__klausur!.toneShares(p, [1000, 500], 1500), [pid]);
          return shares !== null && shares[0] > 0.5 && shares[1] < 0.05 ? 'tone' : JSON.stringify(shares);
        }, { timeout: 45_000 })
        .toBe('tone');
    });
    await test.step('the caller hears the browser\'s 500 Hz and no echo of its own 1000 Hz', async () => {
      // The caller hears the "joined" prompt over the meeting first (15 s); listen until 20 s
      // more of the call are recorded (baresip records what it plays out, which on a loaded
      // machine runs behind the clock).
      const joinedAt = phone.heard().length;
      await expect.poll(() => phone.heard().length, { timeout: 90_000 }).toBeGreaterThan(joinedAt + 8000 * 20);
      await phone.hangup();
      const heard = await phone.heardWhenClosed();
      expect(heard.length).toBeGreaterThan(8000 * 20);
      const tail = heard.subarray(heard.length - 8000 * 3);
      expect(toneShare(tail, 8000, 500)).toBeGreaterThan(0.3);
      expect(toneShare(tail, 8000, 1000)).toBeLessThan(0.02);
    });
  } finally {
    phone.stop();
  }
  await expect.poll(() => callers(admin), { timeout: 30_000 }).toHaveLength(0);

  await test.step('negative control: the gateway\'s frames under a key the group does not have are never decoded', async () => {
    const on = await a.request.post('/api/test/dialin/withhold-frame-key', { data: { on: true } });
    expect(on.ok(), `withhold-frame-key: ${on.status()} ${await on.text()}`).toBe(true);
    // Its own tone (1500 Hz): the browser's decoder may still conceal with the first caller's
    // 1000 Hz for a while, which says nothing about this caller's frames.
    const again = await Baresip.start(join(work, 'baresip-withheld'), 1500);
    try {
      await again.call(server.sipAddress!, `${number}#${pin}#`);
      await expect.poll(() => callers(admin), { timeout: 45_000 }).toHaveLength(1);
      const [pid] = await callers(admin);
      // Frames arrive (the server forwards them) but none decrypts: the transform drops them.
      type Counts = { decrypted: number; dropped: number };
      const audioIn = () =>
        a.evaluate(async () => {
          const d = await window.__klausur!.e2eeDiagnostics();
          const rx = (d?.transforms ?? []).filter((x) => x.side === 'receive' && x.kind === 'audio');
          return {
            decrypted: rx.reduce((n, x) => n + x.decrypted, 0),
            dropped: rx.reduce((n, x) => n + x.droppedNoKey + x.droppedFailed, 0),
          };
        });
      // Wait until the caller's audio is under way at all (dropped frames rising).
      let start: Counts = await audioIn();
      await expect
        .poll(async () => (await audioIn()).dropped - start.dropped, { timeout: 45_000 })
        .toBeGreaterThan(10);
      start = await audioIn();
      const shares = await a.evaluate(([p]) => window.__klausur!.toneShares(p, [1500], 3000), [pid]);
      const end = await audioIn();
      expect(end.decrypted - start.decrypted, 'frames decrypted under a withheld key').toBe(0);
      expect(end.dropped - start.dropped).toBeGreaterThan(50);
      expect(shares === null || shares[0] < 0.05, `the withheld caller's 1500 Hz in the browser: ${JSON.stringify(shares)}`).toBe(true);
    } finally {
      await again.hangup();
      again.stop();
      await a.request.post('/api/test/dialin/withhold-frame-key', { data: { on: false } });
    }
  });
});
