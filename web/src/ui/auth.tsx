import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { Navigate, useLocation } from 'react-router-dom';
import { api, type Session } from '../signaling/api';
import { useT } from '../i18n';

interface Auth {
  /** undefined while loading, null when not signed in. */
  session: Session | null | undefined;
  setSession(s: Session | null): void;
  refresh(): Promise<void>;
  logout(): Promise<void>;
}

const Ctx = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session | null | undefined>(undefined);
  const refresh = useCallback(async () => {
    try {
      setSession(await api.session());
    } catch {
      setSession(null);
    }
  }, []);
  useEffect(() => {
    void refresh();
  }, [refresh]);
  const logout = useCallback(async () => {
    try {
      await api.logout();
    } finally {
      setSession(null);
    }
  }, []);
  const value = useMemo(() => ({ session, setSession, refresh, logout }), [session, refresh, logout]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useAuth(): Auth {
  const v = useContext(Ctx);
  if (!v) throw new Error('useAuth outside AuthProvider');
  return v;
}

/** Renders children only for signed-in users (optionally admins), else redirects to login. */
export function RequireAuth({ children, admin = false }: { children: ReactNode; admin?: boolean }) {
  const { session } = useAuth();
  const location = useLocation();
  const t = useT();
  if (session === undefined) return <p className="muted page-loading">{t('common.loading')}</p>;
  if (session === null) {
    const next = encodeURIComponent(location.pathname + location.search);
    return <Navigate to={`/login?next=${next}`} replace />;
  }
  if (session.user.must_change_password && location.pathname !== '/password') {
    return <Navigate to="/password" replace />;
  }
  if (admin && session.user.role !== 'admin') return <Navigate to="/meetings" replace />;
  return <>{children}</>;
}
