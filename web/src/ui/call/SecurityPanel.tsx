import type { MeetingInfo, Participant } from '../../signaling/protocol';
import type { MeetingController } from '../../meeting/controller';
import type { E2eeStatus } from '../../e2ee/types';
import { useT } from '../../i18n';
import { LockIcon, ShieldIcon, UnlockIcon } from '../icons';
import { E2eeSection } from './E2ee';
import type { PhoneCaller } from '../../meeting/phone';
import { DialInSection } from './Phone';

export function SecurityPanel({
  meeting,
  participants,
  status,
  callers,
  controller,
}: {
  meeting: MeetingInfo;
  participants: Participant[];
  status: E2eeStatus | null;
  /** The telephone callers present (meeting/phone.ts `phoneCallers`). */
  callers: PhoneCaller[];
  controller: MeetingController;
}) {
  const t = useT();
  const secure = window.location.protocol === 'https:';
  const moderators = participants.filter((p) => p.role === 'moderator').map((p) => p.display_name);
  return (
    <div className="security" data-testid="security-panel">
      <E2eeSection status={status} phoneCount={callers.length} controller={controller} />
      {/* `dial_in` may be missing from an older server: no dial-in then. */}
      <DialInSection dialIn={meeting.dial_in === true} callers={callers} />
      <section className="panel-section">
        <h3>
          <ShieldIcon width={18} height={18} /> {t('security.profile', { profile: t(meeting.profile === 'strict' ? 'profile.strict' : 'profile.internal') })}
        </h3>
        <h4>{t('security.whoCanJoin')}</h4>
        <p>{t(meeting.profile === 'strict' ? 'profile.strict.explain' : 'profile.internal.explain')}</p>
        <p className={`notice small ${meeting.locked ? 'warn' : 'info'}`}>
          {meeting.locked ? <LockIcon width={16} height={16} /> : <UnlockIcon width={16} height={16} />} {meeting.locked ? t('security.locked') : t('security.unlocked')}
        </p>
        {moderators.length > 0 && <p className="small muted">{t('security.moderators', { names: moderators.join(', ') })}</p>}
      </section>
      <section className="panel-section">
        <h4>{t('security.transport')}</h4>
        <p>{t('security.transportText')}</p>
        <p className={secure ? '' : 'notice warn small'}>{secure ? t('security.signaling') : t('security.signalingPlain')}</p>
      </section>
      <section className="panel-section">
        <p className="small">{t('security.list')}</p>
      </section>
    </div>
  );
}
