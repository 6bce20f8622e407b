// A stand-in media server for client-only tests: one browser page that answers each
// participant's offer with its own RTCPeerConnection and forwards received tracks to the others.
// It is deliberately simple; the real server is tested by meeting.spec.ts.
import type { Page } from '@playwright/test';

export interface SfuAnswer {
  sdp: string;
  tracks: { mid: string; participant_id: string; source: 'microphone' | 'camera' | 'screen' }[];
}

/** Runs in the SFU page. */
function install() {
  type Src = 'microphone' | 'camera' | 'screen';
  interface Peer {
    pc: RTCPeerConnection;
    published: Map<string, { source: Src; track: MediaStreamTrack }>; // by mid
  }
  const peers = new Map<string, Peer>();

  const waitIce = (pc: RTCPeerConnection) =>
    new Promise<void>((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const timer = setTimeout(resolve, 1000);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          resolve();
        }
      });
    });

  const w = window as unknown as Record<string, unknown>;
  /** Tracks other participants publish, by kind. */
  w.sfuWanted = (pid: string) => {
    const out = { audio: 0, video: 0 };
    for (const [id, p] of peers) {
      if (id === pid) continue;
      for (const { track } of p.published.values()) out[track.kind as 'audio' | 'video'] += 1;
    }
    return out;
  };
  w.sfuRemove = (pid: string) => {
    peers.get(pid)?.pc.close();
    peers.delete(pid);
  };
  w.sfuOffer = async (pid: string, sdp: string, sources: { mid: string; source: Src }[]) => {
    let peer = peers.get(pid);
    if (!peer) {
      peer = { pc: new RTCPeerConnection({ bundlePolicy: 'max-bundle' }), published: new Map() };
      peers.set(pid, peer);
    }
    const { pc } = peer;
    await pc.setRemoteDescription({ type: 'offer', sdp });
    const bySourceMid = new Map(sources.map((s) => [s.mid, s.source]));
    peer.published.clear();
    const recvSlots: RTCRtpTransceiver[] = [];
    for (const t of pc.getTransceivers()) {
      if (t.mid === null || t.currentDirection === 'stopped') continue;
      const src = bySourceMid.get(t.mid);
      if (src) {
        t.direction = 'recvonly';
        peer.published.set(t.mid, { source: src, track: t.receiver.track });
      } else {
        recvSlots.push(t);
      }
    }
    // Everything other participants publish, assigned to free slots of the right kind.
    const offers: { pid: string; source: Src; track: MediaStreamTrack }[] = [];
    for (const [id, p] of peers) {
      if (id === pid) continue;
      for (const v of p.published.values()) offers.push({ pid: id, ...v });
    }
    const tracks: SfuAnswer['tracks'] = [];
    for (const slot of recvSlots) {
      const kind = slot.receiver.track.kind;
      const i = offers.findIndex((o) => o.track.kind === kind);
      if (i < 0) {
        slot.direction = 'inactive';
        await slot.sender.replaceTrack(null);
        continue;
      }
      const o = offers.splice(i, 1)[0];
      slot.direction = 'sendonly';
      await slot.sender.replaceTrack(o.track);
      tracks.push({ mid: slot.mid!, participant_id: o.pid, source: o.source });
    }
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await waitIce(pc);
    return { sdp: pc.localDescription!.sdp, tracks };
  };
}

export async function startSfu(page: Page, baseURL: string): Promise<void> {
  await page.goto(`${baseURL}/sfu-stand-in`);
  await page.evaluate(install);
}

export function sfuOffer(page: Page, pid: string, sdp: string, sources: unknown): Promise<SfuAnswer> {
  return page.evaluate(
    ([p, s, src]) => (window as unknown as { sfuOffer(a: string, b: string, c: unknown): Promise<SfuAnswer> }).sfuOffer(p, s, src),
    [pid, sdp, sources] as const,
  );
}

export function sfuWanted(page: Page, pid: string): Promise<{ audio: number; video: number }> {
  return page.evaluate((p) => (window as unknown as { sfuWanted(a: string): { audio: number; video: number } }).sfuWanted(p), pid);
}

export function sfuRemove(page: Page, pid: string): Promise<void> {
  return page.evaluate((p) => (window as unknown as { sfuRemove(a: string): void }).sfuRemove(p), pid);
}
