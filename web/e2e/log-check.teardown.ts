// After the whole suite, whatever its outcome: every server log of the run searched for every
// secret and display name the tests used (log-secrets.ts). Any find fails the run.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { FullConfig } from '@playwright/test';
import { describe, readSecrets, scanLog, SERVER_LOGS_DIR, type Secret } from './log-secrets';

/** The scanner finds what it must before its silence counts (log-secrets.spec.ts tests more). */
function selfTest(): void {
  const planted: Secret[] = [
    { kind: 'phone PIN', value: '40817263' },
    { kind: 'display name', value: 'Gerda Gast' },
  ];
  const log = '2026-01-01T12:00:00.000001Z  INFO klausur_server::dialin: check pin=40817263 for Gerda Gast\n';
  const kinds = scanLog(log, planted).map((f) => f.kind).sort();
  if (kinds.join() !== 'display name,phone PIN') throw new Error(`log check: the scanner missed planted secrets (found: ${kinds.join() || 'nothing'})`);
}

export default function logCheck(config: FullConfig): void {
  selfTest();
  const problems: string[] = [];
  let files = 0;
  let bytes = 0;
  let searched = 0;
  for (const outputDir of new Set(config.projects.map((p) => p.outputDir))) {
    const dir = join(outputDir, SERVER_LOGS_DIR);
    if (!existsSync(dir)) continue;
    const logs = readdirSync(dir).filter((f) => f.endsWith('.log')).sort();
    const secrets = readSecrets(outputDir);
    searched += secrets.length;
    // Every server's start records the admin's one-time password: none recorded means the
    // recording is broken, and an empty search would pass.
    if (logs.length > 0 && secrets.length === 0) problems.push(`${dir}: ${logs.length} server logs, but no secrets were recorded`);
    for (const name of logs) {
      const file = join(dir, name);
      const shown = relative(process.cwd(), file) || file;
      const text = readFileSync(file, 'utf8');
      files += 1;
      bytes += statSync(file).size;
      if (!/^\S+\s+INFO\s+klausur/m.test(text)) {
        problems.push(`${shown}: no INFO line of klausur: the log is not captured, or its level (KLAUSUR_E2E_LOG) is above info`);
      }
      problems.push(...describe(shown, scanLog(text, secrets)));
    }
  }
  if (problems.length > 0) {
    throw new Error(
      `log check failed: secrets or display names in the server logs (each shown by its first characters, its line masked), or logs not captured:\n${problems.map((p) => `  ${p}`).join('\n')}`,
    );
  }
  if (files > 0) {
    console.log(`log check: ${files} server logs (${(bytes / 1e6).toFixed(1)} MB) hold none of ${searched} recorded secrets and display names`);
  }
}
