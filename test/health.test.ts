import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect, it, onTestFinished } from 'vitest'
import { startSwitchyard } from '../src/app.js'
import type { ConfigFile } from '../src/config/schema.js'
import { startBackend } from './helpers/backend.js'
import { hit, many } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { addTarget } from '../src/control/mutations.js'

/** A backend whose /healthz answers what the test says, and which counts the requests it serves. */
async function switchable(name: string) {
  const s = { healthy: true, served: 0 }
  const server: Server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.statusCode = s.healthy ? 200 : 503
      res.end()
      return
    }
    s.served++
    res.setHeader('x-backend', name)
    res.end(name)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { s, url: `http://127.0.0.1:${port}`, id: `127.0.0.1:${port}` }
}

async function app(config: Omit<ConfigFile, 'listen' | 'admin'>) {
  const a = await startSwitchyard({ listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, ...config })
  onTestFinished(() => a.close(1000).then(() => undefined))
  return a
}

// Generous timeouts: a probe of the healthy target must not time out on a loaded CI machine.
const hc = { path: '/healthz', intervalMs: 500, timeoutMs: 450, healthyThreshold: 1, unhealthyThreshold: 2 }

it('a failing health check takes a target out; passing checks bring it back', async () => {
  const a = await switchable('a')
  const b = await switchable('b')
  const sy = await app({ upstreams: { v1: { targets: [{ url: a.url }, { url: b.url }], healthCheck: hc } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  const rtB = () => sy.dataplane.resources.targets.get(`v1/${b.id}`)!
  b.s.healthy = false
  await eventually(() => expect(rtB().healthy).toBe(false), { timeoutMs: 3000 })
  const names = await many(40, 4, async () => String((await hit(sy.proxyUrl + '/')).headers['x-backend']))
  expect(new Set(names)).toEqual(new Set(['a']))
  b.s.healthy = true
  await eventually(() => expect(rtB().healthy).toBe(true), { timeoutMs: 3000 })
  await eventually(async () => expect((await hit(sy.proxyUrl + '/')).headers['x-backend']).toBe('b'), { timeoutMs: 3000, intervalMs: 1 })
})

it('a target added at run time gets no request before its first passing check', async () => {
  const a = await switchable('a')
  const late = await switchable('late')
  late.s.healthy = false
  const sy = await app({ upstreams: { v1: { targets: [{ url: a.url }], healthCheck: hc } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  await sy.control.write(addTarget('v1', { id: late.id, url: late.url, state: 'active' }), { actor: 'test' })
  const rt = () => sy.dataplane.resources.targets.get(`v1/${late.id}`)!
  expect(rt().healthy).toBe(false)
  await many(40, 4, () => hit(sy.proxyUrl + '/'))
  expect(late.s.served).toBe(0)
  late.s.healthy = true
  await eventually(() => expect(rt().healthy).toBe(true), { timeoutMs: 3000 })
  await eventually(async () => expect((await hit(sy.proxyUrl + '/')).headers['x-backend']).toBe('late'), { timeoutMs: 3000, intervalMs: 1 })
})

it('config targets start healthy: traffic flows before any check ran', async () => {
  const b = await startBackend('b')
  onTestFinished(() => b.close())
  const sy = await app({
    upstreams: { v1: { targets: [{ url: b.url }], healthCheck: { path: '/healthz', intervalMs: 60_000 } } },
    routes: [{ name: 'r', split: { v1: 1 } }],
  })
  expect((await hit(sy.proxyUrl + '/')).status).toBe(200)
})

it('without timeoutMs a probe gets half a short interval: /healthz answering in 400 ms fails checks every 600 ms', async () => {
  const slow: Server = createServer((req, res) => {
    if (req.url === '/healthz') return void setTimeout(() => res.end(), 400)
    res.end('slow')
  })
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r))
  onTestFinished(() => {
    slow.closeAllConnections()
    return new Promise<void>((r) => slow.close(() => r()))
  })
  const port = (slow.address() as AddressInfo).port
  const a = await switchable('a')
  const sy = await app({
    upstreams: { v1: { targets: [{ url: a.url }, { url: `http://127.0.0.1:${port}` }], healthCheck: { path: '/healthz', intervalMs: 600, unhealthyThreshold: 1 } } },
    routes: [{ name: 'r', split: { v1: 1 } }],
  })
  await eventually(() => expect(sy.dataplane.resources.targets.get(`v1/127.0.0.1:${port}`)!.healthy).toBe(false), { timeoutMs: 5000 })
  expect(sy.dataplane.resources.targets.get(`v1/${a.id}`)!.healthy).toBe(true)
})
