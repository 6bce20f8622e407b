import { useEffect, useRef, useState, type FormEvent } from 'react';
import { getCamera, getMicrophone, LevelMeter, listDevices, type DeviceLists } from '../../media/devices';
import { MAX_NAME_CHARS } from '../../signaling/protocol';
import { useT } from '../../i18n';
import { ErrorNote, Shell } from '../Shell';
import { CamIcon, CamOffIcon, MicIcon, MicOffIcon, PhoneIcon } from '../icons';
import { groupDigits } from '../../meeting/phone';
import { VideoView } from './media';
import { E2eeSession } from '../../e2ee/session';

export interface PrejoinResult {
  displayName: string | null;
  audioTrack: MediaStreamTrack | null;
  videoTrack: MediaStreamTrack | null;
  audioEnabled: boolean;
  videoEnabled: boolean;
  audioDeviceId: string | null;
  videoDeviceId: string | null;
}

interface Props {
  title: string;
  inviteeName: string | null;
  staffName: string | null;
  needsName: boolean;
  willWaitInLobby: boolean;
  /** An invitee's meeting with telephone dial-in: the numbers (the PIN came with the invitation). */
  dialIn?: { meeting_number: string; phone_number: string | null } | null;
  onJoin(r: PrejoinResult): void;
}

/** A number with spaces, kept on one line. */
const keepTogether = (s: string) => s.replace(/ /g, '\u00a0');

export function PrejoinView({ title, inviteeName, staffName, needsName, willWaitInLobby, dialIn = null, onJoin }: Props) {
  const t = useT();
  const [devices, setDevices] = useState<DeviceLists>({ audioInputs: [], videoInputs: [] });
  const [audioId, setAudioId] = useState<string | null>(null);
  const [videoId, setVideoId] = useState<string | null>(null);
  const [audioTrack, setAudioTrack] = useState<MediaStreamTrack | null>(null);
  const [videoTrack, setVideoTrack] = useState<MediaStreamTrack | null>(null);
  const [micOn, setMicOn] = useState(true);
  const [camOn, setCamOn] = useState(true);
  const [camError, setCamError] = useState(false);
  const [micError, setMicError] = useState(false);
  const [level, setLevel] = useState(0);
  const [name, setName] = useState(inviteeName ?? '');
  const [nameError, setNameError] = useState<string | null>(null);
  const handedOver = useRef(false);
  const tracks = useRef<{ a: MediaStreamTrack | null; v: MediaStreamTrack | null }>({ a: null, v: null });
  tracks.current = { a: audioTrack, v: videoTrack };

  // First access: ask for both at once (one permission prompt), then fall back to each alone.
  useEffect(() => {
    let cancelled = false;
    (async () => {
      let a: MediaStreamTrack | null = null;
      let v: MediaStreamTrack | null = null;
      try {
        const s = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        a = s.getAudioTracks()[0] ?? null;
        v = s.getVideoTracks()[0] ?? null;
        // Re-apply our preferred constraints on the camera.
        await v?.applyConstraints({ width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24, max: 30 } }).catch(() => undefined);
      } catch {
        a = await getMicrophone().catch(() => null);
        v = await getCamera().catch(() => null);
      }
      if (cancelled) {
        a?.stop();
        v?.stop();
        return;
      }
      setAudioTrack(a);
      setVideoTrack(v);
      setMicError(!a);
      setCamError(!v);
      setCamOn(!!v);
      setMicOn(!!a);
      setAudioId(a?.getSettings().deviceId ?? null);
      setVideoId(v?.getSettings().deviceId ?? null);
      setDevices(await listDevices().catch(() => ({ audioInputs: [], videoInputs: [] })));
    })();
    return () => {
      cancelled = true;
    };
  }, []);

  // Stop preview tracks when leaving the page without joining.
  useEffect(
    () => () => {
      if (!handedOver.current) {
        tracks.current.a?.stop();
        tracks.current.v?.stop();
      }
    },
    [],
  );

  // The encryption core loads while the participant checks camera and microphone.
  useEffect(() => E2eeSession.prefetch(), []);

  useEffect(() => {
    if (!audioTrack) return;
    const meter = new LevelMeter(audioTrack, setLevel);
    return () => meter.stop();
  }, [audioTrack]);

  useEffect(() => {
    if (audioTrack) audioTrack.enabled = micOn;
  }, [audioTrack, micOn]);

  async function chooseCamera(id: string) {
    setVideoId(id);
    if (!camOn) return;
    videoTrack?.stop();
    try {
      setVideoTrack(await getCamera(id));
      setCamError(false);
    } catch {
      setVideoTrack(null);
      setCamError(true);
    }
  }

  async function chooseMicrophone(id: string) {
    setAudioId(id);
    audioTrack?.stop();
    try {
      setAudioTrack(await getMicrophone(id));
      setMicError(false);
    } catch {
      setAudioTrack(null);
      setMicError(true);
    }
  }

  async function toggleCamera() {
    if (camOn) {
      videoTrack?.stop();
      setVideoTrack(null);
      setCamOn(false);
      return;
    }
    try {
      setVideoTrack(await getCamera(videoId));
      setCamOn(true);
      setCamError(false);
    } catch {
      setCamError(true);
    }
  }

  async function toggleMic() {
    if (!audioTrack && !micOn) {
      try {
        setAudioTrack(await getMicrophone(audioId));
        setMicError(false);
      } catch {
        setMicError(true);
        return;
      }
    }
    setMicOn(!micOn);
  }

  // No plaintext path: a browser that cannot encrypt frames does not join at all.
  const e2eeSupported = E2eeSession.supported();

  function submit(e: FormEvent) {
    e.preventDefault();
    if (!e2eeSupported) return;
    const trimmed = name.trim();
    if (needsName && !trimmed) {
      setNameError(t('prejoin.nameRequired'));
      return;
    }
    handedOver.current = true;
    onJoin({
      displayName: staffName ? null : trimmed || null,
      audioTrack,
      videoTrack: camOn ? videoTrack : null,
      audioEnabled: micOn && !!audioTrack,
      videoEnabled: camOn && !!videoTrack,
      audioDeviceId: audioId,
      videoDeviceId: videoId,
    });
  }

  const levelPct = Math.round((micOn ? level : 0) * 100);

  return (
    <Shell>
      <div className="prejoin" data-testid="prejoin-page">
        <div className="prejoin-preview">
          <div className="preview-box">
            {videoTrack && camOn ? (
              <VideoView track={videoTrack} mirrored muted className="preview-video" testId="preview-video" />
            ) : (
              <div className="preview-off">
                <CamOffIcon width={40} height={40} />
                <span>{t('prejoin.noPreview')}</span>
              </div>
            )}
            <div className="preview-controls">
              <button
                type="button"
                className={`round-btn${micOn ? '' : ' off'}`}
                onClick={toggleMic}
                aria-pressed={!micOn}
                aria-label={micOn ? t('prejoin.micOn') : t('prejoin.micOff')}
                title={micOn ? t('prejoin.micOn') : t('prejoin.micOff')}
                data-testid="prejoin-mic-toggle"
              >
                {micOn ? <MicIcon /> : <MicOffIcon />}
              </button>
              <button
                type="button"
                className={`round-btn${camOn ? '' : ' off'}`}
                onClick={toggleCamera}
                aria-pressed={!camOn}
                aria-label={camOn ? t('prejoin.cameraOn') : t('prejoin.cameraOff')}
                title={camOn ? t('prejoin.cameraOn') : t('prejoin.cameraOff')}
                data-testid="prejoin-camera-toggle"
              >
                {camOn ? <CamIcon /> : <CamOffIcon />}
              </button>
            </div>
          </div>
          <div className="meter" aria-label={t('prejoin.level')} role="meter" aria-valuemin={0} aria-valuemax={100} aria-valuenow={levelPct} data-testid="mic-level">
            <MicIcon width={16} height={16} />
            <div className="meter-track">
              <div className="meter-fill" style={{ width: `${levelPct}%` }} />
            </div>
          </div>
          <p className="hint">{t('prejoin.permission')}</p>
        </div>

        <form className="card prejoin-form" onSubmit={submit} noValidate>
          <h1 className="prejoin-title" data-testid="prejoin-meeting-title">
            {title}
          </h1>
          {inviteeName && (
            <p className="badge invite-badge" data-testid="prejoin-invitee">
              {t('prejoin.invitedAs', { name: inviteeName })}
            </p>
          )}
          <h2 className="subtle">{t('prejoin.title')}</h2>

          {staffName ? (
            <p className="muted">{t('prejoin.joinAs', { name: staffName })}</p>
          ) : (
            <label className="field">
              <span>{t('prejoin.yourName')}</span>
              <input
                value={name}
                onChange={(e) => {
                  setName(e.target.value);
                  setNameError(null);
                }}
                maxLength={MAX_NAME_CHARS}
                autoComplete="name"
                aria-describedby="name-hint"
                aria-invalid={!!nameError}
                data-testid="display-name-input"
              />
              <small id="name-hint" className="hint">
                {t('prejoin.yourNameHint')}
              </small>
            </label>
          )}

          <label className="field">
            <span>{t('prejoin.camera')}</span>
            <select value={videoId ?? ''} onChange={(e) => void chooseCamera(e.target.value)} disabled={devices.videoInputs.length === 0} data-testid="camera-select">
              {devices.videoInputs.length === 0 && <option value="">–</option>}
              {devices.videoInputs.map((d, i) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || `${t('prejoin.camera')} ${i + 1}`}
                </option>
              ))}
            </select>
          </label>
          {camError && <p className="notice warn small">{t('prejoin.noCamera')}</p>}
          <label className="field">
            <span>{t('prejoin.microphone')}</span>
            <select value={audioId ?? ''} onChange={(e) => void chooseMicrophone(e.target.value)} disabled={devices.audioInputs.length === 0} data-testid="microphone-select">
              {devices.audioInputs.length === 0 && <option value="">–</option>}
              {devices.audioInputs.map((d, i) => (
                <option key={d.deviceId} value={d.deviceId}>
                  {d.label || `${t('prejoin.microphone')} ${i + 1}`}
                </option>
              ))}
            </select>
          </label>
          {micError && <p className="notice warn small">{t('prejoin.noMicrophone')}</p>}
          {willWaitInLobby && <p className="notice info small">{t('prejoin.lobbyHint')}</p>}
          {dialIn && (
            <div className="notice info small dial-in-note" data-testid="prejoin-dial-in" data-number={dialIn.meeting_number}>
              <PhoneIcon width={18} height={18} />
              <span>
                {dialIn.phone_number
                  ? t('prejoin.dialIn', { phone: keepTogether(dialIn.phone_number), number: keepTogether(groupDigits(dialIn.meeting_number)) })
                  : t('prejoin.dialInNoPhone', { number: keepTogether(groupDigits(dialIn.meeting_number)) })}{' '}
                {t('prejoin.dialInLeg')}
              </span>
            </div>
          )}
          <ErrorNote text={nameError} />
          {!e2eeSupported && (
            <p className="notice warn" role="alert" data-testid="e2ee-unsupported">
              {t('prejoin.unsupported')}
            </p>
          )}
          <button type="submit" className="btn primary block large" data-testid="join-button" disabled={!e2eeSupported}>
            {t('prejoin.join')}
          </button>
        </form>
      </div>
    </Shell>
  );
}
