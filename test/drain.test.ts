import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { expect, it, onTestFinished } from 'vitest'
import WebSocket from 'ws'
import { startBackend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { startDataplane, type Seed } from './helpers/dataplane.js'

/** A backend that counts its open connections and answers /slow after 400 ms. */
async function counting() {
  const open = new Set<Socket>()
  const server: Server = createServer((req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 400)
    else res.end('ok')
  })
  server.on('connection', (s: Socket) => {
    open.add(s)
    s.once('close', () => open.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { open, url: `http://127.0.0.1:${port}` }
}

it('draining a target closes its idle keep-alive sockets at once; in-flight requests finish', async () => {
  const a = await counting()
  const b = await counting()
  const seed = (stateA: 'active' | 'draining'): Seed => ({
    upstreams: { v1: { targets: [{ url: a.url, state: stateA }, { url: b.url }] } },
    routes: [{ name: 'r', split: { v1: 1 } }],
  })
  const p = await startDataplane(seed('active'))
  onTestFinished(() => p.close())
  // warm both pools so each backend holds idle keep-alive sockets from the proxy
  for (let i = 0; i < 6; i++) expect((await hit(p.url + '/')).status).toBe(200)
  await eventually(() => expect(a.open.size).toBeGreaterThan(0))
  const slow = fetch(p.url + '/slow').then(async (r) => ({ status: r.status, body: await r.text() }))
  await eventually(() => expect(p.inflight('v1', a.url.slice(7)) + p.inflight('v1', b.url.slice(7))).toBe(1))
  p.apply(seed('draining'))
  // new requests avoid a; its sockets close as soon as nothing runs on them
  for (let i = 0; i < 6; i++) expect((await hit(p.url + '/')).status).toBe(200)
  expect(await slow).toEqual({ status: 200, body: 'slow' })
  await eventually(() => expect(a.open.size).toBe(0))
  expect(b.open.size).toBeGreaterThan(0)
  // active again: a gets a fresh pool and traffic
  p.apply(seed('active'))
  await eventually(async () => {
    await hit(p.url + '/')
    expect(a.open.size).toBeGreaterThan(0)
  })
})

it('a WebSocket to a draining target is closed after drainTimeoutMs, not before', async () => {
  const backend = await startBackend('ws')
  onTestFinished(() => backend.close())
  const seed = (state: 'active' | 'draining'): Seed => ({
    upstreams: { v1: { targets: [{ url: backend.url, state }], drainTimeoutMs: 300 } },
    routes: [{ name: 'r', split: { v1: 1 } }],
  })
  const p = await startDataplane(seed('active'))
  onTestFinished(() => p.close())
  const ws = new WebSocket(p.url.replace('http', 'ws') + '/')
  await new Promise((r, j) => ws.once('open', r).once('error', j))
  const closed = new Promise<number>((r) => ws.once('close', () => r(performance.now())))
  const t0 = performance.now()
  p.apply(seed('draining'))
  // still usable during the drain window
  ws.send('hi')
  expect(await new Promise((r) => ws.once('message', (d) => r(String(d))))).toBe('ws:hi')
  expect((await closed) - t0).toBeGreaterThanOrEqual(250)
})

it('a target that becomes active again before drainTimeoutMs keeps its WebSockets', async () => {
  const backend = await startBackend('ws')
  onTestFinished(() => backend.close())
  const seed = (state: 'active' | 'draining'): Seed => ({
    upstreams: { v1: { targets: [{ url: backend.url, state }], drainTimeoutMs: 200 } },
    routes: [{ name: 'r', split: { v1: 1 } }],
  })
  const p = await startDataplane(seed('active'))
  onTestFinished(() => p.close())
  const ws = new WebSocket(p.url.replace('http', 'ws') + '/')
  await new Promise((r, j) => ws.once('open', r).once('error', j))
  p.apply(seed('draining'))
  p.apply(seed('active'))
  const rt = p.dp.resources.targets.get(`v1/${backend.id}`)!
  // no close is pending any more (the timer is what would close it)
  expect(rt.wsDrainTimer).toBeUndefined()
  ws.send('still')
  expect(await new Promise((r) => ws.once('message', (d) => r(String(d))))).toBe('ws:still')
  ws.close()
})
