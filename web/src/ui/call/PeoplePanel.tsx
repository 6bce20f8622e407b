import { useState } from 'react';
import type { JoinMethod, LobbyEntry, Participant } from '../../signaling/protocol';
import type { MeetingController } from '../../meeting/controller';
import type { E2eeStatus, OutsiderView, RosterView } from '../../e2ee/types';
import { flagText } from './E2ee';
import { useT, type Translate } from '../../i18n';
import { MicIcon, MicOffIcon, CamIcon, CamOffIcon, LockIcon, UnlockIcon, ScreenIcon, HandIcon } from '../icons';
import { KindBadge } from './Tile';
import { callerOf, lobbyCaller, type PhoneCaller } from '../../meeting/phone';
import { CallerLabel, PhoneBadge } from './Phone';

export function joinMethodText(t: Translate, m: JoinMethod): string {
  switch (m.method) {
    case 'staff_login':
      return t('join.staff_login');
    case 'invitation':
      return t('join.invitation', { invitee: m.invitee, invited_by: m.invited_by });
    case 'lobby':
      return t('join.lobby', { admitted_by: m.admitted_by });
  }
}

/** A button that asks for confirmation inline (no browser dialogs). */
function ConfirmButton({ label, confirmLabel, onConfirm, testId, className = 'btn danger-ghost small' }: { label: string; confirmLabel: string; onConfirm(): void; testId: string; className?: string }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return (
      <button type="button" className={className} onClick={() => setAsking(true)} data-testid={testId}>
        {label}
      </button>
    );
  }
  return (
    <span className="confirm">
      <span className="confirm-text">{confirmLabel}</span>
      <button type="button" className="btn danger small" onClick={() => { setAsking(false); onConfirm(); }} data-testid={`${testId}-confirm`} autoFocus>
        {label}
      </button>
      <ConfirmCancel onClick={() => setAsking(false)} />
    </span>
  );
}

function ConfirmCancel({ onClick }: { onClick(): void }) {
  const t = useT();
  return (
    <button type="button" className="btn ghost small" onClick={onClick}>
      {t('common.cancel')}
    </button>
  );
}

/** One person waiting in the lobby; a telephone caller with the phone badge and label. */
function LobbyItem({ entry: e, controller }: { entry: LobbyEntry; controller: MeetingController }) {
  const t = useT();
  const caller = lobbyCaller(e);
  return (
    <li
      className={`lobby-entry${caller ? ' phone' : ''}`}
      data-testid="lobby-entry"
      data-participant-id={e.id}
      data-name={e.display_name}
      data-phone={caller ? 'true' : undefined}
    >
      <div className="who-line">
        {caller ? (
          <span className="who-main">
            <CallerLabel caller={caller} />
          </span>
        ) : (
          <>
            <strong>{e.display_name}</strong>
            <span className={`badge kind-${e.kind}`}>{t(`kind.${e.kind}`)}</span>
          </>
        )}
      </div>
      <div className="small muted">
        {e.invitation ? t('people.invitation', { name: e.invitation }) : t('people.noInvitation')} · {t(`people.reason.${e.reason}`)}
      </div>
      <div className="row-actions">
        <button type="button" className="btn primary small" onClick={() => controller.admit(e.id)} data-testid="admit-button">
          {t('people.admit')}
        </button>
        <button type="button" className="btn ghost small" onClick={() => controller.deny(e.id)} data-testid="deny-button">
          {t('people.deny')}
        </button>
      </div>
    </li>
  );
}

/** Raised hands, earliest first: the order of requests to speak. */
export function raisedHands(participants: Participant[]): Participant[] {
  return participants
    .filter((p) => p.hand_raised_at !== null)
    .sort((a, b) => (a.hand_raised_at ?? 0) - (b.hand_raised_at ?? 0) || a.id.localeCompare(b.id));
}

function HandsSection({
  controller,
  participants,
  selfId,
  isModerator,
  callerIds,
}: {
  controller: MeetingController;
  participants: Participant[];
  selfId: string | null;
  isModerator: boolean;
  callerIds: Set<string>;
}) {
  const t = useT();
  const hands = raisedHands(participants);
  if (hands.length === 0) return null;
  return (
    <section className="panel-section" aria-labelledby="hands-h" data-testid="hands-section">
      <h3 id="hands-h">
        <HandIcon width={18} height={18} /> {t('hands.title', { n: hands.length })}
      </h3>
      <ol className="hand-list">
        {hands.map((p, i) => (
          <li key={p.id} className="hand-entry" data-testid="hand-entry" data-participant-id={p.id} data-name={p.display_name} data-position={i + 1}>
            <span>
              {i + 1}. {p.id === selfId ? t('room.youSuffix', { name: p.display_name }) : p.display_name}
              {callerIds.has(p.id) && (
                <>
                  {' '}
                  <PhoneBadge />
                </>
              )}
            </span>
            {isModerator && (
              <button type="button" className="btn secondary tiny" onClick={() => controller.lowerHand(p.id)} data-testid="lower-hand-button">
                {t('hands.lower')}
              </button>
            )}
          </li>
        ))}
      </ol>
    </section>
  );
}

export function PeoplePanel({
  controller,
  participants,
  lobby,
  selfId,
  isModerator,
  locked,
  spotlight,
  status,
  callers,
}: {
  controller: MeetingController;
  participants: Participant[];
  lobby: LobbyEntry[];
  selfId: string | null;
  isModerator: boolean;
  locked: boolean;
  /** Whom a moderator shows large to everyone (`meeting.spotlight`). */
  spotlight: string | null;
  status: E2eeStatus | null;
  /** The telephone callers present (meeting/phone.ts `phoneCallers`). */
  callers: PhoneCaller[];
}) {
  const t = useT();
  const callerIds = new Set(callers.flatMap((c) => (c.participantId !== null ? [c.participantId] : [])));
  // Once this browser is in the MLS group, the list is the group's roster; the server's
  // participants that are not in it are listed apart, flagged once their grace period is over.
  const fromRoster = status?.phase === 'active';
  const byId = new Map(participants.map((p) => [p.id, p]));
  // Only the organiser grants and revokes moderation (the server refuses it from anyone else).
  const selfIsOrganiser = selfId !== null && byId.get(selfId)?.organiser === true;
  const rows: { key: string; p: Participant | null; member: RosterView | null; outsider: OutsiderView | null }[] = fromRoster
    ? [
        ...status.roster.map((m) => ({ key: `leaf-${m.leaf}`, p: m.participantId ? byId.get(m.participantId) ?? null : null, member: m, outsider: null })),
        ...status.outsiders.map((o) => ({ key: `out-${o.participantId}`, p: byId.get(o.participantId) ?? null, member: null, outsider: o })),
      ]
    : participants.map((p) => ({ key: p.id, p, member: null, outsider: null }));
  const count = fromRoster ? status.roster.length : participants.length;
  return (
    <div className="people">
      {isModerator && (
        <section className="panel-section" aria-labelledby="lobby-h" data-testid="lobby-section">
          <h3 id="lobby-h">
            {t('people.lobby', { n: lobby.length })}
          </h3>
          {lobby.length === 0 ? (
            <p className="muted small">{t('people.lobbyEmpty')}</p>
          ) : (
            <ul className="lobby-list">
              {lobby.map((e) => (
                <LobbyItem key={e.id} entry={e} controller={controller} />
              ))}
            </ul>
          )}
        </section>
      )}

      <HandsSection controller={controller} participants={participants} selfId={selfId} isModerator={isModerator} callerIds={callerIds} />

      <section className="panel-section" aria-labelledby="people-h">
        <h3 id="people-h">{t('people.title', { n: count })}</h3>
        {!fromRoster && <p className="notice info small" data-testid="list-from-server">{t('e2ee.listFromServer')}</p>}
        <ul className="participant-list">
          {rows.map(({ key, p, member, outsider }) => {
            const isSelf = member ? member.self : p?.id === selfId;
            const name = member ? member.displayName : (p?.display_name ?? '');
            const flags = member?.flags ?? outsider?.flags ?? [];
            const verified = !!member && flags.length === 0;
            // A telephone caller by either side's word: the server's kind or the credential's.
            const caller = isSelf ? null : callerOf(p, member);
            return (
              <li
                key={key}
                className={`participant-item${flags.length ? ' flagged' : ''}${outsider && !flags.length ? ' joining' : ''}${caller ? ' phone' : ''}`}
                data-testid="participant-item"
                data-participant-id={p?.id ?? member?.participantId ?? outsider?.participantId ?? ''}
                data-name={name}
                data-verified={verified ? 'true' : 'false'}
                data-leaf={member?.leaf ?? ''}
                data-flags={flags.join(' ')}
                data-phone={caller ? 'true' : undefined}
              >
                <div className="who-line">
                  <div className="who-main">
                    {caller ? (
                      <CallerLabel caller={caller} />
                    ) : (
                      <>
                        <strong>{isSelf ? t('room.youSuffix', { name }) : name}</strong>
                        {p ? <KindBadge p={p} /> : member && <span className={`badge kind-${member.kind}`}>{t(`kind.${member.kind}`)}</span>}
                      </>
                    )}
                    {p?.organiser ? (
                      <span className="badge role-moderator" data-testid="organiser-badge">{t('role.organiser')}</span>
                    ) : (
                      p?.role === 'moderator' && <span className="badge role-moderator">{t('role.moderator')}</span>
                    )}
                    {verified && (
                      <span className="verified" role="img" title={t('e2ee.verified')} aria-label={t('e2ee.verified')}>
                        <LockIcon width={14} height={14} />
                      </span>
                    )}
                  </div>
                  {p && (
                    <span className="state-icons">
                      {p.hand_raised_at !== null && <HandIcon width={16} height={16} className="hand-icon" aria-label={t('hands.raised')} />}
                      {p.screen_sharing && <ScreenIcon width={16} height={16} aria-label={t('room.screen')} />}
                      {p.audio_muted ? <MicOffIcon width={16} height={16} className="muted-icon" /> : <MicIcon width={16} height={16} />}
                      {/* A caller has no camera: no camera state to show. */}
                      {!caller && (p.video_muted ? <CamOffIcon width={16} height={16} className="muted-icon" /> : <CamIcon width={16} height={16} />)}
                    </span>
                  )}
                </div>
                {p && (
                  <div className="join-method small" data-testid="join-method">
                    {joinMethodText(t, p.join_method)}
                  </div>
                )}
                {member && p && p.display_name !== member.displayName && <div className="small muted">{t('e2ee.serverName', { name: p.display_name })}</div>}
                {outsider && !flags.length && !outsider.awaitsAdmission && <div className="small muted">{t('e2ee.joining')}</div>}
                {outsider?.awaitsAdmission && (
                  <div className="small muted" data-testid="awaits-admission">
                    {t('e2ee.awaitsAdmission')}
                  </div>
                )}
                {isModerator && outsider?.awaitsAdmission && (
                  <div className="row-actions">
                    <button
                      type="button"
                      className="btn primary tiny"
                      onClick={() => controller.admit(outsider.participantId)}
                      data-testid="admit-to-group-button"
                    >
                      {t('e2ee.admitToGroup')}
                    </button>
                  </div>
                )}
                {flags.map((f) => (
                  <div key={f} className="notice warn small" data-testid="verification-warning" data-flag={f}>
                    {flagText(t, f)}
                  </div>
                ))}
                {isModerator && !isSelf && p && (
                  <div className="row-actions">
                    <button type="button" className="btn secondary tiny" onClick={() => controller.mute(p.id, !p.muted_by_moderator)} data-testid="mute-button" data-muted={p.muted_by_moderator ? 'true' : 'false'}>
                      {p.muted_by_moderator ? t('people.unmute') : t('people.mute')}
                    </button>
                    {/* A caller has no camera to show large. */}
                    {!caller && (
                      <button
                        type="button"
                        className="btn secondary tiny"
                        onClick={() => controller.spotlight(spotlight === p.id ? null : p.id)}
                        aria-pressed={spotlight === p.id}
                        data-testid="spotlight-button"
                      >
                        {spotlight === p.id ? t('people.spotlightOff') : t('people.spotlight')}
                      </button>
                    )}
                    {/* A caller cannot moderate from a telephone (unless the server made them one). */}
                    {selfIsOrganiser && (!caller || p.role === 'moderator') && (
                      <button
                        type="button"
                        className="btn secondary tiny"
                        onClick={() => controller.setModerator(p.id, p.role !== 'moderator')}
                        data-testid="moderator-button"
                      >
                        {p.role === 'moderator' ? t('people.revokeModerator') : t('people.makeModerator')}
                      </button>
                    )}
                    {/* Nobody removes the organiser from their meeting. */}
                    {!p.organiser && (
                      <ConfirmButton
                        label={t('people.remove')}
                        confirmLabel={t(caller ? 'phone.removeConfirm' : 'people.removeConfirm', { name })}
                        onConfirm={() => controller.remove(p.id)}
                        testId="remove-button"
                        className="btn danger-ghost tiny"
                      />
                    )}
                  </div>
                )}
              </li>
            );
          })}
        </ul>
      </section>

      {isModerator && (
        <section className="panel-section" aria-labelledby="mod-h">
          <h3 id="mod-h">{t('people.moderation')}</h3>
          <label className="switch-row">
            <span className="switch-label">
              {locked ? <LockIcon width={18} height={18} /> : <UnlockIcon width={18} height={18} />}
              {t('people.lock')}
            </span>
            <input type="checkbox" role="switch" className="switch" checked={locked} onChange={(e) => controller.setLocked(e.target.checked)} data-testid="lock-toggle" />
          </label>
          <p className="muted small">{t('people.lockHint')}</p>
          <ConfirmButton
            label={t('people.endForAll')}
            confirmLabel={t('people.endConfirm')}
            onConfirm={() => controller.endMeeting()}
            testId="end-meeting-button"
            className="btn danger small"
          />
        </section>
      )}
    </div>
  );
}
