// Starts a real `klausur serve` for the browser tests. Nothing is built here: the binary is
// expected at ../target/debug/klausur (relative to web/), or wherever KLAUSUR_BIN points.
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { E2E_LOG_FILTER } from './log-secrets';

const here = dirname(fileURLToPath(import.meta.url));
export const webRoot = resolve(here, '..');

export interface KlausurServer {
  baseURL: string;
  /** With `dualStack`: the server's URL by its IPv6 address, else null. */
  baseURL6: string | null;
  /** The one-time password of user `admin`, which the first start writes to
   * `<dataDir>/initial-admin-password` (never to its output). */
  adminOneTimePassword: string;
  dataDir: string;
  /** The server's whole output (stdout and stderr, across restarts). */
  logPath: string;
  /** Where the server records every forwarded RTP payload (`recordRtp` option), else null. */
  rtpRecording: string | null;
  /** The dial-in gateway's SIP address (`sipListen` option), e.g. `127.0.0.1:5062`, else null. */
  sipAddress: string | null;
  /** The UDP port of the first media worker (on the listen address); worker i listens on
   * `mediaPort + i`. */
  mediaPort: number;
  /** How many media workers the server runs. */
  mediaWorkers: number;
  /** The process id of the server now running (a new one after `restart`). */
  pid(): number;
  stop(): Promise<void>;
  /** Stops the server as an operator would (SIGTERM), or as a crash does (`kill: true`, SIGKILL:
   * nothing is cleaned up), and starts it again on the same data directory and ports. Resolves
   * when the new server answers; returns `Date.now()` of that moment. */
  restart(opts?: { kill?: boolean }): Promise<number>;
}

export interface ServerOptions {
  /** The web client bundle to serve: `dist` (production) or `dist-test` (with test hooks). */
  webDist?: 'dist' | 'dist-test';
  /** Record every RTP payload the media server forwards (needs the test-hooks server build). */
  recordRtp?: boolean;
  /** Run the dial-in gateway in the server (`--sip-listen` on a free loopback port). */
  sipListen?: boolean;
  /** Only to give a spec its own server (options differ, so Playwright starts another worker). */
  own?: string;
  /** The address the server listens on (HTTP and media) and announces; default 127.0.0.1. */
  listenHost?: string;
  /** Dual stack instead of `listenHost`: the server listens on `[::]` (HTTP and media) and
   * announces `v4` and `v6` for media; `baseURL` names `v4`, `baseURL6` `v6`. */
  dualStack?: { v4: string; v6: string };
  /** More environment for the server (e.g. `KLAUSUR_MEDIA_TCP`). */
  env?: Record<string, string>;
  /** A configuration file's text, passed with `--config`. */
  configToml?: string;
  /** Media workers (`--media-workers`); default one per core, as `klausur serve` runs. */
  mediaWorkers?: number;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freeTcpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** A UDP port on 127.0.0.1 that was free a moment ago. */
export function freeUdpPort(): Promise<number> {
  return new Promise((res, rej) => {
    const sock = createSocket('udp4');
    sock.on('error', rej);
    sock.bind(0, '127.0.0.1', () => {
      const port = sock.address().port;
      sock.close(() => res(port));
    });
  });
}

/** The first of `count` consecutive ports on 127.0.0.1 that were free for UDP and TCP a moment
 * ago (a media worker listens on both; worker i on the first port + i). */
export async function freeMediaPorts(count: number): Promise<number> {
  const bindable = (port: number, kind: 'udp' | 'tcp') =>
    new Promise<boolean>((res) => {
      if (kind === 'udp') {
        const sock = createSocket('udp4');
        sock.on('error', () => res(false));
        sock.bind(port, '127.0.0.1', () => sock.close(() => res(true)));
      } else {
        const srv = createServer();
        srv.unref();
        srv.on('error', () => res(false));
        srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
      }
    });
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await freeUdpPort();
    if (first + count - 1 > 65535) continue;
    let free = true;
    for (let p = first; p < first + count && free; p++) {
      free = (p === first || (await bindable(p, 'udp'))) && (await bindable(p, 'tcp'));
    }
    if (free) return first;
  }
  throw new Error(`no ${count} consecutive free ports for the media workers`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let started = 0;

/** Where a server's output goes: `<logDir>/server-<pid>-<n>[-<own>].log`, which outlives the
 * server (the suite's log check reads it afterwards); without `logDir`, `server.log` in the data
 * directory. */
export interface LogOptions {
  logDir?: string;
}

export async function startServer(opts: ServerOptions = {}, logOpts: LogOptions = {}): Promise<KlausurServer> {
  const bin = process.env.KLAUSUR_BIN ?? resolve(webRoot, '../target/debug/klausur');
  if (!existsSync(bin)) {
    throw new Error(`klausur server binary not found at ${bin}: build it with \`cargo build\` or set KLAUSUR_BIN`);
  }
  const dist = resolve(webRoot, opts.webDist ?? 'dist');
  if (!existsSync(join(dist, 'index.html'))) {
    throw new Error(`${dist}/index.html is missing: run \`npm run build\` (or \`npm run build:test-hooks\`) in web/ first`);
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'klausur-e2e-'));
  started += 1;
  if (logOpts.logDir) mkdirSync(logOpts.logDir, { recursive: true });
  const logPath = logOpts.logDir
    ? join(logOpts.logDir, `server-${process.pid}-${started}${opts.own ? `-${opts.own.replace(/[^\w-]/g, '_')}` : ''}.log`)
    : join(dataDir, 'server.log');
  const rtpRecording = opts.recordRtp ? join(dataDir, 'rtp-recording.jsonl') : null;
  // Written synchronously: what the server said is in the file even if this worker dies.
  let log: number | null = openSync(logPath, 'a');
  const port = await freeTcpPort();
  const mediaWorkers = opts.mediaWorkers ?? Math.min(availableParallelism(), 64);
  const mediaPort = await freeMediaPorts(mediaWorkers);
  const sipAddress = opts.sipListen ? `127.0.0.1:${await freeUdpPort()}` : null;
  const host = opts.listenHost ?? '127.0.0.1';
  const bind = opts.dualStack ? '[::]' : host;
  const baseURL = `http://${opts.dualStack ? opts.dualStack.v4 : host}:${port}`;
  // On [::] the server builds no link from a request's Host: it is told its URL (the IPv4 one).
  const dualStackEnv = opts.dualStack
    ? { KLAUSUR_MEDIA_PUBLIC_IP: opts.dualStack.v4, KLAUSUR_MEDIA_PUBLIC_IPV6: opts.dualStack.v6, KLAUSUR_PUBLIC_URL: baseURL }
    : {};
  const configPath = opts.configToml !== undefined ? join(dataDir, 'klausur.toml') : null;
  if (configPath) writeFileSync(configPath, opts.configToml!);

  const passwordFile = join(dataDir, 'initial-admin-password');
  let password: string | null = null;
  let exited: string | null = null;
  const keep = (chunk: Buffer) => {
    if (log !== null) writeSync(log, chunk);
    if (process.env.KLAUSUR_E2E_VERBOSE) process.stderr.write(chunk);
  };
  /** Resolves when a server process's output is all read (its pipes closed). */
  const drained: Promise<void>[] = [];
  // The first start writes the admin's one-time password to a file only its user can read.
  const readPassword = () => {
    if (password || !existsSync(passwordFile)) return;
    const text = readFileSync(passwordFile, 'utf8').trim();
    if (text) password = text;
  };
  const launch = (): ChildProcess => {
    exited = null;
    const c = spawn(
      bin,
      [
        'serve',
        '--data-dir', dataDir,
        '--listen', `${bind}:${port}`,
        '--media-listen', `${bind}:${mediaPort}`,
        '--media-workers', String(mediaWorkers),
        ...(configPath ? ['--config', configPath] : []),
        '--web-root', dist,
        ...(sipAddress ? ['--sip-listen', sipAddress] : []),
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          NO_COLOR: '1',
          KLAUSUR_LOG: process.env.KLAUSUR_E2E_LOG ?? E2E_LOG_FILTER,
          ...(rtpRecording ? { KLAUSUR_TEST_RECORD_RTP: rtpRecording } : {}),
          ...dualStackEnv,
          ...(opts.env ?? {}),
        },
      },
    );
    c.stdout?.on('data', keep);
    c.stderr?.on('data', keep);
    drained.push(new Promise((r) => c.on('close', () => r())));
    c.on('exit', (code, signal) => {
      exited = `exited with ${code ?? signal}`;
    });
    return c;
  };
  let child = launch();

  // A server with a drain time (`KLAUSUR_DRAIN_SECONDS`) lets its meetings run that long after
  // SIGTERM before it stops.
  const drainMs = 1000 * Number(opts.env?.KLAUSUR_DRAIN_SECONDS ?? 0);
  const terminate = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      for (let i = 0; i < 50 + drainMs / 100 && child.exitCode === null && child.signalCode === null; i++) await sleep(100);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };
  const stop = async () => {
    await terminate();
    // The output a process wrote before it ended may still be in its pipes.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([Promise.all(drained), new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
    if (log !== null) closeSync(log);
    log = null;
    if (!process.env.KLAUSUR_E2E_KEEP) rmSync(dataDir, { recursive: true, force: true });
  };
  const waitReady = async (needPassword: boolean) => {
    const deadline = Date.now() + 30_000;
    let ready = false;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`klausur ${exited} before it was ready; log: ${logPath}`);
      try {
        const res = await fetch(`${baseURL}/api/session`);
        if (res.status === 200 || res.status === 401) ready = true;
      } catch {
        /* not listening yet */
      }
      if (ready && needPassword) readPassword();
      if (ready && (password || !needPassword)) break;
      await sleep(100);
    }
    if (!ready) throw new Error(`klausur did not answer GET /api/session within 30 s; log: ${logPath}`);
  };
  const restart = async (restartOpts: { kill?: boolean } = {}) => {
    if (restartOpts.kill) {
      child.kill('SIGKILL');
      for (let i = 0; i < 50 && child.exitCode === null && child.signalCode === null; i++) await sleep(100);
    } else {
      await terminate();
    }
    child = launch();
    await waitReady(false);
    return Date.now();
  };

  try {
    await waitReady(true);
    if (!password) throw new Error(`no one-time password in ${passwordFile}; log: ${logPath}`);
    const baseURL6 = opts.dualStack ? `http://[${opts.dualStack.v6}]:${port}` : null;
    const pid = () => child.pid!;
    return { baseURL, baseURL6, adminOneTimePassword: password, dataDir, logPath, rtpRecording, sipAddress, mediaPort, mediaWorkers, pid, stop, restart };
  } catch (e) {
    process.env.KLAUSUR_E2E_KEEP = '1';
    await stop();
    throw e;
  }
}
