import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// During development the klausur server runs separately; proxy its API and WebSocket.
const backend = process.env.KLAUSUR_DEV_BACKEND ?? 'http://127.0.0.1:8080';

export default defineConfig({
  plugins: [react()],
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
