// Firefox in the browser suite: Debian's `firefox-esr` driven over WebDriver BiDi with
// puppeteer-core (Playwright's own Firefox build cannot be downloaded on the test machines).
//
// Firefox runs no ICE over loopback ("ICE failed, add a STUN server" on 127.0.0.1), so these
// tests put the server on a real address: a veth pair whose host side (10.202.<n>.1) the server
// listens on, its peer in a network namespace `kzff<n>` the test creates (only to give the link a
// carrier). The browsers stay on the host. Plain http on that address is not a secure context, so
// each browser is told it is one: Firefox by the pref `dom.securecontext.allowlist`, Chromium by
// `--unsafely-treat-insecure-origin-as-secure`. Needs root and `ip`. A Firefox that is to reach
// nothing but a web proxy runs as another user (`confinedFirefox`), whose packets the host's
// nftables rules tell apart: a Firefox in a namespace of its own could not be driven (its
// WebDriver BiDi port listens on that namespace's loopback).
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer, { type Browser as PBrowser } from 'puppeteer-core';

export const FIREFOX_PATH = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Why the Firefox tests cannot run here, or null. */
export function firefoxUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespace)';
  try {
    run('sh', ['-c', `test -x ${FIREFOX_PATH} && command -v ip`]);
  } catch {
    return `needs ${FIREFOX_PATH} and ip (scripts/setup.sh --with-browser installs firefox-esr)`;
  }
  return null;
}

export interface RealAddress {
  name: string;
  /** The host side's address: the server listens here. */
  hostIp: string;
  /** The host side's IPv6 address (`fd00:202:<n>::1`). */
  hostIp6: string;
  remove(): void;
}

/** A veth pair with a real (non-loopback) address on the host side; unique per run. */
export function createRealAddress(): RealAddress {
  const n = (process.pid % 250) + 1;
  const name = `kzff${n}`;
  const host = `kzff${n}h`;
  const inner = `kzff${n}b`;
  const hostIp = `10.202.${n}.1`;
  const hostIp6 = `fd00:202:${n}::1`;
  const remove = () => {
    for (const args of [['netns', 'del', name], ['link', 'del', host]]) {
      try {
        run('ip', args);
      } catch {
        /* not there */
      }
    }
  };
  remove(); // a leftover of an earlier run with the same number
  run('ip', ['netns', 'add', name]);
  try {
    run('ip', ['link', 'add', host, 'type', 'veth', 'peer', 'name', inner]);
    run('ip', ['link', 'set', inner, 'netns', name]);
    run('ip', ['addr', 'add', `${hostIp}/24`, 'dev', host]);
    run('ip', ['-6', 'addr', 'add', `${hostIp6}/64`, 'dev', host, 'nodad']);
    run('ip', ['link', 'set', host, 'up']);
    run('ip', ['netns', 'exec', name, 'ip', 'addr', 'add', `10.202.${n}.2/24`, 'dev', inner]);
    run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', inner, 'up']);
  } catch (e) {
    remove();
    throw e;
  }
  return { name, hostIp, hostIp6, remove };
}

/** Debian's Firefox ESR, headless, with fake camera and microphone and `host` a secure context
 * (`opts.prefs` added or overriding; `opts.executablePath` instead of Firefox itself, and with
 * `opts.acceptInsecureCerts` it accepts the tests' own certificates, a TURN server's too). */
export async function launchFirefox(
  host: string,
  opts: { prefs?: Record<string, unknown>; executablePath?: string; acceptInsecureCerts?: boolean } = {},
): Promise<PBrowser> {
  return puppeteer.launch({
    browser: 'firefox',
    acceptInsecureCerts: opts.acceptInsecureCerts ?? false,
    executablePath: opts.executablePath ?? FIREFOX_PATH,
    headless: true,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.autoplay.default': 0,
      'dom.securecontext.allowlist': host,
      ...opts.prefs,
    },
  });
}

/** Firefox's preferences for a web proxy at `proxy`:3128 for every connection, as an
 * administration sets them by policy. */
export function proxyPrefs(proxy: string): Record<string, unknown> {
  return {
    'network.proxy.type': 1,
    'network.proxy.http': proxy,
    'network.proxy.http_port': 3128,
    'network.proxy.ssl': proxy,
    'network.proxy.ssl_port': 3128,
    'network.proxy.no_proxies_on': '',
  };
}

/** The user id a confined Firefox runs as (`nobody`): the host's nftables rules can tell its
 * packets from everyone else's by it (`meta skuid`). */
export const CONFINED_UID = 65534;

/** A Firefox that runs as `CONFINED_UID`, with the host's rules `rules` (an nftables table named
 * `kzffconfined`, matching `meta skuid CONFINED_UID`) applied while it runs: the path of a
 * wrapper to launch it by, and `remove()` to take the rules and the wrapper away. */
export function confinedFirefox(rules: string): { executablePath: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'kzff-confined-'));
  chmodSync(dir, 0o755);
  const home = join(dir, 'home');
  mkdirSync(home);
  chownSync(home, CONFINED_UID, CONFINED_UID);
  const wrapper = join(dir, 'firefox');
  // puppeteer makes the profile directory (as root) and passes it with --profile.
  writeFileSync(
    wrapper,
    `#!/bin/sh
prev=""
for a in "$@"; do
  [ "$prev" = "--profile" ] && chown -R ${CONFINED_UID}:${CONFINED_UID} "$a"
  prev="$a"
done
export HOME=${home}
exec setpriv --reuid=${CONFINED_UID} --regid=${CONFINED_UID} --clear-groups ${FIREFOX_PATH} "$@"
`,
  );
  chmodSync(wrapper, 0o755);
  const del = () => {
    try {
      execFileSync('nft', ['delete', 'table', 'inet', 'kzffconfined'], { stdio: 'ignore' });
    } catch {
      /* not there */
    }
  };
  del();
  execFileSync('nft', ['-f', '-'], { input: rules });
  return {
    executablePath: wrapper,
    remove: () => {
      del();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Host rules for a confined Firefox: of its packets, only those to 127.0.0.0/8 and ::1 (its
 * remote control) and TCP to `proxy`:3128 go out (the host's own addresses are reached over
 * loopback too, so not the interface but the address decides); other TCP is refused at once,
 * the rest (UDP) dropped, both counted. */
export function onlyTheProxy(proxy: string): string {
  return `
table inet kzffconfined {
  chain out {
    type filter hook output priority 0; policy accept;
    meta skuid ${CONFINED_UID} ip daddr 127.0.0.0/8 accept
    meta skuid ${CONFINED_UID} ip6 daddr ::1 accept
    meta skuid ${CONFINED_UID} ip daddr ${proxy} tcp dport 3128 accept
    meta skuid ${CONFINED_UID} meta l4proto tcp counter reject with tcp reset
    meta skuid ${CONFINED_UID} counter drop
  }
}`;
}

/** Host rules for a confined Firefox on a network with IPv6 only: of its IPv4 packets only those
 * to 127.0.0.0/8 (its remote control) go out, the others are dropped and counted. */
export const ONLY_IPV6 = `
table inet kzffconfined {
  chain out {
    type filter hook output priority 0; policy accept;
    meta skuid ${CONFINED_UID} ip daddr 127.0.0.0/8 accept
    meta skuid ${CONFINED_UID} meta nfproto ipv4 counter drop
  }
}`;

/** Packets of the confined Firefox the host's rules refused or dropped so far. */
export function droppedForConfined(): number {
  const rules = execFileSync('nft', ['list', 'table', 'inet', 'kzffconfined'], { encoding: 'utf8' });
  return [...rules.matchAll(/counter packets (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
}
