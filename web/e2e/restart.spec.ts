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

// A server of its own: the restart must not disturb the other specs' meetings.
test.use({ serverOptions: { own: 'restart' } });

const TITLE = 'Sitzung des Rechnungsprüfungsausschusses';
const PASSWORD = 'Rathaus-Fenster-blau-2026';

const everyone: Person[] = [];
test.afterAll(async () => {
  for (const p of everyone) await p.context.close().catch(() => undefined);
});

test('after a server restart the organiser and an invited guest are back by themselves, encrypted, with the chat kept', async ({
  browser,
  server,
}) => {
  const admin = await newPerson(browser, server.baseURL, 'admin');
  everyone.push(admin);
  const a = admin.page;
  await login(a, 'admin', server.adminOneTimePassword);
  await changePassword(a, server.adminOneTimePassword, PASSWORD);
  await createMeeting(a, TITLE, 'strict');
  const link = await inviteGuest(a, 'Rita Revision');
  await a.getByTestId('join-meeting').click();
  await passPrejoin(a, { expectTitle: TITLE });
  await expectInRoom(a);

  const rita = await newPerson(browser, server.baseURL, 'Rita Revision');
  everyone.push(rita);
  const r = rita.page;
  await r.goto(link);
  await passPrejoin(r, { expectTitle: TITLE, expectInvitee: 'Rita Revision' });
  await expectInRoom(r);

  const before = { a: await selfId(a), r: await selfId(r) };
  await expectAudioVideoFrom(a, before.r);
  await expectAudioVideoFrom(r, before.a);
  for (const p of [a, r]) await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  const text = 'Bitte Punkt 4 vor der Pause.';
  await sendChat(a, text);
  await openPanel(r, 'chat');
  await expect(chatMessage(r, text)).toBeVisible();

  // The restart: both get `ended: server_shutdown`, show that they reconnect, and are back.
  await server.restart();
  for (const p of [a, r]) {
    await expect(p.getByTestId('reconnecting-banner')).toBeVisible();
  }
  for (const p of [a, r]) {
    await expect(p.getByTestId('reconnecting-banner')).toHaveCount(0, { timeout: 45_000 });
    await expectInRoom(p);
    await expect(p.getByTestId('ended-page')).toHaveCount(0);
  }
  // (A restarted server numbers participants from the start again, so the ids may repeat.)
  const after = { a: await selfId(a), r: await selfId(r) };
  for (const p of [a, r]) await expect(p.getByTestId('video-tile')).toHaveCount(2);
  await expectAudioVideoFrom(a, after.r);
  await expectAudioVideoFrom(r, after.a);
  for (const p of [a, r]) await expect(p.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  // The chat from before the restart is still on the screen, and chat works in the new group.
  await expect(chatMessage(r, text)).toBeVisible();
  const again = 'Wieder verbunden.';
  await sendChat(r, again);
  await openPanel(a, 'chat');
  await expect(chatMessage(a, again)).toHaveAttribute('data-from', 'Rita Revision');
});
