// Local capture: cameras, microphones, level meter, and a small notification sound.

export interface DeviceLists {
  audioInputs: MediaDeviceInfo[];
  videoInputs: MediaDeviceInfo[];
}

export const VIDEO_CONSTRAINTS: MediaTrackConstraints = {
  width: { ideal: 1280 },
  height: { ideal: 720 },
  frameRate: { ideal: 24, max: 30 },
};

export const AUDIO_CONSTRAINTS: MediaTrackConstraints = {
  echoCancellation: true,
  noiseSuppression: true,
  autoGainControl: true,
};

export async function listDevices(): Promise<DeviceLists> {
  if (!navigator.mediaDevices?.enumerateDevices) return { audioInputs: [], videoInputs: [] };
  const all = await navigator.mediaDevices.enumerateDevices();
  return {
    audioInputs: all.filter((d) => d.kind === 'audioinput' && d.deviceId !== ''),
    videoInputs: all.filter((d) => d.kind === 'videoinput' && d.deviceId !== ''),
  };
}

export async function getCamera(deviceId?: string | null): Promise<MediaStreamTrack> {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { ...VIDEO_CONSTRAINTS, ...(deviceId ? { deviceId: { exact: deviceId } } : {}) },
  });
  return stream.getVideoTracks()[0];
}

export async function getMicrophone(deviceId?: string | null): Promise<MediaStreamTrack> {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { ...AUDIO_CONSTRAINTS, ...(deviceId ? { deviceId: { exact: deviceId } } : {}) },
  });
  return stream.getAudioTracks()[0];
}

/**
 * A shared screen is for reading: full HD at up to 15 frames per second (documents and slides
 * change rarely; text needs its pixels more than motion needs frames).
 */
export const SCREEN_CONSTRAINTS: MediaTrackConstraints = {
  width: { ideal: 1920, max: 1920 },
  height: { ideal: 1080, max: 1080 },
  frameRate: { ideal: 15, max: 15 },
};

export async function getScreen(): Promise<MediaStreamTrack> {
  const stream = await navigator.mediaDevices.getDisplayMedia({ video: SCREEN_CONSTRAINTS, audio: false });
  const track = stream.getVideoTracks()[0];
  // Tells the encoder to keep detail (sharp text) rather than smooth motion.
  track.contentHint = 'detail';
  return track;
}

let sharedAudioContext: AudioContext | null = null;

function audioContext(): AudioContext | null {
  if (typeof AudioContext === 'undefined') return null;
  if (!sharedAudioContext) sharedAudioContext = new AudioContext();
  if (sharedAudioContext.state === 'suspended') void sharedAudioContext.resume().catch(() => undefined);
  return sharedAudioContext;
}

/** Reports the level (0..1) of an audio track about 20 times a second. */
export class LevelMeter {
  private source: MediaStreamAudioSourceNode | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(track: MediaStreamTrack, onLevel: (level: number) => void) {
    const ctx = audioContext();
    if (!ctx) return;
    this.source = ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    this.source.connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    this.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(data);
      let sum = 0;
      for (const v of data) sum += v * v;
      const rms = Math.sqrt(sum / data.length);
      // Map roughly -60 dB..0 dB to 0..1.
      const db = 20 * Math.log10(rms || 1e-8);
      onLevel(Math.min(1, Math.max(0, (db + 60) / 60)));
    }, 50);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.source?.disconnect();
    this.source = null;
  }
}

/** A short, gentle two-tone chime (someone is waiting in the lobby). */
export function playChime(): void {
  const ctx = audioContext();
  if (!ctx) return;
  const now = ctx.currentTime;
  [660, 880].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.value = freq;
    const t = now + i * 0.16;
    gain.gain.setValueAtTime(0, t);
    gain.gain.linearRampToValueAtTime(0.15, t + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.001, t + 0.3);
    osc.connect(gain).connect(ctx.destination);
    osc.start(t);
    osc.stop(t + 0.32);
  });
}
