import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { refused } from './helpers/client.js'
import { CLI } from './helpers/proxy-process.js'
import { freePort } from './helpers/redis.js'

function start(config: string, extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    void (async () => {
      const dir = await mkdtemp(join(tmpdir(), 'switchyard-start-'))
      const file = join(dir, 'config.yaml')
      await writeFile(file, config)
      execFile(process.execPath, [CLI, 'start', '--config', file, ...extra], { timeout: 15_000 }, (err, stdout, stderr) => {
        resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
      })
    })()
  })
}

it('exits 1 before listening on a bad config, printing every problem with its path', async () => {
  const port = await freePort()
  const run = start(`listen: { host: 127.0.0.1, port: ${port} }
upstreams: { v1: { targets: [ { url: "http://127.0.0.1:3001" } ] } }
routes:
  - { name: api, split: { v1: -1, v3: 5 } }
`)
  const { code, stdout, stderr } = await run
  expect(code).toBe(1)
  expect(stdout).toBe('')
  expect(stderr).toContain('routes[0].split.v1: must be >= 0')
  expect(await refused(port)).toBe(true)
})

it('refuses to bind admin to a non-loopback host without a token', async () => {
  const { code, stderr } = await start(`listen: { host: 127.0.0.1, port: 0 }
admin: { host: 0.0.0.0, port: 0 }
upstreams: { v1: { targets: [ { url: "http://127.0.0.1:3001" } ] } }
routes: [ { name: api, split: { v1: 1 } } ]
`)
  expect(code).toBe(1)
  expect(stderr).toMatch(/^admin\.host: .*token/m)
})

it.each([['0'], ['abc'], ['-1']])('refuses --workers %s with a usage error', async (n) => {
  const { code, stderr } = await start('routes: []\nupstreams: {}\n', ['--workers', n])
  expect(code).toBe(2)
  expect(stderr).toContain('--workers must be a number >= 1 or "auto"')
})
