/**
 * A fresh machine without redis-server: the run stops before any test with one line saying
 * what to install (test/setup/redis-available.ts), and SWITCHYARD_TEST_REDIS_BIN is what the
 * Redis helper spawns when it is set.
 */
import { execFile } from 'node:child_process'
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedis } from './helpers/redis.js'
import { redisProblem } from './setup/redis-available.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const VITEST = join(ROOT, 'node_modules/vitest/vitest.mjs')

let dir: string
/** A PATH that has node and nothing else: no redis-server. */
let bareBin: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-redis-setup-'))
  bareBin = join(dir, 'bin')
  await mkdir(bareBin)
  await symlink(process.execPath, join(bareBin, 'node'))
})

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** `vitest run test/bucket.test.ts` in a child with only `env` (none of this run's VITEST_* variables). */
function vitestRun(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [VITEST, 'run', 'test/bucket.test.ts'], { cwd: ROOT, env: { HOME: dir, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })
    })
  })
}

function problemLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.trim() !== '')
}

describe('the test run without redis-server', () => {
  it('stops before any test with one line naming what to install', async () => {
    const run = await vitestRun({ PATH: bareBin })
    expect(run.code).not.toBe(0)
    const lines = problemLines(run.stderr)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/^switchyard tests: cannot run redis-server \(ENOENT\); /)
    expect(lines[0]).toContain('apt-get install redis-server')
    expect(lines[0]).toContain('brew install redis')
    expect(lines[0]).toContain('SWITCHYARD_TEST_REDIS_BIN')
    expect(run.stdout).not.toMatch(/passed|failed/)
  })

  it('names SWITCHYARD_TEST_REDIS_BIN when that is what cannot be run', async () => {
    const missing = join(dir, 'no-such-redis-server')
    const run = await vitestRun({ PATH: bareBin, SWITCHYARD_TEST_REDIS_BIN: missing })
    expect(run.code).not.toBe(0)
    const lines = problemLines(run.stderr)
    expect(lines).toHaveLength(1)
    expect(lines[0]).toContain(`cannot run SWITCHYARD_TEST_REDIS_BIN=${missing} (ENOENT)`)
  })

  it('judges a binary that runs but fails --version as missing too', () => {
    const problem = redisProblem({ PATH: bareBin, SWITCHYARD_TEST_REDIS_BIN: '/bin/false' })
    expect(problem).toMatch(/^SWITCHYARD_TEST_REDIS_BIN=\/bin\/false --version exited with 1; install redis-server/)
  })
})

describe('SWITCHYARD_TEST_REDIS_BIN', () => {
  it('is the binary the Redis helper spawns', async () => {
    const marker = join(dir, 'spawned')
    const wrapper = join(dir, 'my-redis-server')
    // A wrapper that logs its arguments, then runs the real redis-server.
    const real = await new Promise<string>((resolve, reject) =>
      execFile('sh', ['-c', 'command -v redis-server'], (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))),
    )
    await writeFile(wrapper, `#!/bin/sh\necho "$@" >> '${marker}'\nexec '${real}' "$@"\n`)
    await chmod(wrapper, 0o755)
    expect(redisProblem({ PATH: bareBin, SWITCHYARD_TEST_REDIS_BIN: wrapper })).toBeNull()
    const before = process.env['SWITCHYARD_TEST_REDIS_BIN']
    process.env['SWITCHYARD_TEST_REDIS_BIN'] = wrapper
    try {
      const redis = await startRedis()
      await redis.stop()
      expect(await readFile(marker, 'utf8')).toContain(`--port ${redis.port}`)
    } finally {
      if (before === undefined) delete process.env['SWITCHYARD_TEST_REDIS_BIN']
      else process.env['SWITCHYARD_TEST_REDIS_BIN'] = before
    }
  })
})
