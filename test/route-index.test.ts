/**
 * The route index against the linear scan it replaced (kept here as the reference): same
 * answers over random route sets and paths, after random updates, and for old versions.
 */
import { describe, expect, it } from 'vitest'
import { radixCheck, radixEntries } from '../src/dataplane/radix.js'
import { buildRoutes, EMPTY_ROUTES, findRoute, routeCount, routeList, RoutesBuilder, updateRoutes, type Routes } from '../src/dataplane/route-index.js'
import type { CRoute } from '../src/dataplane/table.js'
import { prng } from './helpers/random.js'

// ---- the linear reference (the matching code before the index) ----

/** Match order for one host: longest prefix first; exact host before `*`; then declaration order. */
function ordered(routes: CRoute[]): readonly CRoute[] {
  return routes
    .map((r, i) => ({ r, i }))
    .sort((a, b) => b.r.prefix.length - a.r.prefix.length || Number(b.r.exactHost !== null) - Number(a.r.exactHost !== null) || a.i - b.i)
    .map((x) => x.r)
}

interface Linear {
  byHost: Map<string, readonly CRoute[]>
  wildcard: readonly CRoute[]
}

function linear(routes: readonly CRoute[]): Linear {
  const wildcard = routes.filter((r) => r.exactHost === null)
  const byHost = new Map<string, readonly CRoute[]>()
  for (const host of new Set(routes.flatMap((r) => (r.exactHost === null ? [] : [r.exactHost])))) {
    byHost.set(host, ordered(routes.filter((r) => r.exactHost === host || r.exactHost === null)))
  }
  return { byHost, wildcard: ordered(wildcard) }
}

function hostOnly(host: string): string {
  const end = host.charCodeAt(0) === 91 /* [ */ ? host.indexOf(']') + 1 : host.indexOf(':')
  return (end > 0 ? host.slice(0, end) : host).toLowerCase()
}

function linearFind(table: Linear, host: string, path: string, method: string): CRoute | undefined {
  let routes = table.wildcard
  if (table.byHost.size > 0 && host !== '') {
    routes = table.byHost.get(host.toLowerCase()) ?? table.byHost.get(hostOnly(host)) ?? routes
  }
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i]!
    if (path.startsWith(r.prefix) && (r.methods === null || r.methods.has(method))) return r
  }
  return undefined
}

// ---- random routes and requests ----

function route(name: string, host: string | null, prefix: string, methods: string[] | null): CRoute {
  return { name, exactHost: host, prefix, methods: methods === null ? null : new Set(methods) } as unknown as CRoute
}

const HOSTS = ['example.com', 'api.example.com', 'example.com:8080', '[::1]', 'b.test']
const SEGMENTS = ['a', 'ab', 'api', 'v1', 'v2', 'b', 'users', 'x', 'svc1', 'svc10']
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH']

class Gen {
  readonly rnd: () => number
  private n = 0
  constructor(readonly seed: number) {
    this.rnd = prng(seed)
  }
  int(n: number): number {
    return Math.floor(this.rnd() * n)
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!
  }
  path(): string {
    let p = ''
    const depth = this.int(5)
    for (let i = 0; i < depth; i++) p += '/' + this.pick(SEGMENTS)
    return this.rnd() < 0.3 ? p + '/' : p || '/'
  }
  /** Shared prefixes: whole segments, a trailing `/`, or cut mid-segment (`/ap` of `/api`). */
  prefix(): string {
    const r = this.rnd()
    if (r < 0.03) return ''
    if (r < 0.08) return '/'
    const p = this.path()
    return this.rnd() < 0.25 ? p.slice(0, 1 + this.int(p.length)) : p
  }
  methods(): string[] | null {
    if (this.rnd() < 0.6) return null
    return METHODS.filter(() => this.rnd() < 0.4)
  }
  route(name = `r${this.n++}`): CRoute {
    return route(name, this.rnd() < 0.5 ? null : this.pick(HOSTS), this.prefix(), this.methods())
  }
  routes(count: number): CRoute[] {
    const out: CRoute[] = []
    for (let i = 0; i < count; i++) {
      // Duplicates across hosts and methods: reuse an earlier prefix now and then.
      const r = this.route()
      if (out.length > 0 && this.rnd() < 0.3) {
        const other = this.pick(out)
        out.push(route(r.name, r.exactHost, other.prefix, r.methods === null ? null : [...r.methods]))
      } else out.push(r)
    }
    return out
  }
  host(): string {
    const r = this.rnd()
    if (r < 0.1) return ''
    if (r < 0.2) return this.pick(['other.org', 'example.org:8080', 'EXAMPLE.NET', ':80', '[::1', 'b.tes', 'b.testx'])
    let h = this.pick(HOSTS)
    if (this.rnd() < 0.3) h = [...h].map((c) => (this.rnd() < 0.5 ? c.toUpperCase() : c)).join('')
    if (this.rnd() < 0.3) h += this.pick([':80', ':8080', ':443', ':'])
    return h
  }
  /** Paths that extend, cut or miss the prefixes of `routes`. */
  request(routes: readonly CRoute[]): [string, string, string] {
    let path: string
    const r = this.rnd()
    if (routes.length === 0 || r < 0.2) path = this.path()
    else {
      const p = this.pick(routes).prefix
      if (r < 0.5) path = p
      else if (r < 0.8) path = p + this.pick(['', 'x', '/', '/a', 'b/c', '/api/v1/users', '?q=1'])
      else path = p.slice(0, this.int(p.length + 1))
    }
    return [this.host(), path, this.pick(METHODS)]
  }
}

/** The first request on which the index and the reference disagree, or null. */
function mismatch(index: Routes, routes: readonly CRoute[], g: Gen, requests: number): string | null {
  const ref = linear(routes)
  for (let i = 0; i < requests; i++) {
    const [host, path, method] = g.request(routes)
    const got = findRoute(index, host, path, method)
    const want = linearFind(ref, host, path, method)
    if (got !== want) {
      return `seed ${g.seed} request ${i}: ${method} ${JSON.stringify(host)} ${JSON.stringify(path)} → ${got?.name} (want ${want?.name})`
    }
  }
  return null
}

/** The structure as plain data: trees canonical in shape, buckets as names in order. */
function picture(r: Routes): unknown {
  const tree = (t: Routes['star']) => radixEntries(t).map(([p, b]) => [p, b.map((x) => x.name)])
  return { star: tree(r.star), hosts: radixEntries(r.hosts).map(([h, t]) => [h, tree(t)]), count: routeCount(r) }
}

function wellFormed(r: Routes): string | null {
  return radixCheck(r.star) ?? radixCheck(r.hosts) ?? radixEntries(r.hosts).reduce<string | null>((bad, [, t]) => bad ?? radixCheck(t), null)
}

const RUN_SEED = Number(process.env['SEED'] ?? 0) || (Date.now() % 1e9)

describe('route index', () => {
  it('follows the README order on a small table', () => {
    const routes = [
      route('all', null, '/', null),
      route('api', null, '/api', null),
      route('api-get', null, '/api/', ['GET']),
      route('api-host', 'example.com', '/api', null),
      route('api-host-2', 'example.com', '/api', null),
      route('apix', null, '/apix', ['POST']),
      route('v6', '[::1]', '/', null),
    ]
    const r = buildRoutes(routes)
    const find = (host: string, path: string, method = 'GET') => findRoute(r, host, path, method)?.name
    expect(find('', '/api/x')).toBe('api-get')
    expect(find('', '/api/x', 'POST')).toBe('api')
    expect(find('other', '/apix', 'POST')).toBe('apix')
    expect(find('other', '/apix')).toBe('api') // plain string prefix
    expect(find('Example.COM:8080', '/api')).toBe('api-host') // exact host beats `*` at equal length
    expect(find('example.com', '/api/')).toBe('api-get') // longer prefix beats exact host
    expect(find('example.com', '/apix', 'POST')).toBe('apix')
    expect(find('[::1]:80', '/zzz')).toBe('v6')
    expect(find('', '/zzz')).toBe('all')
    expect(find('', 'zzz')).toBeUndefined()
    expect(routeCount(r)).toBe(7)
    expect(routeList(r).map((x) => x.name).sort()).toEqual(routes.map((x) => x.name).sort())
    expect(findRoute(EMPTY_ROUTES, 'example.com', '/', 'GET')).toBeUndefined()
  })

  it('looks up a non-ASCII host as toLowerCase does', () => {
    const r = buildRoutes([route('e', 'éxample.com', '/', null), route('s', null, '/', null)])
    expect(findRoute(r, 'ÉXAMPLE.com:80', '/', 'GET')?.name).toBe('e')
    expect(findRoute(r, 'éxample.com', '/', 'GET')?.name).toBe('e')
    expect(findRoute(r, 'Éxample.org', '/', 'GET')?.name).toBe('s')
  })

  it('answers as the linear scan over random sets of 1,000 routes and 10,000 paths', () => {
    for (const seed of [11, 12, 13, RUN_SEED]) {
      const g = new Gen(seed)
      const routes = g.routes(1000)
      const index = buildRoutes(routes)
      expect(wellFormed(index), `seed ${seed}`).toBeNull()
      expect(routeCount(index)).toBe(1000)
      expect(mismatch(index, routes, g, 10_000)).toBeNull()
    }
  })

  it('after random updates answers as a fresh build of the final list and as the linear scan', () => {
    for (const seed of [21, 22, 23, RUN_SEED]) {
      const g = new Gen(seed)
      let list = g.routes(300)
      let index = buildRoutes(list)
      const rank = (name: string) => {
        const i = list.findIndex((x) => x.name === name)
        if (i < 0) throw new Error(`rank of ${name}: not in the list`)
        return i
      }
      for (let step = 0; step < 600; step++) {
        const op = g.rnd()
        const where = `seed ${seed} step ${step}`
        if (op < 0.3 || list.length === 0) {
          // add, at any position in declaration order
          const add = g.rnd() < 0.4 && list.length > 0 ? route(`n${step}`, g.pick(list).exactHost, g.pick(list).prefix, g.methods()) : g.route(`n${step}`)
          const at = g.int(list.length + 1)
          list = [...list.slice(0, at), add, ...list.slice(at)]
          index = updateRoutes(index, null, add, rank)
        } else if (op < 0.5) {
          // remove
          const at = g.int(list.length)
          const old = list[at]!
          list = list.filter((_, i) => i !== at)
          index = updateRoutes(index, old, null, rank)
        } else if (op < 0.8) {
          // replace: another prefix, host or methods (or the same ones), same position
          const at = g.int(list.length)
          const old = list[at]!
          const r = g.rnd()
          const next =
            r < 0.3 ? route(old.name, old.exactHost, old.prefix, g.methods())
            : r < 0.6 ? route(old.name, g.rnd() < 0.5 ? null : g.pick(HOSTS), old.prefix, old.methods && [...old.methods])
            : g.route(old.name)
          list = list.map((x, i) => (i === at ? next : x))
          index = updateRoutes(index, old, next, rank)
        } else {
          // move in declaration order, unchanged
          const from = g.int(list.length)
          const moved = list[from]!
          const rest = list.filter((_, i) => i !== from)
          const to = g.int(rest.length + 1)
          list = [...rest.slice(0, to), moved, ...rest.slice(to)]
          index = updateRoutes(index, moved, moved, rank)
        }
        if (step % 20 === 0 || step === 599) {
          expect(wellFormed(index), where).toBeNull()
          expect(picture(index), where).toEqual(picture(buildRoutes(list)))
          expect(mismatch(index, list, g, 300)).toBeNull()
        }
      }
      expect(routeCount(index)).toBe(list.length)
      expect(mismatch(index, list, g, 10_000)).toBeNull()
      // Hosts whose last route went are gone from the host tree.
      expect(index.hosts.size, `seed ${seed}`).toBe(new Set(list.flatMap((r) => (r.exactHost === null ? [] : [r.exactHost]))).size)
    }
  })

  it('leaves old versions answering exactly as before', () => {
    const g = new Gen(RUN_SEED)
    let list = g.routes(500)
    let index = buildRoutes(list)
    const rank = (name: string) => list.findIndex((x) => x.name === name)
    const versions: { index: Routes; list: CRoute[]; picture: unknown }[] = []
    for (let step = 0; step < 400; step++) {
      if (step % 40 === 0) versions.push({ index, list, picture: picture(index) })
      const at = g.int(list.length)
      const old = list[at]!
      if (g.rnd() < 0.5) {
        const next = g.route(old.name)
        list = list.map((x, i) => (i === at ? next : x))
        index = updateRoutes(index, old, next, rank)
      } else {
        const add = g.route(`n${step}`)
        list = [...list.filter((_, i) => i !== at), add]
        index = updateRoutes(updateRoutes(index, old, null, rank), null, add, rank)
      }
    }
    for (const v of versions) {
      expect(picture(v.index), `seed ${g.seed}`).toEqual(v.picture)
      expect(routeCount(v.index)).toBe(v.list.length)
      expect(mismatch(v.index, v.list, g, 2000)).toBeNull()
    }
  })

  it('builds one route at a time, then refuses more', () => {
    const b = new RoutesBuilder()
    const routes = [route('a', null, '/a', null), route('h', 'h', '/a', null), route('h2', 'h', '/a', ['GET'])]
    for (const r of routes) b.add(r)
    const r = b.finish()
    expect(picture(r)).toEqual(picture(buildRoutes(routes)))
    expect(wellFormed(r)).toBeNull()
    expect(findRoute(r, 'H:80', '/a', 'GET')?.name).toBe('h')
    expect(() => b.add(route('late', null, '/', null))).toThrow(/after finish/)
    expect(routeCount(r)).toBe(3)
    expect(picture(new RoutesBuilder().finish())).toEqual(picture(EMPTY_ROUTES))
  })

  it('removes by name at the route’s own host and prefix, and keeps a route once', () => {
    const a = route('a', null, '/x', null)
    const b = route('b', 'h', '/x', null)
    let r = buildRoutes([a, b])
    const rank = (n: string) => ['a', 'b', 'c'].indexOf(n)
    // `b` is not a `*` route: removing a `*` route named b at /x changes nothing.
    expect(picture(updateRoutes(r, route('b', null, '/x', null), null, rank))).toEqual(picture(r))
    // An add of a name already there replaces it.
    const a2 = route('a', null, '/x', ['GET'])
    r = updateRoutes(r, null, a2, rank)
    expect(routeCount(r)).toBe(2)
    expect(findRoute(r, '', '/x', 'GET')).toBe(a2)
    expect(findRoute(r, '', '/x', 'POST')).toBeUndefined()
    r = updateRoutes(r, b, null, rank)
    expect(r.hosts.size).toBe(0)
    r = updateRoutes(r, a2, null, rank)
    expect(picture(r)).toEqual(picture(EMPTY_ROUTES))
  })
})
