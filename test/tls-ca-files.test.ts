/**
 * `tls.ca` paths come from admin writes (and the store), so they may name anything. They were
 * read with readFileSync on the event loop: a FIFO blocked the whole instance until someone
 * wrote to it, /dev/zero read until memory ran out. Now only regular files of at most 1 MiB
 * are read, asynchronously, before anything is compiled; anything else is refused with the
 * path and the reason, and the instance keeps serving. (Store reads: store-trust.redis.test.ts.)
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, afterAll, expect, it, onTestFinished } from 'vitest'
import { parseConfigText } from '../src/config/load.js'
import { MAX_PEM_BYTES } from '../src/config/tls-files.js'
import { backend, startApp, type TestApp } from './helpers/admin.js'
import { hit } from './helpers/client.js'

const FIXTURES = fileURLToPath(new URL('./fixtures/tls/', import.meta.url))
const CA = join(FIXTURES, 'ca.pem')

let dir: string
/** Each bad path and what the refusal must say. */
let bad: { what: string; path: string; reason: RegExp }[]

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sy-ca-'))
  const fifo = join(dir, 'ca.fifo')
  execFileSync('mkfifo', [fifo])
  const folder = join(dir, 'a-directory')
  await mkdir(folder)
  // A real certificate padded past the bound: refused for its size, not its content.
  const huge = join(dir, 'huge.pem')
  const pem = await readFile(CA, 'utf8')
  await writeFile(huge, pem + '\n'.repeat(MAX_PEM_BYTES + 1 - pem.length + 1))
  bad = [
    { what: '/dev/zero', path: '/dev/zero', reason: /^\/dev\/zero: not a regular file \(a character device\)$/ },
    { what: 'a FIFO', path: fifo, reason: new RegExp(`^${fifo}: not a regular file \\(a FIFO\\)$`) },
    { what: 'a directory', path: folder, reason: new RegExp(`^${folder}: not a regular file \\(a directory\\)$`) },
    { what: 'a file over 1 MiB', path: huge, reason: new RegExp(`^${huge}: too large \\(\\d+ bytes; at most ${MAX_PEM_BYTES}\\)$`) },
  ]
})
afterAll(() => rm(dir, { recursive: true, force: true }))

/** An HTTPS backend whose certificate the fixture CA signed. */
async function httpsBackend(): Promise<string> {
  const server = createHttpsServer({ cert: await readFile(join(FIXTURES, 'server.pem')), key: await readFile(join(FIXTURES, 'server.key')) }, (req, res) => {
    res.setHeader('x-backend', 'secure')
    res.end('secure')
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  onTestFinished(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** An instance with a plain upstream `web` (route /) and a TLS upstream `secure` (route /secure) trusting the fixture CA. */
async function start(): Promise<{ sy: TestApp; secureUrl: string }> {
  const secureUrl = await httpsBackend()
  const sy = await startApp({
    upstreams: { web: { targets: [{ url: (await backend('web')).url }] }, secure: { targets: [{ url: secureUrl }], tls: { ca: CA } } },
    routes: [
      { name: 'web', split: { web: 1 } },
      { name: 'secure', match: { pathPrefix: '/secure' }, split: { secure: 1 } },
    ],
  })
  return { sy, secureUrl }
}

async function serving(sy: TestApp): Promise<void> {
  expect((await hit(sy.app.proxyUrl + '/')).headers['x-backend']).toBe('web')
  expect((await hit(sy.app.proxyUrl + '/secure')).headers['x-backend']).toBe('secure')
}

it('an upstream write naming /dev/zero, a FIFO, a directory or an oversized file is refused with the path and the reason; the instance keeps serving', async () => {
  const { sy, secureUrl } = await start()
  await serving(sy)
  const revision = (await sy.admin.get('/api/state')).body.revision as number
  for (const { what, path, reason } of bad) {
    // The write and a request through the proxy at the same time: nothing waits on the file.
    const [res] = await Promise.all([sy.admin.put('/api/upstreams/secure', { targets: [{ url: secureUrl }], tls: { ca: path } }), serving(sy)])
    expect(res.status, what).toBe(400)
    expect(res.body.error.code, what).toBe('VALIDATION_FAILED')
    expect(res.body.error.details, what).toEqual([{ path: 'upstreams.secure.tls.ca', message: expect.stringMatching(reason) }])
    await serving(sy)
  }
  expect((await sy.admin.get('/api/state')).body.revision).toBe(revision)
})

it('a declared state (PUT /api/state) naming a FIFO is refused at its path too, and a dry run says so', async () => {
  const { sy, secureUrl } = await start()
  const fifo = bad.find((b) => b.what === 'a FIFO')!
  const web = (await sy.admin.get('/api/upstreams/web')).body
  const declared = {
    upstreams: { web: { targets: web.targets }, secure: { targets: [{ url: secureUrl }], tls: { ca: [CA, fifo.path] } } },
    routes: [
      { name: 'web', split: { web: 1 } },
      { name: 'secure', match: { pathPrefix: '/secure' }, split: { secure: 1 } },
    ],
  }
  for (const query of ['', '?dryRun=true']) {
    const res = await sy.admin.put(`/api/state${query}`, declared)
    expect(res.status, query).toBe(400)
    expect(res.body.error.details, query).toEqual([{ path: 'upstreams.secure.tls.ca', message: expect.stringMatching(fifo.reason) }])
  }
  await serving(sy)
})

it('a good CA still works: a write naming it is applied and the https target answers', async () => {
  const { sy, secureUrl } = await start()
  const res = await sy.admin.put('/api/upstreams/secure', { targets: [{ url: secureUrl }], tls: { ca: [CA] }, retries: 1 })
  expect(res.status).toBe(200)
  await serving(sy)
  expect((await sy.admin.get('/api/upstreams/secure')).body.tls).toEqual({ ca: [CA] })
})

it('the config loader refuses them too, without blocking on the FIFO', () => {
  for (const { what, path, reason } of bad) {
    const text = JSON.stringify({ upstreams: { s: { targets: [{ url: 'https://127.0.0.1:1' }], tls: { ca: path } } }, routes: [{ name: 'r', split: { s: 1 } }] })
    expect(parseConfigText(text, {}).problems, what).toEqual([{ path: 'upstreams.s.tls.ca', message: expect.stringMatching(reason) }])
  }
})
