// Shared fixtures: one klausur server per worker, one browser, a context per participant.
import { test as base, expect, type Browser, type BrowserContext, type Page } from '@playwright/test';
import { startServer, type KlausurServer, type ServerOptions } from './server';

export { expect };

export const test = base.extend<object, { server: KlausurServer; serverOptions: ServerOptions }>({
  // A spec file may ask for another web bundle or the RTP recorder with `test.use({ serverOptions })`.
  serverOptions: [{}, { option: true, scope: 'worker' }],
  server: [
    async ({ serverOptions }, use) => {
      const server = await startServer(serverOptions);
      try {
        await use(server);
      } finally {
        await server.stop();
      }
    },
    { scope: 'worker', timeout: 60_000 },
  ],
});

export interface Person {
  name: string;
  context: BrowserContext;
  page: Page;
}

/** A new browser context (= a separate person with own cookies) and one page in it. */
export async function newPerson(browser: Browser, baseURL: string, name: string): Promise<Person> {
  const context = await browser.newContext({
    baseURL,
    viewport: { width: 1280, height: 720 },
    permissions: ['camera', 'microphone'],
    locale: 'de-DE',
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`[${name}] page error: ${e.message}`));
  page.on('console', (m) => {
    // A 401 from GET /api/session is the normal "not signed in" answer.
    if (m.text().includes('status of 401')) return;
    if (m.type() === 'error' || m.type() === 'warning') console.log(`[${name}] ${m.type()}: ${m.text()}`);
  });
  return { name, context, page };
}
