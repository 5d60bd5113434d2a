/**
 * The route matching structure: a radix tree of path prefixes for the `*` routes and one per
 * exact host (host trees looked up in a radix tree keyed by host). A request walks the path's
 * characters in at most two trees, so its cost follows the path, never the number of routes;
 * a change copies the nodes on one prefix's (and one host's) path, sharing the rest with the
 * structure that requests in flight keep reading.
 *
 * Each tree node holds the routes whose prefix ends exactly there, in declaration order: the
 * answer in one tree is the first route accepting the method at the deepest such node.
 */
import { emptyRadix, RadixBuilder, radixDeepest, radixGet, radixGetLower, radixSet, radixValues, type Radix } from './radix.js'
import type { CRoute } from './table.js'

/** Routes of one host kind with one prefix, in declaration order. */
type Bucket = readonly CRoute[]
type Tree = Radix<Bucket>

export interface Routes {
  /** the `*` routes, by prefix */
  readonly star: Tree
  /** exact host (lower case) → that host's own routes, by prefix; a host with none is absent */
  readonly hosts: Radix<Tree>
  readonly count: number
}

export const EMPTY_ROUTES: Routes = Object.freeze({ star: emptyRadix<Bucket>(), hosts: emptyRadix<Tree>(), count: 0 })

/**
 * Builds a Routes one route at a time, in declaration order (O(prefix + host length) each), so a
 * whole compile can spread the build over its slices; `finish()` costs nothing more.
 */
export class RoutesBuilder {
  private readonly star = new RadixBuilder<CRoute[]>()
  private readonly byHost = new Map<string, RadixBuilder<CRoute[]>>()
  private readonly hosts = new RadixBuilder<Tree>()
  private count = 0
  private done = false

  add(route: CRoute): void {
    if (this.done) throw new Error('RoutesBuilder: add after finish')
    let tree = this.star
    if (route.exactHost !== null) {
      let b = this.byHost.get(route.exactHost)
      if (b === undefined) {
        b = new RadixBuilder()
        this.byHost.set(route.exactHost, b)
        this.hosts.set(route.exactHost, b.result)
      }
      tree = b
    }
    const bucket = tree.get(route.prefix)
    if (bucket === undefined) tree.set(route.prefix, [route])
    else bucket.push(route)
    this.count++
  }

  finish(): Routes {
    this.done = true
    return Object.freeze({ star: this.star.finish(), hosts: this.hosts.finish(), count: this.count })
  }
}

/** routes in declaration order */
export function buildRoutes(routes: readonly CRoute[]): Routes {
  const b = new RoutesBuilder()
  for (const route of routes) b.add(route)
  return b.finish()
}

/** The tree of one host kind (`null`: `*`). */
function treeOf(star: Tree, hosts: Radix<Tree>, host: string | null): Tree {
  return host === null ? star : (radixGet(hosts, host) ?? emptyRadix())
}

/**
 * A new Routes with `remove` taken out (matched by name, at its own host/prefix) and `add` put in,
 * either may be null (replace = both). `rank(name)` is the declaration position of a route in the
 * current state (the caller computes it); it is only called to order routes that share add's host kind and prefix.
 */
export function updateRoutes(r: Routes, remove: CRoute | null, add: CRoute | null, rank: (name: string) => number): Routes {
  let { star, hosts, count } = r
  const store = (host: string | null, tree: Tree): void => {
    if (host === null) star = tree
    else hosts = radixSet(hosts, host, tree.size > 0 ? tree : undefined)
  }

  // The common change (a split, a rule) keeps the route where it was: one path copy, not two.
  const inPlace = remove !== null && add !== null && remove.name === add.name && remove.exactHost === add.exactHost && remove.prefix === add.prefix
  if (remove !== null && !inPlace) {
    const tree = treeOf(star, hosts, remove.exactHost)
    const bucket = radixGet(tree, remove.prefix)
    const at = bucket === undefined ? -1 : indexOfName(bucket, remove.name)
    if (at >= 0) {
      store(remove.exactHost, radixSet(tree, remove.prefix, bucket!.length === 1 ? undefined : spliced(bucket!, at, 1)))
      count--
    }
  }

  if (add !== null) {
    const tree = treeOf(star, hosts, add.exactHost)
    let bucket = radixGet(tree, add.prefix) ?? []
    // A route is in the structure once: this also takes out an in-place `remove`.
    const same = indexOfName(bucket, add.name)
    if (same >= 0) {
      bucket = spliced(bucket, same, 1)
      count--
    }
    let at = 0
    if (bucket.length > 0) {
      const mine = rank(add.name)
      let hi = bucket.length
      while (at < hi) {
        const mid = (at + hi) >>> 1
        if (rank(bucket[mid]!.name) < mine) at = mid + 1
        else hi = mid
      }
    }
    store(add.exactHost, radixSet(tree, add.prefix, spliced(bucket, at, 0, add)))
    count++
  }

  return Object.freeze({ star, hosts, count })
}

function indexOfName(bucket: Bucket, name: string): number {
  for (let i = 0; i < bucket.length; i++) if (bucket[i]!.name === name) return i
  return -1
}

function spliced(bucket: Bucket, at: number, remove: number, add?: CRoute): Bucket {
  const out = bucket.slice()
  if (add === undefined) out.splice(at, remove)
  else out.splice(at, remove, add)
  return Object.freeze(out)
}

/** The first route of a bucket that accepts `method` (module-level: no closure per request). */
function accepting(bucket: Bucket, method: string): CRoute | undefined {
  for (let i = 0; i < bucket.length; i++) {
    const r = bucket[i]!
    if (r.methods === null || r.methods.has(method)) return r
  }
  return undefined
}

/**
 * The exact-host tree for a Host header: the header lower-cased as is, else without its port
 * (`[::1]:80` → `[::1]`). Both in one walk without making a string when the header is ASCII
 * (always, once the header checks passed); otherwise through `toLowerCase`, which folds more.
 */
function hostTree(hosts: Radix<Tree>, host: string): Tree | undefined {
  const end = host.charCodeAt(0) === 91 /* [ */ ? host.indexOf(']') + 1 : host.indexOf(':')
  const tree = radixGetLower(hosts, host, end)
  if (tree !== null) return tree
  return radixGet(hosts, host.toLowerCase()) ?? (end > 0 ? radixGet(hosts, host.slice(0, end).toLowerCase()) : undefined)
}

/**
 * The route for a request: longest prefix first; at equal length the exact host's route
 * before a `*` one; then declaration order. Allocates nothing.
 */
export function findRoute(r: Routes, host: string, path: string, method: string): CRoute | undefined {
  const star = r.star.size > 0 ? radixDeepest(r.star, path, accepting, method) : undefined
  if (host === '' || r.hosts.size === 0) return star
  const tree = hostTree(r.hosts, host)
  if (tree === undefined) return star
  const exact = radixDeepest(tree, path, accepting, method)
  return exact !== undefined && (star === undefined || exact.prefix.length >= star.prefix.length) ? exact : star
}

export function routeCount(r: Routes): number {
  return r.count
}

/** Every route, `*` ones first, then by host and prefix (not in declaration order). */
export function routeList(r: Routes): CRoute[] {
  const out: CRoute[] = []
  for (const bucket of radixValues(r.star)) out.push(...bucket)
  for (const tree of radixValues(r.hosts)) for (const bucket of radixValues(tree)) out.push(...bucket)
  return out
}
