// Debian's Squid as the web proxy of a town hall's network, for the tests of browsers that reach
// the server only through it (e2e/network.spec.ts). Needs root (Squid drops its privileges to
// the `proxy` user).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watch } from './child';
import { expect } from './fixtures';

/** Debian's Squid on `ip`:3128 as a town hall's web proxy: it takes requests from `client`
 * only, lets CONNECT through to the ports in `connectPorts` only (Squid's own default is 443
 * alone), caches nothing and logs every request (`log()`: its access log). */
export interface Squid {
  log(): string;
  /** The requests logged so far (a tunnel is logged when it closes). */
  requests(): SquidRequest[];
  stop(): Promise<void>;
}

/** A line of Squid's access log: `time elapsed client code/status bytes method URL ...`; for a
 * tunnel the URL is `host:port` and the code `TCP_TUNNEL/200`. */
export interface SquidRequest {
  client: string;
  status: string;
  method: string;
  url: string;
}

function parse(log: string): SquidRequest[] {
  return log
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 7)
    .map((f) => ({ client: f[2], status: f[3], method: f[5], url: f[6] }));
}

export async function startSquid(ip: string, client: string, connectPorts: number[]): Promise<Squid> {
  const dir = mkdtempSync(join(tmpdir(), 'kztcp-squid-'));
  // Squid drops its privileges to the `proxy` user, which must write its logs and pid here.
  chmodSync(dir, 0o777);
  const accessLog = join(dir, 'access.log');
  const conf = join(dir, 'squid.conf');
  writeFileSync(conf, [
    `http_port ${ip}:3128`,
    `acl town_hall src ${client}/32`,
    `acl connect_ports port ${connectPorts.join(' ')}`,
    'acl CONNECT method CONNECT',
    'http_access deny CONNECT !connect_ports',
    'http_access allow town_hall',
    'http_access deny all',
    'cache deny all',
    'cache_mem 8 MB',
    `pid_filename ${join(dir, 'squid.pid')}`,
    `access_log stdio:${accessLog}`,
    `cache_log ${join(dir, 'cache.log')}`,
    `coredump_dir ${dir}`,
    'shutdown_lifetime 0 seconds',
    '',
  ].join('\n'));
  const child: ChildProcess = spawn('squid', ['-N', '-f', conf], { stdio: 'ignore' });
  const proc = watch(child);
  const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  await expect
    .poll(() => (proc.exited() ? `exited: ${read(join(dir, 'cache.log'))}` : /Accepting HTTP Socket connections/.test(read(join(dir, 'cache.log'))) ? 'listening' : 'starting'), {
      timeout: 20_000,
      message: 'squid listens on 3128',
    })
    .toBe('listening');
  return {
    log: () => read(accessLog),
    requests: () => parse(read(accessLog)),
    stop: async () => {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
