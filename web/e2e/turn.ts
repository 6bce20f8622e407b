// Debian's coturn as a TURN server reached over TLS on port 443, and the server's `[turn]`
// configuration for it (e2e/network.spec.ts). Needs root (port 443).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watch } from './child';
import { expect } from './fixtures';
import { recordSecret } from './log-secrets';

/** Debian's coturn on `ip` with TURN over TLS on port 443 only (no UDP, no plain TCP listener;
 * relays over UDP to `peer` only), checking TURN REST API credentials with `secret`; its test
 * certificate is for `name` if given (see `nameHost`), else for `ip`. */
export interface Coturn {
  log(): string;
  stop(): Promise<void>;
}

export async function startCoturn(ip: string, peer: string, secret: string, name?: string): Promise<Coturn> {
  const dir = mkdtempSync(join(tmpdir(), 'kztcp-turn-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', `/CN=${name ?? ip}`, '-addext', `subjectAltName=${name ? `DNS:${name}` : `IP:${ip}`}`, '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  const logFile = join(dir, 'turn.log');
  const child: ChildProcess = spawn('turnserver', [
    '-n', '--no-cli', '--fingerprint', '--no-udp', '--no-dtls', '--no-tcp',
    '--listening-ip', ip, '--relay-ip', ip, '--external-ip', ip,
    '--tls-listening-port', '443', '--listening-port', '3478',
    '--cert', cert, '--pkey', key,
    '--use-auth-secret', '--static-auth-secret', secret, '--realm', 'klausur.test',
    `--allowed-peer-ip=${peer}`, '--denied-peer-ip=0.0.0.0-255.255.255.255',
    '--userdb', join(dir, 'turndb'), '--pidfile', join(dir, 'turn.pid'),
    '--log-file', logFile, '--simple-log', '--no-stdout-log', '--verbose',
  ], { stdio: 'ignore' });
  const proc = watch(child);
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  // Ready when it listens on 443 (its log says so).
  await expect
    .poll(() => (proc.exited() ? 'exited' : /IPv4\. TLS listener opened on : \S+:443/.test(log()) ? 'listening' : 'starting'), {
      timeout: 20_000,
      message: 'coturn listens on 443',
    })
    .toBe('listening');
  return {
    log,
    stop: async () => {
      await proc.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The server's `[turn]` section for `turns:<host>:443` (an address or a name), with `secret` in a
 * file of its own (`remove` deletes it). */
export function turnConfig(host: string, secret: string): { configToml: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'kztcp-secret-'));
  const secretFile = join(dir, 'turn-secret');
  writeFileSync(secretFile, `${secret}\n`, { mode: 0o600 });
  recordSecret('password', secret);
  return {
    configToml: `[turn]\nurls = ["turns:${host}:443?transport=tcp"]\nsecret_file = "${secretFile}"\ncredential_minutes = 10\n`,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Gives `ip` the host name `name` in /etc/hosts (for the browsers and the proxy, as a city's DNS
 * names its TURN server; Firefox uses a `turns:` server through a web proxy only by name); the
 * returned function takes the line away again. A line for `name` left by an aborted run is
 * replaced. */
export function nameHost(name: string, ip: string): () => void {
  const path = '/etc/hosts';
  const mark = `# klausur test ${name}`;
  const without = () => readFileSync(path, 'utf8').split('\n').filter((l) => !l.endsWith(mark)).join('\n').replace(/\n*$/, '\n');
  writeFileSync(path, `${without()}${ip} ${name} ${mark}\n`);
  return () => writeFileSync(path, without());
}
