// End-to-end: the audit trail as an administrator reads it in the web client. A meeting's
// moderation (a lobby guest let in, then removed, the meeting locked) shows up with who did it
// and to whom, the chain verifies, the filters select what they say; a staff account gets
// neither the page nor the API.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { APIRequestContext, Page } from '@playwright/test';
import { closedAfterEach, expect, newPerson, type Person, signIn, test } from './fixtures';
import { changePassword, commonSecurityCode, createMeeting, expectInRoom, login, openPanel, organiserJoins, passPrejoin, selfId } from './helpers';

// A server of its own: this spec adds an account, and the trail it reads is its own.
test.use({ serverOptions: { own: 'audit' } });

const screenshots = join(dirname(fileURLToPath(import.meta.url)), 'screenshots');

const opened = closedAfterEach<Person>();

interface Rec {
  seq: number;
  kind: string;
  meeting_id?: string;
  actor: { kind: string; id?: string; name?: string };
  details: Record<string, unknown>;
  hash: string;
}

/** `GET /api/audit` with the cookies of `request`'s browser context. */
async function auditApi(request: APIRequestContext, params: Record<string, string | number> = {}): Promise<Rec[]> {
  const qs = new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
  const res = await request.get(`/api/audit${qs ? `?${qs}` : ''}`);
  expect(res.status(), await res.text()).toBe(200);
  return ((await res.json()) as { records: Rec[] }).records;
}

/** Waits until the records on the page were read with exactly the URL query `query`. */
async function recordsFor(page: Page, query: Record<string, string>): Promise<void> {
  const expected = new URLSearchParams(query).toString();
  const section = page.getByTestId('audit-records');
  await expect(section).toHaveAttribute('data-state', 'ready');
  await expect(section).toHaveAttribute('data-query', expected);
}

const rows = (page: Page) => page.getByTestId('audit-record');
const row = (page: Page, kind: string) => page.locator(`[data-testid="audit-record"][data-kind="${kind}"]`);
const seqs = (page: Page) => rows(page).evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-seq'))));

test('the administrator finds the lobby admission, the removal and the lock of a meeting in an intact audit trail, and the filters select what they say', async ({
  browser,
  server,
  adminPassword,
}) => {
  const title = 'Ältestenrat';
  const guestName = 'Gerda Gast';
  const admin = await signIn(browser, server.baseURL, 'admin', adminPassword);
  opened.push(admin);
  const a = admin.page;
  const adminName = ((await (await a.request.get('/api/session')).json()) as { user: { display_name: string } }).user.display_name;

  // The meeting: Gerda waits in the lobby, the organiser lets her in, removes her, locks.
  const meetingId = await createMeeting(a, title, 'strict');
  await organiserJoins(a, title);
  const gerda = await newPerson(browser, server.baseURL, guestName);
  opened.push(gerda);
  await gerda.page.goto(`/m/${encodeURIComponent(meetingId)}`);
  await passPrejoin(gerda.page, { expectTitle: title, name: guestName });
  await expect(gerda.page.getByTestId('lobby-page')).toBeVisible();
  await openPanel(a, 'people');
  await a.locator(`[data-testid="lobby-entry"][data-name="${guestName}"]`).getByTestId('admit-button').click();
  await expectInRoom(gerda.page);
  const gerdaId = await selfId(gerda.page);
  // Gerda in the encrypted group first: her row in the list is then settled (it is drawn anew
  // when she joins the group, which would drop a confirmation begun before).
  await commonSecurityCode([a, gerda.page]);
  const item = a.locator(`[data-testid="participant-item"][data-participant-id="${gerdaId}"]`);
  await item.getByTestId('remove-button').click();
  await item.getByTestId('remove-button-confirm').click();
  await expect(gerda.page.getByTestId('ended-page')).toHaveAttribute('data-reason', 'removed');
  await a.getByTestId('lock-toggle').click();
  await expect(a.getByTestId('lock-indicator')).toBeVisible();
  // The meeting writes a command's records once it has carried it out: wait for the last one.
  await expect
    .poll(async () => (await auditApi(a.request, { meeting: meetingId, kind: 'meeting.locked' })).length, { message: 'meeting.locked recorded' })
    .toBe(1);

  // The organiser stays in the meeting; the audit page opens in a second tab, through the
  // navigation (Administration, then the audit tab), watched for violations of the strict
  // Content-Security-Policy (no inline styles).
  await admin.context.addInitScript(() => {
    const w = window as unknown as { __auditCsp: string[] };
    w.__auditCsp = [];
    document.addEventListener('securitypolicyviolation', (e) => w.__auditCsp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await admin.context.newPage();
  const cspErrors: string[] = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) cspErrors.push(msg.text());
  });
  await page.goto('/meetings');
  await page.getByRole('navigation', { name: 'Navigation' }).getByRole('link', { name: 'Administration' }).click();
  await expect(page).toHaveURL(/\/admin\/users$/);
  await page.getByTestId('admin-tab-audit').click();
  await expect(page).toHaveURL(/\/admin\/audit$/);
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Audit-Protokoll');

  // The verification: intact, the count and the head agree (numbers run from 1 without gaps,
  // so the newest of n records is number n) and what the server says now is not less.
  const verify = page.getByTestId('audit-verify');
  await expect(verify).toHaveAttribute('data-intact', 'true');
  await expect(page.getByTestId('audit-verify-badge')).toHaveText('Unversehrt');
  await expect(page.getByTestId('audit-problems')).toHaveCount(0);
  const shownCount = Number(await verify.getAttribute('data-records'));
  expect(shownCount).toBeGreaterThan(10);
  await expect(page.getByTestId('audit-verify-text')).toContainText(`Alle ${shownCount} Einträge`);
  const head = (await page.getByTestId('audit-head').textContent()) ?? '';
  expect(head).toMatch(new RegExp(`^${shownCount}:[0-9a-f]{64}$`));
  const now = (await (await page.request.get('/api/audit/verify')).json()) as { intact: boolean; records: number; problems: string[] };
  expect(now.intact).toBe(true);
  expect(now.problems).toEqual([]);
  expect(now.records).toBeGreaterThanOrEqual(shownCount);
  // The head shown is the record with that number and hash.
  const headSeq = Number(head.split(':')[0]);
  const atHead = await auditApi(page.request, { before: headSeq + 1, limit: 1 });
  expect(atHead.map((r) => `${r.seq}:${r.hash}`)).toEqual([head]);

  // Unfiltered: newest first, several families.
  await recordsFor(page, {});
  const unfiltered = await seqs(page);
  expect(unfiltered.length).toBeGreaterThan(10);
  expect(unfiltered).toEqual([...unfiltered].sort((x, y) => y - x));
  const families = new Set(await rows(page).evaluateAll((els) => els.map((e) => (e.getAttribute('data-kind') ?? '').split('.')[0])));
  expect(families.size).toBeGreaterThanOrEqual(3);

  // Filtered by the meeting: its records only, with who decided and about whom.
  await page.getByTestId('audit-filter-meeting').fill(meetingId);
  await page.getByTestId('audit-filter-apply').click();
  await recordsFor(page, { meeting: meetingId });
  const meetingCells = await rows(page).evaluateAll((els) => els.map((e) => e.querySelector('.audit-meeting')?.textContent ?? ''));
  expect(meetingCells.length).toBeGreaterThan(4);
  expect(new Set(meetingCells)).toEqual(new Set([meetingId]));
  await expect(row(page, 'login.succeeded')).toHaveCount(0);
  for (const kind of ['meeting.created', 'lobby.entered', 'lobby.admitted', 'participant.removed', 'meeting.locked']) {
    await expect(row(page, kind), kind).toHaveCount(1);
  }
  const admitted = row(page, 'lobby.admitted');
  await expect(admitted).toContainText('Aus dem Warteraum zugelassen');
  await expect(admitted.getByTestId('audit-actor')).toContainText(adminName);
  await expect(admitted.getByTestId('audit-details')).toContainText(`Betrifft: ${guestName}`);
  const removed = row(page, 'participant.removed');
  await expect(removed).toContainText('Aus der Besprechung entfernt');
  await expect(removed.getByTestId('audit-actor')).toContainText(adminName);
  await expect(removed.getByTestId('audit-details')).toContainText(`Betrifft: ${guestName}`);
  await expect(row(page, 'meeting.locked').getByTestId('audit-actor')).toContainText(adminName);
  // In the order it happened: admitted before removed before locked.
  const order = await Promise.all(['lobby.admitted', 'participant.removed', 'meeting.locked'].map(async (k) => Number(await row(page, k).getAttribute('data-seq'))));
  expect(order).toEqual([...order].sort((x, y) => x - y));
  // The raw record is there on request, with its hashes.
  await expect(admitted.getByTestId('audit-raw')).toBeHidden();
  await admitted.locator('summary').click();
  await expect(admitted.getByTestId('audit-raw')).toBeVisible();
  const raw = JSON.parse((await admitted.getByTestId('audit-raw').textContent()) ?? '{}') as Rec;
  expect(raw.kind).toBe('lobby.admitted');
  expect(raw.meeting_id).toBe(meetingId);
  expect((raw.details.target as { name?: string }).name).toBe(guestName);
  expect(raw.hash).toMatch(/^[0-9a-f]{64}$/);
  await page.screenshot({ path: join(screenshots, 'admin-audit.png'), fullPage: true });

  // Free text inside the meeting: Gerda's name finds the records about her, nothing else.
  await page.getByTestId('audit-filter-text').fill('gerda');
  await page.getByTestId('audit-filter-apply').click();
  await recordsFor(page, { meeting: meetingId, q: 'gerda' });
  await expect(row(page, 'lobby.admitted')).toHaveCount(1);
  await expect(row(page, 'meeting.locked')).toHaveCount(0);
  await expect(row(page, 'meeting.created')).toHaveCount(0);
  for (const text of await rows(page).allTextContents()) expect(text).toContain(guestName);

  // The family `login`: only sign-in records, the administrator's among them.
  await page.getByTestId('audit-filter-reset').click();
  await recordsFor(page, {});
  await page.getByTestId('audit-filter-kind').selectOption('login');
  await page.getByTestId('audit-filter-apply').click();
  await recordsFor(page, { kind: 'login' });
  const loginKinds = await rows(page).evaluateAll((els) => els.map((e) => e.getAttribute('data-kind') ?? ''));
  expect(loginKinds.length).toBeGreaterThanOrEqual(2);
  for (const k of loginKinds) expect(k).toMatch(/^login\./);
  await expect(row(page, 'login.succeeded').first().getByTestId('audit-actor')).toContainText('admin');
  // The server's own answer to the same filter is the same records.
  expect(await seqs(page)).toEqual((await auditApi(page.request, { kind: 'login', limit: 50 })).map((r) => r.seq));

  // Paging, 10 a page: "older" goes on below the last record shown until the first one, each
  // record once, then says there is nothing older. (Numbers run from 1 without gaps.)
  await page.getByTestId('audit-filter-reset').click();
  await recordsFor(page, {});
  await page.getByTestId('audit-filter-limit').selectOption('10');
  await page.getByTestId('audit-filter-apply').click();
  await recordsFor(page, { limit: '10' });
  await expect(rows(page)).toHaveCount(10);
  const newest = (await seqs(page))[0];
  expect(newest).toBeGreaterThan(10);
  await expect(page.getByTestId('audit-end')).toHaveCount(0);
  for (let shown = 10; shown < newest; ) {
    await page.getByTestId('audit-older').click();
    shown = Math.min(shown + 10, newest);
    await expect(rows(page)).toHaveCount(shown);
  }
  // A last full page does not know it is the last: one more look finds nothing.
  if (newest % 10 === 0) await page.getByTestId('audit-older').click();
  await expect(page.getByTestId('audit-end')).toBeVisible();
  await expect(page.getByTestId('audit-older')).toHaveCount(0);
  expect(await seqs(page)).toEqual(Array.from({ length: newest }, (_, i) => newest - i));

  // An error of the API is shown as the server put it.
  await page.getByTestId('audit-filter-since').fill('2026-03-02T10:00');
  await page.getByTestId('audit-filter-until').fill('2026-03-01T10:00');
  await page.getByTestId('audit-filter-apply').click();
  await expect(page.getByTestId('audit-records')).toHaveAttribute('data-state', 'error');
  await expect(page.getByTestId('audit-records').getByTestId('form-error')).toContainText('since must not be after until');
  await expect(rows(page)).toHaveCount(0);

  expect(await page.evaluate(() => (window as unknown as { __auditCsp: string[] }).__auditCsp)).toEqual([]);
  expect(cspErrors).toEqual([]);
  // Negative control: an inline style put into the page is refused and noticed.
  await page.evaluate(() => {
    const probe = document.createElement('div');
    probe.innerHTML = '<span style="color: red">probe</span>';
    document.body.append(probe);
  });
  await expect.poll(() => page.evaluate(() => (window as unknown as { __auditCsp: string[] }).__auditCsp.length)).toBeGreaterThan(0);
});

test('a broken chain is shown as broken with each problem, and "check again" asks the server anew', async ({ browser, server, adminPassword }) => {
  const admin = await signIn(browser, server.baseURL, 'admin', adminPassword);
  opened.push(admin);
  const a = admin.page;
  // The verdict of a tampered trail, as the server words it (the server's own tests tamper with
  // the database; here the page must show what it is told).
  const problems = ['record 4 was changed', 'record 7 is missing'];
  let answered = 0;
  await a.route('**/api/audit/verify', async (route) => {
    answered++;
    await route.fulfill({ json: { intact: false, records: 12, head: `12:${'ab'.repeat(32)}`, problems } });
  });
  await a.goto('/admin/audit');
  const verify = a.getByTestId('audit-verify');
  await expect(verify).toHaveAttribute('data-intact', 'false');
  await expect(a.getByTestId('audit-verify-badge')).toHaveText('Verletzt');
  await expect(a.getByTestId('audit-verify-text')).toContainText('12 Einträgen wurde verändert');
  await expect(a.getByTestId('audit-problems').locator('li')).toHaveText(problems);
  await expect(a.getByTestId('audit-head')).toHaveText(`12:${'ab'.repeat(32)}`);
  expect(answered).toBe(1);

  // Checked again against the real server: intact, the problems gone.
  await a.unroute('**/api/audit/verify');
  await a.getByTestId('audit-verify-again').click();
  await expect(verify).toHaveAttribute('data-intact', 'true');
  await expect(a.getByTestId('audit-verify-badge')).toHaveText('Unversehrt');
  await expect(a.getByTestId('audit-problems')).toHaveCount(0);
  await expect(a.getByTestId('audit-head')).toHaveText(/^\d+:[0-9a-f]{64}$/);
  // The English page says the same.
  await a.getByTestId('lang-switch').getByRole('button', { name: 'EN' }).click();
  await expect(a.getByRole('heading', { level: 1 })).toHaveText('Audit trail');
  await expect(a.getByTestId('audit-verify-badge')).toHaveText('Intact');
  await expect(a.locator('[data-testid="audit-record"][data-kind="login.succeeded"]').first()).toContainText('Signed in');
});

test('a staff account gets no audit page and the audit API refuses it', async ({ browser, server, adminPassword, playwright }) => {
  const admin = await signIn(browser, server.baseURL, 'admin', adminPassword);
  opened.push(admin);
  const a = admin.page;
  // The administrator creates the account in the user management.
  await a.goto('/admin/users');
  await a.getByTestId('new-user-username').fill('sachbearbeitung');
  await a.getByTestId('new-user-display-name').fill('Sabine Sachbearbeitung');
  await a.getByTestId('new-user-password').fill('Start-Passwort-2026');
  await a.getByTestId('new-user-role').selectOption('staff');
  await a.getByTestId('new-user-submit').click();
  await expect(a.getByTestId('user-row').filter({ hasText: 'sachbearbeitung' })).toHaveCount(1);

  const staff = await newPerson(browser, server.baseURL, 'Sabine Sachbearbeitung');
  opened.push(staff);
  const s = staff.page;
  await login(s, 'sachbearbeitung', 'Start-Passwort-2026');
  await changePassword(s, 'Start-Passwort-2026', 'Akten-Schrank-gruen-2026');

  // No way in through the navigation, and the address leads back to the meetings.
  await expect(s.getByRole('navigation', { name: 'Navigation' }).getByRole('link', { name: 'Administration' })).toHaveCount(0);
  await s.goto('/admin/audit');
  await expect(s).toHaveURL(/\/meetings$/);
  await expect(s.getByTestId('audit-verify')).toHaveCount(0);
  await expect(s.getByTestId('audit-record')).toHaveCount(0);

  // The API: 403 for the staff account (signed in: its session works elsewhere), 401 without
  // a session, 200 for the administrator.
  expect((await s.request.get('/api/meetings')).status()).toBe(200);
  for (const path of ['/api/audit', '/api/audit/verify', '/api/audit?kind=login']) {
    const res = await s.request.get(path);
    expect(res.status(), path).toBe(403);
    expect(await res.text(), path).not.toContain('"records"');
  }
  const anonymous = await playwright.request.newContext({ baseURL: server.baseURL });
  try {
    for (const path of ['/api/audit', '/api/audit/verify']) expect((await anonymous.get(path)).status(), path).toBe(401);
  } finally {
    await anonymous.dispose();
  }
  for (const path of ['/api/audit', '/api/audit/verify']) expect((await a.request.get(path)).status(), path).toBe(200);
  // And the administrator sees the account's creation and its sign-in in the trail.
  const created = await auditApi(a.request, { kind: 'account.created', q: 'sachbearbeitung' });
  expect(created.map((r) => (r.details.target as { name?: string }).name)).toEqual(['sachbearbeitung']);
  const logins = await auditApi(a.request, { kind: 'login.succeeded', q: 'sachbearbeitung' });
  expect(logins).toHaveLength(1);
});
