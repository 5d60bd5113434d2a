/**
 * Bad requests to the admin API: each answers 4xx JSON `{"error":{"code",...}}` with the
 * expected code, and none of them changes the state, the revision or the audit log: a rejected
 * write leaves the state and revision exactly as they were.
 */
import { connect } from 'node:net'
import { beforeAll, describe, expect, it } from 'vitest'
import type { Backend } from './helpers/backend.js'
import { backend, startApp, twoVersions, type RequestOptions, type TestApp } from './helpers/admin.js'

const json = { 'content-type': 'application/json' }
const long = 'a'.repeat(10 * 1024)

interface Case {
  method: string
  path: string
  body?: unknown
  opts?: RequestOptions
  status: number
  code: string
  /** When given, the answer's `details`, exactly. */
  details?: unknown[]
}

/** `id` is replaced with the v1 target's id once the backend runs. */
const cases: [string, Case][] = [
  ['malformed JSON', { method: 'PUT', path: '/api/routes/api/split', opts: { raw: '{"v1": ', headers: json }, status: 400, code: 'VALIDATION_FAILED' }],
  ['invalid UTF-8 in the body', { method: 'PUT', path: '/api/routes/api/split', opts: { raw: new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), headers: json }, status: 400, code: 'VALIDATION_FAILED' }],
  ['text/plain body', { method: 'PUT', path: '/api/routes/api/split', opts: { raw: '{"v1":1}', headers: { 'content-type': 'text/plain' } }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }],
  ['a body without content type', { method: 'PUT', path: '/api/flags/f', opts: { raw: '{"enabled":true}', headers: { 'content-type': '' } }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }],
  ['a non-UTF-8 charset', { method: 'PUT', path: '/api/routes/api/split', opts: { raw: '{"v1":1}', headers: { 'content-type': 'application/json; charset=latin1' } }, status: 415, code: 'UNSUPPORTED_MEDIA_TYPE' }],
  ['a body over 1 MiB', { method: 'PUT', path: '/api/upstreams/big', opts: { raw: `{"targets":[],"x":"${'x'.repeat(1100 * 1024)}"}`, headers: json }, status: 413, code: 'PAYLOAD_TOO_LARGE' }],
  ['a missing body', { method: 'PUT', path: '/api/upstreams/v3', status: 400, code: 'VALIDATION_FAILED' }],
  ['an empty JSON body', { method: 'PUT', path: '/api/routes/api/split', opts: { raw: '', headers: json }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a JSON null body', { method: 'PUT', path: '/api/flags/f', body: null, status: 400, code: 'VALIDATION_FAILED' }],
  ['__proto__ in the body', { method: 'PUT', path: '/api/flags/f', opts: { raw: '{"enabled":true,"__proto__":{"x":1}}', headers: json }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a weight that is a string', { method: 'PUT', path: '/api/routes/api/split', body: { v1: '90' }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a negative weight', { method: 'PUT', path: '/api/routes/api/split', body: { v1: -1, v2: 10 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a float weight', { method: 'PUT', path: '/api/routes/api/split', body: { v1: 0.5 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['all-zero weights', { method: 'PUT', path: '/api/routes/api/split', body: { v1: 0, v2: 0 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['an empty split', { method: 'PUT', path: '/api/routes/api/split', body: {}, status: 400, code: 'VALIDATION_FAILED' }],
  ['a split that is an array', { method: 'PUT', path: '/api/routes/api/split', body: [{ v1: 1 }], status: 400, code: 'VALIDATION_FAILED' }],
  ['an unknown upstream in a split', { method: 'PUT', path: '/api/routes/api/split', body: { v1: 1, v3: 1 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['an invalid name in a split', { method: 'PUT', path: '/api/routes/api/split', body: { 'v1/../x': 1 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a target URL that is not a URL', { method: 'POST', path: '/api/upstreams/v1/targets', body: { url: 'not a url' }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a target URL with a path', { method: 'POST', path: '/api/upstreams/v1/targets', body: { url: 'http://127.0.0.1:3001/x' }, status: 400, code: 'VALIDATION_FAILED' }],
  ['an https target with a path', { method: 'POST', path: '/api/upstreams/v1/targets', body: { url: 'https://127.0.0.1:3001/api' }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a duplicate target id in an upstream', { method: 'PUT', path: '/api/upstreams/v3', body: { targets: [{ url: 'http://127.0.0.1:3001' }, { url: 'http://127.0.0.1:3001' }] }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a health check timeout over its interval', { method: 'PUT', path: '/api/upstreams/v3', body: { targets: [], healthCheck: { path: '/h', intervalMs: 100, timeoutMs: 500 } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['an unknown property', { method: 'PUT', path: '/api/upstreams/v3', body: { targets: [], weight: 3 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a target state that is not one of the states', { method: 'PUT', path: '/api/upstreams/v3', body: { targets: [{ url: 'http://127.0.0.1:3001', state: 'paused' }] }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'body.targets[0].state', message: 'must be one of "active", "draining", "disabled"' }] }],
  ['an unknown target state', { method: 'PATCH', path: '/api/upstreams/v1/targets/ID', body: { state: 'sleeping' }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a route body naming another route', { method: 'PUT', path: '/api/routes/beta', body: { name: 'gamma', split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a rule to an unknown upstream', { method: 'PUT', path: '/api/routes/beta', body: { match: { pathPrefix: '/b' }, rules: [{ match: { header: { x: '1' } }, upstream: 'v9' }], split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['an invalid regex', { method: 'PUT', path: '/api/routes/beta', body: { match: { pathPrefix: '/b' }, rules: [{ match: { header: { x: { regex: '(' } } }, upstream: 'v1' }], split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a rule regex that is not a string', { method: 'PUT', path: '/api/routes/beta', body: { match: { pathPrefix: '/b' }, rules: [{ match: { header: { x: { regex: 5 } } }, upstream: 'v1' }], split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'body.rules[0].match.header.x.regex', message: 'must be a string' }] }],
  ['a rule value neither a string nor a regex', { method: 'PUT', path: '/api/routes/beta', body: { match: { pathPrefix: '/b' }, rules: [{ match: { header: { x: 2 } }, upstream: 'v1' }], split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED', details: [{ path: 'body.rules[0].match.header.x', message: 'must be a string or an object' }] }],
  ['a route with the same match as another', { method: 'PUT', path: '/api/routes/beta', body: { match: { pathPrefix: '/' }, split: { v1: 1 } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a flag percent over 100', { method: 'PUT', path: '/api/flags/f', body: { enabled: true, percent: 150, by: { header: 'x-user' } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a flag percentage without a key', { method: 'PUT', path: '/api/flags/f', body: { enabled: true, percent: 50 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a name with path junk (../)', { method: 'PUT', path: '/api/upstreams/..%2Fetc', body: { targets: [] }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a name with a NUL byte', { method: 'PUT', path: '/api/flags/a%00b', body: { enabled: true }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a name with a semicolon', { method: 'DELETE', path: '/api/routes/api;drop', status: 400, code: 'VALIDATION_FAILED' }],
  ['a 10 KB name', { method: 'PUT', path: `/api/upstreams/${long}`, body: { targets: [] }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a 10 KB target id', { method: 'GET', path: `/api/upstreams/v1/targets/${long}`, status: 400, code: 'VALIDATION_FAILED' }],
  ['a target id with spaces', { method: 'GET', path: '/api/upstreams/v1/targets/a%20b', status: 400, code: 'VALIDATION_FAILED' }],
  ['bad percent-encoding', { method: 'GET', path: '/api/upstreams/%E0%A4%A', status: 400, code: 'VALIDATION_FAILED' }],
  ['garbage If-Match', { method: 'PUT', path: '/api/routes/api/split', body: { v2: 1 }, opts: { headers: { 'if-match': 'abc' } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a weak If-Match', { method: 'PUT', path: '/api/routes/api/split', body: { v2: 1 }, opts: { headers: { 'if-match': 'W/"1"' } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a stale If-Match', { method: 'PUT', path: '/api/routes/api/split', body: { v2: 1 }, opts: { headers: { 'if-match': '0' } }, status: 412, code: 'REVISION_MISMATCH' }],
  ['a reason over 1024 characters', { method: 'PUT', path: '/api/routes/api/split', body: { v2: 1 }, opts: { headers: { 'x-switchyard-reason': 'r'.repeat(1025) } }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a negative waitApplied', { method: 'PUT', path: '/api/routes/api/split?waitApplied=-1', body: { v2: 1 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a non-numeric waitApplied', { method: 'PUT', path: '/api/routes/api/split?waitApplied=soon', body: { v2: 1 }, status: 400, code: 'VALIDATION_FAILED' }],
  ['a fractional waitMs', { method: 'POST', path: '/api/upstreams/v1/targets/ID/drain?waitMs=1.5', status: 400, code: 'VALIDATION_FAILED' }],
  ['events limit 0', { method: 'GET', path: '/api/events?limit=0', status: 400, code: 'VALIDATION_FAILED' }],
  ['events limit 5000', { method: 'GET', path: '/api/events?limit=5000', status: 400, code: 'VALIDATION_FAILED' }],
  ['an unknown upstream', { method: 'POST', path: '/api/upstreams/nope/targets', body: { url: 'http://127.0.0.1:3001' }, status: 404, code: 'NOT_FOUND' }],
  ['a split of an unknown route', { method: 'PUT', path: '/api/routes/nope/split', body: { v1: 1 }, status: 404, code: 'NOT_FOUND' }],
  ['an unknown target', { method: 'PATCH', path: '/api/upstreams/v1/targets/127.0.0.1:1', body: { state: 'disabled' }, status: 404, code: 'NOT_FOUND' }],
  ['draining an unknown target', { method: 'POST', path: '/api/upstreams/v1/targets/127.0.0.1:1/drain?waitMs=10', status: 404, code: 'NOT_FOUND' }],
  ['deleting an unknown flag', { method: 'DELETE', path: '/api/flags/nope', status: 404, code: 'NOT_FOUND' }],
  ['deleting an unknown route', { method: 'DELETE', path: '/api/routes/nope', status: 404, code: 'NOT_FOUND' }],
  ['an unknown path', { method: 'GET', path: '/api/nothing-here', status: 404, code: 'NOT_FOUND' }],
  ['an unknown method on a known path', { method: 'POST', path: '/api/state', body: {}, status: 405, code: 'METHOD_NOT_ALLOWED' }],
  ['deleting an upstream a route uses', { method: 'DELETE', path: '/api/upstreams/v1', status: 409, code: 'CONFLICT' }],
  ['adding a target id twice', { method: 'POST', path: '/api/upstreams/v1/targets', body: { url: 'http://127.0.0.1:3001', id: 'ID' }, status: 409, code: 'CONFLICT' }],
]

describe('admin API: bad requests', () => {
  let t: TestApp
  let v1: Backend
  let before: unknown
  let eventsBefore: unknown

  beforeAll(async () => {
    v1 = await backend('v1')
    t = await startApp(twoVersions(v1, await backend('v2')))
    before = (await t.admin.get('/api/state')).body
    eventsBefore = (await t.admin.get('/api/events')).body
  })

  it.each(cases)('%s', async (_name, c) => {
    const path = c.path.replace('ID', v1.id)
    const body = c.body === undefined ? undefined : JSON.parse(JSON.stringify(c.body).replace('"ID"', JSON.stringify(v1.id)))
    const res = await t.admin.request(c.method, path, body, c.opts)
    expect(res.status, JSON.stringify(res.body)).toBe(c.status)
    expect(res.headers.get('content-type')).toMatch(/^application\/json/)
    expect(res.body).toEqual({ error: expect.objectContaining({ code: c.code, message: expect.any(String) }) })
    if (c.details !== undefined) expect(res.body.error.details).toEqual(c.details)
  })

  it('left the state, the revision and the audit log exactly as they were, and the proxy serving', async () => {
    expect(cases.length).toBeGreaterThanOrEqual(25)
    expect((await t.admin.get('/api/state')).body).toEqual(before)
    expect((await t.admin.get('/api/events')).body).toEqual(eventsBefore)
    expect(await t.proxy('/still-there')).toMatchObject({ status: 200, backend: 'v1' })
  })

  it.each([
    ['a malformed request line', 'GARBAGE\r\n\r\n', 400],
    ['headers over 16 KiB', `GET /api/state HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ])('answers %s from the HTTP parser in our shape too', async (_name, payload, status) => {
    const port = Number(new URL(t.app.adminUrl).port)
    const raw = await new Promise<string>((resolve, reject) => {
      let out = ''
      const socket = connect(port, '127.0.0.1', () => socket.write(payload))
      socket.on('data', (d) => (out += d))
      socket.on('close', () => resolve(out))
      socket.on('error', reject)
    })
    expect(raw.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1.1 ${status} `))
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).error.code).toBe('VALIDATION_FAILED')
  })

  it('reports schema problems with a path for each', async () => {
    const res = await t.admin.put('/api/upstreams/v3', { targets: [{ url: 1 }], retries: -1, extra: true })
    expect(res.body.error.details).toEqual(
      expect.arrayContaining([
        { path: 'body.extra', message: expect.any(String) },
        { path: 'body.targets[0].url', message: expect.any(String) },
        { path: 'body.retries', message: expect.any(String) },
      ]),
    )
    const semantic = await t.admin.put('/api/routes/api/split', { v1: 0, v3: 1 })
    expect(semantic.body.error.details).toEqual([{ path: 'routes[0].split.v3', message: 'unknown upstream "v3"' }])
  })
})
