import { useEffect, useRef, useState } from 'react';
import { useParams } from 'react-router-dom';
import { api, ApiError } from '../../signaling/api';
import { MeetingController, type JoinOptions } from '../../meeting/controller';
import { useT } from '../../i18n';
import { useAuth } from '../auth';
import { Shell } from '../Shell';
import { describeError } from '../errors';
import { PrejoinView, type PrejoinResult } from './PrejoinView';
import { CallView } from './CallView';

interface Target {
  meetingId: string;
  title: string;
  inviteeName: string | null;
  inviteToken: string | null;
  /** Telephone dial-in of the invitation's meeting, if it has one. */
  dialIn: { meeting_number: string; phone_number: string | null } | null;
}

/** `/j/:token` (personal invitation) and `/m/:id` (plain meeting link): pre-join, then the call. */
export function JoinPage() {
  const { token, id } = useParams();
  const t = useT();
  const { session } = useAuth();
  const [target, setTarget] = useState<Target | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [call, setCall] = useState<MeetingController | null>(null);
  const callRef = useRef<MeetingController | null>(null);

  useEffect(() => {
    let cancelled = false;
    setTarget(null);
    setError(null);
    const load = async (): Promise<Target> => {
      if (token) {
        const inv = await api.invite(token);
        return {
          meetingId: String(inv.meeting_id),
          title: inv.meeting_title,
          inviteeName: inv.invitee_name,
          inviteToken: token,
          dialIn: inv.dial_in ?? null,
        };
      }
      const m = await api.publicMeeting(id ?? '');
      return { meetingId: String(m.id), title: m.title, inviteeName: null, inviteToken: null, dialIn: null };
    };
    load().then(
      (tg) => !cancelled && setTarget(tg),
      (e) => {
        if (cancelled) return;
        if (e instanceof ApiError && e.status === 410) setError(t('prejoin.inviteExpired'));
        else if (e instanceof ApiError && e.status === 404) setError(token ? t('prejoin.inviteInvalid') : t('prejoin.meetingNotFound'));
        else setError(describeError(t, e));
      },
    );
    return () => {
      cancelled = true;
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [token, id]);

  // Leave the meeting when this page goes away (navigation or closing the tab).
  useEffect(() => {
    const onHide = () => callRef.current?.dispose();
    window.addEventListener('pagehide', onHide);
    return () => {
      window.removeEventListener('pagehide', onHide);
      callRef.current?.dispose();
      callRef.current = null;
    };
  }, []);

  if (call && target) {
    return (
      <CallView
        controller={call}
        isStaff={!!session}
        onRejoin={() => {
          call.dispose();
          callRef.current = null;
          setCall(null);
        }}
      />
    );
  }

  if (error) {
    return (
      <Shell>
        <section className="card narrow" data-testid="join-error">
          <p role="alert">{error}</p>
        </section>
      </Shell>
    );
  }
  if (!target || session === undefined) {
    return (
      <Shell>
        <p className="muted page-loading">{t('common.loading')}</p>
      </Shell>
    );
  }

  const join = (r: PrejoinResult) => {
    const opts: JoinOptions = {
      meetingId: target.meetingId,
      inviteToken: target.inviteToken,
      displayName: r.displayName,
      meetingTitle: target.title,
      audioTrack: r.audioTrack,
      videoTrack: r.videoTrack,
      audioEnabled: r.audioEnabled,
      videoEnabled: r.videoEnabled,
      audioDeviceId: r.audioDeviceId,
      videoDeviceId: r.videoDeviceId,
    };
    const c = new MeetingController(opts);
    callRef.current = c;
    c.start();
    setCall(c);
  };

  return (
    <PrejoinView
      title={target.title}
      inviteeName={target.inviteeName}
      staffName={session ? session.user.display_name : null}
      needsName={!session}
      willWaitInLobby={!session && !target.inviteToken}
      dialIn={target.dialIn}
      onJoin={join}
    />
  );
}
