// Networks that block UDP, pass only a web proxy, or have IPv6 only. A participant's Chromium
// runs in a network namespace (e2e/netns.ts)
// whose nftables rules drop UDP; the server listens on the host side of the namespace's veth
// pair (10.201.x.1), the organiser's Chromium runs on the host as usual.
//
// - ICE-TCP: the guest's media runs over TCP to the server's passive TCP candidate; both receive
//   each other's audio and video, decrypted (the SFrame transforms' counters), the guest's
//   selected candidate pair is TCP (getStats) and its diagnostics view says so, and the UDP the
//   guest's browser tried was dropped (the rule's counter). Negative control: the same with the
//   server's TCP candidate switched off (`KLAUSUR_MEDIA_TCP=0`) connects no media.
// - TURN: the guest's namespace lets nothing out but TCP to the server's HTTP port and to port
//   443 of a TURN server (Debian's coturn, started here with a test certificate, TURN over TLS
//   and `use-auth-secret`); the server hands out credentials by the TURN REST API scheme
//   (`[turn]`), the browser's media runs relayed, and coturn's log shows the allocation made with
//   the guest's credentials. Negative control: coturn with another secret refuses them, and no
//   media connects.
//
// Bad links (the guest's namespace again, see e2e/netns.ts for how the link is made bad):
// - 300 kbit/s downlink: the guest gets the lowest simulcast layer of a busy camera and hears
//   its tone without gaps, while the organiser on a good link gets a larger layer of the same
//   camera at the same time (the negative control: the limit, not the tile size, chose it).
// - 5 % loss and up to 100 ms of jitter each way: the tone is heard in at least 95 % of 100 ms
//   windows; after the impairment ends, the video runs at its earlier frame rate within 2 s.
// - Joining through a 300 kbit/s downlink: the client's scripts arrive compressed, and the guest
//   gets into the encrypted group and receives the meeting (the join's steps are printed).
// Networks that change under a meeting (a laptop from Wi-Fi to a mobile network):
// - Everything but the connection to the web server dropped for a while: the browser's media
//   connection goes quiet (ICE `disconnected`), the client asks the server for a sign of life,
//   gets one and stays in: same participant, same security code, media both ways again after.
// - The guest's address goes and, 2 s later, another comes: the client's probe finds the
//   signaling connection dead and the guest is back in by itself, with a new member of the
//   group and media both ways (the negative control, by hand: without the probe the guest comes
//   back only when Chromium declares the media connection failed, and the test fails).
// - A NAT that maps the browser anew (the relay of the lossy-link test, its mappings made anew):
//   the media server follows the browser's checks from the new address, media both ways is back
//   within 8 s (about 1 s here; 16 s without vendor/is's patch, the negative control by hand), the
//   guest stays the same participant in the same group.
import { join } from 'node:path';
import { chromium, type Browser, type Page } from '@playwright/test';
import { chromiumArgs } from '../playwright.config';
import { busyVideoPath } from './canary';
import { expect, firstAdminLogin, newPerson, signIn, test, watchJoins, ADMIN_PASSWORD, type Person } from './fixtures';
import {
  commonSecurityCode,
  createMeeting,
  expectAudioVideoFrom,
  expectInRoom,
  inviteGuest,
  joinByInvitation,
  openPanel,
  organiserJoins,
  passPrejoin,
  selfId,
  stats,
} from './helpers';
import { recordSecret, SERVER_LOGS_DIR, useOutputDir } from './log-secrets';
import { addAddress, createNetns, downlinkCounters, dropAddress, DROP_IPV4, DROP_UDP, impairedUdp, limitDownlink, netnsAvailable, onlyTcpTo, ruleCounters, type Netns } from './netns';
import { startServer, type KlausurServer, type ServerOptions } from './server';
import { startSquid } from './squid';
import { startCoturn, turnConfig } from './turn';

const TITLE = 'Sprechstunde Bürgeramt';

const skipReason = netnsAvailable();
test.skip(skipReason !== null, `network namespaces: ${skipReason}`);

/** Everything a test opened, closed after it whatever its outcome (last opened first). */
const cleanups: (() => Promise<void> | void)[] = [];
test.afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch((e) => console.log(`cleanup: ${e}`));
});

/** A server on the namespace's host address, its admin signed in once (password changed). */
async function serverFor(ns: Netns, browser: Browser, outputDir: string, opts: ServerOptions = {}): Promise<KlausurServer> {
  useOutputDir(outputDir);
  // Not loopback: plain HTTP must be allowed explicitly (no TLS here; cookies are not `Secure`).
  const env = { KLAUSUR_DANGER_PLAIN_HTTP: '1', ...(opts.env ?? {}) };
  const server = await startServer({ ...opts, env, listenHost: ns.hostIp }, { logDir: join(outputDir, SERVER_LOGS_DIR) });
  cleanups.push(() => server.stop());
  recordSecret('password', server.adminOneTimePassword);
  await firstAdminLogin(browser, server);
  return server;
}

/** Chromium inside the namespace, or on the host without `ns` (`extraArgs` added to the
 * suite's). The server's plain-HTTP origin counts as secure for it (camera, microphone, the
 * encryption worker need a secure context). With `busyCamera`, a busy 960x540 clip instead of
 * the suite's small one (so the camera sends all three simulcast layers, near their caps). */
async function browserFor(server: KlausurServer, ns: Netns | null, extraArgs: string[] = [], busyCamera = false): Promise<Browser> {
  const base = busyCamera
    ? [...chromiumArgs.filter((a) => !a.startsWith('--use-file-for-fake-video-capture')), `--use-file-for-fake-video-capture=${busyVideoPath()}`]
    : chromiumArgs;
  const args = [...base, `--unsafely-treat-insecure-origin-as-secure=${server.baseURL}`, ...extraArgs];
  const b = await chromium.launch({ executablePath: ns ? ns.chromium : (process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'), args });
  cleanups.push(() => b.close());
  return b;
}

function namespace(n: number, rules: string, opts: { ipv6?: boolean } = {}): Netns {
  const ns = createNetns(n, opts);
  cleanups.push(() => ns.remove());
  ns.setRules(rules);
  return ns;
}

interface Joined extends Person {
  id: string;
}

/** The organiser (host browser) creates the meeting, invites `guest` and joins; the guest opens
 * the link in `guestBrowser` and joins. */
async function meeting(hostBrowser: Browser, guestBrowser: Browser, baseURL: string, guest: string): Promise<{ admin: Joined; guest: Joined }> {
  const admin = await signIn(hostBrowser, baseURL, 'admin', ADMIN_PASSWORD);
  cleanups.push(() => admin.context.close());
  await createMeeting(admin.page, TITLE, 'strict');
  const link = await inviteGuest(admin.page, guest);
  const adminId = await organiserJoins(admin.page, TITLE);
  return { admin: { ...admin, id: adminId }, guest: await guestJoins(guestBrowser, baseURL, guest, link) };
}

/** `name` opens their invitation `link` in `browser` and joins. */
async function guestJoins(browser: Browser, baseURL: string, name: string, link: string): Promise<Joined> {
  const g = await newPerson(browser, baseURL, name);
  cleanups.push(() => g.context.close());
  await g.page.addInitScript(recordIceStates);
  await joinByInvitation(g.page, link, { expectTitle: TITLE, expectInvitee: name });
  return { ...g, id: await selfId(g.page) };
}

/** In the page: every connection state (`pc:`) and ICE connection state (`ice:`) any of its
 * peer connections went through, in order (`window.__iceStates`). */
function recordIceStates(): void {
  const states: string[] = [];
  (window as unknown as { __iceStates: string[] }).__iceStates = states;
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(config?: RTCConfiguration) {
      super(config);
      this.addEventListener('iceconnectionstatechange', () => states.push(`ice:${this.iceConnectionState}`));
      this.addEventListener('connectionstatechange', () => states.push(`pc:${this.connectionState}`));
    }
  } as typeof RTCPeerConnection;
}

async function iceStates(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { __iceStates?: string[] }).__iceStates ?? []);
}

/** The guest's browser gives up on the media connection (`failed`), never having had one. */
async function mediaNeverConnects(guest: Joined): Promise<void> {
  await expect.poll(() => iceStates(guest.page), { timeout: 90_000, message: 'the media connection fails' }).toContain('pc:failed');
  const states = await iceStates(guest.page);
  for (const s of ['pc:connected', 'ice:connected', 'ice:completed']) expect(states).not.toContain(s);
  expect((await guest.page.evaluate(() => window.__klausur?.connection() ?? null))?.mediaConnected).toBe(false);
  expect(await transport(guest.page)).toBeNull();
  expect((await decrypted(guest.page)).decrypted).toBe(0);
}

type Transport = { kind: string; relayProtocol: string | null; ipv6: boolean | null } | null;

async function transport(page: Page): Promise<Transport> {
  return page.evaluate(async () => ((await window.__klausur?.transport()) ?? null) as Transport);
}

/** Frames the page's SFrame transforms decrypted (received) and failed or lacked a key for. */
async function decrypted(page: Page): Promise<{ decrypted: number; dropped: number }> {
  const d = await page.evaluate(async () => (await window.__klausur?.e2eeDiagnostics()) ?? null);
  const recv = (d?.transforms ?? []).filter((x) => x.side === 'receive');
  return {
    decrypted: recv.reduce((n, x) => n + x.decrypted, 0),
    dropped: recv.reduce((n, x) => n + x.droppedFailed + x.droppedNoKey, 0),
  };
}

/** Media flows both ways between the two, decrypted by each. */
async function exchangeEncryptedMedia(a: Joined, b: Joined): Promise<void> {
  await commonSecurityCode([a.page, b.page]);
  await expectAudioVideoFrom(b.page, a.id, 45_000, a.page);
  await expectAudioVideoFrom(a.page, b.id, 45_000, b.page);
  for (const p of [a, b]) {
    await expect.poll(async () => (await decrypted(p.page)).decrypted, { message: `${p.name} decrypts frames` }).toBeGreaterThan(100);
  }
}

/** The packets the namespace's nftables rules that contain `rule` counted, together. */
function counted(ns: Netns, rule: string): number {
  return ruleCounters(ns)
    .split('\n')
    .filter((l) => l.includes(rule))
    .reduce((n, l) => n + Number(/counter packets (\d+)/.exec(l)?.[1] ?? 0), 0);
}

/** The diagnostics view of the page (security panel) shows the own media transport. */
async function diagnosticsShow(page: Page, kind: string): Promise<void> {
  await openPanel(page, 'security');
  const details = page.getByTestId('e2ee-diagnostics');
  await details.locator('summary').click();
  await expect(page.getByTestId('media-transport')).toHaveAttribute('data-transport', kind);
}

test('a browser whose network drops UDP joins over TCP and exchanges encrypted media', async ({ browser }, testInfo) => {
  const ns = namespace(1, DROP_UDP);
  const server = await serverFor(ns, browser, testInfo.project.outputDir, { own: 'ice-tcp' });
  const nsBrowser = await browserFor(server, ns);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Tilda Tunnel');

  await test.step('media flows both ways, end-to-end encrypted', async () => {
    await exchangeEncryptedMedia(admin, guest);
  });
  await test.step('the guest’s connection is TCP, the organiser’s UDP', async () => {
    await expect.poll(() => transport(guest.page)).toMatchObject({ kind: 'tcp', relayProtocol: null });
    await expect.poll(() => transport(admin.page)).toMatchObject({ kind: 'udp', relayProtocol: null });
    // The guest's browser did try UDP: the namespace dropped it.
    expect(counted(ns, 'meta l4proto udp')).toBeGreaterThan(0);
  });
  await test.step('the diagnostics view says TCP', async () => {
    await diagnosticsShow(guest.page, 'tcp');
    await expect(guest.page.getByTestId('media-transport')).toContainText('TCP');
    await diagnosticsShow(admin.page, 'udp');
  });
});

test('a browser on a network with IPv6 only joins over IPv6 and exchanges encrypted media', async ({ browser }, testInfo) => {
  // The namespace drops every IPv4 packet; the server listens on [::] and announces a media
  // address of each family (`[media] public_ipv6`).
  const ns = namespace(10, DROP_IPV4, { ipv6: true });
  const server = await serverFor(ns, browser, testInfo.project.outputDir, { own: 'dual-stack', dualStack: { v4: ns.hostIp, v6: ns.hostIp6 } });
  const base6 = server.baseURL6!;
  // The guest knows the server by its IPv6 address only (a secure origin for the test, as the
  // IPv4 one is for the organiser's browser).
  const nsBrowser = await browserFor(server, ns, [`--unsafely-treat-insecure-origin-as-secure=${base6}`]);
  const hostBrowser = await browserFor(server, null);
  const admin = await signIn(hostBrowser, server.baseURL, 'admin', ADMIN_PASSWORD);
  cleanups.push(() => admin.context.close());
  await createMeeting(admin.page, TITLE, 'strict');
  const link = await inviteGuest(admin.page, 'Ines Sechs');
  const adminId = await organiserJoins(admin.page, TITLE);
  const guest = await guestJoins(nsBrowser, base6, 'Ines Sechs', link);

  await test.step('media flows both ways, end-to-end encrypted, the guest’s over IPv6', async () => {
    await exchangeEncryptedMedia({ ...admin, id: adminId }, guest);
    await expect.poll(() => transport(guest.page)).toMatchObject({ kind: 'udp', ipv6: true });
    // The guest's browser did try the server's IPv4 candidate: the namespace dropped it.
    expect(counted(ns, 'meta nfproto ipv4')).toBeGreaterThan(0);
  });
  await test.step('the diagnostics view says IPv6', async () => {
    await diagnosticsShow(guest.page, 'udp');
    await expect(guest.page.getByTestId('media-transport')).toHaveAttribute('data-family', 'ipv6');
    await expect(guest.page.getByTestId('media-transport')).toContainText('IPv6');
  });
});

test('negative control: with the server’s TCP candidate off, a browser without UDP gets no media', async ({ browser }, testInfo) => {
  const ns = namespace(2, DROP_UDP);
  const server = await serverFor(ns, browser, testInfo.project.outputDir, { own: 'no-ice-tcp', env: { KLAUSUR_MEDIA_TCP: '0' } });
  const nsBrowser = await browserFor(server, ns);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Udo Ohneweg');
  // The encrypted group forms over signaling (WebSocket over TCP) ...
  await commonSecurityCode([admin.page, guest.page]);
  // ... but ICE finds no working pair: the browser gives up on the media connection.
  await mediaNeverConnects(guest);
  expect(counted(ns, 'meta l4proto udp')).toBeGreaterThan(0);
});


/** A server with `[turn]` pointing at `turns:<ip>:443`, its secret `secret`. */
test('a short media outage leaves a participant in; a change of network (the address goes, another comes) gets it back in by itself within seconds', async ({ browser }, testInfo) => {
  const ns = namespace(11, '');
  const server = await serverFor(ns, browser, testInfo.project.outputDir, { own: 'network-change' });
  const nsBrowser = await browserFor(server, ns);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Mara Mobil');
  const watched = watchJoins(guest);
  const told: string[] = [];
  guest.page.on('console', (m) => told.push(m.text()));
  await exchangeEncryptedMedia(admin, guest);
  const code = await commonSecurityCode([admin.page, guest.page]);
  const statesBefore = (await iceStates(guest.page)).length;

  await test.step('the media path gone for a while, signaling not: the guest stays in, and the media comes back', async () => {
    // Everything dropped but the connection to the web server (UDP and ICE-TCP to the media
    // port alike: with UDP alone gone, the browser moves to its TCP pair without a pause).
    ns.setRules(onlyTcpTo(ns.hostIp, [httpPort(server)]));
    // The browser notices (ICE `disconnected`), the client asks the server for a sign of life
    // and gets one: nothing else happens.
    await expect.poll(async () => (await iceStates(guest.page)).slice(statesBefore), { timeout: 30_000, message: 'the media connection goes quiet' }).toContain('pc:disconnected');
    await guest.page.waitForTimeout(4000); // longer than the probe's 3 s
    ns.setRules('');
    await expect.poll(async () => (await iceStates(guest.page)).slice(statesBefore).at(-1), { timeout: 30_000, message: 'the media connection is back' }).toBe('pc:connected');
    expect(watched.joinedAt).toHaveLength(0);
    expect(told.filter((t) => t.includes('joining again') || t.includes('connecting again'))).toEqual([]);
    expect(await selfId(guest.page)).toBe(guest.id);
    await expectAudioVideoFrom(admin.page, guest.id, 45_000, guest.page);
    await expectAudioVideoFrom(guest.page, admin.id, 45_000, admin.page);
    expect(await commonSecurityCode([admin.page, guest.page])).toBe(code);
  });

  await test.step('the guest’s address goes and another comes (a laptop from Wi-Fi to a mobile network): back in by itself', async () => {
    dropAddress(ns, ns.nsIp);
    const gone = Date.now();
    await guest.page.waitForTimeout(2000);
    addAddress(ns, '10.201.11.3');
    await expect.poll(() => watched.joinedAt.length, { timeout: 60_000, message: 'the guest joined again' }).toBe(1);
    const back = watched.joinedAt[0] - gone;
    await expectInRoom(guest.page);
    await expect(guest.page.getByTestId('reconnecting-banner')).toHaveCount(0);
    // Found by the probe when the media connection went quiet, not by the media connection's
    // failure (about 15 s) or the keepalive (20 to 40 s).
    expect(told.filter((t) => t.includes('connecting again') || t.includes('joining again'))).toEqual([
      expect.stringContaining('to a probe'),
    ]);
    const after = await selfId(guest.page);
    expect(after).not.toBe(guest.id);
    await expectAudioVideoFrom(admin.page, after, 45_000, guest.page);
    await expectAudioVideoFrom(guest.page, admin.id, 45_000, admin.page);
    expect(await commonSecurityCode([admin.page, guest.page], code)).not.toBe(code);
    // The organiser sees one Mara: the one on the old address is gone.
    await openPanel(admin.page, 'people');
    await expect(admin.page.locator('[data-testid="participant-item"][data-name="Mara Mobil"]')).toHaveCount(1, { timeout: 30_000 });
    console.log(`network change: joined again ${back} ms after the old address went (2 s without an address)`);
  });
});

async function serverWithTurn(ns: Netns, browser: Browser, outputDir: string, secret: string, own: string): Promise<KlausurServer> {
  const turn = turnConfig(ns.hostIp, secret);
  cleanups.push(turn.remove);
  return serverFor(ns, browser, outputDir, { own, configToml: turn.configToml });
}

/** The HTTP port of a server's base URL. */
function httpPort(server: KlausurServer): number {
  return Number(new URL(server.baseURL).port);
}

// Chromium checks a TURN server's TLS certificate (without this flag the relayed test fails:
// the test's own certificate is trusted by no one); a real deployment needs a certificate for
// the TURN server's name from a CA browsers trust.
const TURN_TLS_ARGS = ['--ignore-certificate-errors'];

test('with only TCP 443 to a TURN server allowed, the browser’s media runs relayed over TLS, encrypted', async ({ browser }, testInfo) => {
  const ns = namespace(3, DROP_UDP);
  const secret = 'turn-rest-secret-for-the-test-3';
  const server = await serverWithTurn(ns, browser, testInfo.project.outputDir, secret, 'turn');
  ns.setRules(onlyTcpTo(ns.hostIp, [httpPort(server), 443]));
  const turn = await startCoturn(ns.hostIp, ns.hostIp, secret);
  cleanups.push(() => turn.stop());
  const nsBrowser = await browserFor(server, ns, TURN_TLS_ARGS);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Rita Relais');

  await test.step('media flows both ways through the TURN server, end-to-end encrypted', async () => {
    await exchangeEncryptedMedia(admin, guest);
    await expect.poll(() => transport(guest.page)).toMatchObject({ kind: 'relay', relayProtocol: 'tls' });
    // The organiser's browser (not confined) has the same TURN server but needs it not.
    await expect.poll(() => transport(admin.page)).toMatchObject({ kind: 'udp', relayProtocol: null });
  });
  await test.step('coturn allocated with the guest’s credentials (<expiry>:<participant id>)', async () => {
    const log = turn.log();
    expect(log).toMatch(new RegExp(`user <\\d+:${guest.id}>: incoming packet ALLOCATE processed, success`));
    expect(log).toMatch(/ALLOCATE processed, success/);
  });
  await test.step('the diagnostics view says relayed', async () => {
    await diagnosticsShow(guest.page, 'relay');
    await expect(guest.page.getByTestId('media-transport')).toContainText('TLS');
  });
});

test('negative control: a TURN server with another secret refuses the credentials, and no media connects', async ({ browser }, testInfo) => {
  const ns = namespace(4, DROP_UDP);
  const server = await serverWithTurn(ns, browser, testInfo.project.outputDir, 'the-servers-secret-000000', 'turn-wrong-secret');
  ns.setRules(onlyTcpTo(ns.hostIp, [httpPort(server), 443]));
  const turn = await startCoturn(ns.hostIp, ns.hostIp, 'coturns-other-secret-0000');
  cleanups.push(() => turn.stop());
  const nsBrowser = await browserFor(server, ns, TURN_TLS_ARGS);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Nora Nichtdurch');
  await commonSecurityCode([admin.page, guest.page]);
  await mediaNeverConnects(guest);
  // The browser did reach coturn with the guest's credentials, which it refused.
  const log = turn.log();
  expect(log).toMatch(new RegExp(`user <\\d+:${guest.id}>: incoming packet message processed, error 401: Unauthorized`));
  expect(log).not.toMatch(/ALLOCATE processed, success/);
});

test('behind the town hall’s web proxy (nothing out but to Squid), the browser joins and its media runs through the proxy to TURN over TLS, encrypted', async ({ browser }, testInfo) => {
  const ns = namespace(8, DROP_UDP);
  const secret = 'turn-rest-secret-for-the-test-8';
  const server = await serverWithTurn(ns, browser, testInfo.project.outputDir, secret, 'turn-proxy');
  // The namespace reaches nothing but the proxy: no UDP, no TCP to the server or to TURN.
  ns.setRules(onlyTcpTo(ns.hostIp, [3128]));
  const turn = await startCoturn(ns.hostIp, ns.hostIp, secret);
  cleanups.push(() => turn.stop());
  // The proxy lets CONNECT through to TURN's 443 and, as the server of this test speaks plain
  // HTTP on a port of its own, to that port (a city's server answers on 443 with TLS).
  const squid = await startSquid(ns.hostIp, ns.nsIp, [443, httpPort(server)]);
  cleanups.push(() => squid.stop());
  const nsBrowser = await browserFor(server, ns, [...TURN_TLS_ARGS, `--proxy-server=http://${ns.hostIp}:3128`]);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Paula Proxy');

  await test.step('media flows both ways, relayed over TLS, end-to-end encrypted', async () => {
    await exchangeEncryptedMedia(admin, guest);
    await expect.poll(() => transport(guest.page)).toMatchObject({ kind: 'relay', relayProtocol: 'tls' });
  });
  await test.step('it all went through the proxy: the pages, the signaling and the tunnel to TURN', async () => {
    expect(turn.log()).toMatch(new RegExp(`user <\\d+:${guest.id}>: incoming packet ALLOCATE processed, success`));
    // The browser did try the direct ways (the server's UDP candidate): the namespace stopped them.
    expect(counted(ns, 'counter packets')).toBeGreaterThan(0);
    // Squid logs a tunnel when it closes: the guest leaves.
    await guest.context.close();
    const port = httpPort(server);
    const fromGuest = () => squid.requests().filter((r) => r.client === ns.nsIp);
    await expect
      .poll(() => fromGuest().filter((r) => r.status === 'TCP_TUNNEL/200' && r.method === 'CONNECT').map((r) => r.url), { timeout: 15_000 })
      .toEqual(expect.arrayContaining([`${ns.hostIp}:443`, `${ns.hostIp}:${port}`]));
    expect(fromGuest().some((r) => r.status === 'TCP_MISS/200' && r.method === 'GET' && r.url.startsWith(`http://${ns.hostIp}:${port}/assets/`))).toBe(true);
  });
});

test('a web proxy that lets CONNECT through to the media server is enough without TURN: the browser tunnels its media over TCP through it, encrypted', async ({ browser }, testInfo) => {
  const ns = namespace(9, DROP_UDP);
  const server = await serverFor(ns, browser, testInfo.project.outputDir, { own: 'ice-tcp-proxy' });
  ns.setRules(onlyTcpTo(ns.hostIp, [3128]));
  const mediaPorts = Array.from({ length: server.mediaWorkers }, (_, i) => server.mediaPort + i);
  const squid = await startSquid(ns.hostIp, ns.nsIp, [httpPort(server), ...mediaPorts]);
  cleanups.push(() => squid.stop());
  const nsBrowser = await browserFor(server, ns, [`--proxy-server=http://${ns.hostIp}:3128`]);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, 'Theo Tunnel');

  await test.step('media flows both ways over TCP, end-to-end encrypted', async () => {
    await exchangeEncryptedMedia(admin, guest);
    await expect.poll(() => transport(guest.page)).toMatchObject({ kind: 'tcp', relayProtocol: null });
  });
  await test.step('through the proxy: a tunnel to a media port', async () => {
    await guest.context.close();
    const tunnels = () => squid.requests().filter((r) => r.client === ns.nsIp && r.status === 'TCP_TUNNEL/200').map((r) => r.url);
    await expect.poll(() => mediaPorts.some((p) => tunnels().includes(`${ns.hostIp}:${p}`)), { timeout: 15_000 }).toBe(true);
  });
});

/** The share of 100 ms windows of `from`'s microphone, over `ms` at `page`, in which the suite's
 * 1 kHz tone is the larger part of the sound (a gap or a garbled stretch is not). */
async function toneHeard(page: Page, from: string, ms: number): Promise<{ share: number; windows: number }> {
  const shares = await page.evaluate(([p, t]) => window.__klausur!.toneWindows(p, 1000, 100, t), [from, ms] as const);
  if (!shares) throw new Error(`no microphone of ${from} at the page`);
  return { share: shares.filter((x) => x >= 0.5).length / shares.length, windows: shares.length };
}

/** The inbound statistics of the camera of `from` at `page` (undefined before it arrives). */
async function cameraStat(page: Page, from: string) {
  return (await stats(page)).find((x) => x.participant_id === from && x.source === 'camera');
}

/** The camera of `from` as `page` receives it: decoded frames so far and the last frame's width. */
async function cameraAt(page: Page, from: string): Promise<{ frames: number; width: number }> {
  const s = await cameraStat(page, from);
  return { frames: s?.framesDecoded ?? 0, width: s?.frameWidth ?? 0 };
}

/** Turns the camera off, and waits until the button shows it off. */
async function cameraOff(page: Page): Promise<void> {
  await page.getByTestId('camera-toggle').click();
  await expect(page.getByTestId('camera-toggle')).toHaveAttribute('aria-pressed', 'false');
}

/** A server for the namespace `ns` and three browsers: the organiser's and Erika's on the host
 * (Erika's camera the busy clip), Lena's in the namespace. The organiser has created the meeting,
 * invited both and joined; neither guest has yet. */
async function busyMeeting(ns: Netns, browser: Browser, outputDir: string, own: string) {
  const server = await serverFor(ns, browser, outputDir, { own });
  const hostBrowser = await browserFor(server, null);
  const hdBrowser = await browserFor(server, null, [], true);
  const nsBrowser = await browserFor(server, ns);
  const admin = await signIn(hostBrowser, server.baseURL, 'admin', ADMIN_PASSWORD);
  cleanups.push(() => admin.context.close());
  await createMeeting(admin.page, TITLE, 'strict');
  const erikaLink = await inviteGuest(admin.page, 'Erika Musterfrau');
  const lenaLink = await inviteGuest(admin.page, 'Lena Landfunk');
  const adminId = await organiserJoins(admin.page, TITLE);
  return { server, admin, adminId, hdBrowser, nsBrowser, erikaLink, lenaLink };
}

test('on a 300 kbit/s link a guest gets the lowest layer and unbroken audio, while the organiser on a good link gets a larger one', async ({ browser }, testInfo) => {
  const ns = namespace(5, '');
  const { server, admin, hdBrowser, nsBrowser, erikaLink, lenaLink } = await busyMeeting(ns, browser, testInfo.project.outputDir, 'slow-link');
  const erika = await guestJoins(hdBrowser, server.baseURL, 'Erika Musterfrau', erikaLink);
  const lena = await guestJoins(nsBrowser, server.baseURL, 'Lena Landfunk', lenaLink);
  // Only Erika's camera competes for Lena's link (the room would otherwise share it between two).
  await cameraOff(admin.page);
  // Both watch in a large window: by tile size alone, each would get a layer above the lowest.
  for (const p of [admin.page, lena.page]) await p.setViewportSize({ width: 1600, height: 1000 });
  await commonSecurityCode([admin.page, erika.page, lena.page]);
  await expectAudioVideoFrom(lena.page, erika.id, 45_000, erika.page);
  // Then Lena's link gets slow (joining through it too would mostly measure loading the client).
  limitDownlink(ns, 300);

  // The width of the lowest layer Erika's browser sends (it scales layers as its CPU allows: read,
  // not assumed).
  const lowest = async () =>
    (await erika.page.evaluate(() => window.__klausur!.cameraLayers())).find((l) => l.rid === 'q')?.frameWidth ?? 0;
  // At one moment: Lena gets the lowest layer while the organiser gets a larger one of the same
  // camera (so Erika's browser does send a larger one then).
  const split = async () => {
    const q = await lowest();
    return { lena: (await cameraAt(lena.page, erika.id)).width === q, organiser: (await cameraAt(admin.page, erika.id)).width > q };
  };
  // On failure: what Erika sends and what the two receive.
  const report = async (e: unknown) => {
    const layers = await erika.page.evaluate(() => window.__klausur!.cameraLayers());
    throw new Error(`${e}\nErika sends ${JSON.stringify(layers)}; Lena receives ${JSON.stringify(await cameraAt(lena.page, erika.id))}, the organiser ${JSON.stringify(await cameraAt(admin.page, erika.id))}`);
  };
  await test.step('the guest gets the lowest layer, the organiser a larger one', async () => {
    // The organiser's larger layer comes once the room's probes found the link carries it (on a
    // loaded machine the estimate rises slowly, and a failed probe waits longer for the next).
    await expect.poll(split, { timeout: 90_000 }).toEqual({ lena: true, organiser: true }).catch(report);
  });
  await test.step('over 10 s the guest hears the tone in at least 98 % of 100 ms windows and keeps the lowest layer', async () => {
    const before = downlinkCounters(ns);
    const start = Date.now();
    const lenaFrames = (await cameraAt(lena.page, erika.id)).frames;
    const layersBefore = await erika.page.evaluate(() => window.__klausur!.cameraLayers());
    const inBefore = await stats(lena.page);
    const widths: number[] = [];
    // Each sample in detail, for the log: when, and how Lena's receiver fared (frames decoded,
    // packets lost, resends and keyframes asked for).
    const trace: string[] = [];
    const sampling = (async () => {
      for (let i = 0; i < 16; i++) {
        await lena.page.waitForTimeout(600);
        const s = await cameraStat(lena.page, erika.id);
        widths.push(s?.frameWidth ?? 0);
        trace.push(`${new Date().toISOString().slice(11, 23)} ${s?.frameWidth ?? 0}px f${s?.framesDecoded} lost${s?.packetsLost} nack${s?.nackCount} rtx${s?.retransmittedPacketsReceived} pli${s?.pliCount} frz${s?.freezeCount}`);
      }
    })();
    const heard = await toneHeard(lena.page, erika.id, 10_000);
    await sampling;
    const after = downlinkCounters(ns);
    const layersAfter = await erika.page.evaluate(() => window.__klausur!.cameraLayers());
    const inAfter = await stats(lena.page);
    // kbit/s over the window, from byte counters before and after it.
    const elapsed = Date.now() - start;
    const kbit = (bytes: number, bytesBefore = 0) => (((bytes - bytesBefore) * 8) / elapsed).toFixed(0);
    const layerRates = layersAfter
      .map((l) => `${l.rid} ${l.frameWidth}px ${kbit(l.bytesSent, layersBefore.find((b) => b.rid === l.rid)?.bytesSent)} kbit/s`)
      .join(', ');
    const received = inAfter
      .map((x) => `${x.participant_id.slice(0, 6)} ${x.source} ${kbit(x.bytesReceived, inBefore.find((b) => b.participant_id === x.participant_id && b.source === x.source)?.bytesReceived)}`)
      .join(', ');
    const q = await lowest();
    console.log(`slow link: tone in ${(heard.share * 100).toFixed(1)} % of ${heard.windows} windows; widths ${widths.join(' ')} (q ${q}); downlink ${kbit(after.sentBytes, before.sentBytes)} kbit/s, ${after.dropped - before.dropped} dropped; Erika sends ${layerRates}; Lena receives (kbit/s) ${received}`);
    expect(heard.windows).toBeGreaterThan(50);
    expect(heard.share).toBeGreaterThanOrEqual(0.98);
    // The room probes for the next layer now and then with a short train of packets, which
    // finds the link too narrow without trying the layer. But the camera's layers vary with
    // what it films: when the larger one's measured bitrate dips, the estimate can fit it until
    // its rate is measured again, and a switch each way waits for a keyframe: one such stretch
    // (up to 7 samples, 4.2 s) may show it; a rate that wrongly counted as carried would keep
    // it 3 s longer.
    let run = 0;
    let longest = 0;
    for (const w of widths) {
      run = w === q ? 0 : run + 1;
      longest = Math.max(longest, run);
    }
    console.log(`slow link samples: ${trace.join(' | ')}`);
    expect(longest, `widths ${widths.join(' ')}`).toBeLessThanOrEqual(7);
    expect(widths.filter((w) => w === q).length).toBeGreaterThanOrEqual(widths.length / 2);
    expect((await cameraAt(lena.page, erika.id)).frames).toBeGreaterThan(lenaFrames);
  });
});

/** A meeting whose guest's media runs through a UDP relay on the host (`impairedUdp`: loss and
 * jitter when asked, new mappings like a NAT's): namespace `n`, a server of its own (`own`) with
 * one media worker (the relay stands before its one port), the organiser on the host and
 * `guestName` in the namespace, exchanging encrypted media through the relay. */
async function relayedMeeting(n: number, own: string, guestName: string, outputDir: string, browser: Browser) {
  const ns = namespace(n, '');
  const server = await serverFor(ns, browser, outputDir, { own, mediaWorkers: 1 });
  const relay = await impairedUdp(ns, server.mediaPort);
  cleanups.push(() => relay.close());
  ns.setRules(relay.rules);
  const nsBrowser = await browserFor(server, ns);
  const hostBrowser = await browserFor(server, null);
  const { admin, guest } = await meeting(hostBrowser, nsBrowser, server.baseURL, guestName);
  return { relay, admin, guest };
}

test('5 % loss and 100 ms jitter each way: the tone is heard in 95 % of 100 ms windows, the video is back within 2 s after', async ({ browser }, testInfo) => {
  const { relay, admin, guest } = await relayedMeeting(6, 'lossy-link', 'Lena Landfunk', testInfo.project.outputDir, browser);
  await exchangeEncryptedMedia(admin, guest);
  expect(relay.counts().relayed, 'the guest’s media runs through the relay').toBeGreaterThan(100);

  // The frame rate at which the guest decodes the organiser's camera on the good link.
  const rate = async (ms: number) => {
    const a = (await cameraAt(guest.page, admin.id)).frames;
    await guest.page.waitForTimeout(ms);
    return (((await cameraAt(guest.page, admin.id)).frames - a) * 1000) / ms;
  };
  const good = await rate(3000);
  expect(good).toBeGreaterThan(3);

  relay.set({ lossPercent: 5, delayMs: 20, jitterMs: 100 });
  await test.step('with the impairment, the tone is heard in at least 95 % of 100 ms windows', async () => {
    await guest.page.waitForTimeout(3000);
    const before = relay.counts();
    const heard = await toneHeard(guest.page, admin.id, 10_000);
    const after = relay.counts();
    const lost = (after.dropped - before.dropped) / (after.dropped - before.dropped + after.relayed - before.relayed);
    console.log(`lossy link: tone in ${(heard.share * 100).toFixed(1)} % of ${heard.windows} windows, ${(lost * 100).toFixed(1)} % of datagrams dropped; video ${await rate(2000)} fps (good link ${good})`);
    expect(lost).toBeGreaterThan(0.03);
    expect(heard.windows).toBeGreaterThan(50);
    expect(heard.share).toBeGreaterThanOrEqual(0.95);
  });
  await test.step('after the impairment the video runs at its earlier frame rate within 2 s', async () => {
    relay.set({ lossPercent: 0, delayMs: 0, jitterMs: 0 });
    const end = Date.now();
    // Decoded frames every 250 ms for 6 s; recovered from the first moment from which the next
    // 2 s decode at least 70 % of the good link's rate, and so does the rest of the 6 s. (Not
    // "every second after it": on a loaded machine a stall of a few hundred milliseconds in the
    // browser, seconds after the video was back, once failed that, with the video at 13 fps
    // throughout; frozen or slow video after the impairment fails this as it did that.)
    const samples: { t: number; frames: number }[] = [];
    while (Date.now() - end < 6000) {
      samples.push({ t: Date.now() - end, frames: (await cameraAt(guest.page, admin.id)).frames });
      await guest.page.waitForTimeout(250);
    }
    const last = samples[samples.length - 1];
    const rateBetween = (a: { t: number; frames: number }, b: { t: number; frames: number }) => ((b.frames - a.frames) * 1000) / (b.t - a.t);
    const backAt = (s: { t: number; frames: number }) => {
      const later = samples.find((x) => x.t >= s.t + 2000);
      return later !== undefined && rateBetween(s, later) >= 0.7 * good && rateBetween(s, last) >= 0.7 * good;
    };
    const first = samples.findIndex(backAt);
    const recovered = first < 0 ? null : samples[first].t;
    const cam = (await stats(guest.page)).find((x) => x.participant_id === admin.id && x.source === 'camera');
    const repair = cam
      ? `${cam.packetsLost} lost, ${cam.nackCount} NACKs, ${cam.retransmittedPacketsReceived} resends received, ${cam.pliCount} PLIs, ${cam.freezeCount} freezes (${cam.totalFreezesDuration.toFixed(1)} s)`
      : 'no camera stats';
    console.log(`lossy link: video back at its rate ${recovered} ms after the impairment ended (ms:frames ${samples.map((s) => `${s.t}:${s.frames}`).join(' ')}); camera at the guest: ${repair}`);
    expect(recovered).not.toBeNull();
    expect(recovered!).toBeLessThanOrEqual(2000);
  });
});

/** The page's own resources under /assets/ (not the worker's): name, bytes on the wire and
 * decoded. */
async function assetTransfers(page: Page): Promise<{ name: string; encoded: number; decoded: number }[]> {
  return page.evaluate(() =>
    (performance.getEntriesByType('resource') as PerformanceResourceTiming[])
      .filter((e) => new URL(e.name).pathname.startsWith('/assets/'))
      .map((e) => ({ name: new URL(e.name).pathname, encoded: e.encodedBodySize, decoded: e.decodedBodySize })),
  );
}

test('a NAT that maps the browser anew under the meeting (new ports, as a carrier-grade NAT does): the media follows, and the participant stays in', async ({ browser }, testInfo) => {
  const { relay, admin, guest } = await relayedMeeting(12, 'nat-rebinding', 'Nina Neuport', testInfo.project.outputDir, browser);
  const watched = watchJoins(guest);
  const told: string[] = [];
  guest.page.on('console', (m) => told.push(m.text()));
  await exchangeEncryptedMedia(admin, guest);
  const code = await commonSecurityCode([admin.page, guest.page]);
  expect(relay.counts().relayed, 'the guest’s media runs through the relay').toBeGreaterThan(100);
  const statesBefore = (await iceStates(guest.page)).length;

  // Both ways, the decoded frames of the other's camera every 250 ms from the rebinding on: the
  // media is back when both have decoded 10 frames more than at the rebinding.
  const frames = async (page: Page, from: string) => (await cameraAt(page, from)).frames;
  const [g0, a0] = [await frames(guest.page, admin.id), await frames(admin.page, guest.id)];
  const t0 = Date.now();
  relay.rebind();
  let back: number | null = null;
  const seen: string[] = [];
  while (back === null && Date.now() - t0 < 30_000) {
    const [g, a] = [(await frames(guest.page, admin.id)) - g0, (await frames(admin.page, guest.id)) - a0];
    seen.push(`${Date.now() - t0}:${g}/${a}`);
    if (g >= 10 && a >= 10) back = Date.now() - t0;
    else await guest.page.waitForTimeout(250);
  }
  console.log(`NAT rebinding: media both ways again ${back} ms after (frames guest/organiser: ${seen.join(' ')})`);
  // The server follows the browser's checks from the new address at once (within a check or
  // two, Chromium's come every 2.5 s), not only when the old pair times out after 15 s.
  expect(back, 'media both ways again').not.toBeNull();
  expect(back!).toBeLessThan(8000);
  expect(await iceStates(guest.page)).toHaveLength(statesBefore);
  expect(watched.joinedAt).toHaveLength(0);
  expect(told.filter((t) => t.includes('joining again') || t.includes('connecting again'))).toEqual([]);
  expect(await selfId(guest.page)).toBe(guest.id);
  expect(await commonSecurityCode([admin.page, guest.page])).toBe(code);
});

test('joining through a 300 kbit/s link: the client comes compressed, the guest is in the encrypted group and receives the meeting', async ({ browser }, testInfo) => {
  const ns = namespace(7, '');
  const { server, admin, adminId, hdBrowser, nsBrowser, erikaLink, lenaLink } = await busyMeeting(ns, browser, testInfo.project.outputDir, 'slow-join');
  // A meeting under way: the organiser and Erika with her busy camera (every layer near its cap).
  const erika = await guestJoins(hdBrowser, server.baseURL, 'Erika Musterfrau', erikaLink);
  await commonSecurityCode([admin.page, erika.page]);
  // Only Erika's camera goes to Lena: two voices and two cameras' lowest layers need more than
  // 300 kbit/s with their packets' overhead (about 240 kbit/s of payload), and the room would
  // give her the first camera, the organiser's, alone.
  await cameraOff(admin.page);
  // Lena's link is slow from the start: she loads the client through it and joins.
  limitDownlink(ns, 300);
  const start = Date.now();
  const at: Record<string, number> = {};
  const mark = (what: string) => (at[what] = Date.now() - start);
  const lena = await newPerson(nsBrowser, server.baseURL, 'Lena Landfunk');
  cleanups.push(() => lena.context.close());
  const report = async (e: unknown) => {
    const d = downlinkCounters(ns);
    throw new Error(`${e}\nLena's join so far (ms): ${JSON.stringify(at)}; downlink ${d.sentBytes} bytes, ${d.dropped} dropped; e2ee ${JSON.stringify(await lena.page.evaluate(() => window.__klausur?.e2ee()?.phase ?? null).catch(() => 'page gone'))}`);
  };
  await test.step('the page loads, its scripts compressed', async () => {
    await lena.page.goto(lenaLink, { timeout: 60_000 });
    await expect(lena.page.getByTestId('prejoin-page')).toBeVisible({ timeout: 60_000 });
    mark('prejoin');
    const assets = await assetTransfers(lena.page);
    const scripts = assets.filter((a) => a.name.endsWith('.js'));
    expect(scripts.length, JSON.stringify(assets)).toBeGreaterThan(0);
    // Brotli makes the client's script a quarter of its size; gzip a third.
    for (const s of scripts) expect(s.encoded, JSON.stringify(s)).toBeLessThan(s.decoded * 0.4);
  }).catch(report);
  await test.step('she joins, is in the encrypted group and receives the organiser and Erika', async () => {
    await passPrejoin(lena.page, { expectTitle: TITLE, expectInvitee: 'Lena Landfunk' });
    await expectInRoom(lena.page);
    mark('in room');
    const id = await selfId(lena.page);
    await commonSecurityCode([admin.page, erika.page, lena.page], null, 90_000);
    mark('in group');
    await expectAudioVideoFrom(lena.page, erika.id, 60_000, erika.page);
    mark('Erika heard and seen');
    await expect.poll(() => toneHeard(lena.page, adminId, 3000).then((h) => h.share), { timeout: 30_000 }).toBeGreaterThanOrEqual(0.9);
    mark('organiser heard');
    // And the others receive her.
    await expectAudioVideoFrom(admin.page, id, 45_000, lena.page);
  }).catch(report);
  const d = downlinkCounters(ns);
  console.log(`slow join: ${JSON.stringify(at)} (ms from opening the link); downlink ${Math.round(d.sentBytes / 1000)} kB, ${d.dropped} dropped`);
});
