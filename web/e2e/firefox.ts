// Firefox in the browser suite: Debian's `firefox-esr` driven over WebDriver BiDi with
// puppeteer-core (Playwright's own Firefox build cannot be downloaded on the test machines).
//
// Firefox runs no ICE over loopback ("ICE failed, add a STUN server" on 127.0.0.1), so these
// tests put the server on a real address: a veth pair whose host side (10.202.<n>.1) the server
// listens on, its peer in a network namespace `kzff<n>` the test creates (only to give the link a
// carrier). The browsers stay on the host. Plain http on that address is not a secure context, so
// each browser is told it is one: Firefox by the pref `dom.securecontext.allowlist`, Chromium by
// `--unsafely-treat-insecure-origin-as-secure`. Needs root and `ip`.
import { execFileSync } from 'node:child_process';
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
  remove(): void;
}

/** A veth pair with a real (non-loopback) address on the host side; unique per run. */
export function createRealAddress(): RealAddress {
  const n = (process.pid % 250) + 1;
  const name = `kzff${n}`;
  const host = `kzff${n}h`;
  const inner = `kzff${n}b`;
  const hostIp = `10.202.${n}.1`;
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
    run('ip', ['link', 'set', host, 'up']);
    run('ip', ['netns', 'exec', name, 'ip', 'addr', 'add', `10.202.${n}.2/24`, 'dev', inner]);
    run('ip', ['netns', 'exec', name, 'ip', 'link', 'set', inner, 'up']);
  } catch (e) {
    remove();
    throw e;
  }
  return { name, hostIp, remove };
}

/** Debian's Firefox ESR, headless, with fake camera and microphone and `host` a secure context. */
export async function launchFirefox(host: string): Promise<PBrowser> {
  return puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX_PATH,
    headless: true,
    extraPrefsFirefox: {
      'media.navigator.streams.fake': true,
      'media.navigator.permission.disabled': true,
      'media.autoplay.default': 0,
      'dom.securecontext.allowlist': host,
    },
  });
}
