/**
 * The metrics of a process group (`--workers N`) as one exposition, so a scraper gets the same
 * series whichever worker the port hands its connection to:
 *
 * - counters and histograms are summed over the workers (no `worker` label): `rate()` sees one
 *   monotonic series, not two that alternate;
 * - gauges (and the rare summary) keep one series per worker, labelled `worker="1"`..`"N"` (the
 *   worker's slot, kept by its replacement);
 * - a worker that exits leaves its last counts in the sums (`retire`), so a restart never makes
 *   a sum go backwards. Its last counts are those of its last snapshot: its final one when it
 *   stops gracefully, the last scrape's when it is killed (then what it counted after that is
 *   lost, as it would be for a single process that restarts).
 */
import type { Family, Sample } from './exposition.js'

/** One worker's families, and the label its gauges get (none: its gauges are left out). */
export interface WorkerFamilies {
  worker: string | undefined
  families: readonly Family[]
}

const summed = (f: Family) => f.type === 'counter' || f.type === 'histogram'

/**
 * Series of switchyard's own resources (routes, upstreams, targets) go with the resource: a
 * dead worker's count for a deleted route must not stay forever. Process metrics (CPU, GC)
 * belong to no resource and are kept.
 */
const followsState = (name: string) => name.startsWith('switchyard_')

const keyOf = (s: Sample) => `${s.name}\u0000${JSON.stringify(s.labels)}`

interface Merged {
  name: string
  help: string
  type: Family['type']
  samples: Map<string, Sample>
}

export class GroupTotals {
  /** the last counter and histogram samples of workers that exited, summed, by family */
  private readonly retired = new Map<string, Merged>()

  /** Folds the last families of a worker that exited into the group's retired totals. */
  retire(families: readonly Family[]): void {
    for (const f of families) {
      if (!summed(f)) continue
      let r = this.retired.get(f.name)
      if (r === undefined) this.retired.set(f.name, (r = { name: f.name, help: f.help, type: f.type, samples: new Map() }))
      for (const s of f.samples) {
        const key = keyOf(s)
        const prev = r.samples.get(key)
        r.samples.set(key, { ...s, value: (prev?.value ?? 0) + s.value })
      }
    }
  }

  /** The group's families: the live workers' (summed or labelled) plus the retired totals. */
  merge(live: readonly WorkerFamilies[]): Family[] {
    const out = new Map<string, Merged>()
    const familyOf = (f: Family) => {
      let m = out.get(f.name)
      if (m === undefined) out.set(f.name, (m = { name: f.name, help: f.help, type: f.type, samples: new Map() }))
      return m
    }
    for (const { worker, families } of live) {
      for (const f of families) {
        const m = familyOf(f)
        for (const s of f.samples) {
          if (summed(f)) {
            const key = keyOf(s)
            const prev = m.samples.get(key)
            m.samples.set(key, { ...s, value: (prev?.value ?? 0) + s.value })
          } else if (worker !== undefined) {
            const labelled = { ...s, labels: { ...s.labels, worker } }
            m.samples.set(keyOf(labelled), labelled)
          }
        }
      }
    }
    for (const r of this.retired.values()) {
      const m = familyOf({ ...r, samples: [] })
      for (const [key, s] of r.samples) {
        const current = m.samples.get(key)
        if (current !== undefined) current.value += s.value
        else if (!followsState(r.name)) m.samples.set(key, { ...s })
        // No live worker has it any more (its route, upstream or target went): drop it for good.
        else if (live.length > 0) r.samples.delete(key)
      }
    }
    return [...out.values()].map((m) => ({ name: m.name, help: m.help, type: m.type, samples: [...m.samples.values()] }))
  }
}

/** JSON (the IPC channel's encoding) has no NaN or Infinity: those travel as their text. */
export function toWire(families: readonly Family[]): unknown {
  return families.map((f) => ({ ...f, samples: f.samples.map((s) => (Number.isFinite(s.value) ? s : { ...s, value: String(s.value) })) }))
}

export function fromWire(wire: unknown): Family[] {
  return (wire as Family[]).map((f) => ({ ...f, samples: f.samples.map((s) => (typeof s.value === 'number' ? s : { ...s, value: Number(s.value) })) }))
}
