/**
 * Traffic mirroring on real sockets: the share that reaches the shadow, the shadow marker,
 * the client untouched by a slow or dead shadow, the body limit, the methods.
 */
import { describe, expect, it } from 'vitest'
import type { MirrorSpec } from '../src/config/schema.js'
import { startApp } from './helpers/admin.js'
import { hit, many } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { freePort } from './helpers/redis.js'
import { shadowBackend } from './helpers/shadow-backend.js'

async function setup(mirror: Omit<MirrorSpec, 'upstream'>, shadowUrl?: string) {
  const v1 = await shadowBackend('v1')
  const v2 = await shadowBackend('v2')
  const t = await startApp({
    upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: shadowUrl ?? v2.url }] } },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 }, mirror: { upstream: 'v2', ...mirror } }],
  })
  const stats = () => t.app.dataplane.resources.mirrors.get('api\u0000v2')!
  return { v1, v2, t, stats }
}

describe('traffic mirroring', () => {
  it('copies about 20 % of 2,000 requests to the shadow, each marked as shadow traffic; the client sees only v1', { timeout: 60_000 }, async () => {
    const { v1, v2, t, stats } = await setup({ percent: 20 })
    const answers = await many(2000, 32, (i) => hit(`${t.app.proxyUrl}/item/${i}`))
    expect(answers.filter((a) => a.status !== 200)).toEqual([])
    expect(answers.every((a) => a.headers['x-backend'] === 'v1')).toBe(true)
    expect(v1.received.length).toBe(2000)
    await eventually(() => expect(stats().inflight).toBe(0))
    const copies = v2.received.length
    expect(copies).toBeGreaterThanOrEqual(340)
    expect(copies).toBeLessThanOrEqual(460)
    expect(v2.received.every((r) => r.shadow === '1')).toBe(true)
    // The client's requests never carry the marker, and a client cannot forge it.
    expect(v1.received.every((r) => r.shadow === undefined)).toBe(true)
    expect(stats().answers.byClass[2]).toBe(copies)
    expect(stats().skippedBusy + stats().skippedBody).toBe(0)
    const metrics = await (await fetch(`${t.app.adminUrl}/metrics`)).text()
    expect(metrics).toContain(`switchyard_mirror_requests_total{route="api",upstream="v2",code_class="2xx"} ${copies}`)
    expect(metrics).toContain(`switchyard_mirror_duration_seconds_count{route="api",upstream="v2"} ${copies}`)
    // The shadow's answers are not v2's answers to clients.
    expect(metrics).not.toContain('switchyard_requests_total{route="api",upstream="v2"')
  })

  it('a shadow that does not answer delays no client: every answer arrives while the copies are still held', { timeout: 30_000 }, async () => {
    const { v2, t, stats } = await setup({ percent: 20 })
    v2.hold()
    const answers = await many(300, 16, (i) => hit(`${t.app.proxyUrl}/slow/${i}`))
    expect(answers.filter((a) => a.status !== 200 || a.headers['x-backend'] !== 'v1')).toEqual([])
    // All 300 answered while the shadow sat on every copy it got.
    expect(v2.answered).toBe(0)
    expect(stats().inflight).toBeGreaterThan(0)
    // Copies still on their way arrive and are held too: none has been answered.
    await eventually(() => expect(v2.held).toBe(stats().inflight))
    expect(v2.answered).toBe(0)
    v2.release()
    await eventually(() => expect(stats().inflight).toBe(0))
    expect(stats().answers.byClass[2]).toBe(v2.answered)
  })

  it('a shadow that is down changes nothing for the client: its failures are only counted', { timeout: 30_000 }, async () => {
    const dead = `http://127.0.0.1:${await freePort()}`
    const { t, stats } = await setup({ percent: 20 }, dead)
    const answers = await many(500, 16, (i) => hit(`${t.app.proxyUrl}/down/${i}`))
    expect(answers.filter((a) => a.status !== 200 || a.headers['x-backend'] !== 'v1')).toEqual([])
    await eventually(() => expect(stats().inflight).toBe(0))
    const s = stats()
    expect(s.answers.byClass[5]).toBeGreaterThan(0)
    expect(s.answers.byClass[2]).toBe(0)
    expect(s.answers.proxyErrors.UPSTREAM_ERROR + s.answers.proxyErrors.NO_HEALTHY_TARGET).toBe(s.answers.byClass[5])
    expect(s.compared).toBe(0)
  })

  it('copies POST only when the route lists it, skips and counts bodies above the limit (Content-Length or chunked)', { timeout: 30_000 }, async () => {
    const { v1, v2, t, stats } = await setup({ percent: 100, methods: ['GET', 'POST'], maxBodyBytes: 1024 })
    const small = Buffer.alloc(1000, 120)
    const big = Buffer.alloc(5000, 121)
    expect((await hit(`${t.app.proxyUrl}/small`, { method: 'POST', body: small })).status).toBe(200)
    expect((await hit(`${t.app.proxyUrl}/big`, { method: 'POST', body: big })).status).toBe(200)
    // A chunked body (no Content-Length) that grows past the limit.
    const chunked = await fetch(`${t.app.proxyUrl}/chunked`, {
      method: 'POST',
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 5; i++) c.enqueue(new Uint8Array(1000))
          c.close()
        },
      }),
      duplex: 'half',
    } as RequestInit)
    expect(chunked.status).toBe(200)
    await chunked.text()
    await eventually(() => expect(stats().inflight).toBe(0))
    // The client's bodies all reached v1 whole.
    expect(v1.received.map((r) => [r.url, r.bodyBytes])).toEqual([['/small', 1000], ['/big', 5000], ['/chunked', 5000]])
    expect(v2.received.map((r) => [r.method, r.url, r.bodyBytes, r.shadow])).toEqual([['POST', '/small', 1000, '1']])
    expect(stats().skippedBody).toBe(2)
    const metrics = await (await fetch(`${t.app.adminUrl}/metrics`)).text()
    expect(metrics).toContain('switchyard_mirror_skipped_total{route="api",upstream="v2",reason="body"} 2')
  })

  it('by default copies only GET, HEAD and OPTIONS', { timeout: 30_000 }, async () => {
    const { v2, t, stats } = await setup({ percent: 100 })
    for (const method of ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH']) {
      expect((await hit(`${t.app.proxyUrl}/m`, { method, ...(method === 'POST' || method === 'PUT' ? { body: 'x' } : {}) })).status).toBe(200)
    }
    await eventually(() => expect(v2.received.length).toBe(3))
    await eventually(() => expect(stats().inflight).toBe(0))
    expect(v2.received.map((r) => r.method).sort()).toEqual(['GET', 'HEAD', 'OPTIONS'])
  })

  it('skips and counts copies past maxConcurrent, never queueing them', { timeout: 30_000 }, async () => {
    const { v2, t, stats } = await setup({ percent: 100, maxConcurrent: 2 })
    v2.hold()
    const answers = await many(20, 4, (i) => hit(`${t.app.proxyUrl}/busy/${i}`))
    expect(answers.every((a) => a.status === 200)).toBe(true)
    await eventually(() => expect(v2.held).toBe(2))
    expect(stats().skippedBusy).toBe(18)
    v2.release()
    await eventually(() => expect(stats().inflight).toBe(0))
  })

  it('refuses a mirror to an unknown upstream, and the deletion of an upstream a mirror names', async () => {
    const v1 = await shadowBackend('v1')
    const t = await startApp({ upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v1.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] })
    const bad = await t.admin.put('/api/routes/api', { split: { v1: 1 }, mirror: { upstream: 'v9', percent: 5 } })
    expect(bad.status).toBe(400)
    expect(JSON.stringify(bad.body.error.details)).toContain('mirror.upstream')
    const out = await t.admin.put('/api/routes/api', { split: { v1: 1 }, mirror: { upstream: 'v1', percent: 101 } })
    expect(out.status).toBe(400)
    expect((await t.admin.put('/api/routes/api', { split: { v1: 1 }, mirror: { upstream: 'v2', percent: 5 } })).status).toBe(200)
    expect((await t.admin.del('/api/upstreams/v2')).status).toBe(409)
  })
})
