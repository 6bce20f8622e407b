// End-to-end: the server goes away under a running meeting of three browsers and starts again
// on the same data directory: stopped as for an update (SIGTERM) or killed as in a crash
// (SIGKILL, nothing cleaned up). The browsers get back in by themselves, form the encrypted group
// anew and keep their chat; nothing stored is lost. Every test has its own meeting.
import type { APIRequestContext, Browser } from '@playwright/test';
import { closedAfterEach, expect, newPerson, type Person, signIn, test, type Watched, watchJoins } from './fixtures';
import {
  chatMessage,
  commonSecurityCode,
  createMeeting,
  expectAudioVideoFrom,
  expectEncryptedCall,
  expectInRoom,
  expectJoinedAgain,
  inviteGuest,
  joinByInvitation,
  openPanel,
  organiserJoins,
  passPrejoin,
  selfId,
  sendChat,
} from './helpers';

// A server of its own: the restarts must not disturb the other specs' meetings.
test.use({ serverOptions: { own: 'restart' } });

const opened = closedAfterEach<Person>();

async function person(browser: Browser, baseURL: string, name: string, signInAs?: { username: string; password: string }): Promise<Watched> {
  const p = signInAs ? await signIn(browser, baseURL, signInAs.username, signInAs.password) : await newPerson(browser, baseURL, name);
  opened.push(p);
  return watchJoins(p);
}

interface AuditRecord {
  seq: number;
  kind: string;
  actor: { kind: string; id?: string; name?: string };
  details: Record<string, unknown>;
  hash: string;
}

/** `GET /api/audit/verify` as the user whose cookies `request` carries. */
async function auditVerify(request: APIRequestContext): Promise<{ intact: boolean; records: number; head?: string; problems: string[] }> {
  const res = await request.get('/api/audit/verify');
  expect(res.status(), await res.text()).toBe(200);
  return res.json();
}

/** `GET /api/audit` (newest first) as the user whose cookies `request` carries. */
async function auditRecords(request: APIRequestContext, params: Record<string, string | number>): Promise<AuditRecord[]> {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)]));
  const res = await request.get(`/api/audit?${qs}`);
  expect(res.status(), await res.text()).toBe(200);
  return ((await res.json()) as { records: AuditRecord[] }).records;
}

interface Meeting {
  meetingId: string;
  admin: Watched;
  rita: Watched;
  lars: Watched;
  chat: string;
}

/** The organiser, Rita with an invitation and Lars let in from the lobby, in the room with media
 * both ways, one encrypted group and a chat message. */
async function threeInAMeeting(browser: Browser, baseURL: string, adminPassword: string, title: string): Promise<Meeting> {
  const admin = await person(browser, baseURL, 'admin', { username: 'admin', password: adminPassword });
  const a = admin.page;
  const meetingId = await createMeeting(a, title, 'strict');
  const link = await inviteGuest(a, 'Rita Revision');
  await organiserJoins(a, title);

  const rita = await person(browser, baseURL, 'Rita Revision');
  const r = rita.page;
  await joinByInvitation(r, link, { expectTitle: title, expectInvitee: 'Rita Revision' });

  // Lars has no invitation: he waits in the lobby and the organiser lets him in.
  const lars = await person(browser, baseURL, 'Lars Lobby');
  const l = lars.page;
  await l.goto(`/m/${encodeURIComponent(meetingId)}`);
  await passPrejoin(l, { expectTitle: title, name: 'Lars Lobby' });
  await expect(l.getByTestId('lobby-page')).toBeVisible();
  await openPanel(a, 'people');
  await a.locator('[data-testid="lobby-entry"][data-name="Lars Lobby"]').getByTestId('admit-button').click();
  await expectInRoom(l);

  const ids = { a: await selfId(a), r: await selfId(r), l: await selfId(l) };
  await expectAudioVideoFrom(a, ids.r);
  await expectAudioVideoFrom(r, ids.a);
  await expectAudioVideoFrom(a, ids.l);
  await commonSecurityCode([a, r, l]);
  const chat = 'Bitte Punkt 4 vor der Pause.';
  await sendChat(a, chat);
  await openPanel(r, 'chat');
  await expect(chatMessage(r, chat)).toBeVisible();
  for (const p of [admin, rita, lars]) expect(p.joinedAt).toHaveLength(1);
  return { meetingId, admin, rita, lars, chat };
}

/** After the restart: all three in the room again (each got one more `joined`), Lars with the
 * pass his tab holds and without the lobby, media both ways, one encrypted group again, the old
 * chat on the screen and chat working in the new group. */
async function backTogether(m: Meeting): Promise<void> {
  const [a, r, l] = [m.admin.page, m.rita.page, m.lars.page];
  for (const p of [m.admin, m.rita, m.lars]) await expectJoinedAgain(p, 2);
  await expect(l.getByTestId('lobby-page')).toHaveCount(0);
  // (A restarted server numbers participants from the start again, so the ids may repeat.)
  const [, , larsId] = (await expectEncryptedCall([a, r, l])).ids;
  await openPanel(a, 'people');
  await expect(a.locator(`[data-testid="participant-item"][data-participant-id="${larsId}"] [data-testid="join-method"]`)).toContainText(
    'Aus dem Warteraum zugelassen',
  );
  await expect(chatMessage(r, m.chat)).toBeVisible();
  const again = 'Wieder verbunden.';
  await sendChat(r, again);
  await openPanel(a, 'chat');
  await expect(chatMessage(a, again)).toHaveAttribute('data-from', 'Rita Revision');
}

test('after a restart for an update (SIGTERM) the organiser, an invited guest and a guest let in from the lobby are back by themselves, encrypted, with the chat kept', async ({
  browser,
  server,
  adminPassword,
}) => {
  const m = await threeInAMeeting(browser, server.baseURL, adminPassword, 'Sitzung des Rechnungsprüfungsausschusses');
  // All get `ended: server_shutdown` and show that they reconnect.
  await server.restart();
  await backTogether(m);
});

test('after a crash (SIGKILL) all three are back within 5 s of the restart, encrypted, and no meeting, invitation, account or audit record is lost', async ({
  browser,
  server,
  adminPassword,
}) => {
  const title = 'Haushaltsausschuss';
  const m = await threeInAMeeting(browser, server.baseURL, adminPassword, title);
  // The audit trail just before the crash: intact, its newest record (the head an operator
  // notes) and every record up to it with its hash.
  const beforeCrash = await auditVerify(m.admin.page.request);
  expect(beforeCrash.intact, beforeCrash.problems.join('; ')).toBe(true);
  const headSeq = Number(beforeCrash.head?.split(':')[0]);
  expect(headSeq).toBe(beforeCrash.records);
  const trailBefore = await auditRecords(m.admin.page.request, { before: headSeq + 1, limit: 1000 });
  expect(trailBefore.map((r) => r.seq)).toEqual(Array.from({ length: headSeq }, (_, i) => headSeq - i));
  expect(`${trailBefore[0].seq}:${trailBefore[0].hash}`).toBe(beforeCrash.head);
  const readyAt = await server.restart({ kill: true });
  await backTogether(m);
  const back = [m.admin, m.rita, m.lars].map((p) => ({ name: p.name, ms: p.joinedAt[1] - readyAt }));
  console.log(`back after the restart (ms from the server answering): ${JSON.stringify(back)}`);
  for (const b of back) expect(b.ms, `${b.name} back in the meeting, ms after the server answered again`).toBeLessThanOrEqual(5000);

  // What was stored before the crash is all there: the admin's account (a new sign-in with the
  // changed password), the meeting in the list, and Rita's invitation on its page.
  const later = await person(browser, server.baseURL, 'admin', { username: 'admin', password: adminPassword });
  await expect(later.page.getByTestId('meeting-item').filter({ hasText: title })).toHaveCount(1);
  await later.page.goto(`/meetings/${encodeURIComponent(m.meetingId)}`);
  await expect(later.page.getByTestId('meeting-detail-title')).toHaveText(title);
  await expect(later.page.locator('[data-testid="invitation-item"][data-name="Rita Revision"]')).toHaveCount(1);

  // No audit record is lost: the trail is intact, not shorter, still holds every record up to
  // the head noted before the crash with the same hash, and goes on with the restart.
  const afterCrash = await auditVerify(later.page.request);
  expect(afterCrash.intact, afterCrash.problems.join('; ')).toBe(true);
  expect(afterCrash.problems).toEqual([]);
  expect(afterCrash.records).toBeGreaterThanOrEqual(beforeCrash.records);
  const atHead = await auditRecords(later.page.request, { before: headSeq + 1, limit: 1 });
  expect(atHead.map((r) => `${r.seq}:${r.hash}`)).toEqual([beforeCrash.head]);
  const trailAfter = await auditRecords(later.page.request, { before: headSeq + 1, limit: 1000 });
  expect(trailAfter.map((r) => `${r.seq}:${r.hash}`)).toEqual(trailBefore.map((r) => `${r.seq}:${r.hash}`));
  const started = await auditRecords(later.page.request, { kind: 'server.started', limit: 1 });
  expect(started[0]?.seq ?? 0, 'the restart recorded after the head').toBeGreaterThan(headSeq);
  // Among the records from before the crash: the admin let Lars in from the lobby.
  const adminId = String(((await (await later.page.request.get('/api/session')).json()) as { user: { id: number | string } }).user.id);
  const admissions = await auditRecords(later.page.request, { kind: 'lobby.admitted', meeting: m.meetingId });
  const larsIn = admissions.filter((r) => (r.details.target as { name?: string } | undefined)?.name === 'Lars Lobby');
  expect(larsIn, JSON.stringify(admissions)).toHaveLength(1);
  expect(larsIn[0].seq).toBeLessThanOrEqual(headSeq);
  expect(larsIn[0].actor).toMatchObject({ kind: 'user', id: adminId });
});

test('a participant whose media connection fails while signaling works gets back in with a new one', async ({ browser, server, adminPassword }) => {
  const title = 'Vergabeausschuss';
  const admin = await person(browser, server.baseURL, 'admin', { username: 'admin', password: adminPassword });
  const a = admin.page;
  const meetingId = await createMeeting(a, title, 'strict');
  const link = await inviteGuest(a, 'Rita Revision');
  await organiserJoins(a, title);
  const rita = await person(browser, server.baseURL, 'Rita Revision');
  const r = rita.page;
  await joinByInvitation(r, link, { expectTitle: title, expectInvitee: 'Rita Revision' });

  const before = await selfId(r);
  await expectAudioVideoFrom(a, before);
  // The media server forgets Rita's media connection (test hook); her browser's consent checks
  // then go unanswered until it declares the connection failed (about 30 s in Chromium), and
  // she leaves and joins again: a second `joined` on her page.
  const res = await fetch(`${server.baseURL}/api/test/meetings/${meetingId}/drop-media/${before}`, { method: 'POST' });
  expect(res.status).toBe(200);
  await expect.poll(() => rita.joinedAt.length, { timeout: 90_000, message: 'Rita joined again' }).toBe(2);
  await expectInRoom(r);
  await expect(r.getByTestId('reconnecting-banner')).toHaveCount(0);
  const after = await selfId(r);
  expect(after).not.toBe(before);
  // She left and came back: one Rita in the organiser's list, media both ways again.
  await openPanel(a, 'people');
  await expect(a.locator('[data-testid="participant-item"][data-name="Rita Revision"]')).toHaveCount(1);
  await expectAudioVideoFrom(a, after);
  await expectAudioVideoFrom(r, await selfId(a));
  await expect(r.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
});

test('a media worker that fails is restarted: the participants of its meeting are told and get back in with new media connections', async ({ browser, server, adminPassword }) => {
  const title = 'Bauausschuss';
  const admin = await person(browser, server.baseURL, 'admin', { username: 'admin', password: adminPassword });
  const a = admin.page;
  const meetingId = await createMeeting(a, title, 'strict');
  const link = await inviteGuest(a, 'Wanda Werkstatt');
  await organiserJoins(a, title);
  const wanda = await person(browser, server.baseURL, 'Wanda Werkstatt');
  const w = wanda.page;
  await joinByInvitation(w, link, { expectTitle: title, expectInvitee: 'Wanda Werkstatt' });
  const [adminBefore, wandaBefore] = [admin.joinedAs[0], wanda.joinedAs[0]];
  expect([await selfId(a), await selfId(w)]).toEqual([adminBefore, wandaBefore]);
  await expectAudioVideoFrom(a, wandaBefore);
  await expectAudioVideoFrom(w, adminBefore);
  // What each page says when it joins again, kept (a console message, not a banner).
  const told: string[] = [];
  for (const page of [a, w]) page.on('console', (m) => told.push(m.text()));

  // The worker the meeting is placed on panics outside any room (test hook), as a bug in its
  // loop would: it is restarted, and the meeting tells both that their media is gone.
  const res = await fetch(`${server.baseURL}/api/test/meetings/${meetingId}/panic-media-worker`, { method: 'POST' });
  expect(res.status).toBe(200);
  await expect.poll(() => admin.joinedAt.length, { timeout: 90_000, message: 'the organiser joined again' }).toBe(2);
  await expect.poll(() => wanda.joinedAt.length, { timeout: 90_000, message: 'Wanda joined again' }).toBe(2);
  // Both were told by the server, not left to notice unanswered consent checks.
  expect(told.filter((t) => t.includes('the media server lost the media connection; joining again'))).toHaveLength(2);
  await expectInRoom(a);
  await expectInRoom(w);
  // New connections are new participants: each page goes on as the id its second `joined`
  // gave it (if both left at once the meeting began anew, and an id may come again).
  const [adminAfter, wandaAfter] = [admin.joinedAs[1], wanda.joinedAs[1]];
  await expect.poll(() => selfId(a), { timeout: 30_000 }).toBe(adminAfter);
  await expect.poll(() => selfId(w), { timeout: 30_000 }).toBe(wandaAfter);
  // Media both ways again on the restarted worker, encrypted, one Wanda in the list.
  await expectAudioVideoFrom(a, wandaAfter);
  await expectAudioVideoFrom(w, adminAfter);
  await openPanel(a, 'people');
  await expect(a.locator('[data-testid="participant-item"][data-name="Wanda Werkstatt"]')).toHaveCount(1);
  await expect(w.getByTestId('e2ee-indicator')).toHaveAttribute('data-state', 'active', { timeout: 30_000 });
  // The server counts the restart and carries on.
  const status = await a.request.get(`${server.baseURL}/api/status`);
  expect(status.ok()).toBe(true);
  const workers = ((await status.json()) as { media_workers: { restarts: number }[] }).media_workers;
  expect(workers.reduce((n, x) => n + x.restarts, 0)).toBe(1);
});
