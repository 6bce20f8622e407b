import { useEffect, useState } from 'react';
import type { MeetingController } from '../../meeting/controller';
import { RECONNECT_DELAYS_MS } from '../../meeting/state';
import type { RoomState } from '../../meeting/state';
import { useT } from '../../i18n';

/**
 * Shown while the connection to the server is broken and the client gets back in by itself:
 * which attempt, how long until it starts, and a button to try at once.
 */
export function ReconnectBanner({ controller, reconnecting }: { controller: MeetingController; reconnecting: NonNullable<RoomState['reconnecting']> }) {
  const t = useT();
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, []);
  const seconds = Math.max(0, Math.ceil((reconnecting.retryAt - now) / 1000));
  return (
    <div className="toast reconnect-banner" role="status" aria-live="polite" data-testid="reconnecting-banner" data-attempt={reconnecting.attempt}>
      <div className="spinner small" aria-hidden="true" />
      <span>
        <strong>{t('reconnect.title')}</strong>{' '}
        {seconds > 0
          ? t('reconnect.in', { s: seconds, n: reconnecting.attempt, max: RECONNECT_DELAYS_MS.length })
          : t('reconnect.now', { n: reconnecting.attempt, max: RECONNECT_DELAYS_MS.length })}
      </span>
      {seconds > 0 && (
        <button type="button" className="btn secondary small" onClick={() => controller.retryNow()} data-testid="reconnect-now">
          {t('reconnect.retryNow')}
        </button>
      )}
    </div>
  );
}
