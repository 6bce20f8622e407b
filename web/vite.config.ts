import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';
import type { Plugin } from 'vite';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

/** What the server may send compressed (source maps are fetched by developer tools only). */
const COMPRESSIBLE = /\.(js|css|wasm|html|svg|json)$/;

/**
 * Writes each built file also Brotli- and gzip-compressed (`x.js.br`, `x.js.gz`) beside it; the
 * server sends those to browsers that accept them (crates/klausur-server/src/http/web.rs). The
 * client is about 2 MB, most of it WebAssembly, and a participant on a slow mobile link loads all
 * of it before joining; compressed ahead of time, at the highest levels, so no request pays for
 * it. Files under 1 KiB and files that do not get smaller are left alone.
 */
function precompress(): Plugin {
  let outDir = 'dist';
  return {
    name: 'klausur-precompress',
    apply: 'build',
    configResolved(config) {
      outDir = resolve(config.root, config.build.outDir);
    },
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
          e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)],
        );
      for (const file of walk(outDir).filter((f) => COMPRESSIBLE.test(f))) {
        if (statSync(file).size < 1024) continue;
        const data = readFileSync(file);
        const br = brotliCompressSync(data, {
          params: {
            [constants.BROTLI_PARAM_QUALITY]: constants.BROTLI_MAX_QUALITY,
            [constants.BROTLI_PARAM_SIZE_HINT]: data.length,
          },
        });
        const gz = gzipSync(data, { level: 9 });
        if (br.length < data.length) writeFileSync(`${file}.br`, br);
        if (gz.length < data.length) writeFileSync(`${file}.gz`, gz);
      }
    },
  };
}

// During development the klausur server runs separately; proxy its API and WebSocket.
const backend = process.env.KLAUSUR_DEV_BACKEND ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react(), precompress()],
  server: {
    proxy: {
      '/api': { target: backend, ws: true, changeOrigin: false },
    },
  },
  build: {
    outDir: 'dist',
    sourcemap: true,
  },
  // The encryption worker (src/e2ee/worker.ts) is a module worker that imports the
  // WebAssembly package; its .wasm is emitted as an asset (served as application/wasm).
  worker: {
    format: 'es',
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
