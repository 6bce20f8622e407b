// Telephone callers in the meeting room: the phone badge, the banner that stays while anyone is
// connected by telephone, and the dial-in section of the security panel. Who counts as a caller
// and how a caller is named is decided in meeting/phone.ts.
import { phoneBannerText, phoneLabel, type PhoneCaller } from '../../meeting/phone';
import { useT } from '../../i18n';
import { PhoneIcon } from '../icons';

/** The phone badge next to a caller's label (in the list, the lobby, tiles and hands). */
export function PhoneBadge({ size = 14 }: { size?: number }) {
  const t = useT();
  return (
    <span className="phone-badge" data-testid="phone-badge" role="img" aria-label={t('phone.badge')} title={t('phone.badgeHint')}>
      <PhoneIcon width={size} height={size} />
    </span>
  );
}

/**
 * "Eine Person ist per Telefon verbunden. Diese Verbindung ist nicht Ende-zu-Ende-verschlüsselt."
 * Shown for as long as any caller is present; it cannot be dismissed. The button opens the
 * security panel.
 */
export function PhoneBanner({ count, onInfo }: { count: number; onInfo(): void }) {
  const t = useT();
  const text = phoneBannerText(t, count);
  if (!text) return null;
  return (
    <div className="phone-banner" role="status" aria-live="polite" data-testid="phone-banner" data-count={count}>
      <PhoneIcon width={18} height={18} />
      <span data-testid="phone-banner-text">{text}</span>
      <button type="button" className="btn secondary tiny" onClick={onInfo} data-testid="phone-banner-info">
        {t('phone.banner.info')}
      </button>
    </div>
  );
}

/** A caller's label with the badge: "☎ Telefon …4567 · Erika Musterfrau (Einladung) · über Gateway". */
export function CallerLabel({ caller, as: Tag = 'strong' }: { caller: PhoneCaller; as?: 'strong' | 'span' }) {
  const t = useT();
  const label = phoneLabel(t, caller);
  return (
    <>
      <PhoneBadge />
      <Tag className="phone-label" data-testid="phone-label" title={label}>
        {label}
      </Tag>
    </>
  );
}

/** The security panel's dial-in section: whether calls are possible, what that means, who calls. */
export function DialInSection({ dialIn, callers }: { dialIn: boolean; callers: PhoneCaller[] }) {
  const t = useT();
  return (
    <section className="panel-section" data-testid="dial-in-section" data-dial-in={dialIn ? 'true' : 'false'}>
      <h4>
        <PhoneIcon width={16} height={16} /> {t('security.dialIn')}
      </h4>
      {dialIn ? (
        <>
          <p data-testid="dial-in-allowed">{t('security.dialIn.allowed')}</p>
          <p>{t('security.dialIn.gateway')}</p>
          <p className="notice info small">{t('security.dialIn.leg')}</p>
        </>
      ) : (
        <p data-testid="dial-in-off">{t('security.dialIn.off')}</p>
      )}
      {/* Callers are listed whenever present, also if the meeting no longer allows dial-in. */}
      {(dialIn || callers.length > 0) &&
        (callers.length === 0 ? (
          <p className="small muted" data-testid="phone-caller-none">
            {t('security.dialIn.noCallers')}
          </p>
        ) : (
          <>
            <h4>{t('security.dialIn.callers', { n: callers.length })}</h4>
            <ul className="phone-caller-list" data-testid="phone-caller-list">
              {callers.map((c) => (
                <li
                  key={c.leaf !== null ? `leaf-${c.leaf}` : `p-${c.participantId}`}
                  className="who-line"
                  data-testid="phone-caller"
                  data-participant-id={c.participantId ?? ''}
                  data-leaf={c.leaf ?? ''}
                  data-name={c.displayName}
                >
                  <span className="who-main">
                    <CallerLabel caller={c} as="span" />
                  </span>
                </li>
              ))}
            </ul>
          </>
        ))}
    </section>
  );
}
