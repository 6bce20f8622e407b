// The notice that the server running this meeting is being taken out of service (the server's
// `maintenance` message, sent when its operator stops it and lets meetings finish first): by
// when the meeting is interrupted at the latest if it goes on. It stays until the client is
// back in after the interruption, or the meeting ends.
import { useI18n } from '../../i18n';

export function MaintenanceBanner({ by }: { by: number }) {
  const { t, lang } = useI18n();
  const time = new Intl.DateTimeFormat(lang === 'de' ? 'de-DE' : 'en-GB', { hour: '2-digit', minute: '2-digit' }).format(by);
  return (
    <div className="maintenance-banner" role="status" aria-live="polite" data-testid="maintenance-banner" data-by={by}>
      <span>{t('maintenance.banner', { time })}</span>
    </div>
  );
}
