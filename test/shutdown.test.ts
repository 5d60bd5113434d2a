import { request } from 'undici'
import { expect, it, onTestFinished } from 'vitest'
import { startBackend } from './helpers/backend.js'
import { refused } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { spawnProxy } from './helpers/proxy-process.js'

async function setup(shutdownTimeoutMs: number) {
  const b = await startBackend('slow')
  onTestFinished(() => b.close())
  const p = await spawnProxy({ shutdownTimeoutMs, upstreams: { v1: { targets: [{ url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  onTestFinished(() => p.stop('SIGKILL').then(() => undefined))
  return { b, p }
}

it('SIGTERM: stops accepting at once, finishes in-flight requests with Connection: close, exits 0', async () => {
  const { b, p } = await setup(10_000)
  const before = b.state.requests
  const inflight = request(p.url + '/delay?ms=800')
  await eventually(() => expect(b.state.requests).toBe(before + 1))
  const exit = p.stop('SIGTERM')
  await eventually(async () => expect(await refused(Number(new URL(p.url).port))).toBe(true), { timeoutMs: 3000 })
  const res = await inflight
  expect(res.statusCode).toBe(200)
  expect(res.headers.connection).toBe('close')
  expect(JSON.parse(await res.body.text())).toEqual({ name: 'slow' })
  expect(await exit).toBe(0)
})

it('SIGTERM: exits 1 when shutdownTimeoutMs cuts an in-flight request', async () => {
  const { b, p } = await setup(200)
  const before = b.state.requests
  const inflight = request(p.url + '/delay?ms=5000').then(
    (r) => r.body.text().then(() => 'answered'),
    () => 'cut',
  )
  await eventually(() => expect(b.state.requests).toBe(before + 1))
  expect(await p.stop('SIGTERM')).toBe(1)
  expect(await inflight).toBe('cut')
})

it('SIGHUP does not kill the proxy', async () => {
  const { p } = await setup(1000)
  p.child.kill('SIGHUP')
  await eventually(() => expect(p.stdout()).toContain('SIGHUP'))
  expect((await request(p.url + '/')).statusCode).toBe(200)
})
