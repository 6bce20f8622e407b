import { useState, type FormEvent } from 'react';
import { Navigate, useNavigate, useSearchParams } from 'react-router-dom';
import { api, ApiError } from '../../signaling/api';
import { useT } from '../../i18n';
import { useAuth } from '../auth';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';

function safeNext(next: string | null): string {
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/meetings';
}

export function LoginPage() {
  const t = useT();
  const { session, setSession } = useAuth();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const next = safeNext(params.get('next'));

  if (session && !busy) return <Navigate to={session.user.must_change_password ? '/password' : next} replace />;

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const s = await api.login(username.trim(), password);
      setSession(s);
      navigate(s.user.must_change_password ? '/password' : next, { replace: true });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setError(t('login.invalid'));
      else if (err instanceof ApiError && err.status === 429) setError(t('login.rateLimited'));
      else setError(describeError(t, err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Shell>
      <section className="card narrow auth-card" aria-labelledby="login-title">
        <h1 id="login-title">{t('login.title')}</h1>
        <p className="muted">{t('login.intro')}</p>
        <form onSubmit={submit} className="form" noValidate>
          <label className="field">
            <span>{t('login.username')}</span>
            <input
              name="username"
              autoComplete="username"
              value={username}
              onChange={(e) => setUsername(e.target.value)}
              required
              autoFocus
              data-testid="login-username"
            />
          </label>
          <label className="field">
            <span>{t('login.password')}</span>
            <input
              name="password"
              type="password"
              autoComplete="current-password"
              value={password}
              onChange={(e) => setPassword(e.target.value)}
              required
              data-testid="login-password"
            />
          </label>
          <ErrorNote text={error} />
          <button className="btn primary block" type="submit" disabled={busy || !username || !password} data-testid="login-submit">
            {t('login.submit')}
          </button>
        </form>
        <p className="hint">{t('login.guestHint')}</p>
      </section>
    </Shell>
  );
}
