/**
 * Small data-plane defects, each pinned by a test: a WebSocket connect bounded by the upstream's
 * connectTimeoutMs (and its answer by headersTimeoutMs), an upgrade counted by the status the
 * upstream really answered, counters of deleted routes and upstreams pruned from /metrics, and
 * a table compile that touches nothing live when it fails.
 */
import { createServer as createHttpServer } from 'node:http'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import WebSocket from 'ws'
import type { State } from '../src/config/schema.js'
import { Resources } from '../src/dataplane/resources.js'
import { compileTable } from '../src/dataplane/table.js'
import { startApp } from './helpers/admin.js'
import { startBackend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { startDataplane, type Seed, type TestDataplane } from './helpers/dataplane.js'
import { blackhole } from './helpers/status-backend.js'

function wsSeed(url: string, extra: Partial<Seed['upstreams'][string]> = {}): Seed {
  return { upstreams: { v1: { targets: [{ url }], ...extra } }, routes: [{ name: 'ws', split: { v1: 1 } }] }
}

async function dataplane(seed: Seed): Promise<TestDataplane> {
  const p = await startDataplane(seed)
  onTestFinished(() => p.close())
  return p
}

/** Opens a WebSocket through the proxy: the status of a refused handshake, or 101 and the socket. */
function upgrade(p: TestDataplane): Promise<{ status: number; body: string; ws?: WebSocket }> {
  const ws = new WebSocket(p.url.replace('http', 'ws') + '/chat')
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ status: 101, body: '', ws }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    ws.once('error', reject)
  })
}

/** A raw TCP upstream doing what `onConnection` says with each connection. */
async function tcpUpstream(onConnection: (socket: import('node:net').Socket) => void): Promise<string> {
  const server: Server = createServer(onConnection)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => new Promise<void>((r) => server.close(() => r())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const stats = (p: TestDataplane) => p.dp.resources.traffic.get('ws\u0000v1')!

describe('WebSocket upstream connect', () => {
  it('a connect that does not complete within connectTimeoutMs answers 504 UPSTREAM_TIMEOUT', async () => {
    const dark = await blackhole()
    const p = await dataplane(wsSeed(dark.url, { connectTimeoutMs: 300 }))
    const res = await upgrade(p)
    expect(res.status).toBe(504)
    expect(JSON.parse(res.body).error.code).toBe('UPSTREAM_TIMEOUT')
    expect(stats(p).proxyErrors.UPSTREAM_TIMEOUT).toBe(1)
  }, 10_000)

  it('like a plain request to the same dark target', async () => {
    const dark = await blackhole()
    const p = await dataplane(wsSeed(dark.url, { connectTimeoutMs: 300 }))
    const res = await hit(`${p.url}/x`)
    expect(res.status).toBe(504)
    expect(res.json<{ error: { code: string } }>().error.code).toBe('UPSTREAM_TIMEOUT')
  }, 10_000)

  it('an upstream that accepts but never answers the handshake gets 504 after headersTimeoutMs', async () => {
    const open: import('node:net').Socket[] = []
    const url = await tcpUpstream((s) => open.push(s))
    onTestFinished(() => open.forEach((s) => s.destroy()))
    const p = await dataplane(wsSeed(url, { headersTimeoutMs: 300 }))
    const res = await upgrade(p)
    expect(res.status).toBe(504)
    expect(JSON.parse(res.body).error.code).toBe('UPSTREAM_TIMEOUT')
  }, 10_000)

  it('an upstream that closes without answering gets 502 UPSTREAM_ERROR', async () => {
    const url = await tcpUpstream((s) => s.destroy())
    const p = await dataplane(wsSeed(url))
    const res = await upgrade(p)
    expect(res.status).toBe(502)
    expect(JSON.parse(res.body).error.code).toBe('UPSTREAM_ERROR')
    expect(stats(p).byClass[1]).toBe(0)
  })
})

describe('WebSocket upgrades are counted by what the upstream answered', () => {
  it('a 403 refusing the upgrade is relayed and counted as 4xx, not as 101', async () => {
    const server = createHttpServer((_req, res) => res.end())
    server.on('upgrade', (_req, socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope')
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onTestFinished(() => new Promise<void>((r) => server.close(() => r())))
    const p = await dataplane(wsSeed(`http://127.0.0.1:${(server.address() as AddressInfo).port}`))
    const res = await upgrade(p)
    expect(res).toMatchObject({ status: 403, body: 'nope' })
    expect(stats(p).byClass).toEqual([0, 0, 0, 0, 1, 0])
  })

  it('a real handshake counts 101 once the upstream answered it', async () => {
    const backend = await startBackend('ws')
    onTestFinished(() => backend.close())
    const p = await dataplane(wsSeed(backend.url))
    const res = await upgrade(p)
    expect(res.status).toBe(101)
    const ws = res.ws!
    const echoed = new Promise<string>((r) => ws.once('message', (d: Buffer) => r(d.toString())))
    ws.send('hi')
    expect(await echoed).toBe('ws:hi')
    ws.close()
    expect(stats(p).byClass).toEqual([0, 1, 0, 0, 0, 0])
  })
})

describe('counters of deleted routes and upstreams', () => {
  it('leave /metrics and memory when the route and the upstream are deleted', async () => {
    const [v1, v2] = await Promise.all([startBackend('v1'), startBackend('v2')])
    onTestFinished(() => Promise.all([v1.close(), v2.close()]).then(() => undefined))
    const app = await startApp({
      upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
      routes: [
        { name: 'api', match: { pathPrefix: '/' }, split: { v1: 1 } },
        { name: 'old', match: { pathPrefix: '/old' }, split: { v2: 1 } },
      ],
    })
    expect((await app.proxy('/x')).backend).toBe('v1')
    expect((await app.proxy('/old/x')).backend).toBe('v2')
    const metrics = () => fetch(`${app.app.adminUrl}/metrics`).then((r) => r.text())
    expect(await metrics()).toContain('route="old"')
    expect(await metrics()).toContain('upstream="v2"')

    expect((await app.admin.del('/api/routes/old')).status).toBe(200)
    const afterRoute = await metrics()
    expect(afterRoute).not.toContain('route="old"')
    expect(afterRoute).toContain('route="api"')
    expect([...app.app.dataplane.resources.traffic.values()].map((s) => s.route)).toEqual(['api'])

    expect((await app.admin.del('/api/upstreams/v2')).status).toBe(200)
    expect(await metrics()).not.toContain('upstream="v2"')
    expect([...app.app.dataplane.resources.upstreams.keys()]).toEqual(['v1'])
  })
})

describe('compileTable on a state it cannot compile', () => {
  const url = (port: number) => `http://127.0.0.1:${port}`
  function base(): State {
    return {
      revision: 1,
      upstreams: {
        v1: {
          healthCheck: { path: '/healthz' },
          targets: [
            { url: url(4201), id: 'x', state: 'active' },
            { url: url(4202), id: 'y', state: 'draining' },
          ],
        },
        v2: { targets: [{ url: url(4203), id: 'z', state: 'active' }] },
      },
      routes: [{ name: 'r', split: { v1: 1 } }],
      flags: {},
      rollouts: {},
    }
  }
  /** The base state with every kind of change a compile applies to live resources, plus `defect`. */
  function changed(defect: (s: State) => void): State {
    const s = base()
    s.revision = 2
    delete s.upstreams.v1!.healthCheck // would set x healthy again
    s.upstreams.v1!.targets.push({ url: url(4204), id: 'w', state: 'active' }) // a new runtime and pool
    s.upstreams.v1!.targets[1]!.state = 'active' // y back to active: a slow-start ramp
    s.upstreams.v3 = { targets: [{ url: url(4205), id: 'q', state: 'active' }] } // new counters
    s.routes.push({ name: 'r2', split: { v3: 1 } }) // new traffic counters
    defect(s)
    return s
  }
  function snapshot(res: Resources) {
    return {
      pools: [...res.pools.keys()].sort(),
      targets: [...res.targets.keys()].sort(),
      traffic: [...res.traffic.keys()].sort(),
      upstreams: [...res.upstreams.keys()].sort(),
      compiled: res.compiled,
      runtimes: [...res.targets.values()].map((rt) => ({ key: rt.key, healthy: rt.healthy, activeCheck: rt.activeCheck, wasActive: rt.wasActive, rampStart: rt.rampStart })),
    }
  }

  it.each([
    { name: 'split weights all 0', defect: (s: State) => (s.routes[1]!.split = { v3: 0 }) },
    { name: 'a split naming an unknown upstream', defect: (s: State) => (s.routes[1]!.split = { nope: 1 }) },
    { name: 'a rule naming an unknown upstream', defect: (s: State) => (s.routes[1]!.rules = [{ match: { header: { a: 'b' } }, upstream: 'nope' }]) },
    { name: 'an invalid regex', defect: (s: State) => (s.routes[1]!.rules = [{ match: { header: { a: { regex: '(' } } }, upstream: 'v3' }]) },
    { name: 'a target url that does not parse', defect: (s: State) => s.upstreams.v3!.targets.push({ url: 'not a url', id: 'bad', state: 'active' }) },
  ])('$name: throws and leaves every resource as it was', ({ defect }) => {
    const res = new Resources()
    onTestFinished(() => res.close())
    compileTable(base(), res)
    const x = res.targets.get('v1/x')!
    // What the health checker does: it owns x's health, and x failed.
    x.activeCheck = true
    x.healthy = false
    const before = snapshot(res)
    expect(() => compileTable(changed(defect), res)).toThrow()
    expect(snapshot(res)).toEqual(before)
    // The same changes without the defect do apply.
    compileTable(changed(() => {}), res)
    expect(x.healthy).toBe(true)
    expect(res.targets.has('v1/w')).toBe(true)
    expect(res.targets.get('v1/y')!.rampStart).toBeGreaterThanOrEqual(0)
  })
})
