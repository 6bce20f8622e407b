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
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
