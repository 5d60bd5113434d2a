/**
 * Upgrades at the edge: a connection becomes a tunnel only for a protocol its route allows
 * (websocket, or one listed in `upgrades`) and only once the upstream answered 101; until then
 * it is HTTP, so a refused or unsupported upgrade can never carry a second, unchecked request to
 * the backend. The backend here parses requests one after another on a connection as nginx and
 * Go's net/http do: an Upgrade it does not implement is answered 400 and parsing goes on.
 */
import { randomBytes } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage } from 'node:http'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { WebSocketServer } from 'ws'
import { Dataplane, type EdgeLimits } from '../src/dataplane/server.js'
import { compileTable } from '../src/dataplane/table.js'
import { stateOf, type Seed } from './helpers/dataplane.js'
import { eventually } from './helpers/eventually.js'

interface Seen {
  method: string
  path: string
  headers: [string, string][]
  body: string
}

interface RawBackend {
  url: string
  /** every request parsed, on every connection, in order */
  seen: Seen[]
  /** per switch to a tunnel: bytes already received after the handshake when it answered 101 */
  early: number[]
  /** connections closed (by either side) */
  closed: number
  /** lets held 101s go (see `hold`) */
  release(): void
}

/**
 * An nginx-like upstream on raw sockets: parses requests in sequence (Content-Length bodies),
 * records each, answers `200 <path> <body>` (keep-alive), or 400 to an Upgrade it does not
 * implement, and keeps parsing. For a protocol in `switches` it answers 101 (after `release()`
 * when `hold` is set) and echoes every byte from then on.
 */
async function rawBackend(opts: { switches?: string[]; hold?: boolean } = {}): Promise<RawBackend> {
  const switches = new Set(opts.switches ?? [])
  let release!: () => void
  const released = opts.hold === true ? new Promise<void>((r) => (release = r)) : Promise.resolve()
  const b: RawBackend = { url: '', seen: [], early: [], closed: 0, release: () => release?.() }
  const server = createServer((s) => {
    let buf = Buffer.alloc(0)
    let tunnel = false
    let waiting = false
    s.on('error', () => {})
    s.on('close', () => b.closed++)
    const pump = (): void => {
      while (!tunnel && !waiting) {
        const end = buf.indexOf('\r\n\r\n')
        if (end < 0) return
        const [line, ...rest] = buf.toString('latin1', 0, end).split('\r\n')
        const headers = rest.map((l): [string, string] => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()])
        const get = (name: string) => headers.find(([n]) => n === name)?.[1]
        const length = Number(get('content-length') ?? 0)
        if (buf.length < end + 4 + length) return
        const body = buf.toString('latin1', end + 4, end + 4 + length)
        buf = buf.subarray(end + 4 + length)
        const [method, path] = line!.split(' ')
        b.seen.push({ method: method!, path: path!, headers, body })
        const upgrade = get('upgrade')?.toLowerCase()
        if (upgrade !== undefined && switches.has(upgrade)) {
          waiting = true
          void released.then(() => {
            b.early.push(buf.length)
            tunnel = true
            s.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${upgrade}\r\n\r\n`)
            if (buf.length > 0) s.write(buf)
          })
          return
        }
        const status = upgrade === undefined ? '200 OK' : '400 Bad Request'
        const text = `${status.slice(0, 3)} ${path} ${body}`.trimEnd()
        s.write(`HTTP/1.1 ${status}\r\nContent-Length: ${text.length}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Backend: raw\r\n\r\n${text}`)
      }
    }
    s.on('data', (d: Buffer) => {
      if (tunnel) return void s.write(d)
      buf = Buffer.concat([buf, d])
      pump()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => new Promise<void>((r) => server.close(() => r())))
  b.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return b
}

/** A data plane with its own listen.limits (the helper's takes none). */
async function edge(seed: Seed, limits: Partial<EdgeLimits> = {}): Promise<{ dp: Dataplane; port: number }> {
  const dp = new Dataplane({ limits })
  dp.setTable(compileTable(stateOf(seed), dp.resources))
  const { port } = await dp.listen(0, '127.0.0.1')
  onTestFinished(async () => {
    await dp.shutdown(1000)
  })
  return { dp, port }
}

/** A route serving `/public` only, to `url`. */
function publicOnly(url: string, upgrades?: string[]): Seed {
  return {
    upstreams: { app: { targets: [{ url }] } },
    routes: [{ name: 'public', match: { pathPrefix: '/public' }, split: { app: 1 }, ...(upgrades === undefined ? {} : { upgrades }) }],
  }
}

/** Writes `bytes` in one write and resolves with everything received once the proxy closes. */
function oneWrite(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(bytes, 'latin1'))
    let out = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (out += d))
    socket.on('error', reject)
    socket.on('close', () => resolve(out))
  })
}

/** A client connection kept open: what it received so far, and whether it closed. */
function openClient(port: number, bytes: string): { socket: Socket; text: () => string; closed: Promise<void> } {
  const socket = connect(port, '127.0.0.1', () => socket.write(bytes, 'latin1'))
  let out = ''
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => (out += d))
  socket.on('error', () => {})
  const closed = new Promise<void>((r) => socket.once('close', () => r()))
  onTestFinished(() => void socket.destroy())
  return { socket, text: () => out, closed }
}

/** Status lines in what a client received (a pipelined answer may follow a body without a newline). */
const statusLines = (text: string) => text.match(/HTTP\/1\.1 \d{3}/g) ?? []

/** The request a proxy must never forward: another path, the proxy's own header, a forged client address. */
const SMUGGLED = 'GET /internal/secret HTTP/1.1\r\nHost: h\r\nX-Switchyard-Flags: evil=on\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n'

function expectNeverSmuggled(b: RawBackend): void {
  expect(b.seen.map((s) => s.path)).not.toContain('/internal/secret')
  for (const s of b.seen) {
    for (const [name, value] of s.headers) {
      expect(value, name).not.toContain('6.6.6.6')
      expect(value, name).not.toContain('evil=on')
    }
  }
}

const wsKey = () => randomBytes(16).toString('base64')

/** A masked client text frame (RFC 6455 §5.2), short payloads only. */
function textFrame(text: string): string {
  const payload = Buffer.from(text)
  const mask = randomBytes(4)
  const masked = payload.map((byte, i) => byte ^ mask[i % 4]!)
  return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]).toString('latin1')
}

describe('an upgrade never opens a tunnel for an unchecked second request', () => {
  it('Upgrade: foo (not proxied) is served as a plain request; the request after it in the same write never reaches the backend', async () => {
    const b = await rawBackend()
    const { port } = await edge(publicOnly(b.url))
    const text = await oneWrite(port, `GET /public/a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n${SMUGGLED}`)
    // One answer, the plain one (the backend got no Upgrade, so it answered 200), then the connection closed.
    expect(statusLines(text)).toEqual(['HTTP/1.1 200'])
    expect(text).toContain('200 /public/a')
    expect(text.toLowerCase()).toContain('connection: close')
    expect(b.seen.map((s) => s.path)).toEqual(['/public/a'])
    expect(b.seen[0]!.headers.map(([n]) => n)).not.toContain('upgrade')
    expectNeverSmuggled(b)
  })

  it('a WebSocket handshake the backend refuses: its 400 is relayed as an ordinary response, the pipelined request is dropped', async () => {
    const b = await rawBackend()
    const { dp, port } = await edge(publicOnly(b.url))
    const handshake = `GET /public/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${wsKey()}\r\nSec-WebSocket-Version: 13\r\n\r\n`
    const text = await oneWrite(port, handshake + SMUGGLED)
    expect(statusLines(text)).toEqual(['HTTP/1.1 400'])
    const [head, body] = text.split('\r\n\r\n')
    // Status, end-to-end headers and body as the backend sent them; its hop-by-hop ones removed.
    expect(body).toBe('400 /public/ws')
    expect(head).toContain('X-Backend: raw')
    expect(head!.toLowerCase()).not.toContain('keep-alive')
    expect(head!.toLowerCase()).toContain('connection: close')
    expect(b.seen.map((s) => s.path)).toEqual(['/public/ws'])
    expectNeverSmuggled(b)
    // Counted by what the upstream answered; nothing is left tracked as a tunnel.
    expect(dp.resources.traffic.get('public\u0000app')!.byClass).toEqual([0, 0, 0, 0, 1, 0])
    await eventually(() => expect([...dp.resources.targets.values()].every((rt) => rt.websockets.size === 0)).toBe(true))
  })

  it('an unproxied upgrade with a Content-Length body is forwarded plain with its body; what follows it never is', async () => {
    const b = await rawBackend()
    const { port } = await edge(publicOnly(b.url))
    const text = await oneWrite(port, `POST /public/up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\nhello${SMUGGLED}`)
    expect(statusLines(text)).toEqual(['HTTP/1.1 200'])
    expect(text).toContain('200 /public/up hello')
    expect(b.seen.map((s) => [s.method, s.path, s.body])).toEqual([['POST', '/public/up', 'hello']])
    expectNeverSmuggled(b)
  })

  it('an unproxied upgrade with a chunked body is refused with 400, the backend untouched', async () => {
    const b = await rawBackend()
    const { port } = await edge(publicOnly(b.url))
    const text = await oneWrite(port, `POST /public/up HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n${SMUGGLED}`)
    expect(statusLines(text)).toEqual(['HTTP/1.1 400'])
    expect(text).toContain('"BAD_REQUEST"')
    expect(b.seen).toEqual([])
  })

  it('an upgrade pipelined behind a plain request is answered after it, in order', async () => {
    const b = await rawBackend()
    const { port } = await edge(publicOnly(b.url))
    const text = await oneWrite(port, `GET /public/first HTTP/1.1\r\nHost: h\r\n\r\nGET /public/a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n${SMUGGLED}`)
    expect(statusLines(text)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200'])
    expect(text.indexOf('200 /public/first')).toBeLessThan(text.indexOf('200 /public/a'))
    expect(b.seen.map((s) => s.path).sort()).toEqual(['/public/a', '/public/first'])
    expectNeverSmuggled(b)
  })
})

describe('tunnels that are allowed', () => {
  it('a real WebSocket works end to end; a frame sent with the handshake reaches the backend only after its 101', async () => {
    // ws's server, with the switch held until the test lets it go.
    let early = -1
    let arrived = false
    let go!: () => void
    const gate = new Promise<void>((r) => (go = r))
    const wss = new WebSocketServer({ noServer: true })
    const server = createHttpServer()
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      arrived = true
      void gate.then(() => {
        early = head.length + socket.readableLength
        wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (m: Buffer) => ws.send(`echo:${m.toString()}`)))
      })
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    onTestFinished(() => {
      for (const c of wss.clients) c.terminate()
      server.closeAllConnections()
      return new Promise<void>((r) => server.close(() => r()))
    })
    const { port } = await edge(publicOnly(`http://127.0.0.1:${(server.address() as AddressInfo).port}`))
    const handshake = `GET /public/chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${wsKey()}\r\nSec-WebSocket-Version: 13\r\n\r\n`
    const c = openClient(port, handshake + textFrame('hello'))
    // The handshake has reached the backend before its switch is let go.
    await eventually(() => expect(arrived).toBe(true))
    go()
    await eventually(() => expect(c.text()).toContain('echo:hello'))
    expect(c.text().startsWith('HTTP/1.1 101 ')).toBe(true)
    expect(early).toBe(0)
    // A second frame goes through the open tunnel too.
    c.socket.write(textFrame('again'), 'latin1')
    await eventually(() => expect(c.text()).toContain('echo:again'))
  })

  it('a route listing `upgrades: [Foo]` tunnels `Upgrade: FOO` after the backend answered 101', async () => {
    const b = await rawBackend({ switches: ['foo'], hold: true })
    const { port } = await edge(publicOnly(b.url, ['Foo']))
    const c = openClient(port, 'GET /public/foo HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: FOO\r\n\r\nping')
    await eventually(() => expect(b.seen.map((s) => s.path)).toEqual(['/public/foo']))
    expect(b.seen[0]!.headers).toContainEqual(['upgrade', 'FOO'])
    b.release()
    await eventually(() => expect(c.text()).toMatch(/^HTTP\/1\.1 101 [^]*\r\n\r\nping$/))
    // The client's `ping` was held until the 101: the backend had nothing of it when it switched.
    expect(b.early).toEqual([0])
    c.socket.write('pong')
    await eventually(() => expect(c.text().endsWith('pingpong')).toBe(true))
  })

  it('a tunnel with no byte either way for tunnelIdleTimeoutMs is closed on both sides; traffic keeps it open', async () => {
    const idleMs = 300
    const b = await rawBackend({ switches: ['websocket'] })
    const { dp, port } = await edge(publicOnly(b.url), { tunnelIdleTimeoutMs: idleMs })
    expect(dp.limits.tunnelIdleTimeoutMs).toBe(idleMs)
    const c = openClient(port, `GET /public/t HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${wsKey()}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    await eventually(() => expect(c.text()).toContain('101 Switching Protocols'))
    // Round trips for twice the bound: each byte resets it.
    const until = performance.now() + 2 * idleMs
    for (let i = 0; performance.now() < until; i++) {
      c.socket.write(`${i % 10}`)
      await eventually(() => expect(c.text().endsWith(`${i % 10}`)).toBe(true))
    }
    expect(c.socket.destroyed).toBe(false)
    const quiet = performance.now()
    await c.closed
    expect(performance.now() - quiet).toBeGreaterThanOrEqual(idleMs - 20)
    // The upstream side is closed too, and nothing is tracked any more.
    await eventually(() => expect(b.closed).toBe(1))
    await eventually(() => expect([...dp.resources.targets.values()].every((rt) => rt.websockets.size === 0)).toBe(true))
  })
})
