/**
 * `PUT /api/state` on a real instance (memory store): a declared state applied as one write,
 * checked like a config file, compared with `?dryRun=true`, refused while a rollout drives what
 * it would change. The ctl side (`ctl diff`, `ctl apply`) and the Redis store are in gitops.test.ts.
 */
import { describe, expect, it } from 'vitest'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { diffResources } from '../src/state/diff.js'
import type { Backend } from './helpers/backend.js'

interface Setup {
  t: TestApp
  v1: Backend
  v2: Backend
  /** the state the instance started with, as a pipeline's file would declare it */
  declared: () => { upstreams: Record<string, any>; routes: any[]; flags?: Record<string, any> }
}

async function setup(): Promise<Setup> {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2, { flags: { beta: { enabled: true } } }))
  const declared = () => ({
    upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100, v2: 0 } }],
    flags: { beta: { enabled: true } },
  })
  return { t, v1, v2, declared }
}

const revision = async (t: TestApp): Promise<number> => (await t.admin.get('/api/state')).body.revision

describe('PUT /api/state', () => {
  it('applies an added route and a changed split as one revision and one audit event, with the changes', async () => {
    const { t, declared } = await setup()
    const body = declared()
    body.routes[0].split = { v1: 50, v2: 50 }
    body.routes.push({ name: 'beta', match: { pathPrefix: '/beta/' }, split: { v2: 1 } })
    const res = await t.admin.put('/api/state', body, { headers: { 'x-switchyard-reason': 'release 42', 'if-match': '1' } })
    expect(res.status).toBe(200)
    expect(res.headers.get('etag')).toBe('"2"')
    expect(res.body).toEqual({
      revision: 2,
      changed: true,
      changes: [
        { kind: 'route', name: 'api', op: 'change', fields: [{ path: 'split.v1', before: 100, after: 50 }, { path: 'split.v2', before: 0, after: 50 }] },
        { kind: 'route', name: 'beta', op: 'add', after: { name: 'beta', match: { pathPrefix: '/beta/' }, split: { v2: 1 } } },
      ],
      conflicts: [],
      aborted: [],
    })
    const state = (await t.admin.get('/api/state')).body
    expect(state.revision).toBe(2)
    expect(state.routes.map((r: { name: string; split: unknown }) => [r.name, r.split])).toEqual([['api', { v1: 50, v2: 50 }], ['beta', { v2: 1 }]])
    expect((await t.proxy('/beta/x')).backend).toBe('v2')
    const events = (await t.admin.get('/api/events?limit=10')).body.events
    expect(events.filter((e: { revision: number }) => e.revision === 2)).toHaveLength(1)
    expect(events[0]).toMatchObject({
      revision: 2,
      action: 'state.apply',
      target: 'state',
      reason: 'release 42',
      actor: 'anonymous',
      before: { upstreams: {}, routes: { api: { split: { v1: 100, v2: 0 } }, beta: null }, flags: {} },
      after: { routes: { api: { split: { v1: 50, v2: 50 } }, beta: { split: { v2: 1 } } } },
    })
  })

  it('the same state again writes nothing: changed false, same revision, no audit event; dryRun compares without writing', async () => {
    const { t, declared } = await setup()
    const same = await t.admin.put('/api/state', declared())
    expect(same.status).toBe(200)
    expect(same.body).toEqual({ revision: 1, changed: false, changes: [], conflicts: [], aborted: [] })
    expect((await t.admin.get('/api/events?limit=10')).body.events).toHaveLength(0)

    const body = declared()
    delete body.flags!['beta']
    body.upstreams['v3'] = { targets: [{ url: 'http://127.0.0.1:9' }] }
    const dry = await t.admin.put('/api/state?dryRun=true', body)
    expect(dry.status).toBe(200)
    expect(dry.body).toEqual({
      revision: 1,
      changed: true,
      dryRun: true,
      changes: [
        { kind: 'upstream', name: 'v3', op: 'add', after: { targets: [{ id: '127.0.0.1:9', url: 'http://127.0.0.1:9', state: 'active' }] } },
        { kind: 'flag', name: 'beta', op: 'remove', before: { enabled: true } },
      ],
      conflicts: [],
      aborted: [],
    })
    expect(await revision(t)).toBe(1)
    const both = await t.admin.put('/api/state?dryRun=true&waitApplied=100', body)
    expect([both.status, both.body.error.details]).toEqual([400, [{ path: 'querystring.waitApplied', message: 'a dry run writes nothing to wait for' }]])
    // The query is checked strictly, as on every write.
    for (const q of ['dryRun=yes', 'force=1', 'waitApplied=abc']) expect((await t.admin.put(`/api/state?${q}`, body)).status, q).toBe(400)
  })

  it('reports every problem with the path a config file has: shape and meaning in one answer; nothing changes', async () => {
    const { t, declared } = await setup()
    const body: any = declared()
    body.routes[0].split = { v1: -1, v3: 10 }
    body.routes.push({ name: 'api', split: { v2: 1 } })
    body.upstreams.v2.targets[0].url = 'ftp://x'
    body.rollouts = {}
    body.listen = { port: 1 }
    const res = await t.admin.put('/api/state', body)
    expect(res.status).toBe(400)
    expect(res.body.error.code).toBe('VALIDATION_FAILED')
    const paths = res.body.error.details.map((d: { path: string }) => d.path)
    expect(paths).toEqual(
      expect.arrayContaining(['rollouts', 'listen', 'routes[0].split.v1', 'routes[0].split.v3', 'routes[1].name', 'routes[1].match', 'upstreams.v2.targets[0].url']),
    )
    expect(res.body.error.details.find((d: { path: string }) => d.path === 'routes[0].split.v3').message).toBe('unknown upstream "v3"')
    expect(res.body.error.details.find((d: { path: string }) => d.path === 'rollouts').message).toMatch(/kept/)
    for (const bad of [undefined, [], { routes: [] }]) expect((await t.admin.put('/api/state', bad)).status).toBe(400)
    expect(await revision(t)).toBe(1)
  })

  it('a stale If-Match is 412 and changes nothing', async () => {
    const { t, declared } = await setup()
    expect((await t.admin.put('/api/routes/api/split', { v1: 90, v2: 10 })).status).toBe(200)
    const res = await t.admin.put('/api/state', declared(), { headers: { 'if-match': '1' } })
    expect(res.status).toBe(412)
    expect(res.body.error.code).toBe('REVISION_MISMATCH')
    expect((await t.admin.put('/api/state?dryRun=true', declared(), { headers: { 'if-match': '"1"' } })).status).toBe(412)
    expect((await t.admin.get('/api/state')).body.routes[0].split).toEqual({ v1: 90, v2: 10 })
  })

  it('keeps what the file does not declare: an operator-set target state, the flags when flags is left out; a stated state wins', async () => {
    const { t, v1, declared } = await setup()
    const id = encodeURIComponent(v1.id)
    expect((await t.admin.patch(`/api/upstreams/v1/targets/${id}`, { state: 'draining' })).status).toBe(200)
    const { flags: _flags, ...noFlags } = declared()
    const kept = await t.admin.put('/api/state', noFlags)
    expect(kept.body).toMatchObject({ revision: 2, changed: false })
    const stated = declared()
    stated.upstreams['v1'].targets[0].state = 'active'
    const back = await t.admin.put('/api/state', stated)
    expect(back.body.changes).toEqual([{ kind: 'upstream', name: 'v1', op: 'change', fields: [{ path: `targets["${v1.id}"].state`, before: 'draining', after: 'active' }] }])
    expect((await t.admin.get(`/api/upstreams/v1/targets/${id}`)).body.state).toBe('active')
  })

  it('refuses with 409 while a rollout drives a route or upstream it would change; applies what leaves them alone; force aborts the rollout', async () => {
    const { t, declared } = await setup()
    // A step without pauseMs holds the rollout at 10 % until resumed: it stays in force.
    const started = await t.admin.post('/api/rollouts', { id: 'r1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 10 }, { weight: 100 }] })
    expect(started.status).toBe(201)
    const atStart = await revision(t)

    const body = declared() // says api is 100/0: a change to the route the rollout drives
    const refused = await t.admin.put('/api/state', body)
    expect(refused.status).toBe(409)
    expect(refused.body.error.code).toBe('CONFLICT')
    expect(refused.body.error.details).toEqual([{ rollout: 'r1', phase: 'paused', route: 'api', reason: 'changes route api' }])
    const upstream = declared()
    upstream.routes[0].split = { v1: 90, v2: 10 }
    upstream.upstreams['v2'].targets.push({ url: 'http://127.0.0.1:9' })
    expect((await t.admin.put('/api/state', upstream)).body.error.details).toEqual([{ rollout: 'r1', phase: 'paused', route: 'api', reason: 'changes upstream v2' }])
    const dry = await t.admin.put('/api/state?dryRun=true', body)
    expect(dry.status).toBe(200)
    expect(dry.body.conflicts).toEqual([{ rollout: 'r1', phase: 'paused', route: 'api', reason: 'changes route api' }])
    expect(await revision(t)).toBe(atStart)

    // The route as the rollout set it, plus a new flag: nothing it drives changes.
    const aside = declared()
    aside.routes[0].split = { v1: 90, v2: 10 }
    aside.flags!['other'] = { enabled: false }
    const ok = await t.admin.put('/api/state', aside)
    expect(ok.status).toBe(200)
    expect(ok.body.changes).toEqual([{ kind: 'flag', name: 'other', op: 'add', after: { enabled: false } }])
    expect((await t.admin.get('/api/rollouts/r1')).body.phase).toBe('paused')

    const forced = await t.admin.put('/api/state?force=true', { ...body, flags: aside.flags })
    expect(forced.status).toBe(200)
    expect(forced.body).toMatchObject({ revision: atStart + 2, aborted: ['r1'] })
    const r1 = (await t.admin.get('/api/rollouts/r1')).body
    expect(r1.phase).toBe('aborted')
    expect((await t.admin.get('/api/state')).body.routes[0].split).toEqual({ v1: 100, v2: 0 })
  })
})

describe('diffResources (pure)', () => {
  const up = (targets: { id: string; url: string; state: string }[], extra = {}) => ({ upstreams: { v1: { targets, ...extra } }, routes: [], flags: {} }) as any
  const a = { id: 'a:1', url: 'http://a:1', state: 'active' }
  const b = { id: 'b:1', url: 'http://b:1', state: 'active' }
  it.each([
    ['key order does not matter', up([a], { retries: 1, balance: 'p2c' }), up([a], { balance: 'p2c', retries: 1 }), []],
    ['targets are matched by id: one added first is one change', up([a]), up([b, a]), [{ path: 'targets["b:1"]', after: b }]],
    ['a target state', up([a]), up([{ ...a, state: 'draining' }]), [{ path: 'targets["a:1"].state', before: 'active', after: 'draining' }]],
    ['targets that change places', up([a, b]), up([b, a]), [{ path: 'targets.order', before: ['a:1', 'b:1'], after: ['b:1', 'a:1'] }]],
    ['a field set and one left out', up([a], { retries: 1 }), up([a], { headersTimeoutMs: 5 }), [{ path: 'retries', before: 1 }, { path: 'headersTimeoutMs', after: 5 }]],
  ])('%s', (_name, before, after, fields) => {
    const changes = diffResources(before, after)
    expect(changes).toEqual(fields.length === 0 ? [] : [{ kind: 'upstream', name: 'v1', op: 'change', fields }])
  })

  it('routes: rules by place, a list of another length whole, the order of routes kept on both sides', () => {
    const r = (name: string, extra = {}) => ({ name, split: { v1: 1 }, ...extra })
    const before = { upstreams: {}, flags: {}, routes: [r('x', { rules: [{ match: { header: { h: '1' } }, upstream: 'v1' }] }), r('y', { match: { methods: ['GET'] } }), r('z')] } as any
    const after = { upstreams: {}, flags: {}, routes: [r('y', { match: { methods: ['GET', 'POST'] } }), r('w'), r('x', { rules: [{ match: { header: { h: '2' } }, upstream: 'v1' }] })] } as any
    expect(diffResources(before, after)).toEqual([
      { kind: 'route', name: 'x', op: 'change', fields: [{ path: 'rules[0].match.header.h', before: '1', after: '2' }] },
      { kind: 'route', name: 'y', op: 'change', fields: [{ path: 'match.methods', before: ['GET'], after: ['GET', 'POST'] }] },
      { kind: 'route', name: 'z', op: 'remove', before: r('z') },
      { kind: 'route', name: 'w', op: 'add', after: r('w') },
      { kind: 'routes', op: 'order', before: ['x', 'y'], after: ['y', 'x'] },
    ])
  })
})
