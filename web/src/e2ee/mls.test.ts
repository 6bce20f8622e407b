// MlsClient against a small in-test delivery service that follows the server's rules
// (crates/klausur-server/src/delivery.rs), with the real WebAssembly core (web/src/e2ee/pkg,
// built by crates/klausur-e2ee-wasm/build.sh).

import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import type { ClientMsg, MlsContinuity, MlsPolicy, ServerMsg } from '../signaling/protocol';
import { fromBase64, fromHex, toBase64, toHex } from './b64';
import { CHAT_TIMEOUT_MS, GRACE_MS, MlsClient, UNCLAIMED_GRACE_MS, type ParticipantLike } from './mls';
import {
  WasmMember,
  continuitySign,
  continuityVerify,
  generateSigningKey,
  initSync,
  issueCredential,
  signingKeyPublic,
} from './pkg/klausur_e2ee_wasm.js';
import type { ChatEvent, E2eeNotice, E2eeStatus } from './types';

initSync({ module: readFileSync(new URL('./pkg/klausur_e2ee_wasm_bg.wasm', import.meta.url)) });

const T0 = 1_800_000_000_000;
const caKey = generateSigningKey();
const caPublicHex = toHex(signingKeyPublic(caKey));

function credential(ca: Uint8Array, userId: string, name: string, kind: string, device: Uint8Array, now: number) {
  const t = Math.floor(now / 1000);
  return toBase64(issueCredential(ca, userId, name, kind, signingKeyPublic(device), t - 60, t + 3600));
}

// --- the delivery service (a port of delivery.rs) ----------------------------------------------

type Out =
  | { to: string; msg: ServerMsg }
  | { members: ServerMsg; except: string | null }
  | { pendingChanged: true }
  | { leaf: string; value: number | null };

class Delivery {
  private generation = 0;
  epoch: number | null = null;
  members = new Set<string>();
  /** The latest accepted commit, while it can be voided (delivery.rs `LastCommit`). */
  last: { epoch: number; committer: string; voters: Set<string>; welcomed: string[]; rejectedBy: Set<string> } | null = null;
  creator: string | null = null;
  pending = new Map<string, { keyPackage: string; admittedBy: string | null; continuity: MlsContinuity | null }>();

  constructor(private readonly meetingId: string) {}

  groupId(): string {
    return `${this.meetingId}/${this.generation}`;
  }

  private askToCreate(peer: string): Out {
    this.generation += 1;
    this.creator = peer;
    return { to: peer, msg: { type: 'mls_create_group', group_id: this.groupId() } };
  }

  keyPackage(peer: string, keyPackage: string, admittedBy: string | null, continuity: MlsContinuity | null = null): Out[] {
    if (this.members.has(peer) || this.creator === peer) return [];
    if (this.epoch === null && this.creator === null) return [this.askToCreate(peer)];
    this.pending.set(peer, { keyPackage, admittedBy, continuity });
    return this.epoch !== null ? [{ pendingChanged: true }] : [];
  }

  member(peer: string, leaf: number, epoch: number): Out[] {
    const out: Out[] = [];
    if (this.creator === peer && this.epoch === null) {
      if (leaf !== 0 || epoch !== 0) return [];
      this.creator = null;
      this.epoch = 0;
      this.members = new Set([peer]);
      if (this.pending.size > 0) out.push({ pendingChanged: true });
    } else if (!this.members.has(peer)) {
      return [];
    }
    out.push({ leaf: peer, value: leaf });
    return out;
  }

  commit(peer: string, epoch: number, commit: string, welcome: string | null, welcomeFor: string[]): Out[] {
    if (!this.members.has(peer) || this.epoch === null) return [];
    if (epoch !== this.epoch) return [{ to: peer, msg: { type: 'mls_commit_result', epoch, accepted: false } }];
    const last = { epoch, committer: peer, voters: new Set([...this.members].filter((m) => m !== peer)), welcomed: [] as string[], rejectedBy: new Set<string>() };
    this.epoch += 1;
    const out: Out[] = [
      { to: peer, msg: { type: 'mls_commit_result', epoch, accepted: true } },
      { members: { type: 'mls_commit', epoch, commit, from_id: peer }, except: peer },
    ];
    let welcomed = false;
    if (welcome) {
      for (const j of welcomeFor) {
        if (this.pending.delete(j)) {
          this.members.add(j);
          last.welcomed.push(j);
          welcomed = true;
          out.push({ to: j, msg: { type: 'mls_welcome', welcome, epoch: this.epoch } });
        }
      }
    }
    this.last = last;
    if (welcomed) out.push({ pendingChanged: true });
    return out;
  }

  rejected(peer: string, epoch: number): Out[] {
    const l = this.last;
    if (!this.members.has(peer) || !l || l.epoch !== epoch || !l.voters.has(peer)) return [];
    l.rejectedBy.add(peer);
    if (l.rejectedBy.size * 2 <= l.voters.size) return [];
    this.last = null;
    this.epoch = l.epoch;
    const out: Out[] = [];
    for (const p of [l.committer, ...l.welcomed]) {
      if (this.members.delete(p)) {
        out.push({ to: p, msg: { type: 'mls_reset', epoch: l.epoch } });
        out.push({ leaf: p, value: null });
      }
    }
    return out;
  }

  chat(peer: string, id: number, epoch: number, message: string, sentAtMs: number): Out[] {
    if (!this.members.has(peer) || this.epoch === null) return [];
    const result: Out = { to: peer, msg: { type: 'mls_chat_result', id, accepted: epoch === this.epoch } };
    if (epoch !== this.epoch) return [result];
    return [{ members: { type: 'mls_chat', epoch, message, from_id: peer, sent_at_ms: sentAtMs }, except: peer }, result];
  }

  readmit(joiner: string, by: string): Out[] {
    const p = this.pending.get(joiner);
    if (!p) return [];
    p.admittedBy = by;
    return this.epoch !== null ? [{ pendingChanged: true }] : [];
  }

  left(peer: string): Out[] {
    const out: Out[] = [];
    const wasPending = this.pending.delete(peer);
    let released = false;
    for (const p of this.pending.values()) {
      if (p.admittedBy === peer) {
        p.admittedBy = null;
        released = true;
      }
    }
    if (this.epoch !== null) {
      this.members.delete(peer);
      if (this.members.size === 0) this.epoch = null;
      else if (wasPending || released) out.push({ pendingChanged: true });
    }
    if (this.creator === peer) this.creator = null;
    if (this.epoch === null && this.creator === null) {
      const next = this.pending.keys().next();
      if (!next.done) {
        this.pending.delete(next.value);
        out.push(this.askToCreate(next.value));
      }
    }
    return out;
  }
}

// --- clients and the server glue -------------------------------------------------------------

type Inbox = { msg: ServerMsg } | { participants: ParticipantLike[] } | { renew: true };

class Client {
  mls: MlsClient;
  member: WasmMember | null = null;
  readonly deviceKey = generateSigningKey();
  inbox: Inbox[] = [];
  notices: E2eeNotice[] = [];
  chats: ChatEvent[] = [];
  status!: E2eeStatus;
  /** Whether this client fetches a renewed credential when asked. */
  renews = true;
  /** How far this client's clock is off (ms; negative: behind). */
  skew = 0;
  renewAsked = 0;
  /** Device keys this client reported as vouched for (MlsSink.vouched). */
  vouched: [string, string][] = [];

  constructor(
    readonly server: Server,
    readonly id: string,
    readonly name: string,
    readonly kind: 'staff' | 'invited_guest' | 'guest',
    readonly userId: string,
    readonly ca: Uint8Array = caKey,
  ) {
    this.mls = new MlsClient(
      (cred, caPublic) => {
        this.member = new WasmMember(cred, this.deviceKey, caPublic);
        return this.member;
      },
      {
        send: (msg) => server.receive(this, msg),
        status: (s) => (this.status = s),
        notice: (n) => this.notices.push(n),
        chat: (e) => this.chats.push(e),
        needCredential: () => {
          this.renewAsked += 1;
          if (this.renews) this.inbox.push({ renew: true });
        },
        vouched: (key, name) => this.vouched.push([key, name]),
      },
      (previousKey, newKey, signature) =>
        continuityVerify(fromHex(previousKey), 'm1', fromHex(newKey), fromBase64(signature)),
    );
  }

  /** This client's continuity proof for `next`'s device key (docs/e2ee.md, "Reconnects"). */
  vouchFor(next: Client, meetingId = 'm1'): MlsContinuity {
    return {
      previous_key: toHex(signingKeyPublic(this.deviceKey)),
      signature: toBase64(continuitySign(this.deviceKey, meetingId, signingKeyPublic(next.deviceKey))),
    };
  }

  code(): string | null {
    return this.status?.securityCode ?? null;
  }

  warnings(code: string): number {
    return this.notices.filter((n) => n.type === 'warning' && n.warning.code === code).length;
  }
}

class Server {
  now = T0;
  delivery = new Delivery('m1');
  policy: MlsPolicy = { staff_direct: false, direct_user_ids: [] };
  clients = new Map<string, Client>();
  participants = new Map<string, ParticipantLike & { admittedBy: string | null }>();
  /** `mls_member` of these participants is lost (a client that went away after its Welcome). */
  dropMember = new Set<string>();
  /** Who reported a commit it could not process (mls_commit_rejected). */
  rejections: string[] = [];
  /** Every mls_chat as it reached the server (what the server can see of chat). */
  chatSeen: string[] = [];
  /** While set, mls_chat waits here instead of reaching the delivery service. */
  holdChat: { from: Client; msg: ClientMsg }[] | null = null;
  /** Rewrites mls_chat before it is relayed (a lying server). */
  tamperChat: ((msg: ServerMsg & { type: 'mls_chat' }) => ServerMsg) | null = null;

  join(c: Client, admittedBy: string | null = null): void {
    this.clients.set(c.id, c);
    this.participants.set(c.id, {
      id: c.id, display_name: c.name, kind: c.kind, leaf: null, role: 'participant', admittedBy,
    });
    this.broadcastParticipants();
    this.pump();
    c.mls.start(credential(c.ca, c.userId, c.name, c.kind, c.deviceKey, this.now), caPublicHex, this.now + c.skew);
    this.pump();
  }

  leave(c: Client): void {
    this.clients.delete(c.id);
    this.participants.delete(c.id);
    this.apply(this.delivery.left(c.id));
    this.broadcastParticipants();
    this.pump();
  }

  /** A moderator's `admit` for someone in the meeting who waits for the group. */
  readmit(by: Client, joiner: string): void {
    this.apply(this.delivery.readmit(joiner, by.id));
    this.pump();
  }

  receive(from: Client, msg: ClientMsg): void {
    if (!this.clients.has(from.id)) return;
    if (msg.type === 'mls_member' && this.dropMember.has(from.id)) return;
    switch (msg.type) {
      case 'mls_key_package':
        this.apply(this.delivery.keyPackage(from.id, msg.key_package,
          this.participants.get(from.id)?.admittedBy ?? null, msg.continuity));
        break;
      case 'mls_member':
        // The claim is signed, and the creator's carries the GroupInfo (the real server checks
        // both against the group's public tree: crates/klausur-server's delivery tests).
        expect(fromBase64(msg.signature).length).toBe(64);
        expect(msg.group_info != null, `${from.id}: group_info with the creator's claim only`)
          .toBe(this.delivery.creator === from.id);
        this.apply(this.delivery.member(from.id, msg.leaf, msg.epoch));
        break;
      case 'mls_commit':
        this.apply(this.delivery.commit(from.id, msg.epoch, msg.commit, msg.welcome, msg.welcome_for));
        break;
      case 'mls_commit_rejected':
        this.rejections.push(from.id);
        this.apply(this.delivery.rejected(from.id, msg.epoch));
        break;
      case 'mls_chat':
        if (this.holdChat) {
          this.holdChat.push({ from, msg });
          break;
        }
        this.chatSeen.push(JSON.stringify(msg));
        this.apply(this.delivery.chat(from.id, msg.id, msg.epoch, msg.message, this.now));
        break;
      default:
        throw new Error(`unexpected ${msg.type}`);
    }
  }

  private apply(outs: Out[]): void {
    for (const o of outs) {
      if ('to' in o) this.deliver(o.to, o.msg);
      else if ('members' in o) {
        for (const m of this.delivery.members) if (m !== o.except) this.deliver(m, o.members);
      } else if ('pendingChanged' in o) {
        for (const m of this.delivery.members) this.deliver(m, this.pendingMsg());
      } else {
        // The server names the credential user id of who the participant is.
        const p = this.participants.get(o.leaf);
        if (p) {
          p.leaf = o.value;
          p.credential_user_id = o.value === null ? null : (this.clients.get(o.leaf)?.userId ?? null);
        }
        this.broadcastParticipants();
      }
    }
  }

  pendingMsg(): ServerMsg {
    return {
      type: 'mls_pending',
      joiners: [...this.delivery.pending].map(([id, j]) => ({
        participant_id: id, key_package: j.keyPackage, admitted_by: j.admittedBy, continuity: j.continuity,
      })),
      policy: this.policy,
    };
  }

  deliver(to: string, msg: ServerMsg): void {
    const out = msg.type === 'mls_chat' && this.tamperChat ? this.tamperChat(msg) : msg;
    this.clients.get(to)?.inbox.push({ msg: out });
  }

  broadcastParticipants(): void {
    const list = [...this.participants.values()].map((p) => ({ ...p }));
    for (const c of this.clients.values()) c.inbox.push({ participants: list });
  }

  /**
   * The server relays a leaf claim it should have refused: participant `id` says it holds `leaf`
   * (its entry names its own credential user id, as the server knows it).
   */
  relayForgedClaim(id: string, leaf: number): void {
    const p = this.participants.get(id);
    if (!p) throw new Error(`no participant ${id}`);
    p.leaf = leaf;
    this.broadcastParticipants();
    this.pump();
  }

  /** Lets held chat messages reach the delivery service, in order. */
  releaseChat(): void {
    const held = this.holdChat ?? [];
    this.holdChat = null;
    for (const h of held) this.receive(h.from, h.msg);
    this.pump();
  }

  /** Delivers queued messages, one per client in turn, until every inbox is empty. */
  pump(): void {
    for (let guard = 0; guard < 100_000; guard++) {
      let any = false;
      for (const c of [...this.clients.values()]) {
        const item = c.inbox.shift();
        if (!item) continue;
        any = true;
        if ('msg' in item) c.mls.handleServer(item.msg, this.now + c.skew);
        else if ('renew' in item) {
          c.mls.renew(credential(c.ca, c.userId, c.name, c.kind, c.deviceKey, this.now), this.now + c.skew);
        } else c.mls.setParticipants(c.id, item.participants, this.now + c.skew);
      }
      if (!any) return;
    }
    throw new Error('message loop');
  }

  advance(ms: number, step = 100): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now += step;
      for (const c of this.clients.values()) c.mls.tick(this.now + c.skew);
      this.pump();
    }
  }
}

function expectAgree(clients: Client[]): string {
  const code = clients[0].code();
  expect(code).toMatch(/^\d{5}( \d{5}){4}$/);
  for (const c of clients) {
    expect(c.status.phase, c.name).toBe('active');
    expect(c.code(), c.name).toBe(code);
    expect(c.status.epoch).toBe(clients[0].status.epoch);
    expect(c.status.roster.map((r) => r.displayName).sort()).toEqual(clients.map((x) => x.name).sort());
    expect(c.status.warnings.filter((w) => w.code === 'roster_discrepancy'), c.name).toEqual([]);
  }
  return code as string;
}

const enc = new TextEncoder();

/**
 * A meeting whose profile admits every staff credential, with Ana, Ben and Cem (staff, p1-p3)
 * in its group; `skews` sets their clocks off (ms) before they join.
 */
function threeStaff(skews: [number, number, number] = [0, 0, 0]) {
  const s = new Server();
  s.policy = { staff_direct: true, direct_user_ids: [] };
  const people = (['Ana', 'Ben', 'Cem'] as const).map((name, i) => {
    const c = new Client(s, `p${i + 1}`, name, 'staff', `user:${i + 1}`);
    c.skew = skews[i];
    return c;
  });
  for (const c of people) s.join(c);
  s.advance(4_000);
  const code = expectAgree(people);
  const [ana, ben, cem] = people;
  return { s, ana, ben, cem, code };
}


describe('MlsClient with the delivery service', () => {
  test('group forms, joins by policy and by a moderator, refusals, leave, forgeries, collisions', () => {
    const s = new Server();
    s.policy = { staff_direct: false, direct_user_ids: ['user:1', 'user:2', 'user:3', 'invitation:4', 'user:66'] };
    const alice = new Client(s, 'p1', 'Alice', 'staff', 'user:1');
    const bob = new Client(s, 'p2', 'Bob', 'staff', 'user:2');
    const carol = new Client(s, 'p3', 'Carol', 'staff', 'user:3');

    // Three clients form a group and agree on the security code.
    s.join(alice);
    expect(alice.status.phase).toBe('active');
    expect(alice.notices).toContainEqual({ type: 'self_joined', epoch: 0, created: true });
    s.join(bob);
    s.join(carol);
    s.advance(3_000);
    const code3 = expectAgree([alice, bob, carol]);
    expect(bob.status.roster.find((r) => r.self)?.participantId).toBe('p2');
    expect(alice.status.roster.map((r) => [r.leaf, r.participantId, r.flags])).toEqual([
      [0, 'p1', []], [1, 'p2', []], [2, 'p3', []],
    ]);
    expect(alice.notices.filter((n) => n.type === 'joined').flatMap((n) =>
      n.type === 'joined' ? n.members.map((m) => m.displayName) : [])).toEqual(['Bob', 'Carol']);

    // A fourth joins by policy (invitation id on the direct list).
    const dave = new Client(s, 'p4', 'Dave', 'invited_guest', 'invitation:4');
    s.join(dave);
    s.advance(3_000);
    const code4 = expectAgree([alice, bob, carol, dave]);
    expect(code4).not.toBe(code3);
    expect(carol.notices).toContainEqual(expect.objectContaining({
      type: 'joined', members: [expect.objectContaining({ displayName: 'Dave', kind: 'invited_guest' })],
    }));

    // Negative controls: a guest nobody admitted, and a credential from a foreign CA whose user
    // id is on the direct list, are not added; members say why.
    const eve = new Client(s, 'p5', 'Eve', 'guest', 'guest:ee');
    const mallory = new Client(s, 'p6', 'Mallory', 'staff', 'user:66', generateSigningKey());
    s.join(eve);
    s.join(mallory);
    s.advance(5_000);
    expect(eve.status.phase).toBe('waiting');
    expect(mallory.status.phase).toBe('waiting');
    expect(alice.code()).toBe(code4);
    for (const c of [alice, bob, carol, dave]) {
      expect(c.notices).toContainEqual(expect.objectContaining({ type: 'refused', participantId: 'p5', reason: 'policy' }));
      const refusal = c.notices.find((n) => n.type === 'refused' && n.participantId === 'p6');
      expect(refusal).toMatchObject({ reason: 'credential' });
      expect(refusal?.type === 'refused' && refusal.detail).toMatch(/not signed by the trusted identity CA/);
    }
    // After the grace, the waiting participants are flagged as not in the group.
    s.advance(GRACE_MS);
    expect(alice.status.outsiders.map((o) => [o.participantId, o.flags])).toEqual([
      ['p5', ['not_in_group']], ['p6', ['not_in_group']],
    ]);
    s.leave(eve);
    s.leave(mallory);

    // A lobby guest admitted by Alice: her client commits the Add at once; others leave it to her.
    const gina = new Client(s, 'p7', 'Gina', 'guest', 'guest:77');
    alice.mls.admitted('p7', 'Gina', s.now);
    s.join(gina, 'p1');
    expect(gina.status.phase).toBe('active'); // no rank delay
    s.advance(500);
    expectAgree([alice, bob, carol, dave, gina]);

    // Carol leaves: members remove her leaf; she cannot decrypt a frame sent after that.
    const carolMember = carol.member as WasmMember;
    const before = alice.member!.encryptFrame(0, 0, enc.encode('before carol left'));
    expect(carolMember.decryptFrame(before, s.now).sender).toBe(0);
    s.leave(carol);
    s.advance(3_000);
    const code5 = expectAgree([alice, bob, dave, gina]);
    for (const c of [alice, bob, dave, gina]) {
      expect(c.notices).toContainEqual(expect.objectContaining({
        type: 'left', members: [expect.objectContaining({ displayName: 'Carol' })],
      }));
    }
    const after = alice.member!.encryptFrame(0, 0, enc.encode('secret after carol left'));
    expect(new TextDecoder().decode(bob.member!.decryptFrame(after, s.now).data)).toBe('secret after carol left');
    expect(() => carolMember.decryptFrame(after, s.now)).toThrow(expect.objectContaining({ name: 'FrameError' }));

    // Forged commits: the server (even holding a CA-valid device credential) builds a parallel
    // group with the same id and epoch and "adds" a ghost; plus plain garbage. Every member
    // rejects both with a warning; nothing changes.
    const forgerKey = generateSigningKey();
    const forger = new WasmMember(
      fromBase64(credential(caKey, 'user:99', 'Ghost', 'staff', forgerKey, s.now)), forgerKey, signingKeyPublic(caKey));
    forger.createGroup(enc.encode(s.delivery.groupId()), s.now);
    while (forger.epoch() < (s.delivery.epoch as number)) {
      forger.updateOwnLeaf();
      forger.mergePendingCommit(s.now);
    }
    const ghostKey = generateSigningKey();
    const ghost = new WasmMember(fromBase64(credential(caKey, 'user:98', 'Ghost 2', 'staff', ghostKey, s.now)), ghostKey,
      signingKeyPublic(caKey));
    const forged = forger.add([ghost.keyPackage()], s.now) as { commit: Uint8Array; welcome: Uint8Array };
    const members = [alice, bob, dave, gina];
    const epoch = s.delivery.epoch as number;
    for (const c of members) {
      s.deliver(c.id, { type: 'mls_commit', epoch, commit: toBase64(forged.commit), from_id: 'p1' });
      s.deliver(c.id, { type: 'mls_commit', epoch, commit: 'AAECAwQ=', from_id: 'p2' });
    }
    s.pump();
    for (const c of members) expect(c.warnings('commit_rejected'), c.name).toBe(2);
    expect(expectAgree(members)).toBe(code5);
    expect(alice.status.warnings.map((w) => w.code)).toContain('commit_rejected');

    // A forged Welcome (tampered) is rejected by a waiting joiner, who stays waiting.
    const hugo = new Client(s, 'p8', 'Hugo', 'guest', 'guest:88');
    s.join(hugo);
    const tampered = Uint8Array.from(forged.welcome);
    tampered[tampered.length - 5] ^= 1;
    s.deliver('p8', { type: 'mls_welcome', welcome: toBase64(tampered), epoch: epoch + 1 });
    s.pump();
    expect(hugo.warnings('welcome_rejected')).toBe(1);
    expect(hugo.status.phase).toBe('waiting');
    s.leave(hugo);

    // Two moderators admit two guests at the same moment: both commit at once, one wins the
    // epoch, the other discards its commit and commits again; everyone converges.
    const ida = new Client(s, 'p9', 'Ida', 'guest', 'guest:99');
    const jan = new Client(s, 'p10', 'Jan', 'guest', 'guest:10');
    alice.mls.admitted('p9', 'Ida', s.now);
    bob.mls.admitted('p10', 'Jan', s.now);
    const sent: string[] = [];
    const orig = s.receive.bind(s);
    s.receive = (from, msg) => {
      if (msg.type === 'mls_commit') sent.push(`${from.id}@${msg.epoch}`);
      orig(from, msg);
    };
    // Both key packages arrive before either moderator's client reacts.
    s.clients.set(ida.id, ida);
    s.clients.set(jan.id, jan);
    s.participants.set('p9', { id: 'p9', display_name: 'Ida', kind: 'guest', leaf: null, admittedBy: 'p1' });
    s.participants.set('p10', { id: 'p10', display_name: 'Jan', kind: 'guest', leaf: null, admittedBy: 'p2' });
    ida.mls.start(credential(caKey, 'guest:99', 'Ida', 'guest', ida.deviceKey, s.now), caPublicHex, s.now);
    jan.mls.start(credential(caKey, 'guest:10', 'Jan', 'guest', jan.deviceKey, s.now), caPublicHex, s.now);
    s.broadcastParticipants();
    s.pump();
    s.advance(3_000);
    const e = epoch;
    expect(sent.slice(0, 2).sort()).toEqual([`p1@${e}`, `p2@${e}`]); // a real collision
    expectAgree([alice, bob, dave, gina, ida, jan]);

    // A client that leaves right after its Welcome, before claiming its leaf: nobody claims the
    // leaf, so members remove it after the grace (rank 0 commits).
    const kurt = new Client(s, 'p11', 'Kurt', 'staff', 'user:2');
    s.dropMember.add('p11');
    s.join(kurt);
    s.advance(1_000);
    expect(kurt.status.phase).toBe('active');
    s.leave(kurt);
    s.advance(UNCLAIMED_GRACE_MS / 2);
    expect(alice.status.roster.find((r) => r.displayName === 'Kurt')?.flags).toEqual([]);
    s.advance(UNCLAIMED_GRACE_MS);
    expect(alice.status.roster.find((r) => r.displayName === 'Kurt')).toBeUndefined();
    expectAgree([alice, bob, dave, gina, ida, jan]);
  });

  // Issue 19: an invited guest announced the organiser's leaf as its own, the server relayed it,
  // and when the guest left the others removed the organiser.
  test('a participant claiming someone else\'s leaf cannot get it removed by leaving; a real leave removes', () => {
    const { s, ana, ben, cem } = threeStaff();
    s.policy = { staff_direct: true, direct_user_ids: ['invitation:7'] };
    const gina = new Client(s, 'p4', 'Gina', 'invited_guest', 'invitation:7');
    s.join(gina);
    s.advance(4_000);
    expectAgree([ana, ben, cem, gina]);
    const anaLeaf = ana.status.ownLeaf as number;
    const ginaLeaf = gina.status.ownLeaf as number;

    // The server relays Gina's claim of Ana's leaf: flagged; Ana's leaf stays Ana's.
    s.relayForgedClaim('p4', anaLeaf);
    expect(ben.status.roster.find((r) => r.leaf === anaLeaf)?.participantId).toBe('p1');
    expect(ben.status.outsiders).toContainEqual(expect.objectContaining({ participantId: 'p4', flags: ['mismatch'] }));

    // Gina leaves: nobody removes Ana. Gina's own leaf, which nobody validly claims any more,
    // goes after the grace period.
    s.leave(gina);
    s.advance(3_000);
    for (const c of [ana, ben, cem]) {
      expect(c.status.phase, c.name).toBe('active');
      expect(c.status.roster.some((r) => r.leaf === anaLeaf), c.name).toBe(true);
    }
    s.advance(UNCLAIMED_GRACE_MS + 4_000);
    expectAgree([ana, ben, cem]);
    for (const c of [ana, ben, cem]) {
      expect(c.status.roster.some((r) => r.leaf === ginaLeaf), c.name).toBe(false);
      const left = c.notices.flatMap((n) => (n.type === 'left' ? n.members.map((m) => m.displayName) : []));
      expect(left, c.name).toEqual(['Gina']);
    }

    // Negative control: a genuine leave removes the leaf at once, without waiting for the grace.
    s.leave(cem);
    s.advance(2_500);
    expectAgree([ana, ben]);
    const left = ana.notices.flatMap((n) => (n.type === 'left' ? n.members.map((m) => m.displayName) : []));
    expect(left).toEqual(['Gina', 'Cem']);
  });

  test('leaf updates are committed when due (15 min)', () => {
    const s = new Server();
    s.policy = { staff_direct: true, direct_user_ids: [] };
    const a = new Client(s, 'p1', 'A', 'staff', 'user:1');
    const b = new Client(s, 'p2', 'B', 'staff', 'user:2');
    s.join(a);
    s.join(b);
    s.advance(2_000);
    const code = expectAgree([a, b]);
    const epoch = a.status.epoch as number;
    s.advance(15 * 60_000, 5_000);
    expect(a.status.epoch).toBeGreaterThan(epoch);
    expect(expectAgree([a, b])).not.toBe(code);
  });

  test('credentials are renewed before they expire, so meetings outlast them', () => {
    const s = new Server();
    s.policy = { staff_direct: true, direct_user_ids: [] };
    const a = new Client(s, 'p1', 'A', 'staff', 'user:1');
    const b = new Client(s, 'p2', 'B', 'staff', 'user:2');
    s.join(a);
    s.join(b);
    s.advance(2_000);
    s.advance(80 * 60_000, 5_000); // credentials were valid for 60 min
    expect(a.renewAsked).toBeGreaterThan(0);
    const c = new Client(s, 'p3', 'C', 'staff', 'user:3');
    s.join(c);
    s.advance(3_000);
    expectAgree([a, b, c]);
    for (const x of [a, b, c]) expect(x.warnings('commit_rejected') + x.warnings('welcome_rejected')).toBe(0);

    // Negative control: without renewal, the first leaf update after expiry is refused.
    const s2 = new Server();
    s2.policy = { staff_direct: true, direct_user_ids: [] };
    const d = new Client(s2, 'p1', 'D', 'staff', 'user:1');
    const e = new Client(s2, 'p2', 'E', 'staff', 'user:2');
    d.renews = false;
    e.renews = false;
    s2.join(d);
    s2.join(e);
    s2.advance(80 * 60_000, 5_000);
    expect(d.warnings('commit_rejected') + e.warnings('commit_rejected')).toBeGreaterThan(0);
  });

  test('a start with a credential for another device key fails cleanly', () => {
    const s = new Server();
    const a = new Client(s, 'p1', 'A', 'staff', 'user:1');
    s.clients.set(a.id, a);
    a.mls.start(credential(caKey, 'user:1', 'A', 'staff', generateSigningKey(), s.now), caPublicHex, s.now);
    expect(a.status.phase).toBe('failed');
    expect(a.warnings('start_failed')).toBe(1);
  });

  test('chat is encrypted for the group, shown under the credential name, and re-sent after an epoch change', () => {
    const { s, ana, ben, cem } = threeStaff();

    // Ben writes; Ana and Cem read it under the name Ben's credential carries.
    const secret = 'Vertraulich: Grundstücksverkauf Flur 7';
    ben.mls.sendChat(1, `  ${secret}  `, s.now);
    s.pump();
    expect(ben.chats).toEqual([{ type: 'sent', id: 1 }]);
    for (const c of [ana, cem]) {
      expect(c.chats).toEqual([{
        type: 'received',
        from: { leaf: 1, userId: 'user:2', displayName: 'Ben', kind: 'staff' },
        participantId: 'p2',
        mismatch: false,
        text: secret,
        sentAtMs: s.now,
      }]);
    }
    // The server saw one message, and not its text (the check itself is shown to work on
    // the message's plaintext fields).
    expect(s.chatSeen).toHaveLength(1);
    expect(s.chatSeen[0]).toContain('"type":"mls_chat"');
    expect(s.chatSeen[0]).not.toContain('Vertraulich');
    expect(s.chatSeen[0]).not.toContain('Grundst');

    // Cem writes while a commit is on its way: the server has moved to the next epoch when the
    // chat arrives, refuses it, and Cem encrypts it again in the new epoch. Dave, added by
    // that commit, can read it too.
    const dave = new Client(s, 'p4', 'Dave', 'staff', 'user:4');
    s.holdChat = [];
    cem.mls.sendChat(7, 'Bitte Punkt 3 vertagen', s.now);
    s.pump();
    expect(s.holdChat).toHaveLength(1);
    s.join(dave);
    s.advance(3_000);
    expectAgree([ana, ben, cem, dave]);
    s.releaseChat();
    expect(s.chatSeen).toHaveLength(3);
    expect(cem.chats).toEqual([
      expect.objectContaining({ type: 'received', text: secret }),
      { type: 'sent', id: 7 },
    ]);
    for (const c of [ana, ben, dave]) {
      const got = c.chats.filter((e) => e.type === 'received' && e.text === 'Bitte Punkt 3 vertagen');
      expect(got, c.name).toHaveLength(1);
      expect(got[0]).toMatchObject({ from: { displayName: 'Cem' }, mismatch: false });
    }
    expect(dave.chats.some((e) => e.type === 'received' && e.text === secret)).toBe(false);

    // A lying server: it names another participant as the sender. The name shown stays the
    // credential's; the entry is flagged.
    s.tamperChat = (m) => ({ ...m, from_id: 'p1' });
    dave.mls.sendChat(8, 'Einverstanden', s.now);
    s.pump();
    s.tamperChat = null;
    expect(ben.chats.at(-1)).toMatchObject({
      type: 'received', from: { displayName: 'Dave' }, participantId: 'p1', mismatch: true, text: 'Einverstanden',
    });

    // A commit passed off as chat is refused and not merged: no one's epoch moves through it.
    const epoch = ana.status.epoch;
    const update = ana.member!.updateOwnLeaf() as { commit: Uint8Array };
    ana.member!.discardPendingCommit();
    s.deliver('p2', { type: 'mls_chat', epoch: epoch as number, message: toBase64(update.commit), from_id: 'p1', sent_at_ms: s.now });
    s.pump();
    expect(ben.warnings('chat_rejected')).toBe(1);
    expect(ben.status.epoch).toBe(epoch);
    // Garbage is a warning too, never a message.
    const before = cem.chats.length;
    s.deliver('p3', { type: 'mls_chat', epoch: epoch as number, message: 'AAEC', from_id: 'p1', sent_at_ms: s.now });
    s.pump();
    expect(cem.warnings('chat_rejected')).toBe(1);
    expect(cem.chats).toHaveLength(before);
  });

  test('chat waits for the group, fails after a timeout, and refuses empty or long texts', () => {
    const s = new Server();
    s.policy = { staff_direct: false, direct_user_ids: ['user:1'] };
    const ana = new Client(s, 'p1', 'Ana', 'staff', 'user:1');
    const gus = new Client(s, 'p2', 'Gus', 'guest', 'guest:g');
    s.join(ana);
    s.join(gus);
    expect(gus.status.phase).toBe('waiting');
    // Not in the group: nothing goes out, and after the timeout the message has failed.
    gus.mls.sendChat(1, 'Hallo?', s.now);
    s.pump();
    expect(s.chatSeen).toEqual([]);
    expect(gus.chats).toEqual([]);
    s.advance(CHAT_TIMEOUT_MS + 500, 500);
    expect(gus.chats).toEqual([{ type: 'failed', id: 1, reason: 'could not be encrypted in time' }]);
    expect(s.chatSeen).toEqual([]);

    ana.mls.sendChat(2, '   ', s.now);
    ana.mls.sendChat(3, 'x'.repeat(2001), s.now);
    ana.mls.sendChat(4, 'ü'.repeat(2000), s.now);
    s.pump();
    expect(ana.chats).toEqual([
      { type: 'failed', id: 2, reason: 'a chat message has 1 to 2000 characters' },
      { type: 'failed', id: 3, reason: 'a chat message has 1 to 2000 characters' },
      { type: 'sent', id: 4 },
    ]);
  });

  test('a guest whose admitting moderator left is admitted to the group by another moderator', () => {
    const s = new Server();
    s.policy = { staff_direct: true, direct_user_ids: [] };
    const ana = new Client(s, 'p1', 'Ana', 'staff', 'user:1');
    const ben = new Client(s, 'p2', 'Ben', 'staff', 'user:2');
    const gus = new Client(s, 'p3', 'Gus Gast', 'guest', 'guest:g');
    s.join(ana);
    s.join(ben);
    s.advance(3_000);
    expectAgree([ana, ben]);
    // Ana let Gus in from the lobby, then reloaded her page (her client forgot it) and left:
    // nobody adds Gus.
    s.join(gus, 'p1');
    s.advance(3_000);
    expect(gus.status.phase).toBe('waiting');
    const outsider = () => ben.status.outsiders.find((o) => o.participantId === 'p3');
    expect(outsider()?.awaitsAdmission).toBe(false); // Ana's to add, as far as Ben knows
    s.leave(ana);
    s.advance(3_000);
    expect(gus.status.phase).toBe('waiting');
    expect(outsider()?.awaitsAdmission).toBe(true);
    expect(ben.notices).toContainEqual(expect.objectContaining({ type: 'refused', participantId: 'p3', reason: 'policy' }));
    // Ben admits him: his client adds Gus, who joins the group.
    ben.mls.admitted('p3', 'Gus Gast', s.now);
    s.readmit(ben, 'p3');
    s.advance(3_000);
    expectAgree([ben, gus]);
    expect(outsider()).toBeUndefined();
  });

  test('a guest back after a broken connection is added again by the moderator who admitted them, with a proof', () => {
    const s = new Server();
    s.policy = { staff_direct: true, direct_user_ids: [] };
    const ana = new Client(s, 'p1', 'Ana', 'staff', 'user:1');
    const ben = new Client(s, 'p2', 'Ben', 'staff', 'user:2');
    s.join(ana);
    s.join(ben);
    s.advance(3_000);
    // Ana admits Gus from the lobby; her client adds him and remembers his device key.
    const gus = new Client(s, 'p3', 'Gus Gast', 'guest', 'guest:g1');
    ana.mls.admitted('p3', 'Gus Gast', s.now);
    s.join(gus, 'p1');
    s.advance(1_000);
    expectAgree([ana, ben, gus]);
    expect(ana.vouched).toEqual([[toHex(signingKeyPublic(gus.deviceKey)), 'Gus Gast']]);
    expect(ben.vouched).toEqual([]);

    // His connection breaks; the same tab comes back as p4 with a new device key and a new
    // guest credential, its old key vouching for the new one. The server names Ana as the one
    // who admitted him; her client adds him without a new admission.
    s.leave(gus);
    const gus2 = new Client(s, 'p4', 'Gus Gast', 'guest', 'guest:g2');
    gus2.mls.setContinuity(gus.vouchFor(gus2));
    s.join(gus2, 'p1');
    expect(gus2.status.phase).toBe('active');
    s.advance(1_000);
    expectAgree([ana, ben, gus2]);
    expect(ana.vouched.map(([, n]) => n)).toEqual(['Gus Gast', 'Gus Gast']);

    // Negative controls. The server passes someone else off as Gus, with a proof made by another
    // key, or with Gus's real proof for a different new key, or under another name: Ana's client
    // refuses each, says why, and nobody else adds them.
    const tries: [Client, MlsContinuity][] = [];
    const stranger = new Client(s, 'p5', 'Gus Gast', 'guest', 'guest:x5');
    const other = new Client(s, 'p6', 'Gus Gast', 'guest', 'guest:x6');
    tries.push([stranger, other.vouchFor(stranger)]); // signed by a key nobody vouched for
    const forged = new Client(s, 'p7', 'Gus Gast', 'guest', 'guest:x7');
    tries.push([forged, { ...gus2.vouchFor(forged), signature: gus2.vouchFor(stranger).signature }]);
    const renamed = new Client(s, 'p8', 'Gustav', 'guest', 'guest:x8');
    tries.push([renamed, gus2.vouchFor(renamed)]);
    const elsewhere = new Client(s, 'p9', 'Gus Gast', 'guest', 'guest:x9');
    tries.push([elsewhere, gus2.vouchFor(elsewhere, 'm2')]); // a proof for another meeting
    const code = ana.code();
    for (const [c, proof] of tries) {
      c.mls.setContinuity(proof);
      s.join(c, 'p1');
    }
    s.advance(5_000);
    for (const [c] of tries) {
      expect(c.status.phase, c.id).toBe('waiting');
      expect(ana.notices, c.id).toContainEqual(expect.objectContaining({
        type: 'refused', participantId: c.id, reason: 'continuity',
      }));
    }
    expect(ana.code()).toBe(code);
    expectAgree([ana, ben, gus2]);
    // Without a proof, a returning guest the server names as Ana's is refused as before.
    const bare = new Client(s, 'p10', 'Gus Gast', 'guest', 'guest:x10');
    s.join(bare, 'p1');
    s.advance(2_000);
    expect(bare.status.phase).toBe('waiting');
    expect(ana.notices).toContainEqual(expect.objectContaining({
      type: 'refused', participantId: 'p10', reason: 'not_admitted_by_you',
    }));
  });

  test('a moderator\'s client that starts over keeps the guests it vouched for', () => {
    const s = new Server();
    s.policy = { staff_direct: true, direct_user_ids: [] };
    const ana = new Client(s, 'p1', 'Ana', 'staff', 'user:1');
    s.join(ana);
    const gus = new Client(s, 'p2', 'Gus Gast', 'guest', 'guest:g1');
    ana.mls.admitted('p2', 'Gus Gast', s.now);
    s.join(gus, 'p1');
    s.advance(1_000);
    expectAgree([ana, gus]);
    // Both connections break. Ana's page hands what her old worker vouched for to the new one.
    s.leave(ana);
    s.leave(gus);
    const ana2 = new Client(s, 'p3', 'Ana', 'staff', 'user:1');
    ana2.mls.vouch(ana.vouched);
    s.join(ana2);
    const gus2 = new Client(s, 'p4', 'Gus Gast', 'guest', 'guest:g2');
    gus2.mls.setContinuity(gus.vouchFor(gus2));
    s.join(gus2, 'p3');
    s.advance(1_000);
    expectAgree([ana2, gus2]);
    // Negative control: a new client that was not given the old keys refuses him.
    s.leave(ana2);
    s.leave(gus2);
    const ana3 = new Client(s, 'p5', 'Ana', 'staff', 'user:1');
    s.join(ana3);
    const gus3 = new Client(s, 'p6', 'Gus Gast', 'guest', 'guest:g3');
    gus3.mls.setContinuity(gus2.vouchFor(gus3));
    s.join(gus3, 'p5');
    s.advance(2_000);
    expect(gus3.status.phase).toBe('waiting');
    expect(ana3.notices).toContainEqual(expect.objectContaining({ type: 'refused', participantId: 'p6', reason: 'continuity' }));
  });

  test('clients whose clocks are off join and follow the group on the identity CA\'s time', () => {
    // Ben five minutes behind (others' fresh credentials look not yet valid), Cem two hours ahead
    // (others' credentials look expired); threeStaff checks that all three agree.
    const { s, ana, ben, cem } = threeStaff([0, -5 * 60_000, 2 * 3600_000]);
    for (const c of [ben, cem]) expect(c.warnings('clock_skew'), c.name).toBe(1);
    expect(ana.warnings('clock_skew')).toBe(0);
    expect(ben.warnings('welcome_rejected') + cem.warnings('welcome_rejected')).toBe(0);
    // Chat works across them too, and their own messages do not time out on the local clock.
    cem.mls.sendChat(1, 'Uhrzeit egal', s.now + cem.skew);
    ben.mls.sendChat(2, 'Meine Uhr geht nach', s.now + ben.skew);
    s.pump();
    expect(ben.chats).toContainEqual(expect.objectContaining({ type: 'received', text: 'Uhrzeit egal' }));
    expect(cem.chats).toContainEqual(expect.objectContaining({ type: 'received', text: 'Meine Uhr geht nach' }));
    expect(ben.chats).toContainEqual({ type: 'sent', id: 2 });
    expect(cem.chats).toContainEqual({ type: 'sent', id: 1 });
  });

  test('a commit the others cannot process is voided; its maker rejoins and the group goes on', () => {
    const { s, ana, ben, cem, code: before } = threeStaff();
    const epoch = ana.status.epoch as number;
    // Ben's client sends garbage for the current epoch (here: a commit of another group); the
    // server cannot tell and accepts it.
    const other = new WasmMember(
      fromBase64(credential(caKey, 'user:2', 'Ben', 'staff', ben.deviceKey, s.now)), ben.deviceKey, fromHex(caPublicHex));
    other.createGroup(enc.encode('elsewhere'), s.now);
    const garbage = (other.updateOwnLeaf() as { commit: Uint8Array }).commit;
    s.receive(ben, { type: 'mls_commit', epoch, commit: toBase64(garbage), welcome: null, welcome_for: [] });
    expect(s.delivery.epoch).toBe(epoch + 1);
    s.pump();
    // Ana and Cem cannot process it and say so; the server voids it and Ben starts over.
    expect(s.rejections.sort()).toEqual(['p1', 'p3']);
    expect(s.delivery.epoch).toBe(epoch);
    expect(ben.warnings('group_reset')).toBe(1);
    expect(ben.status.phase).toBe('waiting');
    // The others remove Ben's old leaf (no longer claimed) and add him again.
    s.advance(UNCLAIMED_GRACE_MS + 5_000);
    const after = expectAgree([ana, ben, cem]);
    expect(after).not.toBe(before);
    expect(ana.status.epoch).toBeGreaterThan(epoch);
    // The group lives: chat goes through again.
    cem.mls.sendChat(1, 'Wieder beisammen', s.now);
    s.pump();
    expect(cem.chats).toContainEqual({ type: 'sent', id: 1 });
    expect(ben.chats).toContainEqual(expect.objectContaining({ type: 'received', text: 'Wieder beisammen' }));
  });
});
