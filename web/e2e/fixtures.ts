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
  /** Every WebSocket text frame this page sent or received (what the server sees of it). */
  frames: string[];
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
  const frames: string[] = [];
  page.on('websocket', (ws) => {
    const keep = (f: { payload: string | Buffer }) => {
      frames.push(typeof f.payload === 'string' ? f.payload : f.payload.toString('utf8'));
    };
    ws.on('framesent', keep);
    ws.on('framereceived', keep);
  });
  return { name, context, page, frames };
}
