import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { Link, useParams } from 'react-router-dom';
import {
  api,
  type CreatedInvitation,
  type Id,
  type InvitationKind,
  type MeetingDetail,
  type MeetingDialIn,
  type UserRecord,
} from '../../signaling/api';
import { dialInText, groupDigits } from '../../meeting/phone';
import { useI18n } from '../../i18n';
import { ErrorNote, Shell } from '../Shell';
import { CopyField } from '../CopyField';
import { describeError } from '../errors';
import { useAuth } from '../auth';
import { PhoneIcon } from '../icons';
import { ProfileBadge } from './MeetingsPage';

const EXPIRY_CHOICES = [24, 72, 168, 720];

export function MeetingDetailPage() {
  const { id = '' } = useParams();
  const { t, dateTime } = useI18n();
  const { session } = useAuth();
  const [meeting, setMeeting] = useState<MeetingDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [users, setUsers] = useState<UserRecord[] | null>(null);
  const [created, setCreated] = useState<CreatedInvitation[]>([]);

  const load = useCallback(async () => {
    try {
      setMeeting(await api.meeting(id));
    } catch (e) {
      setError(describeError(t, e));
    }
  }, [id, t]);

  useEffect(() => {
    void load();
    // The user list is only available to administrators; others enter a user number.
    api.users().then(
      (u) => setUsers(u.filter((x) => !x.disabled)),
      () => setUsers(null),
    );
  }, [load]);

  if (!meeting) {
    return (
      <Shell>
        <ErrorNote text={error} />
        {!error && <p className="muted">{t('common.loading')}</p>}
      </Shell>
    );
  }

  const plainLink = `${window.location.origin}/m/${meeting.id}`;
  const dialIn = meeting.dial_in ?? null;
  const hours = (h: number) => (h % 24 === 0 ? t('detail.days', { n: h / 24 }) : t('detail.hours', { n: h }));

  return (
    <Shell>
      <div className="page-head">
        <div>
          <p className="crumb">
            <Link to="/meetings">{t('nav.meetings')}</Link>
          </p>
          <h1 data-testid="meeting-detail-title">{meeting.title}</h1>
          <div className="meta">
            <span>{meeting.starts_at ? t('detail.startsAt', { time: dateTime(meeting.starts_at) }) : t('meetings.noTime')}</span>
            <span>{t('meetings.organiser', { name: meeting.organiser.display_name })}</span>
            <ProfileBadge profile={meeting.profile} />
          </div>
        </div>
        {!meeting.ended && (
          <Link className="btn primary" to={`/m/${meeting.id}`} data-testid="join-meeting">
            {t('detail.join')}
          </Link>
        )}
      </div>
      <p className="profile-explain">{t(meeting.profile === 'strict' ? 'profile.strict.explain' : 'profile.internal.explain')}</p>
      <ErrorNote text={error} />

      <div className="columns">
        <section className="card" aria-labelledby="inv-title">
          <h2 id="inv-title">{t('detail.invitations')}</h2>
          <p className="muted">{t('detail.invitationsIntro')}</p>
          <InviteForm
            meetingId={meeting.id}
            users={users}
            expiryLabel={hours}
            onCreated={(c) => {
              setCreated((list) => [c, ...list]);
              void load();
            }}
          />
          {created.length > 0 && (
            <div className="new-links" data-testid="new-links">
              <h3>{t('detail.newLinks')}</h3>
              <ul>
                {created.map((c) => (
                  <li key={String(c.invitation.id)}>
                    <span className="link-name">{t('detail.inviteFor', { name: c.invitation.name })}</span>
                    <CopyField value={c.link} label={t('detail.inviteFor', { name: c.invitation.name })} testId="invite-link" name={c.invitation.name} />
                    {c.phone_pin && <NewPin name={c.invitation.name} pin={c.phone_pin} dialIn={dialIn} />}
                  </li>
                ))}
              </ul>
            </div>
          )}
          <h3>{t('detail.invitations')}</h3>
          {meeting.invitations.length === 0 ? (
            <p className="muted">{t('detail.noInvitations')}</p>
          ) : (
            <ul className="invitation-list">
              {meeting.invitations.map((inv) => (
                <li key={String(inv.id)} className={inv.revoked ? 'revoked' : ''} data-testid="invitation-item" data-name={inv.name}>
                  <div>
                    <strong>{inv.name}</strong>{' '}
                    <span className="badge">{t(inv.kind === 'guest' ? 'detail.kind.guest' : 'detail.kind.colleague')}</span>
                    {inv.has_phone_pin === true && (
                      <span className="badge pin-badge" title={t('detail.hasPinHint')} data-testid="invitation-pin-badge">
                        <PhoneIcon width={12} height={12} /> {t('detail.hasPin')}
                      </span>
                    )}
                    <div className="meta small">
                      <span>{t('detail.expiresAt', { time: dateTime(inv.expires_at) })}</span>
                      <span>{inv.last_used_at ? t('detail.lastUsed', { time: dateTime(inv.last_used_at) }) : t('detail.neverUsed')}</span>
                    </div>
                  </div>
                  {inv.revoked ? (
                    <span className="badge muted-badge">{t('detail.revoked')}</span>
                  ) : (
                    <button
                      type="button"
                      className="btn danger-ghost small"
                      data-testid="revoke-button"
                      onClick={async () => {
                        if (!window.confirm(t('detail.revokeConfirm', { name: inv.name }))) return;
                        try {
                          await api.revokeInvitation(meeting.id, inv.id);
                          await load();
                        } catch (e) {
                          setError(describeError(t, e));
                        }
                      }}
                    >
                      {t('detail.revoke')}
                    </button>
                  )}
                </li>
              ))}
            </ul>
          )}
        </section>

        <div className="stack">
          <DialInCard dialIn={dialIn} profile={t(meeting.profile === 'strict' ? 'profile.strict' : 'profile.internal')} />
          <section className="card" aria-labelledby="mod-title">
            <h2 id="mod-title">{t('detail.moderators')}</h2>
            <p className="muted">{t('detail.moderatorsIntro')}</p>
            <ul className="plain-list" data-testid="moderator-list">
              {meeting.moderators.map((m) => (
                <li key={String(m.id)}>{m.display_name}</li>
              ))}
            </ul>
            {/* Only the organiser (or an administrator) grants moderation. */}
            {(session?.user.role === 'admin' || String(session?.user.id) === String(meeting.organiser.id)) && (
            <ModeratorForm
              users={users?.filter((u) => !meeting.moderators.some((m) => String(m.id) === String(u.id))) ?? null}
              onAdd={async (uid) => {
                try {
                  await api.addModerator(meeting.id, uid);
                  await load();
                } catch (e) {
                  setError(describeError(t, e));
                }
              }}
            />
            )}
          </section>
          <section className="card" aria-labelledby="plain-title">
            <h2 id="plain-title">{t('detail.plainLink')}</h2>
            <CopyField value={plainLink} label={t('detail.plainLink')} testId="plain-link" />
          </section>
        </div>
      </div>
    </Shell>
  );
}

/** The meeting's telephone dial-in: the number to call, the meeting number, whether calls are accepted. */
function DialInCard({ dialIn, profile }: { dialIn: MeetingDialIn | null; profile: string }) {
  const { t } = useI18n();
  return (
    <section className="card dial-in-card" aria-labelledby="dial-in-title" data-testid="dial-in-card" data-allowed={dialIn ? String(dialIn.allowed) : undefined}>
      <h2 id="dial-in-title" className="with-icon">
        <PhoneIcon width={20} height={20} /> {t('detail.dialIn')}
      </h2>
      {dialIn === null ? (
        <p className="muted" data-testid="dial-in-none">
          {t('detail.dialInNone')}
        </p>
      ) : (
        <>
          <dl className="dial-in-numbers">
            <dt>{t('detail.dialInPhone')}</dt>
            <dd data-testid="dial-in-phone">{dialIn.phone_number ?? '–'}</dd>
            <dt>{t('detail.dialInNumber')}</dt>
            <dd className="digits" data-testid="dial-in-number" data-number={dialIn.meeting_number}>
              {groupDigits(dialIn.meeting_number)}
            </dd>
          </dl>
          {dialIn.phone_number === null && <p className="muted small">{t('detail.dialInNoPhone')}</p>}
          <p className={`notice small ${dialIn.allowed ? 'ok' : 'warn'}`} data-testid="dial-in-allowed" data-allowed={String(dialIn.allowed)}>
            {dialIn.allowed ? t('detail.dialInAllowed') : t('detail.dialInRefused', { profile })}
          </p>
          <p className="muted small">{t('detail.dialInLeg')}</p>
        </>
      )}
    </section>
  );
}

/** A new invitation's phone PIN, shown once, and the text to send the invitee. */
function NewPin({ name, pin, dialIn }: { name: string; pin: string; dialIn: MeetingDialIn | null }) {
  const { t } = useI18n();
  return (
    <div className="new-pin" data-testid="invite-pin-block" data-name={name}>
      <span className="link-name">{t('detail.pinFor', { name })}</span>
      <CopyField value={groupDigits(pin)} copyValue={pin} label={t('detail.pinFor', { name })} testId="invite-pin" name={name} />
      {dialIn && (
        <>
          <span className="link-name">{t('detail.dialInTextFor', { name })}</span>
          <CopyField value={dialInText(t, dialIn, pin)} label={t('detail.dialInTextFor', { name })} testId="invite-dial-in-text" name={name} />
        </>
      )}
      <p className="small muted">{t('detail.pinOnce')}</p>
    </div>
  );
}

function UserPicker({ users, value, onChange, testId }: { users: UserRecord[] | null; value: string; onChange(v: string): void; testId: string }) {
  const { t } = useI18n();
  if (users === null) {
    return <input inputMode="numeric" value={value} onChange={(e) => onChange(e.target.value)} placeholder="ID" data-testid={testId} />;
  }
  return (
    <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
      <option value="">{t('detail.chooseColleague')}</option>
      {users.map((u) => (
        <option key={String(u.id)} value={String(u.id)}>
          {u.display_name} ({u.username})
        </option>
      ))}
    </select>
  );
}

function toUserId(v: string, users: UserRecord[] | null): Id {
  const u = users?.find((x) => String(x.id) === v);
  if (u) return u.id;
  const n = Number(v);
  return Number.isFinite(n) ? n : v;
}

function InviteForm({
  meetingId,
  users,
  expiryLabel,
  onCreated,
}: {
  meetingId: Id;
  users: UserRecord[] | null;
  expiryLabel(h: number): string;
  onCreated(c: CreatedInvitation): void;
}) {
  const { t } = useI18n();
  const [kind, setKind] = useState<InvitationKind>('guest');
  const [name, setName] = useState('');
  const [userId, setUserId] = useState('');
  const [expires, setExpires] = useState(72);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setError(null);
    let inviteName = name.trim();
    let uid: Id | null = null;
    if (kind === 'colleague') {
      if (!userId) return setError(t('detail.colleagueRequired'));
      uid = toUserId(userId, users);
      const u = users?.find((x) => String(x.id) === userId);
      if (!inviteName && u) inviteName = u.display_name;
    }
    if (!inviteName) return setError(t('detail.nameRequired'));
    setBusy(true);
    try {
      const c = await api.createInvitation(meetingId, { name: inviteName, kind, user_id: uid, expires_in_hours: expires });
      onCreated(c);
      setName('');
      setUserId('');
    } catch (err) {
      setError(describeError(t, err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="form invite-form" onSubmit={submit} noValidate data-testid="invite-form">
      <div className="segmented" role="radiogroup">
        {(['guest', 'colleague'] as InvitationKind[]).map((k) => (
          <label key={k} className={kind === k ? 'active' : ''}>
            <input type="radio" name="kind" value={k} checked={kind === k} onChange={() => setKind(k)} data-testid={`invite-kind-${k}`} />
            {t(k === 'guest' ? 'detail.addGuest' : 'detail.addColleague')}
          </label>
        ))}
      </div>
      <div className="inline-fields">
        {kind === 'colleague' && (
          <label className="field">
            <span>{t('detail.colleague')}</span>
            <UserPicker users={users} value={userId} onChange={setUserId} testId="invite-user" />
          </label>
        )}
        {kind === 'guest' && (
          <label className="field grow">
            <span>{t('detail.guestName')}</span>
            <input value={name} onChange={(e) => setName(e.target.value)} maxLength={80} data-testid="invite-name" />
          </label>
        )}
        <label className="field">
          <span>{t('detail.expires')}</span>
          <select value={expires} onChange={(e) => setExpires(Number(e.target.value))} data-testid="invite-expiry">
            {EXPIRY_CHOICES.map((h) => (
              <option key={h} value={h}>
                {expiryLabel(h)}
              </option>
            ))}
          </select>
        </label>
        <button className="btn primary" type="submit" disabled={busy} data-testid="create-invite">
          {t('detail.createInvite')}
        </button>
      </div>
      <ErrorNote text={error} />
    </form>
  );
}

function ModeratorForm({ users, onAdd }: { users: UserRecord[] | null; onAdd(id: Id): Promise<void> }) {
  const { t } = useI18n();
  const [value, setValue] = useState('');
  return (
    <form
      className="inline-fields"
      onSubmit={async (e) => {
        e.preventDefault();
        if (!value) return;
        await onAdd(toUserId(value, users));
        setValue('');
      }}
    >
      <label className="field grow">
        <span>{t('detail.colleague')}</span>
        <UserPicker users={users} value={value} onChange={setValue} testId="moderator-user" />
      </label>
      <button type="submit" className="btn secondary" disabled={!value} data-testid="add-moderator">
        {t('detail.addModerator')}
      </button>
    </form>
  );
}
