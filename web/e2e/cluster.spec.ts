// End-to-end, issue 22 test 2: three `klausur serve` nodes on one PostgreSQL and one Redis
// behind a real load balancer (haproxy; e2e/cluster.ts, docs/cluster.md). Three browsers open
// a meeting through the load balancer and are sent to the node that runs it; that node is
// killed (SIGKILL). Within 10 s all three are back in the meeting on another node, by
// themselves, with media both ways and one new encrypted group; the meeting and its
// invitations are still stored.
import { request as playwrightRequest, type APIRequestContext, type Browser, type Page } from '@playwright/test';
import { join } from 'node:path';
import { CLUSTER_PASSWORD, startCluster, type KlausurCluster } from './cluster';
import { expect, newPerson, signIn, test, watchJoins, type Watched } from './fixtures';
import { SERVER_LOGS_DIR } from './log-secrets';
import {
  createMeeting,
  expectEncryptedCall,
  expectInRoom,
  expectJoinedAgain,
  inviteGuest,
  joinByInvitation,
  organiserJoins,
} from './helpers';

// The cluster's processes are this file's own; one test, so started once.
let cluster: KlausurCluster | null = null;
let admin: APIRequestContext | null = null;
const opened: Watched[] = [];
/** The path of every WebSocket each page opened, in order. */
const sockets = new Map<Page, string[]>();

test.beforeAll(async ({}, info) => {
  info.setTimeout(120_000);
  cluster = await startCluster({ nodes: 3, logDir: join(info.project.outputDir, SERVER_LOGS_DIR) });
  cluster.addUser('ada', 'Ada Amtsleitung', 'staff');
  cluster.addUser('root', 'Root Betrieb', 'admin');
  admin = await playwrightRequest.newContext({ baseURL: cluster.baseURL });
  const res = await admin.post('/api/login', { data: { username: 'root', password: CLUSTER_PASSWORD } });
  expect(res.status(), await res.text()).toBe(200);
});

test.afterAll(async () => {
  for (const p of opened.splice(0)) await p.context.close().catch(() => undefined);
  await admin?.dispose().catch(() => undefined);
  await cluster?.stop();
  cluster = null;
});

test.afterEach(async ({}, info) => {
  if (info.status !== info.expectedStatus && cluster) console.log(cluster.tails(40));
});

async function person(browser: Browser, name: string, signInAs?: string): Promise<Watched> {
  const base = cluster!.baseURL;
  const p = watchJoins(signInAs ? await signIn(browser, base, signInAs, CLUSTER_PASSWORD) : await newPerson(browser, base, name));
  opened.push(p);
  const urls: string[] = [];
  sockets.set(p.page, urls);
  p.page.on('websocket', (ws) => urls.push(new URL(ws.url()).pathname));
  return p;
}

/** Each live node's id and the meetings it runs (`GET /api/status` on the node itself, as an
 * admin; a session is good on every node, and a cookie on every port of 127.0.0.1). */
async function running(c: KlausurCluster): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const node of c.nodes.filter((n) => n.alive())) {
    const res = await admin!.get(`${node.directURL}/api/status`);
    expect(res.status(), `GET /api/status on ${node.id}`).toBe(200);
    const status = (await res.json()) as { node: string | null; meetings_running: number };
    expect(status.node).toBe(node.id);
    out[node.id] = status.meetings_running;
  }
  return out;
}

/** The one node that runs a meeting, once exactly one does (and runs exactly one). */
async function theOwner(c: KlausurCluster, timeout = 15_000): Promise<string> {
  let owner = '';
  await expect
    .poll(
      async () => {
        const r = await running(c);
        const busy = Object.entries(r).filter(([, m]) => m > 0);
        owner = busy.length === 1 && busy[0][1] === 1 ? busy[0][0] : '';
        return owner ? 'one' : JSON.stringify(r);
      },
      { timeout, message: 'exactly one node runs the meeting' },
    )
    .toBe('one');
  return owner;
}

interface StoredMeeting {
  id: string;
  title: string;
  ended: boolean;
  invitations: { id: number; name: string; kind: string; revoked: boolean }[];
}

test('SIGKILL to the node that runs a meeting of three browsers: all three are back on another node within 10 s, with media and one new encrypted group, and nothing stored is lost', async ({
  browser,
}) => {
  const c = cluster!;
  const title = 'Krisenstab Hochwasser';
  const ada = await person(browser, 'Ada Amtsleitung', 'ada');
  const a = ada.page;
  const meetingId = await createMeeting(a, title, 'strict');
  const links = [await inviteGuest(a, 'Rita Revision'), await inviteGuest(a, 'Gustav Gast')];
  await organiserJoins(a, title);
  const guests: Watched[] = [];
  for (const [i, name] of ['Rita Revision', 'Gustav Gast'].entries()) {
    const g = await person(browser, name);
    await joinByInvitation(g.page, links[i], { expectTitle: title, expectInvitee: name });
    guests.push(g);
  }
  const everyone = [ada, ...guests];
  const pages = everyone.map((p) => p.page);
  const before = await expectEncryptedCall(pages);
  for (const p of everyone) expect(p.joinedAt, `${p.name} joined once`).toHaveLength(1);
  const owner = await theOwner(c);
  // Where the pages' signaling went: `/api/ws` (round robin; the node that does not run the
  // meeting redirects) and then `/node/<owner>/api/ws`.
  console.log(`meeting on ${owner}; signaling: ${JSON.stringify(everyone.map((p) => sockets.get(p.page)))}`);
  const storedRes = await a.request.get(`/api/meetings/${encodeURIComponent(meetingId)}`);
  expect(storedRes.status()).toBe(200);
  const stored = (await storedRes.json()) as StoredMeeting;
  expect(stored.invitations.map((i) => i.name).sort()).toEqual(['Gustav Gast', 'Rita Revision']);

  const killedAt = Date.now();
  await c.nodes.find((n) => n.id === owner)!.kill();
  console.log(`killed node ${owner}, which ran the meeting`);

  for (const p of everyone) await expectJoinedAgain(p, 2, 30_000);
  const back = everyone.map((p) => ({ name: p.name, ms: p.joinedAt[1] - killedAt }));
  console.log(`signaling after the kill: ${JSON.stringify(everyone.map((p) => sockets.get(p.page)))}`);
  const allBack = Math.max(...back.map((b) => b.ms));
  console.log(`back in the meeting after the kill (ms): ${JSON.stringify(back)}; all three after ${allBack} ms`);
  const after = await expectEncryptedCall(pages);
  console.log(`media both ways and one encrypted group again ${Date.now() - killedAt} ms after the kill`);
  expect(after.code, 'a new group: a new security code').not.toBe(before.code);
  expect(allBack, 'all three back in the meeting, ms after the kill').toBeLessThan(10_000);
  const newOwner = await theOwner(c);
  expect(newOwner).not.toBe(owner);
  // A lasting state: nobody left and joined again meanwhile.
  for (const p of everyone) {
    expect(p.joinedAt, `${p.name} joined exactly once more`).toHaveLength(2);
    await expectInRoom(p.page);
  }

  // The load balancer sent some of the joins to a node that did not run the meeting, and the
  // pages followed its redirect (the round robin makes that happen in every run).
  const redirects = everyone.reduce((n, p) => n + p.frames.filter((f) => f.startsWith('{"type":"redirect"')).length, 0);
  console.log(`redirects followed: ${redirects}`);
  expect(redirects, 'joins redirected to the node that runs the meeting').toBeGreaterThan(0);

  // Nothing stored is lost: the meeting and both invitations, through the load balancer.
  const againRes = await a.request.get(`/api/meetings/${encodeURIComponent(meetingId)}`);
  expect(againRes.status()).toBe(200);
  const again = (await againRes.json()) as StoredMeeting;
  expect({ id: again.id, title: again.title, ended: again.ended }).toEqual({ id: meetingId, title, ended: false });
  const keep = (m: StoredMeeting) => m.invitations.map((i) => ({ id: i.id, name: i.name, kind: i.kind, revoked: i.revoked })).sort((x, y) => x.id - y.id);
  expect(keep(again)).toEqual(keep(stored));
});
