// WebSocket signaling client, typed by the generated protocol.
import type { ClientMsg, ServerMsg } from './protocol';

export interface SignalingHandlers {
  onOpen(): void;
  onMessage(msg: ServerMsg): void;
  /** The socket closed; `clean` is true when we closed it ourselves. */
  onClose(clean: boolean, code: number): void;
}

const PING_INTERVAL_MS = 20_000;

export function signalingUrl(loc: Location = window.location): string {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/api/ws`;
}

export class SignalingClient {
  private ws: WebSocket | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private closedByUs = false;

  constructor(private readonly handlers: SignalingHandlers) {}

  connect(url: string = signalingUrl()): void {
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.pingTimer = setInterval(() => this.send({ type: 'ping' }), PING_INTERVAL_MS);
      this.handlers.onOpen();
    };
    ws.onmessage = (ev: MessageEvent) => {
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
  }
}
