// WebSocket signaling client, typed by the generated protocol.
import type { ClientMsg, ServerMsg } from './protocol';

export interface SignalingHandlers {
  onOpen(): void;
  onMessage(msg: ServerMsg): void;
  /** The socket closed; `clean` is true when we closed it ourselves. */
  onClose(clean: boolean, code: number): void;
}

export const PING_INTERVAL_MS = 20_000;

/** How long [`SignalingClient.probe`] waits for a sign of life. The server answers a `ping` at
 * once; 3 s leaves room for a slow mobile link without keeping someone out for long. */
export const PROBE_TIMEOUT_MS = 3_000;

export function signalingUrl(loc: Location = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/api/ws`;
}

/** Redirects one join follows at most (a cluster sends a join on to the node that runs it). */
export const MAX_REDIRECTS = 3;

/**
 * The WebSocket URL of the node a cluster redirected a join to (`url`: its base URL), or null
 * when it is not on this page's own origin: the session cookie, the page's security policy and
 * the server's origin check all hold for that origin only.
 */
export function redirectSocketUrl(url: string, loc: Location = window.location): string | null {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    return null;
  }
  if (target.origin !== loc.origin || target.search !== '' || target.hash !== '') return null;
  const scheme = target.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${target.host}${target.pathname.replace(/\/+$/, '')}/api/ws`;
}

export class SignalingClient {
  private ws: WebSocket | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private probeTimer: ReturnType<typeof setTimeout> | null = null;
  private closedByUs = false;
  /** When the last `ping` went out, and when the server last sent anything (ms). */
  private lastPingAt = 0;
  private lastReceivedAt = 0;

  constructor(private readonly handlers: SignalingHandlers) {}

  connect(url: string = signalingUrl()): void {
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.pingTimer = setInterval(() => this.keepAlive(), PING_INTERVAL_MS);
      this.handlers.onOpen();
    };
    ws.onmessage = (ev: MessageEvent) => {
      this.lastReceivedAt = Date.now();
      if (typeof ev.data !== 'string') return;
      let msg: ServerMsg;
      try {
        msg = JSON.parse(ev.data) as ServerMsg;
      } catch {
        console.warn('klausur: ignoring malformed server message');
        return;
      }
      if (!msg || typeof msg !== 'object' || typeof (msg as { type?: unknown }).type !== 'string') return;
      this.handlers.onMessage(msg);
    };
    ws.onclose = (ev: CloseEvent) => {
      this.stopPing();
      this.ws = null;
      this.handlers.onClose(this.closedByUs, ev.code);
    };
  }

  /**
   * Sends a `ping`; if the server has sent nothing since the previous one (its `pong` included),
   * the connection is dead although the socket has not noticed (a network gone without a TCP
   * reset can take minutes to time out): drop it and report an unclean close. A background
   * tab's throttled timer only makes the wait longer, never a live connection look dead.
   */
  private keepAlive(): void {
    if (this.lastPingAt > 0 && this.lastReceivedAt < this.lastPingAt) {
      this.abandon('no answer to the keepalive ping');
      return;
    }
    this.lastPingAt = Date.now();
    this.send({ type: 'ping' });
  }

  /**
   * Asks the server for a sign of life now: a `ping`, and if nothing at all arrives within
   * `timeoutMs` the connection is dropped as by [`keepAlive`]. For when something else says the
   * network may have changed under the connection (the media connection stopped getting
   * answers): a connection whose address is gone would otherwise be noticed only by the next
   * ping or two, 20 to 40 s later. One probe at a time.
   */
  probe(timeoutMs = PROBE_TIMEOUT_MS): void {
    const ws = this.ws;
    if (!this.isOpen || this.probeTimer) return;
    const sentAt = Date.now();
    this.send({ type: 'ping' });
    this.probeTimer = setTimeout(() => {
      this.probeTimer = null;
      if (this.ws === ws && this.lastReceivedAt < sentAt) this.abandon(`no answer within ${timeoutMs} ms to a probe`);
    }, timeoutMs);
  }

  private abandon(why: string): void {
    console.warn(`klausur: the signaling connection is dead (${why}); connecting again`);
    const ws = this.ws;
    this.stopPing();
    this.ws = null;
    if (!ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    try {
      ws.close(4000, 'no answer to ping');
    } catch {
      // Closing a socket that is already closing: nothing more to do.
    }
    this.handlers.onClose(false, 4000);
  }

  get isOpen(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  send(msg: ClientMsg): boolean {
    return this.rawSend(JSON.stringify(msg));
  }

  /** Sends a raw text frame (used by tests for malformed input). */
  rawSend(text: string): boolean {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(text);
    return true;
  }

  close(): void {
    this.closedByUs = true;
    this.stopPing();
    this.ws?.close(1000);
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = null;
  }
}
