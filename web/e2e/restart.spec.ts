// End-to-end: the server is restarted under a running meeting (SIGTERM, then started again on
// the same data directory, as for an update). The browsers get back in by themselves.
import { expect, newPerson, test, type Person } from './fixtures';
import {
  changePassword,
  chatMessage,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  login,
  openPanel,
  passPrejoin,
  selfId,
  sendChat,
} from './helpers';

// A server of its own: the restart must not disturb the other specs' meetings. The tests build
// on each other and run in order.
test.use({ serverOptions: { own: 'restart' } });
test.describe.configure({ mode: 'serial' });

const TITLE = 'Sitzung des Rechnungsprüfungsausschusses';
const PASSWORD = 'Rathaus-Fenster-blau-2026';

const everyone: Person[] = [];
const s: { meetingId?: string; admin?: Person; rita?: Person } = {};
test.afterAll(async () => {
  for (const p of everyone) await p.context.close().catch(() => undefined);
});

test('after a server restart the organiser, an invited guest and a guest let in from the lobby are back by themselves, encrypted, with the chat kept', async ({
  browser,
  server,
}) => {
  const admin = await newPerson(browser, server.baseURL, 'admin');
  everyone.push(admin);
  const a = admin.page;
  await login(a, 'admin', server.adminOneTimePassword);
  await changePassword(a, server.adminOneTimePassword, PASSWORD);
  s.meetingId = await createMeeting(a, TITLE, 'strict');
  s.admin = admin;
  const link = await inviteGuest(a, 'Rita Revision');
  await a.getByTestId('join-meeting').click();
  await passPrejoin(a, { expectTitle: TITLE });
  await expectInRoom(a);

  const rita = await newPerson(browser, server.baseURL, 'Rita Revision');
  everyone.push(rita);
  s.rita = rita;
  const r = rita.page;
  await r.goto(link);
  await passPrejoin(r, { expectTitle: TITLE, expectInvitee: 'Rita Revision' });
  await expectInRoom(r);

  // Lars has no invitation: he waits in the lobby and the organiser lets him in.
  const lars = await newPerson(browser, server.baseURL, 'Lars Lobby');
  everyone.push(lars);
  const l = lars.page;
  await l.goto(`/m/${encodeURIComponent(s.meetingId)}`);
  await passPrejoin(l, { expectTitle: TITLE, name: 'Lars Lobby' });
  await expect(l.getByTestId('lobby-page')).toBeVisible();
  await openPanel(a, 'people');
  await a.locator('[data-testid="lobby-entry"][data-name="Lars Lobby"]').getByTestId('admit-button').click();
  await expectInRoom(l);

  const before = { a: await selfId(a), r: await selfId(r), l: await selfId(l) };
  await expectAudioVideoFrom(a, before.r);
  await expectAudioVideoFrom(r, before.a);
  await expectAudioVideoFrom(a, before.l);
  for (const p of [a, r, l]) await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  const text = 'Bitte Punkt 4 vor der Pause.';
  await sendChat(a, text);
  await openPanel(r, 'chat');
  await expect(chatMessage(r, text)).toBeVisible();

  // The restart: all get `ended: server_shutdown`, show that they reconnect, and are back; Lars
  // with the pass his tab holds, without the lobby, and added to the new encrypted group by the
  // organiser's browser without a click (his old device key vouches for the new one).
  await server.restart();
  for (const p of [a, r, l]) {
    await expect(p.getByTestId('reconnecting-banner')).toBeVisible();
  }
  for (const p of [a, r, l]) {
    await expect(p.getByTestId('reconnecting-banner')).toHaveCount(0, { timeout: 45_000 });
    await expectInRoom(p);
    await expect(p.getByTestId('ended-page')).toHaveCount(0);
  }
  await expect(l.getByTestId('lobby-page')).toHaveCount(0);
  // (A restarted server numbers participants from the start again, so the ids may repeat.)
  const after = { a: await selfId(a), r: await selfId(r), l: await selfId(l) };
  for (const p of [a, r, l]) await expect(p.getByTestId('video-tile')).toHaveCount(3);
  await expectAudioVideoFrom(a, after.r);
  await expectAudioVideoFrom(r, after.a);
  await expectAudioVideoFrom(a, after.l);
  await expectAudioVideoFrom(l, after.a);
  for (const p of [a, r, l]) await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  await openPanel(a, 'people');
  await expect(a.locator(`[data-testid="participant-item"][data-participant-id="${after.l}"] [data-testid="join-method"]`)).toContainText(
    'Aus dem Warteraum zugelassen',
  );
  // The chat from before the restart is still on the screen, and chat works in the new group.
  await expect(chatMessage(r, text)).toBeVisible();
  const again = 'Wieder verbunden.';
  await sendChat(r, again);
  await openPanel(a, 'chat');
  await expect(chatMessage(a, again)).toHaveAttribute('data-from', 'Rita Revision');
});

test('a participant whose media connection fails while signaling works gets back in with a new one', async ({ server }) => {
  const { admin, rita, meetingId } = s;
  if (!admin || !rita || !meetingId) throw new Error('needs the meeting from the first test');
  const a = admin.page;
  const r = rita.page;
  const before = await selfId(r);
  await expectAudioVideoFrom(a, before);
  // The media server forgets Rita's media connection (test hook); her browser's consent checks
  // then go unanswered until it declares the connection failed (about 30 s in Chromium).
  const res = await fetch(`${server.baseURL}/api/test/meetings/${meetingId}/drop-media/${before}`, { method: 'POST' });
  expect(res.status).toBe(200);
  await expect(r.getByTestId('reconnecting-banner')).toBeVisible({ timeout: 60_000 });
  await expect(r.getByTestId('reconnecting-banner')).toHaveCount(0, { timeout: 30_000 });
  const after = await selfId(r);
  expect(after).not.toBe(before);
  // She left and came back: one Rita in the organiser's list, media both ways again.
  await openPanel(a, 'people');
  await expect(a.locator('[data-testid="participant-item"][data-name="Rita Revision"]')).toHaveCount(1);
  await expectAudioVideoFrom(a, after);
  await expectAudioVideoFrom(r, await selfId(a));
  await expect(r.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
});
