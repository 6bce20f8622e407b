// Client-only check with stand-ins for the server: a mock signaling server (Playwright WebSocket
// routing) and a browser page acting as media forwarder. It exercises the browser client's
// negotiation, track mapping, UI and test hooks without the Rust server; meeting.spec.ts runs
// the same user journeys against the real server.
import { test, expect, type Browser } from '@playwright/test';
import { serveDist } from './mock/static';
import { startSfu } from './mock/sfu';
import { MockMeeting, type Identity } from './mock/signaling';
import { chatMessage, expectAudioVideoFrom, expectInRoom, mediaRising, openPanel, passPrejoin, selfId, sendChat, tileOf } from './helpers';

test.describe.configure({ mode: 'serial' });

test('client journeys against stand-in servers', async ({ browser }) => {
  const web = await serveDist();
  const contexts: { close(): Promise<void> }[] = [];
  try {
    const sfuContext = await browser.newContext();
    contexts.push(sfuContext);
    const sfuPage = await sfuContext.newPage();
    await startSfu(sfuPage, web.baseURL);
    const meeting = new MockMeeting(sfuPage);
    meeting.invites.set('tok-erika', 'Erika Musterfrau');
    meeting.invites.set('tok-jonas', 'Jonas Beispiel');

    const person = async (b: Browser, who: Identity) => {
      const context = await b.newContext({ baseURL: web.baseURL, viewport: { width: 1280, height: 720 }, locale: 'de-DE' });
      contexts.push(context);
      await meeting.attach(context, who);
      const page = await context.newPage();
      page.on('pageerror', (e) => console.log(`[${who.name}] page error: ${e.message}`));
      return page;
    };

    const host = await person(browser, { name: 'Petra Organisatorin', staff: true });
    await host.goto('/m/42');
    await passPrejoin(host, { expectTitle: 'Mock-Besprechung' });
    await expectInRoom(host);
    const hostId = await selfId(host);

    const erika = await person(browser, { name: 'Erika Musterfrau', inviteToken: 'tok-erika' });
    await erika.goto('/j/tok-erika');
    await passPrejoin(erika, { expectInvitee: 'Erika Musterfrau' });
    await expectInRoom(erika);
    const erikaId = await selfId(erika);

    const jonas = await person(browser, { name: 'Jonas Beispiel', inviteToken: 'tok-jonas' });
    await jonas.goto('/j/tok-jonas');
    await passPrejoin(jonas);
    await expectInRoom(jonas);
    const jonasId = await selfId(jonas);

    const all = [
      [host, hostId],
      [erika, erikaId],
      [jonas, jonasId],
    ] as const;
    for (const [page] of all) {
      await expect(page.getByTestId('video-tile')).toHaveCount(3);
      if (process.env.DEBUG_MOCK) {
        await page.waitForTimeout(3000);
        console.log(await selfId(page), JSON.stringify(await page.evaluate(() => window.__klausur!.stats())));
        console.log(JSON.stringify(await page.evaluate(() => (window as any).__pc.getTransceivers().map((t: any) => [t.mid, t.direction, t.currentDirection, t.receiver.track.kind]))));
        console.log(await page.evaluate(() => (window as any).__pc.connectionState));
        console.log(await page.evaluate(() => (window as any).__pc.localDescription.sdp));
      }
      for (const [, id] of all) if ((await selfId(page)) !== id) await expectAudioVideoFrom(page, id);
    }
    await openPanel(host, 'people');
    await expect(host.locator(`[data-testid="participant-item"][data-participant-id="${erikaId}"] [data-testid="join-method"]`)).toHaveText(
      'Persönliche Einladung für Erika Musterfrau von Petra Organisatorin',
    );
    await host.screenshot({ path: test.info().outputPath('mock-room.png') });

    // Screen share.
    await erika.getByTestId('screen-toggle').click();
    await expect(host.locator(`[data-testid="screen-tile"][data-participant-id="${erikaId}"]`)).toBeVisible();
    await expect.poll(() => mediaRising(host, erikaId, 'screen'), { timeout: 30_000 }).toBe(true);
    await host.screenshot({ path: test.info().outputPath('mock-screen.png') });
    await erika.getByTestId('screen-toggle').click();
    await expect(host.getByTestId('screen-tile')).toHaveCount(0);

    // Chat.
    await sendChat(jonas, 'Hallo aus dem Test');
    await openPanel(erika, 'chat');
    await expect(chatMessage(erika, 'Hallo aus dem Test')).toBeVisible();

    // Lobby.
    const anna = await person(browser, { name: 'Anna Anonym' });
    await anna.goto('/m/42');
    await passPrejoin(anna, { name: 'Anna Anonym', expectTitle: 'Mock-Besprechung' });
    await expect(anna.getByTestId('lobby-page')).toBeVisible();
    await expect(host.getByTestId('lobby-toast')).toBeVisible();
    await openPanel(host, 'people');
    await host.locator('[data-testid="lobby-entry"][data-name="Anna Anonym"]').getByTestId('admit-button').click();
    await expectInRoom(anna);
    await expectAudioVideoFrom(anna, hostId);
    await expectAudioVideoFrom(host, await selfId(anna));

    // Malformed input.
    await erika.evaluate(() => window.__klausur!.rawSend('{"type":"bogus"}'));
    await expect.poll(() => erika.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('unknown_type');
    await erika.evaluate(() => window.__klausur!.rawSend('not json'));
    await expect.poll(() => erika.evaluate(() => window.__klausur!.lastError?.code ?? null)).toBe('malformed');
    await expect(erika.getByTestId('error-toast')).toBeVisible();

    // Remove.
    await openPanel(host, 'people');
    const item = host.locator(`[data-testid="participant-item"][data-participant-id="${jonasId}"]`);
    await item.getByTestId('remove-button').click();
    await item.getByTestId('remove-button-confirm').click();
    await expect(jonas.getByTestId('ended-page')).toHaveAttribute('data-reason', 'removed');
    await expect(tileOf(host, jonasId)).toHaveCount(0);
    await expect.poll(() => mediaRising(erika, jonasId, 'camera'), { timeout: 20_000 }).toBe(false);
    await expectAudioVideoFrom(erika, hostId);

    // Lock.
    await host.getByTestId('lock-toggle').check();
    await expect(erika.getByTestId('lock-indicator')).toBeVisible();
  } finally {
    for (const c of contexts) await c.close().catch(() => undefined);
    await web.close();
  }
});
