// End-to-end: the operator stops the server for maintenance with a drain time
// (`[server] drain_seconds`, here through KLAUSUR_DRAIN_SECONDS): the meeting goes on, every
// browser in it shows by when it will be interrupted at the latest, and when the drain time is
// over the browsers are back by themselves on the restarted server, encrypted again. Someone
// waiting in the lobby is told on the lobby page. (Without a
// drain time the same SIGTERM interrupts at once and shows no notice: restart.spec.ts.)
import type { Browser } from '@playwright/test';
import { expectAccessible } from './axe';
import { closedAfterEach, expect, newPerson, type Person, signIn, test, type Watched, watchJoins } from './fixtures';
import {
  createMeeting,
  expectAudioVideoFrom,
  expectEncryptedCall,
  expectJoinedAgain,
  inviteGuest,
  joinByInvitation,
  organiserJoins,
  passPrejoin,
} from './helpers';

const DRAIN_SECONDS = 15;

// A server of its own: it is stopped and started again.
test.use({ serverOptions: { own: 'drain', env: { KLAUSUR_DRAIN_SECONDS: String(DRAIN_SECONDS) } } });

const opened = closedAfterEach<Person>();

async function person(browser: Browser, baseURL: string, name: string, signInAs?: { username: string; password: string }): Promise<Watched> {
  const p = signInAs ? await signIn(browser, baseURL, signInAs.username, signInAs.password) : await newPerson(browser, baseURL, name);
  opened.push(p);
  return watchJoins(p);
}

test('a server stopped for maintenance lets the meeting go on, shows by when it is interrupted, and everyone is back afterwards', async ({
  browser,
  server,
  adminPassword,
}) => {
  const title = 'Sitzung des Hauptausschusses';
  const admin = await person(browser, server.baseURL, 'admin', { username: 'admin', password: adminPassword });
  const a = admin.page;
  const meetingId = await createMeeting(a, title, 'strict');
  const link = await inviteGuest(a, 'Rita Revision');
  await organiserJoins(a, title);
  const rita = await person(browser, server.baseURL, 'Rita Revision');
  const r = rita.page;
  await joinByInvitation(r, link, { expectTitle: title, expectInvitee: 'Rita Revision' });
  const before = await expectEncryptedCall([a, r]);
  for (const p of [a, r]) await expect(p.getByTestId('maintenance-banner')).toHaveCount(0);
  // Someone without an invitation waits in the lobby.
  const lobby = await person(browser, server.baseURL, 'Lutz Lobby');
  const l = lobby.page;
  await l.goto(`/m/${encodeURIComponent(meetingId)}`);
  await passPrejoin(l, { expectTitle: title, name: 'Lutz Lobby' });
  await expect(l.getByTestId('lobby-page')).toBeVisible();
  await expect(l.getByTestId('maintenance-banner')).toHaveCount(0);

  // The operator stops the server (SIGTERM); it lets the meeting run for the drain time.
  const signalled = Date.now();
  const restarted = server.restart();
  for (const p of [a, r]) {
    const banner = p.getByTestId('maintenance-banner');
    await expect(banner).toBeVisible();
    const by = Number(await banner.getAttribute('data-by'));
    expect(by).toBeGreaterThan(signalled);
    expect(by).toBeLessThanOrEqual(Date.now() + DRAIN_SECONDS * 1000 + 1000);
    // The time of day it names, as the clock shows it (hh:mm).
    await expect(banner).toContainText(/\d\d:\d\d/);
  }
  await expect(a.getByTestId('maintenance-banner')).toContainText('Wartung angekündigt');
  // The one in the lobby is told too, on the lobby page; then gives up waiting.
  await expect(l.getByTestId('maintenance-banner')).toBeVisible();
  expect(Number(await l.getByTestId('maintenance-banner').getAttribute('data-by'))).toBeGreaterThan(signalled);
  await expect(l.getByTestId('lobby-page')).toBeVisible();
  await expectAccessible(l, 'the lobby with the maintenance notice');
  await l.getByTestId('lobby-leave').click();
  await expect(l.getByTestId('lobby-page')).toHaveCount(0);
  // Meanwhile the meeting goes on: media both ways, nobody reconnecting.
  await expectAudioVideoFrom(a, before.ids[1]);
  await expectAudioVideoFrom(r, before.ids[0]);
  for (const p of [a, r]) await expect(p.getByTestId('reconnecting-banner')).toHaveCount(0);
  await expectAccessible(a, 'the room with the maintenance notice');

  // The drain time is over: the server stops, starts again, and both are back by themselves in
  // a new encrypted group, the notice gone.
  await restarted;
  expect(Date.now() - signalled).toBeGreaterThanOrEqual((DRAIN_SECONDS - 1) * 1000);
  for (const p of [admin, rita]) await expectJoinedAgain(p, 2);
  const after = await expectEncryptedCall([a, r]);
  expect(after.code).not.toBe(before.code);
  for (const p of [a, r]) await expect(p.getByTestId('maintenance-banner')).toHaveCount(0);
});
