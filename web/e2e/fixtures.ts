// Shared fixtures: one klausur server per worker, one browser, a context per participant.
import { test as base, expect, type Browser, type BrowserContext, type Page } from '@playwright/test';
import { join } from 'node:path';
import { changePassword, login } from './helpers';
import { recordFrame, recordSecret, SERVER_LOGS_DIR, useOutputDir, watchContext } from './log-secrets';
import { startServer, type KlausurServer, type ServerOptions } from './server';

export { expect };

/** The admin's password after the first login's forced change (the `adminPassword` fixture). */
export const ADMIN_PASSWORD = 'Rathaus-Fenster-blau-2026';

/** The admin's first login with the server's one-time password and the forced change to
 * {@link ADMIN_PASSWORD}, in a context of its own; returns the new password. */
export async function firstAdminLogin(browser: Browser, server: KlausurServer): Promise<string> {
  recordSecret('password', ADMIN_PASSWORD);
  const context = await browser.newContext({ baseURL: server.baseURL, locale: 'de-DE' });
  watchContext(context);
  try {
    const page = await context.newPage();
    await login(page, 'admin', server.adminOneTimePassword);
    await changePassword(page, server.adminOneTimePassword, ADMIN_PASSWORD);
  } finally {
    await context.close();
  }
  return ADMIN_PASSWORD;
}

export const test = base.extend<object, { server: KlausurServer; serverOptions: ServerOptions; adminPassword: string }>({
  // A spec file may ask for another web bundle or the RTP recorder with `test.use({ serverOptions })`.
  serverOptions: [{}, { option: true, scope: 'worker' }],
  server: [
    async ({ serverOptions }, use, workerInfo) => {
      // Its output is kept in the run's output directory for the log check after the suite
      // (log-check.teardown.ts), as are the secrets the tests use (log-secrets.ts).
      useOutputDir(workerInfo.project.outputDir);
      const server = await startServer(serverOptions, { logDir: join(workerInfo.project.outputDir, SERVER_LOGS_DIR) });
      recordSecret('password', server.adminOneTimePassword);
      try {
        await use(server);
      } finally {
        await server.stop();
      }
    },
    { scope: 'worker', timeout: 60_000 },
  ],
  // The admin's first login with the one-time password and the forced change, once per server:
  // every test of a spec can then sign in on its own (`signIn`), none depends on another.
  adminPassword: [
    async ({ server, browser }, use) => {
      await use(await firstAdminLogin(browser, server));
    },
    { scope: 'worker', timeout: 60_000 },
  ],
});

export interface Person {
  name: string;
  context: BrowserContext;
  page: Page;
  /** Every WebSocket text frame this page sent or received (what the server sees of it). */
  frames: string[];
}

/** A new person signed in as `username` (on the meeting list). */
export async function signIn(browser: Browser, baseURL: string, username: string, password: string): Promise<Person> {
  // A user name, not a display name: the account's display name is recorded from the API.
  const person = await openPerson(browser, baseURL, username);
  try {
    await login(person.page, username, password);
    await expect(person.page).toHaveURL(/\/meetings$/);
  } catch (e) {
    await person.context.close().catch(() => undefined);
    throw e;
  }
  return person;
}

/** A person whose page also notes when (Node's `Date.now()`) each `joined` arrives, and the
 * participant id it gave: an event log that lasts, unlike a banner that shows and goes. */
export interface Watched extends Person {
  joinedAt: number[];
  joinedAs: string[];
}

/** Starts noting `p`'s `joined` messages (see {@link Watched}); call it before `p` joins. */
export function watchJoins(p: Person): Watched {
  const joinedAt: number[] = [];
  const joinedAs: string[] = [];
  p.page.on('websocket', (ws) =>
    ws.on('framereceived', (f) => {
      if (typeof f.payload === 'string' && f.payload.startsWith('{"type":"joined"')) {
        joinedAt.push(Date.now());
        joinedAs.push((JSON.parse(f.payload) as { self_id: string }).self_id);
      }
    }),
  );
  return { ...p, joinedAt, joinedAs };
}

/**
 * The people a spec's tests open, their browser contexts closed after each test (also a failed
 * one). Call once at the top of a spec file: `const opened = closedAfterEach();`, then
 * `opened.push(p)` for each person opened.
 */
export function closedAfterEach<T extends Person>(): T[] {
  const opened: T[] = [];
  test.afterEach(async () => {
    for (const p of opened.splice(0)) await p.context.close().catch(() => undefined);
  });
  return opened;
}

/** A new browser context (= a separate person with own cookies) and one page in it; `name` is
 * the display name the person is known by. */
export async function newPerson(browser: Browser, baseURL: string, name: string): Promise<Person> {
  recordSecret('display name', name);
  return openPerson(browser, baseURL, name);
}

/** A new person whose cookies, CSRF tokens and the secrets and names in the API's answers and
 * in signaling are recorded for the log check. */
async function openPerson(browser: Browser, baseURL: string, name: string): Promise<Person> {
  const context = await browser.newContext({
    baseURL,
    viewport: { width: 1280, height: 720 },
    permissions: ['camera', 'microphone'],
    locale: 'de-DE',
  });
  watchContext(context);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on('console', (m) => {
    // A 401 from GET /api/session is the normal "not signed in" answer.
    if (m.text().includes('status of 401')) return;
    if (m.type() === 'error' || m.type() === 'warning') console.log(`[${name}] ${m.type()}: ${m.text()}`);
  });
  const frames: string[] = [];
  page.on('websocket', (ws) => {
    const keep = (f: { payload: string | Buffer }) => {
      const text = typeof f.payload === 'string' ? f.payload : f.payload.toString('utf8');
      frames.push(text);
      recordFrame(text);
    };
    ws.on('framesent', keep);
    ws.on('framereceived', keep);
  });
  return { name, context, page, frames };
}
