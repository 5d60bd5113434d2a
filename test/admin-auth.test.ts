/** Admin API authentication: bearer tokens, named tokens as audit actors, open probes. */
import { beforeAll, describe, expect, it } from 'vitest'
import { adminClient, backend, startApp, twoVersions, type TestApp } from './helpers/admin.js'
import { tokenMatcher } from '../src/control/admin/auth.js'

describe('admin API: auth with named tokens', () => {
  let t: TestApp
  const as = (token?: string) => adminClient(t.app.adminUrl, token)

  beforeAll(async () => {
    const config = twoVersions(await backend('v1'), await backend('v2'), {
      admin: { tokens: { ci: 'ci-token-0123456789', ops: 'ops-token-abcdef' } },
    })
    t = await startApp(config)
  })

  it.each([
    ['no Authorization header', undefined],
    ['a wrong token', { authorization: 'Bearer ci-token-0123456780' }],
    ['a token prefix', { authorization: 'Bearer ci-token' }],
    ['a much longer token', { authorization: `Bearer ci-token-0123456789${'x'.repeat(5000)}` }],
    ['another scheme', { authorization: 'Basic Y2k6Y2ktdG9rZW4tMDEyMzQ1Njc4OQ==' }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ])('answers 401 UNAUTHORIZED in our shape for %s', async (_name, headers) => {
    for (const path of ['/api/state', '/api/events', '/api/upstreams/v1/targets/x']) {
      const res = await as().get(path, { headers })
      expect(res.status).toBe(401)
      expect(res.body).toEqual({ error: { code: 'UNAUTHORIZED', message: expect.any(String) } })
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/)
    }
  })

  it('refuses a write without a token and leaves the state as it was', async () => {
    const before = (await as('ops-token-abcdef').get('/api/state')).body
    const res = await as().put('/api/routes/api/split', { v2: 100 })
    expect(res.status).toBe(401)
    expect((await as('ops-token-abcdef').get('/api/state')).body).toEqual(before)
  })

  it('accepts the right token, with any case of "Bearer"', async () => {
    expect((await as('ci-token-0123456789').get('/api/state')).status).toBe(200)
    const res = await as().get('/api/state', { headers: { authorization: 'bearer ops-token-abcdef' } })
    expect(res.status).toBe(200)
  })

  it('records the name of the token used as the actor of a write', async () => {
    await as('ci-token-0123456789').put('/api/routes/api/split', { v1: 50, v2: 50 }, { headers: { 'x-switchyard-reason': 'deploy 42' } })
    await as('ops-token-abcdef').put('/api/flags/kill-switch', { enabled: false })
    const { events } = (await as('ops-token-abcdef').get('/api/events?limit=2')).body
    expect(events.map((e: { actor: string; reason: string | null }) => [e.actor, e.reason])).toEqual([
      ['ops', null],
      ['ci', 'deploy 42'],
    ])
  })

  it('keeps /healthz, /readyz and /docs/json open', async () => {
    expect((await as().get('/healthz')).status).toBe(200)
    expect((await as().get('/readyz')).status).toBe(200)
    const docs = await as().get('/docs/json')
    expect(docs.status).toBe(200)
    expect(docs.body.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' })
  })

  it('does not tell unknown paths from known ones without a token', async () => {
    expect((await as().get('/api/nothing')).status).toBe(401)
    expect((await as().get('/%61pi/state')).status).not.toBe(200)
    expect((await as('ci-token-0123456789').get('/api/nothing')).status).toBe(404)
  })
})

describe('admin API: auth with a single token', () => {
  it('names the actor `token`', async () => {
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2'), { admin: { token: 's3cret' } }), { token: 's3cret' })
    expect((await t.admin.put('/api/routes/api/split', { v2: 1 })).status).toBe(200)
    expect((await t.admin.get('/api/events?limit=1')).body.events[0].actor).toBe('token')
    expect((await adminClient(t.app.adminUrl).get('/api/state')).status).toBe(401)
  })

  it('without a token configured, writes are anonymous', async () => {
    const t = await startApp(twoVersions(await backend('v1'), await backend('v2')))
    await t.admin.put('/api/routes/api/split', { v2: 1 }, { headers: { authorization: 'Bearer whatever' } })
    expect((await t.admin.get('/api/events?limit=1')).body.events[0].actor).toBe('anonymous')
  })
})

describe('tokenMatcher', () => {
  it('matches whole tokens only, whatever their length', () => {
    const match = tokenMatcher([
      { name: 'a', token: 'alpha' },
      { name: 'b', token: 'beta-longer-token' },
    ])
    expect(match('alpha')).toBe('a')
    expect(match('beta-longer-token')).toBe('b')
    expect(match('alph')).toBeUndefined()
    expect(match('alphaa')).toBeUndefined()
    expect(match('')).toBeUndefined()
  })
})
