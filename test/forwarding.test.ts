import { createServer } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBackend, type Backend } from './helpers/backend.js'
import { hit, rawHttp } from './helpers/client.js'
import { eventually } from './helpers/eventually.js'
import { startDataplane } from './helpers/dataplane.js'

let a: Backend
let b: Backend
beforeAll(async () => {
  ;[a, b] = await Promise.all([startBackend('a'), startBackend('b')])
})
afterAll(async () => {
  await Promise.all([a.close(), b.close()])
})

/** A loopback port with nothing listening (connections are refused). */
async function deadPort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const port = (srv.address() as { port: number }).port
  await new Promise((r) => srv.close(r))
  return port
}

const pairs = (raw: string[]) => raw.reduce<[string, string][]>((acc, v, i) => (i % 2 ? acc : [...acc, [v.toLowerCase(), raw[i + 1]!]]), [])

describe('headers', () => {
  it('sets X-Forwarded-*, keeps Host and Authorization, removes hop-by-hop and internal headers', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      const text = await rawHttp(p.port, [
        'GET /echo?q=1 HTTP/1.1',
        'Host: api.example.com',
        'Authorization: Bearer client-token',
        'X-Forwarded-For: 10.0.0.1',
        'X-Forwarded-Proto: https-spoofed',
        'Connection: close, x-drop-me',
        'X-Drop-Me: 1',
        'Keep-Alive: timeout=5',
        'Proxy-Authorization: Basic Zm9v',
        'TE: trailers',
        'Upgrade: h2c',
        'X-Switchyard-Flags: spoofed=on',
        'x-custom: a',
        'x-custom: b',
      ])
      expect(text.startsWith('HTTP/1.1 200 ')).toBe(true)
      const body = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as { url: string; rawHeaders: string[] }
      const got = pairs(body.rawHeaders)
      const get = (n: string) => got.filter(([k]) => k === n).map(([, v]) => v)
      expect(get('host')).toEqual(['api.example.com'])
      expect(get('authorization')).toEqual(['Bearer client-token'])
      // no trusted proxies configured: the client's X-Forwarded-For is replaced, not appended to
      expect(get('x-forwarded-for')).toEqual(['127.0.0.1'])
      expect(get('x-forwarded-proto')).toEqual(['http'])
      expect(get('x-forwarded-host')).toEqual(['api.example.com'])
      expect(get('x-custom')).toEqual(['a', 'b'])
      for (const gone of ['x-drop-me', 'keep-alive', 'proxy-authorization', 'te', 'upgrade', 'x-switchyard-flags']) expect(get(gone), gone).toEqual([])
      // undici manages the upstream connection itself: only its own keep-alive, never the client's tokens
      expect(get('connection').join()).not.toContain('x-drop-me')
    } finally {
      await p.close()
    }
  })

  it('removes hop-by-hop headers from the response and keeps repeated ones', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      const res = await hit(p.url + '/hop')
      expect(res.status).toBe(200)
      expect(res.body).toBe('hop')
      expect(res.headers['x-end-to-end']).toBe('kept')
      expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2'])
      expect(res.headers['x-hop-custom']).toBeUndefined()
      expect(res.headers['proxy-connection']).toBeUndefined()
      // the client connection's own keep-alive, set by Node, not the upstream's
      expect(res.headers['connection'] ?? 'keep-alive').toBe('keep-alive')
    } finally {
      await p.close()
    }
  })
})

describe('errors the proxy makes', () => {
  it('502 UPSTREAM_ERROR when every target refuses, after retrying the others', async () => {
    const [d1, d2] = [await deadPort(), await deadPort()]
    const p = await startDataplane({
      upstreams: { v1: { targets: [{ url: `http://127.0.0.1:${d1}` }, { url: `http://127.0.0.1:${d2}` }] } },
      routes: [{ name: 'r', split: { v1: 1 } }],
    })
    try {
      const res = await hit(p.url + '/')
      expect(res.status).toBe(502)
      expect(res.json()).toEqual({ error: { code: 'UPSTREAM_ERROR', message: expect.any(String) } })
      expect(p.dp.resources.counters('v1').retries).toBe(1)
      // both were marked down at once (passive health): now there is no healthy target
      const again = await hit(p.url + '/')
      expect(again.status).toBe(503)
      expect(again.json<{ error: { code: string } }>().error.code).toBe('NO_HEALTHY_TARGET')
    } finally {
      await p.close()
    }
  })

  it('503 NO_HEALTHY_TARGET when no target is active', async () => {
    const p = await startDataplane({
      upstreams: { v1: { targets: [{ url: a.url, state: 'draining' }, { url: b.url, state: 'disabled' }] }, empty: { targets: [] } },
      routes: [
        { name: 'r', match: { pathPrefix: '/r' }, split: { v1: 1 } },
        { name: 'e', match: { pathPrefix: '/e' }, split: { empty: 1 } },
      ],
    })
    try {
      for (const path of ['/r', '/e']) {
        const res = await hit(p.url + path)
        expect(res.status).toBe(503)
        expect(res.json<{ error: { code: string } }>().error.code).toBe('NO_HEALTHY_TARGET')
      }
    } finally {
      await p.close()
    }
  })

  it('504 UPSTREAM_TIMEOUT when response headers do not come in time', async () => {
    const p = await startDataplane({
      upstreams: { v1: { targets: [{ url: a.url }], headersTimeoutMs: 150 } },
      routes: [{ name: 'r', split: { v1: 1 } }],
    })
    try {
      const res = await hit(p.url + '/delay?ms=2000')
      expect(res.status).toBe(504)
      expect(res.json<{ error: { code: string } }>().error.code).toBe('UPSTREAM_TIMEOUT')
      expect(p.inflight('v1', a.id)).toBe(0)
    } finally {
      await p.close()
    }
  })

  it('passes upstream statuses through untouched (a 500 is not retried)', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }, { url: b.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      const res = await hit(p.url + '/status?code=500')
      expect(res.status).toBe(500)
      expect(res.json<{ name: string }>().name).toMatch(/^[ab]$/)
      expect(p.dp.resources.counters('v1').retries).toBe(0)
    } finally {
      await p.close()
    }
  })
})

describe('retries', () => {
  it('a refused connection is retried on another target, for POST too, and the target is marked down', async () => {
    const dead = await deadPort()
    const p = await startDataplane({
      upstreams: { v1: { targets: [{ url: `http://127.0.0.1:${dead}` }, { url: a.url }] } },
      routes: [{ name: 'r', split: { v1: 1 } }],
    })
    try {
      for (let i = 0; i < 6; i++) {
        const res = await hit(p.url + '/upload', { method: 'POST', body: 'payload' })
        expect(res.status).toBe(200)
        expect(res.json<{ bytes: number }>().bytes).toBe(7)
      }
      expect(p.dp.resources.targets.get(`v1/127.0.0.1:${dead}`)!.healthy).toBe(false)
      // the dead target was tried at most once: after that it is out
      expect(p.dp.resources.counters('v1').retries).toBe(1)
    } finally {
      await p.close()
    }
  })

  it('a passively failed target without an active check comes back after passiveEjectMs', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      p.dp.resources.passiveEjectMs = 100
      p.dp.resources.markFailed(p.dp.resources.targets.get(`v1/${a.id}`)!)
      expect((await hit(p.url + '/')).status).toBe(503)
      await eventually(async () => expect((await hit(p.url + '/')).status).toBe(200), { timeoutMs: 3000 })
    } finally {
      await p.close()
    }
  })
})

describe('client abort', () => {
  it('a client that goes away mid-response cancels the upstream request; nothing leaks or crashes', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      const before = a.state.aborts
      const ctl = new AbortController()
      const res = await fetch(p.url + '/stream?every=5', { signal: ctl.signal })
      expect(res.status).toBe(200)
      const reader = res.body!.getReader()
      await reader.read()
      await eventually(() => expect(p.inflight('v1', a.id)).toBe(1))
      ctl.abort()
      await eventually(() => expect(a.state.aborts).toBe(before + 1))
      await eventually(() => expect(p.inflight('v1', a.id)).toBe(0))
      await eventually(() => expect(p.dp.openRequests).toBe(0))
      expect((await hit(p.url + '/')).status).toBe(200)
    } finally {
      await p.close()
    }
  })

  it('a client that goes away before the upstream answers cancels it too', async () => {
    const p = await startDataplane({ upstreams: { v1: { targets: [{ url: a.url }] } }, routes: [{ name: 'r', split: { v1: 1 } }] })
    try {
      const ctl = new AbortController()
      const pending = fetch(p.url + '/delay?ms=1000', { signal: ctl.signal }).catch((e: Error) => e)
      await eventually(() => expect(p.inflight('v1', a.id)).toBe(1))
      ctl.abort()
      expect(await pending).toBeInstanceOf(Error)
      await eventually(() => expect(p.inflight('v1', a.id)).toBe(0))
      expect((await hit(p.url + '/')).status).toBe(200)
    } finally {
      await p.close()
    }
  })
})
