/**
 * `switchyard ctl status`: the applied state, each target's health (and why it is out), the
 * targets found by DNS discovery, and the fleet with the instances that are behind or not
 * following, in one compact table. Health is only on the per-target endpoint (the state holds what was written,
 * not what the checks see), so it is one extra read per target, made in parallel.
 */
import { ApiError, call, type CtlOptions } from './ctl-http.js'

interface Target {
  id: string
  url: string
  state: string
}
interface State {
  revision: number
  upstreams: Record<string, { targets: Target[]; discovery?: unknown }>
  routes: { name: string; split: Record<string, number>; mirror?: { upstream: string; percent: number } }[]
  flags: Record<string, { enabled: boolean; percent?: number }>
}
interface Instance {
  id: string
  host: string
  pid: number
  appliedRevision: number
  laggard?: boolean
  behindMs?: number
}

/** Left-aligned columns, two spaces apart. */
function table(rows: string[][], indent = '  '): string[] {
  const widths: number[] = []
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)))
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  '))
}

export async function status(opts: CtlOptions): Promise<number> {
  const [stateAnswer, instancesAnswer] = await Promise.all([
    call(opts, { method: 'GET', path: '/api/state' }),
    call(opts, { method: 'GET', path: '/api/instances' }),
  ])
  const state = stateAnswer.body as State
  const instances = (instancesAnswer.body as { instances: Instance[] }).instances
  // Targets found by DNS discovery are not in the state: the upstream's own view lists them.
  const discovered = new Map<string, (Target & { source?: string })[]>()
  await Promise.all(
    Object.entries(state.upstreams)
      .filter(([, u]) => u.discovery !== undefined)
      .map(async ([name]) => {
        const { body } = await call(opts, { method: 'GET', path: `/api/upstreams/${encodeURIComponent(name)}` }).catch(() => ({ body: {} }))
        discovered.set(name, (body as { discovered?: Target[] }).discovered ?? [])
      }),
  )
  const targetsOf = (name: string, u: { targets: Target[] }) => [...u.targets, ...(discovered.get(name) ?? [])]
  const health = new Map<string, string>()
  await Promise.all(
    Object.entries(state.upstreams).flatMap(([name, u]) =>
      targetsOf(name, u).map(async (t) => {
        const path = `/api/upstreams/${encodeURIComponent(name)}/targets/${encodeURIComponent(t.id)}`
        try {
          const { body } = await call(opts, { method: 'GET', path })
          const b = body as { healthy: boolean; reason?: string; inflight: number; source?: string }
          const why = b.healthy || b.reason === undefined ? '' : ` (${b.reason})`
          const from = b.source === undefined ? '' : `  from ${b.source}`
          health.set(`${name}/${t.id}`, `${b.healthy ? 'healthy' : 'unhealthy'}${why}  inflight ${b.inflight}${from}`)
        } catch (err) {
          // Removed between the two reads: show the state anyway rather than fail the whole status.
          if (err instanceof ApiError && err.status === 404) health.set(`${name}/${t.id}`, '?')
          else throw err
        }
      }),
    ),
  )
  if (opts.json) {
    process.stdout.write(JSON.stringify({ state, instances }, null, 2) + '\n')
    return 0
  }
  const lines: string[] = []
  const applied = [...new Set(instances.map((i) => i.appliedRevision))].sort((a, b) => a - b)
  lines.push(`revision ${state.revision}, ${instances.length} instance${instances.length === 1 ? '' : 's'} (applied: ${applied.join(', ') || 'none'})`)
  const behind = instances.filter((i) => i.appliedRevision < state.revision || i.laggard === true)
  for (const i of behind) {
    // A laggard has been behind the store for more than 5 s: it is not following (see its log).
    const lag = i.laggard === true ? `  NOT FOLLOWING (behind for ${Math.round((i.behindMs ?? 0) / 1000)} s)` : ''
    lines.push(`  behind: ${i.id} (${i.host} pid ${i.pid}) at revision ${i.appliedRevision}${lag}`)
  }
  lines.push('routes')
  const routes = state.routes.map((r) => [
    r.name,
    Object.entries(r.split).map(([u, w]) => `${u}=${w}`).join(' ') + (r.mirror ? `  mirror ${r.mirror.percent}% to ${r.mirror.upstream}` : ''),
  ])
  lines.push(...(routes.length > 0 ? table(routes) : ['  (none)']))
  lines.push('upstreams')
  const targets: string[][] = []
  for (const [name, u] of Object.entries(state.upstreams)) {
    const all = targetsOf(name, u)
    if (all.length === 0) targets.push([name, '(no targets)'])
    for (const t of all) targets.push([name, t.id, t.state, health.get(`${name}/${t.id}`) ?? '?'])
  }
  lines.push(...(targets.length > 0 ? table(targets) : ['  (none)']))
  const flags = Object.entries(state.flags)
  if (flags.length > 0) {
    lines.push('flags')
    lines.push(...table(flags.map(([n, f]) => [n, f.enabled ? 'on' : 'off', f.percent === undefined ? '' : `${f.percent}%`])))
  }
  process.stdout.write(lines.map((l) => l.trimEnd()).join('\n') + '\n')
  return 0
}
