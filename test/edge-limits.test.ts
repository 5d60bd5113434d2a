/**
 * Edge bounds on slow or large clients and on upstreams that fall behind, on real sockets:
 * a head that trickles (slowloris) gets 408 after headersTimeoutMs, a body that stalls 408
 * after bodyIdleTimeoutMs (the upstream request aborted), an idle keep-alive connection closes
 * after keepAliveTimeoutMs, maxConnections closes the next connection while open ones keep
 * working (listening and handed-in), maxBodyBytes answers 413 without contacting the upstream
 * (Content-Length) or cuts a chunked body, and a circuit breaker answers 503 at once while the
 * upstream's own requests finish. Limits are small so the tests are fast.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Dataplane, servesHanded, type DataplaneOptions } from '../src/dataplane/server.js'
import { compileTable } from '../src/dataplane/table.js'
import { adminClient, startApp } from './helpers/admin.js'
import { hit } from './helpers/client.js'
import { stateOf, type Seed } from './helpers/dataplane.js'
import { eventually } from './helpers/eventually.js'
import { blackhole } from './helpers/status-backend.js'

/** A backend that counts requests, holds `/hold` until released, and sees aborted requests. */
interface Upstream {
  url: string
  requests: number
  /** requests whose connection went away before the backend answered in full */
  aborted: number
  /** body bytes read so far, all requests together */
  bodyBytes: number
  /** answers every held `/hold` request */
  release(): void
  held: number
}

async function upstream(): Promise<Upstream> {
  const holds: ServerResponse[] = []
  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    u.requests++
    res.on('close', () => {
      if (!res.writableFinished) u.aborted++
    })
    req.on('data', (c: Buffer) => (u.bodyBytes += c.length))
    if (req.url === '/hold') {
      holds.push(res)
      u.held = holds.length
      return
    }
    if (req.url === '/early') {
      // Answers before reading the body (a streaming upload endpoint), then reads it.
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('started\n')
      req.on('end', () => res.end('done'))
      return
    }
    req.on('end', () => res.end('ok'))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  const u: Upstream = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: 0,
    aborted: 0,
    bodyBytes: 0,
    held: 0,
    release() {
      for (const res of holds.splice(0)) res.end('released')
      u.held = 0
    },
  }
  return u
}

function seed(url: string, route: Partial<Seed['routes'][number]> = {}, up: Partial<Seed['upstreams'][string]> = {}): Seed {
  return { upstreams: { v1: { targets: [{ url }], ...up } }, routes: [{ name: 'r', split: { v1: 1 }, ...route }] }
}

/** A data plane listening on 127.0.0.1:0 with `opts`, closed after the test. */
async function proxy(s: Seed, opts: DataplaneOptions = {}): Promise<{ dp: Dataplane; port: number; url: string }> {
  const dp = new Dataplane(opts)
  dp.setTable(compileTable(stateOf(s), dp.resources))
  const { port } = await dp.listen(0, '127.0.0.1')
  onTestFinished(() => dp.shutdown(500).then(() => {}))
  return { dp, port, url: `http://127.0.0.1:${port}` }
}

/**
 * A data plane that listens on nothing and is handed its connections (a `--workers` worker's
 * way): a plain TCP server here accepts them and passes each to `accept()`.
 */
async function handedProxy(s: Seed, opts: DataplaneOptions): Promise<{ dp: Dataplane; port: number }> {
  const dp = new Dataplane(opts)
  dp.setTable(compileTable(stateOf(s), dp.resources))
  servesHanded(dp.server)
  const front = createServer((socket) => {
    if (!dp.accept(socket)) socket.destroy()
  })
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r))
  onTestFinished(async () => {
    front.close()
    await dp.shutdown(500)
  })
  return { dp, port: (front.address() as AddressInfo).port }
}

/** A raw client connection: writes bytes as told, collects what comes back, knows when it closed. */
class Raw {
  text = ''
  closed = false
  readonly ended: Promise<void>
  private constructor(readonly socket: Socket) {
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (this.text += d))
    socket.on('error', () => {})
    this.ended = new Promise((r) => socket.once('close', () => r()))
    void this.ended.then(() => (this.closed = true))
  }

  static open(port: number): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new Raw(s)))
      s.once('error', reject)
      onTestFinished(() => void s.destroy())
    })
  }

  write(s: string): void {
    this.socket.write(s)
  }

  /** Sends a bodyless GET on this connection and resolves with its whole answer (a Content-Length one). */
  async get(path: string): Promise<string> {
    const from = this.text.length
    this.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`)
    return eventually(() => {
      const got = this.text.slice(from)
      const m = /\r\ncontent-length: (\d+)\r\n[\s\S]*?\r\n\r\n/i.exec(got)
      if (m === null) throw new Error(`no whole head yet: ${JSON.stringify(got)}`)
      const end = m.index + m[0].length + Number(m[1])
      if (got.length < end) throw new Error('body not complete')
      return got.slice(0, end)
    })
  }
}

const status = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0)
const errorCode = (text: string) => (JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { error: { code: string } }).error.code

/** Writes `parts` one by one, `everyMs` apart, until the connection closes or they run out. */
async function trickle(raw: Raw, parts: string[], everyMs: number): Promise<void> {
  for (const p of parts) {
    if (raw.closed) return
    raw.write(p)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

describe('headersTimeoutMs (slowloris)', () => {
  it('a head still trickling in after headersTimeoutMs gets a JSON 408 REQUEST_TIMEOUT and the connection closes; the upstream never sees it', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { headersTimeoutMs: 300 } })
    const raw = await Raw.open(p.port)
    const t0 = performance.now()
    // A header line every 50 ms: the connection is never idle, the head never ends.
    void trickle(raw, ['GET / HTTP/1.1\r\nHost: x\r\n', ...Array.from({ length: 200 }, (_, i) => `x-slow-${i}: 1\r\n`)], 50)
    await raw.ended
    const ms = performance.now() - t0
    expect(status(raw.text)).toBe(408)
    expect(errorCode(raw.text)).toBe('REQUEST_TIMEOUT')
    // Bounded by headersTimeoutMs plus the check's slack (a tenth of it), not node:http's 30 s sweep.
    expect(ms).toBeGreaterThanOrEqual(290)
    expect(ms).toBeLessThan(2_000)
    expect(b.requests).toBe(0)
    expect(p.dp.resources.limited.headers_timeout).toBe(1)
  })

  it('a connection that sends nothing at all is closed after headersTimeoutMs with 408', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { headersTimeoutMs: 300 } })
    const raw = await Raw.open(p.port)
    await raw.ended
    expect(status(raw.text)).toBe(408)
  })

  it('holds on handed-in connections too (a --workers worker)', async () => {
    const b = await upstream()
    const p = await handedProxy(seed(b.url), { limits: { headersTimeoutMs: 300 } })
    const raw = await Raw.open(p.port)
    raw.write('GET / HTTP/1.1\r\nHost: x\r\n')
    await raw.ended
    expect(status(raw.text)).toBe(408)
    expect(errorCode(raw.text)).toBe('REQUEST_TIMEOUT')
    expect(p.dp.resources.limited.headers_timeout).toBe(1)
  })

  it('a whole head in time is served as usual', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { headersTimeoutMs: 300 } })
    expect((await hit(`${p.url}/`)).status).toBe(200)
  })
})

describe('bodyIdleTimeoutMs', () => {
  it('a body that stops arriving gets 408 REQUEST_TIMEOUT after bodyIdleTimeoutMs and the upstream request is aborted', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { bodyIdleTimeoutMs: 300 } })
    const raw = await Raw.open(p.port)
    raw.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n' + 'a'.repeat(100))
    // The upstream got the request and its first bytes...
    await eventually(() => expect(b.bodyBytes).toBe(100))
    await raw.ended
    expect(status(raw.text)).toBe(408)
    expect(errorCode(raw.text)).toBe('REQUEST_TIMEOUT')
    // ...and its request was cut, not left waiting for the rest.
    await eventually(() => expect(b.aborted).toBe(1))
    expect(p.dp.resources.limited.body_idle_timeout).toBe(1)
    // The client's stall is not the upstream's: no response counted against it.
    expect(p.dp.resources.traffic.get('r\u0000v1')!.requests).toBe(0)
    expect(p.dp.resources.upstreams.get('v1')!.inflight).toBe(0)
  })

  it('a slow body that keeps coming (a chunk more often than the bound) is forwarded whole', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { bodyIdleTimeoutMs: 300 } })
    const raw = await Raw.open(p.port)
    raw.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n')
    // 10 chunks 100 ms apart: a second in all, longer than the bound, never idle that long.
    await trickle(raw, Array.from({ length: 10 }, () => '5\r\nhello\r\n'), 100)
    raw.write('0\r\n\r\n')
    await eventually(() => expect(raw.text).toContain('\r\n\r\n'))
    expect(status(raw.text)).toBe(200)
    expect(b.bodyBytes).toBe(50)
    expect(p.dp.resources.limited.body_idle_timeout).toBe(0)
  })
})

describe('keepAliveTimeoutMs', () => {
  it('an idle keep-alive connection is closed by the proxy after keepAliveTimeoutMs (plus node:http 1 s grace), not the 5 s default', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { keepAliveTimeoutMs: 200 } })
    const raw = await Raw.open(p.port)
    const answer = await raw.get('/')
    expect(status(answer)).toBe(200)
    expect(answer.toLowerCase()).toContain('keep-alive: timeout=0')
    const t0 = performance.now()
    await raw.ended
    expect(performance.now() - t0).toBeLessThan(4_000)
  })
})

describe('maxConnections', () => {
  it('a connection over maxConnections is closed at once; the open ones keep working', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url), { limits: { maxConnections: 2 } })
    const one = await Raw.open(p.port)
    const two = await Raw.open(p.port)
    expect(status(await one.get('/'))).toBe(200)
    expect(status(await two.get('/'))).toBe(200)
    const three = await Raw.open(p.port)
    three.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    await three.ended
    expect(three.text).toBe('')
    // The two open connections are unaffected.
    expect(status(await one.get('/'))).toBe(200)
    expect(status(await two.get('/'))).toBe(200)
    expect(p.dp.resources.limited.max_connections).toBe(1)
    // A closed one frees its place.
    two.socket.destroy()
    await eventually(async () => expect(await new Promise((r) => p.dp.server.getConnections((_e, n) => r(n)))).toBe(1))
    const four = await Raw.open(p.port)
    expect(status(await four.get('/'))).toBe(200)
  })

  it('bounds handed-in connections (a --workers worker counts its own)', async () => {
    const b = await upstream()
    const p = await handedProxy(seed(b.url), { limits: { maxConnections: 1 } })
    const one = await Raw.open(p.port)
    expect(status(await one.get('/'))).toBe(200)
    const two = await Raw.open(p.port)
    two.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
    await two.ended
    expect(two.text).toBe('')
    expect(status(await one.get('/'))).toBe(200)
    expect(p.dp.resources.limited.max_connections).toBe(1)
  })
})

describe('routes[].maxBodyBytes', () => {
  it('a Content-Length over it gets 413 PAYLOAD_TOO_LARGE and the upstream is never contacted', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url, { maxBodyBytes: 100 }))
    const raw = await Raw.open(p.port)
    raw.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n' + 'a'.repeat(50))
    await raw.ended
    expect(status(raw.text)).toBe(413)
    expect(errorCode(raw.text)).toBe('PAYLOAD_TOO_LARGE')
    expect(raw.text.toLowerCase()).toContain('connection: close')
    // At the bound exactly, it passes.
    const ok = await hit(`${p.url}/upload`, { method: 'POST', body: 'a'.repeat(100) })
    expect(ok.status).toBe(200)
    expect(b.requests).toBe(1)
    expect(p.dp.resources.limited.body_too_large).toBe(1)
  })

  it('with Expect: 100-continue the client is never told to send the body', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url, { maxBodyBytes: 100 }))
    const raw = await Raw.open(p.port)
    raw.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n')
    await raw.ended
    expect(raw.text).not.toContain('100 Continue')
    expect(status(raw.text)).toBe(413)
    expect(b.requests).toBe(0)
    // Under the bound the 100 comes, and the request goes through.
    const ok = await Raw.open(p.port)
    ok.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n')
    await eventually(() => expect(ok.text).toContain('100 Continue'))
    ok.write('hello')
    await eventually(() => expect(ok.text).toMatch(/\r\n\r\nok$/))
    expect(b.requests).toBe(1)
  })

  it('a chunked body that grows past it is cut: the upstream request is aborted and the client gets 413', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url, { maxBodyBytes: 100 }))
    const raw = await Raw.open(p.port)
    raw.write('POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' + `3c\r\n${'a'.repeat(60)}\r\n`)
    await eventually(() => expect(b.bodyBytes).toBe(60))
    raw.write(`3c\r\n${'b'.repeat(60)}\r\n`)
    await raw.ended
    expect(status(raw.text)).toBe(413)
    expect(errorCode(raw.text)).toBe('PAYLOAD_TOO_LARGE')
    await eventually(() => expect(b.aborted).toBe(1))
    // Never more than the bound went upstream.
    expect(b.bodyBytes).toBeLessThanOrEqual(100)
    expect(p.dp.resources.limited.body_too_large).toBe(1)
    expect(p.dp.resources.traffic.get('r\u0000v1')!.requests).toBe(0)
  })

  it('once the response started, a body past the bound cuts the client connection and the upstream request', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url, { maxBodyBytes: 100 }))
    const raw = await Raw.open(p.port)
    raw.write('POST /early HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n' + `3c\r\n${'a'.repeat(60)}\r\n`)
    await eventually(() => expect(raw.text).toContain('started'))
    raw.write(`3c\r\n${'b'.repeat(60)}\r\n`)
    await raw.ended
    expect(status(raw.text)).toBe(200)
    // Cut: the chunked response never got its last chunk.
    expect(raw.text).not.toContain('done')
    expect(raw.text).not.toMatch(/\r\n0\r\n\r\n$/)
    await eventually(() => expect(b.aborted).toBe(1))
    expect(p.dp.resources.limited.body_too_large).toBe(1)
  })
})

describe('upstream circuitBreaker', () => {
  it('past maxConcurrent: 503 UPSTREAM_OVERLOADED at once, while the requests in flight finish 200', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url, {}, { circuitBreaker: { maxConcurrent: 2 } }))
    const first = hit(`${p.url}/hold`)
    const second = hit(`${p.url}/hold`)
    await eventually(() => expect(b.held).toBe(2))
    // Answered while the two are still held: refused, not queued behind them.
    const third = await hit(`${p.url}/hold`)
    expect(third.status).toBe(503)
    expect(third.json<{ error: { code: string } }>().error.code).toBe('UPSTREAM_OVERLOADED')
    expect(b.held).toBe(2)
    expect(b.requests).toBe(2)
    b.release()
    expect((await first).status).toBe(200)
    expect((await second).status).toBe(200)
    // The slots are free again.
    expect((await hit(`${p.url}/`)).status).toBe(200)
    const stats = p.dp.resources.traffic.get('r\u0000v1')!
    expect(stats.proxyErrors.UPSTREAM_OVERLOADED).toBe(1)
    expect(stats.byClass[5]).toBe(1)
    const counters = p.dp.resources.upstreams.get('v1')!
    expect(counters.overloaded).toEqual({ max_concurrent: 1, max_pending: 0 })
    expect(counters.inflight).toBe(0)
    expect(counters.pending).toBe(0)
  })

  it('past maxPending (requests waiting for a connection): 503 UPSTREAM_OVERLOADED at once', async () => {
    const dark = await blackhole()
    const p = await proxy(seed(dark.url, {}, { circuitBreaker: { maxPending: 2 }, connectTimeoutMs: 2_000, retries: 0 }))
    const waiting = [hit(`${p.url}/`), hit(`${p.url}/`)]
    const counters = p.dp.resources.upstreams.get('v1')!
    await eventually(() => expect(counters.pending).toBe(2))
    const third = await hit(`${p.url}/`)
    expect(third.status).toBe(503)
    expect(third.json<{ error: { code: string } }>().error.code).toBe('UPSTREAM_OVERLOADED')
    expect(counters.overloaded.max_pending).toBe(1)
    // The two waiting ones end by the upstream's own connect timeout, not by the breaker.
    expect((await Promise.all(waiting)).map((r) => r.status)).toEqual([504, 504])
    expect(counters.pending).toBe(0)
    expect(counters.inflight).toBe(0)
  })

  it('an upstream without a circuitBreaker takes every request', async () => {
    const b = await upstream()
    const p = await proxy(seed(b.url))
    const held = Array.from({ length: 5 }, () => hit(`${p.url}/hold`))
    await eventually(() => expect(b.held).toBe(5))
    b.release()
    expect((await Promise.all(held)).map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
  })
})

describe('a running instance', () => {
  it('applies changed listen.limits on reload, and /metrics counts what the limits cut', async () => {
    const b = await upstream()
    const config = { ...seed(b.url), flags: {}, listen: { limits: { maxConnections: 1 } } }
    const t = await startApp(config)
    const port = Number(new URL(t.app.proxyUrl).port)
    const one = await Raw.open(port)
    expect(status(await one.get('/'))).toBe(200)
    const two = await Raw.open(port)
    await two.ended
    expect(two.text).toBe('')
    const changes = await t.app.reload({
      ...config,
      listen: { host: '127.0.0.1', port: 0, limits: { maxConnections: 2 } },
      admin: { host: '127.0.0.1', port: 0 },
      shutdownTimeoutMs: 1_000,
    })
    expect(changes.join('; ')).toContain('listen.limits')
    const three = await Raw.open(port)
    expect(status(await three.get('/'))).toBe(200)
    expect(status(await one.get('/'))).toBe(200)
    const metrics = await adminClient(t.app.adminUrl).get<string>('/metrics')
    expect(metrics.body).toContain('switchyard_client_limits_total{reason="max_connections"} 1')
    expect(metrics.body).toContain('switchyard_upstream_overloaded_total{upstream="v1",bound="max_concurrent"} 0')
  })
})
