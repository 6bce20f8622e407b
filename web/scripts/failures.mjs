// Prints the browser tests that failed, each with the first lines of its error, from the JSON
// report of the last run (test-results/report.json, written by playwright.config.ts). `make`
// runs it after a failed suite so that the failures are the last thing printed: a CI that keeps
// only the tail of a long output still shows what failed and why, not only the failure's
// attachments. Prints nothing when the report holds no failure; exits 0 either way.
import { existsSync, readFileSync } from 'node:fs';

const REPORT = new URL('../test-results/report.json', import.meta.url);
const LINES_PER_ERROR = 8;

const plain = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');

function* specs(suite) {
  for (const spec of suite.specs ?? []) yield spec;
  for (const child of suite.suites ?? []) yield* specs(child);
}

if (!existsSync(REPORT)) {
  console.log('failures: no report (test-results/report.json)');
  process.exit(0);
}
const report = JSON.parse(readFileSync(REPORT, 'utf8'));
const failed = [];
for (const suite of report.suites ?? []) {
  for (const spec of specs(suite)) {
    for (const test of spec.tests ?? []) {
      if (test.status !== 'unexpected') continue;
      const result = (test.results ?? []).at(-1) ?? {};
      const error = (result.errors ?? [])[0] ?? result.error ?? {};
      const lines = plain(error.message ?? 'no message').split('\n').filter((l) => l.trim() !== '');
      failed.push({ where: `${spec.file}:${spec.line}`, title: spec.title, lines: lines.slice(0, LINES_PER_ERROR) });
    }
  }
}
if (failed.length > 0) {
  console.log(`--- ${failed.length} browser test(s) failed:`);
  for (const f of failed) {
    console.log(`✘ ${f.where} › ${f.title}`);
    for (const l of f.lines) console.log(`    ${l}`);
  }
}
