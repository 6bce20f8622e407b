// The list of the meeting room's keyboard shortcuts (opened with "?" or the keyboard button in
// the room's header), with the switch that turns them off (WCAG 2.1.4). A modal <dialog>: the
// browser keeps the focus inside, closes it with Escape and gives the focus back.
import { useEffect, useRef } from 'react';
import { useT, type StringKey } from '../../i18n';
import { SHORTCUTS } from './shortcuts';

export function ShortcutsDialog({ open, onClose, enabled, onEnabled }: { open: boolean; onClose(): void; enabled: boolean; onEnabled(on: boolean): void }) {
  const t = useT();
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = dialog.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={dialog} className="shortcuts-dialog" aria-labelledby="shortcuts-title" onClose={onClose} data-testid="shortcuts-dialog">
      <h2 id="shortcuts-title">{t('shortcuts.title')}</h2>
      <p className="muted">{t('shortcuts.intro')}</p>
      <table className="shortcuts-table">
        <caption className="sr-only">{t('shortcuts.title')}</caption>
        <thead className="sr-only">
          <tr>
            <th scope="col">{t('shortcuts.key')}</th>
            <th scope="col">{t('shortcuts.does')}</th>
          </tr>
        </thead>
        <tbody>
          {SHORTCUTS.map((s) => (
            <tr key={s.action}>
              <td>
                <kbd>{s.key}</kbd>
              </td>
              <td>{t(`shortcuts.action.${s.action}` as StringKey)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <label className="switch-row">
        <span className="switch-label">{t('shortcuts.enabled')}</span>
        <input type="checkbox" role="switch" className="switch" checked={enabled} onChange={(e) => onEnabled(e.target.checked)} data-testid="shortcuts-enabled" />
      </label>
      <p className="muted small">{t('shortcuts.enabledHint')}</p>
      <div className="actions">
        <button type="button" className="btn primary" onClick={onClose} data-testid="shortcuts-close">
          {t('shortcuts.close')}
        </button>
      </div>
    </dialog>
  );
}
