import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { api, type UserRecord, type UserRole } from '../../signaling/api';
import { useT } from '../../i18n';
import { useAuth } from '../auth';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';
import { AdminTabs } from './AdminAuditPage';

export function AdminUsersPage() {
  const t = useT();
  const { session } = useAuth();
  const [users, setUsers] = useState<UserRecord[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);

  const load = useCallback(async () => {
    try {
      setUsers(await api.users());
    } catch (e) {
      setError(describeError(t, e));
    }
  }, [t]);
  useEffect(() => {
    void load();
  }, [load]);

  return (
    <Shell>
      <div className="page-head">
        <h1>{t('admin.title')}</h1>
      </div>
      <AdminTabs />
      <ErrorNote text={error} />
      {notice && (
        <p className="notice ok" role="status">
          {notice}
        </p>
      )}
      <div className="columns">
        <section className="card" aria-labelledby="users-title">
          <h2 id="users-title">{t('admin.users')}</h2>
          {users === null ? (
            <p className="muted">{t('common.loading')}</p>
          ) : (
            <div className="table-wrap">
              <table className="table" data-testid="user-table">
                <thead>
                  <tr>
                    <th scope="col">{t('admin.displayName')}</th>
                    <th scope="col">{t('admin.username')}</th>
                    <th scope="col">{t('admin.role')}</th>
                    <th scope="col">{t('admin.status')}</th>
                    <th scope="col">
                      <span className="sr-only">{t('admin.disable')}</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {users.map((u) => (
                    <tr key={String(u.id)} data-testid="user-row" className={u.disabled ? 'disabled' : ''}>
                      <td>{u.display_name}</td>
                      <td>
                        <code>{u.username}</code>
                      </td>
                      <td>{t(u.role === 'admin' ? 'admin.role.admin' : 'admin.role.staff')}</td>
                      <td>
                        {u.disabled ? (
                          <span className="badge muted-badge">{t('admin.disabled')}</span>
                        ) : (
                          <span className="badge ok-badge">{t('admin.active')}</span>
                        )}
                        {u.must_change_password && !u.disabled && <span className="badge warn-badge">{t('admin.mustChange')}</span>}
                      </td>
                      <td className="actions">
                        {!u.disabled && String(u.id) !== String(session?.user.id) && (
                          <button
                            type="button"
                            className="btn danger-ghost small"
                            data-testid="disable-user"
                            onClick={async () => {
                              if (!window.confirm(t('admin.disableConfirm', { name: u.display_name }))) return;
                              try {
                                await api.disableUser(u.id);
                                await load();
                              } catch (e) {
                                setError(describeError(t, e));
                              }
                            }}
                          >
                            {t('admin.disable')}
                          </button>
                        )}
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          )}
        </section>
        <AddUserForm
          onCreated={(u) => {
            setNotice(t('admin.created', { name: u.display_name }));
            void load();
          }}
        />
      </div>
    </Shell>
  );
}

function AddUserForm({ onCreated }: { onCreated(u: UserRecord): void }) {
  const t = useT();
  const [username, setUsername] = useState('');
  const [displayName, setDisplayName] = useState('');
  const [password, setPassword] = useState('');
  const [role, setRole] = useState<UserRole>('staff');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    if (password.length < 12) return setError(t('password.tooShort'));
    setBusy(true);
    try {
      const u = await api.createUser({ username: username.trim(), display_name: displayName.trim(), password, role });
      onCreated(u);
      setUsername('');
      setDisplayName('');
      setPassword('');
      setRole('staff');
    } catch (err) {
      setError(describeError(t, err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <section className="card" aria-labelledby="add-user-title">
      <h2 id="add-user-title">{t('admin.add')}</h2>
      <form className="form" onSubmit={submit} noValidate data-testid="add-user-form">
        <label className="field">
          <span>{t('admin.username')}</span>
          <input value={username} onChange={(e) => setUsername(e.target.value)} autoComplete="off" data-testid="new-user-username" />
        </label>
        <label className="field">
          <span>{t('admin.displayName')}</span>
          <input value={displayName} onChange={(e) => setDisplayName(e.target.value)} data-testid="new-user-display-name" />
        </label>
        <label className="field">
          <span>{t('admin.initialPassword')}</span>
          <input type="password" autoComplete="new-password" value={password} onChange={(e) => setPassword(e.target.value)} data-testid="new-user-password" />
          <small className="hint">{t('admin.initialPasswordHint')}</small>
        </label>
        <label className="field">
          <span>{t('admin.role')}</span>
          <select value={role} onChange={(e) => setRole(e.target.value as UserRole)} data-testid="new-user-role">
            <option value="staff">{t('admin.role.staff')}</option>
            <option value="admin">{t('admin.role.admin')}</option>
          </select>
        </label>
        <ErrorNote text={error} />
        <button className="btn primary" type="submit" disabled={busy || !username.trim() || !displayName.trim()} data-testid="new-user-submit">
          {t('admin.add')}
        </button>
      </form>
    </section>
  );
}
