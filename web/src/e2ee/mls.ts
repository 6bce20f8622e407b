// The client side of the MLS delivery-service protocol (docs/protocol.md, mls_*; docs/e2ee.md).
//
// A pure class: no DOM, no timers, no network. Time is always passed in (`now`, ms since the
// Unix epoch). It runs inside the encryption worker, next to the frame transforms, and is unit
// tested under Node (mls.test.ts) with the same WebAssembly package.
//
// Inputs: `start` (device credential), the server's mls_* messages (`handleServer`), the
// server's participant list (`setParticipants`), "this user admitted X from the lobby"
// (`admitted`) and `tick`. Outputs through the sink: client messages to send, status, notices.

import { MAX_CHAT_CHARS } from '../signaling/protocol';
import type { ClientMsg, MlsContinuity, MlsJoiner, MlsPolicy, ServerMsg } from '../signaling/protocol';
import { fromBase64, fromHex, toBase64 } from './b64';
import type {
  ChatEvent,
  CredentialInfo,
  E2eeNotice,
  E2eePhase,
  E2eeStatus,
  E2eeWarning,
  MemberInfo,
  OutsiderView,
  RefusalReason,
  RosterView,
  VerificationFlag,
  WarningCode,
} from './types';

/** Grace before a participant the server announces but who is not in the group is flagged. */
export const GRACE_MS = 10_000;
/**
 * Grace before a leaf no participant validly claims is flagged and removed. Longer than
 * GRACE_MS: a joiner's claim needs its Welcome processed, the claim signed and checked by the
 * server and the participant update delivered, which on a loaded server (or a dial-in gateway on
 * another host) took more than 10 s; removing the leaf meanwhile threw the newcomer out again.
 */
export const UNCLAIMED_GRACE_MS = 30_000;
/** A member of rank r waits r times this before committing (r = 0 commits at once). */
export const RANK_DELAY_MS = 1_000;
/** An own commit without a result after this long is dropped (the server refused it). */
export const COMMIT_TIMEOUT_MS = 15_000;
/** Ask for a renewed credential this long before the current one expires. */
export const RENEW_BEFORE_MS = 10 * 60_000;
/** Ask again after this long if no renewed credential arrived. */
export const RENEW_RETRY_MS = 60_000;
/**
 * The identity CA dates a credential back by this many seconds from its time of issue
 * (CLOCK_SKEW_SECS in crates/klausur-server/src/identity.rs).
 */
export const CREDENTIAL_BACKDATE_S = 60;
/** A local clock within this of the CA's is used as it is. */
export const CLOCK_TOLERANCE_MS = 30_000;
/** An own chat message still not sent this long after the user wrote it has failed. */
export const CHAT_TIMEOUT_MS = 30_000;
/** An own chat message refused this often (its epoch was over each time) has failed. */
export const MAX_CHAT_ATTEMPTS = 5;
const MAX_WARNINGS = 10;

export interface RosterEntryInfo extends CredentialInfo {
  leafIndex: number;
}

export interface EpochChangedEvent {
  type: 'epochChanged';
  epoch: number;
  committer: number;
  added: RosterEntryInfo[];
  removed: RosterEntryInfo[];
  securityCode: string;
}

export type MemberEvent =
  | EpochChangedEvent
  | { type: 'removed'; by: number }
  | { type: 'application'; data: Uint8Array }
  | { type: 'ignored' };

export interface CommitBytes {
  commit: Uint8Array;
  welcome: Uint8Array | null;
}

/** The plaintext of a chat application message (JSON, UTF-8). */
export interface ChatPayload {
  type: 'chat';
  text: string;
}

/** A chat text as it is sent and shown: trimmed, 1 to MAX_CHAT_CHARS characters, or null. */
export function chatText(text: string): string | null {
  const t = text.trim();
  const chars = [...t].length;
  return chars === 0 || chars > MAX_CHAT_CHARS ? null : t;
}

/** The part of klausur-e2ee-wasm's `WasmMember` this class uses (structural, for tests). */
export interface MemberApi {
  keyPackage(): Uint8Array;
  verifyKeyPackage(keyPackage: Uint8Array, now: number): unknown;
  createGroup(groupId: Uint8Array, now: number): void;
  add(keyPackages: Uint8Array[], now: number): unknown;
  remove(leaves: Uint32Array): unknown;
  updateOwnLeaf(): unknown;
  renewCredential(signedCredential: Uint8Array): unknown;
  ownCredential(): unknown;
  leafUpdateDue(now: number): boolean;
  mergePendingCommit(now: number): unknown;
  discardPendingCommit(): void;
  reset(): void;
  processMessage(message: Uint8Array, now: number): unknown;
  encryptApplication(data: Uint8Array): Uint8Array;
  decryptApplication(message: Uint8Array): unknown;
  joinFromWelcome(welcome: Uint8Array, now: number): void;
  /** The group's GroupInfo with its ratchet tree (sent by the creator with its claim). */
  groupInfo(): Uint8Array;
  /** This device's signature over group id, epoch, own leaf and `participantId`. */
  signLeafClaim(participantId: string): Uint8Array;
  readonly inGroup: boolean;
  leafIndex(): number;
  epoch(): number;
  roster(): unknown;
  securityCode(): string;
  handleTimeout(now: number): void;
}

/** Builds the device's member from the CA-issued credential and the CA's public key. */
export type MemberFactory = (credential: Uint8Array, caPublicKey: Uint8Array) => MemberApi;

/**
 * Whether `signature` (base64) is the continuity proof of the device key `previousKey` (hex)
 * for `newKey` (hex) in this meeting (klausur_e2ee::verify_continuity; docs/e2ee.md,
 * "Reconnects").
 */
export type ContinuityCheck = (previousKey: string, newKey: string, signature: string) => boolean;

export interface MlsSink {
  send(msg: ClientMsg): void;
  status(status: E2eeStatus): void;
  notice(notice: E2eeNotice): void;
  /** End-to-end encrypted chat: messages received, own messages relayed or failed. */
  chat(event: ChatEvent): void;
  /**
   * This client added `key` (a device key, hex), a guest this user admitted from the lobby
   * under `name`: kept by the page across reconnects and given back with `vouch`, so that the
   * guest's next device key is added without asking when the guest proves continuity.
   */
  vouched?(key: string, name: string): void;
  /**
   * The own credential expires within RENEW_BEFORE_MS: fetch a new one for the same device key
   * and pass it to `renew`. Asked again every RENEW_RETRY_MS until one arrives.
   */
  needCredential?(): void;
}

/** The fields of a server participant this class looks at. */
export interface ParticipantLike {
  id: string;
  display_name: string;
  kind: string;
  leaf: number | null;
  /** The user id of the credential in `leaf`, as the server checked it is this participant's. */
  credential_user_id?: string | null;
  role?: string;
}

/**
 * Whether `p`'s leaf claim is valid for roster entry `e`: `p` claims `e`'s leaf, and the leaf's
 * credential names `p`'s `credential_user_id` (who the server says `p` is) and kind. Only a valid
 * claim makes a leaf go when its participant leaves; the server's relaying a claim is not enough
 * (docs/e2ee.md, "Leaf claims").
 */
export function validClaim(p: ParticipantLike, e: RosterEntryInfo): boolean {
  return p.leaf === e.leafIndex && (p.credential_user_id ?? null) === e.userId && p.kind === e.kind;
}

type Commit =
  | { kind: 'add'; keyPackages: Uint8Array[]; welcomeFor: string[] }
  | { kind: 'remove'; leaves: number[] }
  | { kind: 'update' }
  | { kind: 'renew'; credential: Uint8Array };

/** An own chat message until the server relayed it. */
interface OutChat {
  id: number;
  text: string;
  queuedAt: number;
  attempts: number;
  /** The epoch it was encrypted in, while its `mls_chat_result` is awaited. */
  sentEpoch: number | null;
  /** The epoch it was last refused in: it is encrypted again only in a later one. */
  refusedEpoch: number | null;
}

interface Inflight {
  epoch: number;
  kind: Commit['kind'];
  sentAt: number;
}

type Verified = { ok: true; cred: CredentialInfo } | { ok: false; error: string };

function errText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

function memberInfo(e: RosterEntryInfo): MemberInfo {
  return { leaf: e.leafIndex, userId: e.userId, displayName: e.displayName, kind: e.kind };
}

/** One device's MLS client for one meeting visit. */
export class MlsClient {
  private member: MemberApi | null = null;
  private phase: E2eePhase = 'starting';
  private selfId: string | null = null;
  private participants: ParticipantLike[] = [];
  /** participant id -> its most recent leaf claim (its leaf goes with it if the claim is valid). */
  private lastClaims = new Map<string, ParticipantLike>();
  /** Our mls_member waits for our participant id: whether we created the group. */
  private claimDue: boolean | null = null;
  /** leaf -> device key of the member at that leaf when its participant left the server. */
  private departed = new Map<number, string>();
  /** Lobby admissions by this user: participant id -> display name admitted. */
  private admittedByMe = new Map<string, string>();
  /** Device keys (hex) of guests this user admitted and this client added -> their name. */
  private vouchedKeys = new Map<string, string>();
  /** This device's proof that it follows an earlier device of the same tab (sent with the key package). */
  private continuity: MlsContinuity | null = null;
  private joiners: MlsJoiner[] = [];
  private policy: MlsPolicy = { staff_direct: false, direct_user_ids: [] };
  private verified = new Map<string, Verified>();
  private refusedNotified = new Set<string>();
  private inflight: Inflight | null = null;
  private needSince: number | null = null;
  private roster: RosterEntryInfo[] = [];
  /** Roster leaf -> since when no server participant claims it. */
  private unclaimedSince = new Map<number, number>();
  /** Server participant id -> since when it is not in the roster. */
  private outsiderSince = new Map<string, number>();
  private warnings: E2eeWarning[] = [];
  private lastStatusJson = '';
  private renewal: Uint8Array | null = null;
  private renewAskedAt: number | null = null;
  /** Own chat messages not yet relayed, in the order they were written. */
  private outbox: OutChat[] = [];
  /** Milliseconds to add to the local clock for the identity CA's time (see `setClock`). */
  private clockOffset = 0;
  /** No own commit before this time (after a lost commit whose winner has not arrived). */
  private holdUntil = 0;
  private now = 0;

  constructor(
    private readonly createMember: MemberFactory,
    private readonly sink: MlsSink,
    private readonly continuityCheck: ContinuityCheck | null = null,
  ) {}

  // --- inputs ----------------------------------------------------------------------------

  /**
   * Starts the device with its credential (standard base64 of the signed credential, from
   * POST /api/identity/credential) and the CA public key (hex) and sends the key package.
   * Call once, after the meeting room was joined (`joined`). `requestedAt` is the local time the
   * credential was asked for (see `setClock`).
   */
  start(credentialBase64: string, caPublicKeyHex: string, now: number, requestedAt = now): void {
    this.now = this.at(now);
    if (this.member) return;
    try {
      this.member = this.createMember(fromBase64(credentialBase64), fromHex(caPublicKeyHex));
      this.setClock(this.member.ownCredential() as CredentialInfo, requestedAt, now);
      const kp = this.member.keyPackage();
      this.phase = 'waiting';
      this.sink.send({ type: 'mls_key_package', key_package: toBase64(kp), continuity: this.continuity });
    } catch (e) {
      this.member = null;
      this.phase = 'failed';
      this.warn('start_failed', errText(e));
    }
    this.emitStatus();
  }

  /**
   * The time this client works with: the local clock corrected to the identity CA's (see
   * `setClock`). Credential validity windows are in the CA's time; frame-key timers use the
   * same clock, so the worker passes its frame times through here too.
   */
  at(localNow: number): number {
    return localNow + this.clockOffset;
  }

  /**
   * Learns the identity CA's clock from this device's own credential, issued for a device key
   * made in this worker: its `notBefore` is the CA's time of issue minus CREDENTIAL_BACKDATE_S.
   * A local clock that is off by more than CLOCK_TOLERANCE_MS would otherwise find fresh
   * credentials of others not yet valid (clock behind) or expired (clock ahead) and could not
   * join or follow the group. Trusting the CA's clock adds no trust: the CA decides who is who.
   * The offset is taken against `requestedAt`, before the issue, so the corrected clock can only
   * be ahead of the CA's (by the request's round trip): a server that holds the answer back
   * makes expiry checks stricter, never more lenient.
   */
  private setClock(own: CredentialInfo, requestedAt: number, localNow: number): void {
    const offset = (own.notBefore + CREDENTIAL_BACKDATE_S) * 1000 - requestedAt;
    if (Math.abs(offset) <= CLOCK_TOLERANCE_MS) return;
    this.clockOffset = offset;
    this.now = this.at(localNow);
    const minutes = Math.round(offset / 60_000);
    this.warn('clock_skew', `this device's clock is ${Math.abs(minutes)} min ${offset > 0 ? 'behind' : 'ahead of'} the identity CA's; using the CA's time`);
  }

  /** Marks the session as failed (e.g. the credential could not be fetched). */
  fail(detail: string, now: number): void {
    this.now = this.at(now);
    this.phase = 'failed';
    this.warn('start_failed', detail);
    this.emitStatus();
  }

  /**
   * A renewed credential (standard base64) for the same device key, user, name and kind, asked
   * for through `needCredential`. Committed as an update of the own leaf.
   */
  renew(credentialBase64: string, now: number): void {
    this.now = this.at(now);
    try {
      this.renewal = fromBase64(credentialBase64);
    } catch (e) {
      this.warn('commit_failed', `renewed credential: ${errText(e)}`);
    }
    this.evaluate();
  }

  /**
   * Sends chat `text` end-to-end encrypted, as an MLS application message of the current epoch
   * (`mls_chat`). `id` is the caller's number for it: the outcome comes back through the sink
   * as `sent` or `failed` with that id. Held while this client is not (yet) a member or has a
   * commit in flight; encrypted again when the server refuses it for an epoch that ended.
   */
  sendChat(id: number, text: string, now: number): void {
    this.now = this.at(now);
    const t = chatText(text);
    if (t === null) {
      this.sink.chat({ type: 'failed', id, reason: `a chat message has 1 to ${MAX_CHAT_CHARS} characters` });
      return;
    }
    this.outbox.push({ id, text: t, queuedAt: this.now, attempts: 0, sentEpoch: null, refusedEpoch: null });
    this.evaluate();
  }

  /** Consumes the server's mls_* messages; returns false for every other message. */
  handleServer(msg: ServerMsg, now: number): boolean {
    this.now = this.at(now);
    switch (msg.type) {
      case 'mls_create_group':
        this.onCreateGroup(msg.group_id);
        break;
      case 'mls_welcome':
        this.onWelcome(msg.welcome);
        break;
      case 'mls_pending':
        this.joiners = msg.joiners;
        this.policy = msg.policy;
        // Verification results depend on time; keep them for the current list only.
        this.verified = new Map([...this.verified].filter(([kp]) =>
          msg.joiners.some((j) => j.key_package === kp)));
        break;
      case 'mls_commit':
        this.onCommit(msg.epoch, msg.commit);
        break;
      case 'mls_reset':
        this.onReset(msg.epoch);
        break;
      case 'mls_commit_result':
        this.onCommitResult(msg.epoch, msg.accepted);
        break;
      case 'mls_chat':
        this.onChat(msg.message, msg.from_id, msg.sent_at_ms);
        break;
      case 'mls_chat_result':
        this.onChatResult(msg.id, msg.accepted);
        break;
      default:
        return false;
    }
    this.evaluate();
    return true;
  }

  /** The server's participant list (everyone in the meeting room, self included). */
  setParticipants(selfId: string, participants: ParticipantLike[], now: number): void {
    this.now = this.at(now);
    this.selfId = selfId;
    const present = new Set(participants.map((p) => p.id));
    for (const [id, claim] of this.lastClaims) {
      if (!present.has(id)) {
        this.lastClaims.delete(id);
        // Only a valid claim makes its leaf go: the server's word that someone who claimed a
        // leaf left is not enough to remove whoever holds it.
        const entry = this.roster.find((e) => validClaim(claim, e));
        if (entry && id !== selfId) this.departed.set(entry.leafIndex, entry.devicePublicKey);
      }
    }
    for (const p of participants) {
      if (p.leaf !== null && p.leaf !== undefined) this.lastClaims.set(p.id, { ...p });
    }
    this.participants = participants.map((p) => ({ ...p }));
    this.sendClaimIfDue();
    this.evaluate();
  }

  /**
   * This device follows an earlier one of the same browser tab (a guest coming back after a
   * broken connection): the proof goes with the key package. Call before `start`.
   */
  setContinuity(proof: MlsContinuity): void {
    this.continuity = proof;
  }

  /** Device keys this client added before (see MlsSink.vouched), e.g. from an earlier connection. */
  vouch(entries: Iterable<readonly [string, string]>): void {
    for (const [key, name] of entries) this.vouchedKeys.set(key, name);
  }

  /** This user admitted `participantId` from the lobby under `displayName`. */
  admitted(participantId: string, displayName: string, now: number): void {
    this.now = this.at(now);
    this.admittedByMe.set(participantId, displayName);
    for (const k of [...this.refusedNotified]) {
      if (k.startsWith(`${participantId}\u0000`)) this.refusedNotified.delete(k);
    }
    this.evaluate();
  }

  /** Timers: rank delays, grace periods, leaf updates, old frame keys. Call about every 250 ms. */
  tick(now: number): void {
    this.now = this.at(now);
    if (this.member?.inGroup) this.member.handleTimeout(now);
    this.evaluate();
  }

  // --- outputs on demand -------------------------------------------------------------------

  status(): E2eeStatus {
    const m = this.member;
    const inGroup = this.phase === 'active' && m !== null && m.inGroup;
    const { roster, outsiders } = this.verification(inGroup);
    const warnings = [...this.warnings];
    for (const r of roster) {
      if (r.flags.length > 0) {
        warnings.push({
          code: 'roster_discrepancy',
          detail: `leaf ${r.leaf} (${r.displayName}): ${r.flags.join(', ')}`,
          at: this.now,
        });
      }
    }
    for (const o of outsiders) {
      if (o.flags.length > 0) {
        warnings.push({
          code: 'roster_discrepancy',
          detail: `participant ${o.participantId} (${o.displayName}): ${o.flags.join(', ')}`,
          at: this.now,
        });
      }
    }
    return {
      phase: this.phase,
      epoch: inGroup ? m.epoch() : null,
      securityCode: inGroup ? m.securityCode() : null,
      ownLeaf: inGroup ? m.leafIndex() : null,
      roster,
      outsiders,
      warnings,
    };
  }

  get currentPhase(): E2eePhase {
    return this.phase;
  }

  // --- server messages ---------------------------------------------------------------------

  private onCreateGroup(groupId: string): void {
    const m = this.member;
    if (!m || m.inGroup || this.phase !== 'waiting') return;
    try {
      m.createGroup(new TextEncoder().encode(groupId), this.now);
    } catch (e) {
      this.warn('create_failed', errText(e));
      return;
    }
    this.becameMember(true);
  }

  private onWelcome(welcome: string): void {
    const m = this.member;
    if (!m || m.inGroup || this.phase !== 'waiting') return;
    try {
      m.joinFromWelcome(fromBase64(welcome), this.now);
    } catch (e) {
      // Nothing changed: this client is still waiting (the server may think otherwise).
      this.warn('welcome_rejected', errText(e));
      return;
    }
    this.becameMember(false);
  }

  private becameMember(created: boolean): void {
    const m = this.member as MemberApi;
    this.phase = 'active';
    this.refreshRoster();
    const epoch = m.epoch();
    this.claimDue = created;
    this.sendClaimIfDue();
    this.sink.notice({ type: 'self_joined', epoch, created });
    this.needSince = null;
  }

  /**
   * Sends mls_member once this client is a member and knows its participant id: leaf and epoch,
   * signed by the device key for the participant id, and as the creator the GroupInfo, from which
   * the server follows the group's public state.
   */
  private sendClaimIfDue(): void {
    const m = this.member;
    const created = this.claimDue;
    if (created === null || this.selfId === null) return;
    this.claimDue = null;
    if (!m || !m.inGroup) return;
    try {
      this.sink.send({
        type: 'mls_member',
        leaf: m.leafIndex(),
        epoch: m.epoch(),
        signature: toBase64(m.signLeafClaim(this.selfId)),
        group_info: created ? toBase64(m.groupInfo()) : null,
      });
    } catch (e) {
      this.warn('start_failed', `the leaf claim cannot be made: ${errText(e)}`);
    }
  }

  private onCommit(epoch: number, commit: string): void {
    const m = this.member;
    if (!m || !m.inGroup || this.phase !== 'active') return;
    if (this.inflight) {
      // Another commit won this epoch: ours is void.
      this.dropInflight();
    }
    let ev: MemberEvent;
    try {
      ev = m.processMessage(fromBase64(commit), this.now) as MemberEvent;
    } catch (e) {
      // Forged, for another group or epoch, or bringing in an unverifiable credential:
      // nothing was merged; this client stays in its epoch. The server learns it: if most
      // members say so about the commit it accepted, it voids that commit.
      this.warn('commit_rejected', errText(e));
      this.sink.send({ type: 'mls_commit_rejected', epoch });
      return;
    }
    if (ev.type === 'epochChanged') {
      this.epochChanged(ev);
    } else if (ev.type === 'removed') {
      const by = this.roster.find((e) => e.leafIndex === ev.by);
      this.phase = 'removed';
      this.roster = [];
      this.sink.notice({ type: 'self_removed', by: by ? memberInfo(by) : null });
    }
  }

  private onCommitResult(epoch: number, accepted: boolean): void {
    const m = this.member;
    const f = this.inflight;
    if (!m || !f || f.epoch !== epoch) return;
    this.inflight = null;
    if (!accepted) {
      this.discard();
      // The winning commit normally arrives before this result and clears the hold; if it does
      // not, this client is out of step with the group: retry slowly instead of spinning.
      this.holdUntil = this.now + COMMIT_TIMEOUT_MS;
      return;
    }
    if (f.kind === 'renew') {
      this.renewal = null;
      this.renewAskedAt = null;
    }
    let change: EpochChangedEvent;
    try {
      change = m.mergePendingCommit(this.now) as EpochChangedEvent;
    } catch (e) {
      this.warn('commit_failed', errText(e));
      return;
    }
    this.epochChanged(change);
  }

  /**
   * The server voided the commit this client made or joined by (most members could not process
   * it): forget the group, keep the device, and ask to be added again with a new key package.
   */
  private onReset(epoch: number): void {
    const m = this.member;
    if (!m || !m.inGroup || this.phase !== 'active') return;
    try {
      m.reset();
    } catch (e) {
      this.phase = 'failed';
      this.warn('start_failed', `could not leave the voided group state: ${errText(e)}`);
      return;
    }
    this.inflight = null;
    this.needSince = null;
    this.claimDue = null;
    this.roster = [];
    this.phase = 'waiting';
    this.warn('group_reset', `the server voided the commit of epoch ${epoch}: the other members could not process it; joining again`);
    try {
      this.sink.send({ type: 'mls_key_package', key_package: toBase64(m.keyPackage()), continuity: this.continuity });
    } catch (e) {
      this.phase = 'failed';
      this.warn('start_failed', errText(e));
    }
  }

  private onChat(message: string, fromId: string, sentAtMs: number): void {
    const m = this.member;
    // Not a member (yet, or any more): it could not be decrypted, and is not meant for us.
    if (!m || !m.inGroup || this.phase !== 'active') return;
    let got: { sender: number; data: Uint8Array };
    try {
      got = m.decryptApplication(fromBase64(message)) as { sender: number; data: Uint8Array };
    } catch (e) {
      this.warn('chat_rejected', errText(e));
      return;
    }
    let payload: Partial<ChatPayload> | null = null;
    try {
      payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(got.data)) as Partial<ChatPayload>;
    } catch (e) {
      this.warn('chat_rejected', `not a chat payload: ${errText(e)}`);
      return;
    }
    // Later versions may send other application messages: not chat, not shown.
    if (payload?.type !== 'chat') return;
    const text = typeof payload.text === 'string' ? chatText(payload.text) : null;
    const from = this.roster.find((e) => e.leafIndex === got.sender);
    if (text === null || !from) {
      this.warn('chat_rejected', text === null
        ? `chat text from leaf ${got.sender} is empty or longer than ${MAX_CHAT_CHARS} characters`
        : `chat from leaf ${got.sender}, which is not in the roster`);
      return;
    }
    const claimant = this.participants.find((p) => p.id === fromId);
    this.sink.chat({
      type: 'received',
      from: memberInfo(from),
      participantId: fromId,
      mismatch: !claimant || !validClaim(claimant, from),
      text,
      sentAtMs,
    });
  }

  private onChatResult(id: number, accepted: boolean): void {
    const c = this.outbox.find((o) => o.id === id);
    if (!c || c.sentEpoch === null) return;
    if (accepted) {
      this.outbox = this.outbox.filter((o) => o !== c);
      this.sink.chat({ type: 'sent', id });
    } else {
      c.refusedEpoch = c.sentEpoch;
      c.sentEpoch = null;
    }
  }

  /** Encrypts and sends what the outbox holds, once this client can; fails what waited too long. */
  private flushChat(): void {
    const m = this.member;
    const active = this.phase === 'active' && m !== null && m.inGroup;
    for (const c of [...this.outbox]) {
      let failed: string | null = null;
      if (this.phase === 'removed' || this.phase === 'failed') failed = `end-to-end encryption is ${this.phase}`;
      // One awaiting its result is left alone: the server may have relayed it already.
      else if (c.sentEpoch === null && this.now - c.queuedAt > CHAT_TIMEOUT_MS) failed = 'could not be encrypted in time';
      else if (c.sentEpoch === null && c.attempts >= MAX_CHAT_ATTEMPTS) failed = `refused ${c.attempts} times`;
      if (failed === null && c.sentEpoch === null && active && !this.inflight) {
        const epoch = m.epoch();
        if (c.refusedEpoch !== null && epoch <= c.refusedEpoch) continue;
        try {
          const payload: ChatPayload = { type: 'chat', text: c.text };
          const sealed = m.encryptApplication(new TextEncoder().encode(JSON.stringify(payload)));
          c.attempts += 1;
          c.sentEpoch = epoch;
          this.sink.send({ type: 'mls_chat', id: c.id, epoch, message: toBase64(sealed) });
        } catch (e) {
          failed = errText(e);
        }
      }
      if (failed !== null) {
        this.outbox = this.outbox.filter((o) => o !== c);
        this.sink.chat({ type: 'failed', id: c.id, reason: failed });
      }
    }
  }

  private epochChanged(ev: EpochChangedEvent): void {
    this.refreshRoster();
    this.needSince = null;
    this.holdUntil = 0;
    if (ev.added.length > 0) {
      this.sink.notice({ type: 'joined', epoch: ev.epoch, members: ev.added.map(memberInfo) });
    }
    if (ev.removed.length > 0) {
      this.sink.notice({ type: 'left', epoch: ev.epoch, members: ev.removed.map(memberInfo) });
    }
    for (const r of ev.removed) this.departed.delete(r.leafIndex);
  }

  private dropInflight(): void {
    this.inflight = null;
    this.discard();
  }

  private discard(): void {
    try {
      this.member?.discardPendingCommit();
    } catch (e) {
      this.warn('commit_failed', errText(e));
    }
  }

  private refreshRoster(): void {
    const m = this.member;
    this.roster = m && m.inGroup ? (m.roster() as RosterEntryInfo[]) : [];
    const leaves = new Set(this.roster.map((e) => e.leafIndex));
    for (const leaf of [...this.unclaimedSince.keys()]) {
      if (!leaves.has(leaf)) this.unclaimedSince.delete(leaf);
    }
    for (const [leaf, key] of [...this.departed]) {
      const e = this.roster.find((r) => r.leafIndex === leaf);
      if (!e || e.devicePublicKey !== key) this.departed.delete(leaf);
    }
  }

  // --- decisions ---------------------------------------------------------------------------

  private verify(j: MlsJoiner): Verified {
    let v = this.verified.get(j.key_package);
    if (!v) {
      try {
        const cred = this.member?.verifyKeyPackage(fromBase64(j.key_package), this.now) as CredentialInfo;
        v = { ok: true, cred };
      } catch (e) {
        v = { ok: false, error: errText(e) };
      }
      this.verified.set(j.key_package, v);
    }
    return v;
  }

  private refuse(j: MlsJoiner, reason: RefusalReason, detail: string, name: string | null): void {
    const key = `${j.participant_id}\u0000${j.key_package}\u0000${reason}`;
    if (this.refusedNotified.has(key)) return;
    this.refusedNotified.add(key);
    const serverName = this.participants.find((p) => p.id === j.participant_id)?.display_name;
    this.sink.notice({
      type: 'refused',
      participantId: j.participant_id,
      displayName: name ?? serverName ?? null,
      reason,
      detail,
    });
  }

  /** Whether the meeting's policy admits this verified credential without a moderator. */
  private policyAdmits(c: CredentialInfo): boolean {
    return this.policy.direct_user_ids.includes(c.userId) || (this.policy.staff_direct && c.kind === 'staff');
  }

  /** Whether this participant's key package waits for a moderator (see OutsiderView). */
  private awaitsAdmission(participantId: string): boolean {
    const j = this.joiners.find((x) => x.participant_id === participantId);
    if (!j || j.admitted_by !== null) return false;
    const v = this.verify(j);
    return v.ok && !this.policyAdmits(v.cred);
  }

  /** Joiners to add now, and whether one of them was admitted by this user (commit at once). */
  private acceptableJoiners(): { keyPackages: Uint8Array[]; welcomeFor: string[]; immediate: boolean } {
    const inRoster = new Set(this.roster.map((e) => e.devicePublicKey));
    const seen = new Set<string>();
    const out = { keyPackages: [] as Uint8Array[], welcomeFor: [] as string[], immediate: false };
    for (const j of this.joiners) {
      const v = this.verify(j);
      if (!v.ok) {
        this.refuse(j, 'credential', v.error, null);
        continue;
      }
      const c = v.cred;
      // Already added (the pending list lags behind the commit), or twice in the list.
      if (inRoster.has(c.devicePublicKey) || seen.has(c.devicePublicKey)) continue;
      let ok = this.policyAdmits(c);
      let immediate = false;
      if (j.admitted_by !== null && j.admitted_by === this.selfId) {
        const name = this.admittedByMe.get(j.participant_id);
        const back = name === undefined && j.continuity !== null ? this.returning(j.continuity, c) : null;
        if ((name !== undefined && name === c.displayName) || back === true) {
          ok = true;
          immediate = true;
          if (c.kind === 'guest') {
            this.vouchedKeys.set(c.devicePublicKey, c.displayName);
            this.sink.vouched?.(c.devicePublicKey, c.displayName);
          }
        } else if (!ok) {
          if (back !== null) {
            this.refuse(j, 'continuity', back, c.displayName);
          } else if (name === undefined) {
            this.refuse(j, 'not_admitted_by_you',
              'the server says this user admitted them, but this client did not', c.displayName);
          } else {
            this.refuse(j, 'name_mismatch',
              `admitted as "${name}", the credential names "${c.displayName}"`, c.displayName);
          }
          continue;
        }
      } else if (!ok && j.admitted_by !== null) {
        continue; // the admitting moderator's client adds them
      }
      if (!ok) {
        this.refuse(j, 'policy',
          `user ${c.userId} (${c.kind}) is not admitted directly by the meeting's policy`,
          c.displayName);
        continue;
      }
      seen.add(c.devicePublicKey);
      out.keyPackages.push(fromBase64(j.key_package));
      out.welcomeFor.push(j.participant_id);
      out.immediate ||= immediate;
    }
    return out;
  }

  /**
   * A guest this user admitted, back with a new device key: true if the proof verifies under a
   * device key this client added and the credential is a guest's of the same name; otherwise
   * why not.
   */
  private returning(proof: MlsContinuity, c: CredentialInfo): true | string {
    const name = this.vouchedKeys.get(proof.previous_key);
    if (name === undefined) return 'the earlier device key is not one of a guest this user admitted';
    if (c.kind !== 'guest' || name !== c.displayName) {
      return `admitted as "${name}" (guest), the credential names "${c.displayName}" (${c.kind})`;
    }
    let valid = false;
    try {
      valid = this.continuityCheck?.(proof.previous_key, c.devicePublicKey, proof.signature) ?? false;
    } catch {
      valid = false;
    }
    return valid ? true : 'the proof that this is the same browser does not verify';
  }

  /** Roster leaves to remove: participants that left, and leaves nobody claims after grace. */
  private leavesToRemove(ownLeaf: number): number[] {
    const out: number[] = [];
    for (const e of this.roster) {
      if (e.leafIndex === ownLeaf) continue;
      const departed = this.departed.get(e.leafIndex) === e.devicePublicKey;
      const since = this.unclaimedSince.get(e.leafIndex);
      if (departed || (since !== undefined && this.now - since > UNCLAIMED_GRACE_MS)) out.push(e.leafIndex);
    }
    return out;
  }

  private updateClaimTimers(ownLeaf: number | null): void {
    // A leaf counts as claimed only by a valid claim: a participant claiming someone else's leaf
    // neither keeps it in the group nor makes it go.
    const claimed = new Set<number>();
    for (const e of this.roster) {
      if (this.participants.some((p) => validClaim(p, e))) claimed.add(e.leafIndex);
    }
    for (const e of this.roster) {
      if (e.leafIndex === ownLeaf || claimed.has(e.leafIndex)) this.unclaimedSince.delete(e.leafIndex);
      else if (!this.unclaimedSince.has(e.leafIndex)) this.unclaimedSince.set(e.leafIndex, this.now);
    }
    const rosterLeaves = new Set(this.roster.map((e) => e.leafIndex));
    const ids = new Set(this.participants.map((p) => p.id));
    for (const p of this.participants) {
      const inRoster = p.id === this.selfId || (p.leaf !== null && rosterLeaves.has(p.leaf));
      if (inRoster) this.outsiderSince.delete(p.id);
      else if (!this.outsiderSince.has(p.id)) this.outsiderSince.set(p.id, this.now);
    }
    for (const id of [...this.outsiderSince.keys()]) if (!ids.has(id)) this.outsiderSince.delete(id);
  }

  private evaluate(): void {
    const m = this.member;
    const active = this.phase === 'active' && m !== null && m.inGroup;
    const ownLeaf = active ? m.leafIndex() : null;
    this.updateClaimTimers(ownLeaf);
    if (active && ownLeaf !== null) {
      if (this.inflight && this.now - this.inflight.sentAt > COMMIT_TIMEOUT_MS) {
        this.dropInflight();
      }
      if (!this.inflight) this.plan(m, ownLeaf);
      this.maybeAskForCredential(m);
    }
    this.flushChat();
    this.emitStatus();
  }

  private maybeAskForCredential(m: MemberApi): void {
    if (this.renewal || !this.sink.needCredential) return;
    const own = m.ownCredential() as CredentialInfo;
    if (own.notAfter * 1000 - this.now > RENEW_BEFORE_MS) return;
    if (this.renewAskedAt !== null && this.now - this.renewAskedAt < RENEW_RETRY_MS) return;
    this.renewAskedAt = this.now;
    this.sink.needCredential();
  }

  private plan(m: MemberApi, ownLeaf: number): void {
    const remove = this.leavesToRemove(ownLeaf);
    const adds = this.acceptableJoiners();
    let commit: Commit | null = null;
    let delay = 0;
    if (remove.length > 0) {
      commit = { kind: 'remove', leaves: remove };
      const live = this.roster.map((e) => e.leafIndex).filter((l) => !remove.includes(l)).sort((a, b) => a - b);
      delay = live.indexOf(ownLeaf) * RANK_DELAY_MS;
    } else if (adds.keyPackages.length > 0) {
      commit = { kind: 'add', keyPackages: adds.keyPackages, welcomeFor: adds.welcomeFor };
      const live = this.roster.map((e) => e.leafIndex).sort((a, b) => a - b);
      delay = adds.immediate ? 0 : live.indexOf(ownLeaf) * RANK_DELAY_MS;
    } else if (this.renewal) {
      commit = { kind: 'renew', credential: this.renewal };
    } else if (m.leafUpdateDue(this.now)) {
      commit = { kind: 'update' };
    }
    if (!commit) {
      this.needSince = null;
      return;
    }
    if (this.needSince === null) this.needSince = this.now;
    if (this.now < this.needSince + delay || this.now < this.holdUntil) return;
    this.commit(m, commit);
  }

  private commit(m: MemberApi, c: Commit): void {
    const epoch = m.epoch();
    let out: CommitBytes;
    try {
      if (c.kind === 'add') out = m.add(c.keyPackages, this.now) as CommitBytes;
      else if (c.kind === 'remove') out = m.remove(Uint32Array.from(c.leaves)) as CommitBytes;
      else if (c.kind === 'renew') out = m.renewCredential(c.credential) as CommitBytes;
      else out = m.updateOwnLeaf() as CommitBytes;
    } catch (e) {
      this.warn('commit_failed', errText(e));
      if (c.kind === 'renew') this.renewal = null; // unusable; ask again later
      this.needSince = this.now + COMMIT_TIMEOUT_MS; // do not retry in a tight loop
      return;
    }
    this.inflight = { epoch, kind: c.kind, sentAt: this.now };
    const welcomeFor = c.kind === 'add' && out.welcome ? c.welcomeFor : [];
    this.sink.send({
      type: 'mls_commit',
      epoch,
      commit: toBase64(out.commit),
      welcome: welcomeFor.length > 0 && out.welcome ? toBase64(out.welcome) : null,
      welcome_for: welcomeFor,
    });
  }

  // --- verification view -------------------------------------------------------------------

  private verification(inGroup: boolean): { roster: RosterView[]; outsiders: OutsiderView[] } {
    if (!inGroup) return { roster: [], outsiders: [] };
    const ownLeaf = (this.member as MemberApi).leafIndex();
    const claimants = new Map<number, ParticipantLike[]>();
    for (const p of this.participants) {
      if (p.id === this.selfId || p.leaf === null) continue;
      const list = claimants.get(p.leaf) ?? [];
      list.push(p);
      claimants.set(p.leaf, list);
    }
    // A valid claim comes first: that participant is the leaf's, any other claimant is flagged.
    for (const e of this.roster) {
      const list = claimants.get(e.leafIndex);
      if (list) list.sort((a, b) => Number(validClaim(b, e)) - Number(validClaim(a, e)));
    }
    const roster: RosterView[] = this.roster.map((e) => {
      const self = e.leafIndex === ownLeaf;
      const p = self
        ? this.participants.find((q) => q.id === this.selfId)
        : claimants.get(e.leafIndex)?.[0];
      const flags: VerificationFlag[] = [];
      if (!p && !self) {
        const since = this.unclaimedSince.get(e.leafIndex);
        if (since !== undefined && this.now - since > UNCLAIMED_GRACE_MS) flags.push('not_announced');
      }
      const several = !self && (claimants.get(e.leafIndex)?.length ?? 0) > 1;
      const foreign = !self && p !== undefined && !validClaim(p, e);
      if (p && (p.display_name !== e.displayName || p.kind !== e.kind || several || foreign)) flags.push('mismatch');
      return {
        leaf: e.leafIndex,
        userId: e.userId,
        displayName: e.displayName,
        kind: e.kind,
        self,
        participantId: self ? this.selfId : (p?.id ?? null),
        serverDisplayName: p?.display_name ?? null,
        flags,
      };
    });
    const rosterLeaves = new Set(this.roster.map((e) => e.leafIndex));
    const outsiders: OutsiderView[] = [];
    for (const p of this.participants) {
      if (p.id === this.selfId) continue;
      const inRoster = p.leaf !== null && rosterLeaves.has(p.leaf);
      const first = p.leaf !== null ? claimants.get(p.leaf)?.[0] : undefined;
      if (inRoster && first?.id === p.id) continue;
      const flags: VerificationFlag[] = [];
      if (inRoster) flags.push('mismatch'); // a second claim on a member's leaf
      else {
        const since = this.outsiderSince.get(p.id);
        if (since !== undefined && this.now - since > GRACE_MS) flags.push('not_in_group');
      }
      outsiders.push({
        participantId: p.id,
        displayName: p.display_name,
        kind: p.kind,
        claimedLeaf: p.leaf,
        flags,
        awaitsAdmission: !inRoster && this.awaitsAdmission(p.id),
      });
    }
    return { roster, outsiders };
  }

  // --- helpers -----------------------------------------------------------------------------

  private warn(code: WarningCode, detail: string): void {
    const w: E2eeWarning = { code, detail, at: this.now };
    this.warnings.push(w);
    while (this.warnings.length > MAX_WARNINGS) this.warnings.shift();
    this.sink.notice({ type: 'warning', warning: w });
  }

  private emitStatus(): void {
    const s = this.status();
    // Discrepancy warnings carry `at: now`; compare without them so ticks stay quiet.
    const key = JSON.stringify({ ...s, warnings: s.warnings.map((w) => [w.code, w.detail]) });
    if (key === this.lastStatusJson) return;
    this.lastStatusJson = key;
    this.sink.status(s);
  }
}
