/**
 * Webhooks cannot be turned against the host: link-local targets (cloud metadata) refused at
 * write time and at connect time, webhook URLs redacted wherever the API or the logs show them,
 * and a signature over a timestamp that lets a receiver refuse replays. Real sockets: a real
 * receiver, a real DNS server for the names, the whole instance for the API.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { Resolver } from 'node:dns/promises'
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it, onTestFinished } from 'vitest'
import { Notifier, type Resolve } from '../src/rollout/notify.js'
import { newRollout, withDefaults } from '../src/rollout/plan.js'
import type { Notify, Rollout } from '../src/rollout/schema.js'
import { isLinkLocal, redactUrl } from '../src/rollout/webhook-url.js'
import { startApp, type TestApp } from './helpers/admin.js'
import { startDnsServer, type DnsServer } from './helpers/dns-server.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger, type MemoryLog } from './helpers/log.js'
import { statusBackend } from './helpers/status-backend.js'

interface Hit {
  path: string
  headers: IncomingHttpHeaders
  body: string
}

/** A webhook receiver on 127.0.0.1; `answer` may set the status (default 200). */
async function receiver(answer: (res: ServerResponse) => void = () => {}): Promise<{ port: number; url: string; hits: Hit[] }> {
  const hits: Hit[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d))
    req.on('end', () => {
      hits.push({ path: req.url ?? '', headers: req.headers, body })
      answer(res)
      res.end('ok')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  const port = (server.address() as AddressInfo).port
  return { port, url: `http://127.0.0.1:${port}/hook`, hits }
}

/** Names resolved by the test's DNS server (A and AAAA), as the system resolver would hand them over. */
function resolverVia(dns: DnsServer): Resolve {
  const r = new Resolver({ timeout: 1000, tries: 1 })
  r.setServers([dns.address])
  return async (name) => {
    const [a, aaaa] = await Promise.allSettled([r.resolve4(name), r.resolve6(name)])
    const out = [
      ...(a.status === 'fulfilled' ? a.value.map((address) => ({ address, family: 4 })) : []),
      ...(aaaa.status === 'fulfilled' ? aaaa.value.map((address) => ({ address, family: 6 })) : []),
    ]
    if (out.length === 0) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' })
    return out
  }
}

function notifier(resolve?: Resolve): { n: Notifier; log: MemoryLog } {
  const log = memoryLogger()
  const n = new Notifier({ log: log.logger, retryDelaysMs: [20, 40, 80], resolve })
  onTestFinished(() => n.close())
  return { n, log }
}

const rolloutWith = (notify: Notify[]): Rollout => newRollout(withDefaults({ route: 'api', from: 'v1', to: 'v2', notify }, 'r1'), Date.now())

/**
 * What a receiver does (the snippet of the user documentation): recompute the HMAC of
 * `timestamp + "." + body`, compare in constant time, and refuse a timestamp more than
 * `toleranceS` away from its own clock.
 */
function verify(secret: string, headers: IncomingHttpHeaders, body: string, nowS = Date.now() / 1000, toleranceS = 300): boolean {
  const timestamp = String(headers['x-switchyard-timestamp'] ?? '')
  const sent = String(headers['x-switchyard-signature'] ?? '')
  if (!/^\d+$/.test(timestamp) || Math.abs(nowS - Number(timestamp)) > toleranceS) return false
  const expected = Buffer.from('sha256=' + createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex'))
  const got = Buffer.from(sent)
  return got.length === expected.length && timingSafeEqual(got, expected)
}

describe('link-local targets', () => {
  it('the ranges: 169.254.0.0/16, fe80::/10 and the IPv4-mapped form; loopback and others pass', () => {
    for (const a of ['169.254.169.254', '169.254.0.1', '[fe80::1]', 'fe80::1%eth0', 'febf::1', '::ffff:169.254.169.254', '[::ffff:a9fe:a9fe]']) expect(isLinkLocal(a), a).toBe(true)
    for (const a of ['127.0.0.1', '::1', '10.0.0.1', '169.255.0.1', 'fec0::1', '::ffff:127.0.0.1', 'hooks.slack.com']) expect(isLinkLocal(a), a).toBe(false)
  })

  it('a rollout with a webhook at a link-local address is refused at write time: 400 with the path, nothing started', async () => {
    const v1 = await statusBackend('v1')
    const v2 = await statusBackend('v2')
    const a = await startApp({ upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } }, routes: [{ name: 'api', split: { v1: 100 } }] })
    const urls = [
      'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
      'http://[fe80::1]/hook',
      'http://[::ffff:169.254.169.254]/',
      'http://2852039166/', // 169.254.169.254 as one number: the URL parser reads it as the address
    ]
    for (const url of urls) {
      const res = await a.admin.post('/api/rollouts', { id: 'r1', route: 'api', from: 'v1', to: 'v2', notify: [{ url: 'http://127.0.0.1:1/ok' }, { url }] })
      expect(res.status, url).toBe(400)
      expect(res.body.error.code).toBe('VALIDATION_FAILED')
      expect(res.body.error.details).toEqual([{ path: 'body.notify[1].url', message: expect.stringContaining('link-local') }])
    }
    expect((await a.admin.get('/api/rollouts')).body.rollouts).toEqual([])
    expect((await a.admin.get('/api/routes/api')).body.split).toEqual({ v1: 100 })
  })
})

describe('connect time', () => {
  it('a name resolving to a link-local address is not connected to: logged, counted as failed, not retried', async () => {
    const rx = await receiver()
    const dns = await startDnsServer({
      'metadata.test': { A: ['169.254.169.254'] },
      // a loopback answer beside a link-local one: the connection could be made, and is not
      'mixed.test': { A: ['127.0.0.1'], AAAA: ['::ffff:169.254.169.254'] },
    })
    const { n, log } = notifier(resolverVia(dns))
    n.notify(rolloutWith([{ url: `http://metadata.test:${rx.port}/latest/meta-data/` }, { url: `http://mixed.test:${rx.port}/hook?token=t0` }]), 'started', 'go')
    await eventually(() => expect(n.failed).toBe(2))
    expect(n.sent).toBe(0)
    expect(rx.hits).toEqual([])
    const refused = log.find('webhook refused: link-local target')
    expect(refused).toHaveLength(2)
    expect(refused.map((l) => l.cause).sort()).toEqual([
      'metadata.test resolves to link-local 169.254.169.254; not connected',
      'mixed.test resolves to link-local ::ffff:169.254.169.254; not connected',
    ])
    for (const l of refused) expect(l.attempts).toBe(1)
    // one lookup per name: a refusal is not asked again
    expect(dns.queries.get('A metadata.test')).toBe(1)
    expect(log.find('retrying')).toEqual([])
  })

  it('a link-local address written in the URL (past the write-time check) is refused before any socket', async () => {
    const { n, log } = notifier()
    n.notify(rolloutWith([{ url: 'http://169.254.169.254/latest/meta-data/' }, { url: 'http://[fe80::1]:8080/x' }]), 'started', 'go')
    await eventually(() => expect(n.failed).toBe(2))
    expect(log.find('webhook refused: link-local target').map((l) => l.cause).sort()).toEqual(['169.254.169.254 is link-local; not connected', 'fe80::1 is link-local; not connected'])
  })

  it('a name resolving to loopback is delivered; once it resolves to the metadata address, a new connection is refused', async () => {
    // Each delivery on its own connection, so each one looks the name up again.
    const rx = await receiver((res) => res.setHeader('connection', 'close'))
    const dns = await startDnsServer({ 'hooks.test': { A: ['127.0.0.1'] } })
    const { n, log } = notifier(resolverVia(dns))
    const r = rolloutWith([{ url: `http://hooks.test:${rx.port}/hook` }])
    n.notify(r, 'started', 'one')
    await eventually(() => expect(n.sent).toBe(1))
    expect(rx.hits.map((h) => [h.path, h.headers.host])).toEqual([['/hook', `hooks.test:${rx.port}`]])
    dns.set('hooks.test', { A: ['169.254.169.254'] })
    n.notify(r, 'promoted', 'two')
    await eventually(() => expect(n.failed).toBe(1))
    expect(rx.hits).toHaveLength(1)
    expect(log.find('webhook refused: link-local target').map((l) => l.cause)).toEqual(['hooks.test resolves to link-local 169.254.169.254; not connected'])
  })
})

describe('signature', () => {
  it('covers X-Switchyard-Timestamp: a receiver verifies a fresh delivery and refuses a replay, a changed timestamp or body', async () => {
    const rx = await receiver()
    const { n } = notifier()
    n.notify(rolloutWith([{ url: rx.url, secret: 'whsec-test' }]), 'started', 'go')
    await eventually(() => expect(n.sent).toBe(1))
    const { headers, body } = rx.hits[0]!
    const timestamp = Number(headers['x-switchyard-timestamp'])
    expect(Math.abs(timestamp - Date.now() / 1000)).toBeLessThan(60)
    expect(verify('whsec-test', headers, body)).toBe(true)
    // the same request replayed ten minutes later: outside the 5-minute window
    expect(verify('whsec-test', headers, body, timestamp + 600)).toBe(false)
    // a replay with the timestamp moved forward: the signature no longer matches
    expect(verify('whsec-test', { ...headers, 'x-switchyard-timestamp': String(timestamp + 600) }, body, timestamp + 600)).toBe(false)
    expect(verify('whsec-test', headers, body.replace('"started"', '"aborted"'))).toBe(false)
    expect(verify('another-secret', headers, body)).toBe(false)
    // not the body alone any more
    expect(headers['x-switchyard-signature']).not.toBe('sha256=' + createHmac('sha256', 'whsec-test').update(body).digest('hex'))
  })

  it('each attempt is signed with its own timestamp', async () => {
    let calls = 0
    const rx = await receiver((res) => {
      if (++calls === 1) res.statusCode = 500
    })
    const { n } = notifier()
    n.notify(rolloutWith([{ url: rx.url, secret: 's' }]), 'step', 'x')
    await eventually(() => expect(n.sent).toBe(1))
    expect(rx.hits).toHaveLength(2)
    for (const h of rx.hits) expect(verify('s', h.headers, h.body)).toBe(true)
  })
})

describe('redaction', () => {
  it('redactUrl keeps scheme, host and port', () => {
    expect(redactUrl('https://hooks.slack.com/services/T000/B000/XXXX?x=1#f')).toBe('https://hooks.slack.com/***')
    expect(redactUrl('http://user:pw@127.0.0.1:8080/a')).toBe('http://127.0.0.1:8080/***')
    expect(redactUrl('not a url')).toBe('***')
  })

  async function withRollout(): Promise<{ a: TestApp; rx: Awaited<ReturnType<typeof receiver>>; url: string; log: MemoryLog }> {
    const rx = await receiver()
    const v1 = await statusBackend('v1')
    const v2 = await statusBackend('v2')
    const log = memoryLogger()
    const a = await startApp(
      { upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } }, routes: [{ name: 'api', split: { v1: 100 } }] },
      { logger: log.logger },
    )
    const url = `http://127.0.0.1:${rx.port}/services/T000/B000/PATHSECRET?token=QUERYSECRET`
    const started = await a.admin.post('/api/rollouts', { id: 'r1', route: 'api', from: 'v1', to: 'v2', steps: [{ weight: 10 }], notify: [{ url, secret: 'SIGNSECRET' }] })
    expect(started.status).toBe(201)
    expect(JSON.stringify(started.body)).not.toMatch(/PATHSECRET|QUERYSECRET|SIGNSECRET/)
    expect(started.body.spec.notify).toEqual([{ url: `http://127.0.0.1:${rx.port}/***`, secret: '***' }])
    return { a, rx, url, log }
  }

  it('GET rollouts, a rollout, the state and the audit log show the URL cut to its host; the webhook still goes to the real URL', async () => {
    const { a, rx, log } = await withRollout()
    const shown = `http://127.0.0.1:${rx.port}/***`
    const list = await a.admin.get('/api/rollouts')
    const one = await a.admin.get('/api/rollouts/r1')
    const state = await a.admin.get('/api/state')
    const events = await a.admin.get('/api/events?limit=1000')
    for (const res of [list, one, state, events]) {
      expect(res.status).toBe(200)
      expect(JSON.stringify(res.body)).not.toMatch(/PATHSECRET|QUERYSECRET|SIGNSECRET/)
    }
    expect(list.body.rollouts[0].spec.notify[0].url).toBe(shown)
    expect(one.body.spec.notify[0].url).toBe(shown)
    expect(state.body.rollouts.r1.spec.notify[0].url).toBe(shown)
    const start = (events.body.events as { action: string; after: any }[]).find((e) => e.action === 'rollout.start')
    expect(start?.after.spec.notify[0].url).toBe(shown)
    // the record keeps the real URL: the started event arrived there
    await eventually(() => expect(rx.hits.map((h) => h.path)).toEqual(['/services/T000/B000/PATHSECRET?token=QUERYSECRET']))
    expect(JSON.stringify(log.lines())).not.toMatch(/PATHSECRET|QUERYSECRET|SIGNSECRET/)
  })

  it('a spec posted back as it was read (redacted URL or secret) is refused, not stored over the real one', async () => {
    const { a } = await withRollout()
    expect((await a.admin.post('/api/rollouts/r1/abort')).status).toBe(200)
    const read = (await a.admin.get('/api/rollouts/r1')).body.spec
    const again = await a.admin.post('/api/rollouts', { ...read, id: 'r2' })
    expect(again.status).toBe(400)
    expect(again.body.error.code).toBe('VALIDATION_FAILED')
    expect(again.body.error.details.map((d: { path: string }) => d.path)).toEqual(['body.notify[0].url', 'body.notify[0].secret'])
    expect(again.body.error.message).toContain('redacted')
    expect(Object.keys((await a.admin.get('/api/state')).body.rollouts)).toEqual(['r1'])
  })

  it('delivery logs show the redacted URL: failures, give-ups and refusals', async () => {
    const rx = await receiver((res) => (res.statusCode = 503))
    const dns = await startDnsServer({ 'metadata.test': { A: ['169.254.169.254'] } })
    const { n, log } = notifier(resolverVia(dns))
    n.notify(rolloutWith([{ url: `${rx.url}/PATHSECRET?token=QUERYSECRET` }, { url: `http://metadata.test:${rx.port}/PATHSECRET` }]), 'failed', 'x')
    await eventually(() => expect(n.failed).toBe(2))
    const lines = log.lines().filter((l) => typeof l.msg === 'string' && l.msg.startsWith('webhook'))
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['webhook failed; retrying', 'webhook failed; giving up', 'webhook refused: link-local target; giving up']))
    expect(new Set(lines.map((l) => l.url))).toEqual(new Set([`http://127.0.0.1:${rx.port}/***`, `http://metadata.test:${rx.port}/***`]))
    expect(JSON.stringify(log.lines())).not.toMatch(/PATHSECRET|QUERYSECRET/)
  })
})
