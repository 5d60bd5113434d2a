import { readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:net'
import { Agent, request } from 'undici'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'
import { refused } from './helpers/client.js'
import { freePort, startRedis } from './helpers/redis.js'

interface Instance {
  id: string
  pid: number
  appliedRevision: number
}

async function instances(p: ProxyProcess): Promise<Instance[]> {
  // a short timeout: a keep-alive socket to a worker that was just killed must not stall the poll
  const res = await request(p.adminUrl + '/api/instances', { headersTimeout: 2_000, bodyTimeout: 2_000, reset: true })
  return ((await res.body.json()) as { instances: Instance[] }).instances
}

/** Waits until both workers are registered in the fleet; resolves with them. */
function twoInstances(p: ProxyProcess): Promise<Instance[]> {
  return eventually(async () => {
    const list = await instances(p)
    expect(list).toHaveLength(2)
    return list
  })
}

/** PUT route r's split through whichever worker answers, waiting until the fleet applied it. */
function putSplit(p: ProxyProcess, split: Record<string, number>) {
  return request(p.adminUrl + '/api/routes/r/split?waitApplied=3000', {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(split),
  })
}

async function cluster(workers = 2) {
  const b = await startBackend('w')
  onTestFinished(() => b.close())
  const p = await spawnProxy(
    { shutdownTimeoutMs: 5_000, upstreams: { v1: { targets: [{ url: b.url }] }, v2: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] },
    ['--workers', String(workers)],
  )
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  return { b, p }
}

it('--workers 2 with the memory store: two instances share the ports and one state; SIGTERM exits 0', async () => {
  const { p } = await cluster(2)
  await eventually(async () => expect(new Set((await instances(p)).map((i) => i.pid)).size).toBe(2))
  expect(p.ready.workers).toBe(2)
  // a write through whichever worker answers is applied by both (the primary holds the state)
  const put = await putSplit(p, { v1: 0, v2: 1 })
  expect(put.statusCode).toBe(200)
  const { revision } = (await put.body.json()) as { revision: number }
  for (const i of await instances(p)) expect(i.appliedRevision).toBe(revision)
  for (let k = 0; k < 20; k++) expect((await request(p.url + '/')).statusCode).toBe(200)
  expect(await p.stop('SIGTERM')).toBe(0)
})

it('SIGHUP replaces the workers one by one under keep-alive load: no request fails, the state stays', async () => {
  const { p } = await cluster(2)
  const before = await twoInstances(p)
  const put = await putSplit(p, { v1: 1, v2: 1 })
  const { revision } = (await put.body.json()) as { revision: number }
  const agent = new Agent({ connections: 8 })
  onTestFinished(() => agent.close())
  const load = startLoad(p.url, { workers: 8, dispatcher: agent, maxMs: 30_000 })
  await eventually(() => expect(load.count()).toBeGreaterThan(200), { timeoutMs: 10_000 })
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain('reload done'), { timeoutMs: 25_000, intervalMs: 50 })
  const atReload = load.count()
  await eventually(() => expect(load.count()).toBeGreaterThan(atReload + 200), { timeoutMs: 10_000 })
  expect((await load.stop()).filter((r) => r !== 200)).toEqual([])
  const after = await twoInstances(p)
  const oldPids = new Set(before.map((i) => i.pid))
  for (const i of after) {
    expect(oldPids.has(i.pid)).toBe(false)
    expect(i.appliedRevision).toBe(revision)
  }
})

it('SIGHUP with new proxy and admin ports: the new workers serve them, the old ports close with the old workers', async () => {
  const { p } = await cluster(2)
  const before = await twoInstances(p)
  const config = JSON.parse(await readFile(p.configFile, 'utf8')) as { listen: { port: number }; admin: { port: number } }
  const [port, adminPort] = [await freePort(), await freePort()]
  await writeFile(p.configFile, JSON.stringify({ ...config, listen: { ...config.listen, port }, admin: { ...config.admin, port: adminPort } }))
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain('reload done'), { timeoutMs: 25_000, intervalMs: 50 })
  expect(p.stdout()).toContain(`SIGHUP: new workers serve proxy http://127.0.0.1:${port} admin http://127.0.0.1:${adminPort}`)
  expect((await request(`http://127.0.0.1:${port}/`, { reset: true })).statusCode).toBe(200)
  const res = await request(`http://127.0.0.1:${adminPort}/api/instances`, { reset: true })
  const pids = ((await res.body.json()) as { instances: Instance[] }).instances.map((i) => i.pid)
  for (const i of before) expect(pids).not.toContain(i.pid)
  await eventually(async () => expect(await refused(config.listen.port)).toBe(true))
  await eventually(async () => expect(await refused(config.admin.port)).toBe(true))
})

it('SIGHUP with a proxy port that cannot be bound changes nothing', async () => {
  const { p } = await cluster(2)
  const before = await twoInstances(p)
  const blocker: Server = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  onTestFinished(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const taken = (blocker.address() as { port: number }).port
  const config = JSON.parse(await readFile(p.configFile, 'utf8')) as { listen: { port: number } }
  await writeFile(p.configFile, JSON.stringify({ ...config, listen: { ...config.listen, port: taken } }))
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain(`SIGHUP: listen EADDRINUSE: address already in use 127.0.0.1:${taken}; nothing changed`))
  expect((await instances(p)).map((i) => i.pid).sort()).toEqual(before.map((i) => i.pid).sort())
  expect((await request(p.url + '/', { reset: true })).statusCode).toBe(200)
})

it('SIGHUP with a broken config changes nothing', async () => {
  const { p } = await cluster(2)
  const before = await twoInstances(p)
  await writeFile(p.configFile, '{"routes": [{"name": "r", "split": {"v9": 1}}], "upstreams": {}}')
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain('nothing changed'))
  // stdout and stderr are two pipes: the problems may arrive a moment after the summary line
  await eventually(() => expect(p.stderr()).toContain('routes[0].split.v9: unknown upstream "v9"'))
  expect((await instances(p)).map((i) => i.pid).sort()).toEqual(before.map((i) => i.pid).sort())
  expect((await request(p.url + '/')).statusCode).toBe(200)
})

it('a worker that dies is replaced', { timeout: 45_000 }, async () => {
  const { p } = await cluster(2)
  const before = await twoInstances(p)
  process.kill(before[0]!.pid, 'SIGKILL')
  await eventually(
    async () => {
      const pids = (await instances(p)).map((i) => i.pid)
      expect(pids).toHaveLength(2)
      expect(pids).not.toContain(before[0]!.pid)
    },
    // the replacement starts after 1 s; the dead worker leaves the registry when its 5 s TTL ends
    { timeoutMs: 25_000, intervalMs: 100 },
  )
})

it('--workers 2 with Redis: each worker follows Redis and registers in the fleet', async () => {
  const redis = await startRedis()
  onTestFinished(() => redis.stop())
  const b = await startBackend('w')
  onTestFinished(() => b.close())
  const p = await spawnProxy(
    {
      store: { type: 'redis', url: redis.url, prefix: 'workers-test' },
      upstreams: { v1: { targets: [{ url: b.url }] }, v2: { targets: [{ url: b.url }] } },
      routes: [{ name: 'r', split: { v1: 1 } }],
    },
    ['--workers', '2'],
  )
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  expect(p.ready).toMatchObject({ store: 'redis', workers: 2 })
  await eventually(async () => expect(new Set((await instances(p)).map((i) => i.pid)).size).toBe(2))
  const put = await putSplit(p, { v2: 1 })
  expect(put.statusCode).toBe(200)
  const { revision } = (await put.body.json()) as { revision: number }
  for (const i of await instances(p)) expect(i.appliedRevision).toBe(revision)
  expect(await p.stop('SIGTERM')).toBe(0)
})
