/** Targets through the admin API: add, read with in-flight, patch, drain (with and without waiting), remove. */
import { describe, expect, it } from 'vitest'
import { backend, startApp, twoVersions } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'

async function setup() {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const t = await startApp(twoVersions(v1, v2))
  const target = (id: string) => `/api/upstreams/v1/targets/${id}`
  return { ...t, v1, v2, target }
}

describe('admin API: targets', () => {
  it('POST adds a target (201, default id host:port); a second one with that id is 409', async () => {
    const { admin, proxy, v1 } = await setup()
    const extra = await backend('v1b')
    const res = await admin.post('/api/upstreams/v1/targets', { url: extra.url })
    expect(res.status).toBe(201)
    expect(res.body).toEqual({ revision: 2, upstream: 'v1', id: extra.id, url: extra.url, state: 'active' })
    expect(res.headers.get('etag')).toBe('"2"')
    const seen = new Set<string | null>()
    for (let i = 0; i < 20; i++) seen.add((await proxy(`/r${i}`)).backend)
    expect(seen).toContain('v1b')

    const dup = await admin.post('/api/upstreams/v1/targets', { url: v1.url })
    expect(dup.status).toBe(409)
    expect(dup.body.error.code).toBe('CONFLICT')
    const named = await admin.post('/api/upstreams/v1/targets', { url: v1.url, id: 'v1-again' })
    expect(named.status).toBe(201)
    expect(named.body.id).toBe('v1-again')
  })

  it('GET reads a target by raw or percent-encoded id, with health and in-flight', async () => {
    const { admin, v1, target } = await setup()
    const expected = { revision: 1, upstream: 'v1', id: v1.id, url: v1.url, state: 'active', healthy: true, inflight: 0 }
    expect((await admin.get(target(v1.id))).body).toEqual(expected)
    expect((await admin.get(target(encodeURIComponent(v1.id)))).body).toEqual(expected)
    expect((await admin.get(target('127.0.0.1:1'))).body.error.code).toBe('NOT_FOUND')
  })

  it('GET shows a request in flight, summed over the fleet', async () => {
    const { admin, proxy, v1, target } = await setup()
    const slow = proxy('/delay?ms=1000')
    await eventually(async () => expect((await admin.get(target(v1.id))).body.inflight).toBe(1))
    expect((await slow).status).toBe(200)
    await eventually(async () => expect((await admin.get(target(v1.id))).body.inflight).toBe(0))
  })

  it('PATCH sets the state; a disabled target gets no requests', async () => {
    const { admin, proxy, v1, target } = await setup()
    await admin.post('/api/upstreams/v1/targets', { url: (await backend('v1b')).url })
    const res = await admin.patch(target(v1.id), { state: 'disabled' })
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: 3, upstream: 'v1', id: v1.id, url: v1.url, state: 'disabled' })
    for (let i = 0; i < 10; i++) expect((await proxy(`/p${i}`)).backend).toBe('v1b')
    const event = (await admin.get('/api/events?limit=1')).body.events[0]
    expect(event).toMatchObject({ action: 'target.patch', target: `upstreams/v1/targets/${v1.id}`, after: { state: 'disabled' } })
  })

  it('drain?waitMs answers 200 drained only after the in-flight request finished', async () => {
    const { admin, proxy, v1, target } = await setup()
    const startedAt = performance.now()
    const slow = proxy('/delay?ms=1200')
    await eventually(async () => expect((await admin.get(target(v1.id))).body.inflight).toBe(1))
    const res = await admin.post(`${target(v1.id)}/drain?waitMs=10000`)
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ revision: 2, id: v1.id, state: 'draining', drained: true, inflight: 0 })
    // A lower bound only, so a loaded machine cannot make it flaky: the backend held the request 1200 ms.
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(1150)
    expect((await slow).status).toBe(200) // in-flight requests finish normally
    // no new requests reach it: v1's only target is draining
    expect((await proxy('/after')).status).toBe(503)
  })

  it('drain?waitMs answers 202 drained:false with the in-flight count at the deadline', async () => {
    const { admin, proxy, v1, target } = await setup()
    const abort = new AbortController()
    const slow = proxy('/delay?ms=10000', { signal: abort.signal }).catch(() => null)
    await eventually(async () => expect((await admin.get(target(v1.id))).body.inflight).toBe(1))
    const res = await admin.post(`${target(v1.id)}/drain?waitMs=50`)
    expect(res.status).toBe(202)
    expect(res.headers.get('etag')).toBe('"2"')
    expect(res.body).toMatchObject({ revision: 2, state: 'draining', drained: false, inflight: 1 })
    abort.abort()
    await slow
  })

  it('drain without waitMs answers at once; an idle target drains at once', async () => {
    const { admin, v1, target } = await setup()
    const res = await admin.post(`${target(v1.id)}/drain`)
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ revision: 2, upstream: 'v1', id: v1.id, url: v1.url, state: 'draining' })
    const again = await admin.post(`${target(v1.id)}/drain?waitMs=1000`)
    expect(again.status).toBe(200)
    expect(again.body).toMatchObject({ drained: true, inflight: 0 })
  })

  it('DELETE?waitMs drains, waits for the in-flight request, then removes (two audited writes)', async () => {
    const { admin, proxy, v1, target } = await setup()
    const startedAt = performance.now()
    const slow = proxy('/delay?ms=1000')
    await eventually(async () => expect((await admin.get(target(v1.id))).body.inflight).toBe(1))
    const res = await admin.del(`${target(v1.id)}?waitMs=10000`)
    expect(res.status).toBe(200)
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(950)
    expect(res.body).toMatchObject({ revision: 3, id: v1.id, drained: true, inflight: 0 })
    expect((await slow).status).toBe(200)
    expect((await admin.get('/api/state')).body.upstreams.v1.targets).toEqual([])
    const events = (await admin.get('/api/events')).body.events
    expect(events.map((e: { action: string }) => e.action)).toEqual(['target.remove', 'target.drain'])
    expect(events[0]).toMatchObject({ after: null, before: { id: v1.id } })
  })

  it('DELETE without waitMs removes in one write; a second DELETE is 404', async () => {
    const { admin, v1, target } = await setup()
    const res = await admin.del(target(encodeURIComponent(v1.id)))
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ revision: 2, upstream: 'v1', id: v1.id })
    expect((await admin.del(target(v1.id))).status).toBe(404)
    expect((await admin.get('/api/state')).body.revision).toBe(2)
  })
})
