// Telephone callers in a meeting, as the page shows them: who counts as one, the banner that
// stays while any is present, how a caller is named, and the dial-in numbers in readable groups.
//
// A caller joins through the dial-in gateway, which is a member of the encrypted group of its own
// (credential kind `phone_gateway`); the leg between the telephone and the gateway is not end-to-end
// encrypted. So a participant counts as a caller when EITHER the server says so (participant kind
// `phone_gateway` or a phone leg) OR the MLS roster's credential does: neither side alone can hide
// a caller from the banner.
import type { RosterView } from '../e2ee/types';
import type { Translate } from '../i18n';
import type { LobbyEntry, Participant, PhoneLeg } from '../signaling/protocol';

/** The participant kind (server) and credential kind (identity CA) of a telephone caller. */
export const PHONE_KIND = 'phone_gateway';

/** Digits of a number suffix shown at most: the UI never shows more of a caller's number. */
export const SHOWN_DIGITS = 4;

type ServerSide = { kind: string; phone?: PhoneLeg | null } | null | undefined;
type RosterSide = { kind: string } | null | undefined;

/** Whether the server's participant (or lobby entry) or the roster member says: telephone caller. */
export function isPhoneCaller(server: ServerSide, member?: RosterSide): boolean {
  const byServer = !!server && (server.kind === PHONE_KIND || (server.phone !== undefined && server.phone !== null));
  return byServer || member?.kind === PHONE_KIND;
}

/** One telephone caller present in the meeting. */
export interface PhoneCaller {
  /** The server participant, if the server announces the caller. */
  participantId: string | null;
  /** The roster leaf, if the caller's gateway member is in the encrypted group. */
  leaf: number | null;
  /** The credential's name when in the roster (what the identity CA vouches for), else the server's. */
  displayName: string;
  /** The phone leg as the server reports it; null when only the roster says it is a caller. */
  phone: PhoneLeg | null;
  /**
   * Came with a personal invitation: the join method, a credential of `invitation:<id>`, or a
   * server participant of kind `phone_gateway` (a caller is always the invitee of the PIN they
   * typed, also when a moderator let them in from the lobby).
   */
  invitation: boolean;
}

function viaInvitation(p: Participant | null | undefined, userId: string | undefined): boolean {
  return p?.join_method?.method === 'invitation' || p?.kind === 'phone_gateway' || (userId?.startsWith('invitation:') ?? false);
}

/**
 * The caller behind a list row: a server participant and/or the roster member whose leaf it
 * claims. Null unless either says it is a telephone caller. The name is the credential's when
 * there is a member (what the identity CA vouches for), else the server's.
 */
export function callerOf(p: Participant | null | undefined, member: RosterView | null | undefined): PhoneCaller | null {
  if (member?.self || !isPhoneCaller(p, member)) return null;
  return {
    participantId: p?.id ?? member?.participantId ?? null,
    leaf: member ? member.leaf : (p?.leaf ?? null),
    displayName: member?.displayName ?? p?.display_name ?? '',
    phone: p?.phone ?? null,
    invitation: viaInvitation(p, member?.userId),
  };
}

/**
 * The telephone callers present: roster members that either side marks as a caller, then server
 * participants marked as callers that are not (yet) in the roster. Each caller once.
 */
export function phoneCallers(participants: Participant[], roster: RosterView[] | null | undefined): PhoneCaller[] {
  const byId = new Map(participants.map((p) => [p.id, p]));
  const out: PhoneCaller[] = [];
  const seen = new Set<string>();
  for (const m of roster ?? []) {
    const p = m.participantId !== null ? byId.get(m.participantId) : undefined;
    if (p) seen.add(p.id);
    const c = callerOf(p, m);
    if (c) out.push(c);
  }
  for (const p of participants) {
    if (seen.has(p.id)) continue;
    const c = callerOf(p, null);
    if (c) out.push(c);
  }
  return out;
}

/** The caller of a lobby entry (not in any group yet: the server's word only), or null. */
export function lobbyCaller(e: LobbyEntry): PhoneCaller | null {
  if (!isPhoneCaller(e)) return null;
  return { participantId: e.id, leaf: null, displayName: e.display_name, phone: e.phone ?? null, invitation: e.invitation !== null };
}

/** The banner about unencrypted phone legs: shown while at least one caller is present. */
export interface PhoneBannerState {
  visible: boolean;
  count: number;
}

export function phoneBanner(callers: PhoneCaller[]): PhoneBannerState {
  return { visible: callers.length > 0, count: callers.length };
}

/** The banner's text, singular or plural; null when no caller is present. */
export function phoneBannerText(t: Translate, count: number): string | null {
  if (count <= 0) return null;
  return count === 1 ? t('phone.banner.one') : t('phone.banner.many', { n: count });
}

/**
 * The encryption indicator's text key: with callers present an active group reads "end-to-end
 * encrypted, except telephone participants". Not a warning (the phone leg is shown as what it
 * is); the other states, red ones included, stay as they are.
 */
export function indicatorStateKey(
  level: 'active' | 'waiting' | 'warning' | 'failed',
  phoneCount: number,
): 'e2ee.state.activePhone' | `e2ee.state.${'active' | 'waiting' | 'warning' | 'failed'}` {
  return level === 'active' && phoneCount > 0 ? 'e2ee.state.activePhone' : `e2ee.state.${level}`;
}

/** At most the last [`SHOWN_DIGITS`] digits of a suffix; null when none is left. */
export function shownSuffix(suffix: string | null | undefined): string | null {
  const digits = (suffix ?? '').replace(/\D/g, '');
  return digits ? digits.slice(-SHOWN_DIGITS) : null;
}

/** "Telefon …4567", "Telefon (Nummer unterdrückt)", or "Telefon" when the leg is not known. */
export function phoneNumberText(t: Translate, phone: PhoneLeg | null): string {
  if (!phone) return t('phone.number.unknown');
  const suffix = shownSuffix(phone.number_suffix);
  return suffix ? t('phone.number', { suffix }) : t('phone.number.withheld');
}

/** "Telefon …4567 · Erika Musterfrau (Einladung) · über Gateway". */
export function phoneLabel(t: Translate, c: Pick<PhoneCaller, 'displayName' | 'phone' | 'invitation'>): string {
  const number = phoneNumberText(t, c.phone);
  return c.invitation ? t('phone.label.invitation', { number, name: c.displayName }) : t('phone.label', { number, name: c.displayName });
}

/**
 * Digits in groups for reading and typing: "1234 5678", "123 456", "1234 567"; groups of at most
 * four, the longer ones first. Anything but digits is dropped.
 */
export function groupDigits(value: string): string {
  const digits = value.replace(/\D/g, '');
  const groups = Math.ceil(digits.length / 4);
  if (groups <= 1) return digits;
  const base = Math.floor(digits.length / groups);
  let longer = digits.length % groups;
  const out: string[] = [];
  let at = 0;
  for (let g = 0; g < groups; g++) {
    const len = base + (longer > 0 ? 1 : 0);
    if (longer > 0) longer -= 1;
    out.push(digits.slice(at, at + len));
    at += len;
  }
  return out.join(' ');
}

/** The text an organiser sends an invitee: "Einwahl: +49 …, Besprechungsnummer 1234 5678, PIN 8765 4321". */
export function dialInText(t: Translate, dialIn: { meeting_number: string; phone_number: string | null }, pin: string): string {
  const vars = { number: groupDigits(dialIn.meeting_number), pin: groupDigits(pin) };
  return dialIn.phone_number
    ? t('dialin.text', { ...vars, phone: dialIn.phone_number })
    : t('dialin.textNoPhone', vars);
}
