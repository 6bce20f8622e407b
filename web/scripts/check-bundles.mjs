// The production bundle has no plaintext path: the test-hooks build (`vite build --mode
// test-hooks`, web/dist-test) lets the encryption worker pass frames through in clear and
// capture plaintext frames for the browser tests; in the production build (web/dist) Vite
// replaces `import.meta.env.MODE` with "production" and those branches are removed. This checks
// the built JavaScript of both: each marker below must be absent from web/dist and present in
// web/dist-test (so a marker that no longer matches the code fails here instead of passing
// vacuously). Run after `npm run build` and `npm run build:test-hooks`.
//
// It also checks the compressed copies the build writes beside the files (vite.config.ts,
// `precompress`), which the server sends instead of the file: each must decompress to exactly its
// file, and the WebAssembly and the scripts must have them.

import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');

/** What each marker shows if it is in a bundle. */
const MARKERS = [
  [/\.plaintext\s*(\+=\s*1|\+\+)/, 'a frame passed in clear is counted: the worker has a plaintext branch'],
  [/clearLen/, 'the worker captures plaintext frames for tests'],
  [/e2ee_test_plaintext/, 'the page reads the query parameter that switches encryption off'],
  [/e2ee_test_outsider/, 'the page reads the query parameter that keeps it out of the MLS group'],
  [/commit-bench/, 'the worker has the commit benchmark (builds MLS groups with a CA key of its own)'],
];

/** The concatenated JavaScript of a build (source maps left out: they are not executed). */
function bundle(dir) {
  const assets = join(web, dir, 'assets');
  if (!existsSync(assets)) {
    console.error(`check-bundles: ${dir}/assets is missing: build it first (npm run build, npm run build:test-hooks)`);
    process.exit(2);
  }
  const files = readdirSync(assets).filter((f) => f.endsWith('.js'));
  if (!files.some((f) => f.startsWith('worker-'))) {
    console.error(`check-bundles: ${dir}/assets has no worker-*.js: not a build of this app`);
    process.exit(2);
  }
  return files.map((f) => readFileSync(join(assets, f), 'utf8')).join('\n');
}

const production = bundle('dist');
const testHooks = bundle('dist-test');
const problems = [];
for (const [re, meaning] of MARKERS) {
  if (re.test(production)) problems.push(`web/dist contains ${re}: ${meaning}`);
  if (!re.test(testHooks)) {
    problems.push(`web/dist-test does not contain ${re}: the marker no longer matches the test-hooks code, so its absence from web/dist proves nothing; update this check`);
  }
}

/** Problems with the `.br` / `.gz` copies in a build's assets. */
function compressedCopies(dir) {
  const assets = join(web, dir, 'assets');
  const names = readdirSync(assets);
  const found = [];
  for (const name of names) {
    const plain = join(assets, name);
    if (/\.(js|wasm)$/.test(name)) {
      for (const ext of ['.br', '.gz']) {
        if (!names.includes(name + ext)) found.push(`${dir}/assets/${name} has no ${ext} copy: the server would send it uncompressed`);
      }
    }
    for (const [ext, inflate] of [['.br', brotliDecompressSync], ['.gz', gunzipSync]]) {
      if (!name.endsWith(ext)) continue;
      const original = plain.slice(0, -ext.length);
      if (!existsSync(original)) found.push(`${dir}/assets/${name} has no uncompressed file beside it`);
      else if (!inflate(readFileSync(plain)).equals(readFileSync(original))) {
        found.push(`${dir}/assets/${name} does not decompress to ${name.slice(0, -ext.length)}: a stale copy the server would send instead`);
      }
    }
  }
  return found;
}
problems.push(...compressedCopies('dist'), ...compressedCopies('dist-test'));

if (problems.length > 0) {
  for (const p of problems) console.error(`check-bundles: ${p}`);
  process.exit(1);
}
console.log(`check-bundles: no plaintext path in web/dist (${MARKERS.length} markers, each found in web/dist-test); compressed copies match their files`);
