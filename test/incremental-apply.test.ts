/**
 * Incremental apply (updateTable) against a whole compile (compileTable), over randomized
 * sequences of the real mutations: after every change both give the same table, the same
 * routing answers and the same live resources (the incremental prune releases exactly what
 * the whole one does), and the table the change started from is left as it was. Also:
 * validateChange accepts exactly what validateState accepts.
 */
import { afterAll, describe, expect, it } from 'vitest'
import type { FlagSpec, RouteSpec, State, Upstream } from '../src/config/schema.js'
import { validateChange, validateState } from '../src/config/validate.js'
import {
  addTarget,
  deleteFlag,
  deleteRoute,
  deleteUpstream,
  draftOf,
  putFlag,
  putRoute,
  putUpstream,
  removeTarget,
  setSplit,
  setTargetState,
  type Mutation,
} from '../src/control/mutations.js'
import { radixEntries } from '../src/dataplane/radix.js'
import { Resources } from '../src/dataplane/resources.js'
import { findRoute } from '../src/dataplane/route-index.js'
import { compileTable, liveCheck, updateTable, type RoutingTable } from '../src/dataplane/table.js'
import { SwitchyardError } from '../src/errors.js'
import { pick, prng } from './helpers/random.js'

const HOSTS = ['*', '*', 'a.example', 'B.example']
const PREFIXES = ['/', '/a', '/ab', '/a/', '/a/b', '/api', '/api/v1', '/api/v1/x', '/b', '/s']
const METHODS = [undefined, undefined, ['GET'], ['POST', 'PUT'], ['GET', 'HEAD']]
const UPSTREAMS = ['u0', 'u1', 'u2', 'u3', 'u4']

function upstreamSpec(rand: () => number, name: string): Upstream {
  const n = 1 + Math.floor(rand() * 3)
  return {
    targets: Array.from({ length: n }, (_, i) => ({
      id: `${name}-t${i}`,
      url: `http://127.0.0.1:${20000 + Math.floor(rand() * 4)}`,
      state: pick(rand, ['active', 'active', 'draining', 'disabled'] as const),
    })),
    ...(rand() < 0.3 ? { retries: Math.floor(rand() * 3) } : {}),
    ...(rand() < 0.3 ? { balance: 'p2c' as const } : {}),
    ...(rand() < 0.2 ? { connectTimeoutMs: 500 + Math.floor(rand() * 2) * 500 } : {}),
  }
}

function routeSpec(rand: () => number, name: string, upstreams: string[]): RouteSpec {
  const host = pick(rand, HOSTS)
  const methods = pick(rand, METHODS)
  const names = upstreams.filter(() => rand() < 0.5)
  if (names.length === 0) names.push(pick(rand, upstreams))
  const split = Object.fromEntries(names.map((u, i) => [u, i === 0 ? 1 + Math.floor(rand() * 100) : Math.floor(rand() * 100)]))
  const route: RouteSpec = {
    name,
    match: { pathPrefix: pick(rand, PREFIXES), ...(host === '*' ? {} : { host }), ...(methods ? { methods } : {}) },
    split,
  }
  if (rand() < 0.3) route.rules = [{ match: { header: { 'x-v': pick(rand, ['2', '3']) } }, upstream: pick(rand, upstreams) }]
  if (rand() < 0.3) route.sticky = { by: 'header', name: 'x-user' }
  if (rand() < 0.1) route.preservePath = true
  if (rand() < 0.2) route.mirror = { upstream: pick(rand, upstreams), percent: pick(rand, [0, 10, 100]) }
  return route
}

function flagSpec(rand: () => number): FlagSpec {
  const percent = Math.floor(rand() * 101)
  return { enabled: rand() < 0.8, percent, ...(percent < 100 ? { by: { header: 'x-user' } } : {}) }
}

function initialState(rand: () => number): State {
  const upstreams = Object.fromEntries(UPSTREAMS.slice(0, 3).map((n) => [n, upstreamSpec(rand, n)]))
  const routes: RouteSpec[] = []
  for (let i = 0; routes.length < 25 && i < 200; i++) {
    const r = routeSpec(rand, `r${i}`, Object.keys(upstreams))
    if (validateState({ upstreams, routes: [...routes, r] }).length === 0) routes.push(r)
  }
  return { revision: 1, upstreams, routes, flags: { f0: flagSpec(rand) }, rollouts: {} }
}

/** A random mutation that may or may not apply to `s` (the writer would refuse those that do not). */
function randomMutation(rand: () => number, s: State): Mutation<unknown> {
  const routeNames = s.routes.map((r) => r.name)
  const ups = Object.keys(s.upstreams)
  const anyRoute = () => pick(rand, routeNames.length > 0 ? routeNames : ['r0'])
  const anyUpstream = () => pick(rand, ups.length > 0 ? ups : ['u0'])
  const anyTarget = (u: string) => pick(rand, s.upstreams[u]?.targets.map((t) => t.id) ?? ['x'])
  switch (Math.floor(rand() * 11)) {
    case 0:
    case 1: {
      const route = s.routes.find((r) => r.name === anyRoute())
      const names = Object.keys(route?.split ?? { u0: 1 })
      return setSplit(route?.name ?? 'r0', Object.fromEntries(names.map((n) => [n, Math.floor(rand() * 100)])))
    }
    case 2:
      return putRoute(routeSpec(rand, rand() < 0.5 ? anyRoute() : `n${Math.floor(rand() * 1e6)}`, ups))
    case 3:
      return deleteRoute(anyRoute())
    case 4:
      return putUpstream(rand() < 0.5 ? anyUpstream() : pick(rand, UPSTREAMS), upstreamSpec(rand, 'x'))
    case 5:
      return deleteUpstream(anyUpstream())
    case 6: {
      const u = anyUpstream()
      return addTarget(u, { id: `t${Math.floor(rand() * 1e6)}`, url: `http://127.0.0.1:${20000 + Math.floor(rand() * 4)}`, state: 'active' })
    }
    case 7: {
      const u = anyUpstream()
      return setTargetState(u, anyTarget(u), pick(rand, ['active', 'draining', 'disabled'] as const))
    }
    case 8: {
      const u = anyUpstream()
      return removeTarget(u, anyTarget(u))
    }
    case 9:
      return putFlag(pick(rand, ['f0', 'f1', 'f2']), flagSpec(rand))
    default:
      return deleteFlag(pick(rand, ['f0', 'f1', 'f2']))
  }
}

/** Everything a table decides, in a comparable form. */
function view(t: RoutingTable) {
  return {
    revision: t.revision,
    routes: radixEntries(t.byName)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, r]) => ({
        name,
        host: r.exactHost,
        prefix: r.prefix,
        methods: r.methods === null ? null : [...r.methods].sort(),
        split: r.split.map((c) => c.upstream),
        weights: r.weights,
        seeds: r.seeds,
        single: r.single,
        sticky: [r.stickyKind, r.stickyName],
        preservePath: r.preservePath,
        mirror: r.mirror === null ? null : [r.mirror.upstream, r.mirror.share, r.split.map((c) => c.mirror?.upstream ?? null)],
        rules: r.rules.map((x) => ({ h: x.headers.map((h) => h.name), u: x.choice.upstream })),
      })),
    upstreams: [...t.upstreams]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([name, u]) => ({
        name,
        targets: u.targets.map((x) => ({ id: x.id, url: x.url, active: x.active, pool: x.pool !== null, poolKey: x.poolKey })),
        active: u.active.map((x) => x.id),
        retries: u.retries,
        p2c: u.p2c,
        connectTimeoutMs: u.connectTimeoutMs,
      })),
    flags: t.flags,
    staticFlags: t.staticFlags,
  }
}

/** What a Resources holds, by key. */
function held(res: Resources) {
  return {
    pools: [...res.pools.keys()].sort(),
    targets: [...res.targets.keys()].sort(),
    traffic: [...res.traffic.keys()].sort(),
    mirrors: [...res.mirrors.keys()].sort(),
    upstreams: [...res.upstreams.keys()].sort(),
  }
}

const REQUESTS = Array.from({ length: 60 }, (_, i) => {
  const rand = prng(1000 + i)
  return {
    host: pick(rand, ['', 'a.example', 'A.EXAMPLE:8080', 'b.example', 'c.example']),
    path: pick(rand, ['/', '/a', '/ab', '/abc', '/a/', '/a/b/c', '/api', '/api/v1', '/api/v1/x/y', '/b', '/s/t', '/z']),
    method: pick(rand, ['GET', 'POST', 'PUT', 'HEAD', 'DELETE']),
  }
})

const toClose: Resources[] = []
afterAll(async () => {
  await Promise.all(toClose.map((r) => r.close()))
})

describe('incremental apply', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`gives the same table as a whole compile over 250 random changes (seed ${seed})`, () => {
      const rand = prng(seed)
      const incRes = new Resources()
      const fullRes = new Resources()
      toClose.push(incRes, fullRes)
      let state = initialState(rand)
      expect(validateState(state)).toEqual([])
      let table = compileTable(state, incRes)
      incRes.prune(liveCheck(table))
      let applied = 0
      for (let step = 0; step < 250; step++) {
        const draft = draftOf(state)
        const before = JSON.stringify(state)
        let touched
        try {
          touched = randomMutation(rand, draft)(draft).touched
        } catch (err) {
          if (err instanceof SwitchyardError) continue // 404/409: the writer would refuse it
          throw err
        }
        // A mutation never changes the state its draft came from.
        expect(JSON.stringify(state), `seed ${seed} step ${step}`).toBe(before)
        const problems = validateChange(draft, touched)
        expect(problems.length === 0, `seed ${seed} step ${step}: ${JSON.stringify(problems)} vs ${JSON.stringify(validateState(draft))}`).toBe(
          validateState(draft).length === 0,
        )
        // Knowing the state before (as the writer does) spares checks, never changes the answer.
        expect(validateChange(draft, touched, state), `seed ${seed} step ${step}`).toEqual(problems)
        if (problems.length > 0) continue
        draft.revision = state.revision + 1
        const prevView = view(table)
        const { table: next, released } = updateTable(table, draft, touched, incRes)
        incRes.prune(liveCheck(next), released)
        const whole = compileTable(draft, fullRes)
        fullRes.prune(liveCheck(whole))
        expect(view(next), `seed ${seed} step ${step}`).toEqual(view(whole))
        expect(view(table), `seed ${seed} step ${step}: the old table changed`).toEqual(prevView)
        for (const r of REQUESTS) {
          expect(findRoute(next.routes, r.host, r.path, r.method)?.name, `seed ${seed} step ${step} ${JSON.stringify(r)}`).toBe(
            findRoute(whole.routes, r.host, r.path, r.method)?.name,
          )
        }
        expect(held(incRes), `seed ${seed} step ${step}`).toEqual(held(fullRes))
        state = draft
        table = next
        applied++
      }
      expect(applied).toBeGreaterThan(100)
    })
  }

  it('refuses a change whose result does not compile, touching nothing', () => {
    const res = new Resources()
    toClose.push(res)
    const state: State = {
      revision: 1,
      upstreams: { u0: { targets: [{ id: 'a', url: 'http://127.0.0.1:20000', state: 'active' }] } },
      routes: [{ name: 'r', split: { u0: 1 } }],
      flags: {},
      rollouts: {},
    }
    const table = compileTable(state, res)
    const before = held(res)
    const broken: State = { ...state, revision: 2, upstreams: {} }
    expect(() => updateTable(table, broken, { upstreams: ['u0'], routes: [], flags: [], rollouts: [], order: false }, res)).toThrow(/unknown upstream/)
    expect(held(res)).toEqual(before)
  })
})
