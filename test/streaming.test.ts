import { createHash, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { request } from 'undici'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { spawnBackend, startBackend, type Backend } from './helpers/backend.js'
import { agent } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { spawnProxy, type ProxyProcess } from './helpers/proxy-process.js'

const MiB = 1024 * 1024
let backend: Backend
let proxy: ProxyProcess

beforeAll(async () => {
  backend = await startBackend('big')
  proxy = await spawnProxy({ upstreams: { v1: { targets: [{ url: backend.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
})
afterAll(async () => {
  await proxy?.stop()
  await backend?.close()
})

async function rssKiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))![1])
}

/** A 5 MiB body produced 64 KiB at a time, so the test process never holds it whole either. */
function body(total: number, seed: Buffer): { stream: Readable; sha256: Promise<string>; sent: () => number } {
  const hash = createHash('sha256')
  let sent = 0
  let resolve!: (s: string) => void
  const sha256 = new Promise<string>((r) => (resolve = r))
  const stream = new Readable({
    read() {
      if (sent >= total) {
        resolve(hash.digest('hex'))
        this.push(null)
        return
      }
      const chunk = Buffer.from(seed.subarray(0, Math.min(seed.length, total - sent)))
      chunk.writeUInt32BE(sent >>> 0, 0) // vary the content so reordering would show
      sent += chunk.length
      hash.update(chunk)
      this.push(chunk)
    },
  })
  return { stream, sha256, sent: () => sent }
}

it('streams a 5 MiB POST through unchanged (checksum), several times', async () => {
  for (let i = 0; i < 3; i++) {
    const b = body(5 * MiB, randomBytes(64 * 1024))
    const res = await request(proxy.url + '/upload', { method: 'POST', body: b.stream, dispatcher: agent })
    expect(res.statusCode).toBe(200)
    const got = (await res.body.json()) as { bytes: number; sha256: string }
    expect(got.bytes).toBe(5 * MiB)
    expect(got.sha256).toBe(await b.sha256)
  }
})

it('does not hold the body: while the upstream reads nothing, the upload stalls far below the body size', async () => {
  // A backend that takes the request but reads no byte of its body until released.
  let release!: () => void
  const released = new Promise<void>((r) => (release = r))
  let gotHeaders!: () => void
  const headersIn = new Promise<void>((r) => (gotHeaders = r))
  const stalled = createServer((req, res) => {
    gotHeaders()
    void released.then(() => {
      const hash = createHash('sha256')
      let bytes = 0
      req.on('data', (c: Buffer) => {
        hash.update(c)
        bytes += c.length
      })
      req.on('end', () => res.end(JSON.stringify({ bytes, sha256: hash.digest('hex') })))
    })
  })
  await new Promise<void>((r) => stalled.listen(0, '127.0.0.1', r))
  const port = (stalled.address() as AddressInfo).port
  const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: `http://127.0.0.1:${port}` }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  try {
    // Loopback sockets alone buffer ~5 MiB between client and backend, so use a body far larger.
    const size = 64 * MiB
    const rssBefore = await rssKiB(p.pid)
    const b = body(size, randomBytes(64 * 1024))
    const pending = request(p.url + '/upload', { method: 'POST', body: b.stream, dispatcher: agent })
    await headersIn
    // Wait until the upload stops advancing (backpressure reached the client), bounded in time.
    let last = -1
    await eventually(
      () => {
        const now = b.sent()
        const stable = now === last
        last = now
        expect(stable).toBe(true)
      },
      { timeoutMs: 10_000, intervalMs: 300 },
    )
    // Only socket buffers sit between client and backend. A proxy that buffered whole bodies
    // would have taken all 64 MiB by now, and its memory would have grown by as much.
    expect(b.sent()).toBeLessThan(24 * MiB)
    expect((await rssKiB(p.pid)) - rssBefore).toBeLessThan(24 * 1024)
    release()
    const res = await pending
    const got = (await res.body.json()) as { bytes: number; sha256: string }
    expect(got.bytes).toBe(size)
    expect(got.sha256).toBe(await b.sha256)
  } finally {
    await p.stop()
    stalled.closeAllConnections()
    stalled.close()
  }
})

/**
 * GETs `/bytes?n=size` through `port` on a raw socket and reads the answer no faster than one
 * chunk per `msPerChunk` ms, calling `onChunk` after each; resolves with the bytes received.
 */
async function slowDownload(port: number, size: number, msPerChunk: number, onChunk: () => void): Promise<number> {
  const socket = connect(port, '127.0.0.1')
  socket.write(`GET /bytes?n=${size} HTTP/1.1\r\nhost: slow.test\r\nconnection: close\r\n\r\n`)
  let received = 0
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, done) {
      received += chunk.length
      onChunk()
      setTimeout(done, msPerChunk)
    },
  })
  await pipeline(socket, sink)
  return received
}

it('a slow client against a fast upstream: the proxy holds only socket buffers of a 208 MiB download (RSS flat)', async () => {
  // The upstream in its own process writes as fast as the proxy lets it; the client takes at
  // most one chunk (<= 64 KiB) per 1 ms, several times slower. Without backpressure from the
  // client to the upstream socket the proxy would queue the difference: ~200 MiB here.
  const fast = await spawnBackend('fast')
  const p = await spawnProxy({ upstreams: { v1: { targets: [{ url: fast.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
  try {
    const port = Number(new URL(p.url).port)
    // A first download at the same pace warms the path up (code, pools, buffers).
    await slowDownload(port, 16 * MiB, 1, () => {})
    const rssBefore = await rssKiB(p.pid)
    let peak = rssBefore
    let reading = Promise.resolve()
    let lastRead = 0
    const size = 208 * MiB
    const received = await slowDownload(port, size, 1, () => {
      // Sampled at most every 50 ms, never two reads at once.
      const now = performance.now()
      if (now - lastRead < 50) return
      lastRead = now
      reading = reading.then(async () => {
        peak = Math.max(peak, await rssKiB(p.pid))
      })
    })
    await reading
    // The answer's head plus every byte of the body arrived.
    expect(received).toBeGreaterThan(size)
    // Bounded, not growing with the body: what a flat RSS still moves by is garbage, chunks the
    // client has taken that wait for a collection (V8 collects when the young generation, 16
    // MiB, fills or when dead Buffers' memory passes ~64 MiB). Without backpressure the proxy
    // queues the body: ~200 MiB here.
    expect(peak - rssBefore, `RSS ${rssBefore} KiB before, peak ${peak} KiB during`).toBeLessThan(96 * 1024)
  } finally {
    await p.stop()
    await fast.kill()
  }
}, 60_000)

it('streams a 5 MiB download through unchanged', async () => {
  const res = await request(proxy.url + `/bytes?n=${5 * MiB}`, { dispatcher: agent })
  expect(res.statusCode).toBe(200)
  expect(res.headers['content-length']).toBe(String(5 * MiB))
  let n = 0
  for await (const chunk of res.body) n += (chunk as Buffer).length
  expect(n).toBe(5 * MiB)
})

it('streams a chunked upload of unknown length', async () => {
  const b = body(2 * MiB + 123, randomBytes(16 * 1024))
  const res = await request(proxy.url + '/upload', { method: 'PUT', body: b.stream, dispatcher: agent })
  const got = (await res.body.json()) as { bytes: number; sha256: string }
  expect(got.bytes).toBe(2 * MiB + 123)
  expect(got.sha256).toBe(await b.sha256)
})
