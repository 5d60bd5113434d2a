/**
 * Admin API conventions on a real instance: list endpoints, 405 with Allow, ETag on every read
 * that answers a revision, an operationId on every operation (walked from /docs/json), and a
 * browsable /docs served from the npm package.
 */
import { request } from 'undici'
import { describe, expect, it } from 'vitest'
import { adminClient, backend, startApp, twoVersions } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'

/** Every operation's id, by `METHOD path`: stable names clients are generated with. */
const OPERATION_IDS: Record<string, string> = {
  'GET /healthz': 'getLiveness',
  'GET /readyz': 'getReadiness',
  'GET /metrics': 'getMetrics',
  'GET /api/state': 'getState',
  'PUT /api/state': 'putState',
  'GET /api/upstreams': 'listUpstreams',
  'GET /api/upstreams/{name}': 'getUpstream',
  'PUT /api/upstreams/{name}': 'putUpstream',
  'DELETE /api/upstreams/{name}': 'deleteUpstream',
  'GET /api/upstreams/{name}/targets': 'listTargets',
  'POST /api/upstreams/{name}/targets': 'addTarget',
  'GET /api/upstreams/{name}/targets/{id}': 'getTarget',
  'PATCH /api/upstreams/{name}/targets/{id}': 'patchTarget',
  'DELETE /api/upstreams/{name}/targets/{id}': 'deleteTarget',
  'POST /api/upstreams/{name}/targets/{id}/drain': 'drainTarget',
  'POST /api/upstreams/{name}/replace': 'replaceTargets',
  'GET /api/upstreams/{name}/replace': 'getReplacement',
  'GET /api/routes': 'listRoutes',
  'GET /api/routes/{name}': 'getRoute',
  'PUT /api/routes/{name}': 'putRoute',
  'DELETE /api/routes/{name}': 'deleteRoute',
  'PUT /api/routes/{name}/split': 'putRouteSplit',
  'GET /api/flags': 'listFlags',
  'GET /api/flags/{name}': 'getFlag',
  'PUT /api/flags/{name}': 'putFlag',
  'DELETE /api/flags/{name}': 'deleteFlag',
  'GET /api/rollouts': 'listRollouts',
  'POST /api/rollouts': 'startRollout',
  'GET /api/rollouts/{id}': 'getRollout',
  'POST /api/rollouts/{id}/pause': 'pauseRollout',
  'POST /api/rollouts/{id}/resume': 'resumeRollout',
  'POST /api/rollouts/{id}/promote': 'promoteRollout',
  'POST /api/rollouts/{id}/abort': 'abortRollout',
  'GET /api/stats': 'getStats',
  'GET /api/routes/{name}/mirror': 'getRouteMirror',
  'GET /api/dashboard/stream': 'streamDashboard',
  'GET /api/events': 'listEvents',
  'GET /api/instances': 'listInstances',
}

type OpenApi = { paths: Record<string, Record<string, { operationId?: string; responses: Record<string, { content?: Record<string, { schema: { properties?: Record<string, unknown> } }> }> }>> }

async function app(extra = {}, opts: Parameters<typeof startApp>[1] = {}) {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2, extra), opts)
  return { ...t, v1, v2 }
}

describe('admin API conventions', () => {
  it('GET /api/upstreams, /api/routes (match order), /api/flags: arrays of named resources with the revision and its ETag', async () => {
    const t = await app({
      routes: [
        { name: 'root', split: { v1: 1 } },
        { name: 'api-any', match: { pathPrefix: '/api' }, split: { v1: 1 } },
        { name: 'api-host', match: { host: 'a.example', pathPrefix: '/api' }, split: { v2: 1 } },
        { name: 'api-v2', match: { pathPrefix: '/api/v2/' }, split: { v2: 1 } },
        { name: 'api-any-2', match: { pathPrefix: '/apx' }, split: { v1: 1 } },
      ],
      flags: { zeta: { enabled: true }, alpha: { enabled: false } },
    })
    const ups = await t.admin.get('/api/upstreams')
    expect(ups.status).toBe(200)
    expect(ups.headers.get('etag')).toBe('"1"')
    expect(ups.body).toEqual({
      revision: 1,
      upstreams: [
        { name: 'v1', targets: [{ id: t.v1.id, url: t.v1.url, state: 'active' }] },
        { name: 'v2', targets: [{ id: t.v2.id, url: t.v2.url, state: 'active' }] },
      ],
    })
    // Each element is what the single read answers, without the revision.
    const { revision, ...one } = (await t.admin.get('/api/upstreams/v2')).body
    expect(revision).toBe(1)
    expect(ups.body.upstreams[1]).toEqual(one)

    const routes = await t.admin.get('/api/routes')
    expect(routes.headers.get('etag')).toBe('"1"')
    // Longest prefix first; exact host before * at equal length; then declaration order.
    expect(routes.body.routes.map((r: { name: string }) => r.name)).toEqual(['api-v2', 'api-host', 'api-any', 'api-any-2', 'root'])
    expect(routes.body.routes[0]).toEqual({ name: 'api-v2', match: { pathPrefix: '/api/v2/' }, split: { v2: 1 } })
    // The order is the data plane's: /api/x on a.example goes to api-host, elsewhere to api-any.
    const via = async (host: string) => {
      const res = await request(`${t.app.proxyUrl}/api/x`, { headers: { host } })
      await res.body.dump()
      return res.headers['x-backend']
    }
    expect(await via('a.example')).toBe('v2')
    expect(await via('b.example')).toBe('v1')

    const flags = await t.admin.get('/api/flags')
    expect(flags.body).toEqual({ revision: 1, flags: [{ name: 'alpha', enabled: false }, { name: 'zeta', enabled: true }] })
    expect(flags.headers.get('etag')).toBe('"1"')

    // A write moves the revision every list reports.
    expect((await t.admin.put('/api/upstreams/v0', { targets: [] })).status).toBe(201)
    const after = await t.admin.get('/api/upstreams')
    expect(after.headers.get('etag')).toBe('"2"')
    expect(after.body.upstreams.map((u: { name: string }) => u.name)).toEqual(['v0', 'v1', 'v2'])
  })

  it('GET /api/upstreams/{name}/targets: state, health and fleet-wide in-flight per target, like the single read', async () => {
    const t = await app()
    expect((await t.admin.post('/api/upstreams/v1/targets', { url: 'http://127.0.0.1:9', id: 'gone', state: 'disabled' })).status).toBe(201)
    const slow = t.proxy('/delay?ms=500')
    await eventually(async () => {
      const list = await t.admin.get('/api/upstreams/v1/targets')
      expect(list.body.targets.find((x: { id: string }) => x.id === t.v1.id)?.inflight).toBe(1)
    })
    const list = await t.admin.get('/api/upstreams/v1/targets')
    expect(list.status).toBe(200)
    expect(list.headers.get('etag')).toBe('"2"')
    expect(list.body).toEqual({
      revision: 2,
      upstream: 'v1',
      targets: [
        { id: t.v1.id, url: t.v1.url, state: 'active', healthy: true, inflight: 1 },
        { id: 'gone', url: 'http://127.0.0.1:9', state: 'disabled', healthy: expect.any(Boolean), inflight: 0, ...(list.body.targets[1].reason ? { reason: expect.any(String) } : {}) },
      ],
    })
    expect((await slow).status).toBe(200)
    for (const target of (await t.admin.get('/api/upstreams/v1/targets')).body.targets) {
      const { revision, upstream, ...one } = (await t.admin.get(`/api/upstreams/v1/targets/${encodeURIComponent(target.id)}`)).body
      expect([revision, upstream]).toEqual([2, 'v1'])
      expect(target).toEqual(one)
    }
    const missing = await t.admin.get('/api/upstreams/nope/targets')
    expect(missing.status).toBe(404)
    expect(missing.body.error.code).toBe('NOT_FOUND')
  })

  it('a known path asked with another method answers 405 METHOD_NOT_ALLOWED with Allow; an unknown path stays 404', async () => {
    const t = await app()
    const cases: [string, string, string][] = [
      ['POST', '/api/state', 'GET, HEAD, PUT'],
      ['DELETE', '/api/upstreams', 'GET, HEAD'],
      ['POST', '/api/upstreams/v1', 'DELETE, GET, HEAD, PUT'],
      ['PUT', '/api/upstreams/v1/targets', 'GET, HEAD, POST'],
      ['POST', '/api/upstreams/v1/targets/127.0.0.1%3A1', 'DELETE, GET, HEAD, PATCH'],
      ['GET', '/api/upstreams/v1/targets/x/drain', 'POST'],
      ['PATCH', '/api/routes/api', 'DELETE, GET, HEAD, PUT'],
      ['GET', '/api/routes/api/split', 'PUT'],
      ['POST', '/api/flags', 'GET, HEAD'],
      ['DELETE', '/api/rollouts', 'GET, HEAD, POST'],
      ['GET', '/api/rollouts/c1/pause', 'POST'],
      ['POST', '/metrics', 'GET, HEAD'],
      ['OPTIONS', '/healthz', 'GET, HEAD'],
    ]
    for (const [method, path, allow] of cases) {
      const res = await t.admin.request(method, path)
      expect([method, path, res.status]).toEqual([method, path, 405])
      expect(res.headers.get('allow')).toBe(allow)
      expect(res.body).toEqual({ error: { code: 'METHOD_NOT_ALLOWED', message: expect.stringContaining(method), details: [{ allow: allow.split(', ') }] } })
    }
    for (const path of ['/api/nothing', '/api/upstreams/v1/targets/x/y', '/api/upstreams/', '/nope']) {
      const res = await t.admin.request('POST', path)
      expect([path, res.status, res.body.error.code]).toEqual([path, 404, 'NOT_FOUND'])
      expect(res.headers.get('allow')).toBeNull()
    }
    // The right method still works, HEAD included.
    expect((await t.admin.request('HEAD', '/api/state')).status).toBe(200)
  })

  it('every read that answers a revision sends ETag "<revision>": walked from /docs/json', async () => {
    const t = await app({ flags: { beta: { enabled: true } } })
    expect((await t.admin.post('/api/rollouts', { id: 'c1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 10, pauseMs: 60_000 }] })).status).toBe(201)
    // A replacement with nothing to do, so GET .../replace has a record to read.
    expect((await t.admin.post('/api/upstreams/v1/replace', { targets: [{ url: t.v1.url }] })).status).toBe(202)
    const doc = (await t.admin.get<OpenApi>('/docs/json')).body
    const params: Record<string, string> = { name: 'v1', id: t.v1.id }
    const special: Record<string, Record<string, string>> = {
      '/api/routes/{name}': { name: 'api' },
      '/api/flags/{name}': { name: 'beta' },
      '/api/rollouts/{id}': { id: 'c1' },
    }
    const checked: string[] = []
    for (const [path, ops] of Object.entries(doc.paths)) {
      const props = ops['get']?.responses['200']?.content?.['application/json']?.schema.properties
      // /readyz tells the applied revision too, but it is a probe, not a read of the state.
      if (props?.['revision'] === undefined || !path.startsWith('/api/')) continue
      const url = path.replace(/\{(\w+)\}/g, (_, p: string) => encodeURIComponent(special[path]?.[p] ?? params[p]!))
      const res = await t.admin.get(url)
      expect([url, res.status]).toEqual([url, 200])
      expect([url, res.headers.get('etag')]).toEqual([url, `"${res.body.revision}"`])
      checked.push(path)
    }
    expect(checked.sort()).toEqual(
      [
        '/api/state',
        '/api/upstreams',
        '/api/upstreams/{name}',
        '/api/upstreams/{name}/targets',
        '/api/upstreams/{name}/targets/{id}',
        '/api/upstreams/{name}/replace',
        '/api/routes',
        '/api/routes/{name}',
        '/api/flags',
        '/api/flags/{name}',
        '/api/rollouts',
        '/api/rollouts/{id}',
      ].sort(),
    )
    // A 404 carries no ETag.
    expect((await t.admin.get('/api/routes/nope')).headers.get('etag')).toBeNull()
  })

  it('every operation has a stable camelCase operationId, unique; descriptions stand on their own', async () => {
    const t = await app()
    const res = await t.admin.get<OpenApi>('/docs/json')
    const ids: Record<string, string | undefined> = {}
    for (const [path, ops] of Object.entries(res.body.paths)) {
      for (const [method, op] of Object.entries(ops)) ids[`${method.toUpperCase()} ${path}`] = op.operationId
    }
    expect(ids).toEqual(OPERATION_IDS)
    const values = Object.values(ids) as string[]
    for (const id of values) expect(id).toMatch(/^[a-z][a-zA-Z0-9]*$/)
    expect(new Set(values).size).toBe(values.length)
    expect(JSON.stringify(res.body)).not.toMatch(/SPEC\.md|GUIDE\.md/)
  })

  it('/docs is Swagger UI from the npm package, open without a token like /docs/json; /api stays closed', async () => {
    const t = await app({ admin: { token: 'secret' } })
    const anonymous = adminClient(t.app.adminUrl)
    expect((await anonymous.get('/api/state')).status).toBe(401)
    const page = await fetch(`${t.app.adminUrl}/docs`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    const html = await page.text()
    expect(html).toContain('swagger-ui')
    // Every script and stylesheet is served by the admin port itself: nothing from a CDN.
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
    expect(assets.length).toBeGreaterThan(0)
    for (const a of assets) expect(a).not.toMatch(/^(https?:)?\/\//)
    for (const a of assets.filter((x) => x.endsWith('.js') || x.endsWith('.css'))) {
      const res = await fetch(new URL(a, `${t.app.adminUrl}/docs/`))
      expect([a, res.status]).toEqual([a, 200])
      await res.arrayBuffer()
    }
    const init = await (await fetch(`${t.app.adminUrl}/docs/static/swagger-initializer.js`)).text()
    expect(init).toContain("resolveUrl('./json')")
    expect(init).toContain('validatorUrl: null') // no badge fetched from validator.swagger.io
    expect(init).not.toMatch(/(url|src|href)\s*[:=]\s*['"`](https?:)?\/\//i)
    const doc = await anonymous.get('/docs/json')
    expect(doc.status).toBe(200)
    expect(doc.body.openapi).toMatch(/^3\./)
  })
})
