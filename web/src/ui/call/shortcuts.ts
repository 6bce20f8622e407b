// The meeting room's keyboard shortcuts: single keys, as other conferencing products have them
// (M microphone, V camera, H hand, C chat, P participants, E encryption, ? this list). WCAG 2.1
// success criterion 2.1.4 (character key shortcuts) allows single-key shortcuts that can be
// switched off: the shortcuts dialog does that, remembered in this browser. They never act
// while the focus is in a text field (typing "m" in the chat mutes nobody), with Ctrl, Alt
// (AltGr) or Meta held, or for a key held down.

export type ShortcutAction = 'mic' | 'camera' | 'hand' | 'chat' | 'people' | 'security' | 'help';

/** Every shortcut: the key (as `KeyboardEvent.key`, letters upper case) and what it does. */
export const SHORTCUTS: readonly { key: string; action: ShortcutAction }[] = [
  { key: 'M', action: 'mic' },
  { key: 'V', action: 'camera' },
  { key: 'H', action: 'hand' },
  { key: 'C', action: 'chat' },
  { key: 'P', action: 'people' },
  { key: 'E', action: 'security' },
  { key: '?', action: 'help' },
];

/** The key of `action`, for `aria-keyshortcuts` and the buttons' tooltips. */
export function shortcutKey(action: ShortcutAction): string {
  return SHORTCUTS.find((s) => s.action === action)?.key ?? '';
}

/** What of a `KeyboardEvent` decides whether it is a shortcut. */
export interface KeyPress {
  key: string;
  ctrlKey: boolean;
  altKey: boolean;
  metaKey: boolean;
  repeat: boolean;
  isComposing?: boolean;
  target: EventTarget | null;
}

const TEXT_INPUTS = new Set(['text', 'search', 'email', 'password', 'url', 'tel', 'number', 'date', 'datetime-local', 'time', 'month', 'week']);

/** Whether typing into `target` writes text (a text field, a text area, a select list, an
 * editable element): letters typed there are text, not shortcuts. */
export function takesText(target: EventTarget | null): boolean {
  const el = target as { tagName?: string; type?: string; isContentEditable?: boolean } | null;
  if (!el || typeof el.tagName !== 'string') return false;
  if (el.isContentEditable) return true;
  const tag = el.tagName.toUpperCase();
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  return tag === 'INPUT' && TEXT_INPUTS.has((el.type ?? 'text').toLowerCase());
}

/** The action of a key press, or null if it is none (or shortcuts are switched off). */
export function shortcutAction(e: KeyPress, enabled: boolean): ShortcutAction | null {
  if (!enabled || e.ctrlKey || e.altKey || e.metaKey || e.repeat || e.isComposing) return null;
  if (takesText(e.target)) return null;
  const key = e.key.length === 1 ? e.key.toUpperCase() : e.key;
  return SHORTCUTS.find((s) => s.key === key)?.action ?? null;
}

const STORAGE_KEY = 'klausur.shortcuts';

/** Whether shortcuts are on in this browser (they are unless switched off). */
export function shortcutsEnabled(storage: Pick<Storage, 'getItem'> | null = safeStorage()): boolean {
  try {
    return storage?.getItem(STORAGE_KEY) !== 'off';
  } catch {
    return true;
  }
}

/** Switches shortcuts on or off in this browser. */
export function setShortcutsEnabled(on: boolean, storage: Pick<Storage, 'setItem'> | null = safeStorage()): void {
  try {
    storage?.setItem(STORAGE_KEY, on ? 'on' : 'off');
  } catch {
    // Storage refused (private mode): the choice lasts for this page only.
  }
}

function safeStorage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}
