import { describe, expect, it } from 'vitest';
import { setShortcutsEnabled, shortcutAction, shortcutKey, shortcutsEnabled, takesText, type KeyPress } from './shortcuts';

const body = { tagName: 'BODY' };
const press = (key: string, more: Partial<KeyPress> = {}): KeyPress => ({
  key,
  ctrlKey: false,
  altKey: false,
  metaKey: false,
  repeat: false,
  target: body as unknown as EventTarget,
  ...more,
});

describe('meeting room shortcuts', () => {
  it('maps single keys, either case, to their actions', () => {
    expect(shortcutAction(press('m'), true)).toBe('mic');
    expect(shortcutAction(press('M'), true)).toBe('mic');
    expect(shortcutAction(press('v'), true)).toBe('camera');
    expect(shortcutAction(press('h'), true)).toBe('hand');
    expect(shortcutAction(press('c'), true)).toBe('chat');
    expect(shortcutAction(press('p'), true)).toBe('people');
    expect(shortcutAction(press('e'), true)).toBe('security');
    expect(shortcutAction(press('?'), true)).toBe('help');
    expect(shortcutAction(press('x'), true)).toBeNull();
    expect(shortcutAction(press('Enter'), true)).toBeNull();
    expect(shortcutKey('mic')).toBe('M');
  });

  it('does nothing when switched off, with modifiers (AltGr is Ctrl+Alt), held down or while composing', () => {
    expect(shortcutAction(press('m'), false)).toBeNull();
    expect(shortcutAction(press('?'), false)).toBeNull();
    expect(shortcutAction(press('m', { ctrlKey: true }), true)).toBeNull();
    expect(shortcutAction(press('m', { altKey: true }), true)).toBeNull();
    expect(shortcutAction(press('m', { ctrlKey: true, altKey: true }), true)).toBeNull();
    expect(shortcutAction(press('m', { metaKey: true }), true)).toBeNull();
    expect(shortcutAction(press('m', { repeat: true }), true)).toBeNull();
    expect(shortcutAction(press('m', { isComposing: true }), true)).toBeNull();
  });

  it('leaves letters typed into text fields alone, but not those on buttons and checkboxes', () => {
    const on = (el: object) => shortcutAction(press('m', { target: el as EventTarget }), true);
    expect(on({ tagName: 'TEXTAREA' })).toBeNull();
    expect(on({ tagName: 'INPUT', type: 'text' })).toBeNull();
    expect(on({ tagName: 'INPUT', type: 'search' })).toBeNull();
    expect(on({ tagName: 'SELECT' })).toBeNull();
    expect(on({ tagName: 'DIV', isContentEditable: true })).toBeNull();
    expect(on({ tagName: 'BUTTON' })).toBe('mic');
    expect(on({ tagName: 'INPUT', type: 'checkbox' })).toBe('mic');
    expect(takesText(null)).toBe(false);
  });

  it('remembers being switched off in the browser, and is on by default or without storage', () => {
    const stored = new Map<string, string>();
    const storage = { getItem: (k: string) => stored.get(k) ?? null, setItem: (k: string, v: string) => void stored.set(k, v) };
    expect(shortcutsEnabled(storage)).toBe(true);
    setShortcutsEnabled(false, storage);
    expect(shortcutsEnabled(storage)).toBe(false);
    setShortcutsEnabled(true, storage);
    expect(shortcutsEnabled(storage)).toBe(true);
    expect(shortcutsEnabled(null)).toBe(true);
    const refusing = {
      getItem: () => {
        throw new Error('denied');
      },
    };
    expect(shortcutsEnabled(refusing)).toBe(true);
  });
});
