import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'

// `npm test` builds first, so the real CLI is in dist/.
const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

interface Run {
  code: number
  stdout: string
  stderr: string
}

function validate(file?: string, env: NodeJS.ProcessEnv = {}, command = 'validate'): Promise<Run> {
  const args = [cli, command, ...(file === undefined ? [] : [file])]
  return new Promise((resolve) => {
    // A clean environment (plus PATH) so no variable of the developer's shell changes the outcome.
    execFile(process.execPath, args, { env: { PATH: process.env['PATH'], ...env } }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1
      resolve({ code, stdout, stderr })
    })
  })
}

let dir = ''
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'switchyard-validate-'))
})
afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, text)
  return path
}

describe('switchyard validate FILE', () => {
  it('a good config: exit 0 and exactly "ok"', async () => {
    const path = await file(
      'good.yaml',
      `admin: { token: "\${SWITCHYARD_ADMIN_TOKEN}" }
upstreams:
  v1: { targets: [ { url: "http://127.0.0.1:3001" } ] }
  v2: { targets: [ { url: "http://127.0.0.1:3002" } ] }
routes:
  - { name: api, split: { v1: 90, v2: 10 } }
`,
    )
    const run = await validate(path, { SWITCHYARD_ADMIN_TOKEN: 't' })
    expect(run).toEqual({ code: 0, stdout: 'ok\n', stderr: '' })
  })

  it('the shipped configs are valid', async () => {
    for (const name of ['demo.yaml', 'example.yaml']) {
      const run = await validate(fileURLToPath(new URL(`../config/${name}`, import.meta.url)))
      expect(run, name).toEqual({ code: 0, stdout: 'ok\n', stderr: '' })
    }
  })

  it('a bad config: exit 1 and every problem on its own stderr line, path first', async () => {
    const path = await file(
      'bad.json',
      JSON.stringify({
        upstreams: {
          v1: { targets: [{ url: 'http://127.0.0.1:3001' }, { url: 'http://127.0.0.1:3001' }] },
          v2: { targets: [{ url: 'https://127.0.0.1:3002' }], tls: { ca: '/nonexistent/ca.pem' } },
        },
        routes: [
          { name: 'api', split: { v1: 90, v3: 10 }, rules: [{ match: { header: { 'x-v': { regex: '(' } } }, upstream: 'v9' }] },
          { name: 'api', match: { pathPrefix: '/b' }, split: { v1: 0 } },
        ],
      }),
    )
    const run = await validate(path)
    expect(run.code).toBe(1)
    expect(run.stdout).toBe('')
    const lines = run.stderr.trimEnd().split('\n')
    expect(lines).toEqual([
      'upstreams.v1.targets[1].id: duplicate id "127.0.0.1:3001" (same as targets[0])',
      'upstreams.v2.tls.ca: /nonexistent/ca.pem: cannot read: ENOENT',
      'routes[0].split.v3: unknown upstream "v3"',
      'routes[0].rules[0].upstream: unknown upstream "v9"',
      expect.stringMatching(/^routes\[0\]\.rules\[0\]\.match\.header\.x-v\.regex: invalid regular expression: /),
      'routes[1].name: duplicate route "api"',
      'routes[1].split: weights must not all be 0',
    ])
  })

  it('shape problems are printed the same way', async () => {
    const path = await file('shape.yaml', 'upstreams: {}\nroutes:\n  - { name: api, split: { v1: -1 } }\nfoo: 1\n')
    const run = await validate(path)
    expect(run.code).toBe(1)
    expect(run.stderr).toBe('unknown property "foo"\nroutes[0].split.v1: must be >= 0\n')
  })

  it('shape and semantic problems come out together: both problems of a split, from validate and from start', async () => {
    const path = await file(
      'split.yaml',
      `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
upstreams:
  v1: { targets: [ { url: "http://127.0.0.1:3001" } ] }
  v2: { targets: [ { url: "http://127.0.0.1:3002" } ] }
routes:
  - { name: api, split: { v1: -1, v3: 10 } }
`,
    )
    const expected = 'routes[0].split.v1: must be >= 0\nroutes[0].split.v3: unknown upstream "v3"\n'
    expect(await validate(path)).toEqual({ code: 1, stdout: '', stderr: expected })
    // `start FILE` (positional) on the same file: the same problems, exit 1 before listening.
    expect(await validate(path, {}, 'start')).toEqual({ code: 1, stdout: '', stderr: expected })
  })

  it('an unset environment variable', async () => {
    const path = await file('env.yaml', 'admin: { token: "${SWITCHYARD_ADMIN_TOKEN}" }\nupstreams: {}\nroutes: []\n')
    const run = await validate(path)
    expect(run).toEqual({ code: 1, stdout: '', stderr: 'admin.token: environment variable SWITCHYARD_ADMIN_TOKEN is not set\n' })
  })

  it('a syntax error, with its line and column', async () => {
    const path = await file('syntax.json', '{\n  "upstreams": {},\n  "routes": [}\n}\n')
    const run = await validate(path)
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/^syntax error at line 3, column 14: .*\n$/)
  })

  it('a missing file: exit 1, says it cannot read it', async () => {
    const path = join(dir, 'missing.yaml')
    const run = await validate(path)
    expect(run.code).toBe(1)
    expect(run.stdout).toBe('')
    expect(run.stderr).toMatch(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read: ENOENT`))
  })

  it('no FILE: usage on stderr, exit 2', async () => {
    const run = await validate()
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('usage: switchyard validate FILE')
  })
})
