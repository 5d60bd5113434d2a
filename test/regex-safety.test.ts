/**
 * Rule regexes cannot be turned against the proxy (ReDoS). A client chooses the header, cookie
 * and query values a rule's regex is tested on; with V8's backtracking engine a rule like
 * `^(a+)+$` and a 30-character header (`aaaa…a!`) took minutes of event loop, the data plane
 * and the admin API together. Rule regexes now run on RE2 (linear time): such a request is
 * answered in milliseconds whatever the pattern, while what RE2 cannot run in linear time
 * (lookaround, backreferences) is refused when the rule is written, with its path.
 */
import { expect, it } from 'vitest'
import { parseConfigText } from '../src/config/load.js'
import { backend, startApp, type TestApp } from './helpers/admin.js'
import { hit } from './helpers/client.js'

/** Patterns that backtrack catastrophically (exponentially) on `a…a!` in a backtracking engine. */
const CATASTROPHIC = ['^(a+)+$', '(a|a)*$', '(\\w+\\s?)*$', '^(a|aa)+$', '^(.*a){12}$']
/** Those of them that match `a…a!` (unanchored at the start, they match the empty end). */
const MATCHES_HOSTILE = new Set(['(a|a)*$', '(\\w+\\s?)*$'])

/** One route per pattern (`/p0`, `/p1` ...): the rule sends a matching `x-h` to v2, anything else goes to v1. */
async function appWithRules(patterns: string[]): Promise<TestApp> {
  return startApp({
    upstreams: { v1: { targets: [{ url: (await backend('v1')).url }] }, v2: { targets: [{ url: (await backend('v2')).url }] } },
    routes: patterns.map((regex, i) => ({
      name: `p${i}`,
      match: { pathPrefix: `/p${i}` },
      rules: [{ match: { header: { 'x-h': { regex } } }, upstream: 'v2' }],
      split: { v1: 1 },
    })),
  })
}

/** The fastest of `tries` requests (a loaded machine can delay one; a backtracking engine delays them all by far more). */
async function fastest(tries: number, send: () => Promise<unknown>): Promise<number> {
  let best = Infinity
  for (let i = 0; i < tries; i++) {
    const t0 = performance.now()
    await send()
    best = Math.min(best, performance.now() - t0)
  }
  return best
}

it('a hostile 30-character header against catastrophic patterns is answered in < 50 ms, and the admin API answers meanwhile', async () => {
  const sy = await appWithRules(CATASTROPHIC)
  const url = sy.app.proxyUrl
  const hostile = 'a'.repeat(30) + '!'
  // Warm: the connection, and each route's compiled matcher.
  for (let i = 0; i < CATASTROPHIC.length; i++) expect((await hit(`${url}/p${i}`, { headers: { 'x-h': 'a' } })).status).toBe(200)

  for (let i = 0; i < CATASTROPHIC.length; i++) {
    const answers: string[] = []
    // The admin API is asked at the same time as the hostile requests go out: it must answer too.
    const [ms, state] = await Promise.all([
      fastest(3, async () => answers.push(String((await hit(`${url}/p${i}`, { headers: { 'x-h': hostile } })).headers['x-backend']))),
      sy.admin.get('/api/state'),
    ])
    expect(state.status, CATASTROPHIC[i]).toBe(200)
    expect(ms, CATASTROPHIC[i]).toBeLessThan(50)
    // And the answer is the pattern's meaning: `(a|a)*$` and `(\w+\s?)*$` match the empty end of the value.
    expect(new Set(answers), CATASTROPHIC[i]).toEqual(new Set([MATCHES_HOSTILE.has(CATASTROPHIC[i]!) ? 'v2' : 'v1']))
  }
})

it('an 8 KiB hostile header costs milliseconds too (matching is linear in the value)', async () => {
  const sy = await appWithRules(CATASTROPHIC)
  const hostile = 'a'.repeat(8 * 1024) + '!'
  await hit(`${sy.app.proxyUrl}/p0`)
  for (let i = 0; i < CATASTROPHIC.length; i++) {
    const ms = await fastest(3, () => hit(`${sy.app.proxyUrl}/p${i}`, { headers: { 'x-h': hostile } }))
    expect(ms, CATASTROPHIC[i]).toBeLessThan(50)
  }
})

it('harmless patterns keep working on headers, cookies and query values', async () => {
  const v1 = await backend('v1')
  const v2 = await backend('v2')
  const sy = await startApp({
    upstreams: { v1: { targets: [{ url: v1.url }] }, v2: { targets: [{ url: v2.url }] } },
    routes: [
      {
        name: 'api',
        rules: [
          { match: { header: { 'X-Version': { regex: '^v[0-9]+$' } } }, upstream: 'v2' },
          { match: { cookie: { track: { regex: 'canary|beta' } } }, upstream: 'v2' },
          { match: { query: { ch: { regex: 'canary|beta' } } }, upstream: 'v2' },
        ],
        split: { v1: 1 },
      },
    ],
  })
  const via = async (path: string, headers: Record<string, string> = {}) => (await hit(sy.app.proxyUrl + path, { headers })).headers['x-backend']
  expect(await via('/', { 'x-version': 'v12' })).toBe('v2')
  expect(await via('/', { 'x-version': 'v12x' })).toBe('v1') // anchored
  expect(await via('/', { 'x-version': 'xv12' })).toBe('v1')
  expect(await via('/', { cookie: 'a=1; track=beta-7' })).toBe('v2') // unanchored: found anywhere, as RegExp.test does
  expect(await via('/', { cookie: 'track=stable' })).toBe('v1')
  expect(await via('/?ch=canary')).toBe('v2')
  expect(await via('/?ch=stable')).toBe('v1')
  expect(await via('/')).toBe('v1')
})

it('a pattern the linear-time engine cannot run (lookaround, backreference) is refused at write time, with its path and the reason', async () => {
  const sy = await appWithRules(['^v[0-9]+$'])
  const before = (await sy.admin.get('/api/state')).body.revision as number
  for (const [regex, reason] of [
    ['^(?=.*beta)', '(?='],
    ['(?<!x)beta', '(?<!'],
    ['^(a)\\1$', '\\1'],
  ] as const) {
    const res = await sy.admin.put('/api/routes/p0', { match: { pathPrefix: '/p0' }, rules: [{ match: { header: { 'x-h': { regex } } }, upstream: 'v2' }], split: { v1: 1 } })
    expect(res.status, regex).toBe(400)
    expect(res.body.error.code).toBe('VALIDATION_FAILED')
    const detail = (res.body.error.details as { path: string; message: string }[])[0]!
    expect(detail.path).toBe('routes[0].rules[0].match.header.x-h.regex')
    expect(detail.message).toContain('not supported by the linear-time matcher')
    expect(detail.message).toContain(reason)
  }
  expect((await sy.admin.get('/api/state')).body.revision).toBe(before)

  // The config loader says the same, at the file's path; a pattern that is not a regex at all keeps its message.
  const config = (regex: string) =>
    JSON.stringify({ upstreams: { v1: { targets: [{ url: 'http://127.0.0.1:1' }] } }, routes: [{ name: 'r', rules: [{ match: { cookie: { c: { regex } } }, upstream: 'v1' }], split: { v1: 1 } }] })
  expect(parseConfigText(config('^(?!admin)'), {}).problems).toEqual([
    { path: 'routes[0].rules[0].match.cookie.c.regex', message: expect.stringContaining('not supported by the linear-time matcher') },
  ])
  expect(parseConfigText(config('('), {}).problems).toEqual([
    { path: 'routes[0].rules[0].match.cookie.c.regex', message: expect.stringMatching(/^invalid regular expression: /) },
  ])
  expect(parseConfigText(config('^(a+)+$'), {}).problems).toEqual([])
})
