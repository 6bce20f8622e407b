// A helper process a test starts (Squid, coturn): whether it has exited, and stopping it.
import type { ChildProcess } from 'node:child_process';

export interface Watched {
  exited(): boolean;
  /** SIGTERM, up to 5 s to go, then SIGKILL. */
  stop(): Promise<void>;
}

export function watch(child: ChildProcess): Watched {
  let exited = false;
  child.on('exit', () => (exited = true));
  return {
    exited: () => exited,
    stop: async () => {
      if (exited) return;
      child.kill('SIGTERM');
      for (let i = 0; i < 50 && !exited; i++) await new Promise((r) => setTimeout(r, 100));
      if (!exited) child.kill('SIGKILL');
    },
  };
}
