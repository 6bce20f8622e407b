import { useCallback, useEffect, useMemo, useRef, useState, type FormEvent } from 'react';
import { Link, NavLink, useSearchParams } from 'react-router-dom';
import {
  api,
  type AuditActor,
  type AuditQuery,
  type AuditRecord,
  type AuditVerification,
} from '../../signaling/api';
import { useI18n, type Translate } from '../../i18n';
import { ErrorNote, Shell } from '../Shell';
import { describeError } from '../errors';

/** The families of record kinds and their kinds, as the server writes them
 * (crates/klausur-server/src/audit.rs, plus the store's `audit.deleted`). */
const FAMILIES = {
  login: ['login.succeeded', 'login.failed', 'login.logout'],
  account: ['account.created', 'account.disabled', 'account.password_changed', 'account.password_change_failed'],
  meeting: ['meeting.created', 'meeting.moderator_added', 'meeting.locked', 'meeting.unlocked', 'meeting.spotlight', 'meeting.ended'],
  invitation: ['invitation.created', 'invitation.revoked'],
  lobby: ['lobby.entered', 'lobby.admitted', 'lobby.denied'],
  participant: ['participant.joined', 'participant.left', 'participant.removed', 'participant.muted', 'participant.unmuted'],
  role: ['role.moderator_granted', 'role.moderator_revoked'],
  encryption: ['encryption.epoch', 'encryption.credential_issued'],
  dialin: ['dialin.attempt'],
  server: ['server.started', 'server.draining'],
  audit: ['audit.deleted'],
} as const;

type Family = keyof typeof FAMILIES;
type Kind = (typeof FAMILIES)[Family][number];

const KNOWN_KINDS = new Set<string>(Object.values(FAMILIES).flat());
const ACTOR_KINDS = ['user', 'guest', 'lobby', 'phone', 'anonymous', 'system', 'operator'] as const;
const REASONS = ['unknown_user', 'wrong_password', 'account_disabled', 'left', 'removed', 'disconnected'] as const;
const LOBBY_REASONS = ['profile', 'locked', 'removed', 'invitation_in_use'] as const;
const DIALIN_RESULTS = ['admit', 'wrong', 'not_yet', 'ended', 'not_allowed'] as const;
const PARTICIPANT_KINDS = ['staff', 'invited_guest', 'guest', 'phone_gateway'] as const;
const PAGE_SIZES = [10, 20, 50, 100, 200] as const;
const DEFAULT_PAGE_SIZE = 50;

function oneOf<T extends string>(list: readonly T[], value: unknown): value is T {
  return typeof value === 'string' && (list as readonly string[]).includes(value);
}

/** A readable label for a record kind, or the kind itself if this client does not know it. */
export function kindLabel(t: Translate, kind: string): string {
  return KNOWN_KINDS.has(kind) ? t(`audit.kind.${kind as Kind}`) : kind;
}

function actorKindLabel(t: Translate, kind: string): string {
  return oneOf(ACTOR_KINDS, kind) ? t(`audit.actor.${kind}`) : kind;
}

/** Someone named in a record: their name, else what they are and their id. */
function actorText(t: Translate, a: AuditActor): string {
  if (a.name) return a.name;
  return [actorKindLabel(t, a.kind), a.id].filter(Boolean).join(' ');
}

function asActor(v: unknown): AuditActor | null {
  if (!v || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (typeof o.kind !== 'string') return null;
  return {
    kind: o.kind,
    id: typeof o.id === 'string' ? o.id : undefined,
    name: typeof o.name === 'string' ? o.name : undefined,
  };
}

const scalar = (v: unknown): v is string | number => typeof v === 'string' || typeof v === 'number';

/** The details of a record as short readable lines; everything is also in the raw JSON. */
export function detailLines(t: Translate, dateTime: (v: string | number) => string, r: AuditRecord): string[] {
  const d = r.details ?? {};
  const out: string[] = [];
  const target = asActor(d.target);
  if (target) out.push(t('audit.detail.target', { value: actorText(t, target) }));
  if (typeof d.reason === 'string') {
    const value =
      r.kind === 'lobby.entered' && oneOf(LOBBY_REASONS, d.reason)
        ? t(`people.reason.${d.reason}`)
        : oneOf(REASONS, d.reason)
          ? t(`audit.reason.${d.reason}`)
          : d.reason;
    out.push(t('audit.detail.reason', { value }));
  }
  if (typeof d.role === 'string') {
    const value =
      d.role === 'admin' || d.role === 'staff'
        ? t(`admin.role.${d.role}`)
        : d.role === 'moderator'
          ? t('role.moderator')
          : d.role === 'participant'
            ? t('audit.role.participant')
            : d.role;
    out.push(t('audit.detail.role', { value }));
  }
  if (typeof d.title === 'string') out.push(t('audit.detail.title', { value: d.title }));
  if (d.profile === 'strict' || d.profile === 'internal') out.push(t('audit.detail.profile', { value: t(`profile.${d.profile}`) }));
  if (d.dial_in === true) out.push(t('audit.detail.dialIn'));
  if (scalar(d.invitation)) out.push(t('audit.detail.invitation', { value: d.invitation }));
  if (typeof d.name === 'string') out.push(t('audit.detail.name', { value: d.name }));
  if (d.kind === 'guest' || d.kind === 'colleague') out.push(t('audit.detail.kind', { value: t(`detail.kind.${d.kind}`) }));
  if (oneOf(PARTICIPANT_KINDS, d.participant_kind)) out.push(t('audit.detail.kind', { value: t(`kind.${d.participant_kind}`) }));
  if (typeof d.expires_at === 'string') out.push(t('audit.detail.expires', { value: dateTime(d.expires_at) }));
  if (typeof d.not_after_ms === 'number') out.push(t('audit.detail.expires', { value: dateTime(d.not_after_ms) }));
  if (d.phone_pin === true) out.push(t('audit.detail.phonePin'));
  const method = d.join_method && typeof d.join_method === 'object' ? (d.join_method as Record<string, unknown>) : null;
  if (method?.method === 'lobby' && typeof method.admitted_by === 'string') {
    out.push(t('join.lobby', { admitted_by: method.admitted_by }));
  } else if (method?.method === 'invitation' && typeof method.invitee === 'string' && typeof method.invited_by === 'string') {
    out.push(t('join.invitation', { invitee: method.invitee, invited_by: method.invited_by }));
  } else if (method?.method === 'staff_login') {
    out.push(t('join.staff_login'));
  }
  if (scalar(d.epoch)) out.push(t('audit.detail.epoch', { value: d.epoch }));
  if (Array.isArray(d.welcomed) && d.welcomed.length > 0) {
    const names = d.welcomed.map(asActor).filter((a): a is AuditActor => a !== null);
    out.push(t('audit.detail.welcomed', { value: names.map((a) => actorText(t, a)).join(', ') }));
  }
  if (scalar(d.meeting_number)) out.push(t('audit.detail.meetingNumber', { value: d.meeting_number }));
  if (typeof d.result === 'string') {
    out.push(t('audit.detail.result', { value: oneOf(DIALIN_RESULTS, d.result) ? t(`audit.result.${d.result}`) : d.result }));
  }
  if (scalar(d.version)) out.push(t('audit.detail.version', { value: d.version }));
  if (scalar(d.meetings)) out.push(t('audit.detail.meetingsRunning', { value: d.meetings }));
  if (scalar(d.calls)) out.push(t('audit.detail.callsRunning', { value: d.calls }));
  if (scalar(d.drain_seconds)) out.push(t('audit.detail.drainSeconds', { value: d.drain_seconds }));
  if (scalar(d.deleted)) out.push(t('audit.detail.deleted', { value: d.deleted }));
  if (scalar(d.through_seq)) out.push(t('audit.detail.through', { value: d.through_seq }));
  return out;
}

/** A `datetime-local` value (local time, minutes) from an RFC 3339 time; '' if none. */
function toLocalInput(iso: string | null, shiftMinutes = 0): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  d.setMinutes(d.getMinutes() + shiftMinutes);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** RFC 3339 (UTC) from a `datetime-local` value; null if empty or invalid. */
function fromLocalInput(value: string, shiftMinutes = 0): string | null {
  if (!value) return null;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return null;
  d.setMinutes(d.getMinutes() + shiftMinutes);
  return d.toISOString();
}

interface Filters {
  kind: string;
  meeting: string;
  q: string;
  /** RFC 3339 or ''. */
  since: string;
  /** RFC 3339 (exclusive) or ''. */
  until: string;
  limit: number;
}

function filtersFrom(params: URLSearchParams): Filters {
  const limit = Number(params.get('limit'));
  return {
    kind: params.get('kind') ?? '',
    meeting: params.get('meeting') ?? '',
    q: params.get('q') ?? '',
    since: params.get('since') ?? '',
    until: params.get('until') ?? '',
    limit: Number.isInteger(limit) && limit >= 1 && limit <= 1000 ? limit : DEFAULT_PAGE_SIZE,
  };
}

function query(f: Filters, before?: number): AuditQuery {
  return {
    kind: f.kind || undefined,
    meeting: f.meeting || undefined,
    q: f.q || undefined,
    since: f.since || undefined,
    until: f.until || undefined,
    limit: f.limit,
    before,
  };
}

/** The tabs of the administration area. */
export function AdminTabs() {
  const { t } = useI18n();
  return (
    <nav className="admin-tabs" aria-label={t('admin.tabs')} data-testid="admin-tabs">
      <NavLink to="/admin/users" data-testid="admin-tab-users">
        {t('admin.tab.users')}
      </NavLink>
      <NavLink to="/admin/audit" data-testid="admin-tab-audit">
        {t('admin.tab.audit')}
      </NavLink>
    </nav>
  );
}

export function AdminAuditPage() {
  const { t } = useI18n();
  return (
    <Shell>
      <div className="page-head">
        <div>
          <h1>{t('audit.title')}</h1>
          <p className="muted audit-intro">{t('audit.intro')}</p>
        </div>
      </div>
      <AdminTabs />
      <div className="stack">
        <Verification />
        <Records />
      </div>
    </Shell>
  );
}

function Verification() {
  const { t, dateTime } = useI18n();
  const [result, setResult] = useState<{ v: AuditVerification; at: Date } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [checking, setChecking] = useState(false);

  const check = useCallback(async () => {
    setChecking(true);
    setError(null);
    try {
      const v = await api.auditVerify();
      setResult({ v, at: new Date() });
    } catch (e) {
      setResult(null);
      setError(describeError(t, e));
    } finally {
      setChecking(false);
    }
  }, [t]);
  useEffect(() => {
    void check();
  }, [check]);

  const v = result?.v;
  return (
    <section
      className={`card audit-verify${v ? (v.intact ? ' intact' : ' broken') : ''}`}
      aria-labelledby="audit-verify-title"
      aria-busy={checking}
      data-testid="audit-verify"
      data-intact={v ? String(v.intact) : undefined}
      data-records={v ? String(v.records) : undefined}
    >
      <div className="audit-verify-head">
        <h2 id="audit-verify-title">{t('audit.verify.title')}</h2>
        {v && (
          <span className={`badge ${v.intact ? 'ok-badge' : 'danger-badge'}`} data-testid="audit-verify-badge">
            {t(v.intact ? 'audit.verify.intactBadge' : 'audit.verify.brokenBadge')}
          </span>
        )}
        <button type="button" className="btn secondary small" onClick={() => void check()} disabled={checking} data-testid="audit-verify-again">
          {t('audit.verify.again')}
        </button>
      </div>
      <ErrorNote text={error} />
      {!v && !error && <p className="muted">{t('audit.verify.checking')}</p>}
      {v && (
        <div role="status">
          <p data-testid="audit-verify-text">{t(v.intact ? 'audit.verify.intact' : 'audit.verify.broken', { count: v.records })}</p>
          {v.problems.length > 0 && (
            <ul className="audit-problems" data-testid="audit-problems">
              {v.problems.map((p, i) => (
                <li key={i}>{p}</li>
              ))}
            </ul>
          )}
          <dl className="audit-head">
            <dt>{t('audit.verify.head')}</dt>
            <dd>
              {v.head ? <code data-testid="audit-head">{v.head}</code> : <span className="muted">{t('audit.verify.noHead')}</span>}
            </dd>
          </dl>
          {v.head && <p className="hint">{t('audit.verify.headHint')}</p>}
          {result && <p className="hint">{t('audit.verify.checkedAt', { time: dateTime(result.at) })}</p>}
        </div>
      )}
    </section>
  );
}

function Records() {
  const { t, lang, dateTime } = useI18n();
  const [params, setParams] = useSearchParams();
  const paramKey = params.toString();
  const filters = useMemo(() => filtersFrom(new URLSearchParams(paramKey)), [paramKey]);
  // The records shown and the filters (as in the URL) they were read with.
  const [shown, setShown] = useState<{ key: string; records: AuditRecord[]; nextBefore?: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // Answers to an earlier filter that arrive late are dropped.
  const generation = useRef(0);

  const load = useCallback(
    async (before?: number) => {
      const gen = before === undefined ? ++generation.current : generation.current;
      setBusy(true);
      setError(null);
      try {
        const page = await api.audit(query(filters, before));
        if (gen !== generation.current) return;
        setShown((old) => ({
          key: paramKey,
          records: before === undefined || !old ? page.records : [...old.records, ...page.records],
          nextBefore: page.next_before,
        }));
      } catch (e) {
        if (gen !== generation.current) return;
        if (before === undefined) setShown(null);
        setError(describeError(t, e));
      } finally {
        if (gen === generation.current) setBusy(false);
      }
    },
    [filters, paramKey, t],
  );
  useEffect(() => {
    void load();
  }, [load]);
  // Records read with other filters are not shown under these.
  const records = shown && shown.key === paramKey ? shown.records : null;
  const nextBefore = records ? shown?.nextBefore : undefined;
  const state = error ? 'error' : busy || records === null ? 'loading' : 'ready';

  const timeFmt = useMemo(
    () => new Intl.DateTimeFormat(lang === 'de' ? 'de-DE' : 'en-GB', { dateStyle: 'short', timeStyle: 'medium' }),
    [lang],
  );

  return (
    <>
      <FilterForm
        key={paramKey}
        filters={filters}
        onApply={(f) => {
          const next = new URLSearchParams();
          for (const [k, v] of Object.entries(f)) {
            if (k === 'limit' ? v !== DEFAULT_PAGE_SIZE : v) next.set(k, String(v));
          }
          // Applying the same filters again reloads (new records may have come in).
          if (next.toString() === paramKey) void load();
          else setParams(next);
        }}
      />
      <section
        className="card"
        aria-labelledby="audit-records-title"
        aria-busy={state === 'loading'}
        data-testid="audit-records"
        data-state={state}
        data-query={records ? paramKey : undefined}
      >
        <div className="audit-records-head">
          <h2 id="audit-records-title">{t('audit.records')}</h2>
          {records && (
            <span className="muted small" data-testid="audit-shown">
              {t('audit.shown', { count: records.length })}
            </span>
          )}
        </div>
        <ErrorNote text={error} />
        {records === null ? (
          !error && <p className="muted">{t('common.loading')}</p>
        ) : records.length === 0 ? (
          <p className="muted" data-testid="audit-empty">
            {t('audit.none')}
          </p>
        ) : (
          <div className="table-wrap">
            <table className="table audit-table" data-testid="audit-table">
              <caption className="sr-only">{t('audit.caption')}</caption>
              <thead>
                <tr>
                  <th scope="col">{t('audit.col.seq')}</th>
                  <th scope="col">{t('audit.col.time')}</th>
                  <th scope="col">{t('audit.col.event')}</th>
                  <th scope="col">{t('audit.col.actor')}</th>
                  <th scope="col">{t('audit.col.meeting')}</th>
                  <th scope="col">{t('audit.col.source')}</th>
                  <th scope="col">{t('audit.col.details')}</th>
                </tr>
              </thead>
              <tbody>
                {records.map((r) => (
                  <RecordRow key={r.seq} r={r} t={t} time={timeFmt} dateTime={dateTime} />
                ))}
              </tbody>
            </table>
          </div>
        )}
        {records && records.length > 0 && (
          <div className="audit-paging">
            {nextBefore !== undefined ? (
              <button type="button" className="btn secondary" disabled={busy} onClick={() => void load(nextBefore)} data-testid="audit-older">
                {t('audit.older')}
              </button>
            ) : (
              <p className="muted small" data-testid="audit-end">
                {t('audit.end')}
              </p>
            )}
          </div>
        )}
      </section>
    </>
  );
}

function RecordRow({
  r,
  t,
  time,
  dateTime,
}: {
  r: AuditRecord;
  t: Translate;
  time: Intl.DateTimeFormat;
  dateTime: (v: string | number) => string;
}) {
  const at = new Date(r.at);
  const lines = detailLines(t, dateTime, r);
  const actorDetail = r.actor.name ? [actorKindLabel(t, r.actor.kind), r.actor.id].filter(Boolean).join(' ') : null;
  return (
    <tr data-testid="audit-record" data-kind={r.kind} data-seq={r.seq}>
      <td className="audit-seq">{r.seq}</td>
      <td className="audit-time">
        <time dateTime={r.at} title={r.at}>
          {Number.isNaN(at.getTime()) ? r.at : time.format(at)}
        </time>
      </td>
      <td>
        <span className="audit-kind-label">{kindLabel(t, r.kind)}</span>
        <code className="audit-kind">{r.kind}</code>
      </td>
      <td data-testid="audit-actor">
        <span className="audit-actor-name">{actorText(t, r.actor)}</span>
        {actorDetail && <span className="audit-actor-id muted">{actorDetail}</span>}
      </td>
      <td>
        {r.meeting_id && (
          <Link to={`/admin/audit?meeting=${encodeURIComponent(r.meeting_id)}`} title={t('audit.meetingOnly')} className="audit-meeting">
            <code>{r.meeting_id}</code>
          </Link>
        )}
      </td>
      <td>{r.source && <code>{r.source}</code>}</td>
      <td className="audit-details" data-testid="audit-details">
        {lines.length > 0 && (
          <ul className="audit-detail-lines">
            {lines.map((l, i) => (
              <li key={i}>{l}</li>
            ))}
          </ul>
        )}
        <details className="audit-raw">
          <summary>{t('audit.raw')}</summary>
          <pre data-testid="audit-raw">{JSON.stringify(r, null, 2)}</pre>
        </details>
      </td>
    </tr>
  );
}

function FilterForm({ filters, onApply }: { filters: Filters; onApply(f: Filters): void }) {
  const { t } = useI18n();
  const [kind, setKind] = useState(filters.kind);
  const [meeting, setMeeting] = useState(filters.meeting);
  const [q, setQ] = useState(filters.q);
  const [since, setSince] = useState(toLocalInput(filters.since));
  // `until` is exclusive at the server; the form shows the last minute it includes.
  const [until, setUntil] = useState(toLocalInput(filters.until, -1));
  const [limit, setLimit] = useState(filters.limit);
  const knownKind = kind === '' || KNOWN_KINDS.has(kind) || kind in FAMILIES;

  function submit(e: FormEvent) {
    e.preventDefault();
    onApply({
      kind,
      meeting: meeting.trim(),
      q: q.trim(),
      since: fromLocalInput(since) ?? '',
      until: fromLocalInput(until, 1) ?? '',
      limit,
    });
  }

  return (
    <section className="card" aria-labelledby="audit-filters-title">
      <h2 id="audit-filters-title">{t('audit.filters')}</h2>
      <form className="audit-filters" onSubmit={submit} data-testid="audit-filters">
        <label className="field">
          <span>{t('audit.filter.kind')}</span>
          <select value={kind} onChange={(e) => setKind(e.target.value)} data-testid="audit-filter-kind">
            <option value="">{t('audit.filter.allKinds')}</option>
            {!knownKind && <option value={kind}>{kind}</option>}
            {(Object.keys(FAMILIES) as Family[]).map((family) => (
              <optgroup key={family} label={t(`audit.family.${family}`)}>
                <option value={family}>{t('audit.filter.family', { family: t(`audit.family.${family}`) })}</option>
                {FAMILIES[family].map((k) => (
                  <option key={k} value={k}>
                    {t(`audit.kind.${k}`)}
                  </option>
                ))}
              </optgroup>
            ))}
          </select>
        </label>
        <label className="field">
          <span>{t('audit.filter.meeting')}</span>
          <input value={meeting} onChange={(e) => setMeeting(e.target.value)} maxLength={64} autoComplete="off" data-testid="audit-filter-meeting" />
        </label>
        <label className="field audit-filter-text">
          <span>{t('audit.filter.text')}</span>
          <input
            type="search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            maxLength={100}
            placeholder={t('audit.filter.textHint')}
            data-testid="audit-filter-text"
          />
        </label>
        <label className="field">
          <span>{t('audit.filter.since')}</span>
          <input type="datetime-local" value={since} onChange={(e) => setSince(e.target.value)} data-testid="audit-filter-since" />
        </label>
        <label className="field">
          <span>{t('audit.filter.until')}</span>
          <input type="datetime-local" value={until} onChange={(e) => setUntil(e.target.value)} data-testid="audit-filter-until" />
        </label>
        <label className="field">
          <span>{t('audit.filter.limit')}</span>
          <select value={limit} onChange={(e) => setLimit(Number(e.target.value))} data-testid="audit-filter-limit">
            {[...new Set<number>([...PAGE_SIZES, limit])]
              .sort((a, b) => a - b)
              .map((n) => (
                <option key={n} value={n}>
                  {n}
                </option>
              ))}
          </select>
        </label>
        <div className="form-actions audit-filter-actions">
          <button
            type="button"
            className="btn ghost"
            data-testid="audit-filter-reset"
            onClick={() => onApply({ kind: '', meeting: '', q: '', since: '', until: '', limit: DEFAULT_PAGE_SIZE })}
          >
            {t('audit.filter.reset')}
          </button>
          <button type="submit" className="btn primary" data-testid="audit-filter-apply">
            {t('audit.filter.apply')}
          </button>
        </div>
      </form>
    </section>
  );
}
