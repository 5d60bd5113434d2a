import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Stops the run with one line when redis-server is missing, before any test fails on it.
    globalSetup: ['test/setup/redis-available.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Test files spawn real servers and redis-server processes; two cores, so keep parallelism modest.
    maxWorkers: 2,
  },
})
