/**
 * Paths a backend may resolve differently from the proxy, on real sockets: `..;` (servlet path
 * parameters), a backslash raw or as `%5C`, and an encoded slash next to a dot segment are
 * refused with 400 before any backend is contacted, counted as `path_ambiguous`, on plain
 * requests and WebSocket handshakes alike; a `preservePath` route forwards them as sent.
 * Requests are written by hand (`rawHttp`): HTTP clients rewrite such paths themselves.
 */
import { createServer, type IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { ambiguousPath } from '../src/dataplane/normalize-path.js'
import { backend, startApp } from './helpers/admin.js'
import { startBackend, type Backend } from './helpers/backend.js'
import { rawHttp } from './helpers/client.js'
import { startDataplane, type TestDataplane } from './helpers/dataplane.js'

let pub: Backend, internal: Backend, raw: Backend
let p: TestDataplane
beforeAll(async () => {
  ;[pub, internal, raw] = await Promise.all([startBackend('public'), startBackend('internal'), startBackend('raw')])
  p = await startDataplane({
    upstreams: { pub: { targets: [{ url: pub.url }] }, internal: { targets: [{ url: internal.url }] }, raw: { targets: [{ url: raw.url }] } },
    routes: [
      { name: 'public', match: { pathPrefix: '/public/' }, split: { pub: 1 } },
      { name: 'internal', match: { pathPrefix: '/internal/' }, split: { internal: 1 } },
      { name: 'raw', match: { pathPrefix: '/raw/' }, split: { raw: 1 }, preservePath: true },
    ],
  })
})
afterAll(async () => {
  await p.close()
  await Promise.all([pub.close(), internal.close(), raw.close()])
})

function send(target: string): Promise<string> {
  return rawHttp(p.port, [`GET ${target} HTTP/1.1`, 'Host: api.example', 'Connection: close'])
}

const status = (text: string) => Number(text.split(' ')[1])
const body = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))
const requests = () => pub.state.requests + internal.state.requests + raw.state.requests

/** Each way a Tomcat-, IIS- or decoding backend would leave `/public/` for `/internal/`. */
const AMBIGUOUS = [
  '/public/..;/internal/x',
  '/public/..;jsessionid=1/internal/x',
  '/public/.;/x',
  '/public/%2e%2e;/internal/x',
  '/public\\..\\internal/x',
  '/public/x\\y',
  '/public/%5C../internal/x',
  '/public/%5c',
  '/public/..%2Finternal/x',
  '/public/..%2finternal/x',
  '/public/%2e%2e%2fadmin',
  '/public/%2E%2E%2Finternal/x',
  '/public/.%2Fx',
  '/public/x%2F..%2F..%2Finternal/x',
  '/public/x%2F..',
  '/public/..%2F?q=1',
  'http://api.example/public/..%2Finternal/x',
]

describe('refused with 400', () => {
  it.each(AMBIGUOUS)('%s: 400 BAD_REQUEST, no backend contacted, counted', async (target) => {
    const before = { requests: requests(), rejected: p.dp.resources.rejected.path_ambiguous }
    const text = await send(target)
    expect(status(text), text).toBe(400)
    expect(body(text)).toEqual({ error: { code: 'BAD_REQUEST', message: expect.any(String) } })
    expect(requests()).toBe(before.requests)
    expect(p.dp.resources.rejected.path_ambiguous).toBe(before.rejected + 1)
  })

  it('also where no route matches: the path is the problem, not the route table', async () => {
    expect(status(await send('/elsewhere/..%2Fx'))).toBe(400)
    expect(status(await send('/elsewhere/x'))).toBe(404)
  })

  it('a WebSocket handshake with such a path is refused the same way, the upstream never asked', async () => {
    const seen: string[] = []
    const up = createServer((_req, res) => res.end())
    up.on('upgrade', (req: IncomingMessage, socket: Socket) => {
      seen.push(req.url!)
      socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
    })
    await new Promise<void>((resolve) => up.listen(0, '127.0.0.1', resolve))
    onTestFinished(() => {
      up.closeAllConnections()
      return new Promise<void>((resolve) => up.close(() => resolve()))
    })
    const ws = await startDataplane({
      upstreams: { ws: { targets: [{ url: `http://127.0.0.1:${(up.address() as { port: number }).port}` }] } },
      routes: [{ name: 'ws', match: { pathPrefix: '/chat/' }, split: { ws: 1 } }],
    })
    onTestFinished(() => ws.close())
    const handshake = (path: string) => rawHttp(ws.port, [`GET ${path} HTTP/1.1`, 'Host: h', 'Connection: Upgrade', 'Upgrade: websocket'])
    for (const path of ['/chat/..;/admin', '/chat/..%2Fadmin', '/chat\\..\\admin']) {
      const text = await handshake(path)
      expect(status(text), path).toBe(400)
      expect(body(text).error.code).toBe('BAD_REQUEST')
    }
    expect(seen).toEqual([])
    expect(ws.dp.resources.rejected.path_ambiguous).toBe(3)
    expect(status(await handshake('/chat/room'))).toBe(101)
    expect(seen).toEqual(['/chat/room'])
  })

  it('shows in /metrics as bad_requests_total{reason="path_ambiguous"}, never in requests_total', async () => {
    const b = await backend('b')
    const t = await startApp({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] })
    const port = Number(new URL(t.app.proxyUrl).port)
    for (const target of ['/a/..;/b', '/a/..%2Fb']) expect(status(await rawHttp(port, [`GET ${target} HTTP/1.1`, 'Host: h', 'Connection: close']))).toBe(400)
    expect(b.state.requests).toBe(0)
    const metrics = await (await fetch(`${t.app.adminUrl}/metrics`)).text()
    expect(metrics).toMatch(/^switchyard_bad_requests_total\{reason="path_ambiguous"\} 2$/m)
    const counted = metrics.split('\n').filter((l) => l.startsWith('switchyard_requests_total{')).map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)))
    expect(counted.reduce((a, n) => a + n, 0)).toBe(0)
  })
})

describe('not refused', () => {
  it.each([
    // an encoded slash that is not next to a dot segment is data (a resource id, say)
    ['/public/a%2Fb', 'public', '/public/a%2Fb'],
    ['/public/a%2F.b/c', 'public', '/public/a%2F.b/c'],
    ['/public/a%2F...%2Fb', 'public', '/public/a%2F...%2Fb'],
    // dots and semicolons inside names, path parameters on ordinary segments
    ['/public/a..;b', 'public', '/public/a..;b'],
    ['/public/.well-known/x', 'public', '/public/.well-known/x'],
    ['/public/a;v=1/b', 'public', '/public/a;v=1/b'],
    // the query is not a path
    ['/public/x?next=..%2F..;/internal\\x%5C', 'public', '/public/x?next=..%2F..;/internal\\x%5C'],
    // plain dot segments are resolved before routing, as before
    ['/public/../internal/x', 'internal', '/internal/x'],
  ])('%s goes to %s as %s', async (target, name, url) => {
    const text = await send(target)
    expect(status(text), text).toBe(200)
    expect(body(text)).toMatchObject({ name, url })
  })

  it('a preservePath route forwards every one of them as sent (its backend judges the path)', async () => {
    for (const path of AMBIGUOUS.filter((t) => t.startsWith('/public/')).map((t) => t.replace('/public/', '/raw/'))) {
      const text = await send(path)
      expect(status(text), path).toBe(200)
      expect(body(text)).toMatchObject({ name: 'raw', url: path })
    }
    // the route is the one the normalized path matches: leaving /raw/ by `..` lands on a route that refuses
    expect(status(await send('/raw/../public/..%2Fx'))).toBe(400)
    expect(body(await send('/public/../raw/..%2Fx'))).toMatchObject({ name: 'raw', url: '/public/../raw/..%2Fx' })
  })
})

describe('ambiguousPath', () => {
  it.each([
    ['/a/..;/b', true],
    ['/a/..;', true],
    ['/a/%2E%2e;x/b', true],
    ['/a\\b', true],
    ['/a/%5cb', true],
    ['/a/..%2F', true],
    ['/a/b%2f..', true],
    ['/a/b%2F.%2Fc', true],
    ['/a/..%2F?x', true],
    ['/a/b;p%2F../c', true],
    ['/', false],
    ['/a/b/c', false],
    ['/a/../b', false],
    ['/a/%2F/../c', false],
    ['/a/b%2Fc', false],
    ['/a..;/b', false],
    ['/a/%2', false],
    ['/a/%5', false],
    ['/a?..;\\%5C', false],
    ['/a#..;', false],
    ['*', false],
  ])('%s → %s', (path, expected) => {
    expect(ambiguousPath(path)).toBe(expected)
  })
})
