/**
 * Forwarding headers on real sockets: X-Forwarded-Proto says what the client spoke to this
 * listener (https on TLS), a client's X-Forwarded-*, Forwarded and X-Real-IP are dropped and set
 * anew unless its peer is in listen.trustedProxies (then kept, X-Forwarded-For appended to),
 * IPv4-mapped peers match IPv4 blocks, and headers that read as internal or forwarding ones
 * with `_` for `-` never reach a backend. Requests are written by hand: HTTP clients refuse or
 * rewrite some of these headers.
 */
import { readFileSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage } from 'node:http'
import { BlockList, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { describe, expect, it, onTestFinished } from 'vitest'
import { loadConfigFile, parseConfigText } from '../src/config/load.js'
import { Dataplane } from '../src/dataplane/server.js'
import { compileTable } from '../src/dataplane/table.js'
import { formatProblem } from '../src/errors.js'
import { backend, startApp, type TestConfig } from './helpers/admin.js'
import type { Backend } from './helpers/backend.js'
import { rawHttp } from './helpers/client.js'
import { stateOf } from './helpers/dataplane.js'
import { eventually } from './helpers/eventually.js'

const FIXTURES = fileURLToPath(new URL('./fixtures/tls/', import.meta.url))
const TLS = { cert: join(FIXTURES, 'server.pem'), key: join(FIXTURES, 'server.key') }
const CA = readFileSync(join(FIXTURES, 'ca.pem'), 'utf8')

/** Header name (lowercase) → every value, in order. */
function headersOf(raw: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>()
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase()
    out.set(name, [...(out.get(name) ?? []), raw[i + 1]!])
  }
  return out
}

/** The headers the echo backend received for a hand-written request (`lines` after the request line). */
function echoed(text: string): Map<string, string[]> {
  expect(text.startsWith('HTTP/1.1 200 '), text).toBe(true)
  return headersOf((JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { rawHeaders: string[] }).rawHeaders)
}

/** `rawHttp` over TLS (trusting the test CA). */
function rawHttps(port: number, head: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: CA, servername: 'localhost' }, () => socket.write(head.join('\r\n') + '\r\n\r\n'))
    let out = ''
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (out += d))
    socket.on('error', reject)
    socket.on('close', () => resolve(out))
  })
}

/** An upstream that records each WebSocket handshake's headers and answers 101, then closes. */
async function handshakeRecorder(): Promise<{ url: string; seen: Map<string, string[]>[] }> {
  const seen: Map<string, string[]>[] = []
  const server = createServer((_req, res) => res.end())
  server.on('upgrade', (req: IncomingMessage, socket: Socket) => {
    seen.push(headersOf(req.rawHeaders))
    socket.end('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, seen }
}

const WS = ['Connection: Upgrade', 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==']

/** Every forwarding header a client might send, forged. */
const FORGED = [
  'X-Forwarded-For: 6.6.6.6',
  'X-Forwarded-Proto: https',
  'X-Forwarded-Host: evil.example',
  'X-Forwarded-Port: 8443',
  'X-Forwarded-Prefix: /admin',
  'X-Forwarded-Server: evil',
  'Forwarded: for=6.6.6.6;proto=https',
  'X-Real-IP: 6.6.6.6',
]

function config(up: string, trustedProxies?: string[]): TestConfig {
  return { ...(trustedProxies && { listen: { trustedProxies } }), upstreams: { v1: { targets: [{ url: up }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }
}

const proxyPort = (url: string) => Number(new URL(url).port)

/** What an untrusted peer's request must look like upstream: only the proxy's own forwarding headers. */
function expectSetAnew(h: Map<string, string[]>, proto: string): void {
  expect(h.get('x-forwarded-for')).toEqual(['127.0.0.1'])
  expect(h.get('x-forwarded-proto')).toEqual([proto])
  expect(h.get('x-forwarded-host')).toEqual(['api.example'])
  for (const gone of ['x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server', 'forwarded', 'x-real-ip']) expect(h.get(gone), gone).toBeUndefined()
}

describe('X-Forwarded-Proto', () => {
  it('is https on a TLS listener, for a plain request and a WebSocket handshake; a client\'s own value is replaced', async () => {
    const b = await backend('b')
    const t = await startApp({ ...config(b.url), listen: { tls: TLS } })
    expect(t.app.proxyUrl).toMatch(/^https:/)
    const port = proxyPort(t.app.proxyUrl)
    const h = echoed(await rawHttps(port, ['GET /echo HTTP/1.1', 'Host: api.example', 'X-Forwarded-Proto: http', 'Connection: close']))
    expect(h.get('x-forwarded-proto')).toEqual(['https'])

    const ws = await handshakeRecorder()
    const tw = await startApp({ ...config(ws.url), listen: { tls: TLS } })
    const answer = await rawHttps(proxyPort(tw.app.proxyUrl), ['GET /chat HTTP/1.1', 'Host: api.example', ...WS])
    expect(answer.startsWith('HTTP/1.1 101 '), answer).toBe(true)
    expect(ws.seen).toHaveLength(1)
    expect(ws.seen[0]!.get('x-forwarded-proto')).toEqual(['https'])
  })

  it('is http on a plain listener, for a WebSocket handshake too', async () => {
    const ws = await handshakeRecorder()
    const t = await startApp(config(ws.url))
    const answer = await rawHttp(proxyPort(t.app.proxyUrl), ['GET /chat HTTP/1.1', 'Host: api.example', 'X-Forwarded-Proto: https', ...WS])
    expect(answer.startsWith('HTTP/1.1 101 '), answer).toBe(true)
    expect(ws.seen[0]!.get('x-forwarded-proto')).toEqual(['http'])
  })
})

describe('listen.trustedProxies', () => {
  async function through(b: Backend, trustedProxies: string[] | undefined, extra: string[]): Promise<Map<string, string[]>> {
    const t = await startApp(config(b.url, trustedProxies))
    return echoed(await rawHttp(proxyPort(t.app.proxyUrl), ['GET /echo HTTP/1.1', 'Host: api.example', ...extra, 'Connection: close']))
  }

  it('from a peer not in the list (or with no list) every client forwarding header is dropped and set anew', async () => {
    const b = await backend('b')
    for (const list of [undefined, ['10.0.0.0/8', '::1/128']]) expectSetAnew(await through(b, list, FORGED), 'http')
  })

  it('the same on a WebSocket handshake', async () => {
    const ws = await handshakeRecorder()
    const t = await startApp(config(ws.url, ['10.0.0.0/8']))
    const answer = await rawHttp(proxyPort(t.app.proxyUrl), ['GET /chat HTTP/1.1', 'Host: api.example', ...FORGED, ...WS])
    expect(answer.startsWith('HTTP/1.1 101 '), answer).toBe(true)
    expectSetAnew(ws.seen[0]!, 'http')
  })

  it('from a trusted peer they are kept: X-Forwarded-For appended to, its -Proto and -Host kept, Forwarded and X-Real-IP passed', async () => {
    const b = await backend('b')
    const h = await through(b, ['127.0.0.1/32'], [...FORGED, 'X-Forwarded-For: 7.7.7.7'])
    expect(h.get('x-forwarded-for')).toEqual(['6.6.6.6, 7.7.7.7, 127.0.0.1'])
    expect(h.get('x-forwarded-proto')).toEqual(['https'])
    expect(h.get('x-forwarded-host')).toEqual(['evil.example'])
    expect(h.get('x-forwarded-port')).toEqual(['8443'])
    expect(h.get('x-forwarded-prefix')).toEqual(['/admin'])
    expect(h.get('forwarded')).toEqual(['for=6.6.6.6;proto=https'])
    expect(h.get('x-real-ip')).toEqual(['6.6.6.6'])
    // a trusted peer that sent none: the proxy's own, as for anyone
    const plain = await through(b, ['127.0.0.1'], [])
    expect(plain.get('x-forwarded-for')).toEqual(['127.0.0.1'])
    expect(plain.get('x-forwarded-proto')).toEqual(['http'])
    expect(plain.get('x-forwarded-host')).toEqual(['api.example'])
  })

  it('an IPv4-mapped IPv6 peer (a dual-stack listener) matches an IPv4 block', async () => {
    const b = await backend('b')
    const seed = { upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] }
    const run = async (block: [string, number, 'ipv4' | 'ipv6']) => {
      const trusted = new BlockList()
      trusted.addSubnet(...block)
      const dp = new Dataplane({ trustedProxies: trusted })
      dp.setTable(compileTable(stateOf(seed), dp.resources))
      const { port } = await dp.listen(0, '::')
      try {
        // connecting to 127.0.0.1 on a `::` listener: the peer is ::ffff:127.0.0.1
        return echoed(await rawHttp(port, ['GET /echo HTTP/1.1', 'Host: api.example', 'X-Forwarded-For: 6.6.6.6', 'Connection: close'])).get('x-forwarded-for')
      } finally {
        await dp.shutdown(1000)
      }
    }
    expect(await run(['127.0.0.0', 8, 'ipv4'])).toEqual(['6.6.6.6, 127.0.0.1'])
    expect(await run(['10.0.0.0', 8, 'ipv4'])).toEqual(['127.0.0.1'])
  })

  it('a reload that changes the list applies it to the next request', async () => {
    const b = await backend('b')
    const t = await startApp(config(b.url, ['10.0.0.0/8']))
    const port = proxyPort(t.app.proxyUrl)
    const xff = async () => echoed(await rawHttp(port, ['GET /echo HTTP/1.1', 'Host: api.example', 'X-Forwarded-For: 6.6.6.6', 'Connection: close'])).get('x-forwarded-for')
    expect(await xff()).toEqual(['127.0.0.1'])
    const changes = await t.app.reload({ ...config(b.url), listen: { host: '127.0.0.1', port: 0, trustedProxies: ['127.0.0.1/32'] }, admin: { host: '127.0.0.1', port: 0 } })
    expect(changes).toContain('listen.trustedProxies')
    await eventually(async () => expect(await xff()).toEqual(['6.6.6.6, 127.0.0.1']))
  })

  it('every entry is checked: an address or CIDR block, IPv4 or IPv6, each problem at its path', async () => {
    const good = ['10.0.0.0/8', '192.168.1.7', '172.16.0.0/12', '0.0.0.0/0', 'fd00::/8', '::1', '::ffff:10.0.0.0/104', '2001:db8::/32', '10.1.2.3/8']
    const bad = ['10.0.0.0/33', '10.0.0/8', 'fd00::/129', 'proxy.internal', '10.0.0.0/', '10.0.0.0/8/8', 'fe80::1%eth0', '10.0.0.0/+8', '010.0.0.1']
    const text = (list: string[]) => JSON.stringify({ listen: { trustedProxies: list }, upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:3001' }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    expect(parseConfigText(text(good), {}).problems).toEqual([])
    const problems = parseConfigText(text([...good, ...bad]), {}).problems
    expect(problems.map((p) => p.path)).toEqual(bad.map((_, i) => `listen.trustedProxies[${good.length + i}]`))
    expect(problems[0]!.message).toBe('"10.0.0.0/33": the prefix length after / must be a number from 0 to 32 for an IPv4 address')
    expect(problems[2]!.message).toBe('"fd00::/129": the prefix length after / must be a number from 0 to 128 for an IPv6 address')
    expect(problems[3]!.message).toBe('"proxy.internal" is not an IP address or CIDR block (such as 10.0.0.0/8, 192.168.1.7, fd00::/8)')

    // as `switchyard validate` prints them, from a YAML file
    const dir = await mkdtemp(join(tmpdir(), 'switchyard-trusted-'))
    const file = join(dir, 'config.yaml')
    await writeFile(file, 'listen:\n  trustedProxies: [10.0.0.0/8, 10.0.0.0/40]\nupstreams:\n  v1: { targets: [{ url: "http://127.0.0.1:3001" }] }\nroutes: [{ name: r, split: { v1: 1 } }]\n')
    const loaded = await loadConfigFile(file)
    expect(loaded.problems.map(formatProblem)).toEqual([expect.stringMatching(/^listen\.trustedProxies\[1\]: .*0 to 32/)])
  })
})

describe('underscore spellings', () => {
  const SPOOFS = [
    'x_switchyard_flags: evil=on',
    'X_Switchyard_Flags: evil=on',
    'x-switchyard_flags: evil=on',
    'x_switchyard-route: internal',
    'x_forwarded_for: 6.6.6.6',
    'X_Forwarded-Host: evil.example',
    'x_real_ip: 6.6.6.6',
    'x-real_ip: 6.6.6.6',
  ]
  /** Names that, read with `_` as `-`, are the proxy's own or a forwarding header. */
  const suspicious = (h: Map<string, string[]>) =>
    [...h.keys()].filter((n) => n.includes('_') && /^(x-switchyard-|x-forwarded-|x-real-ip$)/.test(n.replaceAll('_', '-')))

  it('internal and forwarding headers spelled with `_` never reach the backend, from untrusted and trusted peers; other `_` names pass', async () => {
    const b = await backend('b')
    for (const list of [undefined, ['127.0.0.1/32']]) {
      const t = await startApp({ ...config(b.url, list), flags: { beta: { enabled: true } } })
      const h = echoed(await rawHttp(proxyPort(t.app.proxyUrl), ['GET /echo HTTP/1.1', 'Host: api.example', ...SPOOFS, 'x_request_id: r-1', 'my_header: 2', 'Connection: close']))
      expect(suspicious(h), String(list)).toEqual([])
      expect(h.get('x-switchyard-flags')).toEqual(['beta=on'])
      expect(h.get('x-forwarded-for')).toEqual(['127.0.0.1'])
      expect(h.get('x-forwarded-host')).toEqual(['api.example'])
      expect(h.get('x_request_id')).toEqual(['r-1'])
      expect(h.get('my_header')).toEqual(['2'])
    }
  })

  it('the same on a WebSocket handshake', async () => {
    const ws = await handshakeRecorder()
    const t = await startApp(config(ws.url))
    const answer = await rawHttp(proxyPort(t.app.proxyUrl), ['GET /chat HTTP/1.1', 'Host: api.example', ...SPOOFS, ...WS])
    expect(answer.startsWith('HTTP/1.1 101 '), answer).toBe(true)
    expect(suspicious(ws.seen[0]!)).toEqual([])
  })
})
