/**
 * Vitest globalSetup: before any test runs, checks once that the redis-server the Redis tests
 * spawn can be executed. Without it every Redis test would fail on its own with spawn ENOENT;
 * instead the run stops with one line saying what to install.
 */
import { spawnSync } from 'node:child_process'

/** What test/helpers/redis.ts spawns: SWITCHYARD_TEST_REDIS_BIN when set, else redis-server on PATH. */
export function redisBin(env: NodeJS.ProcessEnv = process.env): string {
  const bin = env['SWITCHYARD_TEST_REDIS_BIN']
  return bin !== undefined && bin !== '' ? bin : 'redis-server'
}

/** Why the tests cannot run redis-server, in one line with the fix, or null when `--version` runs and exits 0. */
export function redisProblem(env: NodeJS.ProcessEnv = process.env): string | null {
  const bin = redisBin(env)
  const run = spawnSync(bin, ['--version'], { env, encoding: 'utf8', timeout: 10_000 })
  const what = bin === 'redis-server' ? 'redis-server' : `SWITCHYARD_TEST_REDIS_BIN=${bin}`
  const fix = 'install redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) or set SWITCHYARD_TEST_REDIS_BIN to its path'
  if (run.error !== undefined) return `cannot run ${what} (${(run.error as NodeJS.ErrnoException).code ?? run.error.message}); ${fix}`
  if (run.status !== 0) return `${what} --version exited with ${run.status ?? run.signal}; ${fix}`
  return null
}

export default function setup(): void {
  const problem = redisProblem()
  if (problem === null) return
  process.stderr.write(`switchyard tests: ${problem}\n`)
  process.exit(1)
}
