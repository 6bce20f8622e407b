// End-to-end encryption in the meeting room: the always-visible indicator, the security code,
// the verification warnings, the diagnostics view and the notice line for joins and leaves.
import { useEffect, useState } from 'react';
import type { MeetingController, NoticeEntry } from '../../meeting/controller';
import type { E2eeDiagnostics, E2eeNotice, E2eeStatus, VerificationFlag } from '../../e2ee/types';
import { useT, type StringKey, type Translate } from '../../i18n';
import { indicatorStateKey } from '../../meeting/phone';
import type { MediaTransport } from '../../media/peer';
import { LockIcon, PhoneIcon, ShieldIcon, UnlockIcon } from '../icons';

export type E2eeLevel = 'active' | 'waiting' | 'warning' | 'failed';

/** One word for the whole state: failed beats warning beats waiting beats active. */
export function e2eeLevel(s: E2eeStatus | null): E2eeLevel {
  if (!s || s.phase === 'starting' || s.phase === 'waiting') return 'waiting';
  if (s.phase !== 'active') return 'failed';
  const flagged = s.outsiders.some((o) => o.flags.length > 0) || s.roster.some((r) => r.flags.length > 0);
  return flagged ? 'warning' : 'active';
}

export function E2eeIndicator({ status, phoneCount = 0, onClick }: { status: E2eeStatus | null; phoneCount?: number; onClick(): void }) {
  const t = useT();
  const level = e2eeLevel(status);
  const key = indicatorStateKey(level, phoneCount);
  const phone = level === 'active' && phoneCount > 0;
  return (
    <button
      type="button"
      className={`badge e2ee-badge e2ee-${level}${phone ? ' e2ee-phone' : ''}`}
      onClick={onClick}
      data-testid="e2ee-indicator"
      data-state={level}
      data-phone={phoneCount}
      title={t(`${key}.hint`)}
    >
      {level === 'active' ? <LockIcon width={14} height={14} /> : level === 'waiting' ? <ShieldIcon width={14} height={14} /> : <UnlockIcon width={14} height={14} />}
      {phone && <PhoneIcon width={14} height={14} />} {t(key)}
    </button>
  );
}

/** The security code in groups, as read aloud. */
export function SecurityCode({ code }: { code: string | null }) {
  const t = useT();
  if (!code) return <p className="muted small">{t('e2ee.codePending')}</p>;
  return (
    <p className="security-code" data-testid="security-code" aria-label={t('e2ee.code')}>
      {code.split(/\s+/).map((g, i) => (
        <span key={i} className="code-group">
          {g}
        </span>
      ))}
    </p>
  );
}

export function flagText(t: Translate, f: VerificationFlag): string {
  return t(`e2ee.flag.${f}` as StringKey);
}

export function E2eeSection({ status, phoneCount = 0, controller }: { status: E2eeStatus | null; phoneCount?: number; controller: MeetingController }) {
  const t = useT();
  const level = e2eeLevel(status);
  const [diag, setDiag] = useState<E2eeDiagnostics | null>(null);
  const [transport, setTransport] = useState<MediaTransport | null>(null);
  const refresh = () => {
    void controller.e2eeDiagnostics().then(setDiag);
    void controller.mediaTransport().then(setTransport);
  };
  useEffect(refresh, [controller]);
  // While the diagnostics are open, they follow the connection (a new candidate pair, say).
  const [open, setOpen] = useState(false);
  useEffect(() => {
    if (!open) return;
    const timer = setInterval(refresh, 2000);
    return () => clearInterval(timer);
  }, [open, controller]);
  const dropped = diag?.transforms.reduce((n, x) => n + x.droppedFailed + x.droppedNoKey, 0) ?? 0;
  return (
    <section className="panel-section" data-testid="e2ee-section" data-state={level}>
      <h4>{t('e2ee.title')}</h4>
      <p className={`notice small ${level === 'active' ? 'ok' : level === 'waiting' ? 'info' : 'warn'}`} data-testid="e2ee-state-hint">
        {t(`${indicatorStateKey(level, phoneCount)}.hint`)}
      </p>
      <h4>{t('e2ee.code')}</h4>
      <SecurityCode code={status?.phase === 'active' ? status.securityCode : null} />
      <p className="small muted">{t('e2ee.codeHint')}</p>
      {status && status.warnings.length > 0 && (
        <>
          <h4>{t('e2ee.warnings')}</h4>
          <ul className="e2ee-warnings" data-testid="e2ee-warnings">
            {status.warnings.map((w, i) => (
              <li key={i} className="notice warn small" data-code={w.code}>
                {t(`e2ee.warning.${w.code}` as StringKey)}
              </li>
            ))}
          </ul>
        </>
      )}
      <details className="diagnostics" data-testid="e2ee-diagnostics"
        onToggle={(e) => {
          setOpen(e.currentTarget.open);
          refresh();
        }}
      >
        <summary>{t('e2ee.diagnostics')}</summary>
        <p className="small">
          {t('e2ee.diagEpoch', { epoch: status?.epoch ?? '–', leaf: status?.ownLeaf ?? '–' })}
        </p>
        <p className="small" data-testid="media-transport" data-transport={transport?.kind ?? ''} data-family={transport?.ipv6 == null ? '' : transport.ipv6 ? 'ipv6' : 'ipv4'}>
          {t('e2ee.diagTransport', { transport: transportText(t, transport) })}
        </p>
        <p className="small" data-testid="e2ee-dropped" data-dropped={dropped}>
          {t('e2ee.diagDropped', { n: dropped })}
        </p>
        <table className="diag-table small">
          <thead>
            <tr>
              <th>{t('e2ee.diagStream')}</th>
              <th>{t('e2ee.diagOk')}</th>
              <th>{t('e2ee.diagNoKey')}</th>
              <th>{t('e2ee.diagFailed')}</th>
            </tr>
          </thead>
          <tbody>
            {diag?.transforms.map((x) => (
              <tr key={x.id}>
                <td>{x.side === 'send' ? `↑ ${x.source ?? x.kind}` : `↓ ${x.kind} ${x.mid ?? ''}`}</td>
                <td>{x.side === 'send' ? x.encrypted : x.decrypted}</td>
                <td>{x.droppedNoKey}</td>
                <td>{x.droppedFailed}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <button type="button" className="btn ghost tiny" onClick={refresh}>
          {t('e2ee.diagRefresh')}
        </button>
      </details>
    </section>
  );
}

/** The own media connection's transport, for the diagnostics view. */
function transportText(t: Translate, m: MediaTransport | null): string {
  if (!m) return '–';
  const how = m.kind === 'relay' ? t('e2ee.transport.relay', { protocol: (m.relayProtocol ?? '?').toUpperCase() }) : t(m.kind === 'tcp' ? 'e2ee.transport.tcp' : 'e2ee.transport.udp');
  return m.ipv6 === null ? how : `${how} · ${m.ipv6 ? 'IPv6' : 'IPv4'}`;
}

export function noticeText(t: Translate, n: E2eeNotice): string | null {
  const names = (m: { displayName: string }[]) => m.map((x) => x.displayName).join(', ');
  switch (n.type) {
    case 'joined':
      return t('e2ee.notice.joined', { names: names(n.members) });
    case 'left':
      return t('e2ee.notice.left', { names: names(n.members) });
    case 'self_joined':
      return t(n.created ? 'e2ee.notice.created' : 'e2ee.notice.selfJoined');
    case 'self_removed':
      return t('e2ee.notice.selfRemoved');
    case 'refused':
      return t(`e2ee.notice.refused.${n.reason}` as StringKey, { name: n.displayName ?? n.participantId });
    case 'warning':
      return t(`e2ee.warning.${n.warning.code}` as StringKey);
  }
}

/** The latest notices, newest last (joins and leaves as the MLS group reports them). */
export function NoticeLine({ notices }: { notices: NoticeEntry[] }) {
  const t = useT();
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const id = setInterval(() => setNow(Date.now()), 2000);
    return () => clearInterval(id);
  }, []);
  const recent = notices.filter((n) => now - n.at < 12_000 && n.notice.type !== 'self_joined').slice(-3);
  return (
    <div className="notice-line" aria-live="polite" data-testid="e2ee-notices">
      {recent.map((n) => {
        const text = noticeText(t, n.notice);
        if (!text) return null;
        const warn = n.notice.type === 'warning' || n.notice.type === 'refused' || n.notice.type === 'self_removed';
        return (
          <div key={n.seq} className={`notice-pill${warn ? ' warn' : ''}`} data-testid="e2ee-notice" data-type={n.notice.type}>
            {text}
          </div>
        );
      })}
    </div>
  );
}
