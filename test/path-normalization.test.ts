/**
 * Path normalization before routing, through the proxy on real sockets: dot segments (also
 * `%2e`) are resolved before route matching, the upstream receives the normalized path, and a
 * `preservePath` route forwards the path as sent. Requests are written by hand (`rawHttp`)
 * because HTTP clients normalize dot segments themselves.
 */
import { createServer, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { parseConfigText } from '../src/config/load.js'
import { backend, startApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startBackend, type Backend } from './helpers/backend.js'
import { rawHttp } from './helpers/client.js'
import { startDataplane, type TestDataplane } from './helpers/dataplane.js'

let pub: Backend, internal: Backend, rest: Backend, raw: Backend
let p: TestDataplane
beforeAll(async () => {
  ;[pub, internal, rest, raw] = await Promise.all([startBackend('public'), startBackend('internal'), startBackend('rest'), startBackend('raw')])
  p = await startDataplane({
    upstreams: {
      pub: { targets: [{ url: pub.url }] },
      internal: { targets: [{ url: internal.url }] },
      rest: { targets: [{ url: rest.url }] },
      raw: { targets: [{ url: raw.url }] },
    },
    routes: [
      { name: 'public', match: { pathPrefix: '/public/' }, split: { pub: 1 } },
      { name: 'internal', match: { pathPrefix: '/internal/' }, split: { internal: 1 } },
      { name: 'raw', match: { pathPrefix: '/raw/' }, split: { raw: 1 }, preservePath: true },
      { name: 'rest', match: { pathPrefix: '/' }, split: { rest: 1 } },
    ],
  })
})
afterAll(async () => {
  await p.close()
  await Promise.all([pub.close(), internal.close(), rest.close(), raw.close()])
})

/** Which backend served `target`, and the request target it received. */
async function get(target: string): Promise<{ backend: string; url: string }> {
  const text = await rawHttp(p.port, [`GET ${target} HTTP/1.1`, 'Host: api.example', 'Connection: close'])
  expect(text.startsWith('HTTP/1.1 200 '), text).toBe(true)
  const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { name: string; url: string }
  return { backend: body.name, url: body.url }
}

it.each([
  ['/a/../b', 'rest', '/b'],
  ['/../../etc/passwd', 'rest', '/etc/passwd'],
  ['/%2e%2e/%2E%2E/etc/passwd', 'rest', '/etc/passwd'],
  ['/public/x/./y', 'public', '/public/x/y'],
  ['/public/../internal/x', 'internal', '/internal/x'],
  ['/public/%2e%2e/internal/x', 'internal', '/internal/x'],
  ['/public/.%2E/internal/x?next=/public/../y', 'internal', '/internal/x?next=/public/../y'],
  ['/internal/../public/x', 'public', '/public/x'],
  ['/internal/..', 'rest', '/'],
  // (an encoded slash inside a dot segment, `/public/..%2Finternal`, is refused: path-hygiene.test.ts)
  ['/public//../x', 'public', '/public/x'],
  // absolute-form targets go through the same normalization
  ['http://api.example/public/../internal/x', 'internal', '/internal/x'],
  ['http://api.example/%2e%2e/b?c', 'rest', '/b?c'],
])('%s is routed to %s and forwarded as %s', async (target, backend, url) => {
  expect(await get(target)).toEqual({ backend, url })
})

it('preservePath: matched on the normalized path, forwarded as sent', async () => {
  expect(await get('/raw/x/./y/../z?q=../w')).toEqual({ backend: 'raw', url: '/raw/x/./y/../z?q=../w' })
  expect(await get('/internal/../raw/x')).toEqual({ backend: 'raw', url: '/internal/../raw/x' })
  expect(await get('http://api.example/raw/%2e/x')).toEqual({ backend: 'raw', url: '/raw/%2e/x' })
  // leaving the preserving route by `..` lands on the other route, which forwards normalized
  expect(await get('/raw/../internal/x')).toEqual({ backend: 'internal', url: '/internal/x' })
})

it('a WebSocket handshake is routed and forwarded on the normalized path too', async () => {
  const seen: string[] = []
  const up = createServer((_req, res) => res.end())
  up.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    seen.push(req.url!)
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
  })
  await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve))
  const ws = await startDataplane({
    upstreams: { ws: { targets: [{ url: `http://127.0.0.1:${(up.address() as { port: number }).port}` }] } },
    routes: [{ name: 'ws', match: { pathPrefix: '/chat/' }, split: { ws: 1 } }],
  })
  try {
    const text = await rawHttp(ws.port, ['GET /public/../chat/room HTTP/1.1', 'Host: h', 'Connection: Upgrade', 'Upgrade: websocket'])
    expect(text.startsWith('HTTP/1.1 101 ')).toBe(true)
    expect(seen).toEqual(['/chat/room'])
  } finally {
    await ws.close()
    up.closeAllConnections()
    await new Promise((resolve) => up.close(resolve))
  }
})

it('preservePath is an optional boolean of a route, in the config file and the admin API', async () => {
  const config = (preservePath: unknown) =>
    JSON.stringify({ upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:3001' }] } }, routes: [{ name: 'r', split: { v1: 1 }, preservePath }] })
  expect(parseConfigText(config(true), {}).problems).toEqual([])
  expect(parseConfigText(config('yes'), {}).problems.map((x) => x.path)).toEqual(['routes[0].preservePath'])

  const b = await backend('b')
  const t = await startApp({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] })
  const port = Number(new URL(t.app.proxyUrl).port)
  const url = async () => JSON.parse((await rawHttp(port, ['GET /a/./b HTTP/1.1', 'Host: h', 'Connection: close'])).split('\r\n\r\n')[1]!).url
  expect(await url()).toBe('/a/b')
  const put = await t.admin.put('/api/routes/api', { split: { v1: 1 }, preservePath: true })
  expect(put.status).toBe(200)
  expect(put.body.preservePath).toBe(true)
  await eventually(async () => expect(await url()).toBe('/a/./b'))
})
