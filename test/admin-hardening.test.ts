/**
 * The admin API's doors: without a token, only loopback Hosts and same-origin writes (so a
 * web page, cross-site or through DNS rebinding, can neither read nor change anything); the
 * pages' Content-Security-Policy and nosniff; token roles (read, operator, admin) with the
 * least role each call needs; short tokens refused off loopback and warned about on it.
 */
import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { requiredRole } from '../src/control/admin/auth.js'
import { parseConfigText } from '../src/config/load.js'
import { adminClient, backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { memoryLogger } from './helpers/log.js'
import { CLI } from './helpers/proxy-process.js'

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: any
}

/**
 * One request with node:http, which sends the Host given (fetch would send the URL's):
 * what a browser sends when a page at evil.example reaches this port.
 */
function ask(baseUrl: string, method: string, path: string, opts: { host?: string; origin?: string; token?: string; json?: unknown } = {}): Promise<Answer> {
  const url = new URL(path, baseUrl)
  const headers: Record<string, string> = {}
  if (opts.host !== undefined) headers['host'] = opts.host
  if (opts.origin !== undefined) headers['origin'] = opts.origin
  if (opts.token !== undefined) headers['authorization'] = `Bearer ${opts.token}`
  const body = opts.json === undefined ? undefined : JSON.stringify(opts.json)
  if (body !== undefined) headers['content-type'] = 'application/json'
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let parsed: unknown = text
        try {
          parsed = text === '' ? undefined : JSON.parse(text)
        } catch {
          // not JSON (a page, metrics): keep the text
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed })
      })
    })
    req.on('error', reject)
    req.end(body)
  })
}

const portOf = (url: string) => new URL(url).port

describe('without a token: only loopback Hosts, only same-origin writes', () => {
  let t: TestApp
  let base: string
  let port: string
  beforeAll(async () => {
    t = await startApp(twoVersions(await backend('v1'), await backend('v2')))
    base = t.app.adminUrl
    port = portOf(base)
  })
  const split = async () => (await t.admin.get('/api/routes/api')).body.split

  it('refuses a cross-origin write, a bodyless "simple" POST included, and changes nothing', async () => {
    const before = (await t.admin.get('/api/state')).body
    for (const origin of ['http://evil.example', `http://evil.example:${port}`, 'null', `https://127.0.0.1:${port}`, `http://localhost:${port}`]) {
      const res = await ask(base, 'PUT', '/api/routes/api/split', { host: `127.0.0.1:${port}`, origin, json: { v2: 100 } })
      expect([origin, res.status, res.body.error.code]).toEqual([origin, 403, 'FORBIDDEN'])
      expect(res.body.error.message).toMatch(/Origin.*admin\.token/)
    }
    // A form or sendBeacon needs no CORS preflight: the refusal must come before the route runs.
    const simple = await ask(base, 'POST', '/api/upstreams/v1/targets/x/drain', { host: `127.0.0.1:${port}`, origin: 'http://evil.example' })
    expect(simple.status).toBe(403)
    expect((await t.admin.get('/api/state')).body).toEqual(before)
  })

  it('accepts a same-origin write (the dashboard) and one without Origin (curl, ctl)', async () => {
    const same = await ask(base, 'PUT', '/api/routes/api/split', { host: `127.0.0.1:${port}`, origin: `http://127.0.0.1:${port}`, json: { v1: 60, v2: 40 } })
    expect(same.status).toBe(200)
    expect(await split()).toEqual({ v1: 60, v2: 40 })
    const viaLocalhost = await ask(base, 'PUT', '/api/routes/api/split', { host: `LocalHost:${port}`, origin: `http://localhost:${port}`, json: { v1: 70, v2: 30 } })
    expect(viaLocalhost.status).toBe(200)
    const noOrigin = await ask(base, 'PUT', '/api/routes/api/split', { host: `127.0.0.1:${port}`, json: { v1: 100, v2: 0 } })
    expect(noOrigin.status).toBe(200)
    expect(await split()).toEqual({ v1: 100, v2: 0 })
    // A read may carry any Origin: a page cannot read the answer without CORS (and the Host is loopback).
    expect((await ask(base, 'GET', '/api/state', { host: `127.0.0.1:${port}`, origin: 'http://evil.example' })).status).toBe(200)
  })

  it('refuses a foreign Host (a DNS-rebinding page), on reads and on the dashboard, saying to set a token', async () => {
    for (const host of [`evil.example:${port}`, 'evil.example', `10.0.0.7:${port}`, `[fe80::1]:${port}`, `127.0.0.1.evil.example:${port}`, `localhost.evil.example`, 'bad host', `[::1`]) {
      for (const path of ['/api/state', '/', '/docs/json', '/api/nothing']) {
        const res = await ask(base, 'GET', path, { host })
        expect([host, path, res.status]).toEqual([host, path, 403])
        expect(res.body).toEqual({ error: { code: 'FORBIDDEN', message: expect.stringMatching(/Host .*DNS rebinding.*admin\.token or admin\.tokens/) } })
      }
    }
  })

  it('accepts loopback Hosts, with or without port', async () => {
    for (const host of [`localhost:${port}`, 'localhost', `127.0.0.1:${port}`, `127.1.2.3:${port}`, `[::1]:${port}`, '[::1]']) {
      const res = await ask(base, 'GET', '/api/state', { host })
      expect([host, res.status]).toEqual([host, 200])
    }
  })

  it('keeps the probes answering whatever the Host (kubelet and Prometheus ask by pod IP)', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      const res = await ask(base, 'GET', path, { host: `10.1.2.3:${port}` })
      expect([path, res.status]).toEqual([path, 200])
    }
  })
})

describe('with a token: no Host or Origin check (a browser cannot attach the token by itself)', () => {
  it('answers a foreign Host and a cross-origin write that carry the token; 401 without it', async () => {
    const token = 'hardening-token-0123456789'
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2'), { admin: { token } }), { token })
    const base = t.app.adminUrl
    expect((await ask(base, 'GET', '/api/state', { host: 'switchyard-admin.internal:9901', token })).status).toBe(200)
    const write = await ask(base, 'PUT', '/api/routes/api/split', { host: 'switchyard-admin.internal', origin: 'http://tooling.example', token, json: { v1: 1, v2: 1 } })
    expect(write.status).toBe(200)
    const page = await ask(base, 'PUT', '/api/routes/api/split', { host: 'evil.example', origin: 'http://evil.example', json: { v2: 100 } })
    expect(page.status).toBe(401)
    expect((await t.admin.get('/api/routes/api')).body.split).toEqual({ v1: 1, v2: 1 })
  })
})

describe('security headers', () => {
  it('sends the CSP on / and /docs, and nosniff on every answer', async () => {
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2')))
    for (const path of ['/', '/docs', '/docs/']) {
      const res = await fetch(t.app.adminUrl + path)
      expect([path, res.status]).toEqual([path, 200])
      expect(res.headers.get('content-type')).toMatch(/^text\/html/)
      expect(res.headers.get('content-security-policy')).toBe("default-src 'self'; frame-ancestors 'none'")
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
      await res.arrayBuffer()
    }
    for (const path of ['/api/state', '/api/nothing', '/healthz', '/metrics', '/ui/app.js', '/docs/json']) {
      const res = await fetch(t.app.adminUrl + path)
      expect([path, res.headers.get('x-content-type-options')]).toEqual([path, 'nosniff'])
      await res.arrayBuffer()
    }
    const refused = await ask(t.app.adminUrl, 'GET', '/api/state', { host: 'evil.example' })
    expect(refused.headers['x-content-type-options']).toBe('nosniff')
  })
})

/** The writes an operator token may make; every other write needs admin (and every read, read). */
const OPERATOR_OPERATIONS = [
  'putRouteSplit',
  'patchTarget',
  'drainTarget',
  'putFlag',
  'deleteFlag',
  'startRollout',
  'pauseRollout',
  'resumeRollout',
  'promoteRollout',
  'abortRollout',
  'replaceTargets',
].sort()

describe('token roles', () => {
  const tokens = { reader: 'reader-token-0123456789', ops: 'operator-token-0123456789', root: 'admin-token-0123456789' }
  let t: TestApp
  let v1: Backend
  const as = (token: string) => adminClient(t.app.adminUrl, token)
  const reader = () => as(tokens.reader)
  const ops = () => as(tokens.ops)
  const root = () => as(tokens.root)

  beforeAll(async () => {
    v1 = await backend('v1')
    const v2 = await backend('v2')
    t = await startApp(
      twoVersions(v1, v2, {
        admin: { tokens: { reader: { token: tokens.reader, role: 'read' }, ops: { token: tokens.ops, role: 'operator' }, root: tokens.root } },
        // `spare` is used by no route: an admin may delete it.
        upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] }, spare: { targets: [{ url: 'http://127.0.0.1:1' }] } },
      }),
    )
  })

  it('read: 200 on every read, 403 FORBIDDEN on a split write, which changes nothing', async () => {
    for (const path of ['/api/state', '/api/routes', '/api/routes/api', '/api/upstreams', '/api/upstreams/v1/targets', '/api/flags', '/api/events', '/api/rollouts', '/api/instances', '/api/stats']) {
      const res = await reader().get(path)
      expect([path, res.status]).toEqual([path, 200])
    }
    const before = (await root().get('/api/state')).body
    const res = await reader().put('/api/routes/api/split', { v1: 50, v2: 50 })
    expect(res.status).toBe(403)
    expect(res.body).toEqual({ error: { code: 'FORBIDDEN', message: 'token "reader" has role read; PUT /api/routes/:name/split needs role operator or above' } })
    expect((await reader().put('/api/flags/beta', { enabled: true })).status).toBe(403)
    expect((await reader().request('POST', '/api/upstreams/v1/targets/x/drain')).status).toBe(403)
    expect((await root().get('/api/state')).body).toEqual(before)
  })

  it('a wrong token is still 401, before any role is looked at', async () => {
    const res = await as('not-a-configured-token').put('/api/routes/api/split', { v1: 1 })
    expect(res.status).toBe(401)
  })

  it('operator: shifts a split, sets target states, drains, flags; the audit log names it', async () => {
    expect((await ops().put('/api/routes/api/split', { v1: 90, v2: 10 }, { headers: { 'x-switchyard-reason': 'canary' } })).status).toBe(200)
    expect((await root().get('/api/routes/api')).body.split).toEqual({ v1: 90, v2: 10 })
    const [event] = (await reader().get('/api/events?limit=1')).body.events
    expect(event).toMatchObject({ actor: 'ops', reason: 'canary', action: 'split.put' })
    expect((await ops().patch(`/api/upstreams/v1/targets/${encodeURIComponent(v1.id)}`, { state: 'disabled' })).status).toBe(200)
    expect((await ops().patch(`/api/upstreams/v1/targets/${encodeURIComponent(v1.id)}`, { state: 'active' })).status).toBe(200)
    expect((await ops().post('/api/upstreams/spare/targets/127.0.0.1:1/drain')).status).toBe(200)
    expect((await ops().put('/api/flags/beta', { enabled: true })).status).toBe(201)
    expect((await ops().del('/api/flags/beta')).status).toBe(200)
  })

  it('operator: may not delete an upstream, PUT a route, add or remove a target, or replace the state (403)', async () => {
    const before = (await root().get('/api/state')).body
    const refused: [string, string, unknown?][] = [
      ['DELETE', '/api/upstreams/spare'],
      ['PUT', '/api/routes/extra', { match: { pathPrefix: '/extra/' }, split: { v1: 1 } }],
      ['PUT', '/api/upstreams/v3', { targets: [{ url: 'http://127.0.0.1:2' }] }],
      ['POST', '/api/upstreams/spare/targets', { url: 'http://127.0.0.1:3' }],
      ['DELETE', '/api/upstreams/spare/targets/127.0.0.1:1'],
      ['DELETE', '/api/routes/api'],
      ['PUT', '/api/state', { upstreams: {}, routes: [] }],
    ]
    for (const [method, path, body] of refused) {
      const res = await ops().request(method, path, body)
      expect([method, path, res.status, res.body.error.code]).toEqual([method, path, 403, 'FORBIDDEN'])
      expect(res.body.error.message).toContain('needs role admin')
    }
    expect((await root().get('/api/state')).body).toEqual(before)
  })

  it('admin (the default role): PUTs a route and deletes an upstream', async () => {
    expect((await root().put('/api/routes/extra', { match: { pathPrefix: '/extra/' }, split: { v1: 1 } })).status).toBe(201)
    expect((await root().del('/api/routes/extra')).status).toBe(200)
    expect((await root().del('/api/upstreams/spare')).status).toBe(200)
    expect((await root().get('/api/upstreams/spare')).status).toBe(404)
  })

  it('the OpenAPI document names the role of every operation: reads need read, the operator table, every other write admin', async () => {
    const doc = (await reader().get('/docs/json')).body
    const operator: string[] = []
    for (const [path, ops] of Object.entries<Record<string, { operationId: string; description?: string; 'x-switchyard-role'?: string }>>(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const role = op['x-switchyard-role']
        if (['/healthz', '/readyz', '/metrics'].includes(path)) {
          expect([path, role]).toEqual([path, undefined])
          continue
        }
        if (method === 'get' || method === 'head') expect([op.operationId, role]).toEqual([op.operationId, 'read'])
        else expect([op.operationId, role]).toEqual([op.operationId, expect.stringMatching(/^(operator|admin)$/)])
        if (role === 'operator') operator.push(op.operationId)
        expect(op.description).toContain(`role ${role}`)
      }
    }
    expect(operator.sort()).toEqual(OPERATOR_OPERATIONS)
  })

  it('default deny: a route that declares no role needs admin to write, read to read', () => {
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) expect(requiredRole(method, undefined)).toBe('admin')
    for (const method of ['GET', 'HEAD']) expect(requiredRole(method, undefined)).toBe('read')
    expect(requiredRole('PUT', 'operator')).toBe('operator')
  })
})

describe('short tokens (under 16 characters)', () => {
  const yaml = (admin: string) => `listen: { host: 127.0.0.1, port: 0 }
admin: ${admin}
upstreams: { v1: { targets: [ { url: "http://127.0.0.1:3001" } ] } }
routes: [ { name: api, split: { v1: 1 } } ]
`

  function start(config: string): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      void (async () => {
        const file = join(await mkdtemp(join(tmpdir(), 'switchyard-hardening-')), 'config.yaml')
        await writeFile(file, config)
        execFile(process.execPath, [CLI, 'start', '--config', file], { timeout: 15_000 }, (err, stdout, stderr) => {
          resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : -1, stdout, stderr })
        })
      })()
    })
  }

  it('refuses to start with admin off loopback, naming the token, never showing it', async () => {
    const { code, stderr } = await start(yaml('{ host: 0.0.0.0, port: 0, tokens: { ci: "tiny-secret", ops: { token: "long-enough-secret-0123", role: operator } } }'))
    expect(code).toBe(1)
    expect(stderr).toMatch(/^admin\.tokens\.ci: is 11 characters; a token needs at least 16 /m)
    expect(stderr).not.toContain('tiny-secret')
    expect(stderr).not.toContain('admin.tokens.ops')
    const single = await start(yaml('{ host: 0.0.0.0, port: 0, token: "0123456789abcde" }'))
    expect(single.code).toBe(1)
    expect(single.stderr).toMatch(/^admin\.token: is 15 characters/m)
  })

  it('the loader (start, validate, SIGHUP) accepts 16 characters off loopback, and short ones on loopback', () => {
    const problems = (admin: string) => parseConfigText(yaml(admin), {}).problems.map((p) => p.path)
    expect(problems('{ host: 0.0.0.0, tokens: { ci: { token: "0123456789abcdef", role: read } } }')).toEqual([])
    expect(problems('{ host: 10.0.0.1, tokens: { ci: { token: "0123456789abcde", role: read } } }')).toEqual(['admin.tokens.ci'])
    expect(problems('{ host: 127.0.0.1, token: "short" }')).toEqual([])
  })

  it('warns about a short token when admin is on loopback, and serves', async () => {
    const log = memoryLogger('info')
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2'), { admin: { tokens: { dev: 'dev-token', ci: 'long-enough-token-0123' } } }), { logger: log.logger, token: 'dev-token' })
    expect(log.find('admin.tokens.dev is 9 characters')).toEqual([expect.objectContaining({ level: 'warn', token: 'admin.tokens.dev', length: 9 })])
    expect(JSON.stringify(log.lines())).not.toContain('"dev-token"')
    expect(log.find('admin.tokens.ci')).toEqual([])
    expect((await t.admin.get('/api/state')).status).toBe(200)
  })

  it('a reload that brings a short token off loopback is refused and changes nothing; on loopback it applies and warns', async () => {
    const log = memoryLogger('info')
    const old = 'reload-old-token-0123456789'
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2'), { admin: { token: old } }), { logger: log.logger, token: old })
    // The addresses startApp gave (port 0): unchanged, so only the tokens differ.
    const next = (admin: object) => ({ listen: { host: '127.0.0.1', port: 0 }, shutdownTimeoutMs: 1_000, upstreams: {}, routes: [], admin })
    await expect(t.app.reload(next({ host: '0.0.0.0', port: 0, tokens: { ci: 'tiny-secret' } }))).rejects.toThrow(/^admin\.tokens\.ci: is 11 characters.*nothing changed$/)
    expect((await adminClient(t.app.adminUrl, old).get('/api/state')).status).toBe(200)
    expect((await adminClient(t.app.adminUrl, 'tiny-secret').get('/api/state')).status).toBe(401)
    expect(await t.app.reload(next({ host: '127.0.0.1', port: 0, tokens: { ci: 'tiny-secret' } }))).toContain('admin tokens')
    expect((await adminClient(t.app.adminUrl, 'tiny-secret').get('/api/state')).status).toBe(200)
    expect(log.find('admin.tokens.ci is 11 characters')).toHaveLength(1)
  })
})
