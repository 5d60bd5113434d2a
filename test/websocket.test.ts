import { afterAll, beforeAll, expect, it } from 'vitest'
import WebSocket from 'ws'
import { startBackend, type Backend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import { startDataplane, type TestDataplane } from './helpers/dataplane.js'

let a: Backend, b: Backend
let p: TestDataplane
beforeAll(async () => {
  ;[a, b] = await Promise.all([startBackend('a'), startBackend('b')])
  p = await startDataplane({
    upstreams: { v1: { targets: [{ url: a.url }] }, v2: { targets: [{ url: b.url }] } },
    routes: [{ name: 'ws', rules: [{ match: { header: { 'x-api-version': '2' } }, upstream: 'v2' }], split: { v1: 1 } }],
  })
})
afterAll(async () => {
  await p.close()
  await Promise.all([a.close(), b.close()])
})

function open(headers: Record<string, string> = {}): Promise<WebSocket> {
  const ws = new WebSocket(p.url.replace('http', 'ws') + '/chat', { headers })
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

function next(ws: WebSocket): Promise<{ data: string | Buffer; binary: boolean }> {
  return new Promise((resolve) => ws.once('message', (data: Buffer, binary: boolean) => resolve({ data: binary ? data : data.toString(), binary })))
}

it('echoes text and binary frames through the proxy, routed by rules', async () => {
  const ws = await open()
  ws.send('hello')
  expect((await next(ws)).data).toBe('a:hello')
  const bin = Buffer.from([0, 1, 2, 255])
  ws.send(bin)
  expect(Buffer.compare((await next(ws)).data as Buffer, bin)).toBe(0)
  await eventually(() => expect(p.dp.resources.targets.get(`v1/${a.id}`)!.websockets.size).toBe(1))
  ws.close()
  await eventually(() => expect(p.dp.resources.targets.get(`v1/${a.id}`)!.websockets.size).toBe(0))

  const ws2 = await open({ 'x-api-version': '2' })
  ws2.send('hi')
  expect((await next(ws2)).data).toBe('b:hi')
  ws2.close()
})

it('closes the client side when the backend closes', async () => {
  const ws = await open()
  const closed = new Promise<void>((r) => ws.once('close', () => r()))
  await eventually(() => expect(a.wss.clients.size).toBe(1))
  for (const c of a.wss.clients) c.terminate()
  await closed
  await eventually(() => expect(p.dp.resources.targets.get(`v1/${a.id}`)!.websockets.size).toBe(0))
})

it('answers 503 in JSON when no target can take the upgrade', async () => {
  p.apply({
    upstreams: { v1: { targets: [{ url: a.url, state: 'disabled' }] } },
    routes: [{ name: 'ws', split: { v1: 1 } }],
  })
  const ws = new WebSocket(p.url.replace('http', 'ws') + '/chat')
  const status = await new Promise<number>((resolve) => {
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
    ws.once('error', () => resolve(-1))
  })
  expect(status).toBe(503)
})
