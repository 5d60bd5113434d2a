/** A bare data plane (no control plane) on 127.0.0.1:0, driven by state seeds, for data-plane tests. */
import type { FlagSpec, RouteSpec, State, TargetState, UpstreamSpec } from '../../src/config/schema.js'
import { Dataplane } from '../../src/dataplane/server.js'
import { compileTable } from '../../src/dataplane/table.js'

export interface Seed {
  upstreams: Record<string, Omit<UpstreamSpec, 'targets'> & { targets: { url: string; id?: string; state?: TargetState }[] }>
  routes: RouteSpec[]
  flags?: Record<string, FlagSpec>
}

export function stateOf(seed: Seed, revision = 1): State {
  const upstreams: State['upstreams'] = {}
  for (const [name, u] of Object.entries(seed.upstreams)) {
    upstreams[name] = {
      ...u,
      targets: u.targets.map((t) => {
        const url = new URL(t.url)
        return { url: t.url, id: t.id ?? `${url.hostname}:${url.port || '80'}`, state: t.state ?? 'active' }
      }),
    }
  }
  return { revision, upstreams, routes: seed.routes, flags: seed.flags ?? {}, rollouts: {} }
}

export interface TestDataplane {
  dp: Dataplane
  url: string
  port: number
  revision: number
  apply(seed: Seed): void
  inflight(upstream: string, id: string): number
  close(): Promise<void>
}

export async function startDataplane(seed: Seed): Promise<TestDataplane> {
  const dp = new Dataplane()
  let revision = 1
  dp.setTable(compileTable(stateOf(seed, revision), dp.resources))
  const addr = await dp.listen(0, '127.0.0.1')
  return {
    dp,
    port: addr.port,
    url: `http://127.0.0.1:${addr.port}`,
    get revision() {
      return revision
    },
    apply(next: Seed) {
      revision++
      dp.setTable(compileTable(stateOf(next, revision), dp.resources))
    },
    inflight: (upstream, id) => dp.resources.targets.get(`${upstream}/${id}`)?.inflight ?? 0,
    close: async () => {
      await dp.shutdown(1000)
    },
  }
}
