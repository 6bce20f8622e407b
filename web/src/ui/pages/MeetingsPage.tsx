import { useEffect, useState } from 'react';
import { Link } from 'react-router-dom';
import { api, type Meeting } from '../../signaling/api';
import { useI18n } from '../../i18n';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';
import { PhoneIcon } from '../icons';

export function ProfileBadge({ profile }: { profile: 'strict' | 'internal' }) {
  const { t } = useI18n();
  return <span className={`badge profile-${profile}`}>{t(profile === 'strict' ? 'profile.strict' : 'profile.internal')}</span>;
}

export function MeetingsPage() {
  const { t, dateTime } = useI18n();
  const [meetings, setMeetings] = useState<Meeting[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    api.meetings().then(setMeetings, (e) => setError(describeError(t, e)));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  return (
    <Shell>
      <div className="page-head">
        <h1>{t('meetings.title')}</h1>
        <Link className="btn primary" to="/meetings/new" data-testid="new-meeting">
          {t('meetings.new')}
        </Link>
      </div>
      <ErrorNote text={error} />
      {meetings === null && !error && <p className="muted">{t('common.loading')}</p>}
      {meetings?.length === 0 && <p className="card empty">{t('meetings.empty')}</p>}
      {meetings && meetings.length > 0 && (
        <ul className="meeting-list" data-testid="meeting-list">
          {meetings.map((m) => (
            <li key={String(m.id)} className={`card meeting-row${m.ended ? ' ended' : ''}`} data-testid="meeting-item">
              <div className="meeting-main">
                <Link to={`/meetings/${m.id}`} className="meeting-title">
                  {m.title}
                </Link>
                <div className="meta">
                  <span>{m.starts_at ? dateTime(m.starts_at) : t('meetings.noTime')}</span>
                  <span>{t('meetings.organiser', { name: m.organiser.display_name })}</span>
                  <ProfileBadge profile={m.profile} />
                  {m.dial_in && (
                    <span
                      className={`badge dial-in-badge${m.dial_in.allowed ? '' : ' refused'}`}
                      title={m.dial_in.allowed ? t('detail.dialInAllowed') : t('detail.dialInRefused', { profile: t(m.profile === 'strict' ? 'profile.strict' : 'profile.internal') })}
                      data-testid="meeting-dial-in-badge"
                      data-allowed={String(m.dial_in.allowed)}
                    >
                      <PhoneIcon width={12} height={12} /> {t('meetings.dialIn')}
                    </span>
                  )}
                  {m.ended && <span className="badge muted-badge">{t('meetings.ended')}</span>}
                </div>
              </div>
              <div className="row-actions">
                <Link className="btn secondary small" to={`/meetings/${m.id}`}>
                  {t('meetings.open')}
                </Link>
                {!m.ended && (
                  <Link className="btn primary small" to={`/m/${m.id}`}>
                    {t('meetings.join')}
                  </Link>
                )}
              </div>
            </li>
          ))}
        </ul>
      )}
    </Shell>
  );
}
