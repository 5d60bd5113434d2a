/**
 * Request hygiene on the proxy port, on real sockets: the admin token never reaches a backend,
 * and requests the proxy can judge itself (repeated or invalid Host, CONNECT, anything undici
 * refuses to send because of what the client sent) get a 4xx from the proxy and are never sent
 * to, nor counted against, an upstream.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { Socket } from 'node:net'
import { Pool, type Dispatcher } from 'undici'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Exchange, type ExchangeContext } from '../src/dataplane/forward.js'
import { Resources } from '../src/dataplane/resources.js'
import { compileTable } from '../src/dataplane/table.js'
import { radixGet } from '../src/dataplane/radix.js'
import { validHost } from '../src/dataplane/request-checks.js'
import { classify } from '../src/dataplane/upstream-error.js'
import { backend, startApp, type TestApp } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { hit, many, rawHttp } from './helpers/client.js'
import { stateOf } from './helpers/dataplane.js'

const TOKENS = { admin: { token: 'main-secret-token', tokens: { ci: 'ci-secret-token', ops: 'ops-secret-token' } } }

/** Status, headers (lowercase names) and body of a raw HTTP/1.1 answer. */
function parse(text: string): { status: number; headers: Record<string, string>; body: string } {
  const end = text.indexOf('\r\n\r\n')
  const lines = text.slice(0, end).split('\r\n')
  const headers: Record<string, string> = {}
  for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim()
  return { status: Number(lines[0]!.split(' ')[1]), headers, body: text.slice(end + 4) }
}

/** Sum of the samples of `name` whose labels include `labels`, from the admin port's /metrics. */
async function metric(t: TestApp, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${t.app.adminUrl}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

/** What an upstream would hold against its targets: 5xx and proxy errors of every route. */
async function upstreamFaults(t: TestApp): Promise<number> {
  return (await metric(t, 'switchyard_proxy_errors_total')) + (await metric(t, 'switchyard_requests_total', { code_class: '5xx' }))
}

async function app(b: Backend): Promise<TestApp> {
  return startApp({ ...TOKENS, upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'api', split: { v1: 1 } }] }, { token: 'main-secret-token' })
}

/** The Authorization values the backend received for one request through the proxy. */
async function authSeen(t: TestApp, value: string): Promise<string[]> {
  const res = await hit(`${t.app.proxyUrl}/echo`, { headers: { authorization: value } })
  expect(res.status).toBe(200)
  return header(res.json<{ rawHeaders: string[] }>().rawHeaders, 'authorization')
}

describe('the admin token never reaches a backend', () => {
  it('strips Bearer <admin token> (admin.token and every admin.tokens) and passes end users\' Authorization', async () => {
    const t = await app(await backend('a'))
    for (const v of ['Bearer main-secret-token', 'Bearer ci-secret-token', 'bearer ops-secret-token', 'BEARER  ci-secret-token']) {
      expect(await authSeen(t, v), v).toEqual([])
    }
    for (const v of ['Bearer user-token', 'Basic dXNlcjpwYXNz', 'Bearer main-secret-token-not', 'Token main-secret-token']) {
      expect(await authSeen(t, v), v).toEqual([v])
    }
  })

  it('follows the tokens of a reload: the new one is stripped, the old one is an ordinary credential again', async () => {
    const b = await backend('a')
    const t = await app(b)
    const changes = await t.app.reload({
      upstreams: { v1: { targets: [{ url: b.url }] } },
      routes: [{ name: 'api', split: { v1: 1 } }],
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0, token: 'rotated-secret-token' },
      shutdownTimeoutMs: 1_000,
    })
    expect(changes).toContain('admin tokens')
    expect(await authSeen(t, 'Bearer rotated-secret-token')).toEqual([])
    expect(await authSeen(t, 'Bearer main-secret-token')).toEqual(['Bearer main-secret-token'])
  })

  it('strips it from a WebSocket handshake too', async () => {
    const up = await upgradeRecorder()
    const t = await startApp({ ...TOKENS, upstreams: { v1: { targets: [{ url: up.url }] } }, routes: [{ name: 'ws', split: { v1: 1 } }] })
    const handshake = (auth: string) =>
      rawHttp(Number(new URL(t.app.proxyUrl).port), ['GET /chat HTTP/1.1', 'Host: h', 'Connection: Upgrade', 'Upgrade: websocket', `Authorization: ${auth}`])
    expect(parse(await handshake('Bearer ops-secret-token')).status).toBe(101)
    expect(header(up.seen.at(-1)!, 'authorization')).toEqual([])
    expect(parse(await handshake('Bearer user-token')).status).toBe(101)
    expect(header(up.seen.at(-1)!, 'authorization')).toEqual(['Bearer user-token'])
  })
})

describe('a client cannot hurt an upstream\'s record', () => {
  it('50 requests with two Host headers: all 400 from the proxy, the backend never contacted, no upstream error counted', async () => {
    const b = await backend('a')
    const t = await app(b)
    const before = b.state.requests
    const port = Number(new URL(t.app.proxyUrl).port)
    const answers = await many(50, 10, () => rawHttp(port, ['GET /x HTTP/1.1', 'Host: a.example', 'Host: b.example', 'Connection: close']))
    for (const text of answers) {
      const res = parse(text)
      expect(res.status).toBe(400)
      expect(JSON.parse(res.body)).toEqual({ error: { code: 'BAD_REQUEST', message: expect.any(String) } })
    }
    expect(b.state.requests).toBe(before)
    expect(await upstreamFaults(t)).toBe(0)
    expect(await metric(t, 'switchyard_proxy_errors_total', { code: 'UPSTREAM_ERROR' })).toBe(0)
    expect(await metric(t, 'switchyard_requests_total')).toBe(0)
    expect(await metric(t, 'switchyard_bad_requests_total', { reason: 'host_repeated' })).toBe(50)
    // the same Host twice is still two field lines (RFC 9112 §3.2)
    expect(parse(await rawHttp(port, ['GET /x HTTP/1.1', 'Host: a', 'Host: a', 'Connection: close'])).status).toBe(400)
    // and an ordinary request still goes through
    expect((await hit(`${t.app.proxyUrl}/x`)).status).toBe(200)
  })

  it('an invalid Host is 400 and never forwarded; a valid one is', async () => {
    const b = await backend('a')
    const t = await app(b)
    const port = Number(new URL(t.app.proxyUrl).port)
    const before = b.state.requests
    for (const host of ['a b', 'a/b', 'user@a', 'a:80x', '[::1', '[::1]x', 'a%zz']) {
      const res = parse(await rawHttp(port, ['GET /x HTTP/1.1', `Host: ${host}`, 'Connection: close']))
      expect(res.status, host).toBe(400)
      expect(JSON.parse(res.body).error.code).toBe('BAD_REQUEST')
    }
    expect(b.state.requests).toBe(before)
    expect(await metric(t, 'switchyard_bad_requests_total', { reason: 'host_invalid' })).toBe(7)
    expect(await upstreamFaults(t)).toBe(0)
    for (const host of ['api.example.com', 'API.example.com:8080', '127.0.0.1:1', '[::1]:80']) {
      expect(parse(await rawHttp(port, ['GET /x HTTP/1.1', `Host: ${host}`, 'Connection: close'])).status, host).toBe(200)
    }
  })

  it('CONNECT gets an answer (405, Allow, JSON) and the connection closes', async () => {
    const b = await backend('a')
    const t = await app(b)
    const port = Number(new URL(t.app.proxyUrl).port)
    const res = parse(await rawHttp(port, ['CONNECT example.com:443 HTTP/1.1', 'Host: example.com:443']))
    expect(res.status).toBe(405)
    expect(res.headers['allow']).toMatch(/^GET, HEAD, POST/)
    expect(res.headers['allow']).not.toContain('CONNECT')
    expect(res.headers['connection']).toBe('close')
    expect(JSON.parse(res.body)).toEqual({ error: { code: 'METHOD_NOT_ALLOWED', message: expect.any(String) } })
    expect(b.state.requests).toBe(0)
    expect(await metric(t, 'switchyard_bad_requests_total', { reason: 'connect' })).toBe(1)
    expect(await upstreamFaults(t)).toBe(0)
  })

  it('a WebSocket handshake gets the same Host checks', async () => {
    const up = await upgradeRecorder()
    const t = await startApp({ upstreams: { v1: { targets: [{ url: up.url }] } }, routes: [{ name: 'ws', split: { v1: 1 } }] })
    const port = Number(new URL(t.app.proxyUrl).port)
    for (const hosts of [['Host: a', 'Host: b'], ['Host: a b']]) {
      const res = parse(await rawHttp(port, ['GET /chat HTTP/1.1', ...hosts, 'Connection: Upgrade', 'Upgrade: websocket']))
      expect(res.status, hosts.join()).toBe(400)
      expect(JSON.parse(res.body).error.code).toBe('BAD_REQUEST')
    }
    expect(up.seen).toHaveLength(0)
    expect(await metric(t, 'switchyard_bad_requests_total')).toBe(2)
  })
})

describe('what undici refuses to send is judged by its cause', () => {
  /** The error undici reports for a request, sent through a real pool to a real backend. */
  async function undiciError(b: Backend, opts: Partial<Dispatcher.DispatchOptions>): Promise<Error> {
    const pool = new Pool(b.url)
    onTestFinished(() => pool.destroy())
    return new Promise((resolve, reject) => {
      pool.dispatch({ path: '/x', method: 'GET', ...opts }, {
        onResponseError: (_controller, err) => resolve(err),
        onResponseStart: (controller) => {
          reject(new Error('undici sent it'))
          controller.abort(new Error('sent'))
        },
      })
    })
  }

  it.each([
    ['two Host headers', { headers: ['host', 'a', 'host', 'b'] }, 'client'],
    ['a header name that is not a token', { headers: ['x a', '1'] }, 'client'],
    ['a header value with a control character', { headers: ['x-a', 'a\u0001b'] }, 'client'],
    ['a path with a space', { path: '/a b' }, 'client'],
    ['an Expect header', { headers: ['expect', '100-continue'] }, 'client'],
    ['an invalid option of ours (not the client\'s)', { headersTimeout: -1 }, 'other'],
  ] as const)('%s → %s', async (_, opts, fault) => {
    const b = await backend('a')
    const err = await undiciError(b, opts as Partial<Dispatcher.DispatchOptions>)
    expect(classify(err, false)).toBe(fault)
    expect(b.state.requests).toBe(0)
  })

  it('a request undici refuses is answered 400 by the proxy and never counted against the upstream', async () => {
    // An exchange given the client's headers untouched (no Host check before it), so undici
    // itself refuses them: the last line of defence, on real sockets.
    const b = await backend('a')
    const res = new Resources()
    onTestFinished(() => res.close())
    const table = compileTable(stateOf({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }), res)
    const choice = radixGet(table.byName, 'r')!.split[0]!
    const upstream = table.upstreams.get(choice.upstream)!
    const ctx: ExchangeContext = { res, closing: false, requestClosed: () => {} }
    const server = createServer((req, out) => new Exchange(ctx, req, out, choice, upstream, req.url!, req.rawHeaders, false, performance.now()).start())
    const port = await listen(server)
    const text = await rawHttp(port, ['GET /x HTTP/1.1', 'Host: a', 'Host: b', 'Connection: close'])
    expect(parse(text).status).toBe(400)
    expect(JSON.parse(parse(text).body).error.code).toBe('BAD_REQUEST')
    expect(res.rejected.unsendable).toBe(1)
    expect(choice.stats.requests).toBe(0)
    expect(choice.stats.proxyErrors.UPSTREAM_ERROR).toBe(0)
    expect(upstream.targets[0]!.rt.inflight).toBe(0)
    expect(upstream.targets[0]!.rt.healthy).toBe(true)
    expect(b.state.requests).toBe(0)
  })
})

describe('validHost (RFC 3986 host [":" port])', () => {
  it.each(['example.com', 'EXAMPLE.com:8080', '127.0.0.1', '127.0.0.1:1', '[::1]', '[::1]:80', '[2001:db8::7]', '[::ffff:10.0.0.1]:443', '[v1.fe:x]', 'a_b~c-d', '%41%62', "a!$&'()*+,;=", 'host:', ''])(
    'accepts %j',
    (host) => expect(validHost(host)).toBe(true),
  )
  it.each(['a b', 'a/b', 'a?b', 'a#b', 'user@a', 'a:b', 'a:80:81', 'a:-1', '[::1', '[::1]x', '[::1]:8o', '[fe80::1%25eth0]', '[a.b]', '[]', 'a%zz', 'a%4', 'é.example', '"a"'])(
    'refuses %j',
    (host) => expect(validHost(host)).toBe(false),
  )
})

/** An upstream that records each upgrade request's raw headers and answers 101, then closes. */
async function upgradeRecorder(): Promise<{ url: string; seen: string[][] }> {
  const seen: string[][] = []
  const server = createServer((_req, res) => res.end())
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    seen.push(req.rawHeaders)
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
  })
  const port = await listen(server)
  return { url: `http://127.0.0.1:${port}`, seen }
}

function header(raw: string[], name: string): string[] {
  return raw.filter((_, i) => i % 2 === 1 && raw[i - 1]!.toLowerCase() === name)
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return (server.address() as { port: number }).port
}
