/**
 * Answer comparison: a shadow that answers one path differently shows a mismatch rate and that
 * path (with the first differing JSON path), through the admin API and /metrics; ignored fields
 * never count; samples carry no body and no header value. The diff itself is tested as a table.
 */
import { describe, expect, it } from 'vitest'
import { compareAnswers, firstDifference } from '../src/dataplane/compare.js'
import { startApp } from './helpers/admin.js'
import { hit, many } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { shadowBackend } from './helpers/shadow-backend.js'

describe('firstDifference', () => {
  const ignore = new Set(['id', 'at'])
  it.each([
    [{ a: 1 }, { a: 1 }, null],
    [{ a: 1, id: 5 }, { a: 1, id: 6 }, null],
    [{ user: { name: 'ann', id: 1 } }, { user: { name: 'bob', id: 2 } }, '$.user.name'],
    [{ a: [1, 2, 3] }, { a: [1, 2] }, '$.a[2]'],
    [{ a: [1, { at: 1, b: 2 }] }, { a: [1, { at: 2, b: 3 }] }, '$.a[1].b'],
    [{ a: 1 }, { a: 1, b: 2 }, '$.b'],
    [{ 'a b': 1 }, { 'a b': 2 }, '$["a b"]'],
    [{ a: 1 }, [1], '$'],
    [{ a: null }, { a: 0 }, '$.a'],
    [{ a: '1' }, { a: 1 }, '$.a'],
    [[{ id: 1 }], [{ id: 2 }], null],
  ])('%j vs %j → %s', (a, b, path) => {
    expect(firstDifference(a, b, ignore)).toBe(path)
  })

  it('does not follow a document nested deeper than it compares (no stack overflow)', () => {
    const deep = (n: number, leaf: number) => JSON.parse('['.repeat(n) + String(leaf) + ']'.repeat(n)) as unknown
    expect(firstDifference(deep(30_000, 1), deep(30_000, 2), ignore)).toBeNull()
    expect(firstDifference(deep(3, 1), deep(3, 2), ignore)).toBe('$[0][0][0]')
  })

  it('compares status classes first, and JSON only when both sides are JSON', () => {
    const json = (v: unknown) => Buffer.from(JSON.stringify(v))
    expect(compareAnswers({ status: 200, json: json({ a: 1 }) }, { status: 201, json: json({ a: 1 }) }, ignore)).toEqual({ kind: 'same' })
    expect(compareAnswers({ status: 200, json: null }, { status: 500, json: null }, ignore)).toEqual({ kind: 'status' })
    expect(compareAnswers({ status: 200, json: json({ a: 1 }) }, { status: 200, json: null }, ignore)).toEqual({ kind: 'same' })
    expect(compareAnswers({ status: 200, json: json({ a: 1 }) }, { status: 200, json: Buffer.from('{nope') }, ignore)).toEqual({ kind: 'body', jsonPath: '$' })
  })
})

describe('answer comparison', () => {
  it('a v2 that answers a different JSON field for one path shows a mismatch rate and that path', { timeout: 60_000 }, async () => {
    let n = 0
    const doc = (path: string, name: string) => ({ user: { name, id: ++n, at: Date.now() }, path })
    const v1 = await shadowBackend('v1', (path) => doc(path, 'ann'))
    const v2 = await shadowBackend(
      'v2',
      (path) => doc(path, path === '/users/7' ? 'bob' : 'ann'),
      (path) => (path === '/users/9' ? 503 : 200),
    )
    const t = await startApp(
      {
        upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
        routes: [{ name: 'api', split: { v1: 100 }, mirror: { upstream: 'v2', percent: 100, ignore: ['id', 'at'] } }],
      },
      { telemetryMs: 100 },
    )
    const answers = await many(200, 8, (i) => hit(`${t.app.proxyUrl}/users/${i % 10}?token=secret${i}`, { headers: { authorization: 'Bearer client-secret' } }))
    expect(answers.every((a) => a.status === 200 && a.json<{ user: { name: string } }>().user.name === 'ann')).toBe(true)
    const res = await eventually(
      async () => {
        const r = await t.admin.get('/api/routes/api/mirror?window=60s')
        expect(r.status).toBe(200)
        expect(r.body.figures.compared).toBe(200)
        return r
      },
      { timeoutMs: 10_000, intervalMs: 100 },
    )
    const f = res.body.figures
    expect(res.body.mirror).toEqual({ upstream: 'v2', percent: 100, ignore: ['id', 'at'] })
    expect(f.mismatches).toEqual({ status: 20, body: 20 })
    expect(f.mismatchRate).toBeCloseTo(0.2)
    expect(f.requests).toBe(200)
    expect(f.errors).toBe(20)
    expect(f.errorRate).toBeCloseTo(0.1)
    const bodies = f.samples.filter((s: { kind: string }) => s.kind === 'body')
    expect(bodies.length).toBeGreaterThan(0)
    for (const s of bodies) expect(s).toMatchObject({ method: 'GET', path: '/users/7', jsonPath: '$.user.name', status: 200, shadowStatus: 200 })
    for (const s of f.samples.filter((x: { kind: string }) => x.kind === 'status')) expect(s).toMatchObject({ path: '/users/9', status: 200, shadowStatus: 503 })
    // Samples carry neither queries nor header values.
    expect(JSON.stringify(f.samples)).not.toMatch(/secret|ann|bob/)

    const metrics = await (await fetch(`${t.app.adminUrl}/metrics`)).text()
    expect(metrics).toContain('switchyard_mirror_compared_total{route="api",upstream="v2"} 200')
    expect(metrics).toContain('switchyard_mirror_mismatches_total{route="api",upstream="v2",kind="body"} 20')
    expect(metrics).toContain('switchyard_mirror_mismatches_total{route="api",upstream="v2",kind="status"} 20')
  })

  it('answers 404 for a route without a mirror unless an upstream is named, and 400 for a bad window', async () => {
    const v1 = await shadowBackend('v1')
    const t = await startApp({ upstreams: { v1: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] })
    expect((await t.admin.get('/api/routes/api/mirror')).status).toBe(404)
    expect((await t.admin.get('/api/routes/nope/mirror')).status).toBe(404)
    const past = await t.admin.get('/api/routes/api/mirror?upstream=v1')
    expect(past.status).toBe(200)
    expect(past.body).toMatchObject({ mirror: null, figures: { compared: 0, mismatchRate: null, samples: [] } })
    expect((await t.admin.get('/api/routes/api/mirror?window=1h')).status).toBe(400)
  })
})
