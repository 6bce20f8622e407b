import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PING_INTERVAL_MS, PROBE_TIMEOUT_MS, redirectSocketUrl, SignalingClient } from './client';

/** Just enough of a browser WebSocket: the test opens it and delivers messages. */
class FakeSocket {
  static OPEN = 1;
  static last: FakeSocket | null = null;
  readyState = 0;
  sent: string[] = [];
  closed: number | null = null;
  onopen: (() => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  constructor(public url: string) {
    FakeSocket.last = this;
  }
  send(text: string) {
    this.sent.push(text);
  }
  close(code = 1000) {
    this.closed = code;
    this.readyState = 2; // CLOSING, as a browser's socket is right after close()
  }
  open() {
    this.readyState = FakeSocket.OPEN;
    this.onopen?.();
  }
  receive(msg: object) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
}

function connect() {
  const closes: boolean[] = [];
  const client = new SignalingClient({ onOpen: () => undefined, onMessage: () => undefined, onClose: (clean) => closes.push(clean) });
  client.connect('ws://test/api/ws');
  const ws = FakeSocket.last!;
  ws.open();
  return { ws, closes, client };
}

const pings = (ws: FakeSocket) => ws.sent.filter((t) => t.includes('"ping"')).length;

describe('signaling keep-alive', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.stubGlobal('WebSocket', FakeSocket);
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('a server that answers keeps the connection', () => {
    const { ws, closes } = connect();
    for (let i = 0; i < 5; i++) {
      vi.advanceTimersByTime(PING_INTERVAL_MS);
      ws.receive({ type: 'pong' });
    }
    expect(pings(ws)).toBe(5);
    expect(closes).toEqual([]);
    expect(ws.closed).toBeNull();
  });

  it('a connection without an answer to a ping is given up as broken (not a clean close)', () => {
    const { ws, closes } = connect();
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    expect(pings(ws)).toBe(1);
    expect(closes).toEqual([]);
    vi.advanceTimersByTime(PING_INTERVAL_MS);
    expect(closes).toEqual([false]);
    expect(ws.closed).toBe(4000);
    // Nothing more from the dead socket: no further pings, no second report.
    ws.onclose?.({ code: 1006 });
    vi.advanceTimersByTime(3 * PING_INTERVAL_MS);
    expect(pings(ws)).toBe(1);
    expect(closes).toEqual([false]);
  });

  it('a probe that gets an answer keeps the connection; one that gets none gives it up at once', () => {
    vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const { ws, closes, client } = connect();
    client.probe();
    expect(pings(ws)).toBe(1);
    vi.advanceTimersByTime(PROBE_TIMEOUT_MS / 2);
    ws.receive({ type: 'pong' });
    vi.advanceTimersByTime(PROBE_TIMEOUT_MS);
    expect(closes).toEqual([]);
    // A second probe while one is out sends nothing more.
    client.probe();
    client.probe();
    expect(pings(ws)).toBe(2);
    vi.advanceTimersByTime(PROBE_TIMEOUT_MS - 1);
    expect(closes).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(closes).toEqual([false]);
    expect(ws.closed).toBe(4000);
    // The keepalive does not report the dead socket a second time.
    vi.advanceTimersByTime(3 * PING_INTERVAL_MS);
    expect(closes).toEqual([false]);
  });

  it('a probe after a clean close does nothing', () => {
    const { ws, closes, client } = connect();
    client.close();
    client.probe();
    vi.advanceTimersByTime(2 * PROBE_TIMEOUT_MS);
    expect(pings(ws)).toBe(0);
    expect(closes).toEqual([]);
  });
});

describe('redirectSocketUrl', () => {
  const page = (href: string) => new URL(href) as unknown as Location;

  it("gives the WebSocket of a node on the page's own origin", () => {
    expect(redirectSocketUrl('https://meet.example/node/b', page('https://meet.example/m/abc'))).toBe('wss://meet.example/node/b/api/ws');
    expect(redirectSocketUrl('https://meet.example/node/b/', page('https://meet.example/m/abc'))).toBe('wss://meet.example/node/b/api/ws');
    expect(redirectSocketUrl('http://127.0.0.1:8080', page('http://127.0.0.1:8080/m/abc'))).toBe('ws://127.0.0.1:8080/api/ws');
  });

  it('refuses another origin, a query, and what is no URL', () => {
    expect(redirectSocketUrl('https://evil.example/node/b', page('https://meet.example/m/abc'))).toBeNull();
    expect(redirectSocketUrl('http://meet.example/node/b', page('https://meet.example/m/abc'))).toBeNull();
    expect(redirectSocketUrl('https://meet.example:8443/node/b', page('https://meet.example/m/abc'))).toBeNull();
    expect(redirectSocketUrl('https://meet.example/node/b?x=1', page('https://meet.example/m/abc'))).toBeNull();
    expect(redirectSocketUrl('not a url', page('https://meet.example/m/abc'))).toBeNull();
  });
});
