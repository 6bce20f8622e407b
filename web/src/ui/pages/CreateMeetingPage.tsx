import { useState, type FormEvent } from 'react';
import { Link, useNavigate } from 'react-router-dom';
import { api, type Profile } from '../../signaling/api';
import { useT } from '../../i18n';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';
import { PhoneIcon } from '../icons';

export function CreateMeetingPage() {
  const t = useT();
  const navigate = useNavigate();
  const [title, setTitle] = useState('');
  const [startsAt, setStartsAt] = useState('');
  const [profile, setProfile] = useState<Profile>('strict');
  const [dialIn, setDialIn] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (!title.trim()) return setError(t('create.titleRequired'));
    setBusy(true);
    try {
      const iso = startsAt ? new Date(startsAt).toISOString() : null;
      const m = await api.createMeeting({ title: title.trim(), starts_at: iso, profile, ...(dialIn ? { dial_in: true } : {}) });
      navigate(`/meetings/${m.id}`);
    } catch (err) {
      setError(describeError(t, err));
      setBusy(false);
    }
  }

  return (
    <Shell>
      <section className="card medium" aria-labelledby="create-title">
        <h1 id="create-title">{t('create.title')}</h1>
        <form onSubmit={submit} className="form" noValidate>
          <label className="field">
            <span>{t('create.meetingTitle')}</span>
            <input
              value={title}
              onChange={(e) => setTitle(e.target.value)}
              placeholder={t('create.meetingTitlePlaceholder')}
              maxLength={200}
              autoFocus
              data-testid="meeting-title-input"
            />
          </label>
          <label className="field">
            <span>{t('create.startsAt')}</span>
            <input type="datetime-local" value={startsAt} onChange={(e) => setStartsAt(e.target.value)} data-testid="meeting-start-input" />
          </label>
          <fieldset className="field profile-choice">
            <legend>{t('create.profile')}</legend>
            {(['strict', 'internal'] as Profile[]).map((p) => (
              <label key={p} className={`choice${profile === p ? ' selected' : ''}`}>
                <input
                  type="radio"
                  name="profile"
                  value={p}
                  checked={profile === p}
                  onChange={() => setProfile(p)}
                  data-testid={`profile-${p}`}
                />
                <span>
                  <strong>{t(p === 'strict' ? 'profile.strict' : 'profile.internal')}</strong>
                  <span className="choice-text">{t(p === 'strict' ? 'profile.strict.explain' : 'profile.internal.explain')}</span>
                </span>
              </label>
            ))}
          </fieldset>
          <div className="field dial-in-choice">
            <label className={`choice${dialIn ? ' selected' : ''}`}>
              <input type="checkbox" checked={dialIn} onChange={(e) => setDialIn(e.target.checked)} aria-describedby="dial-in-hint" data-testid="dial-in-checkbox" />
              <span>
                <strong className="with-icon">
                  <PhoneIcon width={18} height={18} /> {t('create.dialIn')}
                </strong>
                <span className="choice-text" id="dial-in-hint">
                  {t('create.dialInHint')}
                </span>
              </span>
            </label>
            {dialIn && profile === 'strict' && (
              <p className="notice warn small" data-testid="dial-in-strict-note">
                {t('create.dialInStrict')}
              </p>
            )}
          </div>
          <ErrorNote text={error} />
          <div className="form-actions">
            <Link className="btn ghost" to="/meetings">
              {t('common.cancel')}
            </Link>
            <button className="btn primary" type="submit" disabled={busy} data-testid="create-meeting-submit">
              {t('create.submit')}
            </button>
          </div>
        </form>
      </section>
    </Shell>
  );
}
