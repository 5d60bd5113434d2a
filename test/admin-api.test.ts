/** Admin API happy paths: state, upstreams, routes, split, flags, revisions, events, docs. */
import { describe, expect, it } from 'vitest'
import { adminClient, backend, startApp, twoVersions } from './helpers/admin.js'

async function twoVersionApp(opts: Parameters<typeof startApp>[1] = {}, extra = {}) {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2, extra), opts)
  return { ...t, v1, v2 }
}

describe('admin API', () => {
  it('serves liveness, readiness and the applied state with its ETag', async () => {
    const { admin, v1 } = await twoVersionApp()
    expect((await admin.get('/healthz')).status).toBe(200)
    expect((await admin.get('/readyz')).body).toEqual({ ready: true, revision: 1 })
    const res = await admin.get('/api/state')
    expect(res.status).toBe(200)
    expect(res.headers.get('etag')).toBe('"1"')
    expect(res.body).toEqual({
      revision: 1,
      upstreams: {
        v1: { targets: [{ id: v1.id, url: v1.url, state: 'active' }] },
        v2: { targets: [expect.objectContaining({ state: 'active' })] },
      },
      routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100, v2: 0 } }],
      flags: {},
      rollouts: {},
    })
  })

  it('PUT split moves traffic at once, answers the new revision with an ETag and is audited', async () => {
    const { admin, proxy } = await twoVersionApp()
    expect((await proxy('/x')).backend).toBe('v1')
    const res = await admin.put('/api/routes/api/split', { v2: 100 })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: 2, route: 'api', split: { v2: 100 } })
    expect(res.headers.get('etag')).toBe('"2"')
    for (let i = 0; i < 10; i++) expect((await proxy(`/x${i}`)).backend).toBe('v2')
    expect((await admin.get('/api/state')).body.routes[0].split).toEqual({ v2: 100 })
    const events = (await admin.get('/api/events')).body.events
    expect(events[0]).toMatchObject({
      revision: 2,
      actor: 'anonymous',
      reason: null,
      action: 'split.put',
      target: 'routes/api/split',
      before: { v1: 100, v2: 0 },
      after: { v2: 100 },
    })
    expect(Date.parse(events[0].at)).not.toBeNaN()
  })

  it('increments the revision by exactly one per accepted write', async () => {
    const { admin } = await twoVersionApp()
    const writes = [
      () => admin.put('/api/routes/api/split', { v1: 50, v2: 50 }),
      () => admin.put('/api/flags/beta', { enabled: true }),
      () => admin.put('/api/upstreams/v3', { targets: [] }),
      () => admin.del('/api/upstreams/v3'),
      () => admin.del('/api/flags/beta'),
    ]
    for (const [i, write] of writes.entries()) {
      const res = await write()
      expect(res.body.revision).toBe(i + 2)
      expect(res.headers.get('etag')).toBe(`"${i + 2}"`)
      expect((await admin.get('/api/state')).body.revision).toBe(i + 2)
    }
  })

  it('upstreams: 201 on create, 200 on replace, ids defaulted, 409 while a route uses it', async () => {
    const { admin, v1 } = await twoVersionApp()
    const created = await admin.put('/api/upstreams/canary', { targets: [{ url: v1.url }], retries: 1 })
    expect(created.status).toBe(201)
    expect(created.body).toEqual({ revision: 2, name: 'canary', retries: 1, targets: [{ id: v1.id, url: v1.url, state: 'active' }] })
    const replaced = await admin.put('/api/upstreams/canary', { targets: [{ url: v1.url, id: 'c1', state: 'disabled' }] })
    expect(replaced.status).toBe(200)
    expect((await admin.get('/api/upstreams/canary')).body).toEqual({
      revision: 3,
      name: 'canary',
      targets: [{ id: 'c1', url: v1.url, state: 'disabled' }],
    })

    const inUse = await admin.del('/api/upstreams/v2') // named in the split, even at weight 0
    expect(inUse.status).toBe(409)
    expect(inUse.body.error.code).toBe('CONFLICT')
    expect((await admin.get('/api/state')).body.revision).toBe(3)

    const removed = await admin.del('/api/upstreams/canary')
    expect(removed.status).toBe(200)
    expect(removed.body).toEqual({ revision: 4, name: 'canary' })
    expect((await admin.get('/api/upstreams/canary')).status).toBe(404)
  })

  it('routes: 201 on create, 200 on replace, rule headers lowercased, delete', async () => {
    const { admin, proxy } = await twoVersionApp()
    const route = { match: { pathPrefix: '/beta' }, rules: [{ match: { header: { 'X-Api-Version': '2' } }, upstream: 'v2' }], split: { v1: 1 } }
    const created = await admin.put('/api/routes/beta', route)
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ revision: 2, name: 'beta', rules: [{ match: { header: { 'x-api-version': '2' } } }] })
    expect((await proxy('/beta/x', { headers: { 'x-api-version': '2' } })).backend).toBe('v2')
    const replaced = await admin.put('/api/routes/beta', { ...route, name: 'beta', split: { v2: 1 } })
    expect(replaced.status).toBe(200)
    expect((await proxy('/beta/x')).backend).toBe('v2')
    expect((await admin.get('/api/routes/beta')).body).toMatchObject({ revision: 3, split: { v2: 1 } })
    expect((await admin.del('/api/routes/beta')).body).toEqual({ revision: 4, name: 'beta' })
    expect((await admin.get('/api/state')).body.routes.map((r: { name: string }) => r.name)).toEqual(['api'])
  })

  it('flags: create, replace, list, read, delete', async () => {
    const { admin } = await twoVersionApp()
    const flag = { enabled: true, percent: 25, by: { header: 'x-user-id' } }
    const created = await admin.put('/api/flags/new-checkout', flag)
    expect(created.status).toBe(201)
    expect(created.body).toEqual({ revision: 2, name: 'new-checkout', ...flag })
    expect((await admin.put('/api/flags/new-checkout', { enabled: false })).status).toBe(200)
    expect((await admin.get('/api/flags')).body).toEqual({ revision: 3, flags: [{ name: 'new-checkout', enabled: false }] })
    expect((await admin.get('/api/flags/new-checkout')).body).toEqual({ revision: 3, name: 'new-checkout', enabled: false })
    expect((await admin.del('/api/flags/new-checkout')).status).toBe(200)
    expect((await admin.get('/api/flags/new-checkout')).body.error.code).toBe('NOT_FOUND')
  })

  it.each([
    ['a bare revision', (r: number) => `${r}`, 200],
    ['a quoted revision', (r: number) => `"${r}"`, 200],
    ['a stale revision', (r: number) => `${r - 1}`, 412],
    ['a weak ETag', (r: number) => `W/"${r}"`, 400],
    ['a list', (r: number) => `"${r}", "${r + 1}"`, 400],
    ['a wildcard', () => '*', 400],
    ['garbage', () => 'five', 400],
  ])('If-Match with %s', async (_name, value, status) => {
    const { admin } = await twoVersionApp()
    const before = (await admin.get('/api/state')).body
    const res = await admin.put('/api/routes/api/split', { v2: 1 }, { headers: { 'if-match': value(before.revision) } })
    expect(res.status).toBe(status)
    const after = (await admin.get('/api/state')).body
    if (status === 200) expect(after.revision).toBe(before.revision + 1)
    else {
      expect(res.body.error.code).toBe(status === 412 ? 'REVISION_MISMATCH' : 'VALIDATION_FAILED')
      expect(after).toEqual(before)
    }
  })

  it('events: actor from the named token, reason from X-Switchyard-Reason, newest first, limit', async () => {
    const { admin: ci, app } = await twoVersionApp({ token: 'ci-secret' }, { admin: { tokens: { ci: 'ci-secret', ops: 'ops-secret' } } })
    const ops = adminClient(app.adminUrl, 'ops-secret')
    await ci.put('/api/routes/api/split', { v1: 90, v2: 10 }, { headers: { 'x-switchyard-reason': 'canary 10% (JIRA-42)' } })
    await ops.put('/api/flags/dark', { enabled: false })
    const events = (await ops.get('/api/events')).body.events
    expect(events.map((e: { revision: number; actor: string; action: string; reason: string | null }) => [e.revision, e.actor, e.action, e.reason])).toEqual([
      [3, 'ops', 'flag.put', null],
      [2, 'ci', 'split.put', 'canary 10% (JIRA-42)'],
    ])
    expect((await ops.get('/api/events?limit=1')).body.events).toHaveLength(1)
  })

  it('lists the live instances of the fleet', async () => {
    const { admin, app } = await twoVersionApp()
    const { instances } = (await admin.get('/api/instances')).body
    expect(instances).toEqual([
      {
        id: app.control.instanceId,
        host: expect.any(String),
        pid: process.pid,
        appliedRevision: 1,
        digest: app.control.follower.digest,
        behindMs: 0,
        laggard: false,
        lastSeen: expect.any(String),
        inflight: {}, // only targets with requests in flight are listed
      },
    ])
  })

  it('?waitApplied answers 200 once this (single) instance applied the write', async () => {
    const { admin } = await twoVersionApp()
    const res = await admin.put('/api/routes/api/split?waitApplied=2000', { v2: 1 })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: 2, route: 'api', split: { v2: 1 } })
  })

  it('GET /docs/json is an OpenAPI document listing the paths', async () => {
    const { admin } = await twoVersionApp()
    const res = await admin.get('/docs/json')
    expect(res.status).toBe(200)
    expect(res.body.openapi).toMatch(/^3\./)
    expect(Object.keys(res.body.paths)).toEqual(
      expect.arrayContaining([
        '/api/state',
        '/api/upstreams/{name}',
        '/api/upstreams/{name}/targets',
        '/api/upstreams/{name}/targets/{id}',
        '/api/upstreams/{name}/targets/{id}/drain',
        '/api/routes/{name}',
        '/api/routes/{name}/split',
        '/api/flags',
        '/api/flags/{name}',
        '/api/events',
        '/api/instances',
      ]),
    )
    const put = res.body.paths['/api/routes/{name}/split'].put
    expect(put.requestBody.content['application/json'].schema.type).toBe('object')
    expect(Object.keys(put.responses)).toEqual(expect.arrayContaining(['200', '202', '4XX']))
  })
})
