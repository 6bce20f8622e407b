import type { ReactNode } from 'react';
import { Link, NavLink, useNavigate } from 'react-router-dom';
import { useI18n, type Lang } from '../i18n';
import { useAuth } from './auth';

export function LangSwitch({ dark = false }: { dark?: boolean }) {
  const { lang, setLang, t } = useI18n();
  return (
    <div className={`lang-switch${dark ? ' dark' : ''}`} role="group" aria-label={t('lang.label')} data-testid="lang-switch">
      {(['de', 'en'] as Lang[]).map((l) => (
        <button
          key={l}
          type="button"
          className={l === lang ? 'active' : ''}
          aria-pressed={l === lang}
          onClick={() => setLang(l)}
          lang={l}
          title={t(l === 'de' ? 'lang.de' : 'lang.en')}
        >
          {l.toUpperCase()}
        </button>
      ))}
    </div>
  );
}

export function Brand() {
  return (
    <span className="brand">
      <svg width="26" height="26" viewBox="0 0 32 32" aria-hidden="true">
        <rect width="32" height="32" rx="7" fill="#1d4e89" />
        <rect x="7" y="10" width="13" height="12" rx="2.5" fill="#fff" />
        <path d="M21 14.5l5-3v9l-5-3z" fill="#fff" />
      </svg>
      <span className="brand-name">klausur</span>
    </span>
  );
}

/** Page frame for everything except the meeting room. */
export function Shell({ children }: { children: ReactNode }) {
  const { t } = useI18n();
  const { session, logout } = useAuth();
  const navigate = useNavigate();
  const user = session?.user;
  return (
    <div className="shell">
      <a className="skip-link" href="#main">
        {t('nav.skip')}
      </a>
      <header className="app-header">
        <Link to={user ? '/meetings' : '/login'} className="brand-link" aria-label={t('app.name')}>
          <Brand />
        </Link>
        {user && !user.must_change_password && (
          <nav className="main-nav" aria-label="Navigation">
            <NavLink to="/meetings">{t('nav.meetings')}</NavLink>
            {/* `/admin` leads to the accounts; the link stays marked on every administration page. */}
            {user.role === 'admin' && <NavLink to="/admin">{t('nav.admin')}</NavLink>}
          </nav>
        )}
        <div className="header-right">
          {user && (
            <span className="who" title={user.username}>
              {t('nav.signedInAs', { name: user.display_name })}
            </span>
          )}
          <LangSwitch />
          {user && (
            <button
              type="button"
              className="btn ghost small"
              data-testid="logout-button"
              onClick={async () => {
                await logout();
                navigate('/login');
              }}
            >
              {t('nav.logout')}
            </button>
          )}
        </div>
      </header>
      <main id="main" className="page">
        {children}
      </main>
    </div>
  );
}

export function ErrorNote({ text }: { text: string | null }) {
  if (!text) return null;
  return (
    <p className="form-error" role="alert" data-testid="form-error">
      {text}
    </p>
  );
}
