/**
 * TLS on both sides, on real sockets: https:// upstream targets (verification, `ca`,
 * `servername`, `insecureSkipVerify`, health checks, WebSockets) and the TLS listener, whose
 * certificate a real process swaps on SIGHUP without a failed request.
 */
import { copyFile, mkdtemp, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { createSecureServer as createHttp2SecureServer } from 'node:http2'
import { request as httpsRequest, Agent as HttpsAgent, createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect, type PeerCertificate } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { expect, it, onTestFinished } from 'vitest'
import { WebSocket, WebSocketServer } from 'ws'
import { startSwitchyard } from '../src/app.js'
import { parseConfigText } from '../src/config/load.js'
import type { ConfigFile } from '../src/config/schema.js'
import { startBackend } from './helpers/backend.js'
import { hit } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { adminClient } from './helpers/admin.js'
import { memoryLogger } from './helpers/log.js'
import { spawnProxy } from './helpers/proxy-process.js'
import { freePort } from './helpers/redis.js'

const FIXTURES = fileURLToPath(new URL('./fixtures/tls/', import.meta.url))
const fixture = (name: string) => join(FIXTURES, name)
const pem = (name: string) => readFileSync(fixture(name), 'utf8')
const CA = fixture('ca.pem')

/** An HTTPS backend with the given certificate: answers its name and path, echoes WebSocket messages. */
async function httpsBackend(name: string, cert: 'server' | 'self' | 'other') {
  const server = createHttpsServer({ cert: pem(`${cert}.pem`), key: pem(`${cert}.key`) }, (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ name, path: req.url, tls: true }))
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`${name}:${String(m)}`)))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  onTestFinished(() => {
    for (const c of wss.clients) c.terminate()
    wss.close()
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return { url: `https://127.0.0.1:${port}`, id: `127.0.0.1:${port}` }
}

/** A request through the proxy answers 502 UPSTREAM_TLS_ERROR. */
async function expectTlsError(proxyUrl: string): Promise<void> {
  const r = await hit(proxyUrl + '/')
  expect(r.status).toBe(502)
  expect(r.json()).toMatchObject({ error: { code: 'UPSTREAM_TLS_ERROR' } })
}

async function app(config: ConfigFile) {
  const a = await startSwitchyard({ listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, ...config })
  onTestFinished(() => a.close(1000).then(() => undefined))
  return a
}

const route = [{ name: 'r', split: { up: 1 } }]

it('an https target signed by the CA in tls.ca is proxied', async () => {
  const b = await httpsBackend('secure', 'server')
  const sy = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA } } }, routes: route })
  const r = await hit(sy.proxyUrl + '/hello')
  expect(r.status).toBe(200)
  expect(r.json()).toEqual({ name: 'secure', path: '/hello', tls: true })
})

it('an https target that also offers h2 by ALPN is still spoken to in HTTP/1.1', async () => {
  // undici 8 would take h2 when the target offers it; an upstream's protocol must not change by itself.
  const seen: string[] = []
  const server = createHttp2SecureServer({ cert: pem('server.pem'), key: pem('server.key'), allowHTTP1: true }, (req, res) => {
    seen.push(req.httpVersion)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ httpVersion: req.httpVersion }))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => new Promise<void>((r) => server.close(() => r())))
  const port = (server.address() as AddressInfo).port
  const sy = await app({ upstreams: { up: { targets: [{ url: `https://127.0.0.1:${port}` }], tls: { ca: CA } } }, routes: route })
  for (let i = 0; i < 3; i++) {
    const r = await hit(sy.proxyUrl + '/x')
    expect(r.status).toBe(200)
    expect(r.json()).toEqual({ httpVersion: '1.1' })
  }
  expect(seen).toEqual(['1.1', '1.1', '1.1'])
})

it('a certificate from an unknown CA answers 502 UPSTREAM_TLS_ERROR, and the target shows why', async () => {
  const b = await httpsBackend('self', 'self')
  const sy = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA } } }, routes: route })
  await expectTlsError(sy.proxyUrl)
  const health = sy.dataplane.resources.targets.get(`up/${b.id}`)!.health()
  expect(health.healthy).toBe(false)
  expect(health.reason).toMatch(/^tls: DEPTH_ZERO_SELF_SIGNED_CERT/)
})

it("without tls.ca, Node's default CAs are used: the test CA is not among them", async () => {
  const b = await httpsBackend('secure', 'server')
  const sy = await app({ upstreams: { up: { targets: [{ url: b.url }] } }, routes: route })
  await expectTlsError(sy.proxyUrl)
})

it('a certificate for another name is refused; servername names the one it is for', async () => {
  const b = await httpsBackend('other', 'other')
  const wrong = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA } } }, routes: route })
  await expectTlsError(wrong.proxyUrl)
  expect(wrong.dataplane.resources.targets.get(`up/${b.id}`)!.health().reason).toMatch(/^tls: ERR_TLS_CERT_ALTNAME_INVALID/)
  const right = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA, servername: 'other.test' } } }, routes: route })
  expect((await hit(right.proxyUrl + '/')).json()).toMatchObject({ name: 'other' })
})

it('insecureSkipVerify accepts any certificate, and is warned about once', async () => {
  const b = await httpsBackend('self', 'self')
  const log = memoryLogger('info')
  const sy = await startSwitchyard(
    { listen: { host: '127.0.0.1', port: 0 }, admin: { host: '127.0.0.1', port: 0 }, upstreams: { up: { targets: [{ url: b.url }], tls: { insecureSkipVerify: true } } }, routes: route },
    { logger: log.logger },
  )
  onTestFinished(() => sy.close(1000).then(() => undefined))
  const r = await hit(sy.proxyUrl + '/x')
  expect(r.status).toBe(200)
  expect(r.json()).toMatchObject({ name: 'self', path: '/x' })
  // A later change to the same upstream does not warn again.
  const admin = adminClient(sy.adminUrl)
  expect((await admin.put('/api/upstreams/up', { targets: [{ url: b.url }], tls: { insecureSkipVerify: true }, retries: 1 })).status).toBe(200)
  await eventually(() => expect(sy.control.follower.state.upstreams['up']?.retries).toBe(1))
  expect(log.find('insecureSkipVerify')).toMatchObject([{ level: 'warn', upstream: 'up' }])
})

it('health checks run over https with the upstream tls options; a refused certificate fails them with its reason', async () => {
  const good = await httpsBackend('good', 'server')
  const bad = await httpsBackend('bad', 'self')
  const hc = { path: '/healthz', intervalMs: 300, timeoutMs: 250, healthyThreshold: 1, unhealthyThreshold: 1 }
  const sy = await app({ upstreams: { up: { targets: [{ url: good.url }, { url: bad.url }], tls: { ca: CA }, healthCheck: hc } }, routes: route })
  const rt = (id: string) => sy.dataplane.resources.targets.get(`up/${id}`)!
  await eventually(() => {
    expect(rt(good.id).health()).toEqual({ healthy: true })
    expect(rt(bad.id).health()).toMatchObject({ healthy: false, reason: expect.stringMatching(/^tls: DEPTH_ZERO_SELF_SIGNED_CERT/) as unknown })
  })
  for (let i = 0; i < 10; i++) expect((await hit(sy.proxyUrl + '/')).json()).toMatchObject({ name: 'good' })
})

it('a WebSocket to an https target goes over TLS', async () => {
  const b = await httpsBackend('wss', 'server')
  const sy = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA } } }, routes: route })
  const ws = new WebSocket(sy.proxyUrl.replace('http', 'ws') + '/ws')
  onTestFinished(() => ws.terminate())
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  ws.send('ping')
  expect(String(await new Promise((resolve) => ws.once('message', resolve)))).toBe('wss:ping')
})

it('validation names the file: a missing CA file, a listener key that is not a key', () => {
  const text = JSON.stringify({
    listen: { tls: { cert: fixture('server.pem'), key: fixture('ca.pem') } },
    upstreams: { up: { targets: [{ url: 'https://127.0.0.1:9' }], tls: { ca: '/nonexistent/ca.pem' } } },
    routes: route,
  })
  const { problems } = parseConfigText(text)
  expect(problems).toEqual([
    { path: 'upstreams.up.tls.ca', message: '/nonexistent/ca.pem: cannot read: ENOENT' },
    { path: 'listen.tls', message: `${fixture('ca.pem')}: no PEM private key in this file` },
  ])
})

/** The certificate a new TLS connection to `port` is shown (trusting the test CA). */
function certificateOf(port: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: pem('ca.pem'), ALPNProtocols: ['http/1.1'] }, () => {
      expect(s.alpnProtocol).toBe('http/1.1')
      resolve(s.getPeerCertificate())
      s.end()
    })
    s.once('error', reject)
  })
}

function get(url: string, agent: HttpsAgent | false): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { agent, ca: pem('ca.pem') }, (res) => {
      res.resume()
      res.once('end', () => resolve(res.statusCode!))
    })
    req.once('error', reject)
    req.end()
  })
}

async function listenerReload(workers: string[]) {
  const backend = await startBackend('plain')
  onTestFinished(() => backend.close())
  const dir = await mkdtemp(join(tmpdir(), 'switchyard-tls-'))
  const cert = join(dir, 'tls.pem')
  const key = join(dir, 'tls.key')
  await copyFile(fixture('server.pem'), cert)
  await copyFile(fixture('server.key'), key)
  const port = await freePort()
  const p = await spawnProxy(
    { listen: { host: '127.0.0.1', port, tls: { cert, key } }, upstreams: { up: { targets: [{ url: backend.url }] } }, routes: route },
    workers,
  )
  onTestFinished(() => p.stop().then(() => undefined))
  const url = `https://127.0.0.1:${port}`
  expect(p.ready.proxy).toBe(url)
  const first = await certificateOf(port)
  expect(first.subject.CN).toBe('switchyard test server')

  // Requests on keep-alive connections and on new ones, all through the reload.
  const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 4, ca: pem('ca.pem') })
  onTestFinished(() => keepAlive.destroy())
  let stop = false
  const outcomes = { ok: 0, failed: [] as string[] }
  const loop = async (agent: HttpsAgent | false) => {
    const until = performance.now() + 30_000
    while (!stop && performance.now() < until) {
      try {
        const status = await get(url + '/', agent)
        if (status === 200) outcomes.ok++
        else outcomes.failed.push(String(status))
      } catch (err) {
        outcomes.failed.push((err as Error).message)
      }
    }
  }
  const loops = [loop(keepAlive), loop(keepAlive), loop(false), loop(false)]
  await eventually(() => expect(outcomes.ok).toBeGreaterThan(20), { timeoutMs: 10_000 })

  await copyFile(fixture('server2.pem'), cert)
  await copyFile(fixture('server2.key'), key)
  p.child.kill('SIGHUP')
  // Single process: "SIGHUP: reloaded"; with workers, "SIGHUP: reload done" once every worker was replaced.
  await eventually(() => expect(p.stdout() + p.stderr()).toMatch(/SIGHUP: reload(ed|.*done)/), { timeoutMs: 20_000, intervalMs: 50 })
  for (let i = 0; i < 5; i++) expect((await certificateOf(port)).subject.CN).toBe('switchyard test server2')
  const after = outcomes.ok
  await eventually(() => expect(outcomes.ok).toBeGreaterThan(after + 20), { timeoutMs: 10_000 })

  // A broken new file is refused with a logged reason; the certificate in force keeps serving.
  await writeFile(key, 'not a key\n')
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stderr() + p.stdout()).toContain('no PEM private key'), { timeoutMs: 10_000 })
  expect((await certificateOf(port)).subject.CN).toBe('switchyard test server2')
  stop = true
  await Promise.all(loops)
  expect(outcomes.failed).toEqual([])
  expect(await get(url + '/', false)).toBe(200)
}

it('the TLS listener serves HTTPS; SIGHUP swaps in new certificate files with no failed request', async () => {
  await listenerReload([])
}, 60_000)

it('with --workers 2, SIGHUP brings the new certificate too (workers replaced), with no failed request', async () => {
  await listenerReload(['--workers', '2'])
}, 60_000)

it('a WebSocket upgrade works over the TLS listener', async () => {
  const backend = await startBackend('plain')
  onTestFinished(() => backend.close())
  const sy = await app({
    listen: { host: '127.0.0.1', port: 0, tls: { cert: fixture('server.pem'), key: fixture('server.key') } },
    upstreams: { up: { targets: [{ url: backend.url }] } },
    routes: route,
  })
  expect(sy.proxyUrl).toMatch(/^https:/)
  const ws = new WebSocket(sy.proxyUrl.replace('https', 'wss') + '/ws', { ca: pem('ca.pem') })
  onTestFinished(() => ws.terminate())
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  ws.send('hi')
  expect(String(await new Promise((resolve) => ws.once('message', resolve)))).toContain('hi')
})

it('TLS spoken to a plain HTTP port is a TLS error too', async () => {
  const plain = await startBackend('plain')
  onTestFinished(() => plain.close())
  const sy = await app({ upstreams: { up: { targets: [{ url: plain.url.replace('http:', 'https:') }] } }, routes: route })
  await expectTlsError(sy.proxyUrl)
})

it('the admin API refuses an upstream whose CA file cannot be read, and shows the TLS reason of a target', async () => {
  const b = await httpsBackend('self', 'self')
  const sy = await app({ upstreams: { up: { targets: [{ url: b.url }], tls: { ca: CA } } }, routes: route })
  const admin = adminClient(sy.adminUrl)
  const refused = await admin.put('/api/upstreams/up', { targets: [{ url: b.url }], tls: { ca: '/nonexistent/ca.pem' } })
  expect(refused.status).toBe(400)
  expect(refused.body).toMatchObject({ error: { code: 'VALIDATION_FAILED' } })
  expect(JSON.stringify(refused.body)).toContain('/nonexistent/ca.pem: cannot read: ENOENT')
  expect((await hit(sy.proxyUrl + '/')).status).toBe(502)
  const target = await admin.get(`/api/upstreams/up/targets/${b.id}`)
  expect(JSON.stringify(target.body)).toMatch(/"reason":"tls: DEPTH_ZERO_SELF_SIGNED_CERT/)
})
