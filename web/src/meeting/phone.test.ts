import { describe, expect, it } from 'vitest';
import type { RosterView } from '../e2ee/types';
import { translate, type Lang, type Translate } from '../i18n';
import type { LobbyEntry, Participant } from '../signaling/protocol';
import {
  callerOf,
  dialInText,
  groupDigits,
  indicatorStateKey,
  isPhoneCaller,
  lobbyCaller,
  phoneBanner,
  phoneBannerText,
  phoneCallers,
  phoneLabel,
  phoneNumberText,
  shownSuffix,
} from './phone';

const tr = (lang: Lang): Translate => (key, vars) => translate(lang, key, vars);
const de = tr('de');
const en = tr('en');

const anna: Participant = {
  id: 'p1',
  display_name: 'Anna Amt',
  kind: 'staff',
  role: 'moderator',
  organiser: false,
  join_method: { method: 'staff_login' },
  audio_muted: false,
  muted_by_moderator: false,
  video_muted: false,
  screen_sharing: false,
  hand_raised_at: null,
  leaf: 0,
  phone: null,
};
const erikaPhone: Participant = {
  ...anna,
  id: 'p2',
  display_name: 'Erika Musterfrau',
  kind: 'phone_gateway',
  role: 'participant',
  organiser: false,
  join_method: { method: 'invitation', invitee: 'Erika Musterfrau', invited_by: 'Anna Amt' },
  video_muted: true,
  leaf: 1,
  phone: { number_suffix: '4567' },
};
const bob: Participant = {
  ...anna,
  id: 'p3',
  display_name: 'Bob Bürger',
  kind: 'invited_guest',
  role: 'participant',
  organiser: false,
  join_method: { method: 'invitation', invitee: 'Bob Bürger', invited_by: 'Anna Amt' },
  leaf: 2,
};

function member(leaf: number, p: Participant | null, over: Partial<RosterView> = {}): RosterView {
  return {
    leaf,
    userId: p?.kind === 'staff' ? 'user:1' : `invitation:${leaf}`,
    displayName: p?.display_name ?? 'Unbekannt',
    kind: p ? (p.kind as RosterView['kind']) : 'guest',
    self: false,
    participantId: p?.id ?? null,
    serverDisplayName: p?.display_name ?? null,
    flags: [],
    ...over,
  };
}

describe('who is a telephone caller', () => {
  it('the server kind alone, the roster kind alone, or both say so', () => {
    expect(isPhoneCaller(erikaPhone)).toBe(true);
    expect(isPhoneCaller(erikaPhone, member(1, erikaPhone))).toBe(true);
    // The server hides the caller (says invited guest): the credential still tells.
    expect(isPhoneCaller({ ...erikaPhone, kind: 'invited_guest', phone: null }, { kind: 'phone_gateway' })).toBe(true);
    // Only the roster knows the member (the server does not announce it).
    expect(isPhoneCaller(null, { kind: 'phone_gateway' })).toBe(true);
    // A phone leg without the kind still counts (the server's word, shown rather than hidden).
    expect(isPhoneCaller({ kind: 'invited_guest', phone: { number_suffix: null } })).toBe(true);
  });

  it('nobody else is one (negative control)', () => {
    expect(isPhoneCaller(anna, member(0, anna))).toBe(false);
    expect(isPhoneCaller(bob)).toBe(false);
    expect(isPhoneCaller(null, null)).toBe(false);
    expect(isPhoneCaller(undefined, { kind: 'guest' })).toBe(false);
    // An older server without the field: not a caller.
    expect(isPhoneCaller({ kind: 'guest' })).toBe(false);
  });

  it('lists each caller once, from the roster or from the server, never the own browser', () => {
    const roster = [member(0, anna, { self: true, participantId: 'p1' }), member(1, erikaPhone), member(2, bob)];
    const list = phoneCallers([anna, erikaPhone, bob], roster);
    expect(list).toEqual([
      { participantId: 'p2', leaf: 1, displayName: 'Erika Musterfrau', phone: { number_suffix: '4567' }, invitation: true },
    ]);

    // The server calls the caller an invited guest; the roster's credential says phone_gateway.
    const disguised = { ...erikaPhone, kind: 'invited_guest' as const, phone: null };
    const byRoster = phoneCallers([anna, disguised, bob], [member(1, disguised, { kind: 'phone_gateway' }), member(2, bob)]);
    expect(byRoster.map((c) => [c.participantId, c.leaf, c.phone])).toEqual([['p2', 1, null]]);

    // The server announces a caller that is not in the group (yet): listed from the server.
    const waiting = { ...erikaPhone, id: 'p9', leaf: null, phone: { number_suffix: null } };
    const both = phoneCallers([anna, erikaPhone, waiting], [member(1, erikaPhone)]);
    expect(both.map((c) => c.participantId)).toEqual(['p2', 'p9']);

    // A member nobody announces, with a phone credential: listed from the roster.
    const ghost = phoneCallers([anna], [member(5, null, { kind: 'phone_gateway', displayName: 'Erika Musterfrau' })]);
    expect(ghost).toEqual([{ participantId: null, leaf: 5, displayName: 'Erika Musterfrau', phone: null, invitation: true }]);

    // Before joining the group there is no roster: the server's list decides.
    expect(phoneCallers([anna, erikaPhone, bob], undefined).map((c) => c.participantId)).toEqual(['p2']);
    expect(phoneCallers([anna, bob], [member(2, bob)])).toEqual([]);
  });

  it('the credential name wins over the server name', () => {
    const renamed = { ...erikaPhone, display_name: 'Jemand anderes' };
    expect(callerOf(renamed, member(1, erikaPhone))?.displayName).toBe('Erika Musterfrau');
    expect(callerOf(renamed, null)?.displayName).toBe('Jemand anderes');
    expect(callerOf(anna, member(0, anna))).toBeNull();
  });

  it('a caller waiting in the lobby', () => {
    const e: LobbyEntry = { id: 'l1', display_name: 'Erika Musterfrau', kind: 'phone_gateway', invitation: 'Erika Musterfrau', reason: 'locked', phone: { number_suffix: '4567' } };
    expect(lobbyCaller(e)).toEqual({ participantId: 'l1', leaf: null, displayName: 'Erika Musterfrau', phone: { number_suffix: '4567' }, invitation: true });
    expect(lobbyCaller({ ...e, kind: 'guest', invitation: null, phone: null })).toBeNull();
  });
});

describe('the banner', () => {
  it('shows while at least one caller is present and goes with the last', () => {
    const one = phoneCallers([anna, erikaPhone], undefined);
    expect(phoneBanner(one)).toEqual({ visible: true, count: 1 });
    const three = phoneCallers(
      [anna, erikaPhone, { ...erikaPhone, id: 'p5', leaf: 5 }, { ...erikaPhone, id: 'p6', leaf: 6 }],
      undefined,
    );
    expect(phoneBanner(three)).toEqual({ visible: true, count: 3 });
    expect(phoneBanner(phoneCallers([anna, bob], undefined))).toEqual({ visible: false, count: 0 });
    expect(phoneBanner([])).toEqual({ visible: false, count: 0 });
  });

  it('says one or several, in both languages', () => {
    expect(phoneBannerText(de, 1)).toBe('Eine Person ist per Telefon verbunden. Diese Verbindung ist nicht Ende-zu-Ende-verschlüsselt.');
    expect(phoneBannerText(de, 3)).toBe('3 Personen sind per Telefon verbunden. Diese Verbindungen sind nicht Ende-zu-Ende-verschlüsselt.');
    expect(phoneBannerText(en, 1)).toBe('One person is connected by telephone. This connection is not end-to-end encrypted.');
    expect(phoneBannerText(en, 2)).toBe('2 people are connected by telephone. These connections are not end-to-end encrypted.');
    expect(phoneBannerText(de, 0)).toBeNull();
  });

  it('qualifies the encryption indicator without turning it into a warning', () => {
    expect(indicatorStateKey('active', 0)).toBe('e2ee.state.active');
    expect(indicatorStateKey('active', 2)).toBe('e2ee.state.activePhone');
    expect(indicatorStateKey('warning', 1)).toBe('e2ee.state.warning');
    expect(indicatorStateKey('failed', 1)).toBe('e2ee.state.failed');
    expect(indicatorStateKey('waiting', 1)).toBe('e2ee.state.waiting');
    expect(translate('de', indicatorStateKey('active', 1))).toBe('Ende-zu-Ende verschlüsselt, außer Telefon-Teilnehmende');
    expect(translate('en', indicatorStateKey('active', 1))).toBe('End-to-end encrypted, except telephone participants');
  });
});

describe('the caller label', () => {
  const erika = { displayName: 'Erika Musterfrau', phone: { number_suffix: '4567' }, invitation: true };

  it('names number suffix, invitee and gateway', () => {
    expect(phoneLabel(de, erika)).toBe('Telefon …4567 · Erika Musterfrau (Einladung) · über Gateway');
    expect(phoneLabel(en, erika)).toBe('Phone …4567 · Erika Musterfrau (invitation) · via gateway');
    expect(phoneLabel(de, { ...erika, invitation: false })).toBe('Telefon …4567 · Erika Musterfrau · über Gateway');
  });

  it('says when the number was withheld, and when the leg is not known', () => {
    const withheld = { ...erika, phone: { number_suffix: null } };
    expect(phoneLabel(de, withheld)).toBe('Telefon (Nummer unterdrückt) · Erika Musterfrau (Einladung) · über Gateway');
    expect(phoneLabel(en, withheld)).toBe('Phone (number withheld) · Erika Musterfrau (invitation) · via gateway');
    // Only the roster says it is a caller: no number known at all.
    expect(phoneNumberText(de, null)).toBe('Telefon');
    expect(phoneNumberText(en, null)).toBe('Phone');
  });

  it('never shows more than the last four digits', () => {
    expect(shownSuffix('4567')).toBe('4567');
    expect(shownSuffix('+49 30 1234-4567')).toBe('4567');
    expect(shownSuffix('67')).toBe('67');
    expect(shownSuffix('')).toBeNull();
    expect(shownSuffix('anonymous')).toBeNull();
    expect(phoneNumberText(de, { number_suffix: '+4930123454567' })).toBe('Telefon …4567');
    expect(phoneNumberText(de, { number_suffix: 'x' })).toBe('Telefon (Nummer unterdrückt)');
  });
});

describe('dial-in numbers', () => {
  it('groups digits for reading', () => {
    expect(groupDigits('12345678')).toBe('1234 5678');
    expect(groupDigits('123456')).toBe('123 456');
    expect(groupDigits('1234567')).toBe('1234 567');
    expect(groupDigits('123456789')).toBe('123 456 789');
    expect(groupDigits('1234567890')).toBe('1234 567 890');
    expect(groupDigits('1234')).toBe('1234');
    expect(groupDigits('1234 5678')).toBe('1234 5678');
    expect(groupDigits('')).toBe('');
  });

  it('writes the text for the invitee', () => {
    const dialIn = { meeting_number: '12345678', phone_number: '+49 30 9999 0000' };
    expect(dialInText(de, dialIn, '87654321')).toBe('Einwahl: +49 30 9999 0000, Besprechungsnummer 1234 5678, PIN 8765 4321');
    expect(dialInText(en, dialIn, '87654321')).toBe('Dial-in: +49 30 9999 0000, meeting number 1234 5678, PIN 8765 4321');
    expect(dialInText(de, { ...dialIn, phone_number: null }, '87654321')).toBe('Einwahl: Besprechungsnummer 1234 5678, PIN 8765 4321');
  });
});
