import { useEffect, useSyncExternalStore } from 'react';
import { Link, useLocation } from 'react-router-dom';
import { useAuth } from '../auth';
import type { MeetingController } from '../../meeting/controller';
import type { EndCause } from '../../meeting/state';
import { useT, type StringKey } from '../../i18n';
import { Shell } from '../Shell';
import { Room } from './Room';
import { ReconnectBanner } from './Reconnecting';
import { MaintenanceBanner } from './Maintenance';

export function useCall(c: MeetingController) {
  return useSyncExternalStore(c.subscribe, c.getSnapshot);
}

export function CallView({ controller, isStaff, onRejoin }: { controller: MeetingController; isStaff: boolean; onRejoin(): void }) {
  const snap = useCall(controller);
  const t = useT();
  const { room } = snap;

  switch (room.phase) {
    case 'connecting':
      return (
        <Shell>
          <section className="card narrow center" data-testid="connecting-page" aria-busy="true">
            <div className="spinner" aria-hidden="true" />
            <p>{t('connecting')}</p>
          </section>
        </Shell>
      );
    case 'lobby':
      return (
        <Shell>
          {room.reconnecting && <ReconnectBanner controller={controller} reconnecting={room.reconnecting} />}
          {room.maintenanceBy !== null && (
            <div className="lobby-banner">
              <MaintenanceBanner by={room.maintenanceBy} />
            </div>
          )}
          <section className="card narrow center lobby-card" data-testid="lobby-page" aria-live="polite">
            <div className="pulse" aria-hidden="true">
              <span />
            </div>
            <h1>{t('lobby.title')}</h1>
            <p>{t('lobby.text', { title: room.meetingTitle ?? '' })}</p>
            <p className="muted small">{t('lobby.privacy')}</p>
            <button type="button" className="btn secondary" onClick={() => controller.leave()} data-testid="lobby-leave">
              {t('lobby.leave')}
            </button>
          </section>
        </Shell>
      );
    case 'joined':
      return <Room controller={controller} snap={snap} />;
    case 'ended':
      return <Ended cause={room.ended?.cause ?? 'left'} by={room.ended?.by ?? null} title={room.meetingTitle} isStaff={isStaff} onRejoin={onRejoin} />;
  }
}

function endedText(t: ReturnType<typeof useT>, cause: EndCause, by: string | null): string {
  if (by && (cause === 'ended_by_moderator' || cause === 'removed' || cause === 'denied')) {
    return t(`ended.${cause}.by` as StringKey, { by });
  }
  return t(`ended.${cause}` as StringKey);
}

function Ended({ cause, by, title, isStaff, onRejoin }: { cause: EndCause; by: string | null; title: string | null; isStaff: boolean; onRejoin(): void }) {
  const t = useT();
  const { setSession } = useAuth();
  const location = useLocation();
  // The server ended this browser's sign-in: forget it here too, so that signing in again asks
  // for the password instead of trusting the ended session.
  useEffect(() => {
    if (cause === 'signed_out') setSession(null);
  }, [cause, setSession]);
  const signIn = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
  const canRejoin = cause === 'left' || cause === 'connection_lost' || cause === 'server_shutdown' || cause === 'join_failed' || cause === 'replaced' || cause === 'lobby_full';
  return (
    <Shell>
      <section className="card narrow center ended-card" data-testid="ended-page" data-reason={cause}>
        <h1>{t('ended.title')}</h1>
        {title && <p className="muted">{title}</p>}
        <p className="ended-reason" data-testid="ended-reason">
          {endedText(t, cause, by)}
        </p>
        <div className="form-actions center">
          {cause === 'signed_out' && (
            <Link className="btn primary" to={signIn} data-testid="sign-in-again">
              {t('ended.signIn')}
            </Link>
          )}
          {canRejoin && (
            <button type="button" className="btn primary" onClick={onRejoin} data-testid="rejoin-button">
              {t('ended.rejoin')}
            </button>
          )}
          {isStaff && cause !== 'signed_out' && (
            <Link className="btn secondary" to="/meetings">
              {t('ended.toMeetings')}
            </Link>
          )}
        </div>
        {!isStaff && cause !== 'signed_out' && <p className="hint">{t('ended.closeHint')}</p>}
      </section>
    </Shell>
  );
}
