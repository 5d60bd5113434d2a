/**
 * DNS target discovery against a real DNS server on a loopback UDP port (test/helpers/dns-server.ts)
 * and real backends on 127.0.0.2 / 127.0.0.3 (one port, A records), 127.0.0.1 (SRV ports) and ::1
 * (AAAA). Lookups every 100 ms keep it fast.
 */
import { createServer, type ServerResponse } from 'node:http'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { DnsDiscovery, State, UpstreamSpec } from '../src/config/schema.js'
import { TARGET_ID_PATTERN } from '../src/config/schema.js'
import { validateState } from '../src/config/validate.js'
import { discoveredId, discoveredUrl } from '../src/control/providers/dns-lookup.js'
import { effectiveState, type ProvidedTarget } from '../src/control/providers/provider.js'
import { startApp, type TestApp, type TestConfig } from './helpers/admin.js'
import { startDnsServer, type DnsServer } from './helpers/dns-server.js'
import { eventually } from './helpers/eventually.js'
import { memoryLogger } from './helpers/log.js'

interface HostBackend {
  name: string
  port: number
  /** requests other than health checks */
  requests: number
  /** requests to /hold waiting for release() */
  held: number
  /** what /healthz answers: 200 when true, 503 when false */
  healthy: boolean
  release(): void
}

/** A backend on `host` (any 127/8 address or ::1) answering `x-backend: name`; /hold waits for release(). */
async function hostBackend(name: string, host: string, port = 0): Promise<HostBackend> {
  const holding: ServerResponse[] = []
  const b: HostBackend = {
    name,
    port: 0,
    requests: 0,
    held: 0,
    healthy: true,
    release() {
      for (const res of holding.splice(0)) res.end(JSON.stringify({ name }))
    },
  }
  const server = createServer((req, res) => {
    res.setHeader('x-backend', name)
    if (req.url === '/healthz') {
      res.statusCode = b.healthy ? 200 : 503
      res.end()
      return
    }
    b.requests++
    if (req.url === '/hold') {
      b.held++
      holding.push(res)
      return
    }
    res.end(JSON.stringify({ name }))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  const addr = server.address()
  b.port = typeof addr === 'object' && addr !== null ? addr.port : port
  onTestFinished(
    () =>
      new Promise<void>((resolve) => {
        b.release()
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return b
}

/** Upstream v1 found by DNS (no static targets unless `extra` has some), route `api` → v1. */
function config(dns: DnsServer, spec: Partial<DnsDiscovery>, extra: Partial<UpstreamSpec> = {}): TestConfig {
  return {
    upstreams: {
      v1: { discovery: { dns: { name: 'api.test', refreshMs: 100, timeoutMs: 300, servers: [dns.address], ...spec } }, ...extra },
    },
    routes: [{ name: 'api', match: { pathPrefix: '/' }, split: { v1: 100 } }],
  }
}

/** Who answered `n` sequential requests through the proxy (statuses other than 200 throw). */
async function answers(t: TestApp, n: number, path = '/'): Promise<Set<string | null>> {
  const seen = new Set<string | null>()
  for (let i = 0; i < n; i++) {
    const res = await t.proxy(path)
    expect(res.status, res.body).toBe(200)
    seen.add(res.backend)
  }
  return seen
}

async function discovered(t: TestApp): Promise<{ id: string; state: string; source: string }[]> {
  const res = await t.admin.get('/api/upstreams/v1')
  expect(res.status).toBe(200)
  return res.body.discovered
}

async function metric(t: TestApp, name: string, labels: string): Promise<number | undefined> {
  const text = (await t.admin.get('/metrics')).body as string
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`))
  return line === undefined ? undefined : Number(line.split(' ').pop())
}

describe('DNS discovery', () => {
  it('turns A records into targets (source dns) shown in the API and metrics, without a revision', async () => {
    const b2 = await hostBackend('b2', '127.0.0.2')
    const b3 = await hostBackend('b3', '127.0.0.3', b2.port)
    const dns = await startDnsServer({ 'api.test': { A: ['127.0.0.2', '127.0.0.3'] } })
    const t = await startApp(config(dns, { port: b2.port }))
    const [id2, id3] = [`127.0.0.2:${b2.port}`, `127.0.0.3:${b2.port}`]

    // The first lookup is done before the instance serves.
    expect(await answers(t, 6)).toEqual(new Set(['b2', 'b3']))
    expect(await discovered(t)).toEqual([
      { id: id2, url: `http://127.0.0.2:${b2.port}`, state: 'active', source: 'dns' },
      { id: id3, url: `http://127.0.0.3:${b2.port}`, state: 'active', source: 'dns' },
    ])
    const target = await t.admin.get(`/api/upstreams/v1/targets/${id3}`)
    expect(target.body).toMatchObject({ revision: 1, upstream: 'v1', id: id3, state: 'active', source: 'dns', healthy: true, inflight: 0 })
    expect(await metric(t, 'switchyard_target_healthy', `upstream="v1",target="${id3}"`)).toBe(1)
    expect(await metric(t, 'switchyard_target_state', `upstream="v1",target="${id2}",state="active"`)).toBe(1)
    expect(await metric(t, 'switchyard_dns_lookups_total', 'upstream="v1",result="ok"')).toBeGreaterThan(0)

    // They are not the revisioned state: no revision, nothing in GET /api/state or the audit log.
    await eventually(async () => expect(dns.count()).toBeGreaterThan(4)) // a few refreshes went by
    const state = await t.admin.get('/api/state')
    expect(state.body.revision).toBe(1)
    expect(state.body.upstreams.v1.targets).toEqual([])
    expect((await t.admin.get('/api/events')).body.events).toEqual([])

    // Writes to a discovered target: 409, and nothing changes.
    for (const res of [
      await t.admin.patch(`/api/upstreams/v1/targets/${id3}`, { state: 'disabled' }),
      await t.admin.post(`/api/upstreams/v1/targets/${id3}/drain`),
      await t.admin.del(`/api/upstreams/v1/targets/${id3}?waitMs=100`),
    ]) {
      expect(res.status).toBe(409)
      expect(res.body.error.code).toBe('CONFLICT')
      expect(res.body.error.message).toContain('managed by DNS discovery')
    }
    expect((await t.admin.get('/api/state')).body.revision).toBe(1)
    expect(b3.requests).toBeGreaterThan(0)
  })

  it('drains a vanished address: its in-flight request finishes, no new one goes there, then it is dropped', async () => {
    const b2 = await hostBackend('b2', '127.0.0.2')
    const b3 = await hostBackend('b3', '127.0.0.3', b2.port)
    const dns = await startDnsServer({ 'api.test': { A: ['127.0.0.3'] } })
    const t = await startApp(config(dns, { port: b2.port }))
    const [id2, id3] = [`127.0.0.2:${b2.port}`, `127.0.0.3:${b2.port}`]

    const slow = t.proxy('/hold')
    await eventually(() => expect(b3.held).toBe(1))
    dns.set('api.test', { A: ['127.0.0.2'] })
    await eventually(async () =>
      expect((await discovered(t)).map((d) => [d.id, d.state])).toEqual([
        [id2, 'active'],
        [id3, 'draining'],
      ]),
    )
    expect((await t.admin.get(`/api/upstreams/v1/targets/${id3}`)).body).toMatchObject({ state: 'draining', source: 'dns', inflight: 1 })
    expect(await metric(t, 'switchyard_target_state', `upstream="v1",target="${id3}",state="draining"`)).toBe(1)
    expect(await answers(t, 10)).toEqual(new Set(['b2']))
    expect(b3.requests).toBe(1)

    b3.release()
    expect(await slow).toMatchObject({ status: 200, backend: 'b3' })
    await eventually(async () => expect((await discovered(t)).map((d) => d.id)).toEqual([id2]))
    expect((await t.admin.get(`/api/upstreams/v1/targets/${id3}`)).status).toBe(404)
    expect(await metric(t, 'switchyard_target_state', `upstream="v1",target="${id3}",state="draining"`)).toBeUndefined()
    expect((await t.admin.get('/api/state')).body.revision).toBe(1)
  })

  it('keeps the last good set when lookups fail (SERVFAIL, no answer, NXDOMAIN), logging once per streak', async () => {
    const b2 = await hostBackend('b2', '127.0.0.2')
    const dns = await startDnsServer({ 'api.test': { A: ['127.0.0.2'] } })
    const log = memoryLogger()
    const t = await startApp(config(dns, { port: b2.port, timeoutMs: 150 }), { logger: log.logger })
    const errors = () => metric(t, 'switchyard_dns_lookups_total', 'upstream="v1",result="error"')
    expect(await answers(t, 2)).toEqual(new Set(['b2']))

    dns.mode = 'servfail'
    await eventually(async () => expect(await errors()).toBeGreaterThanOrEqual(3))
    dns.mode = 'silent'
    const before = (await errors()) ?? 0
    await eventually(async () => expect(await errors()).toBeGreaterThanOrEqual(before + 2))
    dns.mode = 'answer'
    dns.zone.delete('api.test') // NXDOMAIN: no address is not a reason to drop every target
    await eventually(async () => expect(dns.queries.get('A api.test')).toBeGreaterThan(0))
    const nx = (await errors()) ?? 0
    await eventually(async () => expect(await errors()).toBeGreaterThanOrEqual(nx + 2))

    expect(await answers(t, 3)).toEqual(new Set(['b2']))
    expect((await discovered(t)).map((d) => d.state)).toEqual(['active'])
    const failed = log.find('DNS discovery lookup failed')
    expect(failed).toHaveLength(1)
    expect(failed[0]).toMatchObject({ level: 'warn', upstream: 'v1', name: 'api.test', code: 'ESERVFAIL', targets: 1 })
    expect(log.find('recovered')).toHaveLength(0)

    dns.set('api.test', { A: ['127.0.0.2'] })
    await eventually(() => expect(log.find('DNS discovery lookup recovered')).toHaveLength(1))
    expect(log.find('DNS discovery lookup recovered')[0]).toMatchObject({ level: 'info', upstream: 'v1' })
    dns.mode = 'servfail' // a new streak is logged again
    await eventually(() => expect(log.find('DNS discovery lookup failed')).toHaveLength(2))
    expect((await t.admin.get('/api/state')).body.revision).toBe(1)
  })

  it('lets a new address in only after its first passing health check', async () => {
    const b2 = await hostBackend('b2', '127.0.0.2')
    const b3 = await hostBackend('b3', '127.0.0.3', b2.port)
    b3.healthy = false
    const dns = await startDnsServer({ 'api.test': { A: ['127.0.0.2'] } })
    const t = await startApp(config(dns, { port: b2.port }, { healthCheck: { path: '/healthz', intervalMs: 100, timeoutMs: 50 } }))
    const id3 = `127.0.0.3:${b2.port}`
    await eventually(async () => expect(await answers(t, 1)).toEqual(new Set(['b2'])))

    dns.set('api.test', { A: ['127.0.0.2', '127.0.0.3'] })
    await eventually(async () => expect((await discovered(t)).map((d) => d.id)).toContain(id3))
    expect((await t.admin.get(`/api/upstreams/v1/targets/${id3}`)).body).toMatchObject({ state: 'active', healthy: false })
    expect(await answers(t, 10)).toEqual(new Set(['b2']))
    expect(b3.requests).toBe(0)

    b3.healthy = true
    await eventually(async () => expect((await t.admin.get(`/api/upstreams/v1/targets/${id3}`)).body.healthy).toBe(true))
    await eventually(async () => expect(await answers(t, 4)).toContain('b3'))
  })

  it('follows discovery changes made through the admin API: SRV ports by lowest priority, then back to static', async () => {
    const a = await hostBackend('a', '127.0.0.2')
    const s1 = await hostBackend('s1', '127.0.0.1')
    const s2 = await hostBackend('s2', '127.0.0.1')
    const backup = await hostBackend('backup', '127.0.0.1')
    const dns = await startDnsServer({
      'api.test': { A: ['127.0.0.2'] },
      '_http._tcp.api.test': {
        SRV: [
          { target: 's1.test', port: s1.port, priority: 10, weight: 5 },
          { target: 's2.test', port: s2.port, priority: 10, weight: 0 },
          { target: 'backup.test', port: backup.port, priority: 20 },
        ],
      },
      's1.test': { A: ['127.0.0.1'] },
      's2.test': { A: ['127.0.0.1'] },
      'backup.test': { A: ['127.0.0.1'] },
    })
    const t = await startApp(config(dns, { port: a.port }))
    expect(await answers(t, 2)).toEqual(new Set(['a']))

    const put = await t.admin.put('/api/upstreams/v1', {
      discovery: { dns: { name: '_http._tcp.api.test', type: 'SRV', refreshMs: 100, servers: [dns.address] } },
    })
    expect(put.status).toBe(200)
    expect(put.body.revision).toBe(2)
    await eventually(async () =>
      expect((await discovered(t)).map((d) => d.id).sort()).toEqual([`127.0.0.1:${s1.port}`, `127.0.0.1:${s2.port}`].sort()),
    )
    expect(await answers(t, 8)).toEqual(new Set(['s1', 's2']))
    expect(backup.requests).toBe(0)

    // Back to a static target: the discovered ones drain out and the view loses `discovered`.
    await t.admin.put('/api/upstreams/v1', { targets: [{ url: `http://127.0.0.2:${a.port}` }] })
    await eventually(async () => expect((await t.admin.get('/api/upstreams/v1')).body.discovered).toBeUndefined())
    expect(await answers(t, 3)).toEqual(new Set(['a']))
    expect((await t.admin.get('/api/state')).body.revision).toBe(3)
  })

  it('resolves AAAA records to [ip6]:port targets with ids that start with a digit', async () => {
    const b = await hostBackend('six', '::1')
    const dns = await startDnsServer({ 'api.test': { AAAA: ['::1'] } })
    const t = await startApp(config(dns, { type: 'AAAA', port: b.port }))
    expect(await answers(t, 2)).toEqual(new Set(['six']))
    const id = `0::1:${b.port}`
    expect(await discovered(t)).toEqual([{ id, url: `http://[::1]:${b.port}`, state: 'active', source: 'dns' }])
    expect((await t.admin.get(`/api/upstreams/v1/targets/${encodeURIComponent(id)}`)).body).toMatchObject({ id, source: 'dns', healthy: true })
  })

  it('lets a static target win over a discovered one with the same id', async () => {
    const b2 = await hostBackend('b2', '127.0.0.2')
    const b3 = await hostBackend('b3', '127.0.0.3', b2.port)
    const dns = await startDnsServer({ 'api.test': { A: ['127.0.0.2', '127.0.0.3'] } })
    const t = await startApp(config(dns, { port: b2.port }, { targets: [{ url: `http://127.0.0.2:${b2.port}`, state: 'disabled' }] }))
    expect(await answers(t, 6)).toEqual(new Set(['b3']))
    expect((await discovered(t)).map((d) => d.id)).toEqual([`127.0.0.3:${b3.port}`])
    expect((await t.admin.get(`/api/upstreams/v1/targets/127.0.0.2:${b2.port}`)).body).toMatchObject({ state: 'disabled' })
    expect((await t.admin.get(`/api/upstreams/v1/targets/127.0.0.2:${b2.port}`)).body.source).toBeUndefined()
    // The static one is the store's: it can be changed.
    expect((await t.admin.patch(`/api/upstreams/v1/targets/127.0.0.2:${b2.port}`, { state: 'active' })).status).toBe(200)
    await eventually(async () => expect(await answers(t, 6)).toEqual(new Set(['b2', 'b3'])))
  })
})

describe('DNS discovery config', () => {
  const up = (spec: Partial<DnsDiscovery>): UpstreamSpec => ({ discovery: { dns: { name: 'api.internal', ...spec } } })
  it.each<[string, UpstreamSpec, string[]]>([
    ['discovery without static targets', up({ port: 80 }), []],
    ['SRV without a port', up({ type: 'SRV', name: '_http._tcp.api.internal' }), []],
    ['servers with ports', up({ port: 80, servers: ['10.0.0.2', '10.0.0.3:5353', '[fd00::2]:53', 'fd00::3'] }), []],
    ['neither targets nor discovery', {}, ['upstreams.v1.targets: is required (or set discovery to find the targets in DNS)']],
    ['A without a port', up({}), ['upstreams.v1.discovery.dns.port: is required with type A (the port of the targets)']],
    ['SRV with a port', up({ type: 'SRV', port: 80 }), ['upstreams.v1.discovery.dns.port: must not be set with type SRV: each SRV record carries its port']],
    ['an IP as the name', up({ name: '10.0.0.5', port: 80 }), ['upstreams.v1.discovery.dns.name: is an IP address, not a DNS name: use a static target for it']],
    ['a bad name', up({ name: 'api..internal', port: 80 }), ['upstreams.v1.discovery.dns.name: must be a DNS name']],
    ['a name server by name', up({ port: 80, servers: ['10.0.0.2', 'ns.internal:53'] }), ['upstreams.v1.discovery.dns.servers[1]: must be an IP address']],
    ['a server port out of range', up({ port: 80, servers: ['10.0.0.2:70000'] }), ['upstreams.v1.discovery.dns.servers[0]: must be an IP address']],
  ])('%s', (_, upstream, expected) => {
    const problems = validateState({ upstreams: { v1: upstream }, routes: [{ name: 'api', split: { v1: 1 } }] }).map((p) => `${p.path}: ${p.message}`)
    expect(problems).toHaveLength(expected.length)
    expected.forEach((e, i) => expect(problems[i]).toContain(e))
  })

  it('is refused by PUT /api/upstreams with the problem path', async () => {
    const t = await startApp({ upstreams: { v1: { targets: [] } }, routes: [] })
    const res = await t.admin.put('/api/upstreams/v2', { discovery: { dns: { name: 'api.internal', type: 'SRV', port: 80 } } })
    expect(res.status).toBe(400)
    expect(res.body.error.details).toEqual([{ path: 'upstreams.v2.discovery.dns.port', message: expect.stringContaining('SRV') }])
    expect((await t.admin.get('/api/state')).body.revision).toBe(1)
  })

  it.each([
    ['127.0.0.2', 80, '127.0.0.2:80', 'http://127.0.0.2:80'],
    ['::1', 8080, '0::1:8080', 'http://[::1]:8080'],
    ['FD00:0:0:0::5', 80, 'fd00::5:80', 'http://[fd00::5]:80'],
    ['::ffff:10.0.0.1', 80, '0::ffff:a00:1:80', 'http://[::ffff:a00:1]:80'],
  ])('gives %s:%i the id %s', (address, port, id, url) => {
    expect(discoveredId(address, port)).toBe(id)
    expect(id).toMatch(new RegExp(TARGET_ID_PATTERN))
    expect(discoveredUrl(address, port)).toBe(url)
  })

  it('merges provided targets after the static ones; a static id wins; nothing provided → the same state', () => {
    const state: State = {
      revision: 4,
      upstreams: { v1: { targets: [{ id: 'x:1', url: 'http://x:1', state: 'draining' }] }, v2: { targets: [] } },
      routes: [],
      flags: {},
      rollouts: {},
    }
    const t = (id: string): ProvidedTarget => ({ id, url: `http://${id}`, state: 'active', source: 'dns' })
    expect(effectiveState(state, [{ targets: () => [] }])).toBe(state)
    const merged = effectiveState(state, [{ targets: (u) => (u === 'v1' ? [t('x:1'), t('y:1')] : []) }])
    expect(merged.revision).toBe(4)
    expect(merged.upstreams['v1']?.targets).toEqual([state.upstreams['v1']!.targets[0], t('y:1')])
    expect(merged.upstreams['v2']).toBe(state.upstreams['v2'])
    expect(state.upstreams['v1']?.targets).toHaveLength(1)
  })
})
