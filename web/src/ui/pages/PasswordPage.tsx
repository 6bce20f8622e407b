import { useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { api, ApiError } from '../../signaling/api';
import { useT } from '../../i18n';
import { useAuth } from '../auth';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';

export function PasswordPage() {
  const t = useT();
  const { session, refresh } = useAuth();
  const navigate = useNavigate();
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [repeat, setRepeat] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);
  const forced = session?.user.must_change_password ?? false;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (next.length < 12) return setError(t('password.tooShort'));
    if (next !== repeat) return setError(t('password.mismatch'));
    if (next === current) return setError(t('password.sameAsOld'));
    setBusy(true);
    try {
      await api.changePassword(current, next);
      await refresh();
      setDone(true);
      navigate('/meetings', { replace: true });
    } catch (err) {
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) setError(t('password.wrongCurrent'));
      else if (err instanceof ApiError && err.status === 400) setError(err.message || t('password.tooShort'));
      else setError(describeError(t, err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Shell>
      <section className="card narrow auth-card" aria-labelledby="pw-title" data-testid="password-page">
        <h1 id="pw-title">{t('password.title')}</h1>
        {forced && <p className="notice info">{t('password.forced')}</p>}
        <form onSubmit={submit} className="form" noValidate>
          <label className="field">
            <span>{t('password.current')}</span>
            <input type="password" autoComplete="current-password" value={current} onChange={(e) => setCurrent(e.target.value)} data-testid="password-current" />
          </label>
          <label className="field">
            <span>{t('password.new')}</span>
            <input type="password" autoComplete="new-password" value={next} onChange={(e) => setNext(e.target.value)} minLength={12} aria-describedby="pw-hint" data-testid="password-new" />
          </label>
          <label className="field">
            <span>{t('password.repeat')}</span>
            <input type="password" autoComplete="new-password" value={repeat} onChange={(e) => setRepeat(e.target.value)} data-testid="password-repeat" />
          </label>
          <p id="pw-hint" className="hint">{t('password.hint')}</p>
          <ErrorNote text={error} />
          {done && <p className="notice ok">{t('password.done')}</p>}
          <button className="btn primary block" type="submit" disabled={busy} data-testid="password-submit">
            {t('password.submit')}
          </button>
        </form>
      </section>
    </Shell>
  );
}
