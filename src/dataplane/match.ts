/**
 * Route and upstream choice for one request: host, longest path prefix, methods; then rules
 * (first match wins), then the split, sticky when the route says so.
 */
import type { IncomingMessage } from 'node:http'
import { hashKey, rendezvous, unit, weightedRandom } from './bucket.js'
import { anyRawHeader, clientIp, PLAIN_FORWARDING, rawHeader, requestHead, type Forwarding, type RequestHead } from './headers.js'
import { ambiguousPath, normalizePath } from './normalize-path.js'
import type { RejectReason } from './request-checks.js'
import { findRoute } from './route-index.js'
import { STICKY_COOKIE, STICKY_HEADER, type CFlag, type Choice, type CRoute, type CUpstream, type RoutingTable } from './table.js'

const ABSOLUTE_FORM = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*/

/**
 * The path of a request target as sent, for origin-form (`/a?b`) and absolute-form
 * (`http://h/a/../b` → `/a/../b`, RFC 9112 §3.2.2), so both go through the same normalization.
 * Any other form (`*`, an authority) is returned as is: no route prefix matches it.
 */
export function pathOf(url: string): string {
  if (url.charCodeAt(0) === 47 /* / */) return url
  const m = ABSOLUTE_FORM.exec(url)
  if (m === null) return url
  const rest = url.slice(m[0].length)
  return rest.charCodeAt(0) === 47 ? rest : `/${rest}`
}

/** Lazily parsed parts of a request that only some rules need. */
export class RequestFacts {
  private cookies: Map<string, string> | undefined
  private query: URLSearchParams | undefined

  constructor(
    readonly req: IncomingMessage,
    readonly path: string,
  ) {}

  cookie(name: string): string | undefined {
    if (this.cookies === undefined) this.cookies = parseCookies(this.req.rawHeaders)
    return this.cookies.get(name)
  }

  queryValues(name: string): string[] {
    if (this.query === undefined) {
      const q = this.path.indexOf('?')
      this.query = new URLSearchParams(q < 0 ? '' : this.path.slice(q + 1))
    }
    return this.query.getAll(name)
  }

  /** The sticky / flag key of this request, or undefined when the request carries none. */
  key(kind: number, name: string): string | undefined {
    if (kind === STICKY_HEADER) return rawHeader(this.req.rawHeaders, name)
    if (kind === STICKY_COOKIE) return this.cookie(name)
    return clientIp(this.req.socket.remoteAddress)
  }
}

/** `Cookie` headers (possibly several) → name → first value; quotes around a value removed. */
export function parseCookies(raw: string[]): Map<string, string> {
  const out = new Map<string, string>()
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length !== 6 || raw[i]!.toLowerCase() !== 'cookie') continue
    for (const pair of raw[i + 1]!.split(';')) {
      const eq = pair.indexOf('=')
      if (eq < 0) continue
      const name = pair.slice(0, eq).trim()
      let value = pair.slice(eq + 1).trim()
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
      if (name !== '' && !out.has(name)) out.set(name, value)
    }
  }
  return out
}

function ruleMatches(rule: CRoute['rules'][number], facts: RequestFacts): boolean {
  const raw = facts.req.rawHeaders
  for (const h of rule.headers) if (!anyRawHeader(raw, h.name, h.test)) return false
  for (const c of rule.cookies) {
    const v = facts.cookie(c.name)
    if (v === undefined || !c.test(v)) return false
  }
  for (const q of rule.query) if (!facts.queryValues(q.name).some(q.test)) return false
  return true
}

/** Rules first (first match wins), then the split: sticky by key when possible, else weighted random. */
export function chooseUpstream(route: CRoute, facts: RequestFacts): Choice {
  for (let i = 0; i < route.rules.length; i++) {
    const rule = route.rules[i]!
    if (ruleMatches(rule, facts)) return rule.choice
  }
  if (route.single >= 0) return route.split[route.single]!
  if (route.stickyKind >= 0) {
    const key = facts.key(route.stickyKind, route.stickyName)
    if (key !== undefined && key !== '') return route.split[rendezvous(hashKey(key), route.seeds, route.weights)]!
  }
  return route.split[weightedRandom(route.weights, route.totalWeight)]!
}

/** The `x-switchyard-flags` value for this request. A user without a key is off for a percentage flag. */
export function flagsValue(table: RoutingTable, facts: RequestFacts): string {
  if (table.staticFlags !== null) return table.staticFlags
  let out = ''
  for (let i = 0; i < table.flags.length; i++) {
    const f: CFlag = table.flags[i]!
    let on = f.mode === 1
    if (f.mode === 2) {
      const key = facts.key(f.byKind, f.byName)
      on = key !== undefined && key !== '' && unit(hashKey(key), f.seed) < f.threshold
    }
    out += (i === 0 ? '' : ',') + f.name + (on ? '=on' : '=off')
  }
  return out
}

export interface Routed {
  /** the path (and query) to send upstream: normalized, or as sent for a `preservePath` route */
  readonly path: string
  readonly head: RequestHead
  /** undefined: no route matches (404 NO_ROUTE), or the request is refused (`reject`) */
  readonly choice: Choice | undefined
  /** the chosen upstream, as compiled in this request's table (set whenever `choice` is) */
  readonly upstream: CUpstream | undefined
  /** set when the proxy refuses the request itself (400): it is not routed */
  readonly reject: RejectReason | null
}

/**
 * The one routing decision, shared by plain requests and upgrades: the upstream request's
 * headers (flags included) and the route's choice of upstream, all from the table captured at
 * entry. Routes match the normalized path (dot segments resolved), so `/public/../internal` is
 * `/internal`'s. A path a backend may resolve differently (`ambiguousPath`: a backslash, an
 * encoded slash in a dot segment, `..;`) is refused unless the route it matches forwards paths
 * as sent (`preservePath`): that route's backend is trusted to judge it. `keepUpgrade` keeps
 * Connection/Upgrade for a WebSocket handshake; `fwd` is the listener's forwarding policy
 * (X-Forwarded-Proto, trusted proxies, admin tokens stripped from Authorization).
 */
export function routeRequest(table: RoutingTable, req: IncomingMessage, keepUpgrade: boolean, fwd: Forwarding = PLAIN_FORWARDING): Routed {
  const raw = pathOf(req.url ?? '/')
  const path = normalizePath(raw)
  const facts = new RequestFacts(req, path)
  const flags = table.flags.length > 0 ? flagsValue(table, facts) : null
  const head = requestHead(req.rawHeaders, req.socket.remoteAddress, flags, fwd, keepUpgrade)
  if (head.reject !== null) return { path, head, choice: undefined, upstream: undefined, reject: head.reject }
  const route = findRoute(table.routes, head.host, path, req.method ?? 'GET')
  // Refused whether a route matches or not: the path is the problem, not the route table.
  if (route?.preservePath !== true && ambiguousPath(raw)) return { path, head, choice: undefined, upstream: undefined, reject: 'path_ambiguous' }
  if (route === undefined) return { path, head, choice: undefined, upstream: undefined, reject: null }
  const choice = chooseUpstream(route, facts)
  // Every name a route's choices hold is in the same table: it was compiled against it.
  const upstream = table.upstreams.get(choice.upstream)!
  return { path: route.preservePath ? raw : path, head, choice, upstream, reject: null }
}
