import { defineConfig } from '@playwright/test';
import { canaryTonePath, canaryVideoPath } from './e2e/canary';

// Debian's Chromium, never a downloaded browser. One browser process, a context per participant.
export const chromiumArgs = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-ui-for-media-stream', // also auto-accepts getDisplayMedia (a fake 1280x720 "screen")
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection', // 127.0.0.1 ICE candidates
  '--autoplay-policy=no-user-gesture-required',
  // Every participant's page behaves as if it were in front (each person has their own screen):
  // no throttled timers or renderers in background pages.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
  `--use-file-for-fake-video-capture=${canaryVideoPath()}`,
  `--use-file-for-fake-audio-capture=${canaryTonePath()}`,
];

// Tests tagged `@figures` only record figures (JSON files in test-results/, quoted in
// BENCHMARKS.md); they are left out of the test run and run alone by `npm run bench:browser`
// (`make bench-browser`), which sets KLAUSUR_FIGURES=1, and KLAUSUR_CROSS_ORIGIN_ISOLATED=1 for
// the servers they start (the encryption worker's timer then steps by 5 µs, not 100 µs to 1 ms).
const figuresOnly = process.env.KLAUSUR_FIGURES === '1';

export default defineConfig({
  testDir: './e2e',
  testMatch: '**/*.spec.ts',
  grep: figuresOnly ? /@figures/ : undefined,
  grepInvert: figuresOnly ? undefined : /@figures/,
  fullyParallel: false,
  workers: 1,
  retries: 0,
  timeout: 180_000,
  expect: { timeout: 30_000 },
  // The JSON report is read by scripts/failures.mjs, which `make` runs after a failed suite.
  reporter: [['list'], ['json', { outputFile: 'test-results/report.json' }], ...(process.env.CI ? [['html', { open: 'never' }] as const] : [])],
  outputDir: './test-results',
  // Runs after every spec, whether they passed or not: no secret or display name in any server
  // log (e2e/log-secrets.ts).
  globalTeardown: './e2e/log-check.teardown.ts',
  use: {
    headless: true,
    viewport: { width: 1280, height: 720 },
    actionTimeout: 20_000,
    navigationTimeout: 30_000,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: chromiumArgs,
    },
  },
});
