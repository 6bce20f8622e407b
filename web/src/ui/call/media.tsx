import { useEffect, useRef } from 'react';

/** Renders one video track. */
export function VideoView({
  track,
  mirrored = false,
  muted = true,
  className = '',
  fit = 'cover',
  testId,
  videoKey,
}: {
  track: MediaStreamTrack;
  mirrored?: boolean;
  muted?: boolean;
  className?: string;
  fit?: 'cover' | 'contain';
  testId?: string;
  /** A remote video: `<participant id>/<source>`, for the videos the page shows (meeting/tiles.ts). */
  videoKey?: string;
}) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.srcObject = new MediaStream([track]);
    el.play().catch(() => undefined);
    return () => {
      el.srcObject = null;
    };
  }, [track]);
  return (
    <video
      ref={ref}
      autoPlay
      playsInline
      muted={muted}
      className={`video ${fit}${mirrored ? ' mirrored' : ''} ${className}`}
      data-testid={testId}
      data-video-key={videoKey}
    />
  );
}

/** Plays one remote audio track (invisible). */
export function AudioSink({ track }: { track: MediaStreamTrack }) {
  const ref = useRef<HTMLAudioElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.srcObject = new MediaStream([track]);
    el.play().catch(() => undefined);
    return () => {
      el.srcObject = null;
    };
  }, [track]);
  return <audio ref={ref} autoPlay />;
}
