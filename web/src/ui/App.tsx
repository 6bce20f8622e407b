import { BrowserRouter, Navigate, Route, Routes } from 'react-router-dom';
import { I18nProvider, useT } from '../i18n';
import { AuthProvider, RequireAuth } from './auth';
import { Shell } from './Shell';
import { LoginPage } from './pages/LoginPage';
import { PasswordPage } from './pages/PasswordPage';
import { MeetingsPage } from './pages/MeetingsPage';
import { CreateMeetingPage } from './pages/CreateMeetingPage';
import { MeetingDetailPage } from './pages/MeetingDetailPage';
import { AdminUsersPage } from './pages/AdminUsersPage';
import { AdminAuditPage } from './pages/AdminAuditPage';
import { JoinPage } from './call/JoinPage';

function NotFound() {
  const t = useT();
  return (
    <Shell>
      <section className="card narrow">
        <p>{t('common.notFound')}</p>
      </section>
    </Shell>
  );
}

export function App() {
  return (
    <I18nProvider>
      <AuthProvider>
        <BrowserRouter>
          <Routes>
            <Route path="/" element={<Navigate to="/meetings" replace />} />
            <Route path="/login" element={<LoginPage />} />
            <Route path="/password" element={<RequireAuth><PasswordPage /></RequireAuth>} />
            <Route path="/meetings" element={<RequireAuth><MeetingsPage /></RequireAuth>} />
            <Route path="/meetings/new" element={<RequireAuth><CreateMeetingPage /></RequireAuth>} />
            <Route path="/meetings/:id" element={<RequireAuth><MeetingDetailPage /></RequireAuth>} />
            <Route path="/admin" element={<Navigate to="/admin/users" replace />} />
            <Route path="/admin/users" element={<RequireAuth admin><AdminUsersPage /></RequireAuth>} />
            <Route path="/admin/audit" element={<RequireAuth admin><AdminAuditPage /></RequireAuth>} />
            <Route path="/j/:token" element={<JoinPage />} />
            <Route path="/m/:id" element={<JoinPage />} />
            <Route path="*" element={<NotFound />} />
          </Routes>
        </BrowserRouter>
      </AuthProvider>
    </I18nProvider>
  );
}
