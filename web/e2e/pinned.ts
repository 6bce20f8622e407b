// Browsers and processes on CPUs of their own (`taskset`), for the figures tests that measure
// one participant's browser as on a computer of its own: on the two-core test machine the
// measured browser gets one CPU, everything else (the other members' browsers, the server, the
// test driver) the other.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIREFOX_PATH } from './firefox';

function wrapper(name: string, cpu: number, binary: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'kz-pinned-'));
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\nexec taskset -c ${cpu} ${binary} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

/** The path of a wrapper that starts Debian's Chromium (every process of it) on CPU `cpu`. */
export function chromiumOnCpu(cpu: number): string {
  return wrapper('chromium', cpu, process.env.CHROMIUM_PATH ?? '/usr/bin/chromium');
}

/** The path of a wrapper that starts Firefox ESR (every process of it) on CPU `cpu`. */
export function firefoxOnCpu(cpu: number): string {
  return wrapper('firefox', cpu, FIREFOX_PATH);
}

/** Puts process `pid` and all its threads on `cpus` (a taskset list such as "1" or "0-1"). */
export function pinProcess(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}
