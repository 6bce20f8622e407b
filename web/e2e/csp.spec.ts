// The strict Content-Security-Policy (no 'unsafe-inline', frame-ancestors 'none') does not get in
// the client's way: through the first login, a meeting with an invited guest, both in the room
// with audio, video and the encrypted group (the WebAssembly core in the worker), no page reports
// a `securitypolicyviolation` event or a CSP console error. Negative control: an inline style
// injected at the end is refused and reported, so the detector and the policy both work.
import type { Page } from '@playwright/test';
import { expect, newPerson, test, type Person } from './fixtures';
import {
  changePassword,
  commonSecurityCode,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  joinByInvitation,
  login,
  passPrejoin,
  selfId,
} from './helpers';

// A server of its own: the admin's password changes here.
test.use({ serverOptions: { own: 'csp' } });

declare global {
  interface Window {
    __cspViolations?: string[];
  }
}

/** Records every `securitypolicyviolation` of the page's documents and every CSP console error
 * (also from the worker) in `sink`. */
async function watchCsp(person: Person, sink: string[]): Promise<void> {
  await person.context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__cspViolations!.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  person.page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) sink.push(`[${person.name}] ${m.text()}`);
  });
}

async function violations(page: Page): Promise<string[]> {
  return page.evaluate(() => window.__cspViolations ?? []);
}

test('the client works under the strict policy without a single violation', async ({ browser, server }) => {
  const consoleErrors: string[] = [];
  const admin = await newPerson(browser, server.baseURL, 'admin');
  const guest = await newPerson(browser, server.baseURL, 'Gast Carla');
  try {
    await watchCsp(admin, consoleErrors);
    await watchCsp(guest, consoleErrors);
    const a = admin.page;

    const resp = await a.goto('/login');
    const csp = resp?.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("style-src 'self';");
    expect(csp).not.toContain('unsafe-inline');

    await login(a, 'admin', server.adminOneTimePassword);
    await changePassword(a, server.adminOneTimePassword, 'Rathaus-Fenster-gruen-2026');
    await createMeeting(a, 'Sitzung unter CSP', 'strict');
    const link = await inviteGuest(a, 'Gast Carla');
    await a.getByTestId('join-meeting').click();
    await passPrejoin(a, { expectTitle: 'Sitzung unter CSP' });
    await expectInRoom(a);

    await joinByInvitation(guest.page, link, { expectInvitee: 'Gast Carla' });

    const [adminId, guestId] = [await selfId(a), await selfId(guest.page)];
    await expectAudioVideoFrom(a, guestId);
    await expectAudioVideoFrom(guest.page, adminId);
    // The encrypted group runs (the WebAssembly core in the worker, under 'wasm-unsafe-eval').
    await commonSecurityCode([a, guest.page]);
    // Served with COOP same-origin (no other site's window keeps a handle to the client), and
    // without an embedder policy: not cross-origin isolated, since Firefox opens no WebRTC
    // connection through an HTTP proxy from such a page (firefox.spec.ts, behind a web proxy).
    expect(resp?.headers()['cross-origin-opener-policy']).toBe('same-origin');
    expect(resp?.headers()['cross-origin-embedder-policy']).toBeUndefined();
    expect(await a.evaluate(() => self.crossOriginIsolated)).toBe(false);

    expect(await violations(a)).toEqual([]);
    expect(await violations(guest.page)).toEqual([]);
    expect(consoleErrors).toEqual([]);

    // Negative control: an inline style is refused, and the detector sees it.
    await a.evaluate(() => {
      const style = document.createElement('style');
      style.textContent = 'body { outline: 1px solid red; }';
      document.head.append(style);
    });
    await expect.poll(() => violations(a)).toEqual([expect.stringMatching(/^style-src/)]);
  } finally {
    await admin.context.close().catch(() => undefined);
    await guest.context.close().catch(() => undefined);
  }
});
