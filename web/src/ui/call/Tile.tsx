import type { Participant } from '../../signaling/protocol';
import { phoneLabel, type PhoneCaller } from '../../meeting/phone';
import { useT } from '../../i18n';
import { CamOffIcon, ExpandIcon, HandIcon, MicIcon, MicOffIcon, PhoneIcon, ShrinkIcon } from '../icons';
import { VideoView } from './media';
import { videoKey } from '../../meeting/tiles';
import { PhoneBadge } from './Phone';

function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[parts.length - 1][0] : (parts[0] ?? '?').slice(0, 2);
  return s.toUpperCase();
}

/** A stable, calm colour per name for avatars. */
function hue(name: string): number {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) % 360;
  return h;
}

export function KindBadge({ p }: { p: Participant }) {
  const t = useT();
  return <span className={`badge kind-${p.kind}`}>{t(`kind.${p.kind}`)}</span>;
}

/**
 * One participant on the stage. A telephone caller (`phone` set) has an audio-only tile: the
 * phone badge, the caller's label, and never a video. Remote audio plays outside the tiles (the
 * room's audio sinks), so a participant on another page of the grid is still heard.
 */
export function Tile({
  participant,
  video,
  isSelf,
  speaking,
  compact = false,
  phone = null,
  pinned = false,
  forEveryone = false,
  onPin,
}: {
  participant: Participant;
  video: MediaStreamTrack | null;
  isSelf: boolean;
  speaking: boolean;
  compact?: boolean;
  phone?: PhoneCaller | null;
  /** Shown large on the stage (by this viewer's choice, or a moderator's: `forEveryone`). */
  pinned?: boolean;
  /** Shown large because a moderator shows this person large to everyone. */
  forEveryone?: boolean;
  /** Shows this participant large, or back in the grid (no button without it). */
  onPin?: () => void;
}) {
  const t = useT();
  const label = phone ? phoneLabel(t, phone) : null;
  const name = label ?? (isSelf ? t('room.youSuffix', { name: participant.display_name }) : participant.display_name);
  const showVideo = !phone && !!video && !participant.video_muted;
  return (
    <figure
      className={`tile${speaking ? ' speaking' : ''}${isSelf ? ' self' : ''}${compact ? ' compact' : ''}${phone ? ' phone' : ''}${pinned ? ' pinned' : ''}`}
      data-testid="video-tile"
      data-participant-id={participant.id}
      data-participant-name={participant.display_name}
      data-self={isSelf ? 'true' : undefined}
      data-phone={phone ? 'true' : undefined}
      aria-label={name}
    >
      {showVideo ? (
        <VideoView track={video} mirrored={isSelf} videoKey={isSelf ? undefined : videoKey(participant.id, 'camera')} />
      ) : phone ? (
        <div className="avatar phone-avatar" aria-hidden="true" data-testid="phone-avatar">
          <span>
            <PhoneIcon width="45%" height="45%" />
          </span>
        </div>
      ) : (
        <div className="avatar" style={{ ['--h' as string]: hue(participant.display_name) }} aria-hidden="true">
          <span>{initials(participant.display_name)}</span>
        </div>
      )}
      <figcaption className="nameplate">
        {participant.hand_raised_at !== null && (
          <span className="state-icon hand-icon" title={t('hands.raised')} data-testid="tile-hand">
            <HandIcon width={16} height={16} />
            <span className="sr-only">{t('hands.raised')}</span>
          </span>
        )}
        <span className={`state-icon${participant.audio_muted ? ' muted' : ''}`} title={participant.audio_muted ? t('room.muted') : t('room.mic')}>
          {participant.audio_muted ? <MicOffIcon width={16} height={16} /> : <MicIcon width={16} height={16} />}
          <span className="sr-only">{participant.audio_muted ? t('room.muted') : ''}</span>
        </span>
        {phone && <PhoneBadge />}
        <span className="name" title={label ?? undefined} data-testid={phone ? 'phone-label' : undefined}>
          {name}
        </span>
        {!compact && !phone && <KindBadge p={participant} />}
      </figcaption>
      {participant.video_muted && !phone && (
        <span className="corner-icon" title={t('room.cameraOff')}>
          <CamOffIcon width={16} height={16} />
          <span className="sr-only">{t('room.cameraOff')}</span>
        </span>
      )}
      {speaking && <span className="sr-only">{t('room.speaking')}</span>}
      {forEveryone && (
        <span className="spotlight-badge" data-testid="spotlight-badge">
          {t('room.spotlit')}
        </span>
      )}
      {onPin && (
        <button
          type="button"
          className="pin-btn"
          onClick={onPin}
          aria-pressed={pinned}
          aria-label={t(pinned ? 'room.unpin' : 'room.pin', { name: participant.display_name })}
          title={t(pinned ? 'room.unpin' : 'room.pin', { name: participant.display_name })}
          data-testid="pin-button"
        >
          {pinned ? <ShrinkIcon width={18} height={18} /> : <ExpandIcon width={18} height={18} />}
        </button>
      )}
    </figure>
  );
}

export function ScreenTile({ name, track, self, participantId }: { name: string; track: MediaStreamTrack; self: boolean; participantId: string }) {
  const t = useT();
  return (
    <figure
      className="tile screen"
      data-testid={self ? 'local-screen-tile' : 'screen-tile'}
      data-participant-id={participantId}
      aria-label={self ? t('room.yourScreen') : t('room.screenOf', { name })}
    >
      <VideoView track={track} fit="contain" videoKey={self ? undefined : videoKey(participantId, 'screen')} />
      <figcaption className="nameplate">
        <span className="name">{self ? t('room.yourScreen') : t('room.screenOf', { name })}</span>
      </figcaption>
    </figure>
  );
}
