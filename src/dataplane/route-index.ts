// TEMPORARY linear stand-in; replaced by the radix implementation (branch radix).
import type { CRoute } from './table.js'
export interface Routes { readonly list: readonly CRoute[] }
export const EMPTY_ROUTES: Routes = { list: [] }
function order(routes: CRoute[]): CRoute[] {
  return routes.map((r, i) => ({ r, i })).sort((a, b) => b.r.prefix.length - a.r.prefix.length || Number(b.r.exactHost !== null) - Number(a.r.exactHost !== null) || a.i - b.i).map((x) => x.r)
}
export function buildRoutes(routes: readonly CRoute[]): Routes { return { list: order([...routes]) } }
export function updateRoutes(r: Routes, remove: CRoute | null, add: CRoute | null, rank: (name: string) => number): Routes {
  let l = r.list.filter((x) => x.name !== remove?.name)
  if (add) { l.push(add); l = l.map((x) => ({ x, k: rank(x.name) })).sort((a, b) => a.k - b.k).map((y) => y.x) }
  return { list: order(l) }
}
function hostOnly(host: string): string {
  const end = host.charCodeAt(0) === 91 ? host.indexOf(']') + 1 : host.indexOf(':')
  return (end > 0 ? host.slice(0, end) : host).toLowerCase()
}
export function findRoute(r: Routes, host: string, path: string, method: string): CRoute | undefined {
  const h = host.toLowerCase(); const ho = hostOnly(host)
  const hasH = r.list.some((x) => x.exactHost === h)
  const useH = hasH ? h : r.list.some((x) => x.exactHost === ho) ? ho : null
  for (const x of r.list) {
    if (x.exactHost !== null && (host === '' || x.exactHost !== useH)) continue
    if (path.startsWith(x.prefix) && (x.methods === null || x.methods.has(method))) return x
  }
  return undefined
}
export function routeCount(r: Routes): number { return r.list.length }
