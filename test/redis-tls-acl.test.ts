/**
 * The Redis store over TLS with an ACL user, against a real `redis-server` that listens only on
 * a TLS port (certificates made by openssl into the test's folder) and whose default user has a
 * password: a fleet of two instances connects as a least-privileged user, writes and follows;
 * a wrong password or an untrusted CA makes `switchyard start` exit 1 at once with one clear
 * line, and never prints the password.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { State } from '../src/config/schema.js'
import { RedisStore } from '../src/store/redis.js'
import { backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { CLI, spawnProxy } from './helpers/proxy-process.js'
import { startTlsRedis, tlsRedisProblem, type TlsRedis } from './helpers/redis-tls.js'

const problem = tlsRedisProblem()
if (problem !== null) process.stderr.write(`redis-tls-acl.test.ts skipped: ${problem}\n`)

const PREFIX = 'sy-tls'
const USER = 'sy'
const PASSWORD = 'Tls-Acl-Test-Password-8d1f3c'

/**
 * The least the store needs (documented with the store's config): its keys and its one channel
 * only, and only the commands it sends, directly, in MULTI pipelines and inside its Lua scripts
 * (Redis checks a script's commands and keys against the caller's ACL too). `info` is ioredis's
 * ready check; `client|setname` names each connection.
 */
const STORE_COMMANDS = [
  ...['info', 'client|setname', 'quit', 'evalsha', 'eval', 'subscribe', 'unsubscribe', 'publish', 'multi', 'exec'],
  ...['get', 'set', 'del', 'exists', 'pexpire', 'hset', 'hdel', 'hexists', 'hgetall', 'hmget', 'lpush', 'ltrim', 'lrange'],
  ...['sadd', 'srem', 'smembers', 'zadd', 'zrangebyscore', 'zremrangebyscore'],
]
const STORE_ACL = ['reset', 'on', `>${PASSWORD}`, `~{${PREFIX}}:*`, 'resetchannels', `&{${PREFIX}}:changes`, '-@all', ...STORE_COMMANDS.map((c) => `+${c}`)]

describe.skipIf(problem !== null)('Redis over TLS with an ACL user', () => {
  let redis: TlsRedis
  let dir: string

  beforeAll(async () => {
    redis = await startTlsRedis()
    await redis.setUser(USER, STORE_ACL)
    dir = await mkdtemp(join(tmpdir(), 'switchyard-tls-acl-'))
  })
  afterAll(async () => {
    await redis?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  const url = (password = PASSWORD) => `rediss://${USER}:${password}@127.0.0.1:${redis.port}`

  async function revisions(apps: TestApp[]): Promise<number[]> {
    return Promise.all(apps.map(async (a) => (await a.admin.get<State>('/api/state')).body.revision))
  }
  async function splits(apps: TestApp[]): Promise<unknown[]> {
    return Promise.all(apps.map(async (a) => (await a.admin.get<State>('/api/state')).body.routes.find((r) => r.name === 'api')?.split))
  }

  it('two instances connect as the ACL user over TLS; a write through one is applied by both, under load, with no ACL denial', async () => {
    await redis.admin.call('ACL', 'LOG', 'RESET')
    const config = {
      ...twoVersions(await backend('v1'), await backend('v2')),
      store: { type: 'redis' as const, url: url(), prefix: PREFIX, options: { tls: { ca: redis.certs.caPem } } },
    }
    const opts = { resyncMs: 100, heartbeatMs: 100 }
    const a = await startApp(config, opts)
    const b = await startApp(config, opts)
    await eventually(async () => expect(await revisions([a, b])).toEqual([1, 1]))
    // Both connections of each instance are authenticated as `sy`, over TLS (the server has no plain port).
    const clients = String(await redis.admin.call('CLIENT', 'LIST'))
    const mine = clients.split('\n').filter((l) => l.includes(`name=switchyard:${PREFIX}:`))
    expect(mine).toHaveLength(4)
    for (const line of mine) expect(line).toMatch(/ user=sy /)

    const load = startLoad(b.app.proxyUrl, { workers: 4, maxMs: 15_000 })
    const res = await a.admin.put('/api/routes/api/split', { v1: 0, v2: 100 })
    expect(res.status).toBe(200)
    await eventually(async () => {
      expect(await revisions([a, b])).toEqual([2, 2])
      expect(await splits([a, b])).toEqual([{ v1: 0, v2: 100 }, { v1: 0, v2: 100 }])
    })
    await eventually(async () => expect((await b.proxy('/')).backend).toBe('v2'))
    // The registry, listed through the other instance: both are registered with the store.
    await eventually(async () => expect((await b.admin.get<{ instances: unknown[] }>('/api/instances')).body.instances).toHaveLength(2))
    const results = await load.stop()
    expect(results.length).toBeGreaterThan(0)
    expect(results.filter((r) => r !== 200)).toEqual([])

    // The same state under the user's keys, and nothing the store sent was refused by the ACL.
    expect(await redis.admin.get(`{${PREFIX}}:revision`)).toBe('2')
    const denied = (await redis.admin.call('ACL', 'LOG')) as unknown[][]
    expect(denied.map((entry) => entry.map(String).join(' '))).toEqual([])
  })

  it('every store operation works within the ACL; the user can reach nothing beyond its prefix and channel', async () => {
    await redis.admin.call('ACL', 'LOG', 'RESET')
    const store = new RedisStore({ url: url(), prefix: PREFIX, options: { tls: { ca: redis.certs.caPem } } })
    await store.open()
    try {
      // What test 1 did not go through: change log reads, the audit log, leases, telemetry, unregistering.
      const revision = (await store.revision()) ?? 0
      expect(await store.changesSince(Math.max(0, revision - 1))).not.toBeUndefined()
      await store.events(10)
      expect(await store.lease('acl-check', 'me', 5_000)).toBe(true)
      expect(await store.lease('acl-check', 'me', 5_000)).toBe(true) // the renew script
      expect(await store.leaseHolder('acl-check')).toBe('me')
      expect(await store.releaseLease('acl-check', 'me')).toBe(true)
      await store.register({ id: 'acl-check', host: 'h', pid: 1, appliedRevision: revision, inflight: {} }, 5_000)
      expect((await store.instances()).map((i) => i.id)).toContain('acl-check')
      await store.unregister('acl-check')
      await store.pushTelemetry({ instance: 'acl-check', at: Date.now(), periodMs: 1_000, series: [] }, 60_000)
      expect((await store.telemetry(0)).map((t) => t.instance)).toContain('acl-check')
      const current = await store.load()
      expect(current?.revision).toBe(revision)
      expect(await store.seed(current!)).toBe(false) // not below the store's revision: refused, by the script
    } finally {
      await store.close()
    }
    const denied = (await redis.admin.call('ACL', 'LOG')) as unknown[][]
    expect(denied.map((entry) => entry.map(String).join(' '))).toEqual([])

    // Least privilege: another key, another channel, an admin command are all refused.
    const { Redis } = await import('ioredis')
    const user = new Redis(url(), { tls: { ca: redis.certs.caPem }, lazyConnect: true, maxRetriesPerRequest: 1 })
    user.on('error', () => {})
    await user.connect()
    try {
      await expect(user.get('other-app:secret')).rejects.toThrow(/NOPERM/)
      await expect(user.publish('other-channel', 'x')).rejects.toThrow(/NOPERM/)
      await expect(user.call('FLUSHALL')).rejects.toThrow(/NOPERM/)
      await expect(user.call('CONFIG', 'GET', 'requirepass')).rejects.toThrow(/NOPERM/)
      await expect(user.call('KEYS', '*')).rejects.toThrow(/NOPERM/)
    } finally {
      user.disconnect()
    }
  })

  it('a user without the changes channel cannot open the store, and is told which permission is missing', async () => {
    await redis.setUser('sy-nochannel', STORE_ACL.map((rule) => (rule === `&{${PREFIX}}:changes` ? '&other:*' : rule)))
    const store = new RedisStore({ url: `rediss://sy-nochannel:${PASSWORD}@127.0.0.1:${redis.port}`, prefix: PREFIX, options: { tls: { ca: redis.certs.caPem } }, openTimeoutMs: 1_000 })
    const err = await store.open().then(() => null, (e: unknown) => e as Error & { code?: string })
    expect(err?.code).toBe('STORE_UNAVAILABLE')
    expect(err?.message).toMatch(/^redis refused a command the store needs \(the ACL user's permissions\): NOPERM .*channel/)
    expect(err?.message).not.toContain(PASSWORD)
  })

  // These spawn dist/cli.js: `npm run build` first.
  describe('switchyard start (dist/cli.js) on this store', () => {
    /** Runs `dist/cli.js start` on `store`, to its exit (bounded: a start that hangs fails the test). */
    async function start(store: string, name: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
      const file = join(dir, `${name}.yaml`)
      await writeFile(
        file,
        `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
store: ${store}
upstreams: { v1: { targets: [ { url: "http://127.0.0.1:9" } ] } }
routes: [ { name: api, split: { v1: 1 } } ]
`,
      )
      const child = spawn(process.execPath, [CLI, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, REDIS_CA: redis.certs.caPem } })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)))
      clearTimeout(timer)
      return { code, stdout, stderr }
    }

    it('starts with the password and the CA from the environment, and prints neither', async () => {
      const proxy = await spawnProxy(
        {
          store: { type: 'redis', url: `rediss://${USER}:\${REDIS_PASSWORD}@127.0.0.1:${redis.port}`, prefix: PREFIX, options: { tls: { ca: '${REDIS_CA}' } } },
          upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:9' }] } },
          routes: [{ name: 'api', split: { v1: 1 } }],
        },
        [],
        [],
        { REDIS_PASSWORD: PASSWORD, REDIS_CA: redis.certs.caPem },
      )
      try {
        expect(proxy.ready.store).toBe('redis')
        const state = (await (await fetch(`${proxy.adminUrl}/api/state`)).json()) as State
        expect(state.revision).toBe(Number(await redis.admin.get(`{${PREFIX}}:revision`)))
      } finally {
        expect(await proxy.stop()).toBe(0)
      }
      expect(proxy.stdout() + proxy.stderr()).not.toContain(PASSWORD)
    })

    it('trusts a CA given by path through NODE_EXTRA_CA_CERTS, with the user and password in store.options instead of the URL', async () => {
      const proxy = await spawnProxy(
        {
          store: { type: 'redis', url: `rediss://127.0.0.1:${redis.port}`, prefix: PREFIX, options: { username: USER, password: '${REDIS_PASSWORD}' } },
          upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:9' }] } },
          routes: [{ name: 'api', split: { v1: 1 } }],
        },
        [],
        [],
        { REDIS_PASSWORD: PASSWORD, NODE_EXTRA_CA_CERTS: redis.certs.caFile },
      )
      try {
        const state = (await (await fetch(`${proxy.adminUrl}/api/state`)).json()) as State
        expect(state.revision).toBe(Number(await redis.admin.get(`{${PREFIX}}:revision`)))
      } finally {
        expect(await proxy.stop()).toBe(0)
      }
      expect(proxy.stdout() + proxy.stderr()).not.toContain(PASSWORD)
    })

    it('a wrong password: exit 1, one line naming the rejected credentials, the password not printed', async () => {
      const wrong = 'Wrong-Password-Never-Printed-41c7'
      const run = await start(`{ type: redis, url: "${url(wrong)}", prefix: ${PREFIX}, options: { tls: { ca: "\${REDIS_CA}" } } }`, 'wrong-password')
      expect(run.code, run.stderr).toBe(1)
      expect(run.stderr).toMatch(/^switchyard: cannot start: redis refused the login \(the user and password in store.url or store.options\): WRONGPASS/m)
      expect(run.stderr).not.toContain(wrong)
      expect(run.stdout).not.toContain(wrong)
      expect(run.stderr).not.toMatch(/\n\s+at /) // no stack trace
    })

    it('an untrusted CA: exit 1, one line naming the certificate problem', async () => {
      const run = await start(`{ type: redis, url: "${url()}", prefix: ${PREFIX}, options: { tls: { ca: ${JSON.stringify(redis.certs.otherCaPem)} } } }`, 'untrusted-ca')
      expect(run.code, run.stderr).toBe(1)
      expect(run.stderr).toMatch(/^switchyard: cannot start: TLS handshake with redis failed \(the server's certificate against store.options.tls\): SELF_SIGNED_CERT_IN_CHAIN: /m)
      expect(run.stderr).not.toContain(PASSWORD)
      expect(run.stdout).not.toContain(PASSWORD)
      expect(run.stderr).not.toMatch(/\n\s+at /)
    })
  })
})
