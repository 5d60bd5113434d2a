import { readFile, writeFile } from 'node:fs/promises'
import { Agent, request } from 'undici'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { refused } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { startLoad } from './helpers/load.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'
import { freePort } from './helpers/redis.js'

async function setup(extra: Record<string, unknown> = {}) {
  const b = await startBackend('r')
  onTestFinished(() => b.close())
  const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }], ...extra })
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  return p
}

/** Rewrites the running proxy's config file and sends SIGHUP; resolves with the SIGHUP lines printed. */
async function reload(p: ProxyProcess, change: (c: Record<string, unknown>) => void): Promise<string> {
  const config = JSON.parse(await readFile(p.configFile, 'utf8')) as Record<string, unknown>
  change(config)
  await writeFile(p.configFile, JSON.stringify(config))
  const before = p.stdout().length
  p.child.kill('SIGHUP')
  return eventually(() => {
    const out = p.stdout().slice(before)
    expect(out).toMatch(/SIGHUP: (reloaded|.*nothing changed)/)
    return out
  })
}

it('SIGHUP moves the proxy to a new port in place: the new one listens first, open connections are served to the end', async () => {
  const p = await setup()
  const agent = new Agent({ connections: 4 })
  onTestFinished(() => agent.close())
  const load = startLoad(p.url, { workers: 4, dispatcher: agent })
  await eventually(() => expect(load.count()).toBeGreaterThan(100))
  const oldPort = Number(new URL(p.url).port)
  const newPort = await freePort()
  const out = await reload(p, (c) => (c['listen'] = { host: '127.0.0.1', port: newPort }))
  expect(out).toContain(`proxy now listens on http://127.0.0.1:${newPort}`)
  expect((await request(`http://127.0.0.1:${newPort}/`)).statusCode).toBe(200)
  const atReload = load.count()
  await eventually(() => expect(load.count()).toBeGreaterThan(atReload + 100))
  // the kept-alive connections to the old port were never cut
  expect((await load.stop()).filter((r) => r !== 200)).toEqual([])
  expect(await refused(oldPort)).toBe(true)
})

it('SIGHUP changes admin tokens in place', async () => {
  const p = await setup()
  const get = (token: string) => request(p.adminUrl + '/api/state', { headers: { authorization: `Bearer ${token}` } }).then((r) => r.statusCode)
  const adminPort = Number(new URL(p.adminUrl).port)
  expect(await get('anything')).toBe(200) // no token configured yet
  const out = await reload(p, (c) => (c['admin'] = { host: '127.0.0.1', port: adminPort, tokens: { ci: 'secret-1' } }))
  expect(out).toContain('admin tokens')
  expect(await get('secret-1')).toBe(200)
  expect(await get('secret-2')).toBe(401)
  await reload(p, (c) => (c['admin'] = { host: '127.0.0.1', port: adminPort, tokens: { ci: 'secret-2' } }))
  expect(await get('secret-1')).toBe(401)
  expect(await get('secret-2')).toBe(200)
})

it('SIGHUP refuses a new store and a broken config, changing nothing', async () => {
  const p = await setup()
  let out = await reload(p, (c) => (c['store'] = { type: 'redis', url: 'redis://127.0.0.1:1' }))
  expect(out).toContain('changing the store needs a restart; nothing changed')
  out = await reload(p, (c) => (c['routes'] = [{ name: 'r', split: { v9: 1 } }]))
  expect(out).toContain('the config has problems; nothing changed')
  await eventually(() => expect(p.stderr()).toContain('routes[0].split.v9: unknown upstream "v9"'))
  expect((await request(p.url + '/')).statusCode).toBe(200)
})

it('SIGHUP moves the admin API to a new port in place', async () => {
  const p = await setup()
  const oldPort = Number(new URL(p.adminUrl).port)
  const newPort = await freePort()
  const out = await reload(p, (c) => (c['admin'] = { host: '127.0.0.1', port: newPort }))
  expect(out).toContain(`admin now listens on http://127.0.0.1:${newPort}`)
  expect((await request(`http://127.0.0.1:${newPort}/api/state`)).statusCode).toBe(200)
  await eventually(async () => expect(await refused(oldPort)).toBe(true))
})
